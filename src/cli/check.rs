//! `hoist check`: the compatibility report of a build, without writing anything.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use hoist::build::{self, file::epoch_from_env};
use hoist::check::Severity;

use crate::cli::build::BuildArgs;

/// Flags of `hoist check`: those of `hoist build` (the output is not needed), plus `--json`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `hoist check`; fails (exit 1) when the report has errors.
pub fn run(args: CheckArgs, quiet: bool) -> anyhow::Result<()> {
    let spec = args.build.merged()?.resolve_for_check(epoch_from_env()?)?;
    let mut progress = |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let client = args.build.client(quiet)?;
    let report = build::check(&spec, &client, &mut progress).context("checking")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", report.render(Severity::Info))?;
    }
    out.flush()?;
    let errors = report.count(Severity::Error);
    if errors > 0 {
        anyhow::bail!("{errors} check error(s)");
    }
    Ok(())
}
