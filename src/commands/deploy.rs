//! `psctl deploy`: being built; see issue 4.

use crate::cli::DeployArgs;
use crate::error::{CommandError, CommandResult};
use crate::output::Output;
use crate::settings::GlobalSettings;

pub async fn run(_args: DeployArgs, global: &GlobalSettings, _output: &Output) -> CommandResult {
    let _environment = global.environment()?;
    Err(CommandError::usage(anyhow::anyhow!(
        "`psctl deploy` is not available in this build yet"
    )))
}
