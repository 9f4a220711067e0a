//! `pull`: a registry image, every blob, into an OCI layout (the air-gapped export). Without a
//! platform an index is copied whole, every platform; with one, only that image.

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::manifest::{parse_json, Descriptor, Index, Manifest, Platform};
use crate::media;
use crate::reference::LayoutRef;
use crate::registry::client::Client;
use crate::registry::for_each_parallel;
use crate::registry::name::{RegistryRef, Repository};
use crate::registry::pull::{fetch_blob, get_manifest, resolve_image, store_document, RawManifest};

/// Pulls `src` into the layout `dest` and tags it; returns the descriptor written to
/// `index.json`.
pub fn pull(
    client: &Client,
    src: &RegistryRef,
    dest: &LayoutRef,
    platform: Option<&Platform>,
) -> Result<Descriptor> {
    let repo = &src.repository;
    let root = get_manifest(client, repo, &src.reference())?;
    // Only once the source answered is the destination created.
    let layout = Layout::create(&dest.dir)?;
    let _lock = layout.lock()?;
    let mut desc = match platform {
        None if media::is_index(&root.media_type) => {
            let loc = format!("{repo}@{}", root.digest);
            let index: Index = parse_json(&root.raw, "index", &loc)?;
            for child in &index.manifests {
                // Fetched by digest, so verified against the index entry.
                let raw = get_manifest(client, repo, &child.digest.to_string())?;
                store_image(client, repo, &raw, &layout)?;
            }
            store_document(&layout, &root)?
        }
        None => store_image(client, repo, &root, &layout)?,
        Some(want) => {
            let resolved = resolve_image(client, repo, &root.digest.to_string(), Some(want))?;
            let loc = format!("{repo}@{}", resolved.manifest.config.digest);
            let config: serde_json::Value = parse_json(&resolved.raw_config, "config", &loc)?;
            let have = crate::config::platform_of(&config);
            if let Some(h) = have.as_ref().filter(|h| !want.matches(h)) {
                return Err(Error::PlatformNotFound {
                    location: src.to_string(),
                    platform: want.to_string(),
                    available: h.to_string(),
                });
            }
            let mut d = store_image(client, repo, &resolved.manifest_raw, &layout)?;
            d.platform = resolved.platform.or(have);
            d
        }
    };
    desc.annotations.clear();
    layout.set_tag(desc.clone(), dest.tag.as_deref())?;
    Ok(desc)
}

/// Stores an image manifest with its config and layers (in parallel); nested indexes are
/// stored with their children.
fn store_image(
    client: &Client,
    repo: &Repository,
    raw: &RawManifest,
    layout: &Layout,
) -> Result<Descriptor> {
    let loc = format!("{repo}@{}", raw.digest);
    if media::is_index(&raw.media_type) {
        let index: Index = parse_json(&raw.raw, "index", &loc)?;
        for child in &index.manifests {
            store_image(
                client,
                repo,
                &get_manifest(client, repo, &child.digest.to_string())?,
                layout,
            )?;
        }
        return store_document(layout, raw);
    }
    let manifest: Manifest = parse_json(&raw.raw, "manifest", &loc)?;
    let mut blobs = manifest.layers.clone();
    blobs.push(manifest.config.clone());
    for_each_parallel(client.options().jobs, &blobs, |d| {
        fetch_blob(client, repo, d, layout)?;
        client.progress(&format!("blob {} ({} bytes): pulled", d.digest, d.size));
        Ok(())
    })?;
    store_document(layout, raw)
}
