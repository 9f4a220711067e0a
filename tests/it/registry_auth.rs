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

    // The same helper as the default store (credsStore).
    fs::write(
        docker.join("config.json"),
        serde_json::json!({"credsStore": "hoisttest"}).to_string(),
    )
    .unwrap();
    run(hoist_in(home)
        .env("PATH", &path)
        .args(["inspect", &reg.r("a/b:1")]))
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

    // $XDG_RUNTIME_DIR/containers/auth.json (podman login's default).
    let runtime = home.join("run");
    fs::create_dir_all(runtime.join("containers")).unwrap();
    fs::copy(&auth, runtime.join("containers/auth.json")).unwrap();
    run(hoist_in(home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["inspect", &reg.r("f/x:3")]))
    .ok();

    // --username without a password is a usage problem, named.
    let r = run(hoist_in(home).args(["push", "--username", USER, &src, &reg.r("f/x:4")]));
    r.fails_with(1, &["--password-stdin"]);
}

/// The Bearer token flow, through [`token_proxy`].
#[test]
fn registry_bearer_token_flow_with_mount_scope() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let (proxy, scopes) = token_proxy(&reg.host, false, false);
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", "token\n");
    let with_creds = |c: &mut std::process::Command| {
        c.env("HOIST_USERNAME", USER).env("HOIST_PASSWORD", PASS);
    };
    let mut c = hoist_in(home);
    with_creds(&mut c);
    run(c
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("{}/base/img:1", proxy.host)))
    .ok();
    let after_push = scopes.lock().unwrap().clone();
    assert_eq!(
        after_push,
        ["repository:base/img:pull,push"],
        "one token, cached for every blob and the manifest"
    );

    // A build on that base pushed to another repository: the token covers the mount source.
    let app = home.join("app");
    write_file(&app.join("f"), b"f\n", 0o644);
    let mut c = hoist_in(home);
    with_creds(&mut c);
    let r = run(c
        .args([
            "build",
            "--base",
            &format!("{}/base/img:1", proxy.host),
            "--layer",
        ])
        .arg(format!("{}:/app", app.display()))
        .args(["--push", &format!("{}/app/img:1", proxy.host)]));
    r.ok();
    assert!(r.stderr().contains("mounted"), "{}", r.stderr());
    let all = scopes.lock().unwrap().clone();
    assert!(
        all.contains(&"repository:base/img:pull".to_string()),
        "{all:?}"
    );
    assert!(
        all.contains(&"repository:app/img:pull,push repository:base/img:pull".to_string()),
        "{all:?}"
    );

    // An identity token from docker's config.json is exchanged with a POST.
    let docker = home.join(".docker");
    fs::create_dir_all(&docker).unwrap();
    fs::write(docker.join("config.json"), serde_json::json!({"auths": {proxy.host.clone(): {"auth": "", "identitytoken": "refresh-token-xyz"}}}).to_string()).unwrap();
    let r = run(hoist_in(home).args(["inspect", &format!("{}/base/img:1", proxy.host)]));
    r.ok();
    assert!(scopes.lock().unwrap().contains(&"POST /token".to_string()));
    assert!(!r.stderr().contains("refresh-token-xyz"));
    fs::remove_file(docker.join("config.json")).unwrap();

    // Wrong password at the token endpoint.
    let r = run(hoist_in(home)
        .env("HOIST_USERNAME", USER)
        .env("HOIST_PASSWORD", "nope-nope-nope")
        .args(["inspect", &format!("{}/base/img:1", proxy.host)]));
    r.fails_with(1, &[&format!("authentication failed for {}", proxy.host)]);
    assert!(!r.stderr().contains("nope-nope-nope"));
}

/// A token service in front of `upstream` (the proxy plays both): `/v2/…` wants a Bearer token
/// from `/token`, which wants Basic credentials and records the scopes asked for. With
/// `anonymous_ping`, `/v2/` itself answers without a challenge. With `expire_on_upload`, the
/// token in use expires the first time a blob upload carries a body of 1 MiB or more (or a
/// streamed one): that request is refused with a challenge and the next token is handed out.
fn token_proxy(
    upstream: &str,
    anonymous_ping: bool,
    expire_on_upload: bool,
) -> (FaultProxy, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let scopes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s2 = scopes.clone();
    let good = format!("Basic {}", b64(&format!("{USER}:{PASS}")));
    // The token now valid is `tok-N`; `expired` once the upload has expired one.
    let state = std::sync::Mutex::new((1u32, false));
    let proxy = FaultProxy::start_with(upstream, move |r: &Request| {
        let mut state = state.lock().unwrap();
        let token = format!("tok-{}", state.0);
        if anonymous_ping && r.path == "/v2/" {
            return Fault::Pass;
        }
        if r.method == "POST" && r.path == "/token" {
            // The OAuth2 refresh-token exchange (identity tokens).
            s2.lock().unwrap().push("POST /token".into());
            return Fault::RespondBody(
                200,
                vec![("Content-Type", "application/json".into())],
                format!(r#"{{"access_token":"{token}"}}"#),
            );
        }
        if let Some(q) = r.path.strip_prefix("/token?") {
            if r.authorization.as_deref() != Some(good.as_str()) {
                return Fault::Respond(401, vec![]);
            }
            let asked: Vec<String> = q
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .map(|v| {
                    v.replace("%3A", ":")
                        .replace("%2F", "/")
                        .replace("%2C", ",")
                })
                .collect();
            s2.lock().unwrap().push(asked.join(" "));
            return Fault::RespondBody(
                200,
                vec![("Content-Type", "application/json".into())],
                format!(r#"{{"token":"{token}","expires_in":300}}"#),
            );
        }
        let big_upload = r.path.contains("/blobs/uploads/")
            && r.body_len.is_none_or(|n| n >= 1 << 20)
            && matches!(r.method.as_str(), "PUT" | "PATCH");
        if expire_on_upload && big_upload && !state.1 {
            *state = (state.0 + 1, true);
            s2.lock().unwrap().push(format!("expired {token}"));
        } else if r.authorization.as_deref() == Some(format!("Bearer {token}").as_str()) {
            return Fault::Pass;
        }
        let challenge = format!(
            r#"Bearer realm="http://{}/token",service="hoist-test""#,
            r.proxy
        );
        Fault::Respond(401, vec![("WWW-Authenticate", challenge)])
    });
    (proxy, scopes)
}

/// A token that expires while a large blob is being uploaded (sent through the async client,
/// which does not renew tokens) is renewed and the upload made again, by `hoist push` and by a
/// `build --push` that streams its layer.
#[test]
fn registry_token_expiring_during_a_large_upload_is_renewed() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    // A layer of about 3 MB compressed: above the size sent through the async client.
    let hex: String = noise(6 << 20, 0x5eed_cafe_f00d_1234)
        .into_iter()
        .map(|b| b"0123456789abcdef"[(b & 15) as usize] as char)
        .collect();
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", &hex);
    let app = home.join("app");
    write_file(&app.join("big.txt"), hex.as_bytes(), 0o644);
    let creds = |c: &mut std::process::Command| {
        c.env("HOIST_USERNAME", USER).env("HOIST_PASSWORD", PASS);
    };
    let check_expired_and_renewed = |scopes: &[String], what: &str| {
        let expired = scopes.iter().position(|s| s == "expired tok-1");
        let expired =
            expired.unwrap_or_else(|| panic!("{what}: no upload expired the token: {scopes:?}"));
        assert!(
            scopes[expired + 1..]
                .iter()
                .any(|s| s.contains("pull,push")),
            "{what}: no new token after the expiry: {scopes:?}"
        );
    };

    let (proxy, scopes) = token_proxy(&reg.host, false, true);
    let mut c = hoist_in(home);
    creds(&mut c);
    run(c
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("{}/exp/push:1", proxy.host)))
    .ok();
    check_expired_and_renewed(&scopes.lock().unwrap(), "push");

    // build --push streams the new layer: with a cache (followed file) and without (pipe).
    for (name, extra) in [
        (
            "followed",
            vec![
                "--cache-dir".to_string(),
                home.join("cache").display().to_string(),
            ],
        ),
        ("piped", vec!["--no-cache".to_string()]),
    ] {
        let (proxy, scopes) = token_proxy(&reg.host, false, true);
        let mut c = hoist_in(home);
        creds(&mut c);
        let r = run(c
            .args(["build", "--no-check", "--base", "scratch", "--layer"])
            .arg(format!("{}:/app", app.display()))
            .args(&extra)
            .args(["--push", &format!("{}/exp/{name}:1", proxy.host)]));
        r.ok();
        check_expired_and_renewed(&scopes.lock().unwrap(), name);
        assert!(r.stderr().contains("failed"), "{name}: {}", r.stderr());
    }

    // Every image is whole in the registry: a pull verifies each blob.
    for name in ["push", "followed", "piped"] {
        run(hoist_in(home)
            .arg("pull")
            .arg(format!("{}/exp/{name}:1", reg.host))
            .arg(format!(
                "oci:{}",
                home.join(format!("pulled-{name}")).display()
            )))
        .ok();
    }
}

#[test]
fn registry_challenge_met_after_an_anonymous_ping() {
    let Some(reg) = Registry::start(Setup::Plain) else {
        return;
    };
    let t = tempdir();
    let home = t.path();
    let (proxy, scopes) = token_proxy(&reg.host, true, false);
    let layout = home.join("l");
    scratch_image(home, &layout, "1", "linux/amd64", "late challenge\n");
    let r = run(hoist_in(home)
        .env("HOIST_USERNAME", USER)
        .env("HOIST_PASSWORD", PASS)
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("{}/late/img:1", proxy.host)));
    r.ok();
    assert_eq!(
        scopes.lock().unwrap().clone(),
        ["repository:late/img:pull,push"]
    );
}
