//! One entry of a layer's tar stream, independent of where its bytes come from.

use std::cmp::Ordering;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// Numeric owner written into tar headers (never chown'ed on the host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
}

impl Owner {
    /// Parses `UID:GID` (or a lone `UID`, which uses the same number for the group).
    pub fn parse(s: &str) -> Result<Self, ()> {
        let (u, g) = s.split_once(':').unwrap_or((s, s));
        Ok(Owner {
            uid: u.parse().map_err(|_| ())?,
            gid: g.parse().map_err(|_| ())?,
        })
    }
}

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Owner::parse(&s)
            .map_err(|_| serde::de::Error::custom(format!("owner {s:?}: expected UID:GID")))
    }
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file of `size` bytes.
    File {
        /// Size in bytes.
        size: u64,
    },
    /// A symbolic link with its target text.
    Symlink(String),
    /// A hard link to another entry of the same layer (resolved after sorting).
    Hardlink(String),
}

/// Where a regular file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// No bytes (directories, links).
    None,
    /// A file on the host.
    File(PathBuf),
    /// A byte offset into the (uncompressed) source tarball.
    Archive(u64),
}

/// One entry of a layer, with its path relative to the image root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path components relative to the image root.
    pub path: Vec<String>,
    /// The entry type.
    pub kind: EntryKind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner written in the header.
    pub owner: Owner,
    /// Where the file bytes come from.
    pub content: Content,
    /// Files sharing a link group are hard links of each other.
    pub link_group: Option<u64>,
}

impl Entry {
    /// A directory entry.
    pub fn dir(path: Vec<String>, mode: u32, owner: Owner) -> Self {
        Entry {
            path,
            kind: EntryKind::Dir,
            mode,
            owner,
            content: Content::None,
            link_group: None,
        }
    }

    /// The path as written in the tar header (directories end with `/`).
    pub fn tar_path(&self) -> String {
        let mut p = self.path.join("/");
        if self.kind == EntryKind::Dir {
            p.push('/');
        }
        p
    }
}

/// Orders entries by path components, so a directory precedes its contents.
pub fn compare_paths(a: &[String], b: &[String]) -> Ordering {
    a.iter()
        .map(|s| s.as_bytes())
        .cmp(b.iter().map(|s| s.as_bytes()))
}

/// Sorts entries, keeps the last of any duplicate paths, and turns link groups into one file
/// followed by hard links to it.
pub fn finalize(mut entries: Vec<Entry>) -> Vec<Entry> {
    // A stable sort keeps the input order among equal paths, so "last wins" is well defined.
    entries.sort_by(|a, b| compare_paths(&a.path, &b.path));
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    for e in entries {
        match out.last_mut() {
            Some(last) if last.path == e.path => *last = e,
            _ => out.push(e),
        }
    }
    let mut first_of_group: std::collections::HashMap<u64, String> =
        std::collections::HashMap::new();
    for e in &mut out {
        if let (Some(group), EntryKind::File { .. }) = (e.link_group, &e.kind) {
            match first_of_group.get(&group) {
                Some(first) => {
                    e.kind = EntryKind::Hardlink(first.clone());
                    e.content = Content::None;
                }
                None => {
                    first_of_group.insert(group, e.path.join("/"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('/').map(str::to_string).collect()
    }

    fn file(path: &str, group: Option<u64>) -> Entry {
        Entry {
            path: p(path),
            kind: EntryKind::File { size: 1 },
            mode: 0o644,
            owner: Owner::default(),
            content: Content::None,
            link_group: group,
        }
    }

    #[test]
    fn sorts_dirs_before_contents() {
        let mut v = vec![p("a-b"), p("a/b"), p("a"), p("a.b"), p("a/a")];
        v.sort_by(|x, y| compare_paths(x, y));
        assert_eq!(v, vec![p("a"), p("a/a"), p("a/b"), p("a-b"), p("a.b")]);
    }

    #[test]
    fn hardlink_groups_point_at_first_sorted_path() {
        let out = finalize(vec![
            file("z", Some(7)),
            file("b", Some(7)),
            file("m", None),
        ]);
        assert_eq!(out[0].kind, EntryKind::File { size: 1 });
        assert_eq!(out[1].path, p("m"));
        assert_eq!(out[2].kind, EntryKind::Hardlink("b".into()));
    }

    #[test]
    fn duplicate_paths_keep_the_last() {
        let mut second = file("x", None);
        second.mode = 0o600;
        let out = finalize(vec![file("x", None), second]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].mode, 0o600);
    }

    #[test]
    fn owner_parse() {
        assert_eq!(
            Owner::parse("1000:1001"),
            Ok(Owner {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(Owner::parse("7"), Ok(Owner { uid: 7, gid: 7 }));
        assert!(Owner::parse("a:b").is_err());
    }
}
