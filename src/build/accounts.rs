//! Users and folders without `RUN`: `--user-add NAME:UID[:GID[:HOME]]` and
//! `--mkdir PATH[,owner=UID:GID][,mode=OCTAL]` become one small generated layer holding
//! `/etc/passwd`, `/etc/group` (and `/etc/shadow`, `/etc/gshadow` where the base has them, with
//! locked passwords) derived from the base's own files, the home folders, and the folders asked
//! for. Parent folders copy the base's mode and owner where the base has them.

use serde::Deserialize;

use crate::check::summary::{Kind, Node};
use crate::check::Tree;
use crate::error::{Error, Result};
use crate::layer::entry::{Content, Entry, EntryKind, Owner};
use crate::layer::LayerPlan;

/// One account to add.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAdd {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u64,
    /// Primary group id (a group of the same name is added when no group has it); default uid.
    pub gid: Option<u64>,
    /// Home folder (default `/home/NAME`), created owned by the user.
    pub home: Option<String>,
}

/// One empty folder to create.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkDir {
    /// Absolute path.
    pub path: String,
    /// Owner (default root).
    #[serde(default)]
    pub owner: Option<Owner>,
    /// Permission bits as octal text (default `0755`).
    #[serde(default)]
    pub mode: Option<String>,
}

fn invalid(what: &'static str, value: &str, reason: &'static str) -> Error {
    Error::InvalidValue {
        what,
        value: value.into(),
        reason,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl UserAdd {
    /// Parses `NAME:UID[:GID[:HOME]]`.
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |r| invalid("--user-add", value, r);
        let mut parts = value.splitn(4, ':');
        let name = parts.next().unwrap_or_default().to_string();
        let uid = parts
            .next()
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| bad("expected NAME:UID[:GID[:HOME]] with numeric ids"))?;
        let gid = match parts.next() {
            None | Some("") => None,
            Some(g) => Some(g.parse().map_err(|_| bad("GID must be a number"))?),
        };
        let home = parts.next().filter(|h| !h.is_empty()).map(str::to_string);
        let u = UserAdd {
            name,
            uid,
            gid,
            home,
        };
        u.validate()?;
        Ok(u)
    }

    /// Checks the name and home folder.
    pub fn validate(&self) -> Result<()> {
        if !valid_name(&self.name) {
            return Err(invalid(
                "--user-add",
                &self.name,
                "names are letters, digits, '_', '-', '.' (at most 32, not starting with '-')",
            ));
        }
        if !self.home().starts_with('/') || self.home().split('/').any(|c| c == "..") {
            return Err(invalid(
                "--user-add",
                &self.home(),
                "HOME must be an absolute path without '..'",
            ));
        }
        Ok(())
    }

    /// The primary group id.
    pub fn gid(&self) -> u64 {
        self.gid.unwrap_or(self.uid)
    }

    /// The home folder.
    pub fn home(&self) -> String {
        self.home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", self.name))
    }
}

impl MkDir {
    /// Parses `PATH[,owner=UID:GID][,mode=OCTAL]`.
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |r| invalid("--mkdir", value, r);
        let mut parts = value.split(',');
        let mut d = MkDir {
            path: parts.next().unwrap_or_default().to_string(),
            owner: None,
            mode: None,
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("owner", v)) => {
                    d.owner = Some(Owner::parse(v).ok_or_else(|| bad("owner must be UID:GID"))?)
                }
                Some(("mode", v)) => d.mode = Some(v.to_string()),
                _ => return Err(bad("options are owner=UID:GID and mode=OCTAL")),
            }
        }
        d.validate()?;
        Ok(d)
    }

    /// Checks the path and mode.
    pub fn validate(&self) -> Result<()> {
        if !self.path.starts_with('/') || self.path.split('/').any(|c| c == "..") {
            return Err(invalid(
                "--mkdir",
                &self.path,
                "must be an absolute path without '..'",
            ));
        }
        self.mode_bits().map(|_| ())
    }

    /// The permission bits.
    pub fn mode_bits(&self) -> Result<u32> {
        match &self.mode {
            None => Ok(0o755),
            Some(m) => u32::from_str_radix(m, 8)
                .ok()
                .filter(|b| *b <= 0o7777)
                .ok_or_else(|| invalid("--mkdir mode", m, "expected octal bits such as 0755")),
        }
    }
}

/// The lines of a base file, with a trailing newline kept.
fn lines_of(text: Option<&str>) -> Vec<String> {
    text.unwrap_or("").lines().map(str::to_string).collect()
}

fn field(line: &str, i: usize) -> Option<&str> {
    line.split(':').nth(i)
}

/// Builds the generated layer, or `None` when nothing is asked for. `base` is the base's merged
/// file system; `epoch` the build time (for the shadow "last change" day).
pub fn accounts_layer(
    users: &[UserAdd],
    dirs: &[MkDir],
    base: &Tree,
    epoch: u64,
) -> Result<Option<LayerPlan>> {
    if users.is_empty() && dirs.is_empty() {
        return Ok(None);
    }
    let mut out = Layer::default();
    if !users.is_empty() {
        let mut passwd = lines_of(base.text("etc/passwd"));
        let mut group = lines_of(base.text("etc/group"));
        let mut shadow = base.text("etc/shadow").map(|t| lines_of(Some(t)));
        let mut gshadow = base.text("etc/gshadow").map(|t| lines_of(Some(t)));
        let day = if epoch == 0 {
            String::new()
        } else {
            (epoch / 86400).to_string()
        };
        for u in users {
            let same_name = passwd.iter().find(|l| field(l, 0) == Some(&u.name));
            let same_uid = passwd
                .iter()
                .find(|l| field(l, 2) == Some(&u.uid.to_string()));
            match (same_name, same_uid) {
                (Some(a), Some(b)) if a == b => {} // already there: keep it
                (Some(_), _) => {
                    return Err(invalid(
                        "--user-add",
                        &u.name,
                        "a user with this name already exists in the base with another uid",
                    ))
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "--user-add",
                        &u.name,
                        "the uid is already used by another user of the base",
                    ))
                }
                (None, None) => {
                    let shell = if base.resolve_file("bin/sh").is_some() {
                        "/bin/sh"
                    } else {
                        ""
                    };
                    passwd.push(format!(
                        "{}:x:{}:{}::{}:{shell}",
                        u.name,
                        u.uid,
                        u.gid(),
                        u.home()
                    ));
                    if let Some(s) = &mut shadow {
                        s.push(format!("{}:!:{day}:0:99999:7:::", u.name));
                    }
                }
            }
            let gid = u.gid().to_string();
            if !group.iter().any(|l| field(l, 2) == Some(&gid)) {
                if group.iter().any(|l| field(l, 0) == Some(&u.name)) {
                    return Err(invalid(
                        "--user-add",
                        &u.name,
                        "a group with this name already exists in the base with another gid",
                    ));
                }
                group.push(format!("{}:x:{gid}:", u.name));
                if let Some(g) = &mut gshadow {
                    g.push(format!("{}:!::", u.name));
                }
            }
            let owner = Owner {
                uid: u.uid,
                gid: u.gid(),
            };
            out.dir(base, &u.home(), 0o755, owner);
        }
        out.file(base, "etc/passwd", &passwd, 0o644);
        out.file(base, "etc/group", &group, 0o644);
        if let Some(s) = shadow {
            out.file(base, "etc/shadow", &s, 0o640);
        }
        if let Some(g) = gshadow {
            out.file(base, "etc/gshadow", &g, 0o640);
        }
    }
    for d in dirs {
        out.dir(base, &d.path, d.mode_bits()?, d.owner.unwrap_or_default());
    }
    let mut what: Vec<String> = users
        .iter()
        .map(|u| format!("user {}:{}", u.name, u.uid))
        .collect();
    what.extend(dirs.iter().map(|d| format!("mkdir {}", d.path)));
    Ok(Some(LayerPlan::generated(
        out.entries,
        format!("hoist {}", what.join(", ")),
    )))
}

/// Entries being collected, with parents added once.
#[derive(Default)]
struct Layer {
    entries: Vec<Entry>,
}

impl Layer {
    fn parents(&mut self, base: &Tree, parts: &[String]) {
        for n in 1..parts.len() {
            let p = parts[..n].to_vec();
            if self.entries.iter().any(|e| e.path == p) {
                continue;
            }
            let key = p.join("/");
            let (mode, owner) = match base.get(&key) {
                Some(Node {
                    kind: Kind::Symlink(_),
                    ..
                }) => continue,
                Some(n) => (
                    n.mode,
                    Owner {
                        uid: n.uid,
                        gid: n.gid,
                    },
                ),
                None => (0o755, Owner::default()),
            };
            self.entries.push(Entry::dir(p, mode, owner));
        }
    }

    fn dir(&mut self, base: &Tree, path: &str, mode: u32, owner: Owner) {
        let parts = crate::check::tree::components(path);
        if parts.is_empty() {
            return;
        }
        self.parents(base, &parts);
        self.entries.retain(|e| e.path != parts);
        self.entries.push(Entry::dir(parts, mode, owner));
    }

    fn file(&mut self, base: &Tree, path: &str, lines: &[String], default_mode: u32) {
        let parts = crate::check::tree::components(path);
        self.parents(base, &parts);
        let mut bytes = lines.join("\n").into_bytes();
        bytes.push(b'\n');
        let (mode, owner) = match base.resolve_file(path) {
            Some((_, n)) => (
                n.mode,
                Owner {
                    uid: n.uid,
                    gid: n.gid,
                },
            ),
            None => (default_mode, Owner::default()),
        };
        self.entries.push(Entry {
            path: parts,
            kind: EntryKind::File {
                size: bytes.len() as u64,
            },
            mode,
            owner,
            content: Content::Bytes(bytes),
            link_group: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::summary::{Change, LayerSummary};

    #[test]
    fn parse_tables() {
        let u = UserAdd::parse("openhands:1000").unwrap();
        assert_eq!((u.gid(), u.home()), (1000, "/home/openhands".to_string()));
        let u = UserAdd::parse("svc:42:43:/srv/svc").unwrap();
        assert_eq!((u.gid(), u.home()), (43, "/srv/svc".to_string()));
        for bad in ["bob", "bob:x", ":1", "bob:1:x", "bob:1:1:rel", "-x:1"] {
            assert!(
                matches!(UserAdd::parse(bad), Err(Error::InvalidValue { .. })),
                "{bad}"
            );
        }
        let d = MkDir::parse("/workspace,owner=1000:1000,mode=0750").unwrap();
        assert_eq!(d.mode_bits().unwrap(), 0o750);
        assert_eq!(
            d.owner,
            Some(Owner {
                uid: 1000,
                gid: 1000
            })
        );
        for bad in ["rel", "/a,mode=999", "/a,owner=x", "/a,colour=1"] {
            assert!(
                matches!(MkDir::parse(bad), Err(Error::InvalidValue { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn derives_files_from_the_base() {
        let mut base = Tree::default();
        let text = |t: &str, mode| {
            let mut n = Node::plain(Kind::File, mode, 0, 42, 1);
            n.text = Some(t.into());
            n
        };
        base.apply(
            &LayerSummary {
                changes: vec![
                    Change::Add(
                        "etc/passwd".into(),
                        text("root:x:0:0:root:/root:/bin/bash\n", 0o644),
                    ),
                    Change::Add("etc/group".into(), text("root:x:0:\n", 0o644)),
                    Change::Add(
                        "etc/shadow".into(),
                        text("root:*:19000:0:99999:7:::\n", 0o640),
                    ),
                ],
            },
            false,
        );
        let users = [UserAdd::parse("openhands:1000").unwrap()];
        let dirs = [MkDir::parse("/workspace,owner=1000:1000").unwrap()];
        let plan = accounts_layer(&users, &dirs, &base, 0).unwrap().unwrap();
        let get = |p: &str| plan.entries.iter().find(|e| e.path.join("/") == p).unwrap();
        let Content::Bytes(b) = &get("etc/passwd").content else {
            panic!()
        };
        assert_eq!(
            String::from_utf8_lossy(b),
            "root:x:0:0:root:/root:/bin/bash\nopenhands:x:1000:1000::/home/openhands:\n"
        );
        let shadow = get("etc/shadow");
        assert_eq!((shadow.mode, shadow.owner.gid), (0o640, 42));
        let Content::Bytes(b) = &shadow.content else {
            panic!()
        };
        assert!(String::from_utf8_lossy(b).ends_with("openhands:!::0:99999:7:::\n"));
        assert_eq!(get("home/openhands").owner.uid, 1000);
        assert_eq!(get("workspace").owner.gid, 1000);
        assert!(matches!(
            accounts_layer(&[UserAdd::parse("root:5").unwrap()], &[], &base, 0),
            Err(Error::InvalidValue { .. })
        ));
    }
}
