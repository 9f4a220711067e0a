//! `hoist build`: a base plus layers plus config edits, written to an OCI image layout. All
//! inputs are checked before the output is touched: sources are listed, and unless checks are
//! off the new layers are checked against the base ([`crate::check`]).

pub mod accounts;
pub mod file;

use crate::check::{self, CheckMode, Report, Severity};
use crate::config::{self, ConfigEdits};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::layer::{write::write_layer, Compression, LayerPlan, LayerSpec, TarOptions};
use crate::layout::Layout;
use crate::manifest::{canonical_json, Descriptor, Platform};
use crate::media;
use crate::reference::{ImageRef, LayoutRef};
use accounts::{MkDir, UserAdd};

/// A fully resolved build.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildSpec {
    /// Where the base comes from.
    pub base: ImageRef,
    /// The platform to select from a multi-platform base (and for scratch).
    pub platform: Option<Platform>,
    /// Layers to add, in order.
    pub layers: Vec<LayerSpec>,
    /// Accounts to add (`--user-add`).
    pub users: Vec<UserAdd>,
    /// Empty folders to create (`--mkdir`).
    pub mkdirs: Vec<MkDir>,
    /// Config edits.
    pub edits: ConfigEdits,
    /// Layer compression.
    pub compression: Compression,
    /// Timestamp for entries, history and `created` (seconds since the epoch).
    pub epoch: u64,
    /// What the compatibility checks do.
    pub check: CheckMode,
    /// The layout to write (unused by [`check`]).
    pub output: LayoutRef,
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct Built {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest size.
    pub size: u64,
    /// `oci:DIR[:TAG]@sha256:…`.
    pub reference: String,
    /// The check report, unless checks were off.
    pub report: Option<Report>,
}

/// Everything read and decided before the output is touched.
struct Prepared {
    image: Image,
    plans: Vec<LayerPlan>,
    report: Option<Report>,
}

fn prepare(spec: &BuildSpec, mode: CheckMode, progress: &mut dyn FnMut(&str)) -> Result<Prepared> {
    let mut plans = spec
        .layers
        .iter()
        .map(LayerPlan::new)
        .collect::<Result<Vec<_>>>()?;
    let image = match &spec.base {
        ImageRef::Scratch => Image::scratch(spec.platform.as_ref().unwrap_or(&Platform::host())),
        ImageRef::Layout(r) => Image::from_layout(
            &Layout::open(&r.dir)?,
            r.tag.as_deref(),
            spec.platform.as_ref(),
        )?,
    };
    let generated = !spec.users.is_empty() || !spec.mkdirs.is_empty();
    // Base layers are read only when something needs them: `--no-check` alone reads none.
    let base = if mode != CheckMode::Off || generated {
        let cache = check::cache_dir();
        let view = check::read_base(&image.layers, cache.as_deref())?;
        Some(view)
    } else {
        None
    };
    if let (true, Some(view)) = (generated, &base) {
        if let Some(plan) =
            accounts::accounts_layer(&spec.users, &spec.mkdirs, &view.tree, spec.epoch)?
        {
            plans.push(plan);
        }
    }
    let report = match (mode, base) {
        (CheckMode::Off, _) | (_, None) => None,
        (_, Some(view)) => {
            let summaries = plans
                .iter()
                .map(check::plans::summarize_plan)
                .collect::<Result<Vec<_>>>()?;
            let mut config = image.config.clone();
            spec.edits.apply(&mut config);
            let arch = image.platform().map(|p| p.architecture);
            let report = check::check_image(view, &summaries, &config, arch.as_deref());
            progress(&format!(
                "checks: {} ELF file(s), {} error(s), {} warning(s); base layers {} read, {} from cache",
                report.elf_files,
                report.count(Severity::Error),
                report.count(Severity::Warning),
                report.base_layers_read,
                report.base_layers_cached
            ));
            Some(report)
        }
    };
    Ok(Prepared {
        image,
        plans,
        report,
    })
}

/// Runs the compatibility checks of a build without writing anything.
pub fn check(spec: &BuildSpec, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    let p = prepare(spec, CheckMode::Error, progress)?;
    Ok(p.report.unwrap_or_default())
}

/// Runs a build. `progress` receives one line per step (the library never prints).
pub fn build(spec: &BuildSpec, progress: &mut dyn FnMut(&str)) -> Result<Built> {
    let Prepared {
        mut image,
        plans,
        report,
    } = prepare(spec, spec.check, progress)?;
    if let (CheckMode::Error, Some(r)) = (spec.check, &report) {
        let errors = r.count(Severity::Error);
        if errors > 0 {
            return Err(Error::CheckFailed {
                errors,
                report: Box::new(r.clone()),
            });
        }
    }
    let out = Layout::create(&spec.output.dir)?;
    let _lock = out.lock()?;
    for layer in &image.layers {
        out.copy_blob_from(
            &layer.source,
            &layer.descriptor.digest,
            layer.descriptor.size,
        )?;
    }
    let created = config::rfc3339(spec.epoch);
    let tar_opts = TarOptions { mtime: spec.epoch };
    for plan in &plans {
        progress(&format!(
            "layer {} -> {} ({} entries, {} bytes)",
            plan.spec.src.display(),
            plan.spec.dest,
            plan.entries.len(),
            plan.content_size()
        ));
        let blob = write_layer(plan, tar_opts, spec.compression, &out.blob_dir())?;
        progress(&format!(
            "  {} ({} bytes compressed)",
            blob.digest, blob.size
        ));
        image.push_layer(&blob, &created, &plan.created_by());
    }
    image.edit(&spec.edits);
    image.stamp(&created);
    let config_desc = out.write_document(media::OCI_CONFIG, &canonical_json(&image.config))?;
    let manifest = image.manifest(config_desc)?;
    let raw = canonical_json(&manifest);
    let mut desc: Descriptor = out.write_document(media::OCI_MANIFEST, &raw)?;
    desc.platform = image.platform();
    out.set_tag(desc.clone(), spec.output.tag.as_deref())?;
    Ok(Built {
        digest: desc.digest,
        size: desc.size,
        reference: format!("{}@{}", spec.output, desc.digest),
        report,
    })
}
