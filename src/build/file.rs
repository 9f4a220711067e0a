//! Build settings from `hoist.toml` and from flags, merged (flags win) and resolved into a
//! [`BuildSpec`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::build::accounts::{MkDir, UserAdd};
use crate::build::{BuildSpec, CacheSettings};
use crate::cache::{parse_size, LayerCache, DEFAULT_MAX_BYTES};
use crate::config::{parse_key_value, parse_port, ConfigEdits};
use crate::error::{Error, Result};
use crate::layer::LayerSpec;
use crate::reference::{ImageRef, LayoutRef};
use crate::registry::RegistryRef;

/// Build settings before validation, from a file or from flags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// `--base`.
    pub base: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
    /// `--output`.
    pub output: Option<String>,
    /// `--compression`.
    pub compression: Option<String>,
    /// `--layer`, in order.
    pub layers: Vec<LayerSpec>,
    /// `--entrypoint`, `--cmd`, `--env`, `--workdir`, `--user`, `--label`, `--expose` (checked
    /// and normalised by [`Settings::resolve`]) and `--stop-signal`.
    pub edits: ConfigEdits,
    /// `--cache-dir` (else `HOIST_CACHE_DIR`, `$XDG_CACHE_HOME/hoist`, `~/.cache/hoist`).
    pub cache_dir: Option<PathBuf>,
    /// `--cache-max-size` (else `HOIST_CACHE_MAX_SIZE`, else 10G).
    pub cache_max_size: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--push`, in order.
    pub push: Vec<String>,
    /// `--user-add`, in order.
    pub users: Vec<UserAdd>,
    /// `--mkdir`, in order.
    pub mkdirs: Vec<MkDir>,
    /// `--check` (`error`, `warn`, `off`).
    pub check: Option<String>,
    /// `--browsers SRC[:DEST]`: a Playwright browsers folder or tarball.
    pub browsers: Option<String>,
    /// `--tag-from-inputs`.
    pub tag_from_inputs: Option<bool>,
    /// `--skip-existing`.
    pub skip_existing: Option<bool>,
}

/// A command given either as an array or as one string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Command {
    List(Vec<String>),
    One(String),
}

impl From<Command> for Vec<String> {
    fn from(c: Command) -> Self {
        match c {
            Command::List(v) => v,
            Command::One(s) => vec![s],
        }
    }
}

/// The `hoist.toml` format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildFile {
    base: Option<String>,
    platform: Option<String>,
    output: Option<String>,
    compression: Option<String>,
    #[serde(default)]
    layer: Vec<LayerSpec>,
    entrypoint: Option<Command>,
    cmd: Option<Command>,
    #[serde(default)]
    env: toml::Table,
    workdir: Option<String>,
    user: Option<String>,
    #[serde(default)]
    labels: toml::Table,
    #[serde(default)]
    expose: Vec<String>,
    stop_signal: Option<String>,
    #[serde(default)]
    push: Vec<String>,
    #[serde(default)]
    user_add: Vec<UserAdd>,
    #[serde(default)]
    mkdir: Vec<MkDir>,
    check: Option<String>,
    browsers: Option<String>,
    tag_from_inputs: Option<bool>,
    skip_existing: Option<bool>,
}

fn table_pairs(path: &Path, what: &str, t: toml::Table) -> Result<Vec<(String, String)>> {
    t.into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            toml::Value::Integer(i) => Ok((k, i.to_string())),
            toml::Value::Boolean(b) => Ok((k, b.to_string())),
            _ => Err(Error::BuildFile {
                path: path.into(),
                message: format!("{what}.{k}: values must be strings"),
            }),
        })
        .collect()
}

/// Makes `oci:DIR…` and plain paths relative to `dir` (the build file's folder).
fn rebase_ref(dir: &Path, value: String) -> String {
    match value.strip_prefix("oci:") {
        Some(rest) if !rest.starts_with('/') => format!("oci:{}", dir.join(rest).display()),
        _ => value,
    }
}

fn rebase_path(dir: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        dir.join(p)
    }
}

impl Settings {
    /// Reads a `hoist.toml`. Relative paths in it (layer sources, `oci:` base and output) are
    /// taken from the file's own folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let file: BuildFile = toml::from_str(&text).map_err(|e| Error::BuildFile {
            path: path.into(),
            message: e.to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut layers = file.layer;
        for l in &mut layers {
            l.src = rebase_path(dir, std::mem::take(&mut l.src));
            l.validate()?;
        }
        Ok(Settings {
            base: file.base.map(|b| rebase_ref(dir, b)),
            platform: file.platform,
            output: file.output.map(|o| rebase_ref(dir, o)),
            compression: file.compression,
            layers,
            edits: ConfigEdits {
                entrypoint: file.entrypoint.map(Into::into),
                cmd: file.cmd.map(Into::into),
                env: table_pairs(path, "env", file.env)?,
                workdir: file.workdir,
                user: file.user,
                labels: table_pairs(path, "labels", file.labels)?,
                expose: file.expose,
                stop_signal: file.stop_signal,
            },
            push: file.push,
            users: file
                .user_add
                .into_iter()
                .map(|u| u.validate().map(|_| u))
                .collect::<Result<_>>()?,
            mkdirs: file
                .mkdir
                .into_iter()
                .map(|d| d.validate().map(|_| d))
                .collect::<Result<_>>()?,
            check: file.check,
            tag_from_inputs: file.tag_from_inputs,
            skip_existing: file.skip_existing,
            browsers: file.browsers.map(|b| match b.split_once(":/") {
                Some((src, dest)) => format!("{}:/{dest}", rebase_path(dir, src.into()).display()),
                None => rebase_path(dir, b.into()).display().to_string(),
            }),
            ..Default::default()
        })
    }

    /// Parses `K=V` flag values into `env` / `labels`.
    pub fn push_env(&mut self, value: &str) -> Result<()> {
        self.edits.env.push(parse_key_value("--env", value)?);
        Ok(())
    }

    /// Parses a `K=V` label flag.
    pub fn push_label(&mut self, value: &str) -> Result<()> {
        self.edits.labels.push(parse_key_value("--label", value)?);
        Ok(())
    }

    /// Lays `flags` over these settings: single values replace, layers are appended after the
    /// file's, env and labels are applied after the file's (so a flag wins for the same key).
    pub fn overlay(mut self, flags: Settings) -> Settings {
        fn pick<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        pick(&mut self.base, flags.base);
        pick(&mut self.platform, flags.platform);
        pick(&mut self.output, flags.output);
        pick(&mut self.compression, flags.compression);
        self.edits.overlay(flags.edits);
        pick(&mut self.cache_dir, flags.cache_dir);
        pick(&mut self.cache_max_size, flags.cache_max_size);
        self.no_cache |= flags.no_cache;
        pick(&mut self.check, flags.check);
        pick(&mut self.browsers, flags.browsers);
        pick(&mut self.tag_from_inputs, flags.tag_from_inputs);
        pick(&mut self.skip_existing, flags.skip_existing);
        self.users.extend(flags.users);
        self.mkdirs.extend(flags.mkdirs);
        self.layers.extend(flags.layers);
        if !flags.push.is_empty() {
            self.push = flags.push;
        }
        self
    }

    /// Validates everything and produces the build to run. `epoch` is the timestamp to use.
    pub fn resolve(self, epoch: u64) -> Result<BuildSpec> {
        self.resolve_with(epoch, true)
    }

    /// Like [`Settings::resolve`] for `hoist check`, which writes nothing: `--output` may be
    /// missing (the spec then names the current folder, and nothing uses it).
    pub fn resolve_for_check(self, epoch: u64) -> Result<BuildSpec> {
        self.resolve_with(epoch, false)
    }

    fn resolve_with(mut self, epoch: u64, need_output: bool) -> Result<BuildSpec> {
        let missing = |what: &'static str| Error::InvalidValue {
            what,
            value: String::new(),
            reason: "is required (as a flag or in the build file)",
        };
        let base = ImageRef::parse(&self.base.ok_or_else(|| missing("--base"))?)?;
        if let Some(b) = self.browsers.take() {
            let (src, dest) = match b.split_once(":/") {
                Some((src, dest)) => (src.to_string(), format!("/{dest}")),
                None => (b.clone(), DEFAULT_BROWSERS_PATH.to_string()),
            };
            let spec = LayerSpec::new(src, dest.trim_end_matches('/').to_string());
            spec.validate()?;
            // Before the user's own env, so an explicit PLAYWRIGHT_BROWSERS_PATH still wins.
            self.edits
                .env
                .insert(0, ("PLAYWRIGHT_BROWSERS_PATH".into(), spec.dest.clone()));
            self.layers.push(spec);
        }
        if need_output && self.output.is_none() && self.push.is_empty() {
            return Err(Error::InvalidValue {
                what: "--output",
                value: String::new(),
                reason: "is required (as a flag or in the build file) unless --push is given",
            });
        }
        let output = match self.output {
            None => None,
            Some(output) => match output.strip_prefix("oci:") {
                Some(rest) => Some(LayoutRef::parse(rest)?),
                None => {
                    return Err(Error::InvalidValue {
                        what: "--output",
                        value: output,
                        reason: "expected oci:DIR[:TAG]",
                    })
                }
            },
        };
        let push = self
            .push
            .iter()
            .map(|p| RegistryRef::parse(p))
            .collect::<Result<Vec<_>>>()?;
        let platform = self.platform.map(|p| p.parse()).transpose()?;
        let compression = self
            .compression
            .map(|c| c.parse())
            .transpose()?
            .unwrap_or_default();
        let mut edits = self.edits;
        edits.expose = edits
            .expose
            .iter()
            .map(|p| parse_port(p))
            .collect::<Result<Vec<_>>>()?;
        for (k, _) in &edits.labels {
            if k.is_empty() {
                return Err(Error::InvalidValue {
                    what: "label",
                    value: k.clone(),
                    reason: "keys must not be empty",
                });
            }
        }
        let cache = if self.no_cache {
            None
        } else {
            let max = self
                .cache_max_size
                .or_else(|| std::env::var("HOIST_CACHE_MAX_SIZE").ok());
            let max_bytes = max
                .map(|m| parse_size(&m))
                .transpose()?
                .unwrap_or(DEFAULT_MAX_BYTES);
            self.cache_dir
                .or_else(LayerCache::default_dir)
                .map(|dir| CacheSettings { dir, max_bytes })
        };
        let tag_from_inputs = self.tag_from_inputs.unwrap_or(false);
        if let (true, Some(o)) = (tag_from_inputs, &output) {
            if o.tag.is_some() {
                return Err(Error::InvalidValue {
                    what: "--output",
                    value: o.to_string(),
                    reason: "--tag-from-inputs computes the tag: give the output as oci:DIR",
                });
            }
        }
        let check = self
            .check
            .map(|c| c.parse())
            .transpose()?
            .unwrap_or_default();
        Ok(BuildSpec {
            cache,
            base,
            platform,
            layers: self.layers,
            users: self.users,
            mkdirs: self.mkdirs,
            check,
            tag_from_inputs,
            skip_existing: self.skip_existing.unwrap_or(false),
            edits,
            compression,
            threads: crate::layer::compress::default_threads(),
            epoch,
            output,
            push,
        })
    }
}

/// Where `--browsers` puts the browsers when no destination is given (as Playwright's images).
pub const DEFAULT_BROWSERS_PATH: &str = "/ms-playwright";

/// The build timestamp: `SOURCE_DATE_EPOCH` when set (it must be a whole number), else 0.
pub fn epoch_from_env() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| Error::InvalidValue {
            what: "SOURCE_DATE_EPOCH",
            value: v,
            reason: "must be a whole number of seconds",
        }),
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoist.toml");
        std::fs::write(
            &path,
            r#"
base = "oci:base:1"
output = "oci:out:dev"
entrypoint = ["/app/app"]
cmd = "serve"
expose = ["8000"]
[env]
A = "1"
B = "2"
[labels]
"org.example.k" = "v"
[[layer]]
src = "dist/app"
dest = "/app"
owner = "1000:1000"
"#,
        )
        .unwrap();
        let file = Settings::from_file(&path).unwrap();
        assert_eq!(
            file.base.as_deref(),
            Some(format!("oci:{}", dir.path().join("base:1").display()).as_str())
        );
        assert_eq!(file.layers[0].src, dir.path().join("dist/app"));
        assert_eq!(file.edits.cmd, Some(vec!["serve".to_string()]));
        let mut flags = Settings {
            output: Some("oci:/tmp/o:x".into()),
            ..Default::default()
        };
        flags.push_env("A=9").unwrap();
        let spec = file.overlay(flags).resolve(5).unwrap();
        assert_eq!(spec.output.and_then(|o| o.tag).as_deref(), Some("x"));
        assert_eq!(
            spec.edits.env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "2".into()),
                ("A".into(), "9".into())
            ]
        );
        assert_eq!(spec.edits.expose, vec!["8000/tcp".to_string()]);
        assert_eq!(spec.layers[0].owner.map(|o| o.uid), Some(1000));
    }

    #[test]
    fn users_dirs_check_and_browsers_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoist.toml");
        std::fs::write(
            &path,
            r#"
base = "scratch"
output = "oci:out"
check = "warn"
browsers = "ms-playwright.tar.gz:/opt/browsers"
[[user_add]]
name = "openhands"
uid = 1000
[[mkdir]]
path = "/workspace"
owner = "1000:1000"
mode = "0750"
"#,
        )
        .unwrap();
        let spec = Settings::from_file(&path).unwrap().resolve(0).unwrap();
        assert_eq!(spec.check, crate::check::CheckMode::Warn);
        assert_eq!(spec.users[0].home(), "/home/openhands");
        assert_eq!(spec.mkdirs[0].mode_bits().unwrap(), 0o750);
        let last = spec.layers.last().unwrap();
        assert_eq!(last.src, dir.path().join("ms-playwright.tar.gz"));
        assert_eq!(last.dest, "/opt/browsers");
        assert_eq!(
            spec.edits.env[0],
            ("PLAYWRIGHT_BROWSERS_PATH".into(), "/opt/browsers".into())
        );
        std::fs::write(&path, "[[mkdir]]\npath = \"relative\"\n").unwrap();
        assert!(matches!(
            Settings::from_file(&path),
            Err(Error::InvalidValue { .. })
        ));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoist.toml");
        std::fs::write(&path, "bsae = \"scratch\"\n").unwrap();
        assert!(matches!(
            Settings::from_file(&path),
            Err(Error::BuildFile { .. })
        ));
    }

    #[test]
    fn push_alone_is_a_destination() {
        let s = Settings {
            base: Some("ghcr.io/acme/base:1".into()),
            push: vec!["localhost:5000/app:1".into(), "ghcr.io/acme/app".into()],
            ..Default::default()
        };
        let spec = s.resolve(0).unwrap();
        assert!(spec.output.is_none());
        assert!(matches!(spec.base, ImageRef::Registry(_)));
        assert_eq!(spec.push[1].to_string(), "ghcr.io/acme/app:latest");
        let bad = Settings {
            base: Some("scratch".into()),
            push: vec!["Bad//Ref".into()],
            ..Default::default()
        };
        assert!(matches!(bad.resolve(0), Err(Error::InvalidValue { .. })));
    }

    #[test]
    fn missing_output_is_an_error() {
        let s = Settings {
            base: Some("scratch".into()),
            ..Default::default()
        };
        assert!(matches!(
            s.resolve(0),
            Err(Error::InvalidValue {
                what: "--output",
                ..
            })
        ));
    }
}
