//! `hoist build`: a base plus layers plus config edits, written to an OCI image layout. All
//! inputs are checked before the output is touched.

pub mod file;

use crate::config::{self, ConfigEdits};
use crate::digest::Digest;
use crate::error::Result;
use crate::image::Image;
use crate::layer::{write::write_layer, Compression, LayerPlan, LayerSpec, TarOptions};
use crate::layout::Layout;
use crate::manifest::{canonical_json, Descriptor, Platform};
use crate::media;
use crate::reference::{ImageRef, LayoutRef};

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
    /// Timestamp for entries, history and `created` (seconds since the epoch).
    pub epoch: u64,
    /// The layout to write.
    pub output: LayoutRef,
}

/// What a build produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest size.
    pub size: u64,
    /// `oci:DIR[:TAG]@sha256:…`.
    pub reference: String,
}

/// Runs a build. `progress` receives one line per step (the library never prints).
pub fn build(spec: &BuildSpec, progress: &mut dyn FnMut(&str)) -> Result<Built> {
    // Everything that can be checked without writing is checked first.
    let plans = spec
        .layers
        .iter()
        .map(LayerPlan::new)
        .collect::<Result<Vec<_>>>()?;
    let mut image = match &spec.base {
        ImageRef::Scratch => Image::scratch(spec.platform.as_ref().unwrap_or(&Platform::host())),
        ImageRef::Layout(r) => Image::from_layout(
            &Layout::open(&r.dir)?,
            r.tag.as_deref(),
            spec.platform.as_ref(),
        )?,
    };
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
    })
}
