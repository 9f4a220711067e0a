//! Stopping on SIGINT or SIGTERM without leaving temporary files behind. The binary's signal
//! handler calls [`request`]; every loop that moves bytes (reading layer sources, decompressing
//! a tarball, downloading and uploading blobs) calls [`check`], which turns the request into an
//! I/O error. The work then unwinds like any other failure, and each temporary file (a layer
//! being written, a tarball's decompressed copy, the staging layout of a push) is removed by
//! its owner on the way out.

use std::io::{self, Read};
use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked to stop, 0 while none has.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Asks running work to stop because of signal `sig`. Async-signal-safe: one atomic store.
pub fn request(sig: i32) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// The signal that asked to stop, if one has.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        sig => Some(sig),
    }
}

/// An error once a stop has been requested (not [`io::ErrorKind::Interrupted`], which I/O
/// loops retry).
pub fn check() -> io::Result<()> {
    match requested() {
        None => Ok(()),
        Some(sig) => Err(io::Error::other(format!("interrupted by signal {sig}"))),
    }
}

/// A reader that fails once a stop has been requested.
pub struct Stoppable<R>(pub R);

impl<R: Read> Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        check()?;
        self.0.read(buf)
    }
}
