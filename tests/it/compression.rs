//! Parallel gzip layers (several gzip members) are read completely by umoci, containers/image
//! (skopeo), GNU gzip and tar, Python's tarfile and flate2's MultiGzDecoder; the bytes do not
//! depend on the thread count; `gzip-single` is one member for first-member-only readers.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A folder whose layer spans several 1 MiB blocks, with a small file sorted last.
fn multi_block_source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let mut x = 88172645463325252u64;
    let words = [
        "alpha ", "beta ", "gamma ", "delta\n", "epsilon ", "zeta ", "eta ", "theta\n",
    ];
    let mut text = String::new();
    while text.len() < 3_500_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(words[(x % 8) as usize]);
    }
    write_file(&src.join("a/big.txt"), text.as_bytes(), 0o644);
    write_file(&src.join("z/last.txt"), b"the end\n", 0o644);
    src
}

fn build(src: &Path, out: &Path, compression: &str, threads: &str) -> (String, PathBuf, String) {
    let stdout = run(hoist()
        .env("HOIST_THREADS", threads)
        .args([
            "build",
            "--no-cache",
            "--base",
            "scratch",
            "--compression",
            compression,
            "--layer",
        ])
        .arg(format!("{}:/data", src.display()))
        .arg("--output")
        .arg(format!("oci:{}:t", out.display())))
    .ok();
    let m = blob_json(
        out,
        index_json(out)["manifests"][0]["digest"].as_str().unwrap(),
    );
    let c = blob_json(out, m["config"]["digest"].as_str().unwrap());
    let layer = out.join("blobs/sha256").join(
        m["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap(),
    );
    (
        printed_digest(&stdout),
        layer,
        c["rootfs"]["diff_ids"][0].as_str().unwrap().to_string(),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hoist::Digest::of(bytes).hex())
}

#[test]
fn same_bytes_whatever_the_thread_count() {
    let t = tempdir();
    let src = multi_block_source(t.path());
    for compression in ["gzip", "zstd"] {
        let digests: Vec<String> = ["1", "2", "3"]
            .iter()
            .map(|n| {
                build(
                    &src,
                    &t.path().join(format!("{compression}-{n}")),
                    compression,
                    n,
                )
                .0
            })
            .collect();
        assert!(
            digests.iter().all(|d| *d == digests[0]),
            "{compression}: {digests:?}"
        );
    }
}

#[test]
fn multi_member_gzip_layers_are_read_completely() {
    let t = tempdir();
    let src = multi_block_source(t.path());
    let out = t.path().join("out");
    let (_, layer, diff_id) = build(&src, &out, "gzip", "2");
    let raw = fs::read(&layer).unwrap();
    let members = raw.windows(3).filter(|w| *w == [0x1f, 0x8b, 8]).count();
    assert!(
        members >= 4,
        "expected several gzip members, found {members}"
    );

    // flate2: MultiGzDecoder reads it all; GzDecoder stops after the first member (unsupported).
    let mut all = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut all)
        .unwrap();
    assert_eq!(sha256_hex(&all), diff_id);
    let mut first = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut first)
        .unwrap();
    assert!(first.len() < all.len());

    // GNU gzip and tar.
    if have_tool("gzip") {
        let out = run(Command::new("gzip").arg("-dc").arg(&layer));
        assert_eq!(sha256_hex(&out.out.stdout), diff_id, "gzip -d");
        let x = t.path().join("x");
        fs::create_dir(&x).unwrap();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&layer)
            .arg("-C")
            .arg(&x))
        .ok();
        assert_eq!(fs::read(x.join("data/z/last.txt")).unwrap(), b"the end\n");
        assert_eq!(
            fs::read(x.join("data/a/big.txt")).unwrap(),
            fs::read(src.join("a/big.txt")).unwrap()
        );
    }
    // Python's tarfile.
    if have_tool("python3") {
        let script = "import sys, tarfile\nt = tarfile.open(sys.argv[1], 'r:gz')\nprint(t.extractfile('data/z/last.txt').read().decode(), end='')\nprint(len(t.extractfile('data/a/big.txt').read()))";
        let out = run(Command::new("python3").arg("-c").arg(script).arg(&layer)).ok();
        assert_eq!(
            out,
            format!(
                "the end\n{}\n",
                fs::metadata(src.join("a/big.txt")).unwrap().len()
            )
        );
    }
    // umoci.
    if have_tool("umoci") {
        let rootfs = umoci_unpack(&out, "t", &t.path().join("bundle"));
        assert_eq!(
            fs::read(rootfs.join("data/z/last.txt")).unwrap(),
            b"the end\n"
        );
        assert_eq!(
            fs::read(rootfs.join("data/a/big.txt")).unwrap(),
            fs::read(src.join("a/big.txt")).unwrap()
        );
    }
    // containers/image (skopeo): decompress into a dir: transport, compare with the diff_id.
    if have_tool("skopeo") {
        let dir = t.path().join("skopeo-dir");
        run(Command::new("skopeo").args([
            "copy",
            "--dest-decompress",
            &format!("oci:{}:t", out.display()),
            &format!("dir:{}", dir.display()),
        ]))
        .ok();
        let m: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let d = m["layers"][0]["digest"].as_str().unwrap();
        let bytes = fs::read(dir.join(d.strip_prefix("sha256:").unwrap())).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            diff_id,
            "skopeo decompressed the whole layer"
        );
    }
}

#[test]
fn gzip_single_is_one_member() {
    let t = tempdir();
    let src = multi_block_source(t.path());
    let (_, layer, diff_id) = build(&src, &t.path().join("out"), "gzip-single", "2");
    let raw = fs::read(&layer).unwrap();
    let mut first = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut first)
        .unwrap();
    assert_eq!(
        sha256_hex(&first),
        diff_id,
        "a first-member-only reader gets everything"
    );
}
