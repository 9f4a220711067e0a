//! Base and source variants: scratch, build files, tags, multi-platform and Docker-typed bases,
//! plain/zstd/unsorted tarballs, zstd layers.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn manifest_of(layout: &Path, tag: &str) -> (String, serde_json::Value) {
    let idx = index_json(layout);
    let d = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("tag {tag} in {idx}"));
    let digest = d["digest"].as_str().unwrap().to_string();
    let m = blob_json(layout, &digest);
    (digest, m)
}

#[test]
fn build_file_with_flag_overrides_and_second_tag_keeps_first() {
    let t = tempdir();
    let app = app_dir(t.path());
    fs::write(
        t.path().join("hoist.toml"),
        r#"
base = "scratch"
platform = "linux/arm64"
check = "warn"   # the entrypoint is a shell script and scratch has no shell
output = "oci:out:one"
entrypoint = ["/app/app"]
cmd = ["8000"]
workdir = "/workspace"
expose = ["8000/tcp"]

[env]
MODE = "file"
KEEP = "yes"

[labels]
"org.example.source" = "file"

[[layer]]
src = "app"
dest = "/app"
owner = "1000:1000"
"#,
    )
    .unwrap();
    let _ = app;
    let file = t.path().join("hoist.toml");
    let one = hoist_run(&["build", "-f", file.to_str().unwrap()]).ok();
    let out = t.path().join("out");
    assert!(
        one.starts_with(&format!("oci:{}:one@sha256:", out.display())),
        "{one}"
    );
    let two = hoist_run(&[
        "build",
        "-f",
        file.to_str().unwrap(),
        "--env",
        "MODE=flag",
        "--cmd",
        "9000",
        "--output",
        &format!("oci:{}:two", out.display()),
    ])
    .ok();
    let (d1, m1) = manifest_of(&out, "one");
    let (d2, m2) = manifest_of(&out, "two");
    assert_eq!(printed_digest(&one), d1);
    assert_eq!(printed_digest(&two), d2);
    assert_eq!(m1["layers"], m2["layers"], "same layer, same digest");
    let c1 = blob_json(&out, m1["config"]["digest"].as_str().unwrap());
    let c2 = blob_json(&out, m2["config"]["digest"].as_str().unwrap());
    assert_eq!(c1["architecture"], "arm64");
    assert_eq!(
        c1["config"]["Env"],
        serde_json::json!(["MODE=file", "KEEP=yes"])
    );
    assert_eq!(
        c2["config"]["Env"],
        serde_json::json!(["MODE=flag", "KEEP=yes"])
    );
    assert_eq!(c2["config"]["Cmd"], serde_json::json!(["9000"]));
    assert_eq!(c2["config"]["Entrypoint"], serde_json::json!(["/app/app"]));
    // Rebuilding tag one replaces only that entry.
    hoist_run(&["build", "-f", file.to_str().unwrap(), "--label", "x=y"]).ok();
    let idx = index_json(&out);
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(manifest_of(&out, "two").0, d2);
    assert_ne!(manifest_of(&out, "one").0, d1);
}

/// Writes an index over two images of `src` and tags it `multi` in the same layout.
fn make_index(layout: &Path, tags: &[(&str, &str, &str)]) -> String {
    let manifests: Vec<serde_json::Value> = tags
        .iter()
        .map(|(tag, os, arch)| {
            let (digest, m) = manifest_of(layout, tag);
            let size = fs::metadata(layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())).unwrap().len();
            let _ = m;
            serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size, "platform": {"os": os, "architecture": arch}})
        })
        .collect();
    let raw = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})).unwrap();
    let digest = hoist::Digest::of(&raw);
    fs::write(layout.join("blobs/sha256").join(digest.hex()), &raw).unwrap();
    let mut idx = index_json(layout);
    idx["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest.to_string(), "size": raw.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}
    }));
    fs::write(layout.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    digest.to_string()
}

#[test]
fn index_base_is_resolved_by_platform() {
    let t = tempdir();
    let base = t.path().join("base");
    let f = t.path().join("f");
    write_file(&f.join("x"), b"x", 0o644);
    for (tag, platform) in [("amd", "linux/amd64"), ("arm", "linux/arm64/v8")] {
        hoist_run(&[
            "build",
            "--base",
            "scratch",
            "--platform",
            platform,
            "--layer",
            &format!("{}:/{tag}", f.display()),
            "--output",
            &format!("oci:{}:{tag}", base.display()),
        ])
        .ok();
    }
    make_index(
        &base,
        &[("amd", "linux", "amd64"), ("arm", "linux", "arm64")],
    );
    let out = t.path().join("out");
    let (arm_digest, _) = manifest_of(&base, "arm");
    let r = hoist_run(&[
        "build",
        "--base",
        &format!("oci:{}:multi", base.display()),
        "--platform",
        "linux/arm64",
        "--output",
        &format!("oci:{}:x", out.display()),
    ])
    .ok();
    let (_, m) = manifest_of(&out, "x");
    assert_eq!(
        m["annotations"]["org.opencontainers.image.base.digest"],
        arm_digest.as_str(),
        "{r}"
    );
    let r = hoist_run(&[
        "build",
        "--base",
        &format!("oci:{}:multi", base.display()),
        "--platform",
        "linux/s390x",
        "--output",
        &format!("oci:{}:y", out.display()),
    ]);
    r.fails_with(1, &["linux/s390x", "linux/amd64", "linux/arm64"]);
    // A base for another platform than asked is refused.
    let r = hoist_run(&[
        "build",
        "--base",
        &format!("oci:{}:amd", base.display()),
        "--platform",
        "linux/arm64",
        "--output",
        &format!("oci:{}:z", out.display()),
    ]);
    r.fails_with(1, &["linux/arm64", "linux/amd64"]);
}

#[test]
fn docker_typed_base_becomes_oci_with_the_same_layer_digests() {
    if !have_tool("umoci") {
        return;
    }
    let t = tempdir();
    let base = umoci_base(t.path());
    // Rewrite the base manifest with Docker schema2 media types (as `docker save`-style tools do).
    let (_, mut m) = manifest_of(&base, "latest");
    m["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into();
    m["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
    m["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
    let raw = serde_json::to_vec(&m).unwrap();
    let digest = hoist::Digest::of(&raw);
    fs::write(base.join("blobs/sha256").join(digest.hex()), &raw).unwrap();
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": digest.to_string(), "size": raw.len(), "annotations": {"org.opencontainers.image.ref.name": "docker"}}]});
    fs::write(base.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    let out = t.path().join("out");
    hoist_run(&[
        "build",
        "--check=warn",
        "--base",
        &format!("oci:{}:docker", base.display()),
        "--env",
        "A=1",
        "--output",
        &format!("oci:{}:x", out.display()),
    ])
    .ok();
    let (_, om) = manifest_of(&out, "x");
    assert_eq!(
        om["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        om["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        om["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(om["layers"][0]["digest"], m["layers"][0]["digest"]);
    let rootfs = umoci_unpack(&out, "x", &t.path().join("b"));
    assert!(rootfs.join("etc/passwd").is_file());
}

/// A tarball whose members are out of order, written by Python's tarfile, compressed as asked.
fn unsorted_tarball(dir: &Path, name: &str, mode: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let script = r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], sys.argv[2]) as t:
    for name, data in [("top/z.txt", b"zzz"), ("top/a/b.txt", b"bbb"), ("top/a.txt", b"aaa"), ("top/m/n/o.bin", bytes(range(256)) * 300)]:
        i = tarfile.TarInfo(name); i.size = len(data); i.mode = 0o640
        t.addfile(i, io.BytesIO(data))
    i = tarfile.TarInfo("top/z-hard"); i.type = tarfile.LNKTYPE; i.linkname = "top/z.txt"; t.addfile(i)
"#;
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(mode))
    .ok();
    path
}

#[test]
fn tarball_sources_plain_gzip_zstd_unsorted() {
    if !(have_tool("python3") && have_tool("umoci")) {
        return;
    }
    let t = tempdir();
    let plain = unsorted_tarball(t.path(), "u.tar", "w");
    let gz = unsorted_tarball(t.path(), "u.tgz", "w:gz");
    // zstd: compress the plain tar with the zstd crate (the file name says nothing).
    let zst = t.path().join("u.bin");
    let mut enc = zstd::stream::write::Encoder::new(fs::File::create(&zst).unwrap(), 3).unwrap();
    enc.write_all(&fs::read(&plain).unwrap()).unwrap();
    enc.finish().unwrap();
    let out = t.path().join("out");
    let mut digests = vec![];
    for (i, src) in [&plain, &gz, &zst].iter().enumerate() {
        let stdout = hoist_run(&[
            "build",
            "--base",
            "scratch",
            "--layer",
            &format!("{}:/data,strip=1,owner=5:6", src.display()),
            "--output",
            &format!("oci:{}:t{i}", out.display()),
        ])
        .ok();
        let (_, m) = manifest_of(&out, &format!("t{i}"));
        assert_eq!(
            printed_digest(&stdout),
            manifest_of(&out, &format!("t{i}")).0
        );
        digests.push(m["layers"][0]["digest"].clone());
    }
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "same content, same layer whatever the source's compression: {digests:?}"
    );
    let rootfs = umoci_unpack(&out, "t2", &t.path().join("b"));
    let d = rootfs.join("data");
    assert_eq!(fs::read(d.join("z.txt")).unwrap(), b"zzz");
    assert_eq!(fs::read(d.join("a/b.txt")).unwrap(), b"bbb");
    assert_eq!(fs::read(d.join("a.txt")).unwrap(), b"aaa");
    assert_eq!(fs::read(d.join("m/n/o.bin")).unwrap().len(), 256 * 300);
    assert_eq!(
        fs::metadata(d.join("z-hard")).unwrap().ino(),
        fs::metadata(d.join("z.txt")).unwrap().ino()
    );
    assert_eq!(fs::metadata(d.join("a.txt")).unwrap().mode() & 0o777, 0o640);
    if is_root() {
        assert_eq!(
            fs::metadata(d.join("m/n")).unwrap().uid(),
            5,
            "implied folders take the layer owner"
        );
    }
}

#[test]
fn zstd_layers_are_read_by_zstd_tar_and_skopeo() {
    // Debian's umoci (0.4) does not read zstd layers; GNU tar + zstd and skopeo do.
    if !(have_tool("zstd") && have_tool("skopeo")) {
        return;
    }
    let t = tempdir();
    let app = app_dir(t.path());
    let out = t.path().join("out");
    hoist_run(&[
        "build",
        "--base",
        "scratch",
        "--compression",
        "zstd",
        "--layer",
        &format!("{}:/app", app.display()),
        "--output",
        &format!("oci:{}:z", out.display()),
    ])
    .ok();
    let (_, m) = manifest_of(&out, "z");
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let layer = out.join("blobs/sha256").join(
        m["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap(),
    );
    let rootfs = t.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs))
    .ok();
    assert_eq!(
        fs::read(rootfs.join("app/_internal/lib/deep/data.txt")).unwrap(),
        b"deep data\n"
    );
    let copy = t.path().join("copy");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:z", out.display()),
        &format!("oci:{}:z", copy.display()),
    ]))
    .ok();
}
