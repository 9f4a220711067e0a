//! The `hoist` command: parse, run, print the whole error chain, map to an exit code.

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
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let message = hoist::error::join_causes(e.chain().map(|c| c.to_string()));
            let _ = writeln!(std::io::stderr().lock(), "hoist: error: {message}");
            ExitCode::from(1)
        }
    }
}
