//! Playwright browser folders (`chromium-REV/`, `chromium_headless_shell-REV/`, `ffmpeg-REV/`,
//! each with `INSTALLATION_COMPLETE`) packed into a deterministic tarball, ready to be added as a
//! layer (`--layer OUT:/ms-playwright` or `--browsers OUT`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::check::playwright::{folder_problems, split_folder, MARKER};
use crate::error::{Error, IoContext, Result};
use crate::layer::write::write_layer;
use crate::layer::{Compression, LayerPlan, LayerSpec, WriteOptions};
use crate::Digest;

/// What `pack` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// The tarball.
    pub path: PathBuf,
    /// sha256 of the tarball.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The browser folders it holds (`chromium-1187`, …).
    pub browsers: Vec<String>,
    /// Problems found and accepted with `force`.
    pub problems: Vec<String>,
}

/// Lists a browsers folder: its top-level entries as `(name, is_dir, has_marker)`.
pub fn scan(src: &Path) -> Result<Vec<(String, bool, bool)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(src).at("listing", src)? {
        let e = e.at("listing", src)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().at("reading", &e.path())?.is_dir();
        let marker = is_dir && e.path().join(MARKER).is_file();
        out.push((name, is_dir, marker));
    }
    out.sort();
    Ok(out)
}

/// Packs `src` into a gzip tarball at `out` (entries relative to `src`, sorted, mtime `epoch`,
/// root-owned). Refuses folders without browsers or with unfinished installs unless `force`.
pub fn pack(src: &Path, out: &Path, epoch: u64, force: bool) -> Result<Packed> {
    let entries = scan(src)?;
    let problems = folder_problems(&entries);
    if !problems.is_empty() && !force {
        return Err(Error::BadBrowsers {
            path: src.to_path_buf(),
            problem: format!("{} (--force packs it anyway)", problems.join("; ")),
        });
    }
    let mut spec = LayerSpec::new(src, "/");
    spec.parents = false;
    let plan = LayerPlan::new(&spec)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".hoist-pack-")
        .tempdir_in(&parent)
        .at("creating a temp folder in", &parent)?;
    let opts = WriteOptions {
        mtime: epoch,
        compression: Compression::default(),
        threads: crate::layer::compress::default_threads(),
    };
    let blob = write_layer(&plan, opts, tmp.path())?;
    fs::rename(&blob.path, out).at("renaming into", out)?;
    Ok(Packed {
        path: out.to_path_buf(),
        digest: blob.digest,
        size: blob.size,
        browsers: entries
            .iter()
            .filter(|(n, d, _)| *d && split_folder(n).is_some())
            .map(|(n, _, _)| n.clone())
            .collect(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(root: &Path, complete: bool) {
        for b in ["chromium-1187/chrome-linux", "ffmpeg-1011"] {
            fs::create_dir_all(root.join(b)).unwrap();
        }
        fs::write(root.join("chromium-1187/chrome-linux/chrome"), b"x").unwrap();
        fs::write(root.join("ffmpeg-1011/ffmpeg-linux"), b"y").unwrap();
        fs::write(root.join("ffmpeg-1011").join(MARKER), b"").unwrap();
        if complete {
            fs::write(root.join("chromium-1187").join(MARKER), b"").unwrap();
        }
    }

    #[test]
    fn packs_deterministically_and_refuses_unfinished_installs() {
        let t = tempfile::tempdir().unwrap();
        folder(&t.path().join("a"), true);
        folder(&t.path().join("b"), true);
        let p1 = pack(&t.path().join("a"), &t.path().join("a.tar.gz"), 0, false).unwrap();
        let p2 = pack(&t.path().join("b"), &t.path().join("b.tar.gz"), 0, false).unwrap();
        assert_eq!(p1.digest, p2.digest);
        assert_eq!(p1.browsers, vec!["chromium-1187", "ffmpeg-1011"]);
        folder(&t.path().join("c"), false);
        assert!(matches!(
            pack(&t.path().join("c"), &t.path().join("c.tar.gz"), 0, false),
            Err(Error::BadBrowsers { .. })
        ));
        let forced = pack(&t.path().join("c"), &t.path().join("c.tar.gz"), 0, true).unwrap();
        assert_eq!(forced.problems.len(), 1);
    }
}
