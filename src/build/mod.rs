//! `hoist build`: a base plus layers plus config edits, written to an OCI image layout. All
//! inputs are checked before the output is touched: sources are listed, and unless checks are
//! off the new layers are checked against the base ([`crate::check`]).

pub mod accounts;
pub mod file;
pub mod inputs;

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
    /// Tag the output with a hash of the base and every input (`--tag-from-inputs`).
    pub tag_from_inputs: bool,
    /// Build nothing when the output already has the tag (`--skip-existing`).
    pub skip_existing: bool,
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
    /// True when the tag already existed and nothing was built (`--skip-existing`).
    pub skipped: bool,
}

/// Everything read and decided before the output is touched.
struct Prepared {
    image: Image,
    plans: Vec<LayerPlan>,
    base: Option<check::BaseView>,
}

fn prepare(spec: &BuildSpec, mode: CheckMode) -> Result<Prepared> {
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
    Ok(Prepared { image, plans, base })
}

/// Runs the checks on a prepared build (none when checks are off).
fn run_checks(
    spec: &BuildSpec,
    mode: CheckMode,
    p: &mut Prepared,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<Report>> {
    let (image, plans) = (&p.image, &p.plans);
    let report = match (mode, p.base.take()) {
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
    Ok(report)
}

/// Runs the compatibility checks of a build without writing anything.
pub fn check(spec: &BuildSpec, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    let mut p = prepare(spec, CheckMode::Error)?;
    Ok(run_checks(spec, CheckMode::Error, &mut p, progress)?.unwrap_or_default())
}

/// The result of a build skipped because its tag exists.
fn skipped(spec: &BuildSpec, tag: &str, desc: Descriptor, progress: &mut dyn FnMut(&str)) -> Built {
    let out = LayoutRef {
        dir: spec.output.dir.clone(),
        tag: Some(tag.to_string()),
    };
    progress(&format!("{out} exists: nothing to build (--skip-existing)"));
    Built {
        digest: desc.digest,
        size: desc.size,
        reference: format!("{out}@{}", desc.digest),
        report: None,
        skipped: true,
    }
}

/// Runs a build. `progress` receives one line per step (the library never prints).
pub fn build(spec: &BuildSpec, progress: &mut dyn FnMut(&str)) -> Result<Built> {
    if let (true, false, Some(tag)) = (spec.skip_existing, spec.tag_from_inputs, &spec.output.tag) {
        // A named tag: nothing at all is read when it exists.
        if let Some(desc) = inputs::existing(&spec.output.dir, tag)? {
            return Ok(skipped(spec, tag, desc, progress));
        }
    }
    let mut prepared = prepare(spec, spec.check)?;
    let tag = if spec.tag_from_inputs {
        let t = inputs::inputs_tag(
            &prepared.image,
            &prepared.plans,
            &spec.edits,
            spec.compression,
            spec.epoch,
        )?;
        progress(&format!("tag from inputs: {t}"));
        if spec.skip_existing {
            if let Some(desc) = inputs::existing(&spec.output.dir, &t)? {
                return Ok(skipped(spec, &t, desc, progress));
            }
        }
        Some(t)
    } else {
        spec.output.tag.clone()
    };
    let report = run_checks(spec, spec.check, &mut prepared, progress)?;
    let Prepared {
        mut image, plans, ..
    } = prepared;
    let output = LayoutRef {
        dir: spec.output.dir.clone(),
        tag,
    };
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
        let what = match &plan.generated {
            Some(g) => g.clone(),
            None => format!("{} -> {}", plan.spec.src.display(), plan.spec.dest),
        };
        progress(&format!(
            "layer {what} ({} entries, {} bytes)",
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
    out.set_tag(desc.clone(), output.tag.as_deref())?;
    Ok(Built {
        digest: desc.digest,
        size: desc.size,
        reference: format!("{output}@{}", desc.digest),
        report,
        skipped: false,
    })
}
