//! Parent folders of layer destinations as the image below the layer has them. A layer writes
//! its parent folders with the mode and owner they already have — in a local base (so `/tmp`
//! stays 1777 under `--layer x:/tmp/x`) or in an earlier layer of the same build (so
//! `--layer app:/app,owner=1000:1000 --layer data:/app/data` keeps `/app` owned by 1000) — and a
//! destination that goes through something the image has as a symlink or a file is refused (a
//! folder written there would replace it, hiding what a symlink points to).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::check::summary::{Kind, Node};
use crate::check::tree::Tree;
use crate::error::{Error, Result};
use crate::layer::archive;
use crate::layer::plan::IMPLIED_DIR_MODE;
use crate::layer::{LayerSpec, Owner};

/// What the image has at a path.
enum Found {
    /// A folder with this mode and owner.
    Dir(u32, Owner),
    /// Something else, described (`a symlink to usr/lib`, `a file`).
    Other(String),
}

/// The mode and owner of every folder on the way to `layer`'s destination (the destination
/// itself included when it is a folder), by path (`a/b`), as the image below the layer has
/// them: `base` (a local base's files), then what the `earlier` layers of the build write.
pub fn parent_dirs(
    base: Option<&Tree>,
    earlier: &[LayerSpec],
    layer: &LayerSpec,
) -> Result<BTreeMap<String, (u32, Owner)>> {
    let dest = layer.dest_components();
    let mut dirs = BTreeMap::new();
    for n in 1..=dest.len() {
        let path = dest[..n].join("/");
        let mut found = base.and_then(|t| t.get(&path)).map(|node| match node {
            Node {
                kind: Kind::Dir,
                mode,
                uid,
                gid,
                ..
            } => Found::Dir(
                *mode,
                Owner {
                    uid: *uid,
                    gid: *gid,
                },
            ),
            Node {
                kind: Kind::Symlink(target),
                ..
            } => Found::Other(format!("a symlink to {target}")),
            _ => Found::Other("a file".into()),
        });
        for e in earlier {
            if let Some(f) = written_by(e, &dest[..n])? {
                found = Some(f);
            }
        }
        match found {
            Some(Found::Dir(mode, owner)) => {
                dirs.insert(path, (mode, owner));
            }
            // The destination itself may replace a file or a symlink: that is what it asks for.
            Some(Found::Other(_)) if n == dest.len() => {}
            Some(Found::Other(what)) => {
                return Err(Error::DestinationThroughNonFolder {
                    dest: layer.dest.clone(),
                    parent: format!("/{path}"),
                    found: what,
                })
            }
            None => {}
        }
    }
    Ok(dirs)
}

/// What layer `e` writes at `path`, as far as its source tells without listing it: a folder
/// source's folders, files and symlinks (one `lstat`), a tarball's destination folder. `None`
/// when it writes nothing there or that is not known (a path inside a tarball).
fn written_by(e: &LayerSpec, path: &[String]) -> Result<Option<Found>> {
    let dest = e.dest_components();
    let Some(rel) = path.strip_prefix(dest.as_slice()) else {
        return Ok(None);
    };
    let owner = e.owner.unwrap_or_default();
    let src_meta = fs::metadata(&e.src).map_err(|err| Error::io("reading", &e.src, err))?;
    if !src_meta.is_dir() {
        let tarball = e.extract && archive::sniff(&e.src)?.is_some();
        return Ok(match (rel.is_empty(), tarball) {
            (true, true) => Some(Found::Dir(IMPLIED_DIR_MODE, owner)),
            (true, false) if !e.dest.ends_with('/') => Some(Found::Other("a file".into())),
            _ => None,
        });
    }
    let (meta, host) = if rel.is_empty() {
        (src_meta, e.src.clone())
    } else {
        let host = rel.iter().fold(e.src.clone(), |p, c| p.join(c));
        match fs::symlink_metadata(&host) {
            Ok(m) => (m, host),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::io("reading", &host, err)),
        }
    };
    Ok(Some(if meta.is_dir() {
        Found::Dir(meta.mode() & 0o7777, owner)
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(&host).map_err(|err| Error::io("reading", &host, err))?;
        Found::Other(format!(
            "a symlink to {} (in {})",
            target.display(),
            e.src.display()
        ))
    } else {
        Found::Other(format!("a file (from {})", e.src.display()))
    }))
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
        let dirs = parent_dirs(Some(&t), &[], &LayerSpec::new("x", "/tmp/x")).unwrap();
        assert_eq!(dirs["tmp"], (0o1777, Owner::default()));
        assert_eq!(dirs.len(), 1);
        let dirs = parent_dirs(Some(&t), &[], &LayerSpec::new("x", "/home/app/srv/bin")).unwrap();
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
        let e = parent_dirs(Some(&t), &[], &LayerSpec::new("x", "/lib/app")).unwrap_err();
        assert!(
            e.to_string().contains("/lib is a symlink to usr/lib"),
            "{e}"
        );
        let e = parent_dirs(Some(&t), &[], &LayerSpec::new("x", "/etc/hosts/x")).unwrap_err();
        assert!(e.to_string().contains("/etc/hosts is a file"), "{e}");
        // Replacing the symlink or file itself is what a destination may ask for.
        assert!(parent_dirs(Some(&t), &[], &LayerSpec::new("x", "/lib")).is_ok());
        assert!(parent_dirs(Some(&t), &[], &LayerSpec::new("x", "/etc/hosts")).is_ok());
    }

    #[test]
    fn parents_written_by_earlier_layers_win() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        fs::create_dir_all(app.join("lib")).unwrap();
        fs::set_permissions(&app, fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("lib", app.join("link")).unwrap();
        let mut first = LayerSpec::new(&app, "/srv/app");
        first.owner = Some(Owner {
            uid: 1000,
            gid: 1000,
        });
        let t = tree(&[("srv", Kind::Dir, 0o755, 0)]);
        let dirs = parent_dirs(
            Some(&t),
            &[first.clone()],
            &LayerSpec::new("x", "/srv/app/lib/x"),
        )
        .unwrap();
        let app_owner = Owner {
            uid: 1000,
            gid: 1000,
        };
        assert_eq!(dirs["srv"], (0o755, Owner::default()));
        assert_eq!(dirs["srv/app"], (0o750, app_owner));
        assert_eq!(dirs["srv/app/lib"].1, app_owner);
        // No base known (a registry base): earlier layers still count.
        let dirs = parent_dirs(
            None,
            &[first.clone()],
            &LayerSpec::new("x", "/srv/app/data"),
        )
        .unwrap();
        assert_eq!(dirs.keys().collect::<Vec<_>>(), ["srv/app"]);
        let e = parent_dirs(None, &[first], &LayerSpec::new("x", "/srv/app/link/x")).unwrap_err();
        assert!(
            e.to_string().contains("/srv/app/link is a symlink to lib"),
            "{e}"
        );
    }
}
