//! htpasswd Basic auth against the real registry: credentials from a docker `config.json`
//! (`auths`), from a credential helper on PATH (`credHelpers`), from containers' `auth.json`,
//! from `--username` + `--password-stdin`; a wrong password fails without printing it.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use base64::Engine as _;

use crate::common::*;
use crate::registry_harness::*;

const USER: &str = "hoister";
const PASS: &str = "correct-horse-battery-staple";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn image(home: &Path) -> String {
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", "secret stuff\n");
    format!("oci:{}:1", layout.display())
}

#[test]
fn registry_auth_from_docker_config_and_helper() {
    let Some(reg) = Registry::start(Setup::Htpasswd(USER, PASS)) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let src = image(home);

    // No credentials: refused, and the message says how to log in.
    let r = run(hoist_in(home).args(["push", &src, &reg.r("a/b:1")]));
    r.fails_with(1, &["requires authentication", &reg.host]);

    // docker config.json `auths`.
    let docker = home.join(".docker");
    fs::create_dir_all(&docker).unwrap();
    fs::write(
        docker.join("config.json"),
        serde_json::json!({"auths": {reg.host.clone(): {"auth": b64(&format!("{USER}:{PASS}"))}}})
            .to_string(),
    )
    .unwrap();
    run(hoist_in(home).args(["push", &src, &reg.r("a/b:1")])).ok();
    run(hoist_in(home).args(["inspect", &reg.r("a/b:1")])).ok();

    // A credential helper on PATH, named by credHelpers.
    let bin = home.join("bin");
    write_file(
        &bin.join("docker-credential-hoisttest"),
        format!("#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\n[ \"$server\" = \"{}\" ] || {{ echo credentials not found; exit 1; }}\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"{USER}\",\"Secret\":\"{PASS}\"}}'\n", reg.host).as_bytes(),
        0o755,
    );
    fs::write(
        docker.join("config.json"),
        serde_json::json!({"credHelpers": {reg.host.clone(): "hoisttest"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(hoist_in(home)
        .env("PATH", &path)
        .args(["pull", &reg.r("a/b:1")])
        .arg(format!("oci:{}:p", home.join("p").display())))
    .ok();

    // A wrong password in config.json: "authentication failed for HOST", secret not printed.
    fs::write(docker.join("config.json"), serde_json::json!({"auths": {reg.host.clone(): {"auth": b64(&format!("{USER}:not-the-password-xyz"))}}}).to_string()).unwrap();
    let r = run(hoist_in(home).args(["push", &src, &reg.r("a/b:2")]));
    r.fails_with(
        1,
        &[
            &format!("authentication failed for {}", reg.host),
            "config.json",
        ],
    );
    assert!(
        !r.stderr().contains("not-the-password-xyz")
            && !r.stdout().contains("not-the-password-xyz")
    );
}

#[test]
fn registry_auth_from_flags_env_and_auth_json() {
    let Some(reg) = Registry::start(Setup::Htpasswd(USER, PASS)) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let src = image(home);

    // --username + --password-stdin.
    let push_stdin = |password: &str, tag: &str| {
        let mut child = hoist_in(home)
            .args([
                "push",
                "--username",
                USER,
                "--password-stdin",
                &src,
                &reg.r(&format!("f/x:{tag}")),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        Run {
            cmd: "hoist push --password-stdin".into(),
            out: child.wait_with_output().unwrap(),
        }
    };
    push_stdin(PASS, "1").ok();
    let r = push_stdin("wrong-password-123", "2");
    r.fails_with(
        1,
        &[
            &format!("authentication failed for {}", reg.host),
            "--password-stdin",
        ],
    );
    assert!(!r.stderr().contains("wrong-password-123"));

    // HOIST_USERNAME / HOIST_PASSWORD.
    run(hoist_in(home)
        .env("HOIST_USERNAME", USER)
        .env("HOIST_PASSWORD", PASS)
        .args(["push", &src, &reg.r("f/x:3")]))
    .ok();

    // $REGISTRY_AUTH_FILE (containers auth.json).
    let auth = home.join("auth.json");
    fs::write(
        &auth,
        serde_json::json!({"auths": {reg.host.clone(): {"auth": b64(&format!("{USER}:{PASS}"))}}})
            .to_string(),
    )
    .unwrap();
    run(hoist_in(home)
        .env("REGISTRY_AUTH_FILE", &auth)
        .args(["inspect", &reg.r("f/x:3")]))
    .ok();

    // --username without a password is a usage problem, named.
    let r = run(hoist_in(home).args(["push", "--username", USER, &src, &reg.r("f/x:4")]));
    r.fails_with(1, &["--password-stdin"]);
}
