//! Uploading a blob while it is being produced, which is how `build --push` overlaps
//! compression with the upload. The upload session is opened on the upload's own thread (so
//! reaching the registry overlaps the start of compression), one `PATCH` with chunked transfer
//! encoding carries the blob as it comes, and once the digest is known `PUT ?digest=` commits
//! it. The bytes come from one of two places (`registry/body.rs`):
//!
//! - [`start`]: the layer's file, read from just behind its writer ([`BlobFollower`]); the
//!   writer never waits for the upload, and nothing between them grows with the layer;
//! - [`start_piped`]: a bounded pipe ([`PipeWriter`]) the layer is compressed into, for a layer
//!   kept nowhere else.
//!
//! The `PATCH` runs on an async client with a runtime of its own and is dropped when the
//! registry stalls. Any failure here is not final: the caller pushes the blob from disk the usual
//! way (which starts with a `HEAD`), after building it again if it was kept nowhere.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use tokio::sync::mpsc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::registry::auth::Scope;
use crate::registry::body::{Event, FileBody, PipeBody, Watch};
use crate::registry::client::Client;
use crate::registry::name::Repository;
use crate::registry::transfer::{exchange, runtime};
use crate::registry::write::{commit_upload, initiate_upload, location};

pub use crate::registry::body::{BlobFollower, PipeWriter};

/// The longest the upload may go without taking the next piece of the body while one is ready
/// (capped by the client's request timeout) before it is dropped and the blob pushed from disk.
const STALL: Duration = Duration::from_secs(30);

/// How often the upload thread checks for a stall.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// An upload following a layer as it is written.
pub struct StreamingUpload {
    client: Client,
    repo: Repository,
    scope: Scope,
    patch: Receiver<Result<String>>,
}

/// Starts an upload to `repo` of the blob the returned follower is handed to: the upload
/// session is opened and the `PATCH` sent on a thread of its own.
pub fn start(c: &Client, repo: &Repository) -> Result<(StreamingUpload, BlobFollower)> {
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let upload = start_with(c, repo, move |watch| {
        reqwest::Body::wrap(FileBody::following(rx, watch))
    })?;
    Ok((upload, BlobFollower(tx)))
}

/// Starts an upload to `repo` of what is written to the returned pipe, for a blob kept nowhere
/// else; [`PipeWriter::end`] completes it.
pub fn start_piped(c: &Client, repo: &Repository) -> Result<(StreamingUpload, PipeWriter)> {
    let (pipe, rx) = PipeWriter::new();
    let upload = start_with(c, repo, move |watch| {
        reqwest::Body::wrap(PipeBody::new(rx, watch))
    })?;
    Ok((upload, pipe))
}

/// Opens the session and sends the body `body` makes, on a thread of its own.
fn start_with(
    c: &Client,
    repo: &Repository,
    body: impl FnOnce(Arc<Watch>) -> reqwest::Body + Send + 'static,
) -> Result<StreamingUpload> {
    let scope = Scope::push(&repo.path, &[]);
    let (done_tx, done_rx) = bounded::<Result<String>>(1);
    let (client, r, s) = (c.clone(), repo.clone(), scope.clone());
    std::thread::Builder::new()
        .name("hoist-stream".into())
        .spawn(move || {
            let sent = initiate_upload(&client, &r, &s).and_then(|session| {
                Patch {
                    http: client.async_http(&r)?,
                    authorization: client.authorization_for(&r, &s)?,
                    session,
                    stall: client.options().timeout.min(STALL),
                    answer: client.doc_timeout(),
                }
                .run(&client, &r, body)
            });
            let _ = done_tx.send(sent);
        })
        .map_err(|e| Error::io("starting the upload thread for", repo.to_string(), e))?;
    Ok(StreamingUpload {
        client: c.clone(),
        repo: repo.clone(),
        scope,
        patch: done_rx,
    })
}

/// The streamed `PATCH` of one upload session.
struct Patch {
    http: reqwest::Client,
    authorization: Option<String>,
    session: String,
    stall: Duration,
    answer: Duration,
}

impl Patch {
    /// Sends the body `body` makes (watched by the watch it is given) as a `PATCH` to the
    /// session (no size is known yet: chunked transfer encoding, no `Content-Range`); returns the
    /// next session URL. Gives up when the registry stalls (see [`Watch::stuck`]).
    fn run(
        self,
        client: &Client,
        repo: &Repository,
        body: impl FnOnce(Arc<Watch>) -> reqwest::Body,
    ) -> Result<String> {
        let url = self.session.clone();
        let rt = runtime(&url)?;
        let watch = Arc::new(Watch::new());
        let body = body(watch.clone());
        let mut req = self
            .http
            .patch(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(a) = &self.authorization {
            req = req.header(AUTHORIZATION, a);
        }
        let (stall, answer) = (self.stall, self.answer);
        let patch = async move {
            let answer = exchange(req, "PATCH", &url).await?;
            match answer.success() {
                true => location(client, repo, &url, &answer.headers),
                false => Err(answer.error("PATCH", &url)),
            }
        };
        let watchdog = async {
            while !watch.stuck(stall, answer) {
                tokio::time::sleep(WATCH_EVERY).await;
            }
        };
        rt.block_on(first_of(patch, watchdog)).unwrap_or_else(|| {
            let reason = match watch.ended.load(Ordering::Relaxed) {
                true => "no answer to the streamed upload",
                false => "the registry stopped taking the streamed upload",
            };
            Err(Error::BadResponse {
                url: self.session.clone(),
                reason: reason.into(),
            })
        })
    }
}

/// Runs `main` until it completes (`Some`) or `guard` does first (`None`, `main` dropped).
async fn first_of<T>(main: impl Future<Output = T>, guard: impl Future<Output = ()>) -> Option<T> {
    let (mut main, mut guard) = (pin!(main), pin!(guard));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = main.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        match guard.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

impl StreamingUpload {
    /// Why the upload failed, once its body was abandoned (`None` if it did not fail).
    pub fn failure(self) -> Option<Error> {
        match self.patch.recv() {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(Error::BadResponse {
                url: self.repo.to_string(),
                reason: "the streamed upload ended without an answer".into(),
            }),
        }
    }

    /// Waits for the streamed body to be sent and accepted — the layer must be written first;
    /// the wait ends at the latest when the registry stalls — and commits the blob under
    /// `digest`.
    pub fn finish(self, digest: &Digest) -> Result<()> {
        let session = self.patch.recv().map_err(|_| Error::BadResponse {
            url: self.repo.to_string(),
            reason: "the streamed upload ended without an answer".into(),
        })??;
        commit_upload(&self.client, &self.repo, &self.scope, &session, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_of_drops_the_slower_future() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            1
        };
        let quick = async { tokio::time::sleep(Duration::from_millis(10)).await };
        assert_eq!(rt.block_on(first_of(slow, quick)), None);
        assert_eq!(
            rt.block_on(first_of(async { 2 }, std::future::pending())),
            Some(2)
        );
    }
}
