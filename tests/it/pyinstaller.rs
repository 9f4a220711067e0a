//! A real PyInstaller `--onedir` HTTP server, put in an image by hoist, unpacked by umoci and run
//! from the unpacked root filesystem (in a chroot when root).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const SERVER: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/alive"
        body = json.dumps({"status": "ok"}).encode() if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

/// Builds `NAME/NAME` + `NAME/_internal` with PyInstaller.
fn pyinstaller_onedir(dir: &Path, name: &str) -> PathBuf {
    fs::write(dir.join("server.py"), SERVER).unwrap();
    run(Command::new("pyinstaller").current_dir(dir).args([
        "--onedir",
        "--noconfirm",
        "--log-level",
        "WARN",
        "--name",
        name,
        "--distpath",
        "dist",
        "--workpath",
        "build",
        "--specpath",
        "spec",
        "server.py",
    ]))
    .ok();
    dir.join("dist").join(name)
}

/// Copies the host libraries the bundle's ELF files need (as `ldd` resolves them, plus the
/// loader) into a folder laid out like a root filesystem: the "base" the bundle runs on.
fn host_sysroot(bundle: &Path, dest: &Path) {
    let mut elves = vec![];
    let mut stack = vec![bundle.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file()
                && fs::read(&p)
                    .map(|b| b.starts_with(b"\x7fELF"))
                    .unwrap_or(false)
            {
                elves.push(p);
            }
        }
    }
    for elf in elves {
        let out = run(Command::new("ldd").arg(&elf));
        for line in out.stdout().lines() {
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.trim().split(' ').next().unwrap_or(""),
                None => line.trim().split(' ').next().unwrap_or(""),
            };
            if path.starts_with('/') && !Path::new(path).starts_with(bundle) {
                let target = dest.join(path.trim_start_matches('/'));
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                fs::copy(path, &target).unwrap_or_else(|e| panic!("copying {path}: {e}"));
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs `path` until the server answers or `timeout` passes; returns the status line and body.
fn http_get(port: u16, path: &str, timeout: Duration) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut resp = String::new();
            if s.read_to_string(&mut resp).is_ok() && !resp.is_empty() {
                return Some(resp);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn pyinstaller_server_runs_from_the_unpacked_image() {
    if !(have_tool("pyinstaller") && have_tool("umoci") && have_tool("ldd")) {
        return;
    }
    let t = tempdir();
    let bundle = pyinstaller_onedir(t.path(), "action-execution-server");
    let sysroot = t.path().join("sysroot");
    host_sysroot(&bundle, &sysroot);
    let out = t.path().join("out");
    hoist_run(&[
        "build",
        "--base",
        "scratch",
        "--layer",
        &format!("{}:/", sysroot.display()),
        "--layer",
        &format!(
            "{}:/openhands/action-execution-server,owner=1000:1000",
            bundle.display()
        ),
        "--entrypoint",
        r#"["/openhands/action-execution-server/action-execution-server"]"#,
        "--cmd",
        r#"["8000"]"#,
        "--output",
        &format!("oci:{}:app", out.display()),
    ])
    .ok();
    let rootfs = umoci_unpack(&out, "app", &t.path().join("bundle"));
    let exe = "/openhands/action-execution-server/action-execution-server";
    let port = free_port();
    let mut cmd = if is_root() && have_tool("chroot") {
        let mut c = Command::new("chroot");
        c.arg(&rootfs).arg(exe);
        c
    } else {
        eprintln!("not root: running the server from the unpacked folder without chroot");
        Command::new(rootfs.join(exe.trim_start_matches('/')))
    };
    let mut child = cmd
        .arg(port.to_string())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let resp = http_get(port, "/alive", Duration::from_secs(30));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let resp = resp.unwrap_or_else(|| {
        panic!(
            "no answer from the server; its stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(resp.ends_with(r#"{"status": "ok"}"#), "{resp}");
}
