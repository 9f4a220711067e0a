//! What the checks keep of a layer: its file list with kinds, modes, owners and link targets,
//! ELF facts of shared libraries, `#!` lines, and the text of a few small configuration files
//! (`/etc/passwd`, `/etc/group`, `/etc/shadow`, `/etc/ld.so.conf*`, Playwright's `browsers.json`).
//! A layer is read once as a tar stream (gzip, zstd or plain, sniffed) and never extracted.

use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::check::elf::{self, ElfFacts, Parse, Regions};
use crate::error::{Error, Result};

/// Bytes of an ELF file read before the parser asks for specific regions.
const ELF_PREFIX: u64 = 4 << 20;
/// Largest text file kept.
const TEXT_CAP: u64 = 1 << 20;
/// Bytes looked at for a `#!` line.
const HEAD: u64 = 256;

/// The type of a file in the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link with its target.
    Symlink(String),
}

/// One file of the image, as far as the checks care.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File type.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    #[serde(default)]
    pub uid: u64,
    /// Owner gid.
    #[serde(default)]
    pub gid: u64,
    /// Size in bytes (files).
    #[serde(default)]
    pub size: u64,
    /// ELF facts (shared libraries of a base; every ELF file of new layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elf: Option<ElfFacts>,
    /// The `#!` line of a script, without `#!`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shebang: Option<String>,
    /// Content of small configuration files the checks read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// True when the file comes from a layer being added (not the base).
    #[serde(skip)]
    pub new: bool,
}

impl Node {
    /// A node with no file facts.
    pub fn plain(kind: Kind, mode: u32, uid: u64, gid: u64, size: u64) -> Self {
        Node {
            kind,
            mode,
            uid,
            gid,
            size,
            elf: None,
            shebang: None,
            text: None,
            new: false,
        }
    }
}

/// One change a layer makes to the file system below it.
// Nearly every change is an `Add`: boxing its node would only add an allocation per entry.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// A file is added or replaced.
    Add(String, Node),
    /// A path (and everything under it) is removed (`.wh.NAME`).
    Whiteout(String),
    /// Everything below a directory in lower layers is hidden (`.wh..wh..opq`).
    Opaque(String),
}

/// A layer's changes, in archive order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSummary {
    /// The changes.
    pub changes: Vec<Change>,
}

/// True for paths whose text the checks need.
pub fn wants_text(path: &str) -> bool {
    matches!(
        path,
        "etc/passwd"
            | "etc/group"
            | "etc/shadow"
            | "etc/gshadow"
            | "etc/ld.so.conf"
            | "etc/os-release"
    ) || path.starts_with("etc/ld.so.conf.d/")
        || path.ends_with("playwright/driver/package/browsers.json")
}

/// True for base files whose ELF facts are kept: shared libraries and loaders.
pub fn is_library_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

/// Normalises a tar entry name: no leading `/` or `./`, no trailing `/`, no `.` parts.
pub fn clean_path(name: &str) -> Option<String> {
    let parts: Vec<&str> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// Summarises a layer blob (gzip, zstd or plain, sniffed from its first bytes) read from
/// `blob`; `location` names it in errors. `all_elf` keeps the ELF facts of every ELF file.
pub fn read_layer(blob: impl Read, location: &str, all_elf: bool) -> Result<LayerSummary> {
    let bad = |message: String| Error::BadArchive {
        archive: location.into(),
        message,
    };
    let mut blob = io::BufReader::with_capacity(1 << 16, blob);
    let head = io::BufRead::fill_buf(&mut blob).map_err(|e| bad(format!("reading layer: {e}")))?;
    let stream: Box<dyn Read> = match head {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(
            zstd::stream::read::Decoder::with_buffer(blob)
                .map_err(|e| bad(format!("reading layer: {e}")))?,
        ),
        _ => Box::new(blob),
    };
    summarize_tar(stream, all_elf).map_err(|e| bad(format!("reading layer: {e}")))
}

/// Summarises a base layer blob file.
pub fn read_layer_blob(path: &Path) -> Result<LayerSummary> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
    read_layer(f, &path.display().to_string(), false)
}

/// Summarises a tar stream. `all_elf` keeps ELF facts of every ELF file (new layers), else only
/// of shared libraries (a base).
pub fn summarize_tar(stream: impl Read, all_elf: bool) -> io::Result<LayerSummary> {
    let mut archive = tar::Archive::new(PadToBlocks {
        inner: stream,
        pos: 0,
        tail: None,
    });
    let mut changes = Vec::new();
    let mut files: std::collections::HashMap<String, usize> = Default::default();
    for item in archive.entries()? {
        let mut entry = item?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = clean_path(&name) else {
            continue;
        };
        let h = entry.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b),
            None => (String::new(), path.as_str()),
        };
        if base == ".wh..wh..opq" {
            changes.push(Change::Opaque(dir));
            continue;
        }
        if let Some(hidden) = base.strip_prefix(".wh.") {
            let p = if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            };
            changes.push(Change::Whiteout(p));
            continue;
        }
        let node = match h.entry_type() {
            tar::EntryType::Directory => Node::plain(Kind::Dir, mode, uid, gid, 0),
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                Node::plain(Kind::Symlink(target), mode, uid, gid, 0)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .and_then(|b| clean_path(&String::from_utf8_lossy(&b)));
                match target.and_then(|t| files.get(&t)) {
                    Some(&i) => match &changes[i] {
                        Change::Add(_, n) => n.clone(),
                        _ => continue,
                    },
                    None => continue,
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let want_elf = all_elf || is_library_name(&path);
                let mut node = Node::plain(Kind::File, mode, uid, gid, size);
                read_file_facts(&mut entry, size, want_elf, wants_text(&path), &mut node)?;
                files.insert(path.clone(), changes.len());
                node
            }
            _ => continue,
        };
        changes.push(Change::Add(path, node));
    }
    Ok(LayerSummary { changes })
}

/// Ends a tar stream cleanly: some writers (umoci 0.4) stop after the last file's bytes,
/// without its padding or the end-of-archive blocks. Runtimes accept such layers, so the
/// checks read them as if the zeros were there.
struct PadToBlocks<R> {
    inner: R,
    pos: u64,
    tail: Option<u64>,
}

impl<R: Read> Read for PadToBlocks<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tail.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.pos += n as u64;
                return Ok(n);
            }
            self.tail = Some((512 - self.pos % 512) % 512 + 1024);
        }
        let left = self.tail.unwrap_or(0);
        let n = (left.min(buf.len() as u64)) as usize;
        buf[..n].fill(0);
        self.tail = Some(left - n as u64);
        Ok(n)
    }
}

fn read_exact_len(r: &mut impl Read, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len.min(ELF_PREFIX) as usize);
    r.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file ended early",
        ));
    }
    Ok(buf)
}

/// Reads a file's facts from a forward-only stream of its `size` bytes.
pub fn read_file_facts(
    r: &mut impl Read,
    size: u64,
    want_elf: bool,
    want_text: bool,
    node: &mut Node,
) -> io::Result<()> {
    let first = if want_text && size <= TEXT_CAP {
        size
    } else {
        size.min(HEAD)
    };
    let mut buf = read_exact_len(r, first)?;
    let mut pos = first;
    if want_text && size <= TEXT_CAP {
        node.text = Some(String::from_utf8_lossy(&buf).into_owned());
    }
    node.shebang = shebang(&buf);
    if !(want_elf && buf.starts_with(elf::MAGIC)) {
        return Ok(());
    }
    let prefix = size.min(ELF_PREFIX);
    if prefix > pos {
        buf.extend(read_exact_len(r, prefix - pos)?);
        pos = prefix;
    }
    let mut regions = Regions::new(buf);
    for _ in 0..64 {
        match elf::parse(&regions) {
            Parse::Done(f) => {
                node.elf = Some(f);
                break;
            }
            Parse::Invalid(_) => break,
            Parse::Need(off, len) => {
                if off < pos || off >= size {
                    break;
                }
                io::copy(&mut r.take(off - pos), &mut io::sink())?;
                let len = len.max(elf::MIN_READ).min(size - off);
                regions.add(off, read_exact_len(r, len)?);
                pos = off + len;
            }
        }
    }
    Ok(())
}

/// The `#!` line of a script, without `#!` and surrounding blanks.
pub fn shebang(head: &[u8]) -> Option<String> {
    let rest = head.strip_prefix(b"#!")?;
    let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
    Some(String::from_utf8_lossy(&rest[..end]).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_texts_and_shebangs() {
        let raw = tar_of(&[
            ("./etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            ("usr/.wh.games", b""),
            ("opt/.wh..wh..opq", b""),
            ("bin/run", b"#!/usr/bin/env python3\nprint()\n"),
        ]);
        let s = summarize_tar(&raw[..], false).unwrap();
        assert_eq!(s.changes.len(), 4);
        let Change::Add(p, n) = &s.changes[0] else {
            panic!()
        };
        assert_eq!(p, "etc/passwd");
        assert!(n.text.as_deref().unwrap().starts_with("root:"));
        assert_eq!(s.changes[1], Change::Whiteout("usr/games".into()));
        assert_eq!(s.changes[2], Change::Opaque("opt".into()));
        let Change::Add(_, n) = &s.changes[3] else {
            panic!()
        };
        assert_eq!(n.shebang.as_deref(), Some("/usr/bin/env python3"));
    }

    #[test]
    fn blobs_in_every_compression_read_the_same() {
        let raw = tar_of(&[("etc/group", b"root:x:0:\n")]);
        let t = tempfile::tempdir().unwrap();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &raw).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&raw[..], 3).unwrap();
        let want = summarize_tar(&raw[..], false).unwrap();
        for (name, bytes) in [("plain", raw.clone()), ("gz", gz), ("zst", zst)] {
            let p = t.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            assert_eq!(read_layer_blob(&p).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn layers_cut_after_the_last_file_still_read() {
        let raw = tar_of(&[("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")]);
        let cut = &raw[..512 + 26];
        let s = summarize_tar(cut, false).unwrap();
        assert_eq!(s.changes.len(), 1);
    }

    #[test]
    fn elf_facts_from_a_stream() {
        let sh = std::fs::read("/bin/sh").unwrap();
        let raw = tar_of(&[("lib/libx.so.1", &sh)]);
        let s = summarize_tar(&raw[..], false).unwrap();
        let Change::Add(_, n) = &s.changes[0] else {
            panic!()
        };
        assert!(n.elf.as_ref().unwrap().interp.is_some());
    }

    #[test]
    fn clean_path_table() {
        assert_eq!(clean_path("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(clean_path("/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(clean_path("./"), None);
        assert_eq!(clean_path("a/../b"), None);
    }
}
