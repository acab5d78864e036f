//! psctl: the operator CLI that deploys, validates, promotes and rolls back the problemsolver
//! services on Kubernetes.
//!
//! Layout: `cli` (clap types) → `settings` (resolved configuration) → `commands` (one file per
//! subcommand, thin) over library modules that each own one concern: `cluster` (Kubernetes
//! access), `helm` (the Helm driver and Helm's release storage), `rollout` (tracking and
//! diagnosis), `lock` (the deploy Lease), `output` (printing and redaction), `canary` (gate
//! statistics and decisions), `db` and `audit` (migrations, backups and the audit trail), `recovery` (what a rollback
//! verifies), `events` (the Kubernetes Events that mirror audited actions), and `yaml` (the one YAML
//! library, re-exported).

pub mod audit;
pub mod build;
pub mod canary;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod db;
pub mod deploy;
pub mod error;
pub mod events;
pub mod evidence;
pub mod helm;
pub mod kill_switch;
pub mod lock;
pub mod output;
pub mod playbook;
pub mod postmortem;
pub mod process;
pub mod prom;
pub mod rbac;
pub mod recovery;
pub mod registry;
pub mod rollback;
pub mod rollout;
pub mod secrets;
pub mod settings;
pub mod smoke;
pub mod state;
pub mod status;
pub mod uninstall;
pub mod yaml;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::Cli;
use crate::error::{CommandError, ExitStatus};
use crate::output::Output;
use crate::settings::GlobalSettings;

/// Runs psctl with `args` (argv including the program name) and returns the process exit code.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version are "errors" that go to stdout and succeed.
            let _ = error.print();
            return if error.use_stderr() {
                ExitStatus::Usage.into()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let global = GlobalSettings::resolve(cli.global);
    let style = output::Style::detect(global.verbosity);
    let color = style.color_stderr;
    let output = Output::stdio(global.format, style, global.verbosity);
    init_tracing(global.verbosity, color, output.redactor().clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let error = CommandError::new(
                ExitStatus::Usage,
                anyhow::Error::new(error).context("starting the async runtime"),
            );
            output.error(&error);
            return error.status().into();
        }
    };
    let result = runtime.block_on(commands::dispatch(cli.command, &global, &output));
    match result {
        Ok(status) => status.into(),
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            output.error(&error);
            error.status().into()
        }
    }
}

/// Logs go to stderr through the output's redactor (so a log line can no more carry a secret
/// than any other line), coloured only when stderr may be; `RUST_LOG` wins, else `-v`/`-q`
/// choose the level.
fn init_tracing(verbosity: i8, color: bool, redactor: output::Redactor) {
    // kube's client logs every non-2xx answer at ERROR, though psctl receives each one as a
    // value and reports it itself; below -vv those lines would only duplicate or alarm.
    let default = match verbosity {
        i8::MIN..=-1 => "error,kube_client=off",
        0 => "warn,kube_client=off",
        1 => "psctl=info,warn,kube_client=off",
        _ => "psctl=debug,kube=info,info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::redact::RedactingWriter::stderr(redactor))
        .with_ansi(color)
        .with_target(false)
        .try_init();
}
