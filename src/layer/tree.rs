//! Directory and single-file sources: walks the host tree (never following symlinks) and lists
//! its entries under the layer's destination.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::layer::entry::{Content, Entry, EntryKind, Owner};

/// Lists a directory tree rooted at `root` as entries under `dest` (the root itself included).
pub fn walk_dir(root: &Path, dest: &[String], owner: Owner) -> Result<Vec<Entry>> {
    let meta = fs::metadata(root).at("reading", root)?;
    let mut entries = vec![Entry::dir(dest.to_vec(), meta.mode() & 0o7777, owner)];
    let mut links = LinkGroups::default();
    walk(root, dest, owner, &mut links, &mut entries)?;
    Ok(entries)
}

/// Lists a single regular file as one entry at `dest`.
pub fn single_file(path: &Path, dest: &[String], owner: Owner) -> Result<Entry> {
    let meta = fs::metadata(path).at("reading", path)?;
    Ok(Entry {
        path: dest.to_vec(),
        kind: EntryKind::File { size: meta.len() },
        mode: meta.mode() & 0o7777,
        owner,
        content: Content::File(path.to_path_buf()),
        link_group: None,
    })
}

/// Maps (device, inode) of multiply-linked files to a link group number.
#[derive(Default)]
struct LinkGroups(HashMap<(u64, u64), u64>);

impl LinkGroups {
    fn group(&mut self, meta: &fs::Metadata) -> Option<u64> {
        if meta.nlink() < 2 {
            return None;
        }
        let next = self.0.len() as u64;
        Some(*self.0.entry((meta.dev(), meta.ino())).or_insert(next))
    }
}

fn walk(
    dir: &Path,
    prefix: &[String],
    owner: Owner,
    links: &mut LinkGroups,
    out: &mut Vec<Entry>,
) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .at("listing", dir)?
        .collect::<std::io::Result<Vec<_>>>()
        .at("listing", dir)?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let path = child.path();
        let name = child
            .file_name()
            .into_string()
            .map_err(|_| Error::UnsupportedFileType {
                path: path.clone(),
                kind: "non-UTF-8 named",
            })?;
        let meta = fs::symlink_metadata(&path).at("reading", &path)?;
        let ft = meta.file_type();
        let mut rel = prefix.to_vec();
        rel.push(name);
        let mode = meta.mode() & 0o7777;
        if ft.is_dir() {
            out.push(Entry::dir(rel.clone(), mode, owner));
            walk(&path, &rel, owner, links, out)?;
        } else if ft.is_file() {
            out.push(Entry {
                path: rel,
                kind: EntryKind::File { size: meta.len() },
                mode,
                owner,
                content: Content::File(path),
                link_group: links.group(&meta),
            });
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).at("reading link", &path)?;
            let target =
                target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| Error::UnsupportedFileType {
                        path: path.clone(),
                        kind: "non-UTF-8 symlink",
                    })?;
            out.push(Entry {
                path: rel,
                kind: EntryKind::Symlink(target),
                mode: 0o777,
                owner,
                content: Content::None,
                link_group: None,
            });
        } else {
            let kind = if ft.is_socket() {
                "socket"
            } else if ft.is_fifo() {
                "fifo"
            } else if ft.is_block_device() {
                "block device"
            } else {
                "character device"
            };
            return Err(Error::UnsupportedFileType { path, kind });
        }
    }
    Ok(())
}
