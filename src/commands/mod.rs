//! One file per subcommand; each is thin: resolve → plan → execute → report. The single `match`
//! below is the only place that knows every command.

pub mod audit;
pub mod build;
pub mod canary;
pub mod completions;
pub mod db;
pub mod deploy;
pub mod evidence;
pub mod history;
pub mod kill_switch;
pub mod rbac;
pub mod rollback;
pub mod run;
pub mod secrets;
pub mod smoke;
pub mod status;
pub mod support;
pub mod uninstall;

use crate::cli::Command;
use crate::error::{CommandError, CommandResult};
use crate::output::{Format, Output};
use crate::settings::GlobalSettings;

/// Runs one parsed subcommand.
pub async fn dispatch(command: Command, global: &GlobalSettings, output: &Output) -> CommandResult {
    // Refused before anything runs: a deploy must not happen only for its report to be unprintable.
    if global.format == Format::Junit && !matches!(command, Command::Smoke(_)) {
        return Err(CommandError::usage(anyhow::anyhow!(
            "`-o junit` is only available for `psctl smoke`"
        ))
        .hint("use `-o table`, `-o json` or `-o yaml` for this command"));
    }
    // Helm (a child of psctl) would keep its releases where `HELM_DRIVER` says while psctl reads
    // them from Secrets: refused before either runs.
    if matches!(
        command,
        Command::Deploy(_)
            | Command::History(_)
            | Command::Rollback(_)
            | Command::Uninstall(_)
            | Command::Status(_)
            | Command::Canary(_)
            | Command::Run(_)
            | Command::Evidence(_)
    ) {
        crate::helm::storage::check_driver(std::env::var("HELM_DRIVER").ok().as_deref())?;
    }
    match command {
        Command::Deploy(args) => deploy::run(args, global, output).await,
        Command::History(args) => history::run(args, global, output).await,
        Command::Rollback(args) => rollback::run(args, global, output).await,
        Command::Uninstall(args) => uninstall::run(args, global, output).await,
        Command::Status(args) => status::run(args, global, output).await,
        Command::Smoke(args) => smoke::run(args, global, output).await,
        Command::Canary(command) => canary::run(command, global, output).await,
        Command::KillSwitch(args) => kill_switch::run(args, global, output).await,
        Command::Db(args) => db::run(args, global, output).await,
        Command::Audit(args) => audit::run(args, global, output).await,
        Command::Build(args) => build::run(args, global, output).await,
        Command::Secrets(args) => secrets::run(args, global, output).await,
        Command::Run(args) => run::run(args, global, output).await,
        Command::Evidence(args) => evidence::run(args, global, output).await,
        Command::Rbac(args) => rbac::run(args, global, output),
        Command::Completions(args) => completions::completions(args, output),
        Command::Man(args) => completions::man(args, output),
    }
}
