//! Playwright browser folders: `NAME-REVISION/` with an `INSTALLATION_COMPLETE` marker under
//! `$PLAYWRIGHT_BROWSERS_PATH`, and the revisions a bundled `browsers.json` expects.

use serde_json::Value;

use crate::check::report::{Finding, Severity};
use crate::check::runtime::env_var;
use crate::check::summary::Kind;
use crate::check::tree::Tree;

/// The marker Playwright writes once a browser is fully installed.
pub const MARKER: &str = "INSTALLATION_COMPLETE";

/// A browser folder: `chromium_headless_shell-1187` → (`chromium_headless_shell`, `1187`).
pub fn split_folder(name: &str) -> Option<(&str, &str)> {
    let (n, rev) = name.rsplit_once('-')?;
    (!n.is_empty() && !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()))
        .then_some((n, rev))
}

/// The folder name Playwright uses for a `browsers.json` entry.
pub fn folder_for(name: &str, revision: &str) -> String {
    format!("{}-{revision}", name.replace('-', "_"))
}

/// Problems of a browsers folder given its top-level entries `(name, is_dir, has_marker)`:
/// no browser at all, or folders without `INSTALLATION_COMPLETE`.
pub fn folder_problems(entries: &[(String, bool, bool)]) -> Vec<String> {
    let mut out = Vec::new();
    let browsers: Vec<_> = entries
        .iter()
        .filter(|(n, dir, _)| *dir && split_folder(n).is_some())
        .collect();
    if browsers.is_empty() {
        out.push("no NAME-REVISION browser folder (e.g. chromium-1187): is this a Playwright browsers folder?".to_string());
    }
    for (n, _, marker) in browsers {
        if !marker {
            out.push(format!("{n} has no {MARKER} marker: Playwright treats it as a broken install (run `playwright install` to completion)"));
        }
    }
    out
}

/// Revisions `browsers.json` expects: `(folder name, name)` pairs.
pub fn expected_folders(browsers_json: &str) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_str::<Value>(browsers_json) else {
        return Vec::new();
    };
    v["browsers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            let name = b["name"].as_str()?;
            let rev = b["revision"].as_str()?;
            Some((folder_for(name, rev), name.replace('-', "_")))
        })
        .collect()
}

fn warn(file: String, message: String, fix: &str) -> Finding {
    Finding {
        severity: Severity::Warning,
        file,
        check: "browsers",
        message,
        fix: Some(fix.into()),
        items: vec![],
    }
}

/// Checks the browsers under `PLAYWRIGHT_BROWSERS_PATH` against every `browsers.json` of the
/// new layers.
pub fn check(tree: &Tree, config: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(root) = env_var(config, "PLAYWRIGHT_BROWSERS_PATH").filter(|p| p.starts_with('/'))
    else {
        return out;
    };
    let Some((real, _)) = tree.resolve(root).filter(|_| tree.is_dir(root)) else {
        out.push(warn(
            "config".into(),
            format!("PLAYWRIGHT_BROWSERS_PATH={root} is not a folder in the image: Playwright will not find its browsers"),
            "add the browsers as a layer at that path (--browsers DIR), or fix the variable",
        ));
        return out;
    };
    let entries: Vec<(String, bool, bool)> = tree
        .children(&real)
        .map(|(p, n)| {
            let name = p.rsplit('/').next().unwrap_or(p).to_string();
            let marker = tree.get(&format!("{p}/{MARKER}")).is_some();
            (name, n.kind == Kind::Dir, marker)
        })
        .collect();
    for problem in folder_problems(&entries) {
        out.push(warn(
            root.to_string(),
            problem,
            "pack the browsers folder from a complete `playwright install`",
        ));
    }
    let present: Vec<(&str, &str)> = entries
        .iter()
        .filter_map(|(n, _, _)| split_folder(n))
        .collect();
    for (path, node) in tree.iter() {
        if !node.new || !path.ends_with("playwright/driver/package/browsers.json") {
            continue;
        }
        let Some(text) = &node.text else {
            continue;
        };
        for (folder, name) in expected_folders(text) {
            let Some((_, have)) = present.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            if folder != format!("{name}-{have}") {
                out.push(warn(
                    format!("/{path}"),
                    format!("this Playwright expects {folder}, but {root} has {name}-{have}: it will not find its browser"),
                    "install the browsers with the same Playwright version as the bundle, then pack them again",
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_json() {
        assert_eq!(
            split_folder("chromium_headless_shell-1187"),
            Some(("chromium_headless_shell", "1187"))
        );
        assert_eq!(split_folder("chrome-linux"), None);
        assert_eq!(
            folder_for("chromium-headless-shell", "1187"),
            "chromium_headless_shell-1187"
        );
        let json = r#"{"browsers":[{"name":"chromium","revision":"1187"},{"name":"ffmpeg","revision":"1011"}]}"#;
        assert_eq!(
            expected_folders(json),
            vec![
                ("chromium-1187".to_string(), "chromium".to_string()),
                ("ffmpeg-1011".to_string(), "ffmpeg".to_string())
            ]
        );
        let p = folder_problems(&[
            ("chromium-1187".into(), true, false),
            (".links".into(), true, false),
        ]);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains(MARKER));
        assert_eq!(folder_problems(&[]).len(), 1);
    }
}
