//! Writing to a registry, one function per protocol step (as go-containerregistry's
//! `remote/write.go`): check for a blob, mount it from another repository, start an upload,
//! send it whole or in chunks, commit it, put a manifest. [`upload_blob`] composes the blob
//! steps inside one retry; every attempt re-opens its source.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::blocking::Body;
use reqwest::header::{
    HeaderMap, HeaderName, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION,
};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::Descriptor;
use crate::registry::auth::Scope;
use crate::registry::client::{status_error, Client};
use crate::registry::name::Repository;
use crate::registry::pull::open_blob;
use crate::registry::transfer::{send_file, Answer};

/// Where the bytes of a blob to push come from. Each attempt opens them afresh.
#[derive(Clone, Debug)]
pub enum BlobSource {
    /// A file (a layout blob or a freshly built layer).
    File(PathBuf),
    /// Bytes in memory (a config).
    Bytes(Arc<Vec<u8>>),
    /// A blob in another repository, possibly on another registry (streamed across).
    Remote(Client, Repository),
}

/// What happened to one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The registry already had it (HEAD).
    Exists,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// The result of a mount request.
enum Started {
    /// The registry linked the blob; nothing to upload.
    Mounted,
    /// The registry declined the mount and opened an upload session here instead.
    Upload(String),
}

const DIGEST_HEADER: &str = "Docker-Content-Digest";

/// HEAD `/blobs/<digest>`: true when the registry has the blob.
fn blob_exists(c: &Client, repo: &Repository, scope: &Scope, digest: &Digest) -> Result<bool> {
    let url = c.url(repo, &format!("blobs/{digest}"))?;
    let resp = c.send(repo, scope, "HEAD", &url, c.doc_timeout(), &Ok)?;
    match resp.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        s => Err(status_error("HEAD", &url, s, resp)),
    }
}

/// POST `/blobs/uploads/?mount=<digest>&from=<repo>`: 201 mounted; 202 an upload session.
fn mount_blob(
    c: &Client,
    repo: &Repository,
    scope: &Scope,
    digest: &Digest,
    from: &Repository,
) -> Result<Started> {
    let url = c.url(
        repo,
        &format!("blobs/uploads/?mount={digest}&from={}", from.path),
    )?;
    let resp = c.send(repo, scope, "POST", &url, c.doc_timeout(), &|r| {
        Ok(r.header(CONTENT_LENGTH, 0))
    })?;
    match resp.status().as_u16() {
        201 => Ok(Started::Mounted),
        202 => Ok(Started::Upload(location(c, repo, &url, resp.headers())?)),
        s => Err(status_error("POST", &url, s, resp)),
    }
}

/// POST `/blobs/uploads/`: opens an upload session and returns its URL.
pub(crate) fn initiate_upload(c: &Client, repo: &Repository, scope: &Scope) -> Result<String> {
    let url = c.url(repo, "blobs/uploads/")?;
    let resp = c.send(repo, scope, "POST", &url, c.doc_timeout(), &|r| {
        Ok(r.header(CONTENT_LENGTH, 0))
    })?;
    match resp.status().as_u16() {
        202 => location(c, repo, &url, resp.headers()),
        s => Err(status_error("POST", &url, s, resp)),
    }
}

/// PUT `<session>?digest=…` with the whole blob as the body (monolithic upload).
fn upload_whole(
    c: &Client,
    repo: &Repository,
    scope: &Scope,
    session: &str,
    desc: &Descriptor,
    src: &BlobSource,
) -> Result<()> {
    let url = with_digest(session, &desc.digest);
    if let Some(answer) =
        send_file_range(c, repo, scope, "PUT", &url, desc, src, (0, desc.size), &[])?
    {
        if !COMMITTED.contains(&answer.status) {
            return Err(answer.error("PUT", &url));
        }
        return check_returned_digest(&url, &answer.headers, &desc.digest);
    }
    let resp = c.send(repo, scope, "PUT", &url, c.blob_timeout(desc.size), &|r| {
        Ok(r.header(CONTENT_TYPE, "application/octet-stream")
            .body(open_body(c, src, desc, 0, desc.size)?))
    })?;
    check_committed("PUT", &url, resp, &desc.digest)
}

/// PATCH the blob in `chunk`-sized pieces with `Content-Range`; returns the session URL to
/// commit to.
fn upload_chunks(
    c: &Client,
    repo: &Repository,
    scope: &Scope,
    session: &str,
    desc: &Descriptor,
    src: &BlobSource,
    chunk: u64,
) -> Result<String> {
    let mut session = session.to_string();
    let mut offset = 0;
    while offset < desc.size {
        let len = chunk.max(1).min(desc.size - offset);
        let range = format!("{offset}-{}", offset + len - 1);
        let url = session.clone();
        let headers = [(CONTENT_RANGE, range.clone())];
        if let Some(answer) = send_file_range(
            c,
            repo,
            scope,
            "PATCH",
            &url,
            desc,
            src,
            (offset, len),
            &headers,
        )? {
            match answer.success() {
                true => session = location(c, repo, &url, &answer.headers)?,
                false => return Err(answer.error("PATCH", &url)),
            }
            offset += len;
            continue;
        }
        let resp = c.send(repo, scope, "PATCH", &url, c.blob_timeout(len), &|r| {
            Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, range.as_str())
                .body(open_body(c, src, desc, offset, len)?))
        })?;
        match resp.status().as_u16() {
            // The spec says 202; some registries answer 204 (any 2xx with a Location will do).
            200..=299 => session = location(c, repo, &url, resp.headers())?,
            s => return Err(status_error("PATCH", &url, s, resp)),
        }
        offset += len;
    }
    Ok(session)
}

/// PUT `<session>?digest=…` without a body: completes a chunked upload.
pub(crate) fn commit_upload(
    c: &Client,
    repo: &Repository,
    scope: &Scope,
    session: &str,
    digest: &Digest,
) -> Result<()> {
    let url = with_digest(session, digest);
    let resp = c.send(repo, scope, "PUT", &url, c.doc_timeout(), &|r| {
        Ok(r.header(CONTENT_LENGTH, 0))
    })?;
    check_committed("PUT", &url, resp, digest)
}

/// PUT `/manifests/<reference>`; returns the digest, checked against `Docker-Content-Digest`.
pub(crate) fn put_manifest(
    c: &Client,
    repo: &Repository,
    reference: &str,
    media_type: &str,
    raw: &[u8],
) -> Result<Digest> {
    let url = c.url(repo, &format!("manifests/{reference}"))?;
    let scope = Scope::push(&repo.path, &[]);
    let digest = Digest::of(raw);
    c.with_retry(&format!("PUT {url}"), |_| {
        let body = raw.to_vec();
        let resp = c.send(repo, &scope, "PUT", &url, c.doc_timeout(), &|r| {
            Ok(r.header(CONTENT_TYPE, media_type).body(body.clone()))
        })?;
        check_committed("PUT", &url, resp, &digest)
    })?;
    Ok(digest)
}

/// Pushes one blob: HEAD (skip), else mount from `mount_from`, else upload (whole or chunked,
/// falling back to the other style when the registry refuses one). Transient failures retry the
/// whole sequence, which starts with a HEAD: a final PUT that timed out may have landed.
pub fn upload_blob(
    c: &Client,
    repo: &Repository,
    desc: &Descriptor,
    src: &BlobSource,
    mount_from: Option<&Repository>,
) -> Result<BlobOutcome> {
    let from: Vec<String> = mount_from.map(|r| r.path.clone()).into_iter().collect();
    let scope = Scope::push(&repo.path, &from);
    let what = format!("pushing blob {} to {repo}", desc.digest);
    c.with_retry(&what, |_| {
        if blob_exists(c, repo, &scope, &desc.digest)? {
            return Ok(BlobOutcome::Exists);
        }
        let session = match mount_from {
            Some(from) if from.path != repo.path => {
                match mount_blob(c, repo, &scope, &desc.digest, from)? {
                    Started::Mounted => return Ok(BlobOutcome::Mounted),
                    Started::Upload(s) => s,
                }
            }
            _ => initiate_upload(c, repo, &scope)?,
        };
        let chunked_first =
            desc.size > c.options().monolithic_max && matches!(src, BlobSource::File(_));
        let first = send_style(c, repo, &scope, &session, desc, src, chunked_first);
        match first {
            Err(Error::RegistryStatus { status, .. }) if refuses_style(status) => {
                c.progress(&format!(
                    "{}: the registry refused a {} upload (HTTP {status}); trying {}",
                    desc.digest,
                    style_name(chunked_first),
                    style_name(!chunked_first)
                ));
                let session = initiate_upload(c, repo, &scope)?;
                send_style(c, repo, &scope, &session, desc, src, !chunked_first)?;
            }
            other => other?,
        }
        Ok(BlobOutcome::Uploaded)
    })
}

fn style_name(chunked: bool) -> &'static str {
    if chunked {
        "chunked (PATCH)"
    } else {
        "monolithic (PUT)"
    }
}

/// Statuses meaning "not this way" rather than "not now".
fn refuses_style(status: u16) -> bool {
    matches!(status, 400 | 405 | 411 | 413 | 415 | 416 | 501)
}

fn send_style(
    c: &Client,
    repo: &Repository,
    scope: &Scope,
    session: &str,
    desc: &Descriptor,
    src: &BlobSource,
    chunked: bool,
) -> Result<()> {
    if chunked {
        let chunk = match src {
            BlobSource::File(_) => c.options().chunk_size,
            _ => desc.size, // a stream is sent as one PATCH
        };
        let last = upload_chunks(c, repo, scope, session, desc, src, chunk)?;
        commit_upload(c, repo, scope, &last, &desc.digest)
    } else {
        upload_whole(c, repo, scope, session, desc, src)
    }
}

/// Bodies from this size up are sent from their file through the async client, in 1 MiB frames
/// (see [`crate::registry::transfer`]); smaller ones through the blocking client.
const ASYNC_BODY_MIN: u64 = 1 << 20;

/// Sends `range` (offset, length) of a file blob through the async client (`None` when `src` is
/// not a file, the range is small, or the registry wants fresh authentication: the caller then
/// sends it through [`Client::send`]).
#[allow(clippy::too_many_arguments)]
fn send_file_range(
    c: &Client,
    repo: &Repository,
    scope: &Scope,
    method: &'static str,
    url: &str,
    desc: &Descriptor,
    src: &BlobSource,
    range: (u64, u64),
    headers: &[(HeaderName, String)],
) -> Result<Option<Answer>> {
    match src {
        BlobSource::File(path) if range.1 >= ASYNC_BODY_MIN => send_file(
            c,
            repo,
            scope,
            method,
            url,
            (path, desc.digest, desc.size),
            range,
            headers,
        ),
        _ => Ok(None),
    }
}

/// Opens `len` bytes of `src` from `offset` as a sized, streaming body.
fn open_body(
    c: &Client,
    src: &BlobSource,
    desc: &Descriptor,
    offset: u64,
    len: u64,
) -> Result<Body> {
    match src {
        BlobSource::File(path) => {
            let mut f = std::fs::File::open(path).at("opening", path)?;
            f.seek(SeekFrom::Start(offset)).at("seeking in", path)?;
            Ok(Body::sized(
                c.counting(f.take(len), desc.digest, offset, desc.size),
                len,
            ))
        }
        BlobSource::Bytes(b) => {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
            let end = usize::try_from(offset + len)
                .unwrap_or(usize::MAX)
                .min(b.len());
            Ok(Body::from(b[start..end].to_vec()))
        }
        BlobSource::Remote(client, from) => {
            // Only ever opened whole (offset 0, len = size): streamed across, never on disk.
            let resp = open_blob(client, from, desc)?;
            Ok(Body::sized(
                c.counting(resp, desc.digest, 0, desc.size),
                len,
            ))
        }
    }
}

/// The `Location` of an upload session, made absolute.
pub(crate) fn location(
    c: &Client,
    repo: &Repository,
    url: &str,
    headers: &reqwest::header::HeaderMap,
) -> Result<String> {
    let loc = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::BadResponse {
            url: url.into(),
            reason: "the upload answer has no Location header".into(),
        })?;
    c.absolute(repo, loc)
}

/// Appends `digest=…` to a session URL (which may already have a query).
fn with_digest(session: &str, digest: &Digest) -> String {
    let sep = if session.contains('?') { '&' } else { '?' };
    format!("{session}{sep}digest={digest}")
}

/// 201 Created with a matching `Docker-Content-Digest` (when the registry sends one).
/// The statuses of a committed upload (the spec says 201; some registries answer 200).
const COMMITTED: [u16; 2] = [201, 200];

fn check_committed(
    method: &'static str,
    url: &str,
    resp: reqwest::blocking::Response,
    digest: &Digest,
) -> Result<()> {
    let status = resp.status().as_u16();
    if !COMMITTED.contains(&status) {
        return Err(status_error(method, url, status, resp));
    }
    check_returned_digest(url, resp.headers(), digest)
}

/// The `Docker-Content-Digest` of a commit, when the registry sends one, must be `digest`.
fn check_returned_digest(url: &str, headers: &HeaderMap, digest: &Digest) -> Result<()> {
    if let Some(h) = headers.get(DIGEST_HEADER).and_then(|v| v.to_str().ok()) {
        if h != digest.to_string() {
            return Err(Error::WrongDigestReturned {
                url: url.into(),
                expected: digest.to_string(),
                returned: h.into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_query_appends() {
        let d = Digest::of(b"");
        assert_eq!(
            with_digest("http://r/v2/x/blobs/uploads/u", &d),
            format!("http://r/v2/x/blobs/uploads/u?digest={d}")
        );
        assert_eq!(
            with_digest("http://r/u?_state=abc", &d),
            format!("http://r/u?_state=abc&digest={d}")
        );
    }

    #[test]
    fn refused_styles() {
        assert!(
            refuses_style(405) && refuses_style(416) && !refuses_style(503) && !refuses_style(404)
        );
    }
}
