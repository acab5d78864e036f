//! `psctl rollback`: return a component to an earlier Helm revision (default: the last one that
//! was deployed successfully), or to the Deployment's previous ReplicaSet (`--undo`), or recover
//! a release stuck in `pending-*` (`--unstick`). Resolve → plan (`rollback::plan`, printed
//! under `--dry-run`) → confirm → take the deploy Lease, refuse under the kill switch → execute
//! (`rollback::execute`) → verify the recovery (`crate::recovery`: smoke checks and the
//! deposit-rate baseline, unless `--no-verify`) → audit → report.

use anyhow::Context as _;

use super::support;
use crate::cli::RollbackArgs;
use crate::cluster;
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::output::{Output, Render};
use crate::recovery::{self, Incident, Verification};
use crate::rollback::execute::{self, KubeRollback};
use crate::rollback::plan::{self, Mode, RollbackReport};
use crate::settings::GlobalSettings;

pub async fn run(args: RollbackArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let RollbackArgs {
        component,
        to_rev,
        undo,
        unstick,
        force,
        timeout,
        no_verify,
    } = args;
    let mode = match (undo, unstick) {
        (true, _) => Mode::Undo,
        (_, true) => Mode::Unstick,
        _ => Mode::Helm(to_rev),
    };
    let environment = global.environment()?;
    let component = match component {
        Some(name) => environment.component(&name)?.clone(),
        None if environment.components.len() == 1 => environment.components[0].clone(),
        None => {
            return Err(CommandError::usage(anyhow::anyhow!(
                "name the component to roll back; configured: {}",
                environment
                    .components
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let client = cluster::connect(&environment).await?;
    let helm = support::helm_target(&environment);
    let (plan, started) =
        execute::read_plan(&client, &environment, &component, mode, &helm).await?;
    let incident = Incident {
        started,
        rollback_started: chrono::Utc::now().timestamp(),
    };
    if global.dry_run {
        output.data(&plan).context("writing the plan")?;
        return Ok(ExitStatus::Success);
    }
    output.info(plan.render_table(&output.style()).trim_end());
    support::confirm(
        global,
        &format!("execute this plan in `{}`?", environment.name),
    )?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    let held =
        support::take_lock(&client, &environment, "rollback", audit.as_ref(), output).await?;
    let held = support::require_kill_switch_off(held, &client, &environment, &[&component]).await?;
    // The plan was read before the Lease: read it again under it, and act only on what was shown.
    let reread = execute::read_plan(&client, &environment, &component, mode, &helm).await;
    if let Err(error) = reread.and_then(|(now, _)| plan::still_current(&plan, &now)) {
        if let Err(problem) = held.release().await {
            output.warn(format!(
                "the deploy lock was not released cleanly: {problem}"
            ));
        }
        return Err(error);
    }
    let backend = KubeRollback {
        client: &client,
        environment: &environment,
        component: &component,
        timeout,
        force,
        output,
    };
    let result = execute::execute(&backend, &plan, output).await;
    let verification = match &result {
        Err(_) => Verification::not_run("the rollback did not complete"),
        Ok(false) => {
            Verification::skipped("nothing rolled out to verify (the release was uninstalled)")
        }
        Ok(true) if no_verify => Verification::skipped("--no-verify"),
        Ok(true) => recovery::verify(&client, &environment, &component, incident, output).await,
    };
    let outcome = plan::outcome(&result, verification.status);
    support::audit(
        audit.as_ref(),
        output,
        &environment,
        plan::audit_note(&plan, &component, outcome, verification.status),
    )
    .await;
    if let Err(error) = held.release().await {
        output.warn(format!("the deploy lock was not released cleanly: {error}"));
    }
    let status = verification.exit_status();
    let failures = verification.failure_summary();
    output
        .data(&RollbackReport {
            plan: &plan,
            verification,
        })
        .context("writing the rollback report")?;
    result?;
    plan::verdict(&component, status, &failures)
}
