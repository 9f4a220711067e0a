//! Will it run? Compatibility checks of the new layers with the base, before anything is written
//! or pushed: symbol versions (glibc, libstdc++, libgcc_s, NSS), shared libraries resolved as
//! `ld.so` would, loader and architecture, entrypoint, user and working directory, PyInstaller
//! bundles shadowing the image's libraries, and Playwright browser revisions.
//!
//! Base layers are read as tar streams (never extracted) into small per-layer summaries cached
//! by layer digest, so a second check on the same base reads no base blob.

pub mod binaries;
pub mod elf;
pub mod libs;
pub mod plans;
pub mod playwright;
pub mod report;
pub mod runtime;
pub mod summary;
pub mod tree;

use std::path::Path;

use serde_json::Value;

pub use report::{Finding, Report, Severity};
pub use summary::LayerSummary;
pub use tree::{cache_dir, Tree};

use crate::error::{Error, Result};
use crate::image::Layer;

/// What `build` does with the checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckMode {
    /// Run them; errors stop the build (the default).
    #[default]
    Error,
    /// Run them; print errors as warnings and build anyway.
    Warn,
    /// Do not run them (no base layer is read).
    Off,
}

impl std::str::FromStr for CheckMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "error" | "true" | "on" => Ok(CheckMode::Error),
            "warn" => Ok(CheckMode::Warn),
            "off" | "false" | "none" => Ok(CheckMode::Off),
            _ => Err(Error::InvalidValue {
                what: "--check",
                value: s.into(),
                reason: "expected error, warn or off",
            }),
        }
    }
}

/// The base's merged file system and what reading it cost.
#[derive(Debug, Default)]
pub struct BaseView {
    /// The merged files of the base.
    pub tree: Tree,
    /// Layers read from their blobs.
    pub read: usize,
    /// Layers whose summary came from the cache.
    pub cached: usize,
}

/// Reads the base layers (from the cache in `cache` when there) and merges them.
pub fn read_base(layers: &[Layer], cache: Option<&Path>) -> Result<BaseView> {
    let mut view = BaseView::default();
    for l in layers {
        let (summary, read) = tree::layer_summary(l, false, cache)?;
        view.tree.apply(&summary, false);
        if read {
            view.read += 1;
        } else {
            view.cached += 1;
        }
    }
    Ok(view)
}

/// Runs every check on the base plus `new_layers`, with the final image `config`; `arch` is
/// the target platform's architecture.
pub fn check_image(
    mut base: BaseView,
    new_layers: &[LayerSummary],
    config: &Value,
    arch: Option<&str>,
) -> Report {
    let mut findings = Vec::new();
    let base_dirs = touched_base_dirs(&base.tree, new_layers);
    for l in new_layers {
        findings.extend(replaced_symlinks(&base.tree, l));
        base.tree.apply(l, true);
    }
    findings.extend(changed_base_dirs(&base.tree, base_dirs));
    let tree = &base.tree;
    let search = libs::Search::new(tree, runtime::env_var(config, "LD_LIBRARY_PATH"));
    let (elf_findings, elf_files) = binaries::check(tree, &search, arch);
    findings.extend(elf_findings);
    findings.extend(binaries::check_bundle_leaks(tree, &search));
    findings.extend(runtime::check_entrypoint(tree, config));
    findings.extend(runtime::check_user(tree, config));
    findings.extend(runtime::check_workdir(tree, config));
    findings.extend(playwright::check(tree, config));
    let mut report = Report {
        errors: 0,
        warnings: 0,
        findings,
        elf_files,
        base_layers_read: base.read,
        base_layers_cached: base.cached,
    };
    report.sort();
    report
}

/// Folders a new layer writes where the image so far has a symlink: the folder replaces the
/// link, and everything reached through it (a merged-`/usr` base's `/lib`) is hidden.
fn replaced_symlinks(tree: &tree::Tree, layer: &LayerSummary) -> Vec<Finding> {
    layer
        .changes
        .iter()
        .filter_map(|c| match c {
            summary::Change::Add(path, new) if new.kind == summary::Kind::Dir => {
                match &tree.get(path)?.kind {
                    summary::Kind::Symlink(target) => Some(Finding {
                        severity: Severity::Error,
                        file: format!("/{path}"),
                        check: "symlink",
                        message: format!("a new layer writes this folder over the image's symlink to {target}, hiding everything reached through it"),
                        fix: Some("put the layer under the path the symlink points to (on a local base hoist refuses such a destination)".into()),
                        items: vec![],
                    }),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// The base's folders that new layers write folders over: path, mode, owner.
fn touched_base_dirs(tree: &tree::Tree, layers: &[LayerSummary]) -> Vec<(String, u32, u64, u64)> {
    let mut dirs: Vec<_> = layers
        .iter()
        .flat_map(|l| &l.changes)
        .filter_map(|c| match c {
            summary::Change::Add(path, new) if new.kind == summary::Kind::Dir => {
                let old = tree.get(path)?;
                (old.kind == summary::Kind::Dir).then(|| (path.clone(), old.mode, old.uid, old.gid))
            }
            _ => None,
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Base folders that end up with another mode or owner in the final image (the last layer to
/// write a folder wins: `/tmp` written as 0755 is no longer writable by every user).
fn changed_base_dirs(final_tree: &tree::Tree, base: Vec<(String, u32, u64, u64)>) -> Vec<Finding> {
    base.into_iter()
        .filter_map(|(path, mode, uid, gid)| {
            let now = final_tree.get(&path)?;
            if now.kind != summary::Kind::Dir || (now.mode, now.uid, now.gid) == (mode, uid, gid) {
                return None;
            }
            Some(Finding {
                severity: Severity::Warning,
                file: format!("/{path}"),
                check: "folder",
                message: format!(
                    "the new layers change this folder of the base from {mode:o} {uid}:{gid} to {:o} {}:{}",
                    now.mode, now.uid, now.gid
                ),
                fix: Some("for a parent folder of a layer, build on a local copy of the base (`hoist pull` it to an OCI layout): hoist then copies the base's mode and owner; else give the folder its mode in the source, or use parents=false".into()),
                items: vec![],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use summary::{Change, Kind, Node};

    fn layer(nodes: &[(&str, Kind)]) -> LayerSummary {
        LayerSummary {
            changes: nodes
                .iter()
                .map(|(p, k)| Change::Add((*p).into(), Node::plain(k.clone(), 0o755, 0, 0, 0)))
                .collect(),
        }
    }

    #[test]
    fn only_base_folders_left_changed_are_reported() {
        let dir = |mode, uid| Node::plain(Kind::Dir, mode, uid, uid, 0);
        let mut base = BaseView::default();
        let add = |p: &str, n: Node| Change::Add(p.into(), n);
        base.tree.apply(
            &LayerSummary {
                changes: vec![add("srv", dir(0o755, 1000)), add("tmp", dir(0o1777, 0))],
            },
            false,
        );
        // srv: reset to root by one layer, given back by the next; home: not in the base, its
        // owner set by a later layer (as the --user-add layer does); tmp: left 0755.
        let first = LayerSummary {
            changes: vec![
                add("home", dir(0o755, 0)),
                add("srv", dir(0o755, 0)),
                add("tmp", dir(0o755, 0)),
            ],
        };
        let second = LayerSummary {
            changes: vec![add("home", dir(0o755, 1000)), add("srv", dir(0o755, 1000))],
        };
        let report = check_image(base, &[first, second], &Value::Null, None);
        let folders: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.check == "folder")
            .map(|f| f.file.as_str())
            .collect();
        assert_eq!(folders, ["/tmp"], "{:#?}", report.findings);
    }

    #[test]
    fn a_folder_over_a_base_symlink_is_an_error() {
        let mut base = BaseView::default();
        base.tree.apply(
            &layer(&[
                ("lib", Kind::Symlink("usr/lib".into())),
                ("usr", Kind::Dir),
                ("usr/lib", Kind::Dir),
            ]),
            false,
        );
        let new = layer(&[
            ("lib", Kind::Dir),
            ("lib/app", Kind::Dir),
            ("usr/lib", Kind::Dir),
        ]);
        let report = check_image(base, &[new], &Value::Null, None);
        let symlinks: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.check == "symlink")
            .collect();
        assert_eq!(symlinks.len(), 1, "{:#?}", report.findings);
        assert_eq!(symlinks[0].file, "/lib");
        assert_eq!(symlinks[0].severity, Severity::Error);
    }
}
