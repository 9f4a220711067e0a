//! Faults between hoist and the real registry, injected by a small proxy: 503 twice, 429 with
//! `Retry-After: 1`, a connection reset mid-upload, a lost answer to a final PUT, a registry
//! that refuses chunked uploads — the push succeeds; a blob whose bytes do not match its digest —
//! the pull fails naming the digest and leaves no blob behind.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::registry_harness::*;

/// A counter-based rule: the first `n` requests matching `pred` get `fault`.
fn first_n(
    n: usize,
    pred: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    fault: Fault,
) -> impl Fn(&str, &str) -> Fault + Send + Sync + 'static {
    let count = Arc::new(AtomicUsize::new(0));
    move |m: &str, p: &str| {
        if pred(m, p) && count.fetch_add(1, Ordering::SeqCst) < n {
            fault.clone()
        } else {
            Fault::Pass
        }
    }
}

fn faulted(seen: &[String]) -> usize {
    seen.iter().filter(|l| !l.ends_with("-> Pass")).count()
}

#[test]
fn registry_push_survives_503_429_and_resets() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", &"x".repeat(5000));
    let src = format!("oci:{}:1", layout.display());

    // 503 twice on the manifest PUT, then it passes.
    let p = FaultProxy::start(
        &reg.host,
        first_n(
            2,
            |m, p| m == "PUT" && p.contains("/manifests/"),
            Fault::Respond(503, vec![]),
        ),
    );
    let r = run(hoist_in(home).args(["push", &src, &format!("{}/f/a:1", p.host)]));
    r.ok();
    assert_eq!(faulted(&p.seen()), 2, "{:#?}", p.seen());
    assert!(r.stderr().contains("HTTP 503"), "{}", r.stderr());

    // 429 with Retry-After: 1 on the first upload start: honoured.
    let p = FaultProxy::start(
        &reg.host,
        first_n(
            1,
            |m, p| m == "POST" && p.contains("/blobs/uploads/"),
            Fault::Respond(429, vec![("Retry-After", "1".into())]),
        ),
    );
    let start = Instant::now();
    run(hoist_in(home).args(["push", "--jobs", "1", &src, &format!("{}/f/b:1", p.host)])).ok();
    assert!(
        start.elapsed().as_millis() >= 1000,
        "Retry-After not honoured: {:?}",
        start.elapsed()
    );
    assert_eq!(faulted(&p.seen()), 1);

    // The connection is reset halfway through a monolithic blob upload.
    let p = FaultProxy::start(
        &reg.host,
        first_n(
            1,
            |m, p| m == "PUT" && p.contains("/blobs/uploads/"),
            Fault::ResetMidBody,
        ),
    );
    run(hoist_in(home).args(["push", &src, &format!("{}/f/c:1", p.host)])).ok();
    assert_eq!(faulted(&p.seen()), 1);

    // ... and halfway through a PATCH chunk of a chunked upload.
    let p = FaultProxy::start(
        &reg.host,
        first_n(1, |m, _| m == "PATCH", Fault::ResetMidBody),
    );
    run(hoist_in(home)
        .env("HOIST_MONOLITHIC_MAX", "100")
        .env("HOIST_CHUNK_SIZE", "1000")
        .args(["push", &src, &format!("{}/f/d:1", p.host)]))
    .ok();
    assert_eq!(faulted(&p.seen()), 1);
    let pulled = home.join("pulled");
    run(hoist_in(home)
        .arg("pull")
        .arg(format!("{}/f/d:1", reg.host))
        .arg(format!("oci:{}", pulled.display())))
    .ok();
}

#[test]
fn registry_lost_final_put_is_followed_by_a_head() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", "landed\n");
    let p = FaultProxy::start(
        &reg.host,
        first_n(
            1,
            |m, p| m == "PUT" && p.contains("/blobs/uploads/"),
            Fault::DropResponse,
        ),
    );
    run(hoist_in(home)
        .args(["push", "--jobs", "1"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("{}/g/a:1", p.host)))
    .ok();
    let seen = p.seen();
    let dropped = seen
        .iter()
        .position(|l| l.ends_with("DropResponse"))
        .unwrap();
    assert!(
        seen[dropped + 1].starts_with("HEAD /v2/g/a/blobs/sha256:"),
        "{seen:#?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|l| l.starts_with("PUT /v2/g/a/blobs/uploads/"))
            .count(),
        2,
        "one PUT per blob: {seen:#?}"
    );
}

#[test]
fn registry_timed_out_final_put_is_followed_by_a_head() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", "slow answer\n");
    let p = FaultProxy::start(
        &reg.host,
        first_n(
            1,
            |m, p| m == "PUT" && p.contains("/blobs/uploads/"),
            Fault::Stall(std::time::Duration::from_secs(3)),
        ),
    );
    let start = Instant::now();
    let r = run(hoist_in(home)
        .env("HOIST_TIMEOUT_SECS", "1")
        .args(["push", "--jobs", "1"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("{}/s/a:1", p.host)));
    r.ok();
    assert!(
        start.elapsed().as_secs() < 3,
        "the stalled PUT was not timed out"
    );
    let seen = p.seen();
    let stalled = seen.iter().position(|l| l.contains("Stall")).unwrap();
    assert!(
        seen[stalled + 1].starts_with("HEAD /v2/s/a/blobs/sha256:"),
        "{seen:#?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|l| l.starts_with("PUT /v2/s/a/blobs/uploads/"))
            .count(),
        2,
        "the timed-out blob was found by HEAD, not uploaded again: {seen:#?}"
    );
}

#[test]
fn registry_refused_chunked_upload_falls_back_to_monolithic() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", &"y".repeat(3000));
    let p = FaultProxy::start(&reg.host, |m: &str, _: &str| {
        if m == "PATCH" {
            Fault::Respond(405, vec![])
        } else {
            Fault::Pass
        }
    });
    let r = run(hoist_in(home)
        .env("HOIST_MONOLITHIC_MAX", "10")
        .args(["push"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("{}/h/a:1", p.host)));
    r.ok();
    assert!(
        r.stderr().contains("refused a chunked (PATCH) upload"),
        "{}",
        r.stderr()
    );
}

#[test]
fn registry_pull_refuses_a_blob_that_does_not_match_its_digest() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    let digest = scratch_image(home, &layout, "1", "linux/amd64", "genuine\n");
    run(hoist_in(home)
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(reg.r("v/a:1")))
    .ok();
    let layer = blob_json(&layout, &digest)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let l2 = layer.clone();
    let p = FaultProxy::start(&reg.host, move |m: &str, path: &str| {
        if m == "GET" && path.ends_with(&l2) {
            Fault::CorruptBody
        } else {
            Fault::Pass
        }
    });
    let dest = home.join("pulled");
    let r = run(hoist_in(home)
        .arg("pull")
        .arg(format!("{}/v/a:1", p.host))
        .arg(format!("oci:{}:1", dest.display())));
    r.fails_with(1, &[&layer]);
    let left: Vec<String> = fs::read_dir(dest.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.contains(&layer.strip_prefix("sha256:").unwrap().to_string()),
        "{left:?}"
    );
    assert!(
        left.iter().all(|f| !f.starts_with(".tmp")),
        "temp files left: {left:?}"
    );
    assert!(
        !dest.join("index.json").exists()
            || !fs::read_to_string(dest.join("index.json"))
                .unwrap()
                .contains(&digest)
    );
}

#[test]
fn registry_oversized_manifest_and_wrong_returned_digest_are_refused() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", "caps\n");
    // A manifest over the 8 MiB cap is refused before parsing.
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(9 << 20));
    let p = FaultProxy::start(&reg.host, move |m: &str, path: &str| {
        if m == "GET" && path.contains("/manifests/") {
            Fault::RespondBody(
                200,
                vec![(
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json".into(),
                )],
                huge.clone(),
            )
        } else {
            Fault::Pass
        }
    });
    let r = run(hoist_in(home).args(["inspect", &format!("{}/big/m:1", p.host)]));
    r.fails_with(1, &["manifest", "8388608-byte limit"]);

    // A registry that answers a manifest PUT with another digest: the push fails naming both.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let w2 = wrong.clone();
    let p = FaultProxy::start(&reg.host, move |m: &str, path: &str| {
        if m == "PUT" && path.contains("/manifests/") {
            Fault::Respond(201, vec![("Docker-Content-Digest", w2.clone())])
        } else {
            Fault::Pass
        }
    });
    let r = run(hoist_in(home)
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("{}/d/m:1", p.host)));
    r.fails_with(1, &[&wrong, "/manifests/1"]);
}

#[test]
fn registry_blob_redirects_to_storage_are_followed() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", "redirected\n");
    run(hoist_in(home)
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(reg.r("rd/a:1")))
    .ok();
    // The proxy answers every blob GET with a redirect to "storage" (the registry itself).
    let upstream = reg.host.clone();
    let p = FaultProxy::start(&reg.host, move |m: &str, path: &str| {
        if m == "GET" && path.contains("/blobs/sha256:") {
            Fault::Respond(307, vec![("Location", format!("http://{upstream}{path}"))])
        } else {
            Fault::Pass
        }
    });
    let dest = home.join("pulled");
    run(hoist_in(home)
        .arg("pull")
        .arg(format!("{}/rd/a:1", p.host))
        .arg(format!("oci:{}:1", dest.display())))
    .ok();
    assert_eq!(
        p.seen().iter().filter(|l| l.contains("307")).count(),
        2,
        "config and layer redirected"
    );
    assert_eq!(
        reg.requests()
            .iter()
            .filter(|l| l.starts_with("GET /v2/rd/a/blobs/") && l.ends_with(" 200"))
            .count(),
        2
    );

    // Storage that cannot be reached: the error names the registry's blob URL, never the
    // presigned storage URL, whose query is a credential.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_host = dead.local_addr().unwrap().to_string();
    drop(dead);
    let secret = "X-Amz-Security-Token=SESSION-SECRET-1234";
    let p = FaultProxy::start(&reg.host, move |m: &str, path: &str| {
        if m == "GET" && path.contains("/blobs/sha256:") {
            let to = format!("http://{dead_host}/bucket/blob?{secret}&X-Amz-Signature=abc");
            Fault::Respond(307, vec![("Location", to)])
        } else {
            Fault::Pass
        }
    });
    let r = run(hoist_in(home)
        .arg("pull")
        .arg(format!("{}/rd/a:1", p.host))
        .arg(format!("oci:{}:1", home.join("pulled-dead").display())));
    r.fails_with(1, &[&format!("{}/v2/rd/a/blobs/sha256:", p.host)]);
    assert!(!r.stderr().contains("SESSION-SECRET"), "{}", r.stderr());
}

/// How `build --push` keeps a new layer while it streams it: in a local file it follows (a
/// layer cache to fill), or nowhere (`--no-cache` without `--output`: a pipe).
const STREAM_MODES: [&str; 2] = ["followed", "piped"];

/// The cache flags of a streaming mode.
fn stream_mode_args(mode: &str, home: &Path) -> Vec<String> {
    match mode {
        "followed" => vec![
            "--cache-dir".into(),
            home.join(format!("cache-{mode}")).display().to_string(),
        ],
        _ => vec!["--no-cache".into()],
    }
}

#[test]
fn registry_refused_streamed_upload_falls_back_to_pushing_from_disk() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    write_file(
        &home.join("data/f.txt"),
        "z".repeat(50_000).as_bytes(),
        0o644,
    );
    // Refuse every PATCH: the streamed upload fails, then the push uploads the blob whole.
    let p = FaultProxy::start(&reg.host, |m: &str, _: &str| {
        if m == "PATCH" {
            Fault::Respond(405, vec![])
        } else {
            Fault::Pass
        }
    });
    for mode in STREAM_MODES {
        let r = run(hoist_in(home)
            .args(["build", "--base", "scratch"])
            .args(stream_mode_args(mode, home))
            .arg("--layer")
            .arg(format!("{}:/data", home.join("data").display()))
            .args(["--push", &format!("{}/s/a-{mode}:1", p.host)]));
        r.ok();
        assert!(
            r.stderr().contains("pushed from disk"),
            "{mode}: {}",
            r.stderr()
        );
        assert!(r.stderr().contains("): uploaded"), "{mode}: {}", r.stderr());
    }
}

#[test]
fn registry_stalled_streamed_upload_does_not_stall_the_build() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    write_file(
        &home.join("data/f.txt"),
        "s".repeat(50_000).as_bytes(),
        0o644,
    );
    // The streamed PATCH lands but its answer never comes in time; the build goes on and the
    // blob is pushed from disk (one PUT: small blobs are not sent with PATCH).
    let p = FaultProxy::start(&reg.host, |m: &str, _: &str| {
        if m == "PATCH" {
            Fault::Stall(Duration::from_secs(20))
        } else {
            Fault::Pass
        }
    });
    for mode in STREAM_MODES {
        let started = Instant::now();
        let r = run(hoist_in(home)
            .env("HOIST_TIMEOUT_SECS", "2")
            .args(["build", "--base", "scratch"])
            .args(stream_mode_args(mode, home))
            .arg("--layer")
            .arg(format!("{}:/data", home.join("data").display()))
            .args(["--push", &format!("{}/s/b-{mode}:1", p.host)]));
        r.ok();
        assert!(
            r.stderr().contains("no answer to the streamed upload"),
            "{mode}: {}",
            r.stderr()
        );
        assert!(
            r.stderr().contains("pushed from disk"),
            "{mode}: {}",
            r.stderr()
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{mode} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn registry_that_stops_reading_a_streamed_upload_is_dropped() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    // 48 MB that gzip cannot shrink: far more than the socket buffers hold, so the streamed
    // body really stops moving when the registry stops reading.
    let data = noise(48 << 20, 0x9e37_79b9_7f4a_7c15);
    write_file(&home.join("data/noise.bin"), &data, 0o644);
    // The first PATCH of each repository (the streamed one) is never read; later ones pass.
    let stalled = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = stalled.clone();
    let p = FaultProxy::start(&reg.host, move |m: &str, path: &str| {
        let repo = path.split("/blobs/").next().unwrap_or("").to_string();
        let mut seen = seen.lock().unwrap();
        if m == "PATCH" && !seen.contains(&repo) {
            seen.push(repo);
            Fault::StallBody(Duration::from_secs(30))
        } else {
            Fault::Pass
        }
    });
    for mode in STREAM_MODES {
        let started = Instant::now();
        let r = run(hoist_in(home)
            .env("HOIST_TIMEOUT_SECS", "2")
            .args(["build", "--base", "scratch"])
            .args(stream_mode_args(mode, home))
            .arg("--layer")
            .arg(format!("{}:/data", home.join("data").display()))
            .args(["--push", &format!("{}/s/c-{mode}:1", p.host)]));
        r.ok();
        let err = r.stderr();
        assert!(
            err.contains("stopped taking the streamed upload"),
            "{mode}: {err}"
        );
        assert!(err.contains("pushed from disk"), "{mode}: {err}");
        assert!(err.contains("): uploaded"), "{mode}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{mode} took {:?}",
            started.elapsed()
        );
        // What the registry holds is the whole image.
        let dir = tempdir();
        run(hoist_in(home).args([
            "pull",
            &format!("{}/s/c-{mode}:1", reg.host),
            &format!("oci:{}:c", dir.path().join("pulled").display()),
        ]))
        .ok();
    }
    assert_eq!(stalled.lock().unwrap().len(), 2);
}

#[test]
fn registry_large_blob_uploads_survive_resets() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    // A layer of about 3 MB compressed: sent from its file through the async client.
    let hex: String = noise(6 << 20, 0x2545_f491_4f6c_dd1d)
        .into_iter()
        .map(|b| b"0123456789abcdef"[(b & 15) as usize] as char)
        .collect();
    scratch_image(home, &layout, "1", "linux/amd64", &hex);
    let src = format!("oci:{}:1", layout.display());
    // Reset halfway through the monolithic PUT, then halfway through the one sized PATCH.
    let put = FaultProxy::start(
        &reg.host,
        first_n(
            1,
            |m, p| m == "PUT" && p.contains("/blobs/uploads/"),
            Fault::ResetMidBody,
        ),
    );
    run(hoist_in(home).args(["push", &src, &format!("{}/f/big-put:1", put.host)])).ok();
    assert_eq!(faulted(&put.seen()), 1, "{:#?}", put.seen());
    let patch = FaultProxy::start(
        &reg.host,
        first_n(1, |m, _| m == "PATCH", Fault::ResetMidBody),
    );
    run(hoist_in(home).env("HOIST_MONOLITHIC_MAX", "100").args([
        "push",
        &src,
        &format!("{}/f/big-patch:1", patch.host),
    ]))
    .ok();
    assert_eq!(faulted(&patch.seen()), 1, "{:#?}", patch.seen());
    for name in ["big-put", "big-patch"] {
        run(hoist_in(home)
            .arg("pull")
            .arg(format!("{}/f/{name}:1", reg.host))
            .arg(format!("oci:{}", home.join(name).display())))
        .ok();
    }
}
