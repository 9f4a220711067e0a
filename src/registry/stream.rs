//! Uploading a blob while it is being produced: the layer writer tees its compressed bytes into
//! a pipe, and one `PATCH` streams them to the registry (chunked transfer encoding) as they come;
//! once the digest is known, `PUT ?digest=` commits it. This is how `build --push` overlaps
//! compression with the upload. Any failure here is not final: the caller pushes the finished
//! blob from disk the usual way (which starts with a `HEAD`).
//!
//! The `PATCH` runs on an async client driven by a runtime on a thread of its own, and every
//! write of the layer writer (one gzip member, about 0.4 MiB) travels as one body frame. The
//! blocking client would cut the body into 8 KiB reads, each handed to its runtime thread: about
//! 23,000 thread hand-offs for a 190 MB layer, on cores that compression already keeps busy.

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver};
use http_body::Frame;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use tokio::sync::mpsc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::registry::auth::Scope;
use crate::registry::client::Client;
use crate::registry::name::Repository;
use crate::registry::status::{http_error, status_error_parts, ERROR_BODY_MAX};
use crate::registry::write::{commit_upload, initiate_upload, location};

/// Writes in flight between the layer writer and the upload (each about one gzip member).
const PIPE_DEPTH: usize = 16;

/// How long the upload may go without taking the next piece of the body, while one is waiting,
/// before it is dropped: the layer writer is then released (the build goes on) and the blob is
/// pushed from disk afterwards.
const STALL: Duration = Duration::from_secs(30);

/// How often the upload thread checks for a stall.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The writing end of the pipe; dropping it ends the upload's body. Its writes block while the
/// pipe is full, for at most [`STALL`] (the upload side gives up then and the writes fail).
pub struct PipeWriter(mpsc::Sender<Bytes>);

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the streamed upload stopped or stalled",
                )
            })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the upload's progress looks like to the stall watch.
struct Watch {
    start: Instant,
    /// Milliseconds since `start` of the last time the HTTP stack asked for body bytes.
    last_poll: AtomicU64,
    /// The last ask found the pipe empty: the upload is waiting on the layer writer, not stuck.
    starved: AtomicBool,
    /// The body has ended; only the answer is awaited.
    ended: AtomicBool,
}

impl Watch {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// True when the registry has stopped taking bytes for `stall`, or has not answered a
    /// complete body within `answer`.
    fn stuck(&self, stall: Duration, answer: Duration) -> bool {
        let idle = Duration::from_millis(self.now_ms() - self.last_poll.load(Ordering::Relaxed));
        if self.ended.load(Ordering::Relaxed) {
            idle > answer
        } else {
            !self.starved.load(Ordering::Relaxed) && idle > stall
        }
    }
}

/// The reading end of the pipe, the body of the upload: one frame per write.
struct PipeBody {
    rx: mpsc::Receiver<Bytes>,
    watch: Arc<Watch>,
}

impl http_body::Body for PipeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let polled = this.rx.poll_recv(cx);
        let w = &this.watch;
        w.last_poll.store(w.now_ms(), Ordering::Relaxed);
        w.starved.store(polled.is_pending(), Ordering::Relaxed);
        if let Poll::Ready(None) = polled {
            w.ended.store(true, Ordering::Relaxed);
        }
        polled.map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// An upload being fed through a [`PipeWriter`].
pub struct StreamingUpload {
    client: Client,
    repo: Repository,
    scope: Scope,
    patch: Receiver<Result<String>>,
}

/// Opens an upload session on `repo` and starts streaming whatever is written to the returned
/// pipe into it. The pipe must be written from outside any async runtime.
pub fn start(c: &Client, repo: &Repository) -> Result<(StreamingUpload, PipeWriter)> {
    let scope = Scope::push(&repo.path, &[]);
    let session = initiate_upload(c, repo, &scope)?;
    let patch = Patch {
        http: c.async_http(repo)?,
        authorization: c.authorization_for(repo, &scope)?,
        session,
        answer: c.doc_timeout(),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(PIPE_DEPTH);
    let (done_tx, done_rx) = bounded::<Result<String>>(1);
    let (client, r) = (c.clone(), repo.clone());
    std::thread::Builder::new()
        .name("hoist-stream".into())
        .spawn(move || {
            let _ = done_tx.send(patch.run(&client, &r, rx));
        })
        .map_err(|e| Error::io("starting the upload thread for", repo.to_string(), e))?;
    Ok((
        StreamingUpload {
            client: c.clone(),
            repo: repo.clone(),
            scope,
            patch: done_rx,
        },
        PipeWriter(tx),
    ))
}

/// The streamed `PATCH` of one upload session.
struct Patch {
    http: reqwest::Client,
    authorization: Option<String>,
    session: String,
    answer: Duration,
}

impl Patch {
    /// Sends the pipe as the body of a `PATCH` to the session (no size is known: chunked
    /// transfer encoding, no `Content-Range`); returns the next session URL. Gives up when the
    /// registry stalls (see [`Watch::stuck`]), which drops the pipe and frees the writer.
    fn run(self, client: &Client, repo: &Repository, rx: mpsc::Receiver<Bytes>) -> Result<String> {
        let url = self.session.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the upload runtime for", &url, e))?;
        let watch = Arc::new(Watch {
            start: Instant::now(),
            last_poll: AtomicU64::new(0),
            starved: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        });
        let body = PipeBody {
            rx,
            watch: watch.clone(),
        };
        let mut req = self
            .http
            .patch(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap(body));
        if let Some(a) = &self.authorization {
            req = req.header(AUTHORIZATION, a);
        }
        let answer = self.answer;
        let exchange = async move {
            let resp = req.send().await.map_err(|e| http_error("PATCH", &url, e))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            if (200..300).contains(&status) {
                return location(client, repo, &url, &headers);
            }
            let raw = read_start(resp).await;
            Err(status_error_parts("PATCH", &url, status, &headers, &raw))
        };
        let watchdog = async {
            while !watch.stuck(STALL, answer) {
                tokio::time::sleep(WATCH_EVERY).await;
            }
        };
        rt.block_on(first_of(exchange, watchdog))
            .unwrap_or_else(|| {
                Err(Error::BadResponse {
                    url: self.session.clone(),
                    reason: "the registry stopped taking the streamed upload".into(),
                })
            })
    }
}

/// The start of an error answer's body (at most [`ERROR_BODY_MAX`] bytes).
async fn read_start(mut resp: reqwest::Response) -> Vec<u8> {
    let mut raw = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        raw.extend_from_slice(&chunk);
        if raw.len() as u64 >= ERROR_BODY_MAX {
            break;
        }
    }
    raw
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
    /// Waits (a bounded time) for the streamed body to be accepted — the pipe must be closed
    /// first — and commits the blob under `digest`.
    pub fn finish(self, digest: &Digest) -> Result<()> {
        let session = self
            .patch
            .recv_timeout(self.client.doc_timeout() + WATCH_EVERY * 2)
            .map_err(|_| Error::BadResponse {
                url: self.repo.to_string(),
                reason: "no answer to the streamed upload".into(),
            })??;
        commit_upload(&self.client, &self.repo, &self.scope, &session, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(idle_ms: u64, starved: bool, ended: bool) -> Watch {
        Watch {
            start: Instant::now() - Duration::from_millis(idle_ms + 1000),
            last_poll: AtomicU64::new(1000),
            starved: AtomicBool::new(starved),
            ended: AtomicBool::new(ended),
        }
    }

    #[test]
    fn a_stall_is_a_registry_that_stops_taking_bytes() {
        let (stall, answer) = (Duration::from_secs(30), Duration::from_secs(120));
        assert!(!watch(5_000, false, false).stuck(stall, answer));
        assert!(watch(31_000, false, false).stuck(stall, answer));
        // Waiting on a slow layer writer is not a stall.
        assert!(!watch(300_000, true, false).stuck(stall, answer));
        // After the body, the answer gets its own bound.
        assert!(!watch(31_000, false, true).stuck(stall, answer));
        assert!(watch(121_000, false, true).stuck(stall, answer));
    }

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
