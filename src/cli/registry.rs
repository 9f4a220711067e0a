//! Flags shared by every command that talks to registries, turned into [`Options`].

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use hoist::registry::client::ByteProgress;
use hoist::registry::{Client, Credentials, Options, Progress};
use hoist::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Registry connection and credential flags.
#[derive(Args, Debug, Default)]
pub struct RegistryArgs {
    /// Reach this registry (HOST[:PORT]) over plain HTTP or unverified TLS (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
    /// Trust this CA certificate (PEM) for registries, besides the system roots and certs.d.
    #[arg(long = "ca-file", value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// Blobs transferred in parallel.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// User name for the registries of this command (with --password-stdin or HOIST_PASSWORD).
    #[arg(long, value_name = "USER", env = "HOIST_USERNAME")]
    username: Option<String>,
    /// Read the password or token from standard input.
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// Uploads larger than this many bytes go in PATCH chunks.
    #[arg(long, hide = true, env = "HOIST_MONOLITHIC_MAX")]
    monolithic_max: Option<u64>,
    /// The size of one PATCH chunk.
    #[arg(long, hide = true, env = "HOIST_CHUNK_SIZE")]
    chunk_size: Option<u64>,
    /// Seconds one request may take before it is retried.
    #[arg(long, hide = true, env = "HOIST_TIMEOUT_SECS")]
    timeout_secs: Option<u64>,
    /// The first retry delay in milliseconds.
    #[arg(long, hide = true, env = "HOIST_RETRY_BACKOFF_MS")]
    retry_backoff_ms: Option<u64>,
}

impl RegistryArgs {
    /// A client for these flags; progress lines go to stderr unless `quiet`.
    pub fn client(&self, quiet: bool) -> anyhow::Result<Client> {
        let mut o = Options {
            insecure: self.insecure.clone(),
            ca_file: self.ca_file.clone(),
            jobs: self.jobs.into(),
            ..Options::default()
        };
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                bail!("--ca-file {}: no such file", ca.display());
            }
        }
        o.credentials = self.credentials()?;
        if let Some(m) = self.monolithic_max {
            o.monolithic_max = m;
        }
        if let Some(c) = self.chunk_size {
            o.chunk_size = c.max(1);
        }
        if let Some(t) = self.timeout_secs {
            o.timeout = Duration::from_secs(t.max(1));
        }
        if let Some(b) = self.retry_backoff_ms {
            o.backoff = Duration::from_millis(b);
        }
        (o.progress, o.bytes) = progress_sinks(quiet);
        Ok(Client::new(o))
    }

    fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        let password = if self.password_stdin {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .context("reading the password from standard input")?;
            Some((
                p.trim_end_matches(['\n', '\r']).to_string(),
                "--password-stdin",
            ))
        } else {
            std::env::var("HOIST_PASSWORD")
                .ok()
                .map(|p| (p, "HOIST_PASSWORD"))
        };
        match (&self.username, password) {
            (Some(u), Some((p, from))) => Ok(Some(Credentials {
                username: u.clone(),
                secret: p,
                source: format!("--username and {from}"),
            })),
            (Some(_), None) => {
                bail!("--username needs a password: pass --password-stdin or set HOIST_PASSWORD")
            }
            (None, Some((_, from))) if self.password_stdin || from == "--password-stdin" => {
                bail!("--password-stdin needs --username")
            }
            _ => Ok(None),
        }
    }
}

/// Progress on stderr: nothing when quiet; plain lines when stderr is not a terminal (CI, logs);
/// lines plus one bar per blob in flight on a terminal.
fn progress_sinks(quiet: bool) -> (Option<Progress>, Option<ByteProgress>) {
    if quiet {
        return (None, None);
    }
    if !std::io::stderr().is_terminal() {
        return (Some(Arc::new(|line: &str| eprintln!("{line}"))), None);
    }
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bars: Mutex<HashMap<Digest, ProgressBar>> = Mutex::new(HashMap::new());
    let m2 = multi.clone();
    let lines: Progress = Arc::new(move |line: &str| {
        let _ = m2.println(line);
    });
    let bytes: ByteProgress = Arc::new(move |digest: &Digest, done: u64, total: u64| {
        let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.entry(*digest).or_insert_with(|| {
            let hex = digest.hex();
            multi.add(
                ProgressBar::new(total)
                    .with_style(style.clone())
                    .with_prefix(format!("sha256:{}", &hex[..12])),
            )
        });
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
            bars.remove(digest);
        }
    });
    (Some(lines), Some(bytes))
}
