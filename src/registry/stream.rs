//! Uploading a blob while it is being produced: the layer writer tees its compressed bytes into
//! a pipe, and one `PATCH` streams them to the registry (chunked transfer encoding) as they come;
//! once the digest is known, `PUT ?digest=` commits it. This is how `build --push` overlaps
//! compression with the upload. Any failure here is not final: the caller pushes the finished
//! blob from disk the usual way (which starts with a `HEAD`).

use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use reqwest::blocking::Body;
use reqwest::header::CONTENT_TYPE;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::registry::auth::Scope;
use crate::registry::client::{status_error, Client};
use crate::registry::name::Repository;
use crate::registry::write::{commit_upload, initiate_upload, location};

/// Chunks in flight between the writer and the upload (each one write of the layer writer,
/// about one compressed 1 MiB block).
const PIPE_DEPTH: usize = 16;

/// How long the layer writer waits for a stalled upload to take more bytes before it drops the
/// stream (the build goes on; the blob is pushed from disk afterwards).
const STALL: Duration = Duration::from_secs(30);

/// The writing end of the pipe; dropping it ends the upload's body.
pub struct PipeWriter(Sender<Vec<u8>>);

/// The reading end of the pipe, the body of the upload.
struct PipeReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_timeout(buf.to_vec(), STALL).map_err(|_| {
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

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
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
/// pipe into it.
pub fn start(c: &Client, repo: &Repository) -> Result<(StreamingUpload, PipeWriter)> {
    let scope = Scope::push(&repo.path, &[]);
    let session = initiate_upload(c, repo, &scope)?;
    let (tx, rx) = bounded::<Vec<u8>>(PIPE_DEPTH);
    let reader = Mutex::new(Some(PipeReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
    }));
    let (client, r, s) = (c.clone(), repo.clone(), scope.clone());
    let (done_tx, done_rx) = bounded::<Result<String>>(1);
    std::thread::spawn(move || {
        let _ = done_tx.send(patch(&client, &r, &s, &session, reader));
    });
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

/// PATCH `session` with the pipe as a body of unknown length; returns the next session URL.
fn patch(
    client: &Client,
    r: &Repository,
    s: &Scope,
    session: &str,
    reader: Mutex<Option<PipeReader>>,
) -> Result<String> {
    // No size is known: the body is sent with chunked transfer encoding, no Content-Range.
    let resp = client.send(
        r,
        s,
        "PATCH",
        session,
        Duration::from_secs(24 * 3600),
        &|req| {
            let body = reader
                .lock()
                .ok()
                .and_then(|mut g| g.take())
                .ok_or_else(|| Error::BadResponse {
                    url: session.to_string(),
                    reason: "the registry asked to resend a streamed body".into(),
                })?;
            Ok(req
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(Body::new(body)))
        },
    )?;
    match resp.status().as_u16() {
        200..=299 => location(client, r, session, &resp),
        st => Err(status_error("PATCH", session, st, resp)),
    }
}

impl StreamingUpload {
    /// Waits (a bounded time) for the streamed body to be accepted — the pipe must be closed
    /// first — and commits the blob under `digest`.
    pub fn finish(self, digest: &Digest) -> Result<()> {
        let session = self
            .patch
            .recv_timeout(self.client.doc_timeout())
            .map_err(|_| Error::BadResponse {
                url: self.repo.to_string(),
                reason: "no answer to the streamed upload".into(),
            })??;
        commit_upload(&self.client, &self.repo, &self.scope, &session, digest)
    }
}
