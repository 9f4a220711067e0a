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
    for l in new_layers {
        findings.extend(replaced_folders(&base.tree, l));
        base.tree.apply(l, true);
    }
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

/// Folders a new layer writes where the image so far has a symlink (an error: the folder
/// replaces the link, and everything reached through it, such as a merged-`/usr` base's
/// `/lib`, is hidden) or a folder with another mode or owner (a warning: the new entry wins, so
/// `/tmp` written as 0755 stops being writable by every user).
fn replaced_folders(tree: &tree::Tree, layer: &LayerSummary) -> Vec<Finding> {
    let finding = |severity, path: &str, check, message, fix: &str| Finding {
        severity,
        file: format!("/{path}"),
        check,
        message,
        fix: Some(fix.into()),
        items: vec![],
    };
    layer
        .changes
        .iter()
        .filter_map(|c| {
            let summary::Change::Add(path, new) = c else {
                return None;
            };
            let old = tree.get(path)?;
            match (&new.kind, &old.kind) {
                (summary::Kind::Dir, summary::Kind::Symlink(target)) => Some(finding(
                    Severity::Error,
                    path,
                    "symlink",
                    format!("a new layer writes this folder over the image's symlink to {target}, hiding everything reached through it"),
                    "put the layer under the path the symlink points to (on a local base hoist refuses such a destination)",
                )),
                (summary::Kind::Dir, summary::Kind::Dir)
                    if (new.mode, new.uid, new.gid) != (old.mode, old.uid, old.gid) =>
                {
                    Some(finding(
                        Severity::Warning,
                        path,
                        "folder",
                        format!(
                            "a new layer changes this folder from {:o} {}:{} to {:o} {}:{}",
                            old.mode, old.uid, old.gid, new.mode, new.uid, new.gid
                        ),
                        "for a parent folder of a layer, build on a local copy of the base (`hoist pull` it to an OCI layout): hoist then copies the base's mode and owner; else give the folder its mode in the source, or use parents=false",
                    ))
                }
                _ => None,
            }
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
