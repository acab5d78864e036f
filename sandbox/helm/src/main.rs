//! `helm`: a Helm-compatible CLI for the subset psctl uses, driving the real Helm v4 engine
//! (see `engine`). Parse, run, exit: 0 on success, 1 on any failure, as Helm does.

mod cli;
mod commands;
mod duration;
mod engine;
mod release;
mod render;
mod rollback;
mod storage;
mod values;
mod yaml;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { 1 } else { 0 };
            // Printing help/usage can only fail on a closed pipe, which is not worth a panic.
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped reading (`helm history | head`) is not a failure.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::from(1)
        }
    }
}
