//! The layer cache: hits across runs, misses on any change (including content changed with size
//! and mtime kept), eviction, and no effect on the bytes.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// Waits out the cache's racy window so freshly written fixtures may be cached.
fn settle() {
    std::thread::sleep(Duration::from_millis(2100));
}

fn build(cache: &Path, layers: &[String], out: &Path, extra: &[&str]) -> Run {
    let mut c = hoist();
    c.env("HOIST_CACHE_DIR", cache).args([
        "build",
        "--base",
        "scratch",
        "--platform",
        "linux/amd64",
    ]);
    for l in layers {
        c.arg("--layer").arg(l);
    }
    c.args(extra)
        .arg("--output")
        .arg(format!("oci:{}:t", out.display()));
    run(&mut c)
}

fn layer_digests(layout: &Path) -> Vec<String> {
    let m = blob_json(
        layout,
        index_json(layout)["manifests"][0]["digest"]
            .as_str()
            .unwrap(),
    );
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn cache_hits_misses_and_never_returns_a_stale_layer() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let app = app_dir(t.path());
    let tarball = browser_tarball(t.path());
    let layers = vec![
        format!("{}:/app", app.display()),
        format!("{}:/browser", tarball.display()),
    ];
    settle();

    let cold = build(&cache, &layers, &t.path().join("o1"), &[]);
    let cold_digest = printed_digest(&cold.ok());
    assert!(!cold.stderr().contains("cached"), "{}", cold.stderr());

    // A second run (another process) with nothing changed: both layers come from the cache.
    let warm = build(&cache, &layers, &t.path().join("o2"), &[]);
    assert_eq!(printed_digest(&warm.ok()), cold_digest);
    assert_eq!(
        warm.stderr().matches(": cached sha256:").count(),
        2,
        "{}",
        warm.stderr()
    );

    // Same size, same mtime, other content: must be rebuilt.
    let f = app.join("_internal/lib/deep/data.txt");
    let before = fs::metadata(&f).unwrap();
    fs::write(&f, b"DEEP DATA\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), before.len());
    assert_eq!(
        fs::metadata(&f).unwrap().modified().unwrap(),
        before.modified().unwrap()
    );
    settle();
    let changed = build(&cache, &layers, &t.path().join("o3"), &[]);
    changed.ok();
    assert_eq!(
        changed.stderr().matches(": cached sha256:").count(),
        1,
        "only the tarball layer is cached:\n{}",
        changed.stderr()
    );
    let (l1, l3) = (
        layer_digests(&t.path().join("o1")),
        layer_digests(&t.path().join("o3")),
    );
    assert_ne!(l1[0], l3[0], "the changed layer was rebuilt");
    assert_eq!(l1[1], l3[1]);
    if have_tool("umoci") {
        let rootfs = umoci_unpack(&t.path().join("o3"), "t", &t.path().join("b3"));
        assert_eq!(
            fs::read(rootfs.join("app/_internal/lib/deep/data.txt")).unwrap(),
            b"DEEP DATA\n"
        );
    }

    // Other options are other layers.
    let zstd = build(
        &cache,
        &layers,
        &t.path().join("o4"),
        &["--compression", "zstd"],
    );
    zstd.ok();
    assert!(!zstd.stderr().contains("cached"), "{}", zstd.stderr());

    // --no-cache builds everything and gives the same bytes.
    let nocache = build(&cache, &layers, &t.path().join("o5"), &["--no-cache"]);
    nocache.ok();
    assert!(!nocache.stderr().contains("cached"));
    assert_eq!(layer_digests(&t.path().join("o5")), l3);
}

#[test]
fn recently_changed_sources_are_not_cached() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let app = app_dir(t.path());
    let layers = vec![format!("{}:/app", app.display())];
    build(&cache, &layers, &t.path().join("o1"), &[]).ok();
    let again = build(&cache, &layers, &t.path().join("o2"), &[]);
    again.ok();
    assert!(
        !again.stderr().contains("cached"),
        "files changed less than 2 s ago are built, not trusted: {}",
        again.stderr()
    );
}

#[test]
fn cache_is_bounded() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let a = t.path().join("a");
    let b = t.path().join("b");
    // Incompressible content (xorshift) so each layer is a few hundred KiB.
    let bytes = noise(400_000, 0x2545F4914F6CDD1D);
    write_file(&a.join("f"), &bytes, 0o644);
    write_file(&b.join("f"), &bytes[..300_000], 0o644);
    settle();
    let bound = ["--cache-max-size", "500K"];
    build(
        &cache,
        &[format!("{}:/a", a.display())],
        &t.path().join("o1"),
        &bound,
    )
    .ok();
    build(
        &cache,
        &[format!("{}:/b", b.display())],
        &t.path().join("o2"),
        &bound,
    )
    .ok();
    let total: u64 = fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 500 << 10, "cache holds {total} bytes");
    // The evicted layer is a miss again; the kept one a hit.
    let a_again = build(
        &cache,
        &[format!("{}:/a", a.display())],
        &t.path().join("o3"),
        &bound,
    );
    a_again.ok();
    assert!(!a_again.stderr().contains("cached"), "{}", a_again.stderr());
}

#[test]
fn copied_sources_hit_the_cache_by_content() {
    let t = tempdir();
    let cache = t.path().join("cache");
    let app = app_dir(t.path());
    settle();
    build(
        &cache,
        &[format!("{}:/app", app.display())],
        &t.path().join("o1"),
        &[],
    )
    .ok();
    // A fresh checkout: same files, new inodes and ctimes (what a CI runner sees every time).
    let copy = t.path().join("checkout");
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(&app)
        .arg(&copy))
    .ok();
    settle();
    let r = build(
        &cache,
        &[format!("{}:/app", copy.display())],
        &t.path().join("o2"),
        &[],
    );
    r.ok();
    assert!(
        r.stderr().contains("same content as a cached layer"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        layer_digests(&t.path().join("o1")),
        layer_digests(&t.path().join("o2"))
    );
    // Now known by its stat data too.
    let again = build(
        &cache,
        &[format!("{}:/app", copy.display())],
        &t.path().join("o3"),
        &[],
    );
    assert!(
        again.stderr().contains(": cached sha256:"),
        "{}",
        again.stderr()
    );
    // A copy whose content differs is built.
    fs::write(copy.join("app"), b"#!/bin/sh\necho other\n").unwrap();
    settle();
    let changed = build(
        &cache,
        &[format!("{}:/app", copy.display())],
        &t.path().join("o4"),
        &[],
    );
    changed.ok();
    assert!(!changed.stderr().contains("cached"), "{}", changed.stderr());
    assert_ne!(
        layer_digests(&t.path().join("o1")),
        layer_digests(&t.path().join("o4"))
    );
}
