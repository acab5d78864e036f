//! `psctl status`: one screen per environment (`crate::status`): each component's release and
//! revision, its pods, the poller's last success and the webhook queue depth. Read-only.

use anyhow::Context as _;

use crate::cli::StatusArgs;
use crate::cluster;
use crate::error::{CommandResult, ExitStatus};
use crate::output::Output;
use crate::settings::GlobalSettings;

pub async fn run(args: StatusArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let StatusArgs {} = args;
    let environment = global.environment()?;
    let client = cluster::connect(&environment).await?;
    let status = crate::status::collect(&client, &environment).await?;
    output.data(&status).context("writing the status")?;
    Ok(ExitStatus::Success)
}
