//! The new layers as the checks see them, read from their [`LayerPlan`]s before anything is
//! written: host files by random access (only the ELF regions needed), tarball sources as one
//! forward pass over the decompressed stream.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::check::elf::{self, Parse};
use crate::check::summary::{
    read_file_facts, shebang, wants_text, Change, Kind, LayerSummary, Node,
};
use crate::error::{Error, IoContext, Result};
use crate::layer::entry::{Content, EntryKind};
use crate::layer::LayerPlan;

/// Summarises what a layer plan will write.
pub fn summarize_plan(plan: &LayerPlan) -> Result<LayerSummary> {
    let mut changes: Vec<Change> = Vec::with_capacity(plan.entries.len());
    let mut by_path: HashMap<String, usize> = HashMap::new();
    let mut streamed: Vec<(u64, usize)> = Vec::new();
    // (hard link, its target): filled in once the target's facts are known.
    let mut links: Vec<(usize, usize)> = Vec::new();
    for e in &plan.entries {
        let path = e.path.join("/");
        let (uid, gid, mode) = (e.owner.uid, e.owner.gid, e.mode);
        let node = match (&e.kind, &e.content) {
            (EntryKind::Dir, _) => Node::plain(Kind::Dir, mode, uid, gid, 0),
            (EntryKind::Symlink(t), _) => Node::plain(Kind::Symlink(t.clone()), mode, uid, gid, 0),
            (EntryKind::Hardlink(t), _) => match by_path.get(t.trim_end_matches('/')) {
                Some(&i) => {
                    links.push((changes.len(), i));
                    Node::plain(Kind::File, mode, uid, gid, 0)
                }
                None => continue,
            },
            (EntryKind::File { size }, content) => {
                let mut node = Node::plain(Kind::File, mode, uid, gid, *size);
                let text = wants_text(&path);
                match content {
                    Content::File(src) => {
                        let f = File::open(src).at("opening", src)?;
                        host_facts(&f, 0, *size, text, &mut node).at("reading", src)?;
                    }
                    Content::Bytes(b) => {
                        read_file_facts(&mut &b[..], *size, true, text, &mut node)
                            .at("reading", Path::new(&path))?;
                    }
                    Content::Archive(off) => streamed.push((*off, changes.len())),
                    Content::None => {}
                }
                by_path.insert(path.clone(), changes.len());
                node
            }
        };
        changes.push(Change::Add(path, node));
    }
    if let (Some(a), false) = (&plan.archive, streamed.is_empty()) {
        read_archive_facts(&a.path, a.tar_path(), streamed, &mut changes)?;
    }
    for (link, target) in links {
        if let (Change::Add(_, t), Change::Add(p, _)) = (&changes[target], &changes[link]) {
            let (node, path) = (t.clone(), p.clone());
            changes[link] = Change::Add(path, node);
        }
    }
    Ok(LayerSummary { changes })
}

/// Fills in facts of the files of tarball `archive` (named in errors) by offset in its
/// uncompressed tar stream `tar`.
fn read_archive_facts(
    archive: &Path,
    tar: &Path,
    mut files: Vec<(u64, usize)>,
    changes: &mut [Change],
) -> Result<()> {
    files.sort();
    let bad = |e: io::Error| Error::BadArchive {
        archive: archive.to_path_buf(),
        message: format!("reading for checks: {e}"),
    };
    let f = File::open(tar).at("opening", tar)?;
    for (off, i) in files {
        if let Change::Add(p, node) = &mut changes[i] {
            let text = wants_text(p);
            host_facts(&f, off, node.size, text, node).map_err(bad)?;
        }
    }
    Ok(())
}

/// Facts of `size` bytes at `base` in a file, reading only what is needed.
fn host_facts(f: &File, base: u64, size: u64, want_text: bool, node: &mut Node) -> io::Result<()> {
    let read_at = |off: u64, len: u64| -> io::Result<Vec<u8>> {
        let len = len.min(size.saturating_sub(off));
        let mut b = vec![0u8; len as usize];
        let mut n = 0;
        while n < b.len() {
            match f.read_at(&mut b[n..], base + off + n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        b.truncate(n);
        Ok(b)
    };
    if want_text && size <= 1 << 20 {
        node.text = Some(String::from_utf8_lossy(&read_at(0, size)?).into_owned());
    }
    let head = read_at(0, 256)?;
    node.shebang = shebang(&head);
    if head.starts_with(elf::MAGIC) {
        if let Parse::Done(facts) = elf::parse_with(read_at) {
            node.elf = Some(facts);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerSpec;

    fn facts_of(summary: &LayerSummary, path: &str) -> Option<crate::check::elf::ElfFacts> {
        summary.changes.iter().find_map(|c| match c {
            Change::Add(p, n) if p == path => n.elf.clone(),
            _ => None,
        })
    }

    #[test]
    fn elf_facts_from_directories_and_compressed_tarballs() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src/bin");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::copy("/bin/sh", src.join("sh")).unwrap();
        std::fs::hard_link(src.join("sh"), src.join("sh2")).unwrap();
        std::fs::write(src.join("run"), b"#!/bin/sh\nexit 0\n").unwrap();
        let dir_plan = LayerPlan::new(&LayerSpec::new(t.path().join("src"), "/opt")).unwrap();
        let from_dir = summarize_plan(&dir_plan).unwrap();
        assert!(facts_of(&from_dir, "opt/bin/sh").is_some_and(|f| f.interp.is_some()));
        assert_eq!(
            facts_of(&from_dir, "opt/bin/sh2"),
            facts_of(&from_dir, "opt/bin/sh")
        );
        for (name, flag) in [
            ("l.tar.gz", "-czf"),
            ("l.tar.zst", "--zstd"),
            ("l.tar", "-cf"),
        ] {
            let tarball = t.path().join(name);
            let mut cmd = std::process::Command::new("tar");
            if flag == "--zstd" {
                cmd.args(["--zstd", "-cf"]);
            } else {
                cmd.arg(flag);
            }
            let ok = cmd
                .arg(&tarball)
                .arg("-C")
                .arg(t.path().join("src"))
                .arg("bin")
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                continue; // tar without zstd support
            }
            let plan = LayerPlan::new(&LayerSpec::new(&tarball, "/opt")).unwrap();
            let s = summarize_plan(&plan).unwrap();
            assert_eq!(
                facts_of(&s, "opt/bin/sh"),
                facts_of(&from_dir, "opt/bin/sh"),
                "{name}"
            );
            assert_eq!(
                facts_of(&s, "opt/bin/sh2"),
                facts_of(&from_dir, "opt/bin/sh"),
                "{name}"
            );
            let shebang = s.changes.iter().find_map(|c| match c {
                Change::Add(p, n) if p == "opt/bin/run" => n.shebang.clone(),
                _ => None,
            });
            assert_eq!(shebang.as_deref(), Some("/bin/sh"), "{name}");
        }
    }
}
