//! `psctl history`: being built; see issue 4.

use crate::cli::HistoryArgs;
use crate::error::{CommandError, CommandResult};
use crate::output::Output;
use crate::settings::GlobalSettings;

pub async fn run(_args: HistoryArgs, global: &GlobalSettings, _output: &Output) -> CommandResult {
    let _environment = global.environment()?;
    Err(CommandError::usage(anyhow::anyhow!(
        "`psctl history` is not available in this build yet"
    )))
}
