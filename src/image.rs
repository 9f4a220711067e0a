//! The value every source, edit and sink meets at: a manifest, its config document, and for
//! each layer where its bytes live.

use std::path::PathBuf;

use serde_json::Value;

use crate::config::{self, ConfigEdits};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::LayerBlob;
use crate::layout::Layout;
use crate::manifest::{
    parse_json, Descriptor, Manifest, Platform, ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_NAME,
    ANNOTATION_CREATED, ANNOTATION_REF_NAME,
};
use crate::media;
use crate::registry::RemoteBlob;

/// A layer of an image: its descriptor and where its bytes live.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Media type, digest and size.
    pub descriptor: Descriptor,
    /// Where the blob's bytes are.
    pub source: LayerSource,
}

/// Where a layer's bytes live.
#[derive(Clone, Debug)]
pub enum LayerSource {
    /// A local file (a layout blob or a freshly written layer).
    File(PathBuf),
    /// A blob in a registry repository, fetched only when a sink needs it.
    Remote(RemoteBlob),
}

impl std::fmt::Display for LayerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerSource::File(p) => write!(f, "{}", p.display()),
            LayerSource::Remote(r) => write!(f, "{r}"),
        }
    }
}

/// What an image was built on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// A reference naming the base, when one is known.
    pub name: Option<String>,
    /// The base manifest's digest.
    pub digest: Digest,
}

/// An image being assembled: manifest annotations, config document and layers.
#[derive(Clone, Debug)]
pub struct Image {
    /// The config document (unknown fields kept).
    pub config: Value,
    /// Layers, base first.
    pub layers: Vec<Layer>,
    /// Manifest annotations.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The base, unless built from scratch.
    pub base: Option<Base>,
}

impl Image {
    /// The empty image for `platform`.
    pub fn scratch(platform: &Platform) -> Self {
        Image {
            config: config::scratch(platform),
            layers: Vec::new(),
            annotations: Default::default(),
            base: None,
        }
    }

    /// Reads an image from a layout by tag (or the only image), resolving an index by platform.
    /// Layer blobs stay where they are; only the manifest and config are read.
    pub fn from_layout(
        layout: &Layout,
        tag: Option<&str>,
        platform: Option<&Platform>,
    ) -> Result<Self> {
        let resolved = layout.resolve(tag, platform)?;
        let loc = layout
            .blob_path(&resolved.manifest.config.digest)
            .display()
            .to_string();
        let config: Value = parse_json(&resolved.raw_config, "config", &loc)?;
        if let (Some(want), Some(have)) = (platform, config::platform_of(&config)) {
            if !want.matches(&have) {
                return Err(Error::PlatformNotFound {
                    location: layout.root().display().to_string(),
                    platform: want.to_string(),
                    available: have.to_string(),
                });
            }
        }
        let n = config::diff_id_count(&config);
        if n != resolved.manifest.layers.len() {
            return Err(Error::NotALayout {
                path: layout.root().to_path_buf(),
                reason: format!(
                    "manifest {} has {} layers but its config lists {n} diff_ids",
                    resolved.descriptor.digest,
                    resolved.manifest.layers.len()
                ),
            });
        }
        let layers = resolved
            .manifest
            .layers
            .iter()
            .map(|d| Layer {
                descriptor: d.clone(),
                source: LayerSource::File(layout.blob_path(&d.digest)),
            })
            .collect();
        let name = resolved
            .descriptor
            .annotations
            .get(ANNOTATION_REF_NAME)
            .filter(|n| n.contains('/'))
            .cloned();
        Ok(Image {
            config,
            layers,
            annotations: Default::default(),
            base: Some(Base {
                name,
                digest: resolved.descriptor.digest,
            }),
        })
    }

    /// The image's platform, from its config.
    pub fn platform(&self) -> Option<Platform> {
        config::platform_of(&self.config)
    }

    /// Appends a new layer, whose bytes are at `source`, with its diff_id and history entry.
    pub fn push_layer(
        &mut self,
        blob: &LayerBlob,
        source: LayerSource,
        created: &str,
        created_by: &str,
    ) {
        config::add_layer(&mut self.config, &blob.diff_id, created, created_by);
        self.layers.push(Layer {
            descriptor: Descriptor::new(blob.media_type, blob.digest, blob.size),
            source,
        });
    }

    /// Applies config edits.
    pub fn edit(&mut self, edits: &ConfigEdits) {
        edits.apply(&mut self.config);
    }

    /// Sets the creation time of the config and the manifest annotations (base name/digest, created).
    pub fn stamp(&mut self, created: &str) {
        config::set_created(&mut self.config, created);
        self.annotations
            .insert(ANNOTATION_CREATED.into(), created.into());
        if let Some(base) = &self.base {
            self.annotations
                .insert(ANNOTATION_BASE_DIGEST.into(), base.digest.to_string());
            if let Some(name) = &base.name {
                self.annotations
                    .insert(ANNOTATION_BASE_NAME.into(), name.clone());
            }
        }
    }

    /// The OCI manifest for this image given its config descriptor. Base layers keep their
    /// bytes and digests; Docker media-type strings become their OCI equivalents.
    pub fn manifest(&self, config: Descriptor) -> Result<Manifest> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let mt = media::oci_layer(&l.descriptor.media_type).ok_or_else(|| {
                    Error::UnsupportedMediaType {
                        location: l.source.to_string(),
                        media_type: l.descriptor.media_type.clone(),
                    }
                })?;
                let mut d = l.descriptor.clone();
                d.media_type = mt.to_string();
                Ok(d)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config,
            layers,
            annotations: self.annotations.clone(),
            extra: Default::default(),
        })
    }
}
