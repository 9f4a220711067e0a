//! Requests with large bodies sent through reqwest's async client, each on a runtime of the
//! calling thread's own: the body goes out in 1 MiB frames read from the blob's file
//! ([`FileBody`]) instead of the blocking client's 8 KiB pieces. Authentication is the token
//! [`Client::send`] has already fetched; a 401 sends the caller back to [`Client::send`], which
//! knows how to refresh it.

use std::path::Path;

use reqwest::header::{HeaderMap, HeaderName, AUTHORIZATION, CONTENT_TYPE};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::registry::auth::Scope;
use crate::registry::body::FileBody;
use crate::registry::client::Client;
use crate::registry::name::Repository;
use crate::registry::status::{http_error, status_error_parts, ERROR_BODY_MAX};

/// A registry's answer: its status, headers, and the start of its body when it is not a success.
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// At most [`ERROR_BODY_MAX`] bytes of the body of a failure (empty for a success).
    pub body: Vec<u8>,
}

impl Answer {
    /// True for a 2xx status.
    pub fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// This answer as an error of `method` on `url`.
    pub fn error(&self, method: &'static str, url: &str) -> Error {
        status_error_parts(method, url, self.status, &self.headers, &self.body)
    }
}

/// A runtime for one thread's async requests.
pub(crate) fn runtime(url: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting an HTTP runtime for", url, e))
}

/// Sends `req` and reads its answer.
pub(crate) async fn exchange(
    req: reqwest::RequestBuilder,
    method: &'static str,
    url: &str,
) -> Result<Answer> {
    let mut resp = req.send().await.map_err(|e| http_error(method, url, e))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    if !(200..300).contains(&status) {
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() as u64 >= ERROR_BODY_MAX {
                break;
            }
        }
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Sends `len` bytes of the blob `digest` (file `path`, `size` bytes in all) from `offset` as
/// the body of one `method` request to `url`, with a `Content-Length`, `headers`, and the
/// authorization for `scope`. `None` when the registry wants fresh authentication.
#[allow(clippy::too_many_arguments)]
pub(crate) fn send_file(
    c: &Client,
    repo: &Repository,
    scope: &Scope,
    method: &'static str,
    url: &str,
    (path, digest, size): (&Path, Digest, u64),
    (offset, len): (u64, u64),
    headers: &[(HeaderName, String)],
) -> Result<Option<Answer>> {
    let file = std::fs::File::open(path).at("opening", path)?;
    let report = c.options().bytes.clone().map(|sink| (sink, digest, size));
    let body = FileBody::range(file, offset, len, report);
    let http = c.async_http(repo)?;
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::PUT);
    let mut req = http
        .request(m, url)
        .timeout(c.blob_timeout(len))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap(body));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(a) = c.authorization_for(repo, scope)? {
        req = req.header(AUTHORIZATION, a);
    }
    let answer = runtime(url)?.block_on(exchange(req, method, url))?;
    Ok((answer.status != 401).then_some(answer))
}
