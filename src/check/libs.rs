//! Shared-library lookup the way glibc's `ld.so` does it, inside an image: `DT_RPATH` (when there
//! is no `DT_RUNPATH`), `LD_LIBRARY_PATH`, `DT_RUNPATH` (`$ORIGIN` expanded), the directories of
//! `/etc/ld.so.conf` (with `include` lines), then the default directories. Candidates of another
//! class or machine are skipped, as `ld.so` skips them.

use std::collections::BTreeMap;

use crate::check::elf::ElfFacts;
use crate::check::summary::Kind;
use crate::check::tree::Tree;

/// Most nested `include` levels followed in `ld.so.conf`.
const MAX_INCLUDE_DEPTH: usize = 8;

/// What loading one ELF file pulls in.
#[derive(Debug, Default)]
pub struct Closure {
    /// Soname → path in the image, for every library found.
    pub found: BTreeMap<String, String>,
    /// Sonames not found, with the path of the object that needs them.
    pub missing: Vec<(String, String)>,
}

/// Library search settings of one image.
pub struct Search<'a> {
    tree: &'a Tree,
    env_dirs: Vec<String>,
    conf_dirs: Vec<String>,
}

impl<'a> Search<'a> {
    /// Reads `/etc/ld.so.conf*` of the image; `ld_library_path` is the image's
    /// `LD_LIBRARY_PATH`.
    pub fn new(tree: &'a Tree, ld_library_path: Option<&str>) -> Self {
        let mut conf_dirs = Vec::new();
        read_conf(tree, "etc/ld.so.conf", 0, &mut conf_dirs);
        Search {
            tree,
            env_dirs: ld_library_path.map(split_dirs).unwrap_or_default(),
            conf_dirs,
        }
    }

    /// The directories searched after `LD_LIBRARY_PATH` and `DT_RUNPATH` (ld.so.cache and
    /// the built-in defaults) for an object of this class and machine.
    pub fn system_dirs(&self, facts: &ElfFacts) -> Vec<String> {
        let mut dirs = self.conf_dirs.clone();
        if let Some(triplet) = multiarch(facts.machine, facts.class64) {
            dirs.push(format!("lib/{triplet}"));
            dirs.push(format!("usr/lib/{triplet}"));
        }
        if facts.class64 {
            dirs.extend(["lib64".into(), "usr/lib64".into()]);
        } else {
            dirs.extend(["lib32".into(), "usr/lib32".into()]);
        }
        dirs.extend(["lib".into(), "usr/lib".into()]);
        dirs
    }

    /// Finds `soname` in `dirs` for an object like `like` (same class and machine).
    pub fn find_in(&self, soname: &str, dirs: &[String], like: &ElfFacts) -> Option<String> {
        if soname.contains('/') {
            return self.tree.resolve_file(soname).map(|(p, _)| p);
        }
        dirs.iter().find_map(|d| {
            let (path, node) = self.tree.resolve_file(&format!("{d}/{soname}"))?;
            match &node.elf {
                Some(f) if f.class64 != like.class64 || f.machine != like.machine => None,
                _ => Some(path),
            }
        })
    }

    /// Loads `path` (with `facts`) and everything it needs, breadth first as `ld.so` does.
    /// `extra` is put on `LD_LIBRARY_PATH` first (a PyInstaller bundle's `_internal`).
    pub fn closure(&self, path: &str, facts: &ElfFacts, extra: &[String]) -> Closure {
        let mut out = Closure::default();
        let mut queue: Vec<(String, ElfFacts)> = vec![(path.to_string(), facts.clone())];
        let exe_rpath = if facts.runpath.is_empty() {
            expand(&facts.rpath, path)
        } else {
            Vec::new()
        };
        let mut ld_path: Vec<String> = extra.to_vec();
        ld_path.extend(self.env_dirs.iter().cloned());
        let mut i = 0;
        while i < queue.len() && i < 4096 {
            let (obj_path, obj) = queue[i].clone();
            i += 1;
            for soname in &obj.needed {
                if out.found.contains_key(soname) || out.missing.iter().any(|(m, _)| m == soname) {
                    continue;
                }
                let mut dirs = Vec::new();
                if obj.runpath.is_empty() {
                    dirs.extend(expand(&obj.rpath, &obj_path));
                    dirs.extend(exe_rpath.iter().cloned());
                }
                dirs.extend(ld_path.iter().cloned());
                dirs.extend(expand(&obj.runpath, &obj_path));
                dirs.extend(self.system_dirs(facts));
                match self.find_in(soname, &dirs, facts) {
                    Some(p) => {
                        if let Some(f) = self.tree.get(&p).and_then(|n| n.elf.clone()) {
                            if !queue.iter().any(|(q, _)| *q == p) {
                                queue.push((p.clone(), f));
                            }
                        }
                        out.found.insert(soname.clone(), p);
                    }
                    None => out.missing.push((soname.clone(), obj_path.clone())),
                }
            }
        }
        out
    }
}

/// Expands `$ORIGIN` (the folder of `path`) in run paths; drops entries that stay relative.
fn expand(dirs: &[String], path: &str) -> Vec<String> {
    let origin = path.rsplit_once('/').map_or("", |(d, _)| d);
    dirs.iter()
        .map(|d| {
            d.replace("${ORIGIN}", &format!("/{origin}"))
                .replace("$ORIGIN", &format!("/{origin}"))
        })
        .filter(|d| d.starts_with('/'))
        .collect()
}

fn split_dirs(s: &str) -> Vec<String> {
    s.split([':', ';'])
        .filter(|d| d.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// Reads one `ld.so.conf` file: directories (separated by blanks, `:` or `,`), `include GLOB`
/// lines (relative to `/etc`), comments; `hwcap` lines are ignored.
fn read_conf(tree: &Tree, path: &str, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_INCLUDE_DEPTH {
        return;
    }
    let Some(text) = tree.text(path) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            if !pattern.starts_with([' ', '\t']) {
                continue;
            }
            for pat in pattern.split_whitespace() {
                let pat = if pat.starts_with('/') {
                    pat.trim_start_matches('/').to_string()
                } else {
                    format!("etc/{pat}")
                };
                for file in glob(tree, &pat) {
                    read_conf(tree, &file, depth + 1, out);
                }
            }
        } else if line.starts_with("hwcap") {
            continue;
        } else {
            for d in line.split([' ', '\t', ':', ',']) {
                if d.starts_with('/') && !out.iter().any(|o| o == d) {
                    out.push(d.to_string());
                }
            }
        }
    }
}

/// Files matching a pattern whose last part may hold `*` (e.g. `etc/ld.so.conf.d/*.conf`), sorted.
fn glob(tree: &Tree, pattern: &str) -> Vec<String> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    if !name.contains('*') {
        return vec![pattern.to_string()];
    }
    let Some((real_dir, _)) = tree.resolve(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = tree
        .children(&real_dir)
        .filter(|(_, n)| n.kind != Kind::Dir)
        .filter_map(|(p, _)| {
            let base = p.rsplit('/').next()?;
            wildcard(name, base).then(|| format!("{real_dir}/{base}"))
        })
        .collect();
    out.sort();
    out
}

/// Shell-style match with `*` only.
fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Debian's multiarch folder name for a machine.
fn multiarch(machine: u16, class64: bool) -> Option<&'static str> {
    Some(match (machine, class64) {
        (62, true) => "x86_64-linux-gnu",
        (183, true) => "aarch64-linux-gnu",
        (3, false) => "i386-linux-gnu",
        (40, false) => "arm-linux-gnueabihf",
        (21, true) => "powerpc64le-linux-gnu",
        (22, true) => "s390x-linux-gnu",
        (243, true) => "riscv64-linux-gnu",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::summary::{Change, LayerSummary, Node};

    fn file(p: &str, text: Option<&str>, elf: Option<ElfFacts>) -> Change {
        let mut n = Node::plain(Kind::File, 0o755, 0, 0, 1);
        n.text = text.map(str::to_string);
        n.elf = elf;
        Change::Add(p.into(), n)
    }

    fn lib(soname: &str, needed: &[&str]) -> ElfFacts {
        ElfFacts {
            class64: true,
            machine: 62,
            kind: 3,
            soname: Some(soname.into()),
            needed: needed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn conf_includes_origin_and_transitive_needs() {
        let mut t = Tree::default();
        t.apply(
            &LayerSummary {
                changes: vec![
                    Change::Add("etc".into(), Node::plain(Kind::Dir, 0o755, 0, 0, 0)),
                    file(
                        "etc/ld.so.conf",
                        Some("include ld.so.conf.d/*.conf\n"),
                        None,
                    ),
                    file("etc/ld.so.conf.d/a.conf", Some("# c\n/opt/x/lib\n"), None),
                    file(
                        "opt/x/lib/libx.so.1",
                        None,
                        Some(lib("libx.so.1", &["liby.so.2"])),
                    ),
                    file("app/lib/libown.so", None, Some(lib("libown.so", &[]))),
                ],
            },
            false,
        );
        let s = Search::new(&t, None);
        let mut exe = lib("app", &["libx.so.1", "libown.so", "libgone.so.3"]);
        exe.runpath = vec!["$ORIGIN/lib".into()];
        let c = s.closure("app/app", &exe, &[]);
        assert_eq!(c.found["libx.so.1"], "opt/x/lib/libx.so.1");
        assert_eq!(c.found["libown.so"], "app/lib/libown.so");
        assert_eq!(
            c.missing,
            vec![
                ("libgone.so.3".to_string(), "app/app".to_string()),
                ("liby.so.2".to_string(), "opt/x/lib/libx.so.1".to_string())
            ]
        );
    }

    #[test]
    fn wildcard_table() {
        assert!(wildcard("*.conf", "libc.conf"));
        assert!(!wildcard("*.conf", "libc.conf.bak"));
        assert!(wildcard("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard("a*b", "ab-a"));
    }
}
