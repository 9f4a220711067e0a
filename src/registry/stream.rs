//! Uploading a blob while it is being produced: the layer writer reports how far its file has
//! got ([`Follower`]), and one `PATCH` streams the file to the registry (chunked transfer
//! encoding) from behind the writer; once the digest is known, `PUT ?digest=` commits it. This
//! is how `build --push` overlaps compression with the upload. Any failure here is not final:
//! the caller pushes the finished blob from disk the usual way (which starts with a `HEAD`).
//!
//! The writer never waits for the upload: the bytes are read back from the file (still in the
//! page cache), so a registry that is slower than compression for a moment costs no idle core,
//! and no buffer between the two grows with the layer. The upload session is opened on the
//! upload's own thread, so reaching the registry overlaps the start of compression too. The
//! `PATCH` runs on an async client with a runtime of its own and sends 1 MiB frames: the
//! blocking client would cut the body into 8 KiB reads, each handed to its runtime thread (about
//! 23,000 thread hand-offs for a 190 MB layer, on cores that compression keeps busy).

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
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
use crate::layer::write::Follower;
use crate::registry::auth::Scope;
use crate::registry::client::Client;
use crate::registry::name::Repository;
use crate::registry::status::{http_error, status_error_parts, ERROR_BODY_MAX};
use crate::registry::write::{commit_upload, initiate_upload, location};

/// The most bytes sent as one frame of the body.
const FRAME: u64 = 1 << 20;

/// The longest the upload may go without taking the next piece of the body while one is ready
/// (capped by the client's request timeout) before it is dropped and the blob pushed from disk.
const STALL: Duration = Duration::from_secs(30);

/// How often the upload thread checks for a stall.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// What the layer writer tells the upload.
enum Event {
    /// The blob's file.
    File(File),
    /// This many bytes are in the file.
    Written(u64),
    /// The blob is complete at this size.
    Done(u64),
}

/// The layer writer's side of a streamed upload: a [`Follower`] passing on how far the file has
/// got. Dropping it without [`Follower::done`] abandons the upload.
pub struct BlobFollower(mpsc::UnboundedSender<Event>);

impl Follower for BlobFollower {
    fn start(&mut self, file: File) {
        // A send fails only when the upload has already given up; the build goes on.
        let _ = self.0.send(Event::File(file));
    }
    fn written(&mut self, len: u64) {
        let _ = self.0.send(Event::Written(len));
    }
    fn done(&mut self, len: u64) {
        let _ = self.0.send(Event::Done(len));
    }
}

/// What the upload's progress looks like to the stall watch.
struct Watch {
    start: Instant,
    /// Milliseconds since `start` of the last time the HTTP stack asked for body bytes.
    last_poll: AtomicU64,
    /// The last ask found nothing new in the file: the upload waits on the writer, not stuck.
    starved: AtomicBool,
    /// The body has ended; only the answer is awaited.
    ended: AtomicBool,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            start: Instant::now(),
            last_poll: AtomicU64::new(0),
            starved: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        }
    }

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

/// The body of the upload: the blob's file, read from behind the writer in frames of at most
/// [`FRAME`] bytes.
struct FileBody {
    events: mpsc::UnboundedReceiver<Event>,
    file: Option<File>,
    /// Bytes sent so far.
    sent: u64,
    /// Bytes known to be in the file.
    available: u64,
    /// The blob's size, once it is complete.
    total: Option<u64>,
    /// The writer is gone.
    closed: bool,
    watch: Arc<Watch>,
}

impl FileBody {
    /// Takes every event already sent, registering for the next one.
    fn take_events(&mut self, cx: &mut Context<'_>) {
        while !self.closed {
            match self.events.poll_recv(cx) {
                Poll::Ready(Some(Event::File(f))) => self.file = Some(f),
                Poll::Ready(Some(Event::Written(n))) => self.available = n,
                Poll::Ready(Some(Event::Done(n))) => {
                    self.available = n;
                    self.total = Some(n);
                }
                Poll::Ready(None) => self.closed = true,
                Poll::Pending => break,
            }
        }
    }

    /// The next frame: up to [`FRAME`] bytes of the file from `sent` (a page-cache read of
    /// bytes the writer has just written).
    fn read_frame(&mut self) -> io::Result<Bytes> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("the layer writer reported bytes before its file"))?;
        let len = (self.available - self.sent).min(FRAME) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, self.sent)?;
        self.sent += len as u64;
        Ok(Bytes::from(buf))
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        this.take_events(cx);
        let w = this.watch.clone();
        w.last_poll.store(w.now_ms(), Ordering::Relaxed);
        w.starved.store(false, Ordering::Relaxed);
        if this.sent < this.available {
            return Poll::Ready(Some(this.read_frame().map(Frame::data)));
        }
        if this.total == Some(this.sent) {
            w.ended.store(true, Ordering::Relaxed);
            return Poll::Ready(None);
        }
        if this.closed {
            // The writer failed: abort rather than end the body as if it were whole.
            return Poll::Ready(Some(Err(io::Error::other("the layer was not completed"))));
        }
        w.starved.store(true, Ordering::Relaxed);
        Poll::Pending
    }
}

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
    let scope = Scope::push(&repo.path, &[]);
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
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
                .run(&client, &r, rx)
            });
            let _ = done_tx.send(sent);
        })
        .map_err(|e| Error::io("starting the upload thread for", repo.to_string(), e))?;
    Ok((
        StreamingUpload {
            client: c.clone(),
            repo: repo.clone(),
            scope,
            patch: done_rx,
        },
        BlobFollower(tx),
    ))
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
    /// Sends the followed file as the body of a `PATCH` to the session (no size is known yet:
    /// chunked transfer encoding, no `Content-Range`); returns the next session URL. Gives up
    /// when the registry stalls (see [`Watch::stuck`]).
    fn run(
        self,
        client: &Client,
        repo: &Repository,
        events: mpsc::UnboundedReceiver<Event>,
    ) -> Result<String> {
        let url = self.session.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the upload runtime for", &url, e))?;
        let watch = Arc::new(Watch::new());
        let body = FileBody {
            events,
            file: None,
            sent: 0,
            available: 0,
            total: None,
            closed: false,
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
        let (stall, answer) = (self.stall, self.answer);
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
            while !watch.stuck(stall, answer) {
                tokio::time::sleep(WATCH_EVERY).await;
            }
        };
        rt.block_on(first_of(exchange, watchdog))
            .unwrap_or_else(|| {
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
    use http_body::Body as _;
    use std::io::Write;

    /// A body following a file, and the follower feeding it.
    fn follow() -> (FileBody, BlobFollower) {
        let (tx, rx) = mpsc::unbounded_channel();
        let body = FileBody {
            events: rx,
            file: None,
            sent: 0,
            available: 0,
            total: None,
            closed: false,
            watch: Arc::new(Watch::new()),
        };
        (body, BlobFollower(tx))
    }

    /// Polls `body` once: `Some(Some(Ok(bytes)))` for a frame, `Some(None)` at its end, `None`
    /// when it waits.
    fn poll(body: &mut FileBody) -> Option<Option<io::Result<Bytes>>> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(f) => Some(f.map(|r| r.map(|f| f.into_data().unwrap_or_default()))),
            Poll::Pending => None,
        }
    }

    #[test]
    fn the_body_reads_only_what_the_writer_has_written() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(FRAME as usize * 2 + 5)).map(|i| i as u8).collect();
        let (mut body, mut follower) = follow();
        follower.start(file.try_clone().unwrap());
        assert!(poll(&mut body).is_none(), "nothing written yet: it waits");
        file.write_all(&data[..FRAME as usize + 3]).unwrap();
        follower.written(FRAME + 3);
        let mut got = Vec::new();
        while let Some(Some(frame)) = poll(&mut body) {
            let frame = frame.unwrap();
            assert!(frame.len() as u64 <= FRAME);
            got.extend_from_slice(&frame);
        }
        assert_eq!(
            got.len() as u64,
            FRAME + 3,
            "no byte beyond what was reported"
        );
        assert!(body.watch.starved.load(Ordering::Relaxed));
        file.write_all(&data[FRAME as usize + 3..]).unwrap();
        follower.done(data.len() as u64);
        loop {
            match poll(&mut body) {
                Some(Some(frame)) => got.extend_from_slice(&frame.unwrap()),
                Some(None) => break,
                None => panic!("a complete blob must not wait"),
            }
        }
        assert_eq!(got, data);
        assert!(body.watch.ended.load(Ordering::Relaxed));
    }

    #[test]
    fn an_abandoned_blob_fails_the_body_instead_of_ending_it() {
        let mut file = tempfile::tempfile().unwrap();
        let (mut body, mut follower) = follow();
        follower.start(file.try_clone().unwrap());
        file.write_all(b"partial").unwrap();
        follower.written(7);
        drop(follower);
        assert_eq!(&poll(&mut body).unwrap().unwrap().unwrap()[..], b"partial");
        assert!(matches!(poll(&mut body), Some(Some(Err(_)))));
    }

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
