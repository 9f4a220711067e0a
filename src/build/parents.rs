//! Parent folders of layer destinations as a local base has them: a layer writes its parent
//! folders with the base's mode and owner (so `/tmp` stays 1777 under `--layer x:/tmp/x`), and a
//! destination that goes through something the base has as a symlink or a file is refused
//! (a folder written there would replace it, hiding what a symlink points to).

use std::collections::BTreeMap;

use crate::check::summary::{Kind, Node};
use crate::check::tree::Tree;
use crate::error::{Error, Result};
use crate::layer::{LayerSpec, Owner};

/// The base's mode and owner of every folder on the way to `layer`'s destination (the
/// destination itself included when the base has it as a folder), by path.
pub fn base_dirs(tree: &Tree, layer: &LayerSpec) -> Result<BTreeMap<String, (u32, Owner)>> {
    let dest = layer.dest_components();
    let mut dirs = BTreeMap::new();
    for n in 1..=dest.len() {
        let path = dest[..n].join("/");
        let found = match tree.get(&path) {
            None => break,
            Some(Node {
                kind: Kind::Dir,
                mode,
                uid,
                gid,
                ..
            }) => {
                let owner = Owner {
                    uid: *uid,
                    gid: *gid,
                };
                dirs.insert(path, (*mode, owner));
                continue;
            }
            // The destination itself may replace a file or a symlink: that is what it asks for.
            Some(_) if n == dest.len() => break,
            Some(Node {
                kind: Kind::Symlink(target),
                ..
            }) => format!("a symlink to {target}"),
            Some(_) => "a file".to_string(),
        };
        return Err(Error::DestinationThroughNonFolder {
            dest: layer.dest.clone(),
            parent: format!("/{path}"),
            found,
        });
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::summary::{Change, LayerSummary};

    fn tree(nodes: &[(&str, Kind, u32, u64)]) -> Tree {
        let changes = nodes
            .iter()
            .map(|(p, k, mode, uid)| {
                Change::Add(
                    (*p).to_string(),
                    Node::plain(k.clone(), *mode, *uid, *uid, 0),
                )
            })
            .collect();
        let mut t = Tree::default();
        t.apply(&LayerSummary { changes }, false);
        t
    }

    #[test]
    fn parents_take_the_base_mode_and_owner() {
        let t = tree(&[
            ("tmp", Kind::Dir, 0o1777, 0),
            ("home", Kind::Dir, 0o755, 0),
            ("home/app", Kind::Dir, 0o750, 1000),
        ]);
        let dirs = base_dirs(&t, &LayerSpec::new("x", "/tmp/x")).unwrap();
        assert_eq!(dirs["tmp"], (0o1777, Owner::default()));
        assert_eq!(dirs.len(), 1);
        let dirs = base_dirs(&t, &LayerSpec::new("x", "/home/app/srv/bin")).unwrap();
        assert_eq!(
            dirs["home/app"],
            (
                0o750,
                Owner {
                    uid: 1000,
                    gid: 1000
                }
            )
        );
        assert_eq!(dirs.len(), 2);
    }

    #[test]
    fn a_destination_through_a_symlink_or_file_is_refused() {
        let t = tree(&[
            ("lib", Kind::Symlink("usr/lib".into()), 0o777, 0),
            ("etc", Kind::Dir, 0o755, 0),
            ("etc/hosts", Kind::File, 0o644, 0),
        ]);
        let e = base_dirs(&t, &LayerSpec::new("x", "/lib/app")).unwrap_err();
        assert!(
            e.to_string().contains("/lib as a symlink to usr/lib"),
            "{e}"
        );
        let e = base_dirs(&t, &LayerSpec::new("x", "/etc/hosts/x")).unwrap_err();
        assert!(e.to_string().contains("/etc/hosts as a file"), "{e}");
        // Replacing the symlink or file itself is what a destination may ask for.
        assert!(base_dirs(&t, &LayerSpec::new("x", "/lib")).is_ok());
        assert!(base_dirs(&t, &LayerSpec::new("x", "/etc/hosts")).is_ok());
    }
}
