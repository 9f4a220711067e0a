//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/…`): reading images out of
//! them, and writing blobs and tags into them atomically (temp file + rename, `index.json` last,
//! under an exclusive lock on the layout directory).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{
    canonical_json, parse_json, Descriptor, Index, Manifest, Platform, ANNOTATION_REF_NAME,
};
use crate::media;

/// Largest manifest, index or config hoist will read into memory.
pub const MAX_DOCUMENT_SIZE: u64 = 8 << 20;

const OCI_LAYOUT_FILE: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

/// An exclusive lock on a layout, held while it is written.
pub struct LayoutLock {
    _dir: File,
}

impl Layout {
    /// Opens an existing layout (its `oci-layout` and `index.json` must exist).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::NotALayout {
                path: root,
                reason: "no such directory".into(),
            });
        }
        for f in [OCI_LAYOUT_FILE, "index.json"] {
            if !root.join(f).is_file() {
                return Err(Error::NotALayout {
                    reason: format!("{f} is missing"),
                    path: root,
                });
            }
        }
        Ok(Layout { root })
    }

    /// Opens a layout for writing, creating it when the directory is missing or empty. A
    /// non-empty directory that is not a layout is refused rather than written into.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if root.join(OCI_LAYOUT_FILE).is_file() {
            let layout = Layout { root };
            fs::create_dir_all(layout.blob_dir()).at("creating", &layout.blob_dir())?;
            return Ok(layout);
        }
        if root.exists() {
            let mut it = fs::read_dir(&root).at("listing", &root)?;
            if it.next().is_some() {
                return Err(Error::NotALayout { path: root, reason: "the directory is not empty and has no oci-layout file; refusing to write into it".into() });
            }
        }
        let layout = Layout { root };
        fs::create_dir_all(layout.blob_dir()).at("creating", &layout.blob_dir())?;
        write_atomic(&layout.root.join(OCI_LAYOUT_FILE), OCI_LAYOUT_CONTENT)?;
        Ok(layout)
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `blobs/sha256` of this layout.
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// The path of a blob (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    /// Takes the layout's write lock (blocks while another writer holds it).
    pub fn lock(&self) -> Result<LayoutLock> {
        let dir = File::open(&self.root).at("opening", &self.root)?;
        dir.lock().at("locking", &self.root)?;
        Ok(LayoutLock { _dir: dir })
    }

    /// Reads `index.json` (an empty index when it does not exist yet).
    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::empty()),
            Err(e) => return Err(Error::io("reading", path, e)),
            Ok(m) if m.len() > MAX_DOCUMENT_SIZE => {
                return Err(Error::TooLarge {
                    what: "index.json",
                    location: path.display().to_string(),
                    size: m.len(),
                    limit: MAX_DOCUMENT_SIZE,
                })
            }
            Ok(_) => {}
        }
        let raw = fs::read(&path).at("reading", &path)?;
        parse_json(&raw, "index", &path.display().to_string())
    }

    /// True when the blob exists with the expected size.
    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.len() == size)
    }

    /// Reads a small blob (manifest, config, index), verifying its digest and size cap.
    pub fn read_document(&self, desc: &Descriptor, what: &'static str) -> Result<Vec<u8>> {
        let path = self.blob_path(&desc.digest);
        if desc.size > MAX_DOCUMENT_SIZE {
            return Err(Error::TooLarge {
                what,
                location: path.display().to_string(),
                size: desc.size,
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        let mut raw = Vec::new();
        File::open(&path)
            .at("opening", &path)?
            .take(MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut raw)
            .at("reading", &path)?;
        let found = Digest::of(&raw);
        if found != desc.digest || raw.len() as u64 != desc.size {
            return Err(Error::DigestMismatch {
                location: path.display().to_string(),
                expected: desc.digest.to_string(),
                found: found.to_string(),
                size: raw.len() as u64,
            });
        }
        Ok(raw)
    }

    /// Writes a small document blob and returns its descriptor.
    pub fn write_document(&self, media_type: &str, raw: &[u8]) -> Result<Descriptor> {
        let digest = Digest::of(raw);
        let desc = Descriptor::new(media_type, digest, raw.len() as u64);
        if !self.has_blob(&digest, desc.size) {
            write_atomic(&self.blob_path(&digest), raw)?;
        }
        Ok(desc)
    }

    /// Copies a blob from `src` into this layout unless it is already here, verifying digest and
    /// size; a mismatch leaves nothing behind. On the same file system the blob is hard-linked
    /// instead of copied (blobs are replaced, never changed in place, so the link cannot change
    /// under either layout) and checked through the link: either way it is read once.
    pub fn copy_blob_from(&self, src: &Path, digest: &Digest, size: u64) -> Result<()> {
        if self.has_blob(digest, size) {
            return Ok(());
        }
        let dest = self.blob_path(digest);
        let dir = self.blob_dir();
        let open = |path: &Path| -> Result<_> {
            let file = File::open(path).at("opening", path)?;
            Ok(HashingReader::new(crate::interrupt::Stoppable(
                BufReader::with_capacity(1 << 20, file),
            )))
        };
        if let Ok(link) = tempfile::Builder::new()
            .prefix(".tmp-link-")
            .make_in(&dir, |p| fs::hard_link(src, p))
        {
            let mut reader = open(link.path())?;
            io::copy(&mut reader, &mut io::sink())
                .map_err(|e| Error::io("reading blob", src, e))?;
            let (found, count) = reader.finish();
            check_blob(src, digest, size, found, count)?;
            // Already synced by whoever wrote it; its mode is the source's own.
            link.persist(&dest)
                .map_err(|e| Error::io("renaming into", &dest, e.error))?;
            return Ok(());
        }
        let mut reader = open(src)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-blob-")
            .tempfile_in(&dir)
            .at("creating a temp file in", &dir)?;
        io::copy(&mut reader, &mut Writeback::new(tmp.as_file_mut()))
            .map_err(|e| Error::io("copying blob", src, e))?;
        let (found, count) = reader.finish();
        check_blob(src, digest, size, found, count)?;
        persist(tmp, &dest)
    }

    /// Points `tag` at `desc` in `index.json`, replacing any entry with that tag and keeping the
    /// others. Without a tag the descriptor is added unless already listed.
    pub fn set_tag(&self, mut desc: Descriptor, tag: Option<&str>) -> Result<()> {
        let mut index = self.index()?;
        match tag {
            Some(t) => {
                index.manifests.retain(|m| {
                    m.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) != Some(t)
                });
                desc.annotations
                    .insert(ANNOTATION_REF_NAME.into(), t.into());
                index.manifests.push(desc);
            }
            None => {
                if !index.manifests.iter().any(|m| {
                    m.digest == desc.digest && !m.annotations.contains_key(ANNOTATION_REF_NAME)
                }) {
                    index.manifests.push(desc);
                }
            }
        }
        index.schema_version = 2;
        index
            .media_type
            .get_or_insert_with(|| media::OCI_INDEX.to_string());
        write_atomic(&self.root.join("index.json"), &canonical_json(&index))
    }

    /// The `index.json` entry tagged `tag`, if there is one.
    pub fn tagged(&self, tag: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .find(|m| m.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(tag)))
    }

    /// The `index.json` entry tagged `tag`; an error naming the tags there when it is missing.
    pub fn tag_descriptor(&self, tag: &str) -> Result<Descriptor> {
        self.tagged(tag)?.ok_or_else(|| Error::TagNotFound {
            path: self.root.clone(),
            tag: tag.into(),
            available: self
                .tags()
                .map(|t| {
                    if t.is_empty() {
                        "none".into()
                    } else {
                        t.join(", ")
                    }
                })
                .unwrap_or_default(),
        })
    }

    /// The tags present in `index.json`.
    pub fn tags(&self) -> Result<Vec<String>> {
        Ok(self
            .index()?
            .manifests
            .iter()
            .filter_map(|m| m.annotations.get(ANNOTATION_REF_NAME).cloned())
            .collect())
    }

    /// Finds the image manifest named by `tag` (or the only one), resolving an index by
    /// `platform` (default: the only manifest, else the host platform).
    pub fn resolve(
        &self,
        tag: Option<&str>,
        platform: Option<&Platform>,
    ) -> Result<ResolvedManifest> {
        let index = self.index()?;
        let root_loc = self.root.join("index.json").display().to_string();
        let desc = match tag {
            Some(t) => self.tag_descriptor(t)?,
            None => match index.manifests.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Error::NotALayout {
                        path: self.root.clone(),
                        reason: "index.json lists no image".into(),
                    })
                }
                many if many.iter().all(|m| m.platform.is_some()) => {
                    pick_platform(many, platform, &root_loc)?
                }
                many => {
                    return Err(Error::AmbiguousImage {
                        path: self.root.clone(),
                        count: many.len(),
                    })
                }
            },
        };
        self.resolve_descriptor(desc, platform)
    }

    fn resolve_descriptor(
        &self,
        desc: Descriptor,
        platform: Option<&Platform>,
    ) -> Result<ResolvedManifest> {
        if media::is_index(&desc.media_type) {
            let raw = self.read_document(&desc, "index")?;
            let loc = self.blob_path(&desc.digest).display().to_string();
            let nested: Index = parse_json(&raw, "index", &loc)?;
            let chosen = pick_platform(&nested.manifests, platform, &loc)?;
            return self.resolve_descriptor(chosen, platform);
        }
        if !media::is_manifest(&desc.media_type) {
            return Err(Error::UnsupportedMediaType {
                location: self.root.display().to_string(),
                media_type: desc.media_type,
            });
        }
        let raw = self.read_document(&desc, "manifest")?;
        let manifest: Manifest = parse_json(
            &raw,
            "manifest",
            &self.blob_path(&desc.digest).display().to_string(),
        )?;
        let raw_config = self.read_document(&manifest.config, "config")?;
        Ok(ResolvedManifest {
            descriptor: desc,
            raw_manifest: raw,
            manifest,
            raw_config,
        })
    }
}

/// A manifest found in a layout, with its config.
#[derive(Clone, Debug)]
pub struct ResolvedManifest {
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
    /// The manifest bytes.
    pub raw_manifest: Vec<u8>,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The config bytes.
    pub raw_config: Vec<u8>,
}

/// Picks the entry of an index for `platform` (the host's when none is asked for and there are
/// several).
pub(crate) fn pick_platform(
    manifests: &[Descriptor],
    platform: Option<&Platform>,
    location: &str,
) -> Result<Descriptor> {
    let images: Vec<&Descriptor> = manifests
        .iter()
        .filter(|m| m.platform.as_ref().is_none_or(|p| p.os != "unknown"))
        .collect();
    let want = match platform {
        Some(p) => p.clone(),
        None if images.len() == 1 => return Ok(images[0].clone()),
        None => Platform::host(),
    };
    images
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| want.matches(p)))
        .map(|d| (*d).clone())
        .ok_or_else(|| Error::PlatformNotFound {
            location: location.into(),
            platform: want.to_string(),
            available: images
                .iter()
                .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Fails unless the blob read from `src` (`found`, `count` bytes) is `digest` of `size` bytes.
fn check_blob(src: &Path, digest: &Digest, size: u64, found: Digest, count: u64) -> Result<()> {
    if found == *digest && count == size {
        return Ok(());
    }
    Err(Error::DigestMismatch {
        location: src.display().to_string(),
        expected: digest.to_string(),
        found: found.to_string(),
        size: count,
    })
}

/// Writes `bytes` to `path` through a temp file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .at("creating a temp file in", dir)?;
    tmp.write_all(bytes).at("writing", tmp.path())?;
    persist(tmp, path)
}

/// Bytes written to a blob file between two requests to the kernel to start writing them out.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// A new blob file, written from its start, that the kernel is asked to write to the disk as it
/// grows: the sync before the rename ([`persist`]) then finds little left to write, instead of
/// the whole blob in one wait at the end.
pub(crate) struct Writeback<F> {
    file: F,
    /// Bytes written so far.
    len: u64,
    /// Bytes the kernel was asked to write out.
    started: u64,
}

impl<F: Write + AsFd> Writeback<F> {
    /// Wraps `file`, empty and positioned at its start.
    pub(crate) fn new(file: F) -> Self {
        Writeback {
            file,
            len: 0,
            started: 0,
        }
    }

    /// The file.
    pub(crate) fn into_inner(self) -> F {
        self.file
    }
}

impl<F: Write + AsFd> Write for Writeback<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.len += n as u64;
        if self.len - self.started >= WRITEBACK_EVERY {
            start_writeback(self.file.as_fd(), self.started, self.len);
            self.started = self.len;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Asks the kernel to start writing bytes `from..to` of `fd` to the disk, without waiting for
/// them. Only a hint: a failure costs the overlap, never data (the file is synced before use).
#[cfg(target_os = "linux")]
fn start_writeback(fd: BorrowedFd<'_>, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    // SAFETY: sync_file_range reads nothing but its integer arguments, and `fd` stays open while
    // it is borrowed.
    unsafe {
        libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Without `sync_file_range` the final sync writes the whole file.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_fd: BorrowedFd<'_>, _from: u64, _to: u64) {}

/// Makes a finished temp file world-readable (temp files start as 0600), syncs it and renames
/// it to `dest`.
pub(crate) fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .at("setting the mode of", tmp.path())?;
    file.sync_all().at("syncing", tmp.path())?;
    tmp.persist(dest)
        .map_err(|e| Error::io("renaming into", dest, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_keeps_every_byte_and_hints_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(2 * WRITEBACK_EVERY + 12345) as usize)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut w = Writeback::new(File::create(&path).unwrap());
        for chunk in data.chunks(777_777) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.len, data.len() as u64);
        // A hint goes out whenever a full step has been written since the last one.
        assert!(w.started > WRITEBACK_EVERY && w.started <= w.len);
        assert!(w.len - w.started < WRITEBACK_EVERY);
        w.flush().unwrap();
        w.into_inner().sync_all().unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
    }

    #[test]
    fn copied_blobs_are_checked_then_linked() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("blob");
        fs::write(&src, b"layer bytes").unwrap();
        let digest = Digest::of(b"layer bytes");
        let layout = Layout::create(dir.path().join("l")).unwrap();
        // A wrong digest or size: refused, nothing written.
        let other = Digest::of(b"other");
        assert!(layout.copy_blob_from(&src, &other, 11).is_err());
        assert!(layout.copy_blob_from(&src, &digest, 12).is_err());
        assert_eq!(fs::read_dir(layout.blob_dir()).unwrap().count(), 0);
        layout.copy_blob_from(&src, &digest, 11).unwrap();
        let copied = layout.blob_path(&digest);
        assert_eq!(fs::read(&copied).unwrap(), b"layer bytes");
        assert_eq!(
            fs::metadata(&copied).unwrap().ino(),
            fs::metadata(&src).unwrap().ino(),
            "same file system: a hard link"
        );
    }

    #[test]
    fn create_refuses_non_layout_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious.txt"), b"x").unwrap();
        assert!(matches!(
            Layout::create(dir.path()),
            Err(Error::NotALayout { .. })
        ));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn tags_replace_and_keep() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("l")).unwrap();
        let a = layout
            .write_document(media::OCI_MANIFEST, b"{\"a\":1}")
            .unwrap();
        let b = layout
            .write_document(media::OCI_MANIFEST, b"{\"b\":1}")
            .unwrap();
        layout.set_tag(a.clone(), Some("one")).unwrap();
        layout.set_tag(a, Some("two")).unwrap();
        layout.set_tag(b.clone(), Some("one")).unwrap();
        let index = layout.index().unwrap();
        assert_eq!(index.manifests.len(), 2);
        assert_eq!(layout.tags().unwrap(), ["two", "one"]);
        assert_eq!(index.manifests[1].digest, b.digest);
    }

    #[test]
    fn copy_blob_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("l")).unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"hello").unwrap();
        let wrong = Digest::of(b"other");
        assert!(matches!(
            layout.copy_blob_from(&src, &wrong, 5),
            Err(Error::DigestMismatch { .. })
        ));
        assert_eq!(
            fs::read_dir(layout.blob_dir()).unwrap().count(),
            0,
            "nothing left behind"
        );
        layout
            .copy_blob_from(&src, &Digest::of(b"hello"), 5)
            .unwrap();
        assert!(layout.has_blob(&Digest::of(b"hello"), 5));
    }
}
