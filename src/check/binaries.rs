//! Checks of the ELF files in the new layers: architecture, loader, shared libraries, symbol
//! versions, and PyInstaller bundles whose libraries would shadow newer copies in the image.

use std::collections::BTreeMap;

use crate::check::elf::{highest, machine_name, split_version, ElfFacts};
use crate::check::libs::Search;
use crate::check::report::{Finding, Severity};
use crate::check::tree::Tree;

/// The PyInstaller folder put on `LD_LIBRARY_PATH` for a file of a bundle: the nearest
/// `_internal` folder among its ancestors or their children.
pub fn bundle_dir(tree: &Tree, path: &str) -> Option<String> {
    let mut dir = path;
    while let Some((parent, name)) = dir.rsplit_once('/') {
        if name == "_internal" {
            return Some(dir.to_string());
        }
        let candidate = format!("{parent}/_internal");
        if tree.is_dir(&candidate) {
            return Some(candidate);
        }
        dir = parent;
    }
    None
}

fn finding(
    severity: Severity,
    path: &str,
    check: &'static str,
    message: String,
    fix: String,
    items: Vec<String>,
) -> Finding {
    Finding {
        severity,
        file: format!("/{path}"),
        check,
        message,
        fix: Some(fix),
        items,
    }
}

/// Checks every ELF file of the new layers. Returns the findings and how many files were checked.
pub fn check(tree: &Tree, search: &Search, arch: Option<&str>) -> (Vec<Finding>, usize) {
    let want = arch.and_then(crate::check::elf::machine_for_arch);
    let mut out = Vec::new();
    let mut count = 0;
    for (path, node) in tree.iter() {
        let (true, Some(facts)) = (node.new, &node.elf) else {
            continue;
        };
        if !matches!(facts.kind, 2 | 3) {
            continue;
        }
        count += 1;
        if let Some(m) = want.filter(|m| *m != facts.machine) {
            out.push(finding(
                Severity::Error,
                path,
                "machine",
                format!(
                    "built for {}, but the image's platform is {} ({})",
                    machine_name(facts.machine),
                    arch.unwrap_or("?"),
                    machine_name(m)
                ),
                "build this file for the target platform, or pick the matching --platform".into(),
                vec![],
            ));
            continue;
        }
        check_loader(tree, path, facts, &mut out);
        let extra: Vec<String> = bundle_dir(tree, path)
            .map(|d| vec![format!("/{d}")])
            .unwrap_or_default();
        let closure = search.closure(path, facts, &extra);
        if !closure.missing.is_empty() {
            let names: Vec<String> = closure
                .missing
                .iter()
                .map(|(soname, by)| {
                    if by == path {
                        soname.clone()
                    } else {
                        format!("{soname} (needed by /{by})")
                    }
                })
                .collect();
            out.push(finding(
                Severity::Error,
                path,
                "libraries",
                format!(
                    "{} shared librar{} not found in the image: {}",
                    names.len(),
                    if names.len() == 1 { "y" } else { "ies" },
                    names.join(", ")
                ),
                "install the packages that provide them in the base (or use a base that has them), or bundle them beside the file with an $ORIGIN RUNPATH".into(),
                closure.missing.iter().map(|(s, _)| s.clone()).collect(),
            ));
        }
        check_versions(tree, path, facts, &closure.found, &mut out);
    }
    (out, count)
}

fn check_loader(tree: &Tree, path: &str, facts: &ElfFacts, out: &mut Vec<Finding>) {
    let Some(interp) = &facts.interp else {
        return;
    };
    if tree.resolve_file(interp).is_some() {
        return;
    }
    let musl = tree.children("lib").any(|(p, _)| {
        p.rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with("ld-musl-"))
    });
    let (message, fix) = if musl && interp.contains("ld-linux") {
        (
            format!("its loader {interp} is not in the image: this is a glibc program and the base uses musl libc"),
            "use a glibc base (Debian, Ubuntu, …) or build the program for musl".to_string(),
        )
    } else {
        (
            format!("its loader {interp} is not in the image"),
            "use a base that has the C library this program was linked against".to_string(),
        )
    };
    out.push(finding(
        Severity::Error,
        path,
        "loader",
        message,
        fix,
        vec![interp.clone()],
    ));
}

/// Compares the versions each needed library must define with what the image's copy defines.
fn check_versions(
    tree: &Tree,
    path: &str,
    facts: &ElfFacts,
    found: &BTreeMap<String, String>,
    out: &mut Vec<Finding>,
) {
    for need in &facts.needs {
        let Some(lib_path) = found.get(&need.file) else {
            continue;
        };
        let Some(defines) = tree.get(lib_path).and_then(|n| n.elf.as_ref()) else {
            continue;
        };
        let mut missing: Vec<String> = need
            .versions
            .iter()
            .filter(|v| !defines.defines.contains(v))
            .cloned()
            .collect();
        if missing.is_empty() || defines.defines.is_empty() {
            continue;
        }
        missing.sort_by_key(|v| split_version(v).map(|(f, n)| (f.to_string(), n)));
        let family = split_version(&missing[0]).map_or("", |(f, _)| f);
        let needed_max = highest(&need.versions, family).unwrap_or_else(|| missing[0].clone());
        let have =
            highest(&defines.defines, family).unwrap_or_else(|| format!("no {family}_* version"));
        let (what, fix) = match family {
            "GLIBC" => (
                format!("base glibc too old: {} defines up to {have}, glibc >= {} needed", need.file, number(&needed_max)),
                format!(
                    "build it on a system with an older glibc (no newer than the base's) or use a base with glibc >= {}",
                    number(&needed_max)
                ),
            ),
            "GLIBCXX" | "CXXABI" => (
                format!("the image's libstdc++ is too old: up to {have}, {needed_max} needed"),
                "build with an older GCC, bundle a matching libstdc++.so.6, or use a base with a newer libstdc++6".into(),
            ),
            "GCC" => (
                format!("the image's libgcc_s is too old: up to {have}, {needed_max} needed"),
                "use a base with a newer libgcc-s1, or build with an older GCC".into(),
            ),
            _ => (
                format!("{} defines up to {have}, {needed_max} needed", need.file),
                format!("use a base whose {} is newer, or bundle one", need.file),
            ),
        };
        out.push(finding(
            Severity::Error,
            path,
            "glibc",
            format!("{what} (missing {} in /{lib_path})", missing.join(", ")),
            fix,
            missing,
        ));
    }
}

/// `GLIBC_2.36` → `2.36`.
fn number(v: &str) -> &str {
    v.rsplit_once('_').map_or(v, |(_, n)| n)
}

/// Libraries at the top of a PyInstaller `_internal` folder that are older than the image's own
/// copy: the bundle's launcher puts `_internal` on `LD_LIBRARY_PATH` for every child process
/// (e.g. Chromium started by the server), so the older copy wins there.
pub fn check_bundle_leaks(tree: &Tree, search: &Search) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (path, node) in tree.iter() {
        if !node.new {
            continue;
        }
        let Some(dir) = bundle_dir(tree, path) else {
            continue;
        };
        let Some((parent, name)) = path.rsplit_once('/') else {
            continue;
        };
        if parent != dir || !crate::check::summary::is_library_name(name) || !seen.insert(path) {
            continue;
        }
        let Some((_, real)) = tree.resolve_file(path) else {
            continue;
        };
        let Some(bundled) = real.elf.as_ref() else {
            continue;
        };
        let Some(system) = search.find_in(name, &search.system_dirs(bundled), bundled) else {
            continue;
        };
        let Some(sys_facts) = tree.get(&system).and_then(|n| n.elf.as_ref()) else {
            continue;
        };
        for family in families(&sys_facts.defines) {
            let (Some(mine), Some(theirs)) = (
                highest(&bundled.defines, &family),
                highest(&sys_facts.defines, &family),
            ) else {
                continue;
            };
            let older = split_version(&mine).map(|v| v.1) < split_version(&theirs).map(|v| v.1);
            if older {
                out.push(finding(
                    Severity::Warning,
                    path,
                    "bundle-leak",
                    format!(
                        "bundled {name} ({mine}) is older than the image's /{system} ({theirs}); the launcher puts /{dir} on LD_LIBRARY_PATH for child processes too, so programs it starts (e.g. Chromium) load the older copy and may fail with \"version `{theirs}' not found\""
                    ),
                    format!("leave {name} out of the bundle (PyInstaller --exclude-binary or delete it from /{dir}), or make child processes use LD_LIBRARY_PATH_ORIG"),
                    vec![mine, theirs],
                ));
                break;
            }
        }
    }
    out
}

/// Version families defined by a library (`GLIBCXX`, `CXXABI`, …), numbered ones only, the
/// library's main family (the one with most versions) first.
fn families(defines: &[String]) -> Vec<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for d in defines {
        if let Some((f, _)) = split_version(d) {
            *counts.entry(f.to_string()).or_default() += 1;
        }
    }
    let mut f: Vec<(usize, String)> = counts.into_iter().map(|(k, n)| (n, k)).collect();
    f.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    f.into_iter().map(|(_, k)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::elf::VersionNeed;
    use crate::check::summary::{Change, Kind, LayerSummary, Node};

    fn elf_node(facts: ElfFacts) -> Node {
        let mut n = Node::plain(Kind::File, 0o755, 0, 0, 1);
        n.elf = Some(facts);
        n
    }

    fn libc(defines: &[&str]) -> ElfFacts {
        ElfFacts {
            class64: true,
            machine: 62,
            kind: 3,
            soname: Some("libc.so.6".into()),
            defines: defines.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn program(machine: u16, interp: &str, need: &[&str]) -> ElfFacts {
        ElfFacts {
            class64: true,
            machine,
            kind: 2,
            interp: Some(interp.into()),
            needed: vec!["libc.so.6".into()],
            needs: vec![VersionNeed {
                file: "libc.so.6".into(),
                versions: need.iter().map(|s| s.to_string()).collect(),
            }],
            ..Default::default()
        }
    }

    fn findings(base: Vec<Change>, new: ElfFacts) -> Vec<(&'static str, Vec<String>)> {
        let mut t = Tree::default();
        t.apply(&LayerSummary { changes: base }, false);
        t.apply(
            &LayerSummary {
                changes: vec![Change::Add("app/prog".into(), elf_node(new))],
            },
            true,
        );
        let s = Search::new(&t, None);
        let (f, n) = check(&t, &s, Some("amd64"));
        assert_eq!(n, 1);
        f.into_iter().map(|f| (f.check, f.items)).collect()
    }

    #[test]
    fn versions_loader_and_machine() {
        let glibc = || {
            vec![
                Change::Add(
                    "lib/x86_64-linux-gnu/libc.so.6".into(),
                    elf_node(libc(&["GLIBC_2.2.5", "GLIBC_2.30"])),
                ),
                Change::Add(
                    "lib64/ld-linux-x86-64.so.2".into(),
                    Node::plain(Kind::File, 0o755, 0, 0, 1),
                ),
            ]
        };
        let ld = "/lib64/ld-linux-x86-64.so.2";
        assert!(findings(glibc(), program(62, ld, &["GLIBC_2.2.5"])).is_empty());
        assert_eq!(
            findings(
                glibc(),
                program(62, ld, &["GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.32"])
            ),
            vec![("glibc", vec!["GLIBC_2.32".into(), "GLIBC_2.34".into()])]
        );
        assert_eq!(
            findings(glibc(), program(183, ld, &[])),
            vec![("machine", vec![])]
        );
        let musl = vec![Change::Add(
            "lib/ld-musl-x86_64.so.1".into(),
            Node::plain(Kind::File, 0o755, 0, 0, 1),
        )];
        let f = findings(musl, program(62, ld, &[]));
        assert_eq!(f[0], ("loader", vec![ld.to_string()]));
        assert_eq!(f[1], ("libraries", vec!["libc.so.6".to_string()]));
    }
}
