//! `psctl deploy`: preflight, `helm upgrade --install` per component, rollout tracked with
//! watches, automatic rollback to the recorded revisions on failure.
//!
//! Resolve → plan (`deploy::plan`, printed under `--dry-run`) → preflight (`deploy::preflight`)
//! → take the deploy Lease → read the releases and build the plan under it → execute
//! (`deploy::execute`) → report (`deploy::outcome`).

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::support;
use crate::cli::DeployArgs;
use crate::deploy::execute::{self, KubeDeploy};
use crate::deploy::plan::{self, DeployPlan, DeploySettings};
use crate::deploy::preflight;
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::helm::driver::HelmTarget;
use crate::helm::storage::read_revisions;
use crate::lock::{self, DeployLock};
use crate::output::Output;
use crate::settings::{Environment, GlobalSettings};

/// `deploy` arguments as the planner takes them.
fn settings(args: DeployArgs) -> DeploySettings {
    let DeployArgs {
        components,
        tag,
        timeout,
        hold,
        no_rollback,
    } = args;
    DeploySettings {
        components,
        tag,
        timeout,
        hold,
        rollback: !no_rollback,
    }
}

pub async fn run(args: DeployArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let settings = settings(args);
    let environment = global.environment()?;
    let helm = support::helm_target(&environment);
    let dry = plan::plan(
        &environment,
        &settings,
        &helm,
        &global.config,
        &BTreeMap::new(),
    )?;
    if global.dry_run {
        output.data(&dry).context("writing the plan")?;
        return Ok(ExitStatus::Success);
    }
    support::confirm(
        global,
        &format!(
            "deploy {} to `{}`?",
            dry.steps
                .iter()
                .map(|s| s.component.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            environment.name
        ),
    )?;

    let client = preflight::preflight_cluster(&environment, output).await?;
    preflight::preflight_secret(&client, &environment, output).await?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    let deploy_lock =
        support::take_lock(&client, &environment, "deploy", audit.as_ref(), output).await?;
    let selected = environment.select(&settings.components)?;
    let deploy_lock =
        support::require_kill_switch_off(deploy_lock, &client, &environment, &selected).await?;
    // The releases are read under the Lease: the rollback targets are what ran when this
    // operator took the lock, not what ran before another operator's deploy finished.
    let prepared = prepare(&client, &environment, &settings, &helm, global, output).await;
    let (plan, previous) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            release(deploy_lock, output).await;
            return Err(error);
        }
    };
    let backend = KubeDeploy {
        client: &client,
        environment: &environment,
        helm: &helm,
        timeout: settings.timeout,
        hold: settings.hold(&environment),
        audit: audit.as_ref(),
        output,
        lease: &deploy_lock.guard(),
    };
    let executed = execute::execute(&backend, &plan, &previous, settings.rollback).await;
    release(deploy_lock, output).await;
    output
        .data(&executed.report)
        .context("writing the deploy report")?;
    match executed.verdict.error(&executed.report) {
        None => Ok(executed.verdict.exit_status()),
        Some(error) => Err(error),
    }
}

/// Reads the releases (pending ones refused, the deployed revision of each recorded as its
/// rollback target, the running tag kept when there is no `--tag`), builds the plan with the
/// Secret's fingerprint, and checks every image exists.
async fn prepare(
    client: &kube::Client,
    environment: &Environment,
    settings: &DeploySettings,
    helm: &HelmTarget,
    global: &GlobalSettings,
    output: &Output,
) -> Result<(DeployPlan, Vec<Option<u32>>), CommandError> {
    let selected = environment.select(&settings.components)?;
    let releases: Vec<String> = selected.iter().map(|c| c.release.clone()).collect();
    let history = read_revisions(client, &environment.namespace, &releases).await?;
    let previous = plan::preflight_releases(&selected, &history, output)?;
    let kept = match &settings.tag {
        Some(_) => BTreeMap::new(),
        None => {
            let kept = plan::kept_tags(&selected, &history)?;
            for (component, (tag, revision)) in &kept {
                output.info(format!(
                    "no --tag: `{component}` keeps the image it runs now, tag {tag} (revision {revision})"
                ));
            }
            kept.into_iter()
                .map(|(component, (tag, _))| (component, tag))
                .collect()
        }
    };
    let plan = plan::plan(environment, settings, helm, &global.config, &kept)?;
    let plan = preflight::with_secret_fingerprint(plan, client, environment, output).await?;
    let images: Vec<(&str, &str)> = selected
        .iter()
        .map(|component| {
            let tag = settings
                .tag
                .as_deref()
                .or_else(|| kept.get(&component.name).map(String::as_str))
                .unwrap_or_default();
            (component.image.as_str(), tag)
        })
        .collect();
    crate::registry::preflight(environment.registry.as_deref(), &images, output).await?;
    Ok((plan, previous))
}

async fn release(deploy_lock: DeployLock, output: &Output) {
    if let Err(error) = deploy_lock.release().await {
        output.warn(format!(
            "the deploy lock was not released cleanly: {error}; it expires in {}s",
            lock::LEASE_SECONDS
        ));
    }
}
