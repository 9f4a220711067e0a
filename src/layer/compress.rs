//! The compressor stage of the layer pipeline. gzip by default is **parallel**: the tar stream is
//! cut into fixed 1 MiB blocks, each compressed by libdeflate into its own gzip member on a pool
//! of worker threads, and a writer thread puts the members in order (the way pigz `--independent`
//! and eStargz do). The bytes depend only on the input, the level and the block size, never on
//! the thread count or timing. Readers that stop after the first gzip member (flate2's plain
//! `GzDecoder`) need `gzip-single`, one member from one thread.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

/// Size of the blocks compressed independently by parallel gzip.
pub const BLOCK_SIZE: usize = 1 << 20;

/// How many threads compress: `HOIST_THREADS` when set, else the machine's cores.
pub fn default_threads() -> usize {
    std::env::var("HOIST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A block to compress: its sequence number and bytes.
type Job = (u64, Vec<u8>);
/// A compressed block: its sequence number and a buffer whose first `n` bytes are the member.
type Done = (u64, io::Result<(Vec<u8>, usize)>);

/// Buffers handed back for reuse, so that blocks and members do not each allocate (and zero)
/// fresh memory: input blocks from the workers back to the thread that fills them, member
/// buffers from the in-order writer back to the workers.
#[derive(Clone)]
struct Spares {
    blocks: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    members: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
}

impl Spares {
    fn new(keep: usize) -> Self {
        Spares {
            blocks: bounded(keep),
            members: bounded(keep),
        }
    }
}

/// A writer that gzips in parallel into concatenated members and writes them, in order, to `W`.
pub struct ParallelGzip<W: Write + Send + 'static> {
    block: Vec<u8>,
    seq: u64,
    spares: Spares,
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParallelGzip<W> {
    /// Starts `threads` workers compressing at libdeflate `level` (1–12) into `out`.
    pub fn new(out: W, level: u32, threads: usize) -> io::Result<Self> {
        let lvl = libdeflater::CompressionLvl::new(level as i32).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gzip level {level} is out of range"),
            )
        })?;
        let threads = threads.max(1);
        let (job_tx, job_rx) = bounded::<Job>(threads * 2);
        let (done_tx, done_rx) = bounded::<Done>(threads * 2);
        let spares = Spares::new(threads * 2 + 2);
        let workers = (0..threads)
            .map(|_| {
                let (rx, tx, sp) = (job_rx.clone(), done_tx.clone(), spares.clone());
                std::thread::spawn(move || compress_blocks(lvl, rx, tx, sp))
            })
            .collect();
        let sp = spares.clone();
        let writer = std::thread::spawn(move || write_in_order(out, done_rx, sp));
        Ok(ParallelGzip {
            block: Vec::with_capacity(BLOCK_SIZE),
            seq: 0,
            spares,
            jobs: Some(job_tx),
            workers,
            writer: Some(writer),
        })
    }

    fn dispatch(&mut self) -> io::Result<()> {
        let next = match self.spares.blocks.1.try_recv() {
            Ok(mut spare) => {
                spare.clear();
                spare
            }
            Err(_) => Vec::with_capacity(BLOCK_SIZE),
        };
        let block = std::mem::replace(&mut self.block, next);
        let sent = self
            .jobs
            .as_ref()
            .map(|tx| tx.send((self.seq, block)).is_ok())
            .unwrap_or(false);
        self.seq += 1;
        if sent {
            Ok(())
        } else {
            // The writer stopped (an I/O error): finish() reports it.
            Err(self
                .shutdown()
                .err()
                .unwrap_or_else(|| io::Error::other("compression pipeline stopped")))
        }
    }

    fn shutdown(&mut self) -> io::Result<W> {
        self.jobs = None;
        for w in self.workers.drain(..) {
            w.join()
                .map_err(|_| io::Error::other("a compression thread panicked"))?;
        }
        match self.writer.take() {
            Some(w) => w
                .join()
                .map_err(|_| io::Error::other("the writer thread panicked"))?,
            None => Err(io::Error::other("compression pipeline already finished")),
        }
    }

    /// Compresses what is buffered, waits for every member to be written, returns `W`.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.block.is_empty() || self.seq == 0 {
            self.dispatch()?;
        }
        self.shutdown()
    }
}

impl<W: Write + Send + 'static> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            self.dispatch()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.shutdown();
        }
    }
}

fn compress_blocks(
    level: libdeflater::CompressionLvl,
    jobs: Receiver<Job>,
    done: Sender<Done>,
    spares: Spares,
) {
    let mut c = libdeflater::Compressor::new(level);
    for (seq, block) in jobs {
        let mut out = spares.members.1.try_recv().unwrap_or_default();
        // A reused buffer keeps its length: only growth is zeroed.
        let bound = c.gzip_compress_bound(block.len());
        if out.len() < bound {
            out.resize(bound, 0);
        }
        let result = c.gzip_compress(&block, &mut out).map(|n| (out, n));
        let _ = spares.blocks.0.try_send(block);
        if done
            .send((
                seq,
                result.map_err(|e| io::Error::other(format!("gzip: {e:?}"))),
            ))
            .is_err()
        {
            return;
        }
    }
}

fn write_in_order<W: Write>(mut out: W, done: Receiver<Done>, spares: Spares) -> io::Result<W> {
    let mut next = 0u64;
    let mut pending: BTreeMap<u64, (Vec<u8>, usize)> = BTreeMap::new();
    for (seq, result) in done {
        pending.insert(seq, result?);
        while let Some((member, n)) = pending.remove(&next) {
            out.write_all(&member[..n])?;
            let _ = spares.members.0.try_send(member);
            next += 1;
        }
    }
    if !pending.is_empty() {
        return Err(io::Error::other("a compressed block went missing"));
    }
    out.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // Text-like, compressible, not periodic at the block size.
        (0..n)
            .map(|i| {
                b"the quick brown fox jumps over the lazy dog 0123456789\n"[(i * 7 + i / 1000) % 55]
            })
            .collect()
    }

    fn gz(data: &[u8], threads: usize) -> Vec<u8> {
        let mut w = ParallelGzip::new(Vec::new(), 6, threads).unwrap();
        for chunk in data.chunks(8191) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn same_bytes_whatever_the_thread_count() {
        let data = sample(3 * BLOCK_SIZE + 12345);
        let one = gz(&data, 1);
        assert_eq!(one, gz(&data, 2));
        assert_eq!(one, gz(&data, 5));
    }

    #[test]
    fn multi_member_reads_back_whole() {
        let data = sample(2 * BLOCK_SIZE + 7);
        let z = gz(&data, 3);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // A first-member-only reader sees one block: the reason gzip-single exists.
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut first)
            .unwrap();
        assert_eq!(first.len(), BLOCK_SIZE);
    }

    #[test]
    fn empty_input_is_one_valid_member() {
        let z = gz(&[], 2);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn write_errors_surface() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = ParallelGzip::new(Full, 6, 2).unwrap();
        let data = sample(8 * BLOCK_SIZE);
        let r = w.write_all(&data).and_then(|_| w.finish().map(|_| ()));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::StorageFull);
    }
}
