//! hoist against the real distribution registry over plain HTTP: push, pull, inspect, the lazy
//! base (proved from the registry's access log), interop with skopeo and umoci both ways, and a
//! multi-platform round trip between two registries.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::registry_harness::*;

/// Every blob digest of a layout (to compare round trips).
fn blob_set(layout: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn registry_push_pull_inspect_and_lazy_base() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("base");
    scratch_image(home, &layout, "1", "linux/amd64", "base content\n");

    // push a layout; stdout is REF@digest.
    let out = run(hoist_in(home)
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(reg.r("base/img:1")))
    .ok();
    let base_digest = printed_digest(&out);
    assert_eq!(out.trim(), format!("{}@{base_digest}", reg.r("base/img:1")));
    let base_manifest = blob_json(&layout, &base_digest);
    let base_layer = base_manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // inspect a registry ref.
    let shown = run(hoist_in(home).args(["inspect", "--json", &reg.r("base/img:1")])).ok();
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(doc["digest"], base_digest.as_str());

    // The checks read a base layer once (streamed, never stored) and keep its summary by digest;
    // from then on a build on that base reads no base blob.
    let primed = run(hoist_in(home).args(["check", "--base", &reg.r("base/img:1")]));
    assert!(primed.stderr().contains("checks: "), "{}", primed.stderr());

    // Lazy base: build on registry A, push to registry A. Only manifest + config are read.
    let before = reg.requests().len();
    let app = home.join("app");
    write_file(&app.join("hello"), b"hello\n", 0o644);
    let r = run(hoist_in(home)
        .args(["build", "--base", &reg.r("base/img:1"), "--layer"])
        .arg(format!("{}:/app", app.display()))
        .args(["--push", &reg.r("app/img:1")])
        .args(["--push", &reg.r("app/also:1")]));
    let built = r.ok();
    // First destination: the base layer mounted; second: every blob mounted (base from the
    // base's repository, the new layer and config from the first destination).
    assert_eq!(
        r.stderr().matches("): mounted").count(),
        4,
        "{}",
        r.stderr()
    );
    let app_digest = printed_digest(&built);
    assert_eq!(
        built.lines().collect::<Vec<_>>(),
        [
            format!("{}@{app_digest}", reg.r("app/img:1")),
            format!("{}@{app_digest}", reg.r("app/also:1"))
        ]
    );
    let log = reg.requests()[before..].to_vec();
    let base_blob_gets: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("GET ") && l.contains(&base_layer))
        .collect();
    assert!(
        base_blob_gets.is_empty(),
        "base layer was downloaded: {base_blob_gets:?}\n{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| (l.starts_with("POST /v2/app/img/blobs/uploads/?")
                && l.contains(&format!("mount={base_layer}"))
                && l.ends_with(" 201"))
                || (l.starts_with(&format!("HEAD /v2/app/img/blobs/{base_layer}"))
                    && l.ends_with(" 200"))),
        "base layer neither mounted nor found:\n{log:#?}"
    );

    // Pushing the same build elsewhere on the same registry again finds everything.
    // Pull it back: a complete layout, same digest, blobs verified.
    let pulled = home.join("pulled");
    let out = run(hoist_in(home)
        .arg("pull")
        .arg(reg.r("app/img:1"))
        .arg(format!("oci:{}:x", pulled.display())))
    .ok();
    assert_eq!(printed_digest(&out), app_digest);
    let m = blob_json(&pulled, &app_digest);
    for l in m["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        assert!(
            pulled
                .join("blobs/sha256")
                .join(d.strip_prefix("sha256:").unwrap())
                .is_file(),
            "{d} missing"
        );
    }
    assert_eq!(
        m["annotations"]["org.opencontainers.image.base.digest"],
        base_digest.as_str()
    );

    // --output with a registry base downloads the base layers (a layout is complete).
    let out_layout = home.join("out");
    run(hoist_in(home)
        .args(["build", "--base", &reg.r("base/img:1"), "--layer"])
        .arg(format!("{}:/app", app.display()))
        .arg("--output")
        .arg(format!("oci:{}:dev", out_layout.display()))
        .args(["--push", &reg.r("app/img:2")]))
    .ok();
    assert!(out_layout
        .join("blobs/sha256")
        .join(base_layer.strip_prefix("sha256:").unwrap())
        .is_file());
}

#[test]
fn registry_lazy_base_streams_to_another_registry() {
    let Some(a) = Registry::start(Setup::Plain) else {
        return;
    };
    let Some(b) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("base");
    let base_digest = scratch_image(home, &layout, "1", "linux/amd64", "streamed\n");
    run(hoist_in(home)
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(a.r("base/img:1")))
    .ok();
    let base_layer = blob_json(&layout, &base_digest)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let app = home.join("app");
    write_file(&app.join("x"), b"x\n", 0o644);
    let tmp = home.join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let r = run(hoist_in(home)
        .env("TMPDIR", &tmp)
        .args(["build", "--base", &a.r("base/img:1"), "--layer"])
        .arg(format!("{}:/app", app.display()))
        .args(["--push", &b.r("app/img:1")]));
    r.ok();
    assert!(
        r.stderr().contains(&format!("blob {base_layer}"))
            && r.stderr().contains("streamed across"),
        "{}",
        r.stderr()
    );
    assert!(b
        .requests()
        .iter()
        .any(|l| l.starts_with("PUT /v2/app/img/blobs/uploads/") && l.ends_with(" 201")));
    // Nothing of the base was written locally: the staging dir is gone and held no base blob.
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    // Registry B serves a complete image: skopeo can copy it.
    if have_tool("skopeo") {
        run(Command::new("skopeo")
            .args([
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{}", b.r("app/img:1")),
            ])
            .arg(format!("oci:{}:c", home.join("copied").display())))
        .ok();
    }
}

#[test]
fn registry_interop_with_skopeo_and_umoci() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    if !(have_tool("skopeo") && have_tool("umoci")) {
        return;
    }
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    scratch_image(home, &layout, "amd", "linux/amd64", "amd64 build\n");
    scratch_image(home, &layout, "arm", "linux/arm64", "arm64 build\n");

    // hoist pushes; skopeo reads and copies; umoci unpacks.
    let pushed = printed_digest(
        &run(hoist_in(home)
            .arg("push")
            .arg(format!("oci:{}:amd", layout.display()))
            .arg(reg.r("hoist/img:1")))
        .ok(),
    );
    let info = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}", reg.r("hoist/img:1")),
    ]))
    .ok();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["Digest"], pushed.as_str());
    let copied = home.join("copied");
    run(Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}", reg.r("hoist/img:1")),
        ])
        .arg(format!("oci:{}:c", copied.display())))
    .ok();
    let rootfs = umoci_unpack(&copied, "c", &home.join("bundle"));
    assert_eq!(
        fs::read_to_string(rootfs.join("data/file")).unwrap(),
        "amd64 build\n"
    );

    // skopeo pushes Docker v2s2, OCI, and a multi-platform index; each is a valid --base.
    let index = make_index(&layout, &["amd", "arm"], "multi");
    let skopeo_push = |src: &str, dest: &str, extra: &[&str]| {
        run(Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}:{src}", layout.display()))
            .arg(format!("docker://{}", reg.r(dest))))
        .ok();
    };
    skopeo_push("amd", "sk/v2s2:1", &["--format", "v2s2"]);
    skopeo_push("amd", "sk/oci:1", &["--format", "oci"]);
    skopeo_push("multi", "sk/multi:1", &["--all"]);
    let app = home.join("app");
    write_file(&app.join("a"), b"a\n", 0o644);
    for (base, platform, arch) in [
        ("sk/v2s2:1", "linux/amd64", "amd64"),
        ("sk/oci:1", "linux/amd64", "amd64"),
        ("sk/multi:1", "linux/arm64", "arm64"),
        ("sk/multi:1", "linux/amd64", "amd64"),
    ] {
        let dest = format!(
            "built/{}:{arch}",
            base.split(':').next().unwrap().replace('/', "-")
        );
        let out = home.join(format!("out-{}", dest.replace(['/', ':'], "-")));
        let r = run(hoist_in(home)
            .args([
                "build",
                "--base",
                &reg.r(base),
                "--platform",
                platform,
                "--layer",
            ])
            .arg(format!("{}:/app", app.display()))
            .arg("--output")
            .arg(format!("oci:{}:t", out.display()))
            .args(["--push", &reg.r(&dest)]));
        let digest = printed_digest(&r.ok());
        let m = blob_json(&out, &digest);
        assert_eq!(
            m["mediaType"], "application/vnd.oci.image.manifest.v1+json",
            "{base}"
        );
        assert_eq!(m["layers"].as_array().unwrap().len(), 2, "{base}");
        assert!(
            m["layers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"),
            "{base}: {m}"
        );
        let config = blob_json(&out, m["config"]["digest"].as_str().unwrap());
        assert_eq!(config["architecture"], arch, "{base}");
        let info = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}", reg.r(&dest)),
        ]))
        .ok();
        assert!(info.contains(&digest), "{info}");
    }
    // The index skopeo pushed is served with the digest of the index we made.
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", reg.r("sk/multi:1")),
    ]))
    .ok();
    assert_eq!(hoist::Digest::of(raw.as_bytes()).to_string(), index);
}

#[test]
fn registry_round_trip_of_a_multi_platform_index() {
    let Some(a) = Registry::start(Setup::Plain) else {
        return;
    };
    let Some(b) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    scratch_image(home, &layout, "amd", "linux/amd64", "amd\n");
    scratch_image(home, &layout, "arm", "linux/arm64", "arm\n");
    let index = make_index(&layout, &["amd", "arm"], "multi");
    // Into registry A (hoist pushes a whole index), then the round trip.
    let pushed = printed_digest(
        &run(hoist_in(home)
            .arg("push")
            .arg(format!("oci:{}:multi", layout.display()))
            .arg(a.r("m/img:1")))
        .ok(),
    );
    assert_eq!(pushed, index);
    let first = home.join("first");
    assert_eq!(
        printed_digest(
            &run(hoist_in(home)
                .arg("pull")
                .arg(a.r("m/img:1"))
                .arg(format!("oci:{}:1", first.display())))
            .ok()
        ),
        index
    );
    assert_eq!(
        printed_digest(
            &run(hoist_in(home)
                .arg("push")
                .arg(format!("oci:{}:1", first.display()))
                .arg(b.r("m/copy:1")))
            .ok()
        ),
        index
    );
    let second = home.join("second");
    assert_eq!(
        printed_digest(
            &run(hoist_in(home)
                .arg("pull")
                .arg(b.r("m/copy:1"))
                .arg(format!("oci:{}:1", second.display())))
            .ok()
        ),
        index
    );
    assert_eq!(blob_set(&first), blob_set(&second));
    assert_eq!(
        blob_set(&first).len(),
        7,
        "index + 2 manifests + 2 configs + 2 layers"
    );
    assert_eq!(
        index_json(&second)["manifests"][0]["digest"],
        index.as_str()
    );

    // --platform picks one image out of the index.
    let one = home.join("one");
    let out = run(hoist_in(home)
        .args(["pull", "--platform", "linux/arm64"])
        .arg(b.r("m/copy:1"))
        .arg(format!("oci:{}:arm", one.display())))
    .ok();
    let m = blob_json(&one, &printed_digest(&out));
    let config = blob_json(&one, m["config"]["digest"].as_str().unwrap());
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(blob_set(&one).len(), 3);
}

#[test]
fn registry_errors_name_the_reference() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let r = run(hoist_in(home)
        .arg("pull")
        .arg(reg.r("nothing/here:1"))
        .arg(format!("oci:{}", home.join("x").display())));
    r.fails_with(1, &["nothing/here", "404", "MANIFEST_UNKNOWN"]);
    assert!(!home.join("x").exists(), "a failed pull creates no layout");
    // --platform that the (single-platform) image does not have.
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", "amd64 only\n");
    run(hoist_in(home)
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(reg.r("one/img:1")))
    .ok();
    let r = run(hoist_in(home)
        .args(["pull", "--platform", "linux/arm64", &reg.r("one/img:1")])
        .arg(format!("oci:{}", home.join("y").display())));
    r.fails_with(1, &["linux/arm64", "available: linux/amd64"]);
    let r = run(hoist_in(home).args(["pull", "Bad//Ref", "oci:x"]));
    r.fails_with(1, &["Bad//Ref"]);
    let r = run(hoist_in(home).args(["push", "--jobs", "0", "oci:x", "r/x"]));
    assert_eq!(r.code(), 2, "{}", r.stderr());
}

#[test]
fn registry_build_push_streams_new_layers_while_compressing() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    // A few MiB over several gzip blocks, so the stream carries many chunks.
    let src = home.join("data");
    let text: String = noise(600_000, 0x9E3779B97F4A7C15)
        .into_iter()
        .map(|b| ["alpha ", "beta\n", "gamma ", "delta "][(b % 4) as usize])
        .collect();
    write_file(&src.join("big.txt"), text.as_bytes(), 0o644);
    let layer = format!("{}:/data", src.display());
    let mut pushed = Vec::new();
    // With a cache to fill, the upload follows the layer's file; with none (and no --output),
    // the layer is kept nowhere but in the registry.
    for mode in ["followed", "piped"] {
        let cache = home.join("cache");
        let cache_args: Vec<String> = match mode {
            "followed" => vec!["--cache-dir".into(), cache.display().to_string()],
            _ => vec!["--no-cache".into()],
        };
        let repo = format!("app/streamed-{mode}");
        let r = run(hoist_in(home)
            .args(["build", "--base", "scratch"])
            .args(&cache_args)
            .args(["--layer", &layer, "--push", &reg.r(&format!("{repo}:1"))]));
        pushed.push(printed_digest(&r.ok()));
        let err = r.stderr();
        assert!(err.contains("streamed to "), "{mode}: {err}");
        assert_eq!(
            err.contains("not kept locally"),
            mode == "piped",
            "{mode}: {err}"
        );
        assert!(cache.exists(), "{mode}: the followed build fills its cache");
        // The push that follows finds the streamed blob: one PATCH for it, and it "exists".
        assert!(err.contains("): exists"), "{mode}: {err}");
        let patches = reg
            .requests()
            .iter()
            .filter(|l| l.starts_with(&format!("PATCH /v2/{repo}/blobs/uploads/")))
            .count();
        assert_eq!(patches, 1, "{mode}: {:#?}", reg.requests());
    }
    assert_eq!(pushed[0], pushed[1]);
    let pushed = pushed[0].clone();
    // The same build into a layout gives the same image; pulled back, the bytes match.
    let local = run(hoist_in(home)
        .args([
            "build",
            "--no-cache",
            "--base",
            "scratch",
            "--layer",
            &layer,
            "--output",
        ])
        .arg(format!("oci:{}:1", home.join("local").display())))
    .ok();
    assert_eq!(printed_digest(&local), pushed);
    let pulled = home.join("pulled");
    run(hoist_in(home)
        .args(["pull", &reg.r("app/streamed-piped:1")])
        .arg(format!("oci:{}:1", pulled.display())))
    .ok();
    assert_eq!(blob_set(&pulled), blob_set(&home.join("local")));
}

#[test]
fn registry_tag_from_inputs_and_skip_existing() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    write_file(&home.join("data/f.txt"), b"content\n", 0o644);
    let layer = format!("{}:/data", home.join("data").display());
    let build = |extra: &[&str]| {
        let mut c = hoist_in(home);
        c.args([
            "build",
            "--base",
            "scratch",
            "--layer",
            &layer,
            "--push",
            &reg.r("app/tagged"),
            "--tag-from-inputs",
        ])
        .args(extra);
        run(&mut c)
    };
    let first = build(&[]);
    let out = first.ok();
    assert!(
        out.trim()
            .starts_with(&format!("{}:inputs-", reg.r("app/tagged"))),
        "{out}"
    );
    let before = reg.requests().len();
    let again = build(&["--skip-existing"]);
    assert_eq!(again.ok(), out, "the existing image is printed");
    assert!(
        again.stderr().contains("nothing to build"),
        "{}",
        again.stderr()
    );
    let uploads: Vec<String> = reg.requests()[before..]
        .iter()
        .filter(|l| !l.starts_with("GET ") && !l.starts_with("HEAD "))
        .cloned()
        .collect();
    assert!(uploads.is_empty(), "nothing uploaded: {uploads:#?}");
    // Another input, another tag.
    write_file(&home.join("data/f.txt"), b"changed\n", 0o644);
    let other = build(&["--skip-existing"]).ok();
    assert_ne!(other, out);
}
