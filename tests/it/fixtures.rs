//! Expensive fixtures made once and kept in the test cache (`target/test-cache`): Debian minbase
//! root file systems from debootstrap packed as base layouts by hoist itself, a PyInstaller
//! `--onedir` server, Debian's Chromium binary, and a small C program with its own library.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::common::*;

/// Serialises fixture creation between the tests of this process (a file lock covers others).
static FIXTURES: Mutex<()> = Mutex::new(());

/// Runs `make` once per `name`: skipped when `name.ok` exists in `dir`, whatever process made it.
fn once(dir: &Path, name: &str, make: impl FnOnce()) {
    let _g = FIXTURES.lock().unwrap_or_else(|e| e.into_inner());
    fs::create_dir_all(dir).unwrap();
    let lock = fs::File::create(dir.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    let ok = dir.join(format!("{name}.ok"));
    if !ok.exists() {
        make();
        fs::write(&ok, b"").unwrap();
    }
}

/// True when debootstrap can run here (root and the tool); says why when not.
#[track_caller]
pub fn can_debootstrap() -> bool {
    if !have_tool("debootstrap") {
        return false;
    }
    if !is_root() {
        assert!(
            !in_ci(),
            "CI must run these tests as root (debootstrap, chroot)"
        );
        eprintln!("SKIPPED: debootstrap and chroot need root");
        return false;
    }
    true
}

/// A Debian `--variant=minbase` root file system of `suite` (bookworm, bullseye), made once.
/// Device nodes are removed (a layer cannot carry them).
pub fn debian_rootfs(suite: &str) -> PathBuf {
    let dir = test_cache().join("rootfs");
    let root = dir.join(suite);
    once(&dir, suite, || {
        let tmp = dir.join(format!("{suite}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        let mirror = std::env::var("HOIST_DEBIAN_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        run(Command::new("debootstrap")
            .args(["--variant=minbase", suite])
            .arg(&tmp)
            .arg(mirror))
        .ok();
        for d in ["dev", "proc", "sys"] {
            let p = tmp.join(d);
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
        }
        let _ = fs::remove_dir_all(&root);
        fs::rename(&tmp, &root).unwrap();
    });
    root
}

/// The `suite` root file system packed by hoist as `oci:LAYOUT:latest`; returns the layout.
pub fn debian_base(suite: &str) -> PathBuf {
    let rootfs = debian_rootfs(suite);
    let dir = test_cache().join("layouts");
    let layout = dir.join(suite);
    once(&dir, suite, || {
        let _ = fs::remove_dir_all(&layout);
        hoist_run(&[
            "build",
            "--base",
            "scratch",
            "--platform",
            "linux/amd64",
            "--no-check",
            "--compression",
            "gzip:1",
            "--layer",
            &format!("{}:/", rootfs.display()),
            "--output",
            &format!("oci:{}:latest", layout.display()),
        ])
        .ok();
    });
    layout
}

/// The server of the proof: `SERVER PORT [--working-dir DIR]` answers `GET /alive` with 200
/// `{"status":"ok"}`; `--selftest` exits 0 once Python and its libraries are loaded.
pub const SERVER_PY: &str = r#"import argparse, json, os, ssl, zlib
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/alive"
        body = json.dumps({"status": "ok"} if ok else {}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

p = argparse.ArgumentParser()
p.add_argument("port", type=int, nargs="?", default=8000)
p.add_argument("--working-dir", default=".")
p.add_argument("--selftest", action="store_true")
a = p.parse_args()
if a.selftest:
    print("selftest ok", ssl.OPENSSL_VERSION, zlib.ZLIB_VERSION)
    raise SystemExit(0)
os.chdir(a.working_dir)
HTTPServer(("127.0.0.1", a.port), Handler).serve_forever()
"#;

/// A PyInstaller `--onedir` build of [`SERVER_PY`] (`dist/server/server` + `_internal/`),
/// made once; `None` (skipped) when PyInstaller is missing locally.
pub fn pyinstaller_bundle() -> Option<PathBuf> {
    let found = run(Command::new("python3").args(["-c", "import PyInstaller"]))
        .out
        .status
        .success();
    if !found {
        assert!(
            !in_ci(),
            "PyInstaller is not installed; scripts/test installs it"
        );
        eprintln!("SKIPPED: PyInstaller is not installed (pip install pyinstaller)");
        return None;
    }
    let dir = test_cache().join("pyinstaller");
    let dist = dir.join("dist/server");
    once(&dir, "server", || {
        let _ = fs::remove_dir_all(dir.join("dist"));
        fs::write(dir.join("server.py"), SERVER_PY).unwrap();
        run(Command::new("python3").current_dir(&dir).args([
            "-m",
            "PyInstaller",
            "--onedir",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--name",
            "server",
            "server.py",
        ]))
        .ok();
    });
    Some(dist)
}

/// Debian's Chromium (`usr/lib/chromium/chromium` of the `chromium` package), extracted once.
pub fn debian_chromium() -> Option<PathBuf> {
    if !(have_tool("apt-get") && have_tool("dpkg-deb")) {
        return None;
    }
    let dir = test_cache().join("chromium");
    let bin = dir.join("x/usr/lib/chromium/chromium");
    once(&dir, "chromium", || {
        let _ = fs::remove_dir_all(dir.join("x"));
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "deb") {
                fs::remove_file(p).unwrap();
            }
        }
        run(Command::new("apt-get")
            .current_dir(&dir)
            .args(["download", "chromium"]))
        .ok();
        let deb = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .expect("chromium .deb");
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("x")))
        .ok();
    });
    Some(bin)
}

/// A C program linked against zlib, expat and its own `libown.so.1` (found through
/// `$ORIGIN/../lib`, reached by a symlink chain `libown.so.1 -> libown.so.1.0 -> real/libown.so.1.0.0`).
/// Returns the folder holding `bin/app` and `lib/`.
pub fn small_program(dir: &Path) -> Option<PathBuf> {
    if !have_tool("cc") {
        return None;
    }
    let app = dir.join("small");
    fs::create_dir_all(app.join("bin")).unwrap();
    fs::create_dir_all(app.join("lib/real")).unwrap();
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("own.c"), "int own(void) { return 7; }\n").unwrap();
    fs::write(
        src.join("app.c"),
        "#include <zlib.h>\n#include <expat.h>\nint own(void);\nint main(void) { XML_Parser p = XML_ParserCreate(0); return (zlibVersion()[0] && p && own() == 7) ? 0 : 1; }\n",
    )
    .unwrap();
    run(Command::new("cc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libown.so.1", "-o"])
        .arg(app.join("lib/real/libown.so.1.0.0"))
        .arg(src.join("own.c")))
    .ok();
    std::os::unix::fs::symlink("real/libown.so.1.0.0", app.join("lib/libown.so.1.0")).unwrap();
    std::os::unix::fs::symlink("libown.so.1.0", app.join("lib/libown.so.1")).unwrap();
    std::os::unix::fs::symlink("libown.so.1", app.join("lib/libown.so")).unwrap();
    run(Command::new("cc")
        .arg("-o")
        .arg(app.join("bin/app"))
        .arg(src.join("app.c"))
        .arg(format!("-L{}", app.join("lib").display()))
        .args([
            "-lown",
            "-lz",
            "-lexpat",
            "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib",
        ]))
    .ok();
    Some(app)
}

/// A copy of `rootfs` made of hard links (instant; the cached tree must not be written to).
pub fn scratch_rootfs(rootfs: &Path, dest: &Path) -> PathBuf {
    run(Command::new("cp").arg("-al").arg(rootfs).arg(dest)).ok();
    dest.to_path_buf()
}

/// The sonames `ldd` reports as "not found" for `path` inside a chroot of `rootfs`, sorted.
pub fn ldd_not_found(rootfs: &Path, path: &str) -> Vec<String> {
    let out = run(Command::new("chroot")
        .arg(rootfs)
        .args(["/usr/bin/ldd", path]));
    let mut v: Vec<String> = out
        .stdout()
        .lines()
        .filter(|l| l.contains("not found"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    v.sort();
    v.dedup();
    v
}
