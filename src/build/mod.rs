//! `hoist build`: a base plus layers plus config edits, written to an OCI image layout and/or
//! pushed to registries. All inputs are checked before the output is touched.

pub mod file;

use std::sync::Arc;

use crate::cache::{layer_key, CachedLayer, LayerCache};
use crate::config::{self, ConfigEdits};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Image, LayerSource};
use crate::layer::plan::created_by;
use crate::layer::{
    write::write_layer, Compression, LayerBlob, LayerPlan, LayerSpec, WriteOptions,
};
use crate::layout::Layout;
use crate::manifest::{canonical_json, Descriptor, Platform};
use crate::media;
use crate::reference::{ImageRef, LayoutRef};
use crate::registry::pull::fetch_blob;
use crate::registry::push::{write_manifest, ManifestUpload};
use crate::registry::source::image_from_registry;
use crate::registry::write::BlobSource;
use crate::registry::{for_each_parallel, Client, RegistryRef};

/// A fully resolved build.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildSpec {
    /// Where the base comes from.
    pub base: ImageRef,
    /// The platform to select from a multi-platform base (and for scratch).
    pub platform: Option<Platform>,
    /// Layers to add, in order.
    pub layers: Vec<LayerSpec>,
    /// Config edits.
    pub edits: ConfigEdits,
    /// Layer compression.
    pub compression: Compression,
    /// Compression threads.
    pub threads: usize,
    /// Timestamp for entries, history and `created` (seconds since the epoch).
    pub epoch: u64,
    /// The layout to write, if any.
    pub output: Option<LayoutRef>,
    /// Registries to push to (`--push`, repeatable).
    pub push: Vec<RegistryRef>,
    /// The layer cache, unless disabled.
    pub cache: Option<CacheSettings>,
}

/// What a build produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest size.
    pub size: u64,
    /// `oci:DIR[:TAG]@sha256:…` and `REF@sha256:…`, one per destination.
    pub references: Vec<String>,
}

/// Where the layer cache lives and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// The cache directory.
    pub dir: std::path::PathBuf,
    /// Bound on its blob bytes.
    pub max_bytes: u64,
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
    },
}

/// Runs a build. `client` reaches registries (a registry base, `--push`); `progress` receives
/// one line per step (the library never prints).
pub fn build(spec: &BuildSpec, client: &Client, progress: &mut dyn FnMut(&str)) -> Result<Built> {
    let opts = WriteOptions {
        mtime: spec.epoch,
        compression: spec.compression,
        threads: spec.threads,
    };
    let cache = spec
        .cache
        .as_ref()
        .and_then(|c| match LayerCache::open(&c.dir, c.max_bytes) {
            Ok(cache) => Some(cache),
            Err(e) => {
                progress(&format!("warning: layer cache disabled: {e}"));
                None
            }
        });
    // Everything that can be checked without writing is checked first.
    let mut pending = Vec::with_capacity(spec.layers.len());
    for layer in &spec.layers {
        let key = match &cache {
            Some(_) => layer_key(layer, &opts)?,
            None => None,
        };
        let hit = key
            .as_ref()
            .and_then(|k| cache.as_ref().and_then(|c| c.lookup(k)));
        pending.push(match hit {
            Some(cached) => Pending::Cached {
                spec: layer.clone(),
                layer: cached,
            },
            None => Pending::Build {
                plan: Box::new(LayerPlan::new(layer)?),
                key,
            },
        });
    }
    let mut image = match &spec.base {
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
    for p in pending {
        let (blob, created_by) = match p {
            Pending::Cached {
                spec: layer,
                layer: cached,
            } => {
                let cache = cache.as_ref().ok_or_else(|| {
                    Error::io(
                        "reading",
                        &layer.src,
                        std::io::Error::other("cache vanished"),
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
                let blob = LayerBlob {
                    digest: cached.digest,
                    diff_id: cached.diff_id,
                    size: cached.size,
                    media_type,
                    path,
                };
                (blob, created_by(&layer))
            }
            Pending::Build { plan, key } => {
                progress(&format!(
                    "layer {} -> {} ({} entries, {} bytes)",
                    plan.spec.src.display(),
                    plan.spec.dest,
                    plan.entries.len(),
                    plan.content_size()
                ));
                let blob = write_layer(&plan, opts, &out.blob_dir())?;
                progress(&format!(
                    "  {} ({} bytes compressed)",
                    blob.digest, blob.size
                ));
                if let (Some(cache), Some(key)) = (&cache, key) {
                    if let Err(e) = cache.store(&key, &blob) {
                        progress(&format!(
                            "warning: cannot store the layer in the cache: {e}"
                        ));
                    }
                }
                (blob, created_by(&plan.spec))
            }
        };
        image.push_layer(&blob, &created, &created_by);
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
        out.set_tag(desc.clone(), o.tag.as_deref())?;
        references.push(format!("{o}@{}", desc.digest));
    }
    let mut pushed: Vec<&RegistryRef> = Vec::new();
    for dest in &spec.push {
        progress(&format!("pushing {dest}"));
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
        let digest = write_manifest(client, &dest.repository, &upload, &dest.reference())?;
        pushed.push(dest);
        references.push(dest.with_digest(digest));
    }
    Ok(Built {
        digest: desc.digest,
        size: desc.size,
        references,
    })
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
