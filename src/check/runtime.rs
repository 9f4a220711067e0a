//! Checks of the image settings against its files: the entrypoint (exists, is executable, its
//! `#!` interpreter exists), the user (in `/etc/passwd`, group in `/etc/group`) and the working
//! directory.

use serde_json::Value;

use crate::check::report::{Finding, Severity};
use crate::check::summary::Kind;
use crate::check::tree::Tree;

/// `PATH` runtimes use when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn config_finding(severity: Severity, check: &'static str, message: String, fix: &str) -> Finding {
    Finding {
        severity,
        file: "config".into(),
        check,
        message,
        fix: Some(fix.into()),
        items: vec![],
    }
}

/// A variable of the config's `Env`.
pub fn env_var<'a>(config: &'a Value, key: &str) -> Option<&'a str> {
    config["config"]["Env"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|e| e.split_once('='))
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Finds a program as `execve` from a runtime would: a path (relative to the working
/// directory), else each `PATH` folder. Returns the resolved path.
fn find_program(tree: &Tree, prog: &str, path_var: &str, workdir: &str) -> Option<String> {
    if prog.contains('/') {
        let full = if prog.starts_with('/') {
            prog.to_string()
        } else {
            format!("{workdir}/{prog}")
        };
        return tree.resolve_file(&full).map(|(p, _)| p);
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .find_map(|d| tree.resolve_file(&format!("{d}/{prog}")).map(|(p, _)| p))
}

/// Checks the entrypoint (or the command, without one).
pub fn check_entrypoint(tree: &Tree, config: &Value) -> Vec<Finding> {
    let c = &config["config"];
    let mut argv = strings(&c["Entrypoint"]);
    if argv.is_empty() {
        argv = strings(&c["Cmd"]);
    }
    let Some(prog) = argv.first() else {
        return Vec::new();
    };
    let path_var = env_var(config, "PATH").unwrap_or(DEFAULT_PATH);
    let workdir = c["WorkingDir"].as_str().unwrap_or("/");
    let mut out = Vec::new();
    let Some(found) = find_program(tree, prog, path_var, workdir) else {
        let why = if prog.contains('/') {
            format!("entrypoint {prog} does not exist in the image")
        } else {
            format!("entrypoint {prog} is not found on PATH ({path_var})")
        };
        out.push(config_finding(
            Severity::Error,
            "entrypoint",
            why,
            "point --entrypoint at a file one of the layers adds (check the layer destination and the name inside it)",
        ));
        return out;
    };
    let Some(node) = tree.get(&found) else {
        return out;
    };
    if node.mode & 0o111 == 0 {
        out.push(config_finding(
            Severity::Error,
            "entrypoint",
            format!(
                "entrypoint /{found} is not executable (mode {:o})",
                node.mode
            ),
            "make the file executable in its source (chmod +x) before building",
        ));
    }
    if let Some(line) = &node.shebang {
        let mut words = line.split_whitespace();
        let interp = words.next().unwrap_or("");
        match tree.resolve_file(interp) {
            None => out.push(config_finding(
                Severity::Error,
                "entrypoint",
                format!(
                    "entrypoint /{found} starts with #!{line}, but {interp} is not in the image"
                ),
                "install the interpreter in the base, or change the script's #! line",
            )),
            Some((p, _)) if p.ends_with("/env") => {
                let prog = words.find(|w| !w.starts_with('-'));
                if let Some(prog) = prog {
                    if find_program(tree, prog, path_var, workdir).is_none() {
                        out.push(config_finding(
                            Severity::Error,
                            "entrypoint",
                            format!("entrypoint /{found} runs `{prog}` through env, but {prog} is not on PATH ({path_var})"),
                            "install it in the base, or set PATH with --env to where it is",
                        ));
                    }
                }
            }
            Some(_) => {}
        }
    }
    out
}

/// The fields of `/etc/passwd` or `/etc/group` lines: `(name, id)`.
pub fn accounts(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect()
}

/// Checks `User` against the image's `/etc/passwd` and `/etc/group`.
pub fn check_user(tree: &Tree, config: &Value) -> Vec<Finding> {
    let Some(user) = config["config"]["User"].as_str().filter(|u| !u.is_empty()) else {
        return Vec::new();
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let mut out = Vec::new();
    let passwd = accounts(tree.text("etc/passwd").unwrap_or(""));
    let groups = accounts(tree.text("etc/group").unwrap_or(""));
    let fix = "add the account with --user-add NAME:UID[:GID[:HOME]]";
    match u.parse::<u64>() {
        Ok(uid) if !passwd.iter().any(|(_, id)| *id == uid) => out.push(config_finding(
            Severity::Warning,
            "user",
            format!("user id {uid} has no entry in /etc/passwd: HOME will be / and tools that look the user up fail"),
            fix,
        )),
        Ok(_) => {}
        Err(_) if !passwd.iter().any(|(n, _)| n == u) => out.push(config_finding(
            Severity::Error,
            "user",
            format!("user {u:?} is not in the image's /etc/passwd: the container will not start"),
            fix,
        )),
        Err(_) => {}
    }
    if let Some(g) = g {
        let known = match g.parse::<u64>() {
            Ok(_) => true,
            Err(_) => groups.iter().any(|(n, _)| n == g),
        };
        if !known {
            out.push(config_finding(
                Severity::Error,
                "user",
                format!(
                    "group {g:?} is not in the image's /etc/group: the container will not start"
                ),
                fix,
            ));
        }
    }
    out
}

/// Checks `WorkingDir`: a directory, or missing (the runtime creates it, owned by root).
pub fn check_workdir(tree: &Tree, config: &Value) -> Vec<Finding> {
    let Some(dir) = config["config"]["WorkingDir"]
        .as_str()
        .filter(|d| !d.is_empty())
    else {
        return Vec::new();
    };
    match tree.resolve(dir) {
        Some((_, Some(n))) if n.kind != Kind::Dir => vec![config_finding(
            Severity::Error,
            "workdir",
            format!("working directory {dir} exists but is not a directory"),
            "pick another --workdir",
        )],
        Some((_, Some(_))) | Some((_, None)) => Vec::new(),
        None => {
            let user = config["config"]["User"].as_str().unwrap_or("");
            let root = matches!(user, "" | "root" | "0" | "0:0" | "root:root");
            let (severity, tail) = if root {
                (Severity::Info, "")
            } else {
                (Severity::Warning, ", so the user cannot write to it")
            };
            vec![config_finding(
                severity,
                "workdir",
                format!("working directory {dir} is not in the image: the runtime creates it, owned by root{tail}"),
                &format!("add --mkdir {dir},owner=UID:GID to create it with the right owner"),
            )]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::summary::{Change, LayerSummary, Node};
    use serde_json::json;

    fn tree() -> Tree {
        let mut t = Tree::default();
        let mut passwd = Node::plain(Kind::File, 0o644, 0, 0, 1);
        passwd.text =
            Some("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".into());
        let mut group = Node::plain(Kind::File, 0o644, 0, 0, 1);
        group.text = Some("root:x:0:\napp:x:1000:\n".into());
        let mut script = Node::plain(Kind::File, 0o755, 0, 0, 1);
        script.shebang = Some("/usr/bin/env python3".into());
        t.apply(
            &LayerSummary {
                changes: vec![
                    Change::Add("etc/passwd".into(), passwd),
                    Change::Add("etc/group".into(), group),
                    Change::Add(
                        "usr/bin/env".into(),
                        Node::plain(Kind::File, 0o755, 0, 0, 1),
                    ),
                    Change::Add("app/run".into(), script),
                    Change::Add("app/data".into(), Node::plain(Kind::File, 0o644, 0, 0, 1)),
                ],
            },
            false,
        );
        t
    }

    fn checks(c: Value) -> Vec<(&'static str, Severity)> {
        let t = tree();
        let mut f = check_entrypoint(&t, &c);
        f.extend(check_user(&t, &c));
        f.extend(check_workdir(&t, &c));
        f.iter().map(|f| (f.check, f.severity)).collect()
    }

    #[test]
    fn table() {
        use Severity::*;
        let cases = [
            (
                json!({"Entrypoint": ["/app/run"], "User": "app"}),
                vec![("entrypoint", Error)],
            ),
            (
                json!({"Entrypoint": ["/app/data"]}),
                vec![("entrypoint", Error)],
            ),
            (
                json!({"Entrypoint": ["/nope"]}),
                vec![("entrypoint", Error)],
            ),
            (json!({"Cmd": ["env"], "User": "app:app"}), vec![]),
            (json!({"User": "bob"}), vec![("user", Error)]),
            (json!({"User": "4242"}), vec![("user", Warning)]),
            (
                json!({"User": "app", "WorkingDir": "/workspace"}),
                vec![("workdir", Warning)],
            ),
            (json!({"WorkingDir": "/workspace"}), vec![("workdir", Info)]),
            (json!({"WorkingDir": "/app/data"}), vec![("workdir", Error)]),
        ];
        for (c, want) in cases {
            let env = json!({"config": c});
            assert_eq!(checks(env.clone()), want, "{env}");
        }
    }
}
