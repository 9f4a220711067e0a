//! The runtime image end to end: accounts and folders without RUN (`--user-add`, `--mkdir`)
//! read back by umoci, the PyInstaller server answering `/alive` from a chroot of the unpacked
//! image, and Playwright browser folders packed and added.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::fixtures::*;

const SERVER_DEST: &str = "/openhands/action-execution-server";

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn pyinstaller_server_with_user_add_and_mkdir_answers_alive_from_the_unpacked_image() {
    if !(can_debootstrap() && have_tool("umoci") && have_tool("chroot")) {
        return;
    }
    let Some(bundle) = pyinstaller_bundle() else {
        return;
    };
    let t = tempdir();
    let base = debian_base("bookworm");
    let out = t.path().join("runtime");
    let r = hoist_run(&[
        "build",
        "--base",
        &format!("oci:{}:latest", base.display()),
        "--layer",
        &format!("{}:{SERVER_DEST}", bundle.display()),
        "--user-add",
        "openhands:1000",
        "--mkdir",
        "/workspace,owner=1000:1000",
        "--entrypoint",
        &format!(r#"["{SERVER_DEST}/server"]"#),
        "--cmd",
        r#"["8000","--working-dir","/workspace"]"#,
        "--user",
        "openhands",
        "--workdir",
        "/workspace",
        "--output",
        &format!("oci:{}:dev", out.display()),
    ]);
    r.ok();
    assert!(r.stderr().contains("0 error(s)"), "{}", r.stderr());

    let rootfs = umoci_unpack(&out, "dev", &t.path().join("bundle"));
    let base_root = debian_rootfs("bookworm");
    for (file, new_line) in [
        (
            "etc/passwd",
            "openhands:x:1000:1000::/home/openhands:/bin/sh",
        ),
        ("etc/group", "openhands:x:1000:"),
        ("etc/shadow", "openhands:!::0:99999:7:::"),
    ] {
        let mut want = lines(&base_root.join(file));
        want.push(new_line.to_string());
        assert_eq!(
            lines(&rootfs.join(file)),
            want,
            "{file}: every base entry plus the new one"
        );
    }
    // The base was packed by hoist (every entry root-owned), so its /etc/shadow is 0640 0:0.
    let shadow = fs::metadata(rootfs.join("etc/shadow")).unwrap();
    let base_shadow = fs::metadata(base_root.join("etc/shadow")).unwrap();
    assert_eq!(
        (shadow.mode() & 0o7777, shadow.uid(), shadow.gid()),
        (base_shadow.mode() & 0o7777, 0, 0),
        "/etc/shadow keeps the base's mode and owner"
    );
    for dir in ["home/openhands", "workspace"] {
        let m = fs::metadata(rootfs.join(dir)).unwrap();
        assert!(m.is_dir());
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "owner of /{dir}");
    }

    // Run the image's command as the image's user, from a chroot of the unpacked image.
    let port = free_port();
    let mut child = Command::new("chroot")
        .arg("--userspec=1000:1000")
        .arg(&rootfs)
        .arg(format!("{SERVER_DEST}/server"))
        .arg(port.to_string())
        .args(["--working-dir", "/workspace"])
        .env("HOME", "/home/openhands")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let result = http_get(port, "/alive", Duration::from_secs(30));
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let (status, body) = result.unwrap_or_else(|| {
        panic!(
            "server did not answer; its stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, r#"{"status": "ok"}"#);

    // The same image under podman (as root, vfs storage, runc), with its own entrypoint, user
    // and working directory; only the port argument is given.
    if is_root() && have_tool("podman") && have_tool("runc") {
        podman_serves_alive(t.path(), &out, "dev");
    }
}

/// Runs `oci:LAYOUT:TAG` with podman (private storage under `dir`) and expects HTTP 200 on
/// `/alive`.
fn podman_serves_alive(dir: &Path, layout: &Path, tag: &str) {
    // This sandbox refuses the default RLIMIT_NOFILE podman sets; keep the caller's limits.
    let conf = dir.join("containers.conf");
    fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(dir.join("podman-root"))
            .arg("--runroot")
            .arg(dir.join("podman-run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    let port = free_port().to_string();
    let name = format!("hoist-test-{}", std::process::id());
    // podman names the image after its path, which must be lowercase: link it from one.
    let link = std::env::temp_dir().join(format!("hoist-podman-{}", std::process::id()));
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(layout, &link).unwrap();
    let image = format!("oci:{}:{tag}", link.display());
    let started = run(&mut podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--runtime",
        "runc",
        "--network",
        "host",
        &image,
        &port,
        "--working-dir",
        "/workspace",
    ]));
    let answer = started
        .out
        .status
        .success()
        .then(|| http_get(port.parse().unwrap(), "/alive", Duration::from_secs(60)))
        .flatten();
    let logs = run(&mut podman(&["logs", &name]));
    let user = run(&mut podman(&[
        "inspect",
        "--format",
        "{{.Config.User}}",
        &name,
    ]));
    run(&mut podman(&["rm", "-f", &name]));
    let _ = fs::remove_file(&link);
    started.ok();
    let (status, body) = answer.unwrap_or_else(|| {
        panic!(
            "no answer under podman; logs:\n{}{}",
            logs.stdout(),
            logs.stderr()
        )
    });
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, r#"{"status": "ok"}"#);
    assert_eq!(user.stdout().trim(), "openhands");
}

fn browsers_folder(root: &Path, complete: bool) {
    write_file(
        &root.join("chromium-1187/chrome-linux/chrome"),
        b"chrome",
        0o755,
    );
    write_file(
        &root.join("chromium_headless_shell-1187/chrome-linux/headless_shell"),
        b"hs",
        0o755,
    );
    write_file(&root.join("ffmpeg-1011/ffmpeg-linux"), b"ffmpeg", 0o755);
    for b in ["chromium_headless_shell-1187", "ffmpeg-1011"] {
        write_file(&root.join(b).join("INSTALLATION_COMPLETE"), b"", 0o644);
    }
    if complete {
        write_file(
            &root.join("chromium-1187/INSTALLATION_COMPLETE"),
            b"",
            0o644,
        );
    }
}

#[test]
fn browsers_pack_is_deterministic_refuses_unfinished_installs_and_lands_on_the_path() {
    if !have_tool("umoci") {
        return;
    }
    let t = tempdir();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    browsers_folder(&a, true);
    std::thread::sleep(Duration::from_millis(1100));
    browsers_folder(&b, true);
    let pa = hoist_run(&[
        "browsers",
        "pack",
        a.to_str().unwrap(),
        t.path().join("a.tgz").to_str().unwrap(),
    ])
    .ok();
    let pb = hoist_run(&[
        "browsers",
        "pack",
        b.to_str().unwrap(),
        t.path().join("b.tgz").to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        printed_digest(&pa),
        printed_digest(&pb),
        "same folder, same tarball"
    );

    let c = t.path().join("c");
    browsers_folder(&c, false);
    let out = t.path().join("c.tgz");
    hoist_run(&[
        "browsers",
        "pack",
        c.to_str().unwrap(),
        out.to_str().unwrap(),
    ])
    .fails_with(1, &["chromium-1187", "INSTALLATION_COMPLETE"]);
    assert!(!out.exists());

    // A bundle that expects another Chromium revision: the build warns.
    let app = t.path().join("app");
    write_file(
        &app.join("_internal/playwright/driver/package/browsers.json"),
        br#"{"browsers":[{"name":"chromium","revision":"1200"},{"name":"chromium-headless-shell","revision":"1187"}]}"#,
        0o644,
    );
    let image = t.path().join("img");
    let r = hoist_run(&[
        "build",
        "--base",
        "scratch",
        "--platform",
        "linux/amd64",
        "--browsers",
        &format!(
            "{}:/openhands/browser/ms-playwright",
            t.path().join("a.tgz").display()
        ),
        "--layer",
        &format!("{}:/app", app.display()),
        "--output",
        &format!("oci:{}:x", image.display()),
    ]);
    r.ok();
    assert!(
        r.stderr().contains("expects chromium-1200"),
        "{}",
        r.stderr()
    );
    assert!(
        !r.stderr().contains("chromium_headless_shell-1187, but"),
        "{}",
        r.stderr()
    );
    let rootfs = umoci_unpack(&image, "x", &t.path().join("unpacked"));
    assert!(rootfs
        .join("openhands/browser/ms-playwright/chromium-1187/INSTALLATION_COMPLETE")
        .is_file());
    let idx = index_json(&image);
    let manifest = blob_json(&image, idx["manifests"][0]["digest"].as_str().unwrap());
    let config = blob_json(&image, manifest["config"]["digest"].as_str().unwrap());
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"PLAYWRIGHT_BROWSERS_PATH=/openhands/browser/ms-playwright"),
        "{env:?}"
    );
}
