//! New layers of a `build --push`, uploaded while they are built (see
//! [`crate::registry::stream`]): followed from their file when one is kept, piped straight into
//! the upload when none is; then committed after the last layer, or pushed from disk when the
//! stream failed.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{describe, Error, Result};
use crate::image::{Image, LayerSource};
use crate::layer::write::{stream_layer, write_layer, write_layer_followed};
use crate::layer::{LayerBlob, LayerPlan, WriteOptions};
use crate::layout::Layout;
use crate::registry::stream::{self, StreamingUpload};
use crate::registry::{Client, RegistryRef, RemoteBlob};

/// Writes a new layer; with a push destination, also starts streaming it there as it is
/// written (see [`stream`]). The upload may still be running when this returns:
/// [`finish_streams`] waits for it.
pub(super) fn write_and_stream(
    plan: &LayerPlan,
    opts: WriteOptions,
    out: &Layout,
    dest: Option<&RegistryRef>,
    client: &Client,
    progress: &mut dyn FnMut(&str),
) -> Result<(LayerBlob, Option<StreamingUpload>)> {
    let Some(dest) = dest else {
        return Ok((write_layer(plan, opts, &out.blob_dir())?, None));
    };
    match stream::start(client, &dest.repository) {
        Ok((upload, follower)) => {
            let blob = write_layer_followed(plan, opts, &out.blob_dir(), Some(Box::new(follower)))?;
            Ok((blob, Some(upload)))
        }
        Err(e) => {
            progress(&format!(
                "  cannot stream to {}: {}; it is pushed after the build",
                dest.repository,
                describe(&e)
            ));
            Ok((write_layer(plan, opts, &out.blob_dir())?, None))
        }
    }
}

/// An upload of a layer kept nowhere locally, to be committed after the last layer.
pub(super) struct PipedUpload {
    /// The upload.
    pub upload: StreamingUpload,
    /// The layer's plan, to build it again if the upload fails.
    pub plan: Box<LayerPlan>,
    /// The layer's index in the image.
    pub index: usize,
    /// The layer's digest.
    pub digest: Digest,
}

/// Compresses a new layer straight into an upload to `dest`, writing nothing locally; the
/// layer's source is then the registry, and the upload is returned to be committed by
/// [`finish_piped`]. If the upload stops while the layer is compressed, the layer is built
/// again into `out` (the bytes are the same) and pushed from there after the build.
pub(super) fn stream_only(
    plan: &LayerPlan,
    opts: WriteOptions,
    out: &Layout,
    dest: &RegistryRef,
    client: &Client,
    progress: &mut dyn FnMut(&str),
) -> Result<(LayerBlob, LayerSource, Option<StreamingUpload>)> {
    let streamed = stream::start_piped(client, &dest.repository).and_then(|(upload, pipe)| {
        let written = stream_layer(plan, opts, pipe).and_then(|(pipe, diff_id, digest, size)| {
            pipe.end()
                .map_err(|e| Error::io("streaming the layer of", &plan.spec.src, e))?;
            Ok((diff_id, digest, size))
        });
        match written {
            Ok(done) => Ok((done, upload)),
            // A broken pipe says less than the upload's own reason for stopping.
            Err(e) => Err(upload.failure().unwrap_or(e)),
        }
    });
    match streamed {
        Ok(((diff_id, digest, size), upload)) => {
            let blob = LayerBlob {
                digest,
                diff_id,
                size,
                media_type: opts.compression.media_type(),
                // Kept nowhere locally: the source below is the registry.
                path: PathBuf::new(),
            };
            let source = LayerSource::Remote(RemoteBlob {
                client: client.clone(),
                repository: dest.repository.clone(),
            });
            Ok((blob, source, Some(upload)))
        }
        Err(e) => {
            progress(&format!(
                "  streaming to {} failed ({}); the layer is built again and pushed from disk",
                dest.repository,
                describe(&e)
            ));
            let blob = write_layer(plan, opts, &out.blob_dir())?;
            let source = LayerSource::File(blob.path.clone());
            Ok((blob, source, None))
        }
    }
}

/// Commits the uploads of layers kept nowhere locally. One that fails is built again into
/// `out` and becomes a file source for the push that follows; its bytes must be the same.
pub(super) fn finish_piped(
    piped: Vec<PipedUpload>,
    image: &mut Image,
    out: &Layout,
    opts: WriteOptions,
    dest: &RegistryRef,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    for p in piped {
        let Err(e) = p.upload.finish(&p.digest) else {
            progress(&format!(
                "  {} streamed to {} while compressing (not kept locally)",
                p.digest, dest.repository
            ));
            continue;
        };
        progress(&format!(
            "  streaming {} to {} failed ({}); the layer is built again and pushed from disk",
            p.digest,
            dest.repository,
            describe(&e)
        ));
        let blob = write_layer(&p.plan, opts, &out.blob_dir())?;
        if blob.digest != p.digest {
            return Err(Error::SourceChanged {
                src: p.plan.spec.src.clone(),
                detail: format!("built again its layer is {}, not {}", blob.digest, p.digest),
            });
        }
        if let Some(layer) = image.layers.get_mut(p.index) {
            layer.source = LayerSource::File(blob.path);
        }
    }
    Ok(())
}

/// Waits for the streamed uploads and commits them. A failure only costs the overlap: the push
/// that follows uploads the blob from disk (it starts with a `HEAD`, which finds the others).
pub(super) fn finish_streams(
    streams: Vec<(StreamingUpload, Digest)>,
    dest: &RegistryRef,
    progress: &mut dyn FnMut(&str),
) {
    for (upload, digest) in streams {
        match upload.finish(&digest) {
            Ok(()) => progress(&format!(
                "  {digest} streamed to {} while compressing",
                dest.repository
            )),
            Err(e) => progress(&format!(
                "  streaming {digest} to {} failed ({}); it is pushed from disk",
                dest.repository,
                describe(&e)
            )),
        }
    }
}
