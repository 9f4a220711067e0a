//! Pure edits of an image config document (entrypoint, cmd, env, user, workdir, labels, ports,
//! history, rootfs): a base config goes in, the edited config comes out. Fields hoist does not
//! know are kept as they are.

use serde_json::{json, Map, Value};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Platform;

/// The config edits a build asks for. `None` / empty leaves the base's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigEdits {
    /// New entrypoint; as in a Dockerfile, setting it clears an inherited cmd unless `cmd` is set too.
    pub entrypoint: Option<Vec<String>>,
    /// New cmd.
    pub cmd: Option<Vec<String>>,
    /// Environment variables set in order; `$NAME`/`${NAME}` in values expand from the image env.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User (`name`, `uid`, `uid:gid`, …).
    pub user: Option<String>,
    /// Labels set (replacing same keys).
    pub labels: Vec<(String, String)>,
    /// Exposed ports, normalised to `PORT/PROTO`.
    pub expose: Vec<String>,
    /// Stop signal.
    pub stop_signal: Option<String>,
}

/// Parses `K=V` (as in `--env` / `--label`); the key must be non-empty and contain no `=`.
pub fn parse_key_value(what: &'static str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.chars().any(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(Error::InvalidValue {
            what,
            value: s.into(),
            reason: "expected KEY=VALUE with a non-empty KEY without spaces",
        }),
    }
}

/// Parses `--entrypoint` / `--cmd`: a JSON array of strings, or any other text as one element.
pub fn parse_command(what: &'static str, s: &str) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(s).map_err(|_| Error::InvalidValue {
            what,
            value: s.into(),
            reason: "a value starting with '[' must be a JSON array of strings",
        })
    } else {
        Ok(vec![s.to_string()])
    }
}

/// Normalises `--expose PORT[/PROTO]` to `PORT/proto`.
pub fn parse_port(s: &str) -> Result<String> {
    let bad = || Error::InvalidValue {
        what: "--expose",
        value: s.into(),
        reason: "expected PORT[/tcp|udp|sctp] with PORT from 1 to 65535",
    };
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = port.parse().map_err(|_| bad())?;
    let proto = proto.to_ascii_lowercase();
    if port == 0 || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    Ok(format!("{port}/{proto}"))
}

/// A config for an image with no layers (`--base scratch`).
pub fn scratch(platform: &Platform) -> Value {
    let mut v = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    });
    if let Some(variant) = &platform.variant {
        v["variant"] = json!(variant);
    }
    v
}

/// The platform a config describes.
pub fn platform_of(config: &Value) -> Option<Platform> {
    let s = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_string);
    Some(Platform {
        os: s("os")?,
        architecture: s("architecture")?,
        variant: s("variant"),
        extra: Default::default(),
    })
}

/// Runs `f` on the object at `key` of `m`, which becomes an empty object first when it is missing
/// or is not an object.
fn edit_object(m: &mut Map<String, Value>, key: &str, f: impl FnOnce(&mut Map<String, Value>)) {
    let mut inner = match m.remove(key) {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    };
    f(&mut inner);
    m.insert(key.to_string(), Value::Object(inner));
}

/// Runs `f` on the top-level object of a config document (made an object when it is not).
fn edit_root(config: &mut Value, f: impl FnOnce(&mut Map<String, Value>)) {
    let mut root = match config.take() {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    f(&mut root);
    *config = Value::Object(root);
}

impl ConfigEdits {
    /// Lays `later` over these edits: single values it sets replace, env, labels and ports are
    /// applied after these (so `later` wins for the same key).
    pub fn overlay(&mut self, later: ConfigEdits) {
        fn pick<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        pick(&mut self.entrypoint, later.entrypoint);
        pick(&mut self.cmd, later.cmd);
        pick(&mut self.workdir, later.workdir);
        pick(&mut self.user, later.user);
        pick(&mut self.stop_signal, later.stop_signal);
        self.env.extend(later.env);
        self.labels.extend(later.labels);
        self.expose.extend(later.expose);
    }

    /// Applies the edits to a config document.
    pub fn apply(&self, config: &mut Value) {
        edit_root(config, |root| {
            edit_object(root, "config", |c| self.apply_to(c))
        });
    }

    fn apply_to(&self, c: &mut Map<String, Value>) {
        if let Some(ep) = &self.entrypoint {
            c.insert("Entrypoint".into(), json!(ep));
            if self.cmd.is_none() {
                c.remove("Cmd");
            }
        }
        if let Some(cmd) = &self.cmd {
            c.insert("Cmd".into(), json!(cmd));
        }
        if !self.env.is_empty() {
            let mut env: Vec<String> = c
                .get("Env")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in &self.env {
                let value = expand(v, &env);
                let line = format!("{k}={value}");
                match env
                    .iter_mut()
                    .find(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k.as_str()))
                {
                    Some(slot) => *slot = line,
                    None => env.push(line),
                }
            }
            c.insert("Env".into(), json!(env));
        }
        if let Some(w) = &self.workdir {
            c.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &self.user {
            c.insert("User".into(), json!(u));
        }
        if let Some(s) = &self.stop_signal {
            c.insert("StopSignal".into(), json!(s));
        }
        if !self.labels.is_empty() {
            edit_object(c, "Labels", |labels| {
                for (k, v) in &self.labels {
                    labels.insert(k.clone(), json!(v));
                }
            });
        }
        if !self.expose.is_empty() {
            edit_object(c, "ExposedPorts", |ports| {
                for p in &self.expose {
                    ports.insert(p.clone(), json!({}));
                }
            });
        }
    }
}

/// Expands `$NAME` and `${NAME}` from `env` (`KEY=VALUE` lines) the way a Dockerfile `ENV` does;
/// `\$` is a literal dollar sign, unknown names expand to nothing.
pub fn expand(value: &str, env: &[String]) -> String {
    let lookup = |name: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
            .unwrap_or("")
            .to_string()
    };
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                out.push('$');
                chars.next();
            }
            '$' if chars.peek() == Some(&'{') => {
                chars.next();
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push_str(&lookup(&name));
            }
            '$' if chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') =>
            {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(&lookup(&name));
            }
            c => out.push(c),
        }
    }
    out
}

/// Appends a layer's diff_id and a history entry describing it.
pub fn add_layer(config: &mut Value, diff_id: &Digest, created: &str, created_by: &str) {
    let entry = json!({"created": created, "created_by": created_by, "comment": "hoist"});
    edit_root(config, |root| {
        edit_object(root, "rootfs", |rootfs| {
            rootfs.insert("type".into(), json!("layers"));
            push_to_array(rootfs, "diff_ids", json!(diff_id.to_string()));
        });
        push_to_array(root, "history", entry);
    });
}

/// Appends to the array at `key` (made an array first when it is missing or is not one).
fn push_to_array(m: &mut Map<String, Value>, key: &str, item: Value) {
    let mut items = match m.remove(key) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    items.push(item);
    m.insert(key.to_string(), Value::Array(items));
}

/// The number of layers a config's `rootfs.diff_ids` lists.
pub fn diff_id_count(config: &Value) -> usize {
    config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// Sets the config's creation time.
pub fn set_created(config: &mut Value, created: &str) {
    edit_root(config, |root| {
        root.insert("created".into(), json!(created));
    });
}

/// Formats seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_table() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn env_expands_and_replaces() {
        let mut cfg = json!({"config": {"Env": ["PATH=/usr/bin", "A=1"]}});
        let edits = ConfigEdits {
            env: vec![
                ("PATH".into(), "/opt/bin:$PATH".into()),
                ("B".into(), "${A}x\\$y".into()),
                ("A".into(), "2".into()),
            ],
            ..Default::default()
        };
        edits.apply(&mut cfg);
        assert_eq!(
            cfg["config"]["Env"],
            json!(["PATH=/opt/bin:/usr/bin", "A=2", "B=1x$y"])
        );
    }

    #[test]
    fn entrypoint_clears_inherited_cmd() {
        let mut cfg = json!({"config": {"Cmd": ["bash"]}});
        ConfigEdits {
            entrypoint: Some(vec!["/app".into()]),
            ..Default::default()
        }
        .apply(&mut cfg);
        assert_eq!(cfg["config"]["Entrypoint"], json!(["/app"]));
        assert!(cfg["config"].get("Cmd").is_none());
        ConfigEdits {
            entrypoint: Some(vec!["/app".into()]),
            cmd: Some(vec!["8000".into()]),
            ..Default::default()
        }
        .apply(&mut cfg);
        assert_eq!(cfg["config"]["Cmd"], json!(["8000"]));
    }

    #[test]
    fn parsers() {
        assert_eq!(
            parse_command("--cmd", r#"["a","b c"]"#).unwrap(),
            ["a", "b c"]
        );
        assert_eq!(
            parse_command("--cmd", "/bin/sh -c x").unwrap(),
            ["/bin/sh -c x"]
        );
        assert!(matches!(
            parse_command("--cmd", "[1,2]"),
            Err(Error::InvalidValue { .. })
        ));
        assert_eq!(parse_port("8000").unwrap(), "8000/tcp");
        assert_eq!(parse_port("53/UDP").unwrap(), "53/udp");
        for bad in ["0", "70000", "80/icmp", "x"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_key_value("--env", "A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        for bad in ["A", "=x", "A B=1"] {
            assert!(
                matches!(
                    parse_key_value("--env", bad),
                    Err(Error::InvalidValue { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn labels_ports_and_history() {
        let mut cfg = json!({"rootfs": {"type": "layers", "diff_ids": []}});
        ConfigEdits {
            labels: vec![("k".into(), "v".into())],
            expose: vec!["8000/tcp".into()],
            ..Default::default()
        }
        .apply(&mut cfg);
        add_layer(
            &mut cfg,
            &Digest::of(b"x"),
            "1970-01-01T00:00:00Z",
            "hoist layer a -> /b",
        );
        assert_eq!(cfg["config"]["Labels"]["k"], "v");
        assert_eq!(cfg["config"]["ExposedPorts"]["8000/tcp"], json!({}));
        assert_eq!(diff_id_count(&cfg), 1);
        assert_eq!(cfg["history"][0]["created_by"], "hoist layer a -> /b");
    }
}
