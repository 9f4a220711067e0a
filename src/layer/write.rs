//! The one streaming pass that turns a [`LayerPlan`] into a blob: tar → sha256 (diff_id) →
//! compressor → sha256 (digest) + byte count → temp file in the blob directory → rename.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::layer::archive::ArchiveReader;
use crate::layer::compress::ParallelGzip;
use crate::layer::entry::{Content, Entry, EntryKind};
use crate::layer::plan::LayerPlan;
use crate::layout::Writeback;
use crate::media;

/// How a layer's tar stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Parallel gzip (libdeflate, 1 MiB blocks, one gzip member each) at a level from 1 to 12.
    Gzip(u32),
    /// Single-member gzip from one thread (flate2), level 1 to 9, for first-member-only readers.
    GzipSingle(u32),
    /// zstd at a level from 1 to 19, multi-threaded (same bytes whatever the thread count).
    Zstd(i32),
    /// No compression.
    None,
}

/// The default parallel gzip level: libdeflate's 4 compresses real binaries about as well as
/// zlib's 6 in two thirds of the time (see BENCH.md).
pub const DEFAULT_GZIP_LEVEL: u32 = 4;

/// Bytes of input per zstd worker job.
const ZSTD_JOB_SIZE: u32 = 2 << 20;

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip(DEFAULT_GZIP_LEVEL)
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidValue {
            what: "compression",
            value: s.into(),
            reason: "expected gzip[:1-12], gzip-single[:1-9], zstd[:1-19] or none",
        };
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l.parse::<i32>().map_err(|_| bad())?)),
            None => (s, None),
        };
        match (name, level) {
            ("gzip", None) => Ok(Compression::Gzip(DEFAULT_GZIP_LEVEL)),
            ("gzip", Some(l @ 1..=12)) => Ok(Compression::Gzip(l as u32)),
            ("gzip-single", None) => Ok(Compression::GzipSingle(6)),
            ("gzip-single", Some(l @ 1..=9)) => Ok(Compression::GzipSingle(l as u32)),
            ("zstd", None) => Ok(Compression::Zstd(3)),
            ("zstd", Some(l @ 1..=19)) => Ok(Compression::Zstd(l)),
            ("none", None) => Ok(Compression::None),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::Gzip(l) => write!(f, "gzip:{l}"),
            Compression::GzipSingle(l) => write!(f, "gzip-single:{l}"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
            Compression::None => f.write_str("none"),
        }
    }
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::Gzip(_) | Compression::GzipSingle(_) => media::OCI_LAYER_GZIP,
            Compression::Zstd(_) => media::OCI_LAYER_ZSTD,
            Compression::None => media::OCI_LAYER_TAR,
        }
    }
}

/// How a layer is written: what goes into the tar headers and how it is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Modification time written for every entry (`SOURCE_DATE_EPOCH`, else 0).
    pub mtime: u64,
    /// The compressor.
    pub compression: Compression,
    /// Compression threads (the output does not depend on it).
    pub threads: usize,
}

/// A layer written to a blob directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// sha256 of the compressed blob.
    pub digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// The layer media type.
    pub media_type: &'static str,
    /// Where the blob now lives.
    pub path: PathBuf,
}

/// Writes the layer of `plan` into `blob_dir` (a layout's `blobs/sha256`), named by its digest.
/// The blob appears whole or not at all.
pub fn write_layer(plan: &LayerPlan, opts: WriteOptions, blob_dir: &Path) -> Result<LayerBlob> {
    write_layer_followed(plan, opts, blob_dir, None)
}

/// Told how far a blob being written has reached its file, so that another thread can read the
/// blob behind the writer (a streamed upload) without ever slowing it down.
pub trait Follower: Send {
    /// The blob's file, opened before its first byte is written (read it with `read_at`: the
    /// writer owns the file position).
    fn start(&mut self, file: File);
    /// The first `len` bytes of the blob are in the file.
    fn written(&mut self, len: u64);
    /// The blob is complete at `len` bytes. Not called when writing fails: a follower dropped
    /// without it must treat the blob as abandoned.
    fn done(&mut self, len: u64);
}

/// [`write_layer`], telling `follower` how far the file has got as it is written.
pub fn write_layer_followed(
    plan: &LayerPlan,
    opts: WriteOptions,
    blob_dir: &Path,
    mut follower: Option<Box<dyn Follower>>,
) -> Result<LayerBlob> {
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-layer-")
        .tempfile_in(blob_dir)
        .at("creating a temp file in", blob_dir)?;
    let file = tmp.as_file().try_clone().at("opening", tmp.path())?;
    if let Some(f) = &mut follower {
        f.start(tmp.as_file().try_clone().at("opening", tmp.path())?);
    }
    let followed = FollowedFile {
        file: BufWriter::with_capacity(1 << 20, Writeback::new(file)),
        given: 0,
        reported: 0,
        follower,
    };
    let out_err = |e| Error::io("writing", tmp.path(), e);
    let (followed, diff_id, digest, size) = compress(plan, opts, followed, tmp.path())?;
    let FollowedFile { file, follower, .. } = followed;
    file.into_inner().map_err(|e| out_err(e.into_error()))?;
    if let Some(mut f) = follower {
        f.done(size);
    }
    let path = blob_dir.join(digest.hex());
    crate::layout::persist(tmp, &path)?;
    Ok(LayerBlob {
        digest,
        diff_id,
        size,
        media_type: opts.compression.media_type(),
        path,
    })
}

/// The layer of `plan` compressed into `out`, nothing written anywhere else: for an upload
/// that needs no local copy. Returns `out` (flushed), the diff_id, the digest and the size. A
/// failing `out` fails it.
pub fn stream_layer<W: Write + Send + 'static>(
    plan: &LayerPlan,
    opts: WriteOptions,
    out: W,
) -> Result<(W, Digest, Digest, u64)> {
    compress(plan, opts, out, &plan.spec.src)
}

/// The one pass: `plan`'s tar stream, hashed (diff_id), compressed, hashed again (digest) and
/// counted into `out`, which is returned flushed. `what` names the output in errors.
fn compress<W: Write + Send + 'static>(
    plan: &LayerPlan,
    opts: WriteOptions,
    out: W,
    what: &Path,
) -> Result<(W, Digest, Digest, u64)> {
    let tar_sink = HashingWriter::new(
        Encoder::new(opts.compression, HashingWriter::new(out), opts.threads)
            .at("starting compression for", what)?,
    );
    let mut builder = tar::Builder::new(tar_sink);
    append_all(&mut builder, plan, opts.mtime)?;
    let out_err = |e| Error::io("writing", what, e);
    let tar_sink = builder.into_inner().map_err(out_err)?;
    let (encoder, diff_id, _) = tar_sink.finish();
    let sink = encoder.finish().map_err(out_err)?;
    let (mut out, digest, size) = sink.finish();
    out.flush().map_err(out_err)?;
    Ok((out, diff_id, digest, size))
}

/// A buffered file that reports to a [`Follower`] whenever its buffer reaches the file.
struct FollowedFile {
    file: BufWriter<Writeback<File>>,
    /// Bytes given to the buffer.
    given: u64,
    /// Bytes last reported as in the file.
    reported: u64,
    follower: Option<Box<dyn Follower>>,
}

impl FollowedFile {
    fn report(&mut self) {
        let in_file = self.given - self.file.buffer().len() as u64;
        if in_file > self.reported {
            self.reported = in_file;
            if let Some(f) = &mut self.follower {
                f.written(in_file);
            }
        }
    }
}

impl Write for FollowedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.given += n as u64;
        self.report();
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.report();
        Ok(())
    }
}

/// The diff_id `plan`'s layer will have: its tar stream hashed, not compressed or written.
/// Reads every source byte (as a build would), but costs no compression.
pub fn diff_id(plan: &LayerPlan, mtime: u64) -> Result<Digest> {
    let mut builder = tar::Builder::new(HashingWriter::new(io::sink()));
    append_all(&mut builder, plan, mtime)?;
    let sink = builder
        .into_inner()
        .map_err(|e| Error::io("hashing the layer of", &plan.spec.src, e))?;
    let (_, digest, _) = sink.finish();
    Ok(digest)
}

/// Writes every entry of `plan` into `builder`.
fn append_all<W: Write>(builder: &mut tar::Builder<W>, plan: &LayerPlan, mtime: u64) -> Result<()> {
    let mut archive = match &plan.archive {
        Some(a) => Some(ArchiveReader::new(a)?),
        None => None,
    };
    for entry in &plan.entries {
        append(builder, entry, mtime, archive.as_mut(), plan)?;
    }
    Ok(())
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &Entry,
    mtime: u64,
    archive: Option<&mut ArchiveReader>,
    plan: &LayerPlan,
) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_mode(entry.mode);
    header.set_uid(entry.owner.uid);
    header.set_gid(entry.owner.gid);
    header.set_mtime(mtime);
    header.set_size(0);
    let path = entry.tar_path();
    let out = |e: io::Error| Error::io("writing layer entry", PathBuf::from(&path), e);
    match (&entry.kind, &entry.content) {
        (EntryKind::Dir, _) => {
            header.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut header, &path, io::empty())
                .map_err(out)
        }
        (EntryKind::Symlink(target), _) => {
            header.set_entry_type(tar::EntryType::Symlink);
            builder.append_link(&mut header, &path, target).map_err(out)
        }
        (EntryKind::Hardlink(target), _) => {
            header.set_entry_type(tar::EntryType::Link);
            builder.append_link(&mut header, &path, target).map_err(out)
        }
        (EntryKind::File { size }, content) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(*size);
            let (src, reader): (&Path, Box<dyn Read + '_>) = match (content, archive) {
                (Content::File(src), _) => (src, Box::new(File::open(src).at("opening", src)?)),
                (Content::Bytes(bytes), _) => (&plan.spec.src, Box::new(&bytes[..])),
                (Content::Archive(offset), Some(archive)) => (
                    &plan.spec.src,
                    Box::new(archive.at(*offset, *size).at("reading", &plan.spec.src)?),
                ),
                _ => {
                    return Err(Error::BadArchive {
                        archive: plan.spec.src.clone(),
                        message: format!("{path}: no content"),
                    })
                }
            };
            let reader = ExactReader {
                inner: reader,
                remaining: *size,
                path: src.to_path_buf(),
            };
            builder
                .append_data(&mut header, &path, reader)
                .map_err(|e| Error::io("reading", src, e))
        }
    }
}

/// Yields exactly `remaining` bytes, failing if the source ends early or has grown: a file that
/// changes while it is read must not produce a corrupt tar.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    path: PathBuf,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::interrupt::check()?;
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "{} grew while it was being read",
                    self.path.display()
                ))),
            };
        }
        let cap = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was being read", self.path.display()),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The compressor stage of the pipeline.
enum Encoder<W: Write + Send + 'static> {
    Gzip(ParallelGzip<W>),
    GzipSingle(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Plain(W),
}

impl<W: Write + Send + 'static> Encoder<W> {
    fn new(c: Compression, w: W, threads: usize) -> io::Result<Self> {
        Ok(match c {
            Compression::Gzip(level) => Encoder::Gzip(ParallelGzip::new(w, level, threads)?),
            Compression::GzipSingle(level) => Encoder::GzipSingle(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(w, flate2::Compression::new(level)),
            ),
            Compression::Zstd(level) => {
                let mut enc = zstd::stream::write::Encoder::new(w, level)?;
                enc.include_checksum(true)?;
                // nbWorkers >= 1 gives the same frames whatever the count.
                enc.multithread(threads.max(1) as u32)?;
                // Smaller jobs bound memory (the default, 4x the window, costs ~70 MiB at -3).
                enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                Encoder::Zstd(enc)
            }
            Compression::None => Encoder::Plain(w),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::GzipSingle(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write + Send + 'static> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::GzipSingle(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::GzipSingle(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_id_matches_the_written_layer() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), b"hello").unwrap();
        let plan = LayerPlan::new(&crate::layer::LayerSpec::new(&src, "/app")).unwrap();
        let opts = WriteOptions {
            mtime: 7,
            compression: Compression::Gzip(1),
            threads: 2,
        };
        let blob = write_layer(&plan, opts, t.path()).unwrap();
        assert_eq!(diff_id(&plan, 7).unwrap(), blob.diff_id);
    }

    #[test]
    fn compression_table() {
        assert_eq!(
            "gzip".parse::<Compression>().unwrap(),
            Compression::Gzip(DEFAULT_GZIP_LEVEL)
        );
        assert_eq!(
            "gzip:12".parse::<Compression>().unwrap(),
            Compression::Gzip(12)
        );
        assert_eq!(
            "gzip-single".parse::<Compression>().unwrap(),
            Compression::GzipSingle(6)
        );
        assert_eq!(
            "gzip:1".parse::<Compression>().unwrap(),
            Compression::Gzip(1)
        );
        assert_eq!(
            "zstd:19".parse::<Compression>().unwrap(),
            Compression::Zstd(19)
        );
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        for bad in [
            "gzip:0",
            "gzip:13",
            "gzip-single:10",
            "zstd:x",
            "lz4",
            "none:1",
        ] {
            assert!(
                matches!(bad.parse::<Compression>(), Err(Error::InvalidValue { .. })),
                "{bad}"
            );
        }
    }
}
