//! The one place that orders a push: blobs (in parallel) → config → manifest; for an index,
//! every child manifest (by digest) before the index (by tag). Sources are an OCI layout or
//! an [`Image`](crate::image::Image) being built.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::manifest::{parse_json, Descriptor, Index, Manifest};
use crate::media;
use crate::registry::client::Client;
use crate::registry::for_each_parallel;
use crate::registry::name::{RegistryRef, Repository};
use crate::registry::pull::layout_blob;
use crate::registry::write::{put_manifest, upload_blob, BlobOutcome, BlobSource};

/// One image manifest to push with where each of its blobs comes from.
pub struct ManifestUpload {
    /// Layers, in manifest order.
    pub layers: Vec<(Descriptor, BlobSource)>,
    /// The config blob.
    pub config: (Descriptor, BlobSource),
    /// The manifest bytes.
    pub raw_manifest: Vec<u8>,
    /// The manifest media type.
    pub media_type: String,
    /// A repository that already holds these blobs (an earlier destination of the same build);
    /// blobs are mounted from it when it is on the destination's registry.
    pub mount_hint: Option<Repository>,
}

/// Pushes one image: layers in parallel, then the config, then the manifest under
/// `reference` (a tag or a digest). Returns the manifest digest.
pub fn write_manifest(
    c: &Client,
    repo: &Repository,
    upload: &ManifestUpload,
    reference: &str,
) -> Result<Digest> {
    let hint = upload.mount_hint.as_ref();
    for_each_parallel(c.options().jobs, &upload.layers, |(desc, src)| {
        push_one(c, repo, desc, src, hint)
    })?;
    push_one(c, repo, &upload.config.0, &upload.config.1, hint)?;
    let digest = put_manifest(c, repo, reference, &upload.media_type, &upload.raw_manifest)?;
    c.progress(&format!("manifest {digest} -> {repo}:{reference}"));
    Ok(digest)
}

/// Pushes one blob, mounting it from its own repository (or the hint) when that is on the same
/// registry.
fn push_one(
    c: &Client,
    repo: &Repository,
    desc: &Descriptor,
    src: &BlobSource,
    hint: Option<&Repository>,
) -> Result<()> {
    let same_registry = |r: &&Repository| r.api_host() == repo.api_host();
    let mount_from = match src {
        BlobSource::Remote(_, from) if same_registry(&from) => Some(from),
        _ => hint.filter(same_registry),
    };
    let outcome = upload_blob(c, repo, desc, src, mount_from)?;
    let how = match (outcome, src) {
        (BlobOutcome::Exists, _) => "exists",
        (BlobOutcome::Mounted, _) => "mounted",
        (BlobOutcome::Uploaded, BlobSource::Remote(..)) => "streamed across",
        (BlobOutcome::Uploaded, _) => "uploaded",
    };
    c.progress(&format!(
        "blob {} ({} bytes): {how}",
        desc.digest, desc.size
    ));
    Ok(())
}

/// Pushes the image or index tagged `tag` (or the only one) in `layout` to `dest`.
pub fn push_layout(
    c: &Client,
    layout: &Layout,
    tag: Option<&str>,
    dest: &RegistryRef,
) -> Result<Digest> {
    let root = root_descriptor(layout, tag)?;
    push_layout_tree(c, layout, &root, &dest.repository, &dest.reference())
}

fn push_layout_tree(
    c: &Client,
    layout: &Layout,
    desc: &Descriptor,
    repo: &Repository,
    reference: &str,
) -> Result<Digest> {
    if media::is_index(&desc.media_type) {
        let raw = layout.read_document(desc, "index")?;
        let index: Index = parse_json(
            &raw,
            "index",
            &layout.blob_path(&desc.digest).display().to_string(),
        )?;
        for child in &index.manifests {
            push_layout_tree(c, layout, child, repo, &child.digest.to_string())?;
        }
        let digest = put_manifest(c, repo, reference, &desc.media_type, &raw)?;
        c.progress(&format!("index {digest} -> {repo}:{reference}"));
        return Ok(digest);
    }
    if !media::is_manifest(&desc.media_type) {
        return Err(Error::UnsupportedMediaType {
            location: layout.root().display().to_string(),
            media_type: desc.media_type.clone(),
        });
    }
    let raw = layout.read_document(desc, "manifest")?;
    let manifest: Manifest = parse_json(
        &raw,
        "manifest",
        &layout.blob_path(&desc.digest).display().to_string(),
    )?;
    let layers = manifest
        .layers
        .iter()
        .map(|l| Ok((l.clone(), BlobSource::File(layout_blob(layout, l)?))))
        .collect::<Result<Vec<_>>>()?;
    let upload = ManifestUpload {
        layers,
        config: (
            manifest.config.clone(),
            BlobSource::File(layout_blob(layout, &manifest.config)?),
        ),
        raw_manifest: raw,
        media_type: desc.media_type.clone(),
        mount_hint: None,
    };
    write_manifest(c, repo, &upload, reference)
}

/// The `index.json` entry named `tag`, or the only entry.
pub(crate) fn root_descriptor(layout: &Layout, tag: Option<&str>) -> Result<Descriptor> {
    let index = layout.index()?;
    match tag {
        Some(t) => layout.tag_descriptor(t),
        None => match index.manifests.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::NotALayout {
                path: layout.root().to_path_buf(),
                reason: "index.json lists no image".into(),
            }),
            many => Err(Error::AmbiguousImage {
                path: layout.root().to_path_buf(),
                count: many.len(),
            }),
        },
    }
}
