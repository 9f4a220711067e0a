//! Test harness: running hoist, requiring third-party tools, and generating fixtures.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The result of a command, printed in full when an assertion fails.
pub struct Run {
    pub cmd: String,
    pub out: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    fn describe(&self) -> String {
        format!(
            "command: {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.cmd,
            self.out.status,
            self.stdout(),
            self.stderr()
        )
    }
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(
            self.out.status.success(),
            "command failed\n{}",
            self.describe()
        );
        self.stdout()
    }
    /// Asserts exit code `code` and that stderr mentions every one of `needles`.
    #[track_caller]
    pub fn fails_with(&self, code: i32, needles: &[&str]) {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\n{}",
            self.describe()
        );
        for n in needles {
            assert!(
                self.stderr().contains(n),
                "stderr does not mention {n:?}\n{}",
                self.describe()
            );
        }
    }
}

/// Runs a command and captures its output.
pub fn run(cmd: &mut Command) -> Run {
    let desc = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    Run { cmd: desc, out }
}

/// The hoist binary under test.
pub fn hoist_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hoist"))
}

/// A `hoist` command with a clean environment for reproducibility.
pub fn hoist() -> Command {
    let mut c = Command::new(hoist_bin());
    c.env_remove("SOURCE_DATE_EPOCH");
    c.env("HOIST_CACHE_DIR", test_cache().join("hoist-cache"));
    c
}

/// The folder where tests keep expensive fixtures between runs (root file systems, bundles):
/// `$HOIST_TEST_CACHE`, else `target/test-cache`.
pub fn test_cache() -> PathBuf {
    match std::env::var_os("HOIST_TEST_CACHE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .join("test-cache"),
    }
}

/// Runs hoist with `args`.
pub fn hoist_run(args: &[&str]) -> Run {
    run(hoist().args(args))
}

/// True when running in CI, where no tool may be missing.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Returns true when `tool` is on PATH. When it is not: in CI the test fails (CI must install
/// it); elsewhere the test is skipped with a message saying why.
#[track_caller]
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(!in_ci(), "{tool} is not installed; .ci/run must install it");
        eprintln!("SKIPPED: {tool} is not installed (`.ci/run` installs it; run it or install {tool} to run this test)");
    }
    found
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    run(Command::new("id").arg("-u")).ok().trim() == "0"
}

/// A temp directory that other users can traverse (for the rootless test).
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    d
}

/// Writes a file, creating parents, with a mode.
/// `len` pseudo-random bytes from `seed` (the low byte of each xorshift64 state): content that
/// does not compress, made the same way on every run.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn write_file(path: &Path, content: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tiny base image made by umoci (an independent writer): /etc/passwd, /etc/group,
/// /etc/os-release, /bin/marker. Returns the layout directory; the tag is `latest`.
pub fn umoci_base(dir: &Path) -> PathBuf {
    let rootfs = dir.join("base-rootfs");
    write_file(&rootfs.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", 0o644);
    write_file(
        &rootfs.join("etc/group"),
        b"root:x:0:\nnogroup:x:65534:\n",
        0o644,
    );
    write_file(&rootfs.join("etc/os-release"), b"ID=hoist-test\n", 0o644);
    write_file(&rootfs.join("bin/marker"), b"#!/bin/sh\necho base\n", 0o755);
    let layout = dir.join("base");
    let l = layout.to_str().unwrap();
    run(Command::new("umoci").args(["init", "--layout", l])).ok();
    run(Command::new("umoci").args(["new", "--image", &format!("{l}:latest")])).ok();
    run(Command::new("umoci").args([
        "config",
        "--image",
        &format!("{l}:latest"),
        "--config.env",
        "PATH=/usr/bin:/bin",
        "--config.cmd",
        "/bin/sh",
        "--architecture",
        "amd64",
        "--os",
        "linux",
    ]))
    .ok();
    let mut insert = Command::new("umoci");
    insert.arg("insert");
    if !is_root() {
        insert.arg("--rootless");
    }
    run(insert.args([
        "--image",
        &format!("{l}:latest"),
        rootfs.to_str().unwrap(),
        "/",
    ]))
    .ok();
    layout
}

/// The application folder of the proof: nested dirs, a symlink, a hardlink, an executable and
/// a 0600 file.
pub fn app_dir(dir: &Path) -> PathBuf {
    let app = dir.join("app");
    write_file(&app.join("app"), b"#!/bin/sh\necho app\n", 0o755);
    write_file(
        &app.join("_internal/lib/deep/data.txt"),
        b"deep data\n",
        0o644,
    );
    write_file(
        &app.join("_internal/libfoo.so.1"),
        b"\x7fELF not really\n",
        0o755,
    );
    write_file(&app.join("_internal/secret.key"), b"top secret\n", 0o600);
    std::os::unix::fs::symlink("libfoo.so.1", app.join("_internal/libfoo.so")).unwrap();
    fs::hard_link(
        app.join("_internal/lib/deep/data.txt"),
        app.join("_internal/data-hardlink.txt"),
    )
    .unwrap();
    app
}

/// A tar.gz with its own top folder, made by GNU tar: `chrome-linux/chrome` (0755),
/// `chrome-linux/locales/en-US.pak`, `chrome-linux/libGLESv2.so -> swiftshader/libGLESv2.so`.
pub fn browser_tarball(dir: &Path) -> PathBuf {
    let src = dir.join("browser-src");
    write_file(&src.join("chrome-linux/chrome"), b"\x7fELF chrome\n", 0o755);
    write_file(&src.join("chrome-linux/locales/en-US.pak"), b"pak\n", 0o644);
    write_file(
        &src.join("chrome-linux/swiftshader/libGLESv2.so"),
        b"gles\n",
        0o644,
    );
    std::os::unix::fs::symlink(
        "swiftshader/libGLESv2.so",
        src.join("chrome-linux/libGLESv2.so"),
    )
    .unwrap();
    let out = dir.join("chromium-linux.tar.gz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg("chrome-linux"))
    .ok();
    out
}

/// Unpacks `oci:LAYOUT:TAG` with umoci and returns the rootfs path.
pub fn umoci_unpack(layout: &Path, tag: &str, dest: &Path) -> PathBuf {
    let mut c = Command::new("umoci");
    c.arg("unpack");
    if !is_root() {
        c.arg("--rootless");
    }
    run(c
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(dest))
    .ok();
    dest.join("rootfs")
}

/// Every file of a directory tree with its sha256 and size (to prove a layout is unchanged).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, String)> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u64, String)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = fs::read(&p).unwrap();
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    (m.len(), hoist::Digest::of(&bytes).to_string()),
                );
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// Reads `index.json` of a layout.
pub fn index_json(layout: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap()
}

/// Reads a blob of a layout as JSON.
pub fn blob_json(layout: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// The digests (hex) of the layers of `manifest`, in order.
pub fn layer_hexes(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The digest printed by a build (`REF@sha256:…`).
pub fn printed_digest(stdout: &str) -> String {
    stdout
        .trim()
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| panic!("no digest in {stdout:?}"))
}

/// A free port on 127.0.0.1 (bound and released; the caller's server takes it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port, retried until `timeout` passes: (status line, body).
pub fn http_get(port: u16, path: &str, timeout: std::time::Duration) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut resp = String::new();
            if s.read_to_string(&mut resp).is_ok() && !resp.is_empty() {
                let status = resp.lines().next().unwrap_or_default().to_string();
                let body = resp
                    .split("\r\n\r\n")
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                return Some((status, body));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}
