//! A real PyInstaller `--onedir` HTTP server (the fixture bundle), put in an image by hoist on a
//! scratch base holding only the host libraries it needs, unpacked by umoci and run from the
//! unpacked root filesystem (in a chroot when root). The Debian-based variant with an added user
//! is in `runtime.rs`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::fixtures::pyinstaller_bundle;

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

#[test]
fn pyinstaller_server_runs_from_the_unpacked_image() {
    if !(have_tool("umoci") && have_tool("ldd")) {
        return;
    }
    let Some(bundle) = pyinstaller_bundle() else {
        return;
    };
    let t = tempdir();
    let sysroot = t.path().join("sysroot");
    host_sysroot(&bundle, &sysroot);
    let out = t.path().join("out");
    let dest = "/openhands/action-execution-server";
    let exe = format!("{dest}/server");
    hoist_run(&[
        "build",
        "--base",
        "scratch",
        "--layer",
        &format!("{}:/", sysroot.display()),
        "--layer",
        &format!("{}:{dest},owner=1000:1000", bundle.display()),
        "--entrypoint",
        &format!(r#"["{exe}"]"#),
        "--cmd",
        r#"["8000"]"#,
        "--output",
        &format!("oci:{}:app", out.display()),
    ])
    .ok();
    let rootfs = umoci_unpack(&out, "app", &t.path().join("bundle"));
    let port = free_port();
    let mut cmd = if is_root() && have_tool("chroot") {
        let mut c = Command::new("chroot");
        c.arg(&rootfs).arg(&exe);
        c
    } else {
        eprintln!("not root: running the server from the unpacked folder without chroot");
        Command::new(rootfs.join(exe.trim_start_matches('/')))
    };
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut child = cmd
        .arg(port.to_string())
        .env_clear()
        .env("PATH", path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let resp = http_get(port, "/alive", Duration::from_secs(30));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let (status, body) = resp.unwrap_or_else(|| {
        panic!(
            "no answer from the server; its stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(status.starts_with("HTTP/1.0 200"), "{status}");
    assert_eq!(body, r#"{"status": "ok"}"#);
}
