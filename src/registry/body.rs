//! Request bodies read from blob files in 1 MiB frames, for reqwest's async client: a finished
//! blob (a push from disk), or a layer still being written, read from just behind its writer
//! (`build --push`). reqwest's blocking client would read a body in 8 KiB pieces, each handed to
//! its runtime thread: about 23,000 thread hand-offs for a 190 MB layer, and as many small reads
//! for the registry.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

use crate::digest::Digest;
use crate::layer::write::Follower;
use crate::registry::client::ByteProgress;

/// The most bytes sent as one frame of the body.
const FRAME: u64 = 1 << 20;

/// A followed file is sent in bursts of at least this many bytes (or what is left at its end):
/// the registry then reads full buffers instead of waking for every frame as it is written.
const BURST: u64 = 16 << 20;

/// What the layer writer tells the upload.
pub(crate) enum Event {
    /// The blob's file.
    File(File),
    /// This many bytes are in the file.
    Written(u64),
    /// The blob is complete at this size.
    Done(u64),
}

/// The layer writer's side of a streamed upload: a [`Follower`] passing on how far the file has
/// got. Dropping it without [`Follower::done`] abandons the upload.
pub struct BlobFollower(pub(crate) mpsc::UnboundedSender<Event>);

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
pub(crate) struct Watch {
    start: Instant,
    /// Milliseconds since `start` of the last time the HTTP stack asked for body bytes.
    last_poll: AtomicU64,
    /// The last ask found nothing new in the file: the upload waits on the writer, not stuck.
    starved: AtomicBool,
    /// The body has ended; only the answer is awaited.
    pub(crate) ended: AtomicBool,
}

impl Watch {
    /// A watch starting now, before the first ask for bytes.
    pub(crate) fn new() -> Watch {
        Watch {
            start: Instant::now(),
            last_poll: AtomicU64::new(0),
            starved: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        }
    }

    /// The HTTP stack asks for body bytes now (not starved until the body finds none).
    fn asked(&self) {
        self.last_poll.store(self.now_ms(), Ordering::Relaxed);
        self.starved.store(false, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// True when the registry has stopped taking bytes for `stall`, or has not answered a
    /// complete body within `answer`.
    pub(crate) fn stuck(&self, stall: Duration, answer: Duration) -> bool {
        let idle = Duration::from_millis(self.now_ms() - self.last_poll.load(Ordering::Relaxed));
        if self.ended.load(Ordering::Relaxed) {
            idle > answer
        } else {
            !self.starved.load(Ordering::Relaxed) && idle > stall
        }
    }
}

/// A request body read from a blob's file in frames of at most [`FRAME`] bytes: a whole range
/// of a finished file ([`FileBody::range`]), or a file still being written, followed from
/// behind its writer ([`FileBody::following`]).
pub(crate) struct FileBody {
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
    /// Where transfer progress goes: the sink, the blob's digest and its whole size.
    report: Option<(ByteProgress, Digest, u64)>,
    /// The smallest burst worth sending while the file grows.
    burst: u64,
    /// The end of the burst being sent.
    burst_end: u64,
}

impl FileBody {
    /// The body of a blob being written, fed by the [`BlobFollower`] that sends `events`.
    pub(crate) fn following(events: mpsc::UnboundedReceiver<Event>, watch: Arc<Watch>) -> FileBody {
        FileBody {
            events,
            file: None,
            sent: 0,
            available: 0,
            total: None,
            closed: false,
            watch,
            report: None,
            burst: BURST,
            burst_end: 0,
        }
    }

    /// The body of `len` bytes of a finished file from `offset`, reporting progress to
    /// `report` (sink, digest, whole size).
    pub(crate) fn range(
        file: File,
        offset: u64,
        len: u64,
        report: Option<(ByteProgress, Digest, u64)>,
    ) -> FileBody {
        let (_, events) = mpsc::unbounded_channel();
        FileBody {
            events,
            file: Some(file),
            sent: offset,
            available: offset + len,
            total: Some(offset + len),
            closed: true,
            watch: Arc::new(Watch::new()),
            report,
            burst: 0,
            burst_end: offset,
        }
    }

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
        crate::interrupt::check()?;
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("the layer writer reported bytes before its file"))?;
        let len = (self.burst_end - self.sent).min(FRAME) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, self.sent)?;
        self.sent += len as u64;
        if let Some((sink, digest, whole)) = &self.report {
            sink(digest, self.sent, *whole);
        }
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
        w.asked();
        let complete = this.total.is_some() || this.closed;
        if this.sent == this.burst_end && (complete || this.available - this.sent >= this.burst) {
            this.burst_end = this.available;
        }
        if this.sent < this.burst_end {
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

    fn size_hint(&self) -> http_body::SizeHint {
        // A known size goes out as Content-Length; a growing file with chunked encoding.
        match self.total {
            Some(t) => http_body::SizeHint::with_exact(t - self.sent),
            None => http_body::SizeHint::default(),
        }
    }
}

/// How many frames may wait between a [`PipeWriter`] and its upload before the writer blocks.
const PIPE_FRAMES: usize = 6;

/// A piped body is sent in bursts of at least this many bytes (or what is left at its end).
const PIPE_BURST: u64 = 4 << 20;

/// What a [`PipeWriter`] sends.
pub(crate) enum Piece {
    /// The next bytes of the blob.
    Data(Bytes),
    /// The blob is complete.
    End,
}

/// The writing end of an upload with no file behind it: bytes are buffered into 1 MiB frames
/// and handed to the upload, blocking while six frames wait (the
/// upload drops the pipe when the registry stalls, and the writes fail). [`PipeWriter::end`]
/// completes the blob; dropping the writer without it abandons the upload.
pub struct PipeWriter {
    tx: mpsc::Sender<Piece>,
    buf: Vec<u8>,
}

impl PipeWriter {
    /// A pipe and its receiving end.
    pub(crate) fn new() -> (PipeWriter, mpsc::Receiver<Piece>) {
        let (tx, rx) = mpsc::channel(PIPE_FRAMES);
        let buf = Vec::with_capacity(FRAME as usize);
        (PipeWriter { tx, buf }, rx)
    }

    fn send(&mut self, piece: Piece) -> io::Result<()> {
        self.tx.blocking_send(piece).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the streamed upload stopped or stalled",
            )
        })
    }

    /// Sends what is buffered and marks the blob complete.
    pub fn end(mut self) -> io::Result<()> {
        io::Write::flush(&mut self)?;
        self.send(Piece::End)
    }
}

impl io::Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(FRAME as usize - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == FRAME as usize {
            self.flush()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let frame = std::mem::replace(&mut self.buf, Vec::with_capacity(FRAME as usize));
        self.send(Piece::Data(Bytes::from(frame)))
    }
}

/// The body of an upload fed by a [`PipeWriter`], sent in bursts of [`PIPE_BURST`] bytes.
pub(crate) struct PipeBody {
    rx: mpsc::Receiver<Piece>,
    queue: std::collections::VecDeque<Bytes>,
    queued: u64,
    /// A burst is being sent: send until the queue is empty.
    bursting: bool,
    /// The writer said the blob is complete.
    ended: bool,
    /// The writer is gone.
    closed: bool,
    watch: Arc<Watch>,
}

impl PipeBody {
    /// The body reading `rx`, watched by `watch`.
    pub(crate) fn new(rx: mpsc::Receiver<Piece>, watch: Arc<Watch>) -> PipeBody {
        PipeBody {
            rx,
            queue: Default::default(),
            queued: 0,
            bursting: false,
            ended: false,
            closed: false,
            watch,
        }
    }
}

impl http_body::Body for PipeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        // Take what is waiting, up to a burst (the pipe's bound then holds the writer back).
        while !this.closed && this.queued < PIPE_BURST {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Piece::Data(b))) => {
                    this.queued += b.len() as u64;
                    this.queue.push_back(b);
                }
                Poll::Ready(Some(Piece::End)) => this.ended = true,
                Poll::Ready(None) => this.closed = true,
                Poll::Pending => break,
            }
        }
        let w = this.watch.clone();
        w.asked();
        if this.queued >= PIPE_BURST || this.ended || this.closed {
            this.bursting = true;
        }
        if this.bursting {
            if let Some(b) = this.queue.pop_front() {
                this.queued -= b.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            this.bursting = false;
        }
        if this.ended {
            w.ended.store(true, Ordering::Relaxed);
            return Poll::Ready(None);
        }
        if this.closed {
            return Poll::Ready(Some(Err(io::Error::other("the layer was not completed"))));
        }
        w.starved.store(true, Ordering::Relaxed);
        Poll::Pending
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
        (
            FileBody::following(rx, Arc::new(Watch::new())),
            BlobFollower(tx),
        )
    }

    /// Polls `body` once: `Some(Some(Ok(bytes)))` for a frame, `Some(None)` at its end, `None`
    /// when it waits.
    fn poll<B>(body: &mut B) -> Option<Option<io::Result<Bytes>>>
    where
        B: http_body::Body<Data = Bytes, Error = io::Error> + Unpin,
    {
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
        body.burst = 1;
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
    fn a_range_is_sent_whole_with_its_size_and_progress() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(FRAME as usize + 100)).map(|i| (i * 7) as u8).collect();
        file.write_all(&data).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink: ByteProgress =
            Arc::new(move |_, done, total| s.lock().unwrap().push((done, total)));
        let digest = Digest::of(&data);
        let mut body = FileBody::range(
            file,
            10,
            FRAME + 50,
            Some((sink, digest, data.len() as u64)),
        );
        assert_eq!(body.size_hint().exact(), Some(FRAME + 50));
        let mut got = Vec::new();
        while let Some(Some(frame)) = poll(&mut body) {
            got.extend_from_slice(&frame.unwrap());
        }
        assert_eq!(got, &data[10..10 + FRAME as usize + 50]);
        let total = data.len() as u64;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(10 + FRAME, total), (60 + FRAME, total)]
        );
    }

    #[test]
    fn a_growing_file_goes_out_in_bursts() {
        let mut file = tempfile::tempfile().unwrap();
        let (mut body, mut follower) = follow();
        follower.start(file.try_clone().unwrap());
        file.write_all(&vec![7u8; (BURST - 1) as usize]).unwrap();
        follower.written(BURST - 1);
        assert!(poll(&mut body).is_none(), "less than a burst waits");
        file.write_all(&[8u8; 2]).unwrap();
        follower.written(BURST + 1);
        let mut sent = 0;
        while let Some(Some(frame)) = poll(&mut body) {
            sent += frame.unwrap().len() as u64;
        }
        assert_eq!(sent, BURST + 1, "a burst takes everything written");
        file.write_all(&[9u8; 5]).unwrap();
        follower.done(BURST + 6);
        assert_eq!(
            poll(&mut body).unwrap().unwrap().unwrap().len(),
            5,
            "the end goes at once"
        );
        assert!(matches!(poll(&mut body), Some(None)));
    }

    #[test]
    fn a_pipe_goes_out_in_bursts_and_ends_only_when_told() {
        let (mut pipe, rx) = PipeWriter::new();
        let mut body = PipeBody::new(rx, Arc::new(Watch::new()));
        let mib = vec![1u8; FRAME as usize];
        for _ in 0..3 {
            pipe.write_all(&mib).unwrap();
        }
        assert!(poll(&mut body).is_none(), "less than a burst waits");
        pipe.write_all(&mib).unwrap();
        pipe.write_all(b"tail").unwrap();
        let mut sent = 0;
        while let Some(Some(frame)) = poll(&mut body) {
            sent += frame.unwrap().len();
        }
        assert_eq!(sent as u64, 4 * FRAME, "a burst takes every whole frame");
        pipe.end().unwrap();
        assert_eq!(&poll(&mut body).unwrap().unwrap().unwrap()[..], b"tail");
        assert!(matches!(poll(&mut body), Some(None)));
        assert!(body.watch.ended.load(Ordering::Relaxed));
    }

    #[test]
    fn a_dropped_pipe_fails_the_body() {
        let (mut pipe, rx) = PipeWriter::new();
        let mut body = PipeBody::new(rx, Arc::new(Watch::new()));
        pipe.write_all(b"partial").unwrap();
        pipe.flush().unwrap();
        drop(pipe);
        assert_eq!(&poll(&mut body).unwrap().unwrap().unwrap()[..], b"partial");
        assert!(matches!(poll(&mut body), Some(Some(Err(_)))));
    }
}
