//! Reading from a registry: manifests (size-capped, Accept OCI and Docker types, verified when
//! pinned), blobs as verified streams, and blobs written into a layout (temp file, verify digest
//! and size, rename).

use std::io::{self, Read};

use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::layout::{Layout, Writeback, MAX_DOCUMENT_SIZE};
use crate::manifest::{parse_json, Descriptor, Index, Manifest, Platform};
use crate::media;
use crate::registry::auth::Scope;
use crate::registry::client::{status_error, Client};
use crate::registry::name::Repository;

/// The media types hoist accepts for a manifest.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A manifest or index as the registry served it.
#[derive(Clone, Debug)]
pub struct RawManifest {
    /// Its bytes.
    pub raw: Vec<u8>,
    /// Its media type (from `mediaType`, else `Content-Type`).
    pub media_type: String,
    /// The digest of the bytes.
    pub digest: Digest,
}

impl RawManifest {
    /// A descriptor for it.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest, self.raw.len() as u64)
    }
}

/// GETs `/manifests/<reference>` (a tag or digest), capped at [`MAX_DOCUMENT_SIZE`].
pub fn get_manifest(client: &Client, repo: &Repository, reference: &str) -> Result<RawManifest> {
    let url = client.url(repo, &format!("manifests/{reference}"))?;
    let (raw, content_type) = client.with_retry(&format!("GET {url}"), |_| {
        let resp = client.send(
            repo,
            &Scope::pull(&repo.path),
            "GET",
            &url,
            client.doc_timeout(),
            &|r| Ok(r.header(ACCEPT, ACCEPT_MANIFESTS)),
        )?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(status_error("GET", &url, status, resp));
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if let Some(len) = resp.content_length().filter(|l| *l > MAX_DOCUMENT_SIZE) {
            return Err(Error::TooLarge {
                what: "manifest",
                location: url.clone(),
                size: len,
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        let mut raw = Vec::new();
        resp.take(MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut raw)
            .map_err(|e| Error::io("reading", &url, e))?;
        Ok((raw, ct))
    })?;
    if raw.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(Error::TooLarge {
            what: "manifest",
            location: url,
            size: raw.len() as u64,
            limit: MAX_DOCUMENT_SIZE,
        });
    }
    let digest = Digest::of(&raw);
    if let Ok(want) = reference.parse::<Digest>() {
        if want != digest {
            return Err(Error::DigestMismatch {
                location: url,
                expected: want.to_string(),
                found: digest.to_string(),
                size: raw.len() as u64,
            });
        }
    }
    let declared: serde_json::Value = parse_json(&raw, "manifest", &url)?;
    let media_type = declared["mediaType"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        });
    let media_type = if media_type.is_empty() && declared["manifests"].is_array() {
        media::OCI_INDEX.to_string()
    } else if media_type.is_empty() {
        media::OCI_MANIFEST.to_string()
    } else {
        media_type
    };
    if !media::is_manifest(&media_type) && !media::is_index(&media_type) {
        return Err(Error::UnsupportedMediaType {
            location: url,
            media_type,
        });
    }
    Ok(RawManifest {
        raw,
        media_type,
        digest,
    })
}

/// An image manifest resolved from a tag or digest (through an index by platform) with its
/// config bytes.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The image manifest as served.
    pub manifest_raw: RawManifest,
    /// Its platform, when it came from an index.
    pub platform: Option<Platform>,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The config bytes (verified).
    pub raw_config: Vec<u8>,
}

/// Resolves `reference` to one image: an index is resolved by `platform` (default: the only
/// entry, else the host's).
pub fn resolve_image(
    client: &Client,
    repo: &Repository,
    reference: &str,
    platform: Option<&Platform>,
) -> Result<ResolvedImage> {
    let mut raw = get_manifest(client, repo, reference)?;
    let mut chosen = None;
    if media::is_index(&raw.media_type) {
        let loc = format!("{repo}@{}", raw.digest);
        let index: Index = parse_json(&raw.raw, "index", &loc)?;
        let d = crate::layout::pick_platform(&index.manifests, platform, &loc)?;
        chosen = d.platform.clone();
        raw = get_manifest(client, repo, &d.digest.to_string())?;
        if !media::is_manifest(&raw.media_type) {
            return Err(Error::UnsupportedMediaType {
                location: loc,
                media_type: raw.media_type,
            });
        }
    }
    let loc = format!("{repo}@{}", raw.digest);
    let manifest: Manifest = parse_json(&raw.raw, "manifest", &loc)?;
    let raw_config = get_document(client, repo, &manifest.config, "config")?;
    Ok(ResolvedImage {
        manifest_raw: raw,
        platform: chosen,
        manifest,
        raw_config,
    })
}

/// GETs a small blob (a config) into memory, size-capped and verified.
pub fn get_document(
    client: &Client,
    repo: &Repository,
    desc: &Descriptor,
    what: &'static str,
) -> Result<Vec<u8>> {
    let url = client.url(repo, &format!("blobs/{}", desc.digest))?;
    if desc.size > MAX_DOCUMENT_SIZE {
        return Err(Error::TooLarge {
            what,
            location: url,
            size: desc.size,
            limit: MAX_DOCUMENT_SIZE,
        });
    }
    client.with_retry(&format!("GET {url}"), |_| {
        let mut raw = Vec::new();
        open_blob(client, repo, desc)?
            .take(MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut raw)
            .map_err(|e| read_error(&url, e))?;
        verify(&url, desc, Digest::of(&raw), raw.len() as u64)?;
        Ok(raw)
    })
}

/// Opens a blob for streaming. Registries often redirect blob GETs to object storage
/// (S3/GCS presigned URLs); reqwest follows them and drops `Authorization` when the host
/// changes, which those URLs require (they carry their own signature).
pub fn open_blob(
    client: &Client,
    repo: &Repository,
    desc: &Descriptor,
) -> Result<reqwest::blocking::Response> {
    let url = client.url(repo, &format!("blobs/{}", desc.digest))?;
    let resp = client.send(
        repo,
        &Scope::pull(&repo.path),
        "GET",
        &url,
        client.blob_timeout(desc.size),
        &Ok,
    )?;
    match resp.status().as_u16() {
        200 => Ok(resp),
        s => Err(status_error("GET", &url, s, resp)),
    }
}

fn verify(location: &str, desc: &Descriptor, found: Digest, size: u64) -> Result<()> {
    if found != desc.digest || size != desc.size {
        return Err(Error::DigestMismatch {
            location: location.into(),
            expected: desc.digest.to_string(),
            found: found.to_string(),
            size,
        });
    }
    Ok(())
}

/// A transfer that broke off midway (retryable).
fn read_error(url: &str, source: io::Error) -> Error {
    Error::Interrupted {
        url: url.into(),
        source,
    }
}

/// Downloads a blob into `layout` unless present: streamed to a temp file beside the blobs,
/// verified (digest and size), then renamed. A mismatch leaves nothing behind.
pub fn fetch_blob(
    client: &Client,
    repo: &Repository,
    desc: &Descriptor,
    layout: &Layout,
) -> Result<()> {
    if layout.has_blob(&desc.digest, desc.size) {
        return Ok(());
    }
    let url = client.url(repo, &format!("blobs/{}", desc.digest))?;
    let dir = layout.blob_dir();
    client.with_retry(&format!("GET {url}"), |_| {
        let mut resp = client.counting(open_blob(client, repo, desc)?, desc.digest, 0, desc.size);
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-blob-")
            .tempfile_in(&dir)
            .at("creating a temp file in", &dir)?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, Writeback::new(tmp)));
        io::copy(&mut resp, &mut w).map_err(|e| read_error(&url, e))?;
        let (buf, found, size) = w.finish();
        verify(&url, desc, found, size)?;
        let tmp = buf
            .into_inner()
            .map_err(|e| Error::io("writing", &dir, e.into_error()))?
            .into_inner();
        tmp.as_file().sync_all().at("syncing", tmp.path())?;
        let dest = layout.blob_path(&desc.digest);
        tmp.persist(&dest)
            .map_err(|e| Error::io("renaming into", &dest, e.error))?;
        Ok(())
    })
}

/// Writes a manifest or index document into a layout.
pub(crate) fn store_document(layout: &Layout, raw: &RawManifest) -> Result<Descriptor> {
    let mut d = layout.write_document(&raw.media_type, &raw.raw)?;
    d.media_type = raw.media_type.clone();
    Ok(d)
}

/// Verifies that a layout blob file exists at the expected size (used before pushing).
pub(crate) fn layout_blob(layout: &Layout, desc: &Descriptor) -> Result<std::path::PathBuf> {
    let p = layout.blob_path(&desc.digest);
    let len = std::fs::metadata(&p).at("reading", &p)?.len();
    if len != desc.size {
        return Err(Error::NotALayout {
            path: layout.root().to_path_buf(),
            reason: format!(
                "blob {} is {len} bytes, its descriptor says {}",
                desc.digest, desc.size
            ),
        });
    }
    Ok(p)
}
