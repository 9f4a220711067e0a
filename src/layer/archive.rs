//! Tarball sources: sniffs the compression from the content, checks every entry (no absolute
//! paths, no `..`, no links leading out, no hard links to missing entries) and lists the entries
//! re-rooted under the layer's destination, remembering where each file's bytes are.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::layer::entry::{Content, Entry, EntryKind, Owner};

/// How a tarball's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// An uncompressed tar.
    Plain,
    /// gzip (one or several members).
    Gzip,
    /// zstd.
    Zstd,
}

/// Looks at a file's first bytes: `Some(codec)` when it is a (possibly compressed) tar archive.
pub fn sniff(path: &Path) -> Result<Option<Codec>> {
    let mut head = [0u8; 512];
    let n =
        read_up_to(&mut File::open(path).at("opening", path)?, &mut head).at("reading", path)?;
    let codec = match head[..n] {
        [0x1f, 0x8b, ..] => Codec::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Codec::Zstd,
        _ if n == 512 && looks_like_tar(&head) => return Ok(Some(Codec::Plain)),
        _ => return Ok(None),
    };
    let mut inner = [0u8; 512];
    let m = read_up_to(&mut open(path, codec)?, &mut inner)
        .map_err(|e| bad(path, format!("cannot decompress: {e}")))?;
    if m == 512 && looks_like_tar(&inner) {
        Ok(Some(codec))
    } else {
        Err(bad(path, format!("{codec:?}-compressed, but the content is not a tar archive (use extract=false to copy it as a file)")))
    }
}

/// True when a 512-byte block is a tar header (ustar magic or a valid header checksum).
fn looks_like_tar(block: &[u8; 512]) -> bool {
    if &block[257..262] == b"ustar" {
        return true;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '));
    let Some(Ok(stored)) = stored.map(|s| u32::from_str_radix(s, 8)) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    sum == stored && block[0] != 0
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Opens a tarball as its decompressed tar stream.
pub fn open(path: &Path, codec: Codec) -> Result<Box<dyn Read + Send>> {
    let file = BufReader::with_capacity(1 << 16, File::open(path).at("opening", path)?);
    Ok(match codec {
        Codec::Plain => Box::new(file),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Codec::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(file).at("opening", path)?)
        }
    })
}

fn bad(archive: &Path, message: String) -> Error {
    Error::BadArchive {
        archive: archive.to_path_buf(),
        message,
    }
}

fn unsafe_entry(archive: &Path, entry: &str, reason: &'static str) -> Error {
    Error::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
        reason,
    }
}

/// A checked tarball source: where it is, how it is compressed, and where its tar stream can be
/// read by offset.
pub struct ArchivePlan {
    /// The tarball.
    pub path: PathBuf,
    /// Its compression.
    pub codec: Codec,
    /// For a compressed tarball, the tar stream decompressed while it was scanned: the checks
    /// and the layer writer read it by offset instead of decompressing again.
    spool: Option<tempfile::TempPath>,
}

impl ArchivePlan {
    /// The uncompressed tar stream, readable by offset: the tarball itself when it is plain,
    /// else its spooled copy.
    pub fn tar_path(&self) -> &Path {
        self.spool.as_deref().unwrap_or(&self.path)
    }
}

/// What the decompressing thread sends.
enum Piece {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// A tar stream decompressed on a thread of its own, so that decompressing overlaps listing
/// the entries and writing the spool. A thread that stops without saying the stream ended
/// is a failure, never a (truncated) end.
struct Decompressed {
    rx: crossbeam_channel::Receiver<Piece>,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Decompressed {
    /// Starts decompressing `stream`.
    fn start(stream: Box<dyn Read + Send>) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(4);
        std::thread::spawn(move || {
            let mut stream = crate::interrupt::Stoppable(stream);
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let piece = match read_up_to(&mut stream, &mut buf) {
                    Ok(0) => Piece::End,
                    Ok(n) => {
                        buf.truncate(n);
                        Piece::Data(buf)
                    }
                    Err(e) => Piece::Failed(e),
                };
                let last = !matches!(piece, Piece::Data(_));
                if tx.send(piece).is_err() || last {
                    return;
                }
            }
        });
        Decompressed {
            rx,
            buf: Vec::new(),
            pos: 0,
            ended: false,
        }
    }
}

impl Read for Decompressed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() && !self.ended {
            match self.rx.recv() {
                Ok(Piece::Data(b)) => (self.buf, self.pos) = (b, 0),
                Ok(Piece::End) => self.ended = true,
                Ok(Piece::Failed(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("the decompressing thread stopped")),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader that also writes everything it reads into a spool file; a failed write is kept
/// (the reader only sees that something failed) so that it can be reported as what it is.
struct Tee<R> {
    inner: R,
    spool: io::BufWriter<File>,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::interrupt::check()?;
        let n = self.inner.read(buf)?;
        if let Err(e) = io::Write::write_all(&mut self.spool, &buf[..n]) {
            self.failed = Some(e);
            return Err(io::Error::other(
                "the decompressed copy could not be written",
            ));
        }
        Ok(n)
    }
}

/// Lists and checks every entry of a tarball, re-rooted under `dest` after dropping `strip`
/// leading components, in archive order. A compressed tarball is decompressed once, here, into
/// a temporary file (see [`ArchivePlan::tar_path`]); nothing else is written.
pub fn scan(
    path: &Path,
    codec: Codec,
    dest: &[String],
    strip: usize,
    owner: Owner,
) -> Result<(Vec<Entry>, ArchivePlan)> {
    let plan = |spool| ArchivePlan {
        path: path.to_path_buf(),
        codec,
        spool,
    };
    if codec == Codec::Plain {
        let entries = scan_stream(&mut open(path, codec)?, path, dest, strip, owner)?;
        return Ok((entries, plan(None)));
    }
    let tmp = std::env::temp_dir();
    let spool = tempfile::Builder::new()
        .prefix("hoist-tar-")
        .tempfile_in(&tmp)
        .map_err(|e| {
            bad(
                path,
                format!("cannot decompress into {}: {e}", tmp.display()),
            )
        })?;
    let (file, spool) = spool.into_parts();
    let mut tee = Tee {
        inner: Decompressed::start(open(path, codec)?),
        spool: io::BufWriter::with_capacity(1 << 20, file),
        failed: None,
    };
    let scanned = scan_stream(&mut tee, path, dest, strip, owner);
    let written = match tee.failed.take() {
        Some(e) => Err(e),
        None => tee.spool.into_inner().map_err(|e| e.into_error()),
    };
    if let Err(e) = written {
        let message = format!("cannot decompress into {}: {e}", spool.display());
        return Err(bad(path, message));
    }
    Ok((scanned?, plan(Some(spool))))
}

/// [`scan`] of `stream`, the tar stream of the tarball at `path`, read to its end.
fn scan_stream(
    stream: &mut impl Read,
    path: &Path,
    dest: &[String],
    strip: usize,
    owner: Owner,
) -> Result<Vec<Entry>> {
    let mut archive = tar::Archive::new(stream);
    let mut entries: Vec<Entry> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut files: HashMap<Vec<String>, usize> = HashMap::new();
    let mut groups = 0u64;
    let iter = archive.entries().map_err(|e| bad(path, e.to_string()))?;
    for item in iter {
        let entry = item.map_err(|e| bad(path, format!("corrupt tar stream: {e}")))?;
        let header = entry.header();
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| bad(path, "entry name is not UTF-8".into()))?;
        let etype = header.entry_type();
        if matches!(
            etype,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let Some(rel) = archive_path(path, &name, strip)? else {
            continue;
        };
        let mut full = dest.to_vec();
        full.extend(rel.iter().cloned());
        let mode = header
            .mode()
            .map_err(|e| bad(path, format!("{name}: {e}")))?
            & 0o7777;
        let (kind, content, link_group) = match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                (
                    EntryKind::File { size },
                    Content::Archive(entry.raw_file_position()),
                    None,
                )
            }
            tar::EntryType::Directory => (EntryKind::Dir, Content::None, None),
            tar::EntryType::Symlink => {
                let target = link_text(path, &name, entry.link_name_bytes())?;
                check_symlink(path, &name, &rel, &target)?;
                (EntryKind::Symlink(target), Content::None, None)
            }
            tar::EntryType::Link => {
                let target = link_text(path, &name, entry.link_name_bytes())?;
                let Some(target_rel) = archive_path(path, &target, strip)? else {
                    return Err(unsafe_entry(
                        path,
                        &name,
                        "hard link to an entry removed by strip",
                    ));
                };
                let mut target_full = dest.to_vec();
                target_full.extend(target_rel);
                let Some(&idx) = files.get(&target_full) else {
                    return Err(unsafe_entry(
                        path,
                        &name,
                        "hard link to an entry that is not in the archive",
                    ));
                };
                let group = *entries[idx].link_group.get_or_insert_with(|| {
                    groups += 1;
                    groups
                });
                let (kind, content) = (entries[idx].kind.clone(), entries[idx].content.clone());
                (kind, content, Some(group))
            }
            tar::EntryType::GNUSparse => {
                return Err(unsafe_entry(path, &name, "sparse files are not supported"))
            }
            _ => {
                return Err(unsafe_entry(
                    path,
                    &name,
                    "device and fifo entries cannot be put in a layer",
                ))
            }
        };
        if matches!(kind, EntryKind::File { .. }) {
            files.insert(full.clone(), entries.len());
        }
        entries.push(Entry {
            path: full,
            kind,
            mode,
            owner,
            content,
            link_group,
        });
        names.push(name);
    }
    check_no_write_through_symlinks(path, &entries, &names)?;
    // Whatever the tar reader left unread (end blocks, padding) is read too, so that a spool
    // holds the whole stream.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|e| bad(path, format!("decompressing: {e}")))?;
    Ok(entries)
}

fn link_text(
    archive: &Path,
    name: &str,
    raw: Option<std::borrow::Cow<'_, [u8]>>,
) -> Result<String> {
    let raw = raw.ok_or_else(|| unsafe_entry(archive, name, "link without a target"))?;
    String::from_utf8(raw.into_owned())
        .map_err(|_| unsafe_entry(archive, name, "link target is not UTF-8"))
}

/// Normalises an archive path: `./` and empty components dropped, absolute paths and `..`
/// refused, `strip` leading components removed (`None` when nothing remains).
fn archive_path(archive: &Path, name: &str, strip: usize) -> Result<Option<Vec<String>>> {
    if name.starts_with('/') {
        return Err(unsafe_entry(archive, name, "absolute path"));
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(unsafe_entry(archive, name, "path contains '..'")),
            c => parts.push(c.to_string()),
        }
    }
    if parts.len() <= strip {
        return Ok(None);
    }
    Ok(Some(parts.split_off(strip)))
}

/// Refuses symlinks whose target is absolute or climbs above the destination.
fn check_symlink(archive: &Path, name: &str, rel: &[String], target: &str) -> Result<()> {
    if target.starts_with('/') {
        return Err(unsafe_entry(
            archive,
            name,
            "symlink to an absolute path points outside the destination",
        ));
    }
    let mut depth = rel.len() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return Err(unsafe_entry(
                archive,
                name,
                "symlink points outside the destination",
            ));
        }
    }
    Ok(())
}

/// Refuses entries that an extractor would write through a symlink of the same archive.
fn check_no_write_through_symlinks(
    archive: &Path,
    entries: &[Entry],
    names: &[String],
) -> Result<()> {
    let links: HashSet<&[String]> = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Symlink(_)))
        .map(|e| e.path.as_slice())
        .collect();
    if links.is_empty() {
        return Ok(());
    }
    for (e, name) in entries.iter().zip(names) {
        if (1..e.path.len()).any(|n| links.contains(&e.path[..n])) {
            return Err(unsafe_entry(
                archive,
                name,
                "would be written through a symlink",
            ));
        }
    }
    Ok(())
}

/// Reads file bytes of a tarball by offset (from its uncompressed tar stream).
pub struct ArchiveReader {
    tar: File,
}

impl ArchiveReader {
    /// Opens `plan`'s tar stream.
    pub fn new(plan: &ArchivePlan) -> Result<Self> {
        let path = plan.tar_path();
        Ok(ArchiveReader {
            tar: File::open(path).at("opening", path)?,
        })
    }

    /// A reader of `size` bytes at `offset` of the uncompressed tar stream.
    pub fn at(&mut self, offset: u64, size: u64) -> io::Result<impl Read + '_> {
        self.tar.seek(SeekFrom::Start(offset))?;
        Ok((&mut self.tar).take(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_tarball_is_decompressed_once_into_a_spool() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("t.tar.gz");
        let gz =
            flate2::write::GzEncoder::new(File::create(&tgz).unwrap(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, body) in [("top/a", &b"alpha"[..]), ("top/b", &b"bravo!"[..])] {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, body).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        let codec = sniff(&tgz).unwrap().unwrap();
        assert_eq!(codec, Codec::Gzip);
        let (entries, plan) = scan(&tgz, codec, &["app".into()], 1, Owner::default()).unwrap();
        let spool = plan.tar_path().to_path_buf();
        assert_ne!(spool, tgz);
        let mut reader = ArchiveReader::new(&plan).unwrap();
        let mut found = Vec::new();
        for e in &entries {
            if let (EntryKind::File { size }, Content::Archive(off)) = (&e.kind, &e.content) {
                let mut body = String::new();
                reader
                    .at(*off, *size)
                    .unwrap()
                    .read_to_string(&mut body)
                    .unwrap();
                found.push((e.path.join("/"), body));
            }
        }
        assert_eq!(
            found,
            [
                ("app/a".into(), "alpha".into()),
                ("app/b".into(), "bravo!".into())
            ]
        );
        drop(reader);
        drop(plan);
        assert!(!spool.exists(), "the spool goes with the plan");
    }

    #[test]
    fn decompressing_thread_failures_are_errors_not_ends() {
        struct Breaks(usize);
        impl Read for Breaks {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("corrupt deflate stream"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut whole = Vec::new();
        let mut d = Decompressed::start(Box::new(io::repeat(1).take(3 << 20)));
        d.read_to_end(&mut whole).unwrap();
        assert_eq!(whole.len(), 3 << 20);
        let mut partial = Vec::new();
        let e = Decompressed::start(Box::new(Breaks(1 << 20)))
            .read_to_end(&mut partial)
            .unwrap_err();
        assert!(e.to_string().contains("corrupt deflate stream"), "{e}");
    }

    #[test]
    fn archive_path_table() {
        let p = Path::new("t.tar");
        assert_eq!(
            archive_path(p, "./a/b", 0).unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(archive_path(p, "top/a", 1).unwrap(), Some(vec!["a".into()]));
        assert_eq!(archive_path(p, "top/", 1).unwrap(), None);
        assert!(matches!(
            archive_path(p, "/etc/passwd", 0),
            Err(Error::UnsafeEntry { .. })
        ));
        assert!(matches!(
            archive_path(p, "a/../../x", 0),
            Err(Error::UnsafeEntry { .. })
        ));
    }

    #[test]
    fn symlink_table() {
        let p = Path::new("t.tar");
        let rel = |s: &str| s.split('/').map(str::to_string).collect::<Vec<_>>();
        assert!(check_symlink(p, "n", &rel("a/b/l"), "../c").is_ok());
        assert!(check_symlink(p, "n", &rel("a/l"), "../c").is_ok());
        assert!(check_symlink(p, "n", &rel("l"), "../c").is_err());
        assert!(check_symlink(p, "n", &rel("a/l"), "/etc").is_err());
        assert!(check_symlink(p, "n", &rel("a/l"), "x/../../../y").is_err());
    }
}
