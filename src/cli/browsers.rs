//! `hoist browsers pack`: a Playwright browsers folder into a deterministic tarball.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use hoist::build::file::epoch_from_env;

/// `hoist browsers …`.
#[derive(Subcommand, Debug)]
pub enum BrowsersCommand {
    /// Pack a Playwright browsers folder (~/.cache/ms-playwright or $PLAYWRIGHT_BROWSERS_PATH)
    /// into a deterministic .tar.gz; prints OUT@sha256:…
    Pack {
        /// The browsers folder (holding chromium-REV/, ffmpeg-REV/, …).
        src: PathBuf,
        /// The tarball to write.
        out: PathBuf,
        /// Pack even when a browser folder lacks INSTALLATION_COMPLETE.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `browsers` subcommand.
pub fn run(cmd: BrowsersCommand, quiet: bool) -> anyhow::Result<()> {
    match cmd {
        BrowsersCommand::Pack { src, out, force } => {
            let packed = hoist::browsers::pack(&src, &out, epoch_from_env()?, force)?;
            if !quiet {
                for p in &packed.problems {
                    eprintln!("warning: {p}");
                }
                eprintln!(
                    "packed {} ({} bytes)",
                    packed.browsers.join(", "),
                    packed.size
                );
            }
            writeln!(
                std::io::stdout(),
                "{}@{}",
                packed.path.display(),
                packed.digest
            )?;
            Ok(())
        }
    }
}
