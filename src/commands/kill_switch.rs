//! `psctl kill-switch on|off`: the runbook's emergency stop (`crate::kill_switch`). Resolve →
//! plan (printed under `--dry-run`) → confirm → take the deploy Lease → plan again under it →
//! apply (each change audited) → report.
//!
//! `on` is a brake, not a queue: it takes the deploy Lease from whoever holds it (recorded in
//! the audit trail with the previous holder's name), and the holder, which watches its Lease,
//! stops at its next safe point. While the switch is on, every command that could bring a
//! component back (`deploy`, `rollback`, `canary`, `run`) refuses through
//! `kill_switch::engaged`.

use anyhow::Context as _;

use super::support;
use crate::cli::{KillSwitchArgs, KillSwitchState};
use crate::cluster;
use crate::error::{CommandResult, ExitStatus};
use crate::kill_switch::{self, KillSwitchReport, KubeDeployments, Switch};
use crate::lock;
use crate::output::Output;
use crate::settings::GlobalSettings;

pub async fn run(args: KillSwitchArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let KillSwitchArgs { state, components } = args;
    let switch = match state {
        KillSwitchState::On => Switch::On,
        KillSwitchState::Off => Switch::Off,
    };
    let state_name = switch.name();
    let environment = global.environment()?;
    let selected = environment.select(&components)?;
    let targets = kill_switch::targets(&selected);
    let client = cluster::connect(&environment).await?;
    let reader = KubeDeployments::reader(&client, &environment.namespace);
    let mut report = KillSwitchReport {
        state: state_name.to_owned(),
        dry_run: global.dry_run,
        changes: kill_switch::plan(&reader, switch, &targets).await?,
    };
    if global.dry_run || report.changes.iter().all(|c| c.patch.is_none()) {
        if !global.dry_run {
            output.info(format!(
                "kill switch already {state_name} for every selected component; nothing to do"
            ));
        }
        output
            .data(&report)
            .context("writing the kill-switch report")?;
        return Ok(ExitStatus::Success);
    }
    support::confirm(
        global,
        &format!(
            "turn the kill switch {state_name} in `{}`?",
            environment.name
        ),
    )?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    // `on` is the emergency brake: it does not wait for whoever holds the Lease, it takes it
    // (audited) and the holder stops at its next safe point.
    let held = match switch {
        Switch::On => {
            support::take_lock_override(
                &client,
                &environment,
                "kill-switch",
                audit.as_ref(),
                output,
            )
            .await?
        }
        Switch::Off => {
            support::take_lock(&client, &environment, "kill-switch", audit.as_ref(), output).await?
        }
    };
    let overrode = held
        .takeover
        .as_ref()
        .is_some_and(|t| t.reason == lock::TakeoverReason::Override);
    let deployments = KubeDeployments::writer(&client, &environment, audit.as_ref(), output);
    // Read again under the Lease: the previous holder may have scaled something meanwhile.
    report.changes = kill_switch::plan(&deployments, switch, &targets).await?;
    let failure = kill_switch::apply(&deployments, switch, &report.changes, output).await;
    if overrode && failure.is_none() {
        kill_switch::settle_after_override(&deployments, &targets, output).await?;
    }
    if let Err(error) = held.release().await {
        output.warn(format!("the deploy lock was not released cleanly: {error}"));
    }
    output
        .data(&report)
        .context("writing the kill-switch report")?;
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(ExitStatus::Success),
    }
}
