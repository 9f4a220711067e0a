//! `hoist build`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hoist::build::accounts::{MkDir, UserAdd};
use hoist::build::{self, file::epoch_from_env, file::Settings};
use hoist::check::Severity;
use hoist::config::{parse_command, ConfigEdits};
use hoist::layer::LayerSpec;

use super::registry::RegistryArgs;

/// Flags of `hoist build` (each overrides the build file).
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Build file (hoist.toml); flags override it.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: Option<PathBuf>,
    /// Base image: scratch, oci:DIR[:TAG] or a registry reference (read lazily).
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// Platform to pick from a multi-platform base, os/arch[/variant].
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Add a layer: SRC:DEST[,owner=UID:GID][,strip=N][,parents=false][,extract=false] (repeatable).
    #[arg(long = "layer", value_name = "SRC:DEST")]
    layers: Vec<String>,
    /// Set an environment variable, K=V ($VAR expands from the image env) (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Entrypoint: a JSON array of strings, or one string.
    #[arg(long, value_name = "JSON")]
    entrypoint: Option<String>,
    /// Cmd: a JSON array of strings, or one string.
    #[arg(long, value_name = "JSON")]
    cmd: Option<String>,
    /// Working directory.
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// User the container runs as.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Add a label, K=V (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// Expose a port, PORT[/PROTO] (repeatable).
    #[arg(long = "expose", value_name = "PORT[/PROTO]")]
    expose: Vec<String>,
    /// Signal that stops the container.
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Layer compression: gzip[:LEVEL], zstd[:LEVEL] or none.
    #[arg(long, value_name = "ALGO")]
    compression: Option<String>,
    /// Layer cache directory (default $HOIST_CACHE_DIR, $XDG_CACHE_HOME/hoist or ~/.cache/hoist).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Bound on the cache's size, e.g. 10G (default $HOIST_CACHE_MAX_SIZE or 10G).
    #[arg(long, value_name = "SIZE")]
    cache_max_size: Option<String>,
    /// Build every layer without the cache (and store nothing in it).
    #[arg(long)]
    no_cache: bool,
    /// Where to write the image: oci:DIR[:TAG].
    #[arg(long, value_name = "oci:DIR[:TAG]")]
    output: Option<String>,
    /// Push the image to this registry reference (repeatable).
    #[arg(long = "push", value_name = "REF")]
    push: Vec<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Add an account: NAME:UID[:GID[:HOME]] (repeatable); /etc/passwd and /etc/group are
    /// derived from the base's own, the home folder is owned by the user.
    #[arg(long = "user-add", value_name = "NAME:UID[:GID[:HOME]]")]
    users: Vec<String>,
    /// Create an empty folder: PATH[,owner=UID:GID][,mode=OCTAL] (repeatable).
    #[arg(long = "mkdir", value_name = "PATH[,owner=UID:GID][,mode=OCTAL]")]
    mkdirs: Vec<String>,
    /// Add a Playwright browsers folder (or a tarball of one) as a layer at DEST (default
    /// /ms-playwright) and set PLAYWRIGHT_BROWSERS_PATH to it.
    #[arg(long, value_name = "SRC[:DEST]")]
    browsers: Option<String>,
    /// What compatibility check errors do: error (stop the build, default), warn, off.
    #[arg(long, value_name = "MODE")]
    check: Option<String>,
    /// Skip the compatibility checks (reads no base layer); same as --check=off.
    #[arg(long, conflicts_with = "check")]
    no_check: bool,
    /// Tag the output with a hash of the base and every input (inputs-<32 hex>); the output
    /// is then given as oci:DIR.
    #[arg(long)]
    tag_from_inputs: bool,
    /// When the output already has the tag, print it and build nothing.
    #[arg(long)]
    skip_existing: bool,
}

impl BuildArgs {
    /// The flags as build settings.
    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings {
            base: self.base.clone(),
            platform: self.platform.clone(),
            output: self.output.clone(),
            compression: self.compression.clone(),
            cache_dir: self.cache_dir.clone(),
            cache_max_size: self.cache_max_size.clone(),
            no_cache: self.no_cache,
            push: self.push.clone(),
            edits: ConfigEdits {
                entrypoint: self
                    .entrypoint
                    .as_deref()
                    .map(|v| parse_command("--entrypoint", v))
                    .transpose()?,
                cmd: self
                    .cmd
                    .as_deref()
                    .map(|v| parse_command("--cmd", v))
                    .transpose()?,
                workdir: self.workdir.clone(),
                user: self.user.clone(),
                stop_signal: self.stop_signal.clone(),
                expose: self.expose.clone(),
                ..Default::default()
            },
            layers: self
                .layers
                .iter()
                .map(|l| LayerSpec::parse(l))
                .collect::<Result<_, _>>()?,
            users: self
                .users
                .iter()
                .map(|u| UserAdd::parse(u))
                .collect::<Result<_, _>>()?,
            mkdirs: self
                .mkdirs
                .iter()
                .map(|d| MkDir::parse(d))
                .collect::<Result<_, _>>()?,
            browsers: self.browsers.clone(),
            tag_from_inputs: self.tag_from_inputs.then_some(true),
            skip_existing: self.skip_existing.then_some(true),
            check: if self.no_check {
                Some("off".into())
            } else {
                self.check.clone()
            },
        };
        for e in &self.env {
            s.push_env(e)?;
        }
        for l in &self.labels {
            s.push_label(l)?;
        }
        Ok(s)
    }

    /// The build file, with the flags laid over it.
    /// The registry client the build's flags describe.
    pub(crate) fn client(&self, quiet: bool) -> anyhow::Result<hoist::registry::Client> {
        self.registry.client(quiet)
    }

    pub(crate) fn merged(&self) -> anyhow::Result<Settings> {
        let flags = self.settings()?;
        Ok(match &self.file {
            Some(path) => Settings::from_file(path)?.overlay(flags),
            None => flags,
        })
    }
}

/// Runs `hoist build`.
pub fn run(args: BuildArgs, quiet: bool) -> anyhow::Result<()> {
    let spec = args.merged()?.resolve(epoch_from_env()?)?;
    let client = args.registry.client(quiet)?;
    // Build steps go through the same sink as transfers, so lines and bars do not collide.
    let lines = client.options().progress.clone();
    let mut progress = |line: &str| {
        if let Some(p) = &lines {
            p(line);
        }
    };
    let target = spec
        .output
        .iter()
        .map(|o| o.to_string())
        .chain(spec.push.iter().map(|p| p.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let built = match build::build(&spec, &client, &mut progress) {
        Err(hoist::Error::CheckFailed { errors, report }) => {
            eprint!("{}", report.render(Severity::Info));
            return Err(hoist::Error::CheckFailed { errors, report })
                .with_context(|| format!("building {target}"));
        }
        other => other.with_context(|| format!("building {target}"))?,
    };
    if let Some(report) = &built.report {
        if report.count(Severity::Error) + report.count(Severity::Warning) > 0 {
            eprint!("{}", report.render(Severity::Warning));
        }
    }
    let mut out = std::io::stdout().lock();
    for r in &built.references {
        writeln!(out, "{r}")?;
    }
    Ok(())
}
