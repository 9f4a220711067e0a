//! The layer cache: a layer already built from the same inputs is not compressed again.
//!
//! A layer's key is a sha256 over hoist's layer format version, the write options and, for every
//! entry of the source, its path, type, mode, owner, size, link target and **stat identity**
//! (device, inode, mtime and ctime in nanoseconds). Any write to a file changes its ctime, which
//! no user tool can set back, so a file whose content changed while its size and mtime were kept
//! still misses. Sources touched in the last [`RACY_SECS`] seconds are not cached at all (on file
//! systems with coarse timestamps two writes in one tick would share a ctime).
//!
//! A second, content-addressed record names each layer by its diff_id and compression: when the
//! stat key misses for a layer built before (a fresh checkout, a copy), the tar stream is hashed
//! once without compressing and the layer is found by content.
//!
//! On disk (`$HOIST_CACHE_DIR`, else `$XDG_CACHE_HOME/hoist`, else `~/.cache/hoist`):
//! `blobs/sha256/<hex>`, `layers/<key>.json` and `content/<hash>.json` (digest, diff_id, size,
//! media type), and `seen/<identity>` for the destinations and options built before. Blobs are
//! hard-linked into output layouts when they share a file system, else copied. The total blob
//! size is bounded; the least recently used blobs are evicted first.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layer::entry::{finalize, Content, EntryKind};
use crate::layer::{tree, LayerBlob, LayerSpec, WriteOptions};
use crate::layout::{persist, write_atomic};

/// Version of the layer format: bump it when the same inputs would give other bytes.
const LAYER_FORMAT: &str = "hoist-layer-v1";

/// Sources changed more recently than this are built without the cache.
pub const RACY_SECS: u64 = 2;

/// Default bound on the cache's blob bytes.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;

/// A cache directory.
#[derive(Clone, Debug)]
pub struct LayerCache {
    root: PathBuf,
    max_bytes: u64,
}

/// A layer found in the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// sha256 of the compressed blob.
    pub digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Blob size.
    pub size: u64,
    /// Layer media type.
    pub media_type: String,
}

impl LayerCache {
    /// The default location: `$HOIST_CACHE_DIR`, `$XDG_CACHE_HOME/hoist` or `~/.cache/hoist`.
    pub fn default_dir() -> Option<PathBuf> {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("HOIST_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("hoist")))
            .or_else(|| env("HOME").map(|h| h.join(".cache/hoist")))
    }

    /// Opens (creating) a cache directory bounded to `max_bytes` of blobs.
    pub fn open(root: impl Into<PathBuf>, max_bytes: u64) -> Result<Self> {
        let cache = LayerCache {
            root: root.into(),
            max_bytes,
        };
        for d in [
            cache.blob_dir(),
            cache.root.join("layers"),
            cache.root.join("content"),
            cache.root.join("seen"),
        ] {
            fs::create_dir_all(&d).at("creating the cache directory", &d)?;
        }
        Ok(cache)
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// Where a cached blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    fn record_path(&self, key: &Digest) -> PathBuf {
        self.root.join("layers").join(format!("{}.json", key.hex()))
    }

    /// The layer stored under `key`, if its blob is still there (and marks it recently used).
    pub fn lookup(&self, key: &Digest) -> Option<CachedLayer> {
        self.read_record(self.record_path(key))
    }

    /// The layer whose uncompressed tar has `diff_id`, written with `opts`, if its blob is still
    /// there. A content-addressed hit: safe whatever the sources' stat data.
    pub fn lookup_content(&self, diff_id: &Digest, opts: &WriteOptions) -> Option<CachedLayer> {
        self.read_record(self.content_path(diff_id, opts))
    }

    /// True when a layer with this [`source_identity`] was built before (so hashing a source
    /// whose stat data changed, to look for its content, is likely to pay off).
    pub fn has_built(&self, identity: &Digest) -> bool {
        self.root.join("seen").join(identity.hex()).exists()
    }

    /// Records `layer` under the stat-based `key` too (after a content hit).
    pub fn remember(&self, key: &Digest, layer: &CachedLayer) -> Result<()> {
        self.write_record(&self.record_path(key), layer)
    }

    fn content_path(&self, diff_id: &Digest, opts: &WriteOptions) -> PathBuf {
        let name = Digest::of(format!("{LAYER_FORMAT}:{}:{diff_id}", opts.compression).as_bytes());
        self.root
            .join("content")
            .join(format!("{}.json", name.hex()))
    }

    fn write_record(&self, path: &Path, layer: &CachedLayer) -> Result<()> {
        let raw = serde_json::to_vec(layer).map_err(|e| Error::BadJson {
            what: "cache record",
            location: path.display().to_string(),
            source: e,
        })?;
        write_atomic(path, &raw)
    }

    fn read_record(&self, record: PathBuf) -> Option<CachedLayer> {
        let layer: CachedLayer = serde_json::from_slice(&fs::read(&record).ok()?).ok()?;
        let blob = self.blob_path(&layer.digest);
        if fs::metadata(&blob).ok()?.len() != layer.size {
            return None;
        }
        let now = SystemTime::now();
        for p in [&record, &blob] {
            let _ = File::options()
                .write(true)
                .open(p)
                .and_then(|f| f.set_modified(now));
        }
        Some(layer)
    }

    /// Stores a freshly written layer (hard link when possible, else a copy) under its content
    /// and, when given, under the stat-based `key`; marks `identity` as built; then evicts the
    /// least recently used blobs beyond the size bound.
    pub fn store(
        &self,
        key: Option<&Digest>,
        identity: &Digest,
        opts: &WriteOptions,
        blob: &LayerBlob,
    ) -> Result<()> {
        let dest = self.blob_path(&blob.digest);
        let present = fs::metadata(&dest).map(|m| m.len()).ok() == Some(blob.size);
        if !present && fs::hard_link(&blob.path, &dest).is_err() {
            let dir = self.blob_dir();
            let mut tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(&dir)
                .at("creating a temp file in", &dir)?;
            std::io::copy(
                &mut File::open(&blob.path).at("opening", &blob.path)?,
                tmp.as_file_mut(),
            )
            .at("copying into", &dir)?;
            persist(tmp, &dest)?;
        }
        let record = CachedLayer {
            digest: blob.digest,
            diff_id: blob.diff_id,
            size: blob.size,
            media_type: blob.media_type.to_string(),
        };
        self.write_record(&self.content_path(&blob.diff_id, opts), &record)?;
        if let Some(key) = key {
            self.write_record(&self.record_path(key), &record)?;
        }
        write_atomic(&self.root.join("seen").join(identity.hex()), b"")?;
        self.evict()
    }

    /// Puts a cached blob at `dest` (hard link, else copy with verification).
    pub fn materialize(
        &self,
        layer: &CachedLayer,
        layout: &crate::layout::Layout,
    ) -> Result<PathBuf> {
        let dest = layout.blob_path(&layer.digest);
        if layout.has_blob(&layer.digest, layer.size) {
            return Ok(dest);
        }
        let src = self.blob_path(&layer.digest);
        if fs::hard_link(&src, &dest).is_err() {
            layout.copy_blob_from(&src, &layer.digest, layer.size)?;
        }
        Ok(dest)
    }

    /// Deletes least recently used blobs until the total is within the bound.
    pub fn evict(&self) -> Result<()> {
        let dir = self.blob_dir();
        let mut blobs: Vec<(SystemTime, u64, PathBuf)> = fs::read_dir(&dir)
            .at("listing", &dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        blobs.sort();
        for (_, len, path) in blobs {
            if total <= self.max_bytes {
                break;
            }
            fs::remove_file(&path).at("evicting", &path)?;
            total -= len;
        }
        Ok(())
    }
}

/// What a layer is, apart from its sources' content: destination, options and compression.
/// Layers built before with the same identity make a content lookup worth its hashing pass.
pub fn source_identity(spec: &LayerSpec, opts: &WriteOptions) -> Digest {
    Digest::of(
        format!(
            "{LAYER_FORMAT}\n{}\n{}\n{}\n{}",
            opts.compression,
            opts.mtime,
            spec.dest,
            options_text(spec)
        )
        .as_bytes(),
    )
}

/// `spec`'s options as key material: owner, strip, parents, extract, then the parent folders'
/// modes and owners taken from the image below the layer (nothing when there are none, so keys
/// made before they were taken stay valid).
fn options_text(spec: &LayerSpec) -> String {
    let owner = spec.owner.unwrap_or_default();
    let mut text = format!(
        "{}:{}:{}:{}:{}",
        owner.uid, owner.gid, spec.strip, spec.parents, spec.extract
    );
    for (path, (mode, o)) in &spec.parent_dirs {
        text.push_str(&format!("\n{path}:{mode:o}:{}:{}", o.uid, o.gid));
    }
    text
}

/// The cache key of the layer `spec` would produce with `opts`, or `None` when a source was
/// changed too recently to be trusted. Reads no file content: one stat per entry.
pub fn layer_key(spec: &LayerSpec, opts: &WriteOptions) -> Result<Option<Digest>> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(LAYER_FORMAT.as_bytes());
    field(opts.compression.to_string().as_bytes());
    field(&opts.mtime.to_le_bytes());
    field(spec.dest.as_bytes());
    field(options_text(spec).as_bytes());
    let newest_allowed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(RACY_SECS));
    let meta = match fs::metadata(&spec.src) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingSource(spec.src.clone()))
        }
        Err(e) => return Err(Error::io("reading", &spec.src, e)),
    };
    let mut racy = false;
    let mut stamp = |path: &Path, field: &mut dyn FnMut(&[u8])| -> Result<()> {
        let m = fs::symlink_metadata(path).at("reading", path)?;
        let ctime = Duration::new(
            m.ctime().max(0) as u64,
            m.ctime_nsec().clamp(0, 999_999_999) as u32,
        );
        let mtime = Duration::new(
            m.mtime().max(0) as u64,
            m.mtime_nsec().clamp(0, 999_999_999) as u32,
        );
        racy |= ctime >= newest_allowed || mtime >= newest_allowed;
        field(
            format!(
                "{}:{}:{}:{}:{}",
                m.dev(),
                m.ino(),
                m.len(),
                mtime.as_nanos(),
                ctime.as_nanos()
            )
            .as_bytes(),
        );
        Ok(())
    };
    if meta.is_dir() {
        let owner = spec.owner.unwrap_or_default();
        let entries = finalize(tree::walk_dir(&spec.src, &spec.dest_components(), owner)?);
        stamp(&spec.src, &mut field)?;
        for e in &entries {
            field(e.tar_path().as_bytes());
            field(&e.mode.to_le_bytes());
            match (&e.kind, &e.content) {
                (EntryKind::Dir, _) => field(b"d"),
                (EntryKind::Symlink(t), _) => field(format!("l{t}").as_bytes()),
                (EntryKind::Hardlink(t), _) => field(format!("h{t}").as_bytes()),
                (EntryKind::File { size }, Content::File(p)) => {
                    field(format!("f{size}").as_bytes());
                    stamp(p, &mut field)?;
                }
                (EntryKind::File { .. }, _) => field(b"?"),
            }
        }
    } else {
        stamp(&spec.src, &mut field)?;
    }
    let key = Digest::of(&h.finalize());
    Ok(if racy { None } else { Some(key) })
}

/// Parses a size like `10G`, `512M`, `100000` (bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || Error::InvalidValue {
        what: "cache size",
        value: s.into(),
        reason: "expected a number of bytes with an optional K, M, G or T suffix",
    };
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
    }

    #[test]
    fn eviction_keeps_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path(), 10).unwrap();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let p = cache.blob_dir().join(name);
            fs::write(&p, [0u8; 6]).unwrap();
            let f = File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + i as u64))
                .unwrap();
        }
        cache.evict().unwrap();
        let left: Vec<_> = fs::read_dir(cache.blob_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("c")],
            "the most recently used stays"
        );
    }
}
