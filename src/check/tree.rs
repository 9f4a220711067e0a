//! The merged file system of an image as the checks see it: base layer summaries (from the cache
//! when present) and new layers applied in order, whiteouts included; path resolution that
//! follows symlinks inside the image; and the per-digest summary cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::check::summary::{read_layer, Change, Kind, LayerSummary, Node};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Layer, LayerSource};
use crate::registry::pull::open_blob;

/// Most symlinks followed while resolving one path (as the kernel's `ELOOP`).
const MAX_LINKS: usize = 40;
/// Version of the cache file format (part of the file name).
const CACHE_VERSION: &str = "v1";

/// An image's files by path (relative, `/`-separated, root = "").
#[derive(Default, Debug)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// The folder holding per-layer summaries: `$HOIST_CACHE_DIR/check`, else
/// `$XDG_CACHE_HOME/hoist/check`, else `~/.cache/hoist/check`.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let root = env("HOIST_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("hoist")))
        .or_else(|| env("HOME").map(|p| p.join(".cache/hoist")))?;
    Some(root.join("check"))
}

/// Reads a layer's summary from the cache, or from its blob (then stores it). Returns the
/// summary and whether the blob was read. `new` selects the summary of a layer being added (ELF
/// facts of every ELF file) rather than of a base layer (shared libraries only).
pub fn layer_summary(
    layer: &Layer,
    new: bool,
    cache: Option<&Path>,
) -> Result<(LayerSummary, bool)> {
    let digest = &layer.descriptor.digest;
    let file = cache.map(|c| cache_file(c, digest, new));
    if let Some(f) = &file {
        if let Ok(raw) = std::fs::read(f) {
            if let Ok(s) = serde_json::from_slice::<LayerSummary>(&raw) {
                return Ok((s, false));
            }
        }
    }
    let location = layer.source.to_string();
    let summary = match &layer.source {
        LayerSource::File(path) => {
            let f = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
            read_layer(crate::interrupt::Stoppable(f), &location, new)?
        }
        LayerSource::Remote(r) => {
            // Streamed from the registry, never written to disk; verified as it is read.
            let resp = open_blob(&r.client, &r.repository, &layer.descriptor)?;
            let resp = crate::interrupt::Stoppable(resp);
            let mut verified = VerifyingReader::new(resp, &layer.descriptor, location.clone());
            let s = read_layer(&mut verified, &location, new)?;
            std::io::copy(&mut verified, &mut std::io::sink()).map_err(|e| Error::BadArchive {
                archive: location.clone().into(),
                message: e.to_string(),
            })?;
            s
        }
    };
    if let (Some(f), Some(dir)) = (&file, cache) {
        // The cache is an optimisation: failing to write it is not an error.
        let _ = store(dir, f, &summary);
    }
    Ok((summary, true))
}

/// Keeps the summary of a layer just built (from its plan) for later checks on the same layer.
pub fn remember_new_layer(digest: &Digest, summary: &LayerSummary, cache: Option<&Path>) {
    if let Some(dir) = cache {
        let _ = store(dir, &cache_file(dir, digest, true), summary);
    }
}

fn cache_file(dir: &Path, digest: &Digest, new: bool) -> PathBuf {
    let kind = if new { "new" } else { "base" };
    dir.join(format!("{CACHE_VERSION}-{kind}-{}.json", digest.hex()))
}

/// A reader that fails at the end of the stream when the bytes do not match the descriptor.
struct VerifyingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    expected: Digest,
    size: u64,
    read: u64,
    location: String,
}

impl<R: std::io::Read> VerifyingReader<R> {
    fn new(inner: R, desc: &crate::manifest::Descriptor, location: String) -> Self {
        use sha2::Digest as _;
        VerifyingReader {
            inner,
            hasher: sha2::Sha256::new(),
            expected: desc.digest,
            size: desc.size,
            read: 0,
            location,
        }
    }
}

impl<R: std::io::Read> std::io::Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if n == 0 && !buf.is_empty() {
            let found = Digest::of_hash(self.hasher.finalize_reset().into());
            if found != self.expected || self.read != self.size {
                return Err(std::io::Error::other(format!(
                    "blob {} from {}: content has digest {found} ({} bytes)",
                    self.expected, self.location, self.read
                )));
            }
        }
        Ok(n)
    }
}

fn store(dir: &Path, file: &Path, summary: &LayerSummary) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(std::io::BufWriter::new(tmp.as_file_mut()), summary)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

impl Tree {
    /// Applies one layer on top of the current tree. `new` marks files of layers being added.
    pub fn apply(&mut self, layer: &LayerSummary, new: bool) {
        // Whiteouts hide what lower layers hold, whatever their position in the archive.
        for c in &layer.changes {
            match c {
                Change::Whiteout(p) => self.remove_tree(p, true),
                Change::Opaque(d) => self.remove_tree(d, false),
                Change::Add(..) => {}
            }
        }
        for c in &layer.changes {
            if let Change::Add(p, n) = c {
                let mut n = n.clone();
                n.new = new;
                if n.kind != Kind::Dir {
                    self.remove_tree(p, false);
                }
                self.nodes.insert(p.clone(), n);
            }
        }
    }

    /// Removes everything below `path`, and `path` itself when `itself`.
    fn remove_tree(&mut self, path: &str, itself: bool) {
        if itself {
            self.nodes.remove(path);
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// The node at exactly `path` (no symlink following).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path.trim_matches('/'))
    }

    /// All nodes, by path.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Direct children of a directory (by exact path).
    pub fn children<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while({
                let prefix = prefix.clone();
                move |(k, _)| k.starts_with(&prefix)
            })
            .filter(move |(k, _)| !k[prefix.len()..].contains('/'))
    }

    /// Resolves `path` (absolute, or relative to the root) following every symlink inside the
    /// image, as the kernel would with the image as `/`. Returns the final path and its node
    /// (the root has no node: `None` node for "").
    pub fn resolve(&self, path: &str) -> Option<(String, Option<&Node>)> {
        let mut todo: Vec<String> = components(path).into_iter().rev().collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            let key = cur.join("/");
            let Some(node) = self.nodes.get(&key) else {
                // A folder no entry lists but some path lies under (tar allows that).
                if !self.has_children(&key) {
                    return None;
                }
                continue;
            };
            match &node.kind {
                Kind::Symlink(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    todo.extend(components(target).into_iter().rev());
                }
                Kind::File if !todo.is_empty() => return None,
                _ => {}
            }
        }
        let key = cur.join("/");
        let node = self.nodes.get(&key);
        Some((key, node))
    }

    fn has_children(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// Resolves `path` to a regular file.
    pub fn resolve_file(&self, path: &str) -> Option<(String, &Node)> {
        match self.resolve(path)? {
            (p, Some(n)) if n.kind == Kind::File => Some((p, n)),
            _ => None,
        }
    }

    /// Resolves `path` to a directory (the root counts).
    pub fn is_dir(&self, path: &str) -> bool {
        match self.resolve(path) {
            Some((p, None)) => p.is_empty() || self.has_children(&p),
            Some((_, Some(n))) => n.kind == Kind::Dir,
            None => false,
        }
    }

    /// The text of a small configuration file, following symlinks.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.resolve_file(path).and_then(|(_, n)| n.text.as_deref())
    }
}

/// The parts of a path, without empty and `.` parts (`..` kept).
pub fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(p: &str, kind: Kind) -> Change {
        Change::Add(p.into(), Node::plain(kind, 0o755, 0, 0, 0))
    }

    #[test]
    fn merged_usr_and_link_chains_resolve() {
        let mut t = Tree::default();
        t.apply(
            &LayerSummary {
                changes: vec![
                    add("lib", Kind::Symlink("usr/lib".into())),
                    add("usr", Kind::Dir),
                    add("usr/lib", Kind::Dir),
                    add("usr/lib/libz.so.1.2.13", Kind::File),
                    add("usr/lib/libz.so.1", Kind::Symlink("libz.so.1.2.13".into())),
                    add("usr/lib/libz.so", Kind::Symlink("/lib/libz.so.1".into())),
                    add("loop", Kind::Symlink("loop".into())),
                ],
            },
            false,
        );
        assert_eq!(
            t.resolve_file("/lib/libz.so").map(|(p, _)| p).as_deref(),
            Some("usr/lib/libz.so.1.2.13")
        );
        assert!(t.resolve("/loop").is_none());
        assert!(t.is_dir("/lib"));
        assert!(t.is_dir("/"));
        assert!(t.resolve("/usr/lib/libz.so.1.2.13/x").is_none());
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let mut t = Tree::default();
        t.apply(
            &LayerSummary {
                changes: vec![
                    add("a", Kind::Dir),
                    add("a/x", Kind::File),
                    add("b", Kind::Dir),
                    add("b/y", Kind::File),
                    add("c", Kind::File),
                ],
            },
            false,
        );
        t.apply(
            &LayerSummary {
                changes: vec![
                    Change::Whiteout("a".into()),
                    add("b/z", Kind::File),
                    Change::Opaque("b".into()),
                    add("c", Kind::Dir),
                ],
            },
            true,
        );
        assert!(t.get("a").is_none() && t.get("a/x").is_none());
        assert!(t.get("b/y").is_none());
        assert!(t.get("b/z").is_some_and(|n| n.new));
        assert!(t.is_dir("c"));
    }
}
