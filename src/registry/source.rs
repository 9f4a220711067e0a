//! A registry image as a build base, lazily: only its manifest and config are read; its layers
//! stay [`RemoteBlob`]s until a sink needs their bytes (a layout downloads them, a push to the
//! same registry mounts or finds them, a push elsewhere streams them across).

use std::fmt;

use crate::error::{Error, Result};
use crate::image::{Base, Image, Layer, LayerSource};
use crate::manifest::{parse_json, Descriptor, Platform};
use crate::registry::client::Client;
use crate::registry::name::{RegistryRef, Repository};
use crate::registry::pull::resolve_image;
use crate::registry::write::BlobSource;

/// A blob that lives in a registry repository.
#[derive(Clone, Debug)]
pub struct RemoteBlob {
    /// The client that reaches it.
    pub client: Client,
    /// The repository holding it.
    pub repository: Repository,
}

impl fmt::Display for RemoteBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)
    }
}

impl RemoteBlob {
    /// This blob as a push source.
    pub fn source(&self) -> BlobSource {
        BlobSource::Remote(self.client.clone(), self.repository.clone())
    }
}

/// Reads `reference` (resolving an index by `platform`) as a base image: manifest and config
/// only.
pub fn image_from_registry(
    client: &Client,
    reference: &RegistryRef,
    platform: Option<&Platform>,
) -> Result<Image> {
    let repo = &reference.repository;
    let resolved = resolve_image(client, repo, &reference.reference(), platform)?;
    let loc = format!("{repo}@{}", resolved.manifest.config.digest);
    let config: serde_json::Value = parse_json(&resolved.raw_config, "config", &loc)?;
    if let (Some(want), Some(have)) = (platform, crate::config::platform_of(&config)) {
        if !want.matches(&have) {
            return Err(Error::PlatformNotFound {
                location: reference.to_string(),
                platform: want.to_string(),
                available: have.to_string(),
            });
        }
    }
    let n = crate::config::diff_id_count(&config);
    if n != resolved.manifest.layers.len() {
        return Err(Error::BadResponse {
            url: reference.to_string(),
            reason: format!(
                "manifest {} has {} layers but its config lists {n} diff_ids",
                resolved.manifest_raw.digest,
                resolved.manifest.layers.len()
            ),
        });
    }
    let blob = RemoteBlob {
        client: client.clone(),
        repository: repo.clone(),
    };
    let layers = resolved
        .manifest
        .layers
        .iter()
        .map(|d: &Descriptor| Layer {
            descriptor: d.clone(),
            source: LayerSource::Remote(blob.clone()),
        })
        .collect();
    let name = match &reference.tag {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    Ok(Image {
        config,
        layers,
        annotations: Default::default(),
        base: Some(Base {
            name: Some(name),
            digest: resolved.manifest_raw.digest,
        }),
    })
}
