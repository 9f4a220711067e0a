//! `hoist build` end to end: read back by umoci, skopeo and oci-image-tool; reproducibility;
//! rootless builds; bad input.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// The issue's full build command, on generated inputs.
fn full_build(dir: &Path, base: &Path, out: &str) -> Run {
    let app = app_dir(dir);
    let tarball = browser_tarball(dir);
    hoist_run(&[
        "build",
        "--base",
        &format!("oci:{}:latest", base.display()),
        "--platform",
        "linux/amd64",
        "--layer",
        &format!(
            "{}:/openhands/action-execution-server,owner=1000:1000",
            app.display()
        ),
        "--layer",
        &format!("{}:/openhands/browser/ms-playwright", tarball.display()),
        "--env",
        "PLAYWRIGHT_BROWSERS_PATH=/openhands/browser/ms-playwright",
        "--env",
        "PATH=/openhands/bin:$PATH",
        "--entrypoint",
        r#"["/openhands/action-execution-server/action-execution-server"]"#,
        "--cmd",
        r#"["8000","--working-dir","/workspace"]"#,
        "--workdir",
        "/workspace",
        "--user",
        "root",
        "--label",
        "org.example.k=v",
        "--expose",
        "8000/tcp",
        "--output",
        out,
        // The entrypoint names a file the fixture lacks; the checks' own tests live in check.rs.
        "--check=warn",
    ])
}

#[test]
fn build_is_read_back_by_umoci_skopeo_and_oci_image_tool() {
    if !(have_tool("umoci") && have_tool("skopeo") && have_tool("oci-image-tool")) {
        return;
    }
    let t = tempdir();
    let base = umoci_base(t.path());
    let out = t.path().join("out/runtime");
    let stdout = full_build(t.path(), &base, &format!("oci:{}:dev", out.display())).ok();
    assert!(
        stdout.starts_with(&format!("oci:{}:dev@sha256:", out.display())),
        "{stdout}"
    );

    // umoci: every file with content, mode, owner and link.
    let rootfs = umoci_unpack(&out, "dev", &t.path().join("bundle"));
    let srv = rootfs.join("openhands/action-execution-server");
    let check = |rel: &str, mode: u32, uid: u32, content: Option<&[u8]>| {
        let p = srv.join(rel);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(m.mode() & 0o7777, mode, "mode of {rel}");
        if is_root() {
            assert_eq!((m.uid(), m.gid()), (uid, uid), "owner of {rel}");
        }
        if let Some(c) = content {
            assert_eq!(fs::read(&p).unwrap(), c, "content of {rel}");
        }
    };
    check("", 0o755, 1000, None);
    check("app", 0o755, 1000, Some(b"#!/bin/sh\necho app\n"));
    check(
        "_internal/lib/deep/data.txt",
        0o644,
        1000,
        Some(b"deep data\n"),
    );
    check("_internal/secret.key", 0o600, 1000, Some(b"top secret\n"));
    check("_internal/libfoo.so.1", 0o755, 1000, None);
    assert_eq!(
        fs::read_link(srv.join("_internal/libfoo.so")).unwrap(),
        Path::new("libfoo.so.1")
    );
    let a = fs::metadata(srv.join("_internal/lib/deep/data.txt")).unwrap();
    let b = fs::metadata(srv.join("_internal/data-hardlink.txt")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hardlink kept as a hardlink");
    let parent = fs::metadata(rootfs.join("openhands")).unwrap();
    assert_eq!(parent.mode() & 0o7777, 0o755);
    if is_root() {
        assert_eq!(parent.uid(), 0, "parent directories are root's");
    }
    let pw = rootfs.join("openhands/browser/ms-playwright");
    assert_eq!(
        fs::read(pw.join("chrome-linux/chrome")).unwrap(),
        b"\x7fELF chrome\n"
    );
    assert_eq!(
        fs::metadata(pw.join("chrome-linux/chrome")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::read_link(pw.join("chrome-linux/libGLESv2.so")).unwrap(),
        Path::new("swiftshader/libGLESv2.so")
    );
    assert_eq!(
        fs::read(pw.join("chrome-linux/locales/en-US.pak")).unwrap(),
        b"pak\n"
    );
    // The base's files are still there.
    assert_eq!(
        fs::read(rootfs.join("bin/marker")).unwrap(),
        b"#!/bin/sh\necho base\n"
    );

    // skopeo: the config.
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci:{}:dev", out.display()),
    ]))
    .ok();
    let cfg: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let c = &cfg["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/openhands/action-execution-server/action-execution-server"])
    );
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["8000", "--working-dir", "/workspace"])
    );
    assert_eq!(c["WorkingDir"], "/workspace");
    assert_eq!(c["User"], "root");
    assert_eq!(c["Labels"]["org.example.k"], "v");
    assert_eq!(c["ExposedPorts"]["8000/tcp"], serde_json::json!({}));
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"PLAYWRIGHT_BROWSERS_PATH=/openhands/browser/ms-playwright"),
        "{env:?}"
    );
    assert!(
        env.contains(&"PATH=/openhands/bin:/usr/bin:/bin"),
        "PATH extended from the base: {env:?}"
    );
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let layer_history: Vec<_> = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .collect();
    assert_eq!(layer_history.len(), 3, "one history entry per layer");
    assert!(layer_history[2]["created_by"]
        .as_str()
        .unwrap()
        .contains("chromium-linux.tar.gz"));
    assert_eq!(cfg["created"], "1970-01-01T00:00:00Z");
    let inspect: serde_json::Value = serde_json::from_str(
        &run(Command::new("skopeo").args(["inspect", &format!("oci:{}:dev", out.display())])).ok(),
    )
    .unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);

    // oci-image-tool: the layout and the tagged image validate.
    run(Command::new("oci-image-tool")
        .args(["validate", "--type", "image", "--ref", "name=dev"])
        .arg(&out))
    .ok();

    // Base layer blobs carried over byte for byte, annotations name the base.
    let base_manifest = blob_json(
        &base,
        index_json(&base)["manifests"][0]["digest"]
            .as_str()
            .unwrap(),
    );
    let idx = index_json(&out);
    let manifest = blob_json(&out, idx["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(
        manifest["layers"][0]["digest"],
        base_manifest["layers"][0]["digest"]
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.digest"],
        index_json(&base)["manifests"][0]["digest"]
    );
    assert_eq!(
        idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "dev"
    );
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}

#[test]
fn layers_are_read_by_python_tarfile_with_owners_and_links() {
    if !have_tool("python3") {
        return;
    }
    let t = tempdir();
    let out = t.path().join("out");
    let app = app_dir(t.path());
    hoist_run(&[
        "build",
        "--base",
        "scratch",
        "--layer",
        &format!("{}:/srv/app,owner=1000:1001", app.display()),
        "--output",
        &format!("oci:{}:x", out.display()),
    ])
    .ok();
    let manifest = blob_json(
        &out,
        index_json(&out)["manifests"][0]["digest"].as_str().unwrap(),
    );
    let layer = out.join("blobs/sha256").join(
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap(),
    );
    let script = r#"
import sys, tarfile
with tarfile.open(sys.argv[1], "r:gz") as t:
    for m in t.getmembers():
        kind = "d" if m.isdir() else "l" if m.issym() else "h" if m.islnk() else "f"
        print(kind, oct(m.mode), m.uid, m.gid, repr(m.uname), m.mtime, m.name, m.linkname)
"#;
    let listing = run(Command::new("python3").arg("-c").arg(script).arg(&layer)).ok();
    let lines: Vec<&str> = listing.lines().collect();
    let names: Vec<&str> = lines.iter().map(|l| l.split(' ').nth(6).unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| {
        n.trim_end_matches('/')
            .split('/')
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    assert_eq!(names, sorted, "entries sorted by path");
    assert!(lines[0].starts_with("d 0o755 0 0 '' 0 srv"), "{listing}");
    assert!(
        listing.contains("f 0o600 1000 1001 '' 0 srv/app/_internal/secret.key"),
        "{listing}"
    );
    assert!(
        listing.contains("l 0o777 1000 1001 '' 0 srv/app/_internal/libfoo.so libfoo.so.1"),
        "{listing}"
    );
    assert!(listing.contains("h 0o644 1000 1001 '' 0 srv/app/_internal/lib/deep/data.txt srv/app/_internal/data-hardlink.txt"), "{listing}");
}

#[test]
fn same_inputs_give_the_same_digest_across_folders_and_mtimes() {
    let digest_of = |epoch: &str, touch: i64| {
        let t = tempdir();
        let app = app_dir(t.path());
        let tarball = browser_tarball(t.path());
        // Change every input file's mtime between the two builds.
        run(Command::new("find").arg(&app).args([
            "-exec",
            "touch",
            "-h",
            "-d",
            &format!("@{touch}"),
            "{}",
            "+",
        ]))
        .ok();
        let out = t.path().join("o");
        let r = run(hoist()
            .env("SOURCE_DATE_EPOCH", epoch)
            .args(["build", "--base", "scratch", "--platform", "linux/amd64"])
            .arg("--layer")
            .arg(format!("{}:/app,owner=1000:1000", app.display()))
            .arg("--layer")
            .arg(format!("{}:/browser,strip=1", tarball.display()))
            .args(["--env", "A=1", "--output"])
            .arg(format!("oci:{}:t", out.display())));
        printed_digest(&r.ok())
    };
    let first = digest_of("1700000000", 1_000_000_000);
    let second = digest_of("1700000000", 1_600_000_000);
    assert_eq!(first, second, "same inputs, different folders and mtimes");
    let other_epoch = digest_of("1700000001", 1_000_000_000);
    assert_ne!(
        first, other_epoch,
        "SOURCE_DATE_EPOCH is part of the result"
    );
}

#[test]
fn unprivileged_build_gives_the_same_digest_as_root() {
    if !is_root() {
        eprintln!("SKIPPED: comparing with a root build needs the tests to run as root (CI does)");
        assert!(!in_ci(), "CI runs as root");
        return;
    }
    if !have_tool("setpriv") {
        return;
    }
    let t = tempdir();
    let app = app_dir(t.path());
    // nobody must be able to read every input.
    fs::set_permissions(
        app.join("_internal/secret.key"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let tarball = browser_tarball(t.path());
    let outdir = t.path().join("nobody-out");
    fs::create_dir(&outdir).unwrap();
    run(Command::new("chown").arg("65534:65534").arg(&outdir)).ok();
    let args = |out: &Path| {
        vec![
            "build".to_string(),
            "--base".into(),
            "scratch".into(),
            "--platform".into(),
            "linux/amd64".into(),
            "--layer".into(),
            format!("{}:/app,owner=1000:1000", app.display()),
            "--layer".into(),
            format!("{}:/browser", tarball.display()),
            "--output".into(),
            format!("oci:{}:t", out.display()),
        ]
    };
    let as_root = printed_digest(&run(hoist().args(args(&t.path().join("root-out")))).ok());
    let mut c = Command::new("setpriv");
    c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(hoist_bin())
        .args(args(&outdir.join("layout")))
        .env_remove("SOURCE_DATE_EPOCH");
    let r = run(&mut c);
    let as_nobody = printed_digest(&r.ok());
    assert_eq!(as_root, as_nobody);
    let m = fs::metadata(outdir.join("layout/index.json")).unwrap();
    assert_eq!(m.uid(), 65534, "written by the unprivileged user");
}

/// Lists every entry of every layer of the image tagged `tag` in `layout` (Python's tarfile):
/// `kind mode uid gid name`, one per line.
fn layer_listing(layout: &Path, tag: &str) -> String {
    let index = index_json(layout);
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let manifest = blob_json(layout, desc["digest"].as_str().unwrap());
    let script = r#"
import sys, tarfile
for path in sys.argv[1:]:
    with tarfile.open(path, "r:*") as t:
        for m in t.getmembers():
            kind = "d" if m.isdir() else "l" if m.issym() else "f"
            print(kind, oct(m.mode), m.uid, m.gid, m.name)
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script);
    for hex in layer_hexes(&manifest) {
        cmd.arg(layout.join("blobs/sha256").join(hex));
    }
    run(&mut cmd).ok()
}

#[test]
fn parent_folders_copy_a_local_base_and_symlinked_parents_are_refused() {
    if !have_tool("python3") {
        return;
    }
    let t = tempdir();
    let out = t.path().join("out");
    // `hoist build CHECK --base BASE --layer L… --output oci:out:TAG`.
    let build = |check: &str, base: &str, layers: &[String], tag: &str| {
        let mut c = hoist();
        c.args(["build", check, "--base", base]);
        for l in layers {
            c.args(["--layer", l]);
        }
        run(c.args(["--output", &format!("oci:{}:{tag}", out.display())]))
    };
    // A base with /tmp 1777, /lib -> usr/lib (merged /usr) and /home/app owned by 1000, 0750.
    let root = t.path().join("root");
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    write_file(&root.join("usr/lib/marker"), b"m\n", 0o644);
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    let home_app = t.path().join("home-app");
    write_file(&home_app.join(".profile"), b"p\n", 0o644);
    fs::set_permissions(&home_app, fs::Permissions::from_mode(0o750)).unwrap();
    let layer = |src: &Path, dest: &str| format!("{}:{dest}", src.display());
    let base_layers = [
        layer(&root, "/"),
        layer(&home_app, "/home/app,owner=1000:1000"),
    ];
    build("--no-check", "scratch", &base_layers, "base").ok();
    let base = format!("oci:{}:base", out.display());
    let src = t.path().join("src");
    write_file(&src.join("f"), b"f\n", 0o644);
    for (check, tag) in [("--no-check", "nocheck"), ("--check=warn", "warn")] {
        let layers = [layer(&src, "/tmp/x"), layer(&src, "/home/app/srv")];
        build(check, &base, &layers, tag).ok();
        let listing = layer_listing(&out, tag);
        for line in [
            "d 0o1777 0 0 tmp\n",
            "d 0o755 0 0 tmp/x\n",
            "d 0o755 0 0 home\n",
            "d 0o750 1000 1000 home/app\n",
            "d 0o755 0 0 home/app/srv\n",
        ] {
            assert!(listing.contains(line), "{check}: no {line:?} in\n{listing}");
        }
    }
    // A destination through the base's /lib symlink would replace it with a folder.
    let before = snapshot(&out);
    let r = build("--no-check", &base, &[layer(&src, "/lib/app")], "lib");
    r.fails_with(1, &["/lib/app", "/lib is a symlink to usr/lib"]);
    assert_eq!(snapshot(&out), before);
    // A source folder written as /tmp itself replaces the base's folder: the checks warn.
    let r = build("--check=warn", &base, &[layer(&src, "/tmp")], "tmp");
    r.ok();
    assert!(
        r.stderr().contains(
            "/tmp\n  warning[folder]: the new layers change this folder of the base from 1777 0:0 to 755 0:0"
        ),
        "{}",
        r.stderr()
    );
    // On any base, a folder an earlier layer writes keeps its mode and owner in a later one.
    let nested = [
        layer(&home_app, "/srv/app,owner=1000:1000"),
        layer(&src, "/srv/app/data"),
    ];
    build("--no-check", "scratch", &nested, "nested").ok();
    let listing = layer_listing(&out, "nested");
    assert_eq!(
        listing.matches("d 0o750 1000 1000 srv/app\n").count(),
        2,
        "both layers write /srv/app as the first does:\n{listing}"
    );
    // The real path is fine.
    build(
        "--no-check",
        &base,
        &[layer(&src, "/usr/lib/app")],
        "usrlib",
    )
    .ok();
}

/// Every file below `dir` whose name starts with `.tmp` (a blob being written).
fn temp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(temp_files(&p));
        } else if e.file_name().to_string_lossy().starts_with(".tmp") {
            found.push(p);
        }
    }
    found
}

#[test]
fn interrupted_build_removes_its_temporary_files() {
    if !have_tool("tar") {
        return;
    }
    let t = tempdir();
    // A tarball holding 256 MiB of zeros (tiny once gzipped; decompressed into TMPDIR) and a
    // folder with a 256 MiB sparse file: seconds of work for the debug build of hoist.
    let payload = t.path().join("payload");
    fs::create_dir_all(&payload).unwrap();
    fs::File::create(payload.join("zeros"))
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let tgz = t.path().join("payload.tar.gz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&payload)
        .arg("."))
    .ok();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_host = dead.local_addr().unwrap().to_string();
    drop(dead);
    let out = t.path().join("out");
    // With --output; and push-only, where the layers go to a staging layout in TMPDIR.
    let cases = [
        vec!["--output".to_string(), format!("oci:{}:x", out.display())],
        vec![
            "--push".to_string(),
            format!("{dead_host}/x/y:1"),
            "--insecure-registry".to_string(),
            dead_host.clone(),
        ],
    ];
    for (i, dest) in cases.iter().enumerate() {
        let tmp = t.path().join(format!("tmp{i}"));
        let cache = t.path().join(format!("cache{i}"));
        fs::create_dir_all(&tmp).unwrap();
        let mut child = hoist()
            .env("TMPDIR", &tmp)
            .args(["build", "--no-check", "--base", "scratch", "--cache-dir"])
            .arg(&cache)
            .arg("--layer")
            .arg(format!("{}:/a", tgz.display()))
            .arg("--layer")
            .arg(format!("{}:/b", payload.display()))
            .args(dest)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the build is under way: the tarball's decompressed copy is in TMPDIR.
        let started = std::time::Instant::now();
        while fs::read_dir(&tmp).unwrap().count() == 0 {
            assert!(
                started.elapsed().as_secs() < 60,
                "case {i}: nothing in TMPDIR"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "case {i}: hoist ended early"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        run(Command::new("kill").args(["-INT", &child.id().to_string()])).ok();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "case {i}: {stderr}");
        assert!(
            stderr.contains("interrupted by signal 2"),
            "case {i}: {stderr}"
        );
        let left: Vec<_> = fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "case {i}: left in TMPDIR: {left:?}");
        assert_eq!(
            temp_files(&cache),
            Vec::<std::path::PathBuf>::new(),
            "case {i}"
        );
        assert_eq!(
            temp_files(&out),
            Vec::<std::path::PathBuf>::new(),
            "case {i}"
        );
    }
    // Nothing was tagged in the output.
    if out.join("index.json").exists() {
        assert_eq!(index_json(&out)["manifests"], serde_json::json!([]));
    }
}
