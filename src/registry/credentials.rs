//! Where credentials for a registry come from: explicit ones (flags/env), docker's
//! `config.json` (`credHelpers`, `credsStore`, `auths`), and containers' `auth.json`. Secrets are
//! never formatted into messages: [`Credentials`]' `Debug` hides them.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::registry::name::{DOCKER_HUB, DOCKER_HUB_CONFIG_KEY};

/// A user name and secret, and where they were found.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token (never printed).
    pub secret: String,
    /// Where they came from ("--username", "/home/u/.docker/config.json", …).
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials({} from {}, secret hidden)",
            self.username, self.source
        )
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Finds credentials for `registry` (as written in references, e.g. `docker.io`,
/// `localhost:5000`): docker's config first, then containers' auth files.
pub fn lookup(registry: &str) -> Result<Option<Credentials>> {
    for path in docker_config_paths() {
        if let Some(c) = from_docker_config(&path, registry)? {
            return Ok(Some(c));
        }
    }
    for path in auth_json_paths() {
        if let Some(c) = from_auths_file(&path, registry)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config_paths() -> Vec<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => vec![PathBuf::from(d).join("config.json")],
        None => home()
            .map(|h| h.join(".docker/config.json"))
            .into_iter()
            .collect(),
    }
}

/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`.
fn auth_json_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        out.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(h) = home() {
        out.push(h.join(".config/containers/auth.json"));
    }
    out
}

pub(crate) fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// The keys a registry's entry may be stored under in `auths`.
fn candidate_keys(registry: &str) -> Vec<String> {
    if registry == DOCKER_HUB {
        return [
            DOCKER_HUB_CONFIG_KEY,
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1",
            "https://registry-1.docker.io",
        ]
        .map(String::from)
        .to_vec();
    }
    vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ]
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    let raw = match std::fs::read(path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    crate::manifest::parse_json(&raw, "credentials file", &path.display().to_string()).map(Some)
}

/// Credentials from a docker `config.json`: `credHelpers[registry]`, then `credsStore`, then
/// `auths`.
fn from_docker_config(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let Some(doc) = read_json(path)? else {
        return Ok(None);
    };
    let helper_key = if registry == DOCKER_HUB {
        DOCKER_HUB_CONFIG_KEY
    } else {
        registry
    };
    for key in candidate_keys(registry) {
        if let Some(h) = doc["credHelpers"][&key].as_str() {
            return run_helper(h, helper_key, registry);
        }
    }
    if let Some(h) = doc["credsStore"].as_str() {
        if let Some(c) = run_helper(h, helper_key, registry)? {
            return Ok(Some(c));
        }
    }
    from_auths(&doc, path, registry)
}

fn from_auths_file(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    match read_json(path)? {
        Some(doc) => from_auths(&doc, path, registry),
        None => Ok(None),
    }
}

/// An `auths` entry: `auth` is base64 of `user:secret` (or `username`/`password` fields).
fn from_auths(doc: &Value, path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let source = path.display().to_string();
    for key in candidate_keys(registry) {
        let entry = &doc["auths"][&key];
        if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
            let bad = |reason: &str| Error::Credentials {
                host: registry.into(),
                source_name: format!("{source} (auths.{key:?}.auth)"),
                reason: reason.into(),
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("not valid base64"))?;
            let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad("expected base64 of user:password"))?;
            return Ok(Some(Credentials {
                username: u.into(),
                secret: p.into(),
                source,
            }));
        }
        if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return Ok(Some(Credentials {
                username: u.into(),
                secret: p.into(),
                source,
            }));
        }
    }
    Ok(None)
}

/// Runs `docker-credential-NAME get` with the server URL on stdin. "credentials not found"
/// is no credentials, not an error.
fn run_helper(name: &str, server: &str, registry: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{name}");
    let fail = |reason: String| Error::Credentials {
        host: registry.into(),
        source_name: program.clone(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| fail(format!("writing its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        // Only the helper's own message; it never holds the secret on failure.
        return Err(fail(format!(
            "exited with {}: {}",
            out.status,
            stdout.trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        fail("its output is not the expected JSON {\"Username\",\"Secret\"}".into())
    })?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) if u != "<token>" => Ok(Some(Credentials { username: u.into(), secret: s.into(), source: program })),
        (Some(_), Some(_)) => Err(fail("identity tokens (Username \"<token>\") are not supported yet; log in with a password or access token".into())),
        _ => Err(fail("its output lacks Username or Secret".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_by_hub_key_and_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let doc = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("hub:s3cret")},
            "localhost:5000": {"username": "u", "password": "p"},
            "bad.example": {"auth": "!!!"}
        }});
        std::fs::write(&path, doc.to_string()).unwrap();
        let hub = from_docker_config(&path, DOCKER_HUB).unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.secret.as_str()),
            ("hub", "s3cret")
        );
        assert!(!format!("{hub:?}").contains("s3cret"));
        let local = from_docker_config(&path, "localhost:5000")
            .unwrap()
            .unwrap();
        assert_eq!(local.username, "u");
        assert!(from_docker_config(&path, "ghcr.io").unwrap().is_none());
        assert!(matches!(
            from_docker_config(&path, "bad.example"),
            Err(Error::Credentials { .. })
        ));
        assert!(from_docker_config(&dir.path().join("none.json"), "x")
            .unwrap()
            .is_none());
    }

    #[test]
    fn missing_helper_is_a_credentials_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"credHelpers":{"r.example":"hoist-test-does-not-exist"}}"#,
        )
        .unwrap();
        assert!(matches!(
            from_docker_config(&path, "r.example"),
            Err(Error::Credentials { .. })
        ));
    }
}
