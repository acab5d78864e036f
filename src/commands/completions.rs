//! `psctl completions <shell>` and `psctl man`: generated from the clap types, so they never drift.

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::{CommandResult, ExitStatus};
use crate::output::Output;

pub fn completions(args: CompletionsArgs, output: &Output) -> CommandResult {
    let CompletionsArgs { shell } = args;
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "psctl", &mut script);
    output
        .raw(&String::from_utf8_lossy(&script))
        .context("writing the completion script")?;
    Ok(ExitStatus::Success)
}

pub fn man(args: ManArgs, output: &Output) -> CommandResult {
    let ManArgs {} = args;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .context("rendering the man page")?;
    output
        .raw(&String::from_utf8_lossy(&page))
        .context("writing the man page")?;
    Ok(ExitStatus::Success)
}
