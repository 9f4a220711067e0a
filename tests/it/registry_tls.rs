//! TLS with a self-signed CA made in the test: refused without the CA (clearly), accepted with
//! `--ca-file`, with the user-level `certs.d/HOST:PORT/ca.crt`, and with `--insecure-registry`.

use std::fs;

use crate::common::*;
use crate::registry_harness::*;

#[test]
fn registry_tls_with_a_private_ca() {
    let Some(reg) = Registry::start(Setup::Tls) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", "over tls\n");
    let src = format!("oci:{}:1", layout.display());

    // Without the CA: a clear error naming the URL and what to do.
    let r = run(hoist_in(home).args(["push", &src, &reg.r("t/x:1")]));
    r.fails_with(
        1,
        &[&format!("https://{}/v2/", reg.host), "--ca-file", "certs.d"],
    );

    // --ca-file.
    let ca = reg.ca();
    let digest = printed_digest(
        &run(hoist_in(home).args([
            "push",
            "--ca-file",
            ca.to_str().unwrap(),
            &src,
            &reg.r("t/x:1"),
        ]))
        .ok(),
    );
    assert!(reg
        .requests()
        .iter()
        .any(|l| l.starts_with("PUT /v2/t/x/manifests/1 201")));

    // certs.d/HOST:PORT/ca.crt in the user-level directory.
    let certs = home.join(".config/containers/certs.d").join(&reg.host);
    fs::create_dir_all(&certs).unwrap();
    fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let out = run(hoist_in(home)
        .arg("pull")
        .arg(reg.r("t/x:1"))
        .arg(format!("oci:{}:p", home.join("p").display())))
    .ok();
    assert_eq!(printed_digest(&out), digest);
    fs::remove_dir_all(home.join(".config")).unwrap();

    // --insecure-registry: TLS without verification.
    run(hoist_in(home).args(["inspect", "--insecure-registry", &reg.host, &reg.r("t/x:1")])).ok();

    // A CA file that is not a certificate is named.
    let bad = home.join("bad.pem");
    fs::write(&bad, "nope").unwrap();
    run(hoist_in(home).args([
        "inspect",
        "--ca-file",
        bad.to_str().unwrap(),
        &reg.r("t/x:1"),
    ]))
    .fails_with(1, &["bad.pem"]);
}
