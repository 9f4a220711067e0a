//! Command-line front end: flags (raw values) are turned into library settings, run, and the
//! result printed on stdout; progress and errors go to stderr.

mod browsers;
mod build;
mod check;
mod inspect;
mod pull;
mod push;
mod registry;

use clap::{Parser, Subcommand};

/// hoist builds OCI container images from directories and tarballs, without a daemon.
#[derive(Parser, Debug)]
#[command(name = "hoist", version, about, long_about = None)]
pub struct Cli {
    /// Print no progress on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a base, layers and config edits into an OCI layout and/or registries.
    Build(Box<build::BuildArgs>),
    /// Check that the new layers will run on the base (glibc, shared libraries, loader,
    /// entrypoint, user…), without writing anything. Takes the flags of `build`.
    Check(Box<check::CheckArgs>),
    /// Playwright browser folders: `browsers pack SRC OUT.tar.gz`.
    #[command(subcommand)]
    Browsers(browsers::BrowsersCommand),
    /// Show the manifest, config and layers of an image (OCI layout or registry).
    Inspect(inspect::InspectArgs),
    /// Push an image or index from an OCI image layout to a registry.
    Push(push::PushArgs),
    /// Pull an image (every blob; every platform unless --platform) into an OCI image layout.
    Pull(pull::PullArgs),
}

impl Cli {
    /// Parses the process arguments.
    pub fn try_parse_args() -> Result<Self, clap::Error> {
        Cli::try_parse()
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Build(args) => build::run(*args, quiet),
        Command::Inspect(args) => inspect::run(args, quiet),
        Command::Push(args) => push::run(args, quiet),
        Command::Pull(args) => pull::run(args, quiet),
        Command::Check(args) => check::run(*args, quiet),
        Command::Browsers(cmd) => browsers::run(cmd, quiet),
    }
}

/// True when the error is a closed stdout (e.g. piped into `head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Turns the first SIGINT or SIGTERM into a stop request: the work unwinds at its next read and
/// removes its temporary files (see [`hoist::interrupt`]). A second signal ends the process at
/// once.
pub fn stop_on_signals() {
    extern "C" fn on_signal(sig: libc::c_int) {
        if hoist::interrupt::requested().is_some() {
            // SAFETY: signal and raise are async-signal-safe; the default action ends us.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        } else {
            hoist::interrupt::request(sig);
        }
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, or restores the default and re-raises.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}
