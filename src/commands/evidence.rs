//! `psctl evidence`: gathers what an incident review needs before pods are replaced or
//! restarted (`crate::evidence`: pods, logs, events, Helm history, the poller checkpoint,
//! system events, the audit trail's rows of the window, and a postmortem skeleton linking
//! them). Read-only; an item that cannot be read is recorded as skipped.

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;

use crate::cli::EvidenceArgs;
use crate::db::target::resolve_target;
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::evidence::{self, Request};
use crate::output::Output;
use crate::settings::GlobalSettings;

pub async fn run(args: EvidenceArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let EvidenceArgs { dir, since, tail } = args;
    let environment = global.environment()?;
    let now = Timestamp::now();
    let dir = dir.unwrap_or_else(|| evidence::default_dir(now));
    if global.dry_run {
        output.info(format!(
            "would write evidence for `{}` (namespace `{}`, last {}) into {}",
            environment.name,
            environment.namespace,
            evidence::humantime(since),
            dir.display()
        ));
        return Ok(ExitStatus::Success);
    }
    let database = resolve_target(global, output)
        .map(|target| target.url)
        .map_err(|error| format!("{:#}", error.error()));
    let request = Request {
        environment: &environment,
        database,
        dir,
        since,
        tail,
        now,
    };
    let report = evidence::collect(request, output).await?;
    output
        .data(&report)
        .context("writing the evidence report")?;
    if report.items.iter().all(|i| i.result != "collected") {
        return Err(CommandError::unreachable(anyhow::anyhow!(
            "no evidence could be collected: neither the cluster nor the database answered"
        )));
    }
    Ok(ExitStatus::Success)
}
