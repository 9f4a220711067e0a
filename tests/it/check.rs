//! `hoist check` and the checks of `hoist build` on real ELF files: a PyInstaller bundle,
//! Debian's Chromium and a small C program, on Debian minbase bases whose glibc differs. Every
//! verdict is compared with what the real loader says in a chroot of the same root file system.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::common::*;
use crate::fixtures::*;

const SERVER_DEST: &str = "/openhands/action-execution-server";

fn base_ref(layout: &Path) -> String {
    format!("oci:{}:latest", layout.display())
}

fn check_json(args: &[&str]) -> (Run, serde_json::Value) {
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let r = hoist_run(&all);
    let v = serde_json::from_str(&r.stdout())
        .unwrap_or_else(|e| panic!("check --json output is not JSON ({e}):\n{}", r.stderr()));
    (r, v)
}

/// Items of the findings of one check on one file, sorted.
fn items(report: &serde_json::Value, file: &str, check: &str) -> Vec<String> {
    let mut v: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["file"] == file && f["check"] == check)
        .flat_map(|f| f["items"].as_array().unwrap().clone())
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn errors(report: &serde_json::Value) -> usize {
    let n = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .count();
    assert_eq!(report["errors"], n, "{report:#}");
    n
}

/// The host's glibc version as (major, minor), from `ldd --version`.
fn host_glibc() -> (u32, u32) {
    let out = run(Command::new("ldd").arg("--version")).ok();
    let first = out.lines().next().unwrap_or_default();
    let v = first.rsplit(' ').next().unwrap_or_default();
    let (a, b) = v.split_once('.').unwrap_or(("0", "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// Runs the bundle's `--selftest` in a chroot of `suite`'s root file system: does it load?
fn bundle_runs_on(suite: &str, bundle: &Path, dir: &Path) -> (bool, String) {
    let root = scratch_rootfs(&debian_rootfs(suite), &dir.join(format!("chroot-{suite}")));
    let dest = root.join(SERVER_DEST.trim_start_matches('/'));
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    run(Command::new("cp").arg("-a").arg(bundle).arg(&dest)).ok();
    let r = run(Command::new("chroot")
        .arg(&root)
        .arg(format!("{SERVER_DEST}/server"))
        .arg("--selftest"));
    (r.out.status.success(), r.stderr())
}

#[test]
fn glibc_check_fails_on_bullseye_passes_on_bookworm_and_agrees_with_the_loader() {
    if !can_debootstrap() {
        return;
    }
    let Some(bundle) = pyinstaller_bundle() else {
        return;
    };
    let t = tempdir();
    let layer = format!("{}:{SERVER_DEST}", bundle.display());
    let entrypoint = format!(r#"["{SERVER_DEST}/server"]"#);
    for suite in ["bookworm", "bullseye"] {
        let base = debian_base(suite);
        let (r, report) = check_json(&[
            "--base",
            &base_ref(&base),
            "--layer",
            &layer,
            "--entrypoint",
            &entrypoint,
        ]);
        let (runs, stderr) = bundle_runs_on(suite, &bundle, t.path());
        let passed = errors(&report) == 0;
        assert_eq!(
            passed, runs,
            "{suite}: hoist check says {} but the bundle {} in a chroot\nreport: {report:#}\nloader: {stderr}",
            if passed { "ok" } else { "errors" },
            if runs { "runs" } else { "fails" }
        );
        assert_eq!(r.code(), if passed { 0 } else { 1 }, "{}", r.stderr());
        if suite == "bullseye" {
            // glibc 2.31: anything built on a 2022+ system needs more.
            assert!(!passed, "bullseye should fail: {report:#}");
            assert!(stderr.contains("GLIBC_2."), "loader said: {stderr}");
            let lib = format!("{SERVER_DEST}/_internal/libpython3.11.so.1.0");
            let missing = items(&report, &lib, "glibc");
            assert!(
                missing.iter().all(|v| v.starts_with("GLIBC_2.3")),
                "{missing:?}"
            );
            assert!(!missing.is_empty(), "{report:#}");
        } else if host_glibc() <= (2, 36) {
            assert!(passed, "bookworm (glibc 2.36) should pass: {report:#}");
        }
    }

    // The build stops before writing anything on the failing base, and builds with --check=warn.
    let out = t.path().join("out");
    let args = |mode: &str| -> Vec<String> {
        vec![
            "build".into(),
            "--base".into(),
            base_ref(&debian_base("bullseye")),
            "--layer".into(),
            layer.clone(),
            "--entrypoint".into(),
            entrypoint.clone(),
            "--output".into(),
            format!("oci:{}:dev", out.display()),
            mode.into(),
        ]
    };
    let a = args("--check=error");
    let r = hoist_run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    r.fails_with(
        1,
        &[
            "error[glibc]",
            "libpython3.11.so.1.0",
            "nothing was written",
        ],
    );
    assert!(!out.exists(), "the output must not be created");
    let a = args("--check=warn");
    let r = hoist_run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    r.ok();
    assert!(r.stderr().contains("error[glibc]"), "{}", r.stderr());
}

#[test]
fn chromium_missing_libraries_are_exactly_what_ldd_says_in_a_chroot() {
    if !can_debootstrap() {
        return;
    }
    let Some(chromium) = debian_chromium() else {
        return;
    };
    let t = tempdir();
    let base = debian_base("bookworm");
    let dest = "/usr/lib/chromium/chromium";
    let (_, report) = check_json(&[
        "--base",
        &base_ref(&base),
        "--layer",
        &format!("{}:{dest}", chromium.display()),
    ]);
    let ours = items(&report, dest, "libraries");
    let root = scratch_rootfs(&debian_rootfs("bookworm"), &t.path().join("root"));
    fs::create_dir_all(root.join("usr/lib/chromium")).unwrap();
    fs::copy(&chromium, root.join("usr/lib/chromium/chromium")).unwrap();
    let ldd = ldd_not_found(&root, dest);
    assert!(ldd.len() > 20, "ldd found too little missing: {ldd:?}");
    assert_eq!(ours, ldd, "hoist check vs ldd in a chroot");
    for soname in ["libnss3.so", "libglib-2.0.so.0", "libX11.so.6"] {
        assert!(
            ours.iter().any(|s| s == soname),
            "{soname} missing from {ours:?}"
        );
    }
}

#[test]
fn origin_runpath_symlink_chains_and_merged_usr_resolve_like_ld_so() {
    if !can_debootstrap() {
        return;
    }
    let t = tempdir();
    let Some(app) = small_program(t.path()) else {
        return;
    };
    // bookworm is merged-/usr: the loader path /lib64/ld-linux-x86-64.so.2 goes through
    // lib64 -> usr/lib64, and /lib/x86_64-linux-gnu through lib -> usr/lib.
    let base = debian_base("bookworm");
    let (_, report) = check_json(&[
        "--base",
        &base_ref(&base),
        "--layer",
        &format!("{}:/opt/small", app.display()),
        "--entrypoint",
        r#"["/opt/small/bin/app"]"#,
    ]);
    assert_eq!(
        items(&report, "/opt/small/bin/app", "libraries"),
        ["libexpat.so.1"]
    );
    assert!(
        items(&report, "/opt/small/bin/app", "loader").is_empty(),
        "{report:#}"
    );
    let root = scratch_rootfs(&debian_rootfs("bookworm"), &t.path().join("root"));
    run(Command::new("cp")
        .arg("-a")
        .arg(&app)
        .arg(root.join("opt/small")))
    .ok();
    assert_eq!(
        ldd_not_found(&root, "/opt/small/bin/app"),
        ["libexpat.so.1"]
    );
}

#[test]
fn a_second_check_reads_no_base_blob_and_no_check_reads_it_only_for_parents() {
    if !can_debootstrap() {
        return;
    }
    let Some(bundle) = pyinstaller_bundle() else {
        return;
    };
    let t = tempdir();
    // A private copy of the base, so its blobs can be taken away.
    let base = t.path().join("base");
    run(Command::new("cp")
        .arg("-a")
        .arg(debian_base("bookworm"))
        .arg(&base))
    .ok();
    let cache = t.path().join("cache");
    let check = |extra: &[&str]| {
        let mut c = hoist();
        c.env("HOIST_CACHE_DIR", &cache).args([
            "check",
            "--json",
            "--base",
            &base_ref(&base),
            "--layer",
            &format!("{}:{SERVER_DEST}", bundle.display()),
        ]);
        c.args(extra);
        let start = Instant::now();
        let r = run(&mut c);
        (r, start.elapsed())
    };
    let (first, cold) = check(&[]);
    let report: serde_json::Value = serde_json::from_str(&first.ok()).unwrap();
    assert_eq!(report["base_layers_read"], 1);
    // Without its layer blobs, the base can only be checked from the cache.
    let blobs = base.join("blobs/sha256");
    let manifest: serde_json::Value = {
        let idx = index_json(&base);
        blob_json(&base, idx["manifests"][0]["digest"].as_str().unwrap())
    };
    for hex in layer_hexes(&manifest) {
        fs::rename(blobs.join(&hex), t.path().join(&hex)).unwrap();
    }
    let (second, warm) = check(&[]);
    let report: serde_json::Value = serde_json::from_str(&second.ok()).unwrap();
    assert_eq!(report["base_layers_read"], 0);
    assert_eq!(report["base_layers_cached"], 1);
    eprintln!("check on bookworm + PyInstaller bundle: cold {cold:?}, cached {warm:?}");

    // --no-check reads no base blob: the build succeeds although the blobs are gone... up to
    // copying them into the output, which needs them; so use a fresh cache and look at it.
    for hex in fs::read_dir(t.path()).unwrap().filter_map(|e| {
        let n = e.unwrap().file_name().into_string().unwrap();
        (n.len() == 64).then_some(n)
    }) {
        fs::rename(t.path().join(&hex), blobs.join(&hex)).unwrap();
    }
    // A local base is summarised even then when layers write parent folders (their modes and
    // owners are copied from it); with parents=false nothing needs it.
    for (parents, summarised) in [("", true), (",parents=false", false)] {
        let fresh = t.path().join(format!("fresh-cache{parents}"));
        let r = run(hoist().env("HOIST_CACHE_DIR", &fresh).args([
            "build",
            "--no-check",
            "--base",
            &base_ref(&base),
            "--layer",
            &format!("{}:{SERVER_DEST}{parents}", bundle.display()),
            "--output",
            &format!("oci:{}:x", t.path().join("out").display()),
        ]));
        r.ok();
        assert_eq!(
            fresh.join("check").exists(),
            summarised,
            "--no-check{parents}: base summary written"
        );
    }
}

#[test]
fn bundled_libraries_older_than_the_image_are_reported_as_leaks() {
    if !can_debootstrap() {
        return;
    }
    // A bundle carrying bullseye's libgcc_s, libstdc++ and libz, on bookworm (newer copies).
    let t = tempdir();
    let old = debian_rootfs("bullseye").join("usr/lib/x86_64-linux-gnu");
    let app = t.path().join("app");
    fs::create_dir_all(app.join("_internal")).unwrap();
    for lib in ["libgcc_s.so.1", "libstdc++.so.6", "libz.so.1"] {
        let real = fs::canonicalize(old.join(lib)).unwrap();
        fs::copy(real, app.join("_internal").join(lib)).unwrap();
    }
    let (r, report) = check_json(&[
        "--base",
        &base_ref(&debian_base("bookworm")),
        "--layer",
        &format!("{}:/opt/app", app.display()),
    ]);
    r.ok();
    for (lib, theirs) in [
        ("libgcc_s.so.1", "GCC_12.0.0"),
        ("libstdc++.so.6", "GLIBCXX_3.4.30"),
        ("libz.so.1", "ZLIB_1.2.12"),
    ] {
        let items = items(&report, &format!("/opt/app/_internal/{lib}"), "bundle-leak");
        assert!(
            items.iter().any(|i| i == theirs),
            "{lib}: {items:?}\n{report:#}"
        );
    }
}
