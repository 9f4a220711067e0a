//! Turns a [`LayerSpec`] into the sorted list of entries its layer will hold, checking every input
//! before anything is written.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::layer::archive::{self, ArchivePlan};
use crate::layer::entry::{finalize, Entry, Owner};
use crate::layer::spec::LayerSpec;
use crate::layer::tree;

/// Mode of directories hoist invents (parents of a destination, implicit tarball folders).
pub const IMPLIED_DIR_MODE: u32 = 0o755;

/// Everything needed to write one layer: its entries in final order and, for a tarball source,
/// how to read the bytes back.
pub struct LayerPlan {
    /// The spec it came from.
    pub spec: LayerSpec,
    /// Entries sorted by path, hard links resolved.
    pub entries: Vec<Entry>,
    /// The tarball the file bytes come from, if the source is one.
    pub archive: Option<ArchivePlan>,
    /// History text of a layer hoist generates (users, directories); `None` for sources.
    pub generated: Option<String>,
}

impl LayerPlan {
    /// Lists and checks the source of `spec`. Reads the source (a tarball once, to check it) and
    /// writes nothing.
    pub fn new(spec: &LayerSpec) -> Result<Self> {
        spec.validate()?;
        let src = &spec.src;
        let meta = match fs::metadata(src) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingSource(src.clone()))
            }
            Err(e) => return Err(Error::io("reading", src, e)),
        };
        let owner = spec.owner.unwrap_or_default();
        let mut dest = spec.dest_components();
        let mut archive = None;
        let mut entries = if meta.is_dir() {
            tree::walk_dir(src, &dest, owner)?
        } else if meta.is_file() {
            match if spec.extract {
                archive::sniff(src)?
            } else {
                None
            } {
                Some(codec) => {
                    let (mut entries, plan) = archive::scan(src, codec, &dest, spec.strip, owner)?;
                    entries.insert(0, Entry::dir(dest.clone(), IMPLIED_DIR_MODE, owner));
                    archive = Some(plan);
                    entries
                }
                None => {
                    if spec.dest.ends_with('/') || dest.is_empty() {
                        let name = src.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                            Error::UnsupportedSource {
                                path: src.clone(),
                                kind: "file without a UTF-8 name",
                            }
                        })?;
                        dest.push(name.to_string());
                    }
                    vec![tree::single_file(src, &dest, owner)?]
                }
            }
        } else {
            return Err(Error::UnsupportedSource {
                path: src.clone(),
                kind: "special file",
            });
        };
        entries.retain(|e| !e.path.is_empty());
        let parents = spec.parents.then_some(&spec.parent_dirs);
        add_implied_dirs(&mut entries, &spec.dest_components(), parents, owner);
        Ok(LayerPlan {
            spec: spec.clone(),
            entries: finalize(entries),
            archive,
            generated: None,
        })
    }

    /// A layer hoist generates itself from `entries` (file bytes inline), described in the
    /// history as `created_by`.
    pub fn generated(entries: Vec<Entry>, created_by: String) -> Self {
        LayerPlan {
            spec: LayerSpec::new("(generated)", "/"),
            entries: finalize(entries),
            archive: None,
            generated: Some(created_by),
        }
    }

    /// Total bytes of file content in the layer.
    pub fn content_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| {
                if let crate::layer::EntryKind::File { size } = e.kind {
                    size
                } else {
                    0
                }
            })
            .sum()
    }

    /// Short description for the image history, e.g. `hoist layer app -> /opt/app`.
    pub fn created_by(&self) -> String {
        if let Some(g) = &self.generated {
            return g.clone();
        }
        created_by(&self.spec)
    }
}

/// The history line of a layer built from `spec`.
pub fn created_by(spec: &LayerSpec) -> String {
    let mut s = format!("hoist layer {} -> {}", display_name(&spec.src), spec.dest);
    if let Some(o) = spec.owner {
        s.push_str(&format!(" (owner {}:{})", o.uid, o.gid));
    }
    s
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Adds the parents of the destination when `parents` is given (with the mode and owner it
/// lists by path, else root-owned 0755), and any folder inside the destination that the source
/// implies but does not list (owned like the source).
fn add_implied_dirs(
    entries: &mut Vec<Entry>,
    dest: &[String],
    parents: Option<&BTreeMap<String, (u32, Owner)>>,
    owner: Owner,
) {
    let listed: HashSet<Vec<String>> = entries.iter().map(|e| e.path.clone()).collect();
    let mut wanted: HashSet<Vec<String>> = HashSet::new();
    for e in entries.iter() {
        for n in 1..e.path.len() {
            wanted.insert(e.path[..n].to_vec());
        }
    }
    for path in wanted {
        if listed.contains(&path) {
            continue;
        }
        let is_parent_of_dest =
            path.len() < dest.len() || (path.len() == dest.len() && path == dest);
        if is_parent_of_dest && dest.starts_with(&path) {
            if let Some(known) = parents {
                let (mode, owner) = known
                    .get(&path.join("/"))
                    .copied()
                    .unwrap_or((IMPLIED_DIR_MODE, Owner::default()));
                entries.push(Entry::dir(path, mode, owner));
            }
        } else {
            entries.push(Entry::dir(path, IMPLIED_DIR_MODE, owner));
        }
    }
}
