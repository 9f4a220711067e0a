//! `hoist build`: a base plus layers plus config edits, written to an OCI image layout and/or
//! pushed to registries. All inputs are checked before the output is touched: sources are
//! listed, layers already built are found in the cache, and unless checks are off the new layers
//! are checked against the base ([`crate::check`]).

pub mod accounts;
pub mod file;
pub mod inputs;
pub mod parents;
mod upload;

use std::sync::Arc;

use crate::cache::{layer_key, source_identity, CachedLayer, LayerCache};
use crate::check::{self, CheckMode, LayerSummary, Report, Severity};
use crate::config::{self, ConfigEdits};
use crate::digest::Digest;
use crate::error::{describe, Error, Result};
use crate::image::{Image, Layer, LayerSource};
use crate::layer::plan::created_by;
use crate::layer::write::diff_id;
use crate::layer::{Compression, LayerBlob, LayerPlan, LayerSpec, WriteOptions};
use crate::layout::Layout;
use crate::manifest::{canonical_json, Descriptor, Platform};
use crate::media;
use crate::reference::{ImageRef, LayoutRef};
use crate::registry::pull::{fetch_blob, get_manifest};
use crate::registry::push::{write_manifest, ManifestUpload};
use crate::registry::source::image_from_registry;
use crate::registry::write::BlobSource;
use crate::registry::{for_each_parallel, Client, RegistryRef};
use accounts::{MkDir, UserAdd};
use upload::{finish_piped, finish_streams, stream_only, write_and_stream, PipedUpload};

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
    /// Compression threads.
    pub threads: usize,
    /// Timestamp for entries, history and `created` (seconds since the epoch).
    pub epoch: u64,
    /// What the compatibility checks do.
    pub check: CheckMode,
    /// Tag every destination with a hash of the base and every input (`--tag-from-inputs`).
    pub tag_from_inputs: bool,
    /// Build nothing when the first destination already has the tag (`--skip-existing`).
    pub skip_existing: bool,
    /// The layout to write, if any.
    pub output: Option<LayoutRef>,
    /// Registries to push to (`--push`, repeatable).
    pub push: Vec<RegistryRef>,
    /// The layer cache, unless disabled.
    pub cache: Option<CacheSettings>,
}

/// Where the layer cache lives and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// The cache directory.
    pub dir: std::path::PathBuf,
    /// Bound on its blob bytes.
    pub max_bytes: u64,
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct Built {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest size.
    pub size: u64,
    /// `oci:DIR[:TAG]@sha256:…` and `REF@sha256:…`, one per destination.
    pub references: Vec<String>,
    /// The check report, unless checks were off.
    pub report: Option<Report>,
    /// True when the tag already existed and nothing was built (`--skip-existing`).
    pub skipped: bool,
}

/// A layer to add: found in the cache, or to be built from its plan.
enum Pending {
    Cached {
        spec: LayerSpec,
        layer: CachedLayer,
    },
    Build {
        plan: Box<LayerPlan>,
        key: Option<Digest>,
        identity: Digest,
    },
}

/// Finds `layer` in the cache — by the stat data of its sources, else (for a layer built before
/// whose sources were copied or touched, not just now) by the hash of its tar stream — or plans
/// it.
fn plan_or_reuse(
    layer: &LayerSpec,
    opts: &WriteOptions,
    cache: Option<&LayerCache>,
    progress: &mut dyn FnMut(&str),
) -> Result<Pending> {
    let key = match cache {
        Some(_) => layer_key(layer, opts)?,
        None => None,
    };
    if let Some(hit) = key.as_ref().and_then(|k| cache.and_then(|c| c.lookup(k))) {
        return Ok(Pending::Cached {
            spec: layer.clone(),
            layer: hit,
        });
    }
    let plan = LayerPlan::new(layer)?;
    let identity = source_identity(layer, opts);
    // Sources touched in the last seconds (no stat key) were most likely just edited: hashing
    // them to look for an unchanged layer would only add a pass.
    if let (Some(c), Some(_)) = (cache.filter(|c| c.has_built(&identity)), &key) {
        let d = diff_id(&plan, opts.mtime)?;
        if let Some(hit) = c.lookup_content(&d, opts) {
            progress(&format!(
                "layer {} -> {}: same content as a cached layer",
                layer.src.display(),
                layer.dest
            ));
            if let Some(k) = &key {
                if let Err(e) = c.remember(k, &hit) {
                    progress(&format!(
                        "warning: cannot update the layer cache: {}",
                        describe(&e)
                    ));
                }
            }
            return Ok(Pending::Cached {
                spec: layer.clone(),
                layer: hit,
            });
        }
    }
    Ok(Pending::Build {
        plan: Box::new(plan),
        key,
        identity,
    })
}

impl Pending {
    fn created_by(&self) -> String {
        match self {
            Pending::Cached { spec, .. } => created_by(spec),
            Pending::Build { plan, .. } => plan.created_by(),
        }
    }
}

/// Everything read and decided before the output is touched.
struct Prepared {
    image: Image,
    pending: Vec<Pending>,
    base: Option<check::BaseView>,
    cache: Option<LayerCache>,
    /// Check summaries of the layers to build, kept for the cache once their digest is known.
    summaries: Vec<Option<LayerSummary>>,
}

fn write_options(spec: &BuildSpec) -> WriteOptions {
    WriteOptions {
        mtime: spec.epoch,
        compression: spec.compression,
        threads: spec.threads,
    }
}

fn prepare(
    spec: &BuildSpec,
    mode: CheckMode,
    use_cache: bool,
    client: &Client,
    progress: &mut dyn FnMut(&str),
) -> Result<Prepared> {
    let opts = write_options(spec);
    let cache = match (&spec.cache, use_cache) {
        (Some(c), true) => match LayerCache::open(&c.dir, c.max_bytes) {
            Ok(cache) => Some(cache),
            Err(e) => {
                progress(&format!("warning: layer cache disabled: {}", describe(&e)));
                None
            }
        },
        _ => None,
    };
    let image = match &spec.base {
        ImageRef::Scratch => Image::scratch(spec.platform.as_ref().unwrap_or(&Platform::host())),
        ImageRef::Layout(r) => Image::from_layout(
            &Layout::open(&r.dir)?,
            r.tag.as_deref(),
            spec.platform.as_ref(),
        )?,
        ImageRef::Registry(r) => {
            progress(&format!("base {r}: reading manifest and config"));
            image_from_registry(client, r, spec.platform.as_ref())?
        }
    };
    let generated = !spec.users.is_empty() || !spec.mkdirs.is_empty();
    // Parent folders of destinations copy a local base's own (a registry base is not read
    // for that: its layers are not fetched when the checks are off, and the layer must not
    // depend on whether they are on).
    let local_parents =
        matches!(spec.base, ImageRef::Layout(_)) && spec.layers.iter().any(|l| l.parents);
    // Base layers are read only when something needs them: `--no-check` alone reads none.
    let base = if mode != CheckMode::Off || generated || local_parents {
        Some(check::read_base(
            &image.layers,
            check::cache_dir().as_deref(),
        )?)
    } else {
        None
    };
    let mut pending = Vec::with_capacity(spec.layers.len() + 1);
    for (i, layer) in spec.layers.iter().enumerate() {
        let mut layer = layer.clone();
        if layer.parents {
            let tree = base.as_ref().filter(|_| local_parents).map(|v| &v.tree);
            layer.parent_dirs = parents::parent_dirs(tree, &spec.layers[..i], &layer)?;
        }
        pending.push(plan_or_reuse(&layer, &opts, cache.as_ref(), progress)?);
    }
    if let (true, Some(view)) = (generated, &base) {
        if let Some(plan) =
            accounts::accounts_layer(&spec.users, &spec.mkdirs, &view.tree, spec.epoch)?
        {
            let identity = source_identity(&plan.spec, &write_options(spec));
            pending.push(Pending::Build {
                plan: Box::new(plan),
                key: None,
                identity,
            });
        }
    }
    let summaries = pending.iter().map(|_| None).collect();
    Ok(Prepared {
        image,
        pending,
        base,
        cache,
        summaries,
    })
}

/// Runs the checks on a prepared build (none when checks are off).
fn run_checks(
    spec: &BuildSpec,
    mode: CheckMode,
    p: &mut Prepared,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<Report>> {
    let view = match (mode, p.base.take()) {
        (CheckMode::Off, _) | (_, None) => return Ok(None),
        (_, Some(view)) => view,
    };
    let check_cache = check::cache_dir();
    let mut summaries = Vec::with_capacity(p.pending.len());
    for (i, pending) in p.pending.iter().enumerate() {
        let summary = match pending {
            Pending::Cached { layer, .. } => {
                let blob = Layer {
                    descriptor: Descriptor::new(layer.media_type.clone(), layer.digest, layer.size),
                    source: LayerSource::File(
                        p.cache
                            .as_ref()
                            .map(|c| c.blob_path(&layer.digest))
                            .unwrap_or_default(),
                    ),
                };
                check::tree::layer_summary(&blob, true, check_cache.as_deref())?.0
            }
            Pending::Build { plan, .. } => {
                let s = check::plans::summarize_plan(plan)?;
                p.summaries[i] = Some(s.clone());
                s
            }
        };
        summaries.push(summary);
    }
    let mut config = p.image.config.clone();
    spec.edits.apply(&mut config);
    let arch = p.image.platform().map(|p| p.architecture);
    let report = check::check_image(view, &summaries, &config, arch.as_deref());
    progress(&format!(
        "checks: {} ELF file(s), {} error(s), {} warning(s); base layers {} read, {} from cache",
        report.elf_files,
        report.count(Severity::Error),
        report.count(Severity::Warning),
        report.base_layers_read,
        report.base_layers_cached
    ));
    Ok(Some(report))
}

/// Runs the compatibility checks of a build without writing anything.
pub fn check(spec: &BuildSpec, client: &Client, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    let mut p = prepare(spec, CheckMode::Error, false, client, progress)?;
    Ok(run_checks(spec, CheckMode::Error, &mut p, progress)?.unwrap_or_default())
}

/// The manifest a destination already holds under `tag`, if any.
fn existing(spec: &BuildSpec, tag: &str, client: &Client) -> Result<Option<(Descriptor, String)>> {
    if let Some(o) = &spec.output {
        let out = LayoutRef {
            dir: o.dir.clone(),
            tag: Some(tag.to_string()),
        };
        return Ok(inputs::existing(&o.dir, tag)?.map(|d| (d, out.to_string())));
    }
    let Some(dest) = spec.push.first() else {
        return Ok(None);
    };
    match get_manifest(client, &dest.repository, tag) {
        Ok(m) => Ok(Some((m.descriptor(), format!("{}:{tag}", dest.repository)))),
        Err(Error::RegistryStatus { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The result of a build skipped because its tag exists.
fn skipped(desc: Descriptor, reference: String, progress: &mut dyn FnMut(&str)) -> Built {
    progress(&format!(
        "{reference} exists: nothing to build (--skip-existing)"
    ));
    Built {
        digest: desc.digest,
        size: desc.size,
        references: vec![format!("{reference}@{}", desc.digest)],
        report: None,
        skipped: true,
    }
}

/// The `--tag-from-inputs` tag of a prepared build, and the diff_id of each of its layers (new
/// layers' tar streams are hashed for it).
fn tag_from_inputs(spec: &BuildSpec, prepared: &Prepared) -> Result<(String, Vec<Digest>)> {
    let mut layers = Vec::with_capacity(prepared.pending.len());
    for p in &prepared.pending {
        let id = match p {
            Pending::Cached { layer, .. } => layer.diff_id,
            Pending::Build { plan, .. } => diff_id(plan, spec.epoch)?,
        };
        layers.push((id, p.created_by()));
    }
    let tag = inputs::inputs_tag(
        &prepared.image,
        &layers,
        &spec.edits,
        spec.compression,
        spec.epoch,
    )?;
    Ok((tag, layers.into_iter().map(|(id, _)| id).collect()))
}

/// Runs a build. `client` reaches registries (a registry base, `--push`); `progress` receives
/// one line per step (the library never prints).
pub fn build(spec: &BuildSpec, client: &Client, progress: &mut dyn FnMut(&str)) -> Result<Built> {
    let named_tag = spec
        .output
        .as_ref()
        .and_then(|o| o.tag.clone())
        .or_else(|| spec.push.first().and_then(|p| p.tag.clone()));
    if let (true, false, Some(tag)) = (spec.skip_existing, spec.tag_from_inputs, &named_tag) {
        // A named tag: nothing at all is read when it exists.
        if let Some((desc, reference)) = existing(spec, tag, client)? {
            return Ok(skipped(desc, reference, progress));
        }
    }
    let mut prepared = prepare(spec, spec.check, true, client, progress)?;
    // The diff_ids the inputs tag was computed from: each new layer must come out with its own.
    let (inputs_tag, tagged_ids) = match spec.tag_from_inputs {
        true => {
            let (tag, ids) = tag_from_inputs(spec, &prepared)?;
            progress(&format!("tag from inputs: {tag}"));
            if spec.skip_existing {
                if let Some((desc, reference)) = existing(spec, &tag, client)? {
                    return Ok(skipped(desc, reference, progress));
                }
            }
            (Some(tag), ids)
        }
        false => (None, Vec::new()),
    };
    let report = run_checks(spec, spec.check, &mut prepared, progress)?;
    if let (CheckMode::Error, Some(r)) = (spec.check, &report) {
        let errors = r.count(Severity::Error);
        if errors > 0 {
            return Err(Error::CheckFailed {
                errors,
                report: Box::new(r.clone()),
            });
        }
    }
    let Prepared {
        mut image,
        pending,
        cache,
        summaries,
        ..
    } = prepared;
    // New layers go into the output layout, or a staging layout when only pushing.
    let staging;
    let out = match &spec.output {
        Some(o) => Layout::create(&o.dir)?,
        None => {
            staging = tempfile::Builder::new()
                .prefix("hoist-build-")
                .tempdir()
                .map_err(|e| Error::io("creating a temp dir in", std::env::temp_dir(), e))?;
            Layout::create(staging.path().join("layout"))?
        }
    };
    let _lock = out.lock()?;
    if spec.output.is_some() {
        copy_base_blobs(&image, &out, client, progress)?;
    }
    let created = config::rfc3339(spec.epoch);
    let opts = write_options(spec);
    // Uploads streamed while their layers were written; they finish after the last layer.
    let mut streams = Vec::new();
    let mut piped = Vec::new();
    for (i, (p, summary)) in pending.into_iter().zip(summaries).enumerate() {
        let history = p.created_by();
        let (blob, source) = match p {
            Pending::Cached {
                spec: layer,
                layer: cached,
            } => {
                let cache = cache.as_ref().ok_or_else(|| {
                    Error::io(
                        "reading",
                        &layer.src,
                        std::io::Error::other("the layer cache is gone"),
                    )
                })?;
                let path = cache.materialize(&cached, &out)?;
                progress(&format!(
                    "layer {} -> {}: cached {}",
                    layer.src.display(),
                    layer.dest,
                    cached.digest
                ));
                let media_type =
                    media::oci_layer(&cached.media_type).unwrap_or(media::OCI_LAYER_GZIP);
                let source = LayerSource::File(path.clone());
                let blob = LayerBlob {
                    digest: cached.digest,
                    diff_id: cached.diff_id,
                    size: cached.size,
                    media_type,
                    path,
                };
                (blob, source)
            }
            Pending::Build {
                plan,
                key,
                identity,
            } => {
                let what = match &plan.generated {
                    Some(g) => g.clone(),
                    None => format!("{} -> {}", plan.spec.src.display(), plan.spec.dest),
                };
                progress(&format!(
                    "layer {what} ({} entries, {} bytes)",
                    plan.entries.len(),
                    plan.content_size()
                ));
                let dest = spec.push.first();
                let src = plan.spec.src.clone();
                // With nothing local to fill (no --output, no cache), a pushed layer is kept
                // nowhere but in the registry.
                let (blob, source) = match (dest, &spec.output, &cache) {
                    (Some(dest), None, None) => {
                        let (blob, source, upload) =
                            stream_only(&plan, opts, &out, dest, client, progress)?;
                        if let Some(upload) = upload {
                            piped.push(PipedUpload {
                                upload,
                                plan,
                                index: image.layers.len(),
                                digest: blob.digest,
                            });
                        }
                        (blob, source)
                    }
                    _ => {
                        let (blob, stream) =
                            write_and_stream(&plan, opts, &out, dest, client, progress)?;
                        streams.extend(stream.map(|s| (s, blob.digest)));
                        let source = LayerSource::File(blob.path.clone());
                        (blob, source)
                    }
                };
                progress(&format!(
                    "  {} ({} bytes compressed)",
                    blob.digest, blob.size
                ));
                same_as_tagged(&src, tagged_ids.get(i), &blob.diff_id)?;
                if let Some(cache) = &cache {
                    if let Err(e) = cache.store(key.as_ref(), &identity, &opts, &blob) {
                        progress(&format!(
                            "warning: cannot store the layer in the cache: {}",
                            describe(&e)
                        ));
                    }
                }
                if let Some(s) = summary {
                    check::tree::remember_new_layer(
                        &blob.digest,
                        &s,
                        check::cache_dir().as_deref(),
                    );
                }
                (blob, source)
            }
        };
        image.push_layer(&blob, source, &created, &history);
    }
    if let Some(dest) = spec.push.first() {
        finish_streams(streams, dest, progress);
        finish_piped(piped, &mut image, &out, opts, dest, progress)?;
    }
    image.edit(&spec.edits);
    image.stamp(&created);
    let raw_config = canonical_json(&image.config);
    let config_desc = out.write_document(media::OCI_CONFIG, &raw_config)?;
    let manifest = image.manifest(config_desc.clone())?;
    let raw = canonical_json(&manifest);
    let mut desc: Descriptor = out.write_document(media::OCI_MANIFEST, &raw)?;
    desc.platform = image.platform();
    let mut references = Vec::new();
    if let Some(o) = &spec.output {
        let o = LayoutRef {
            dir: o.dir.clone(),
            tag: inputs_tag.clone().or_else(|| o.tag.clone()),
        };
        out.set_tag(desc.clone(), o.tag.as_deref())?;
        references.push(format!("{o}@{}", desc.digest));
    }
    let mut pushed: Vec<&RegistryRef> = Vec::new();
    for dest in &spec.push {
        let reference = inputs_tag.clone().unwrap_or_else(|| dest.reference());
        progress(&format!("pushing {}:{reference}", dest.repository));
        let upload = ManifestUpload {
            layers: image
                .layers
                .iter()
                .map(|l| (l.descriptor.clone(), blob_source(&l.source)))
                .collect(),
            config: (
                config_desc.clone(),
                BlobSource::Bytes(Arc::new(raw_config.clone())),
            ),
            raw_manifest: raw.clone(),
            media_type: media::OCI_MANIFEST.into(),
            mount_hint: pushed
                .iter()
                .map(|p| p.repository.clone())
                .find(|r| r.api_host() == dest.repository.api_host()),
        };
        let digest = write_manifest(client, &dest.repository, &upload, &reference)?;
        pushed.push(dest);
        references.push(match &inputs_tag {
            Some(t) => format!("{}:{t}@{digest}", dest.repository),
            None => dest.with_digest(digest),
        });
    }
    Ok(Built {
        digest: desc.digest,
        size: desc.size,
        references,
        report,
        skipped: false,
    })
}

/// Fails when a layer's tar stream, hashed again as the layer was built, is not the one
/// (`tagged`) its inputs tag was computed from: the tag would name other content.
fn same_as_tagged(src: &std::path::Path, tagged: Option<&Digest>, built: &Digest) -> Result<()> {
    match tagged {
        Some(t) if t != built => Err(Error::SourceChanged {
            src: src.to_path_buf(),
            detail: format!(
                "the inputs tag was computed from diff_id {t}, the layer built has {built}"
            ),
        }),
        _ => Ok(()),
    }
}

/// A layer's bytes as a push source (a remote base layer stays remote).
fn blob_source(source: &LayerSource) -> BlobSource {
    match source {
        LayerSource::File(p) => BlobSource::File(p.clone()),
        LayerSource::Remote(r) => r.source(),
    }
}

/// Makes the output layout complete: base layers are copied from a layout or downloaded.
fn copy_base_blobs(
    image: &Image,
    out: &Layout,
    client: &Client,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut remote = Vec::new();
    for layer in &image.layers {
        match &layer.source {
            LayerSource::File(p) => {
                out.copy_blob_from(p, &layer.descriptor.digest, layer.descriptor.size)?
            }
            LayerSource::Remote(r) => remote.push((layer.descriptor.clone(), r.clone())),
        }
    }
    if !remote.is_empty() {
        progress(&format!(
            "downloading {} base layers into {}",
            remote.len(),
            out.root().display()
        ));
    }
    for_each_parallel(client.options().jobs, &remote, |(d, r)| {
        fetch_blob(&r.client, &r.repository, d, out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_must_match_the_diff_id_its_inputs_tag_used() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let src = std::path::Path::new("/src/app");
        assert!(same_as_tagged(src, None, &a).is_ok());
        assert!(same_as_tagged(src, Some(&a), &a).is_ok());
        let e = same_as_tagged(src, Some(&a), &b).unwrap_err();
        assert!(matches!(e, Error::SourceChanged { .. }));
        assert!(
            e.to_string().contains("/src/app changed during the build"),
            "{e}"
        );
    }
}
