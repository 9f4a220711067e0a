//! The `hoist` command: parse, run, print the whole error chain, map to an exit code (128 +
//! the signal when SIGINT or SIGTERM stopped it).

mod cli;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse_args() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    cli::stop_on_signals();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => match hoist::interrupt::requested() {
            Some(sig) => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "hoist: interrupted by signal {sig}; temporary files removed"
                );
                ExitCode::from(128u8.saturating_add(sig as u8))
            }
            None => report(e),
        },
    }
}

/// Prints `e` with its causes; exit code 1.
fn report(e: anyhow::Error) -> ExitCode {
    let message = hoist::error::join_causes(e.chain().map(|c| c.to_string()));
    let _ = writeln!(std::io::stderr().lock(), "hoist: error: {message}");
    ExitCode::from(1)
}
