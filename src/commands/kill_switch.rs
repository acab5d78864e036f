//! `psctl kill-switch on|off`: the runbook's emergency stop. `on` scales Deployments (each
//! component's stable track and, while one exists, its canary track) to zero and remembers
//! their replica counts in the `psctl.io/kill-switch-replicas` annotation; `off` restores
//! exactly that count. Both are idempotent.
//!
//! `on` is a brake, not a queue: it takes the deploy Lease from whoever holds it (recorded in
//! the audit trail with the previous holder's name), and the holder, which watches its Lease,
//! stops at its next safe point. While the switch is on, every command that could bring a
//! component back (`deploy`, `rollback`, `canary`, `run`) refuses through [`engaged`].

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch};
use serde::Serialize;

use super::support::{self, AuditNote};
use crate::cli::{KillSwitchArgs, KillSwitchState};
use crate::cluster::{self, ClusterError, ownership};
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::lock;
use crate::output::{CheckState, Output, Render, Style, table};
use crate::settings::{Component, GlobalSettings};

/// Where the replica count is remembered while the switch is on.
pub const REPLICAS_ANNOTATION: &str = "psctl.io/kill-switch-replicas";

/// The change for one Deployment, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub component: String,
    pub deployment: String,
    pub replicas_before: i32,
    pub replicas_after: i32,
    /// The merge patch to send; `None` when the Deployment is already in the asked state.
    pub patch: Option<serde_json::Value>,
}

/// Decides the patch from the Deployment's current replicas and annotation. Pure.
pub fn decide(
    state: KillSwitchState,
    replicas: i32,
    remembered: Option<&str>,
) -> Result<(i32, Option<serde_json::Value>), String> {
    match (state, remembered) {
        // Already on: keep the remembered count; scaling again would overwrite it with 0.
        (KillSwitchState::On, Some(_)) if replicas == 0 => Ok((0, None)),
        (KillSwitchState::On, _) => Ok((
            0,
            Some(serde_json::json!({
                "metadata": {"annotations": {REPLICAS_ANNOTATION: replicas.to_string()}},
                "spec": {"replicas": 0},
            })),
        )),
        (KillSwitchState::Off, None) => Ok((replicas, None)),
        (KillSwitchState::Off, Some(text)) => {
            let restore: i32 = text
                .trim()
                .parse()
                .map_err(|_| format!("annotation {REPLICAS_ANNOTATION}=`{text}` is not a replica count; set spec.replicas by hand"))?;
            Ok((
                restore,
                Some(serde_json::json!({
                    "metadata": {"annotations": {REPLICAS_ANNOTATION: null}},
                    "spec": {"replicas": restore},
                })),
            ))
        }
    }
}

#[derive(Debug, Serialize)]
pub struct KillSwitchReport {
    pub state: String,
    pub dry_run: bool,
    pub changes: Vec<Change>,
}

impl Render for KillSwitchReport {
    fn render_table(&self, _style: &Style) -> String {
        table::render(
            &[
                "COMPONENT",
                "DEPLOYMENT",
                "REPLICAS BEFORE",
                "REPLICAS AFTER",
                "ACTION",
            ],
            self.changes.iter().map(|c| {
                let action = match (&c.patch, self.dry_run) {
                    (None, _) => "none (already)".to_owned(),
                    (Some(_), true) => "would patch".to_owned(),
                    (Some(_), false) => "patched".to_owned(),
                };
                [
                    c.component.clone(),
                    c.deployment.clone(),
                    c.replicas_before.to_string(),
                    c.replicas_after.to_string(),
                    action,
                ]
            }),
        )
    }
}

/// One Deployment the switch acts on.
#[derive(Debug, Clone)]
struct Target {
    component: String,
    deployment: String,
    /// The canary track exists only while a canary runs (or was kept for investigation).
    optional: bool,
}

/// Each component's stable Deployment and, when it has a canary, its canary Deployment.
fn targets(components: &[&Component]) -> Vec<Target> {
    let mut targets = Vec::new();
    for component in components {
        targets.push(Target {
            component: component.name.clone(),
            deployment: component.deployment.clone(),
            optional: false,
        });
        if let Some(canary) = &component.canary {
            targets.push(Target {
                component: component.name.clone(),
                deployment: canary.deployment.clone(),
                optional: true,
            });
        }
    }
    targets
}

/// Replicas and remembered count of a Deployment, `None` when it does not exist.
async fn read(
    deployments: &Api<Deployment>,
    target: &Target,
) -> Result<Option<(i32, Option<String>)>, ClusterError> {
    let deployment = match deployments.get_opt(&target.deployment).await {
        Ok(Some(deployment)) => deployment,
        Ok(None) => return Ok(None),
        Err(error) => {
            return Err(ClusterError::api(format!(
                "reading Deployment `{}`",
                target.deployment
            ))(error));
        }
    };
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let remembered = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REPLICAS_ANNOTATION))
        .cloned();
    Ok(Some((replicas, remembered)))
}

async fn plan_changes(
    deployments: &Api<Deployment>,
    state: KillSwitchState,
    targets: &[Target],
) -> Result<Vec<Change>, CommandError> {
    let mut changes = Vec::new();
    for target in targets {
        let Some((replicas, remembered)) = read(deployments, target).await? else {
            if target.optional {
                continue;
            }
            return Err(CommandError::usage(anyhow::anyhow!(
                "Deployment `{}` of component `{}` does not exist",
                target.deployment,
                target.component
            ))
            .hint("check the component's `deployment:` in psctl.yaml and `psctl status`"));
        };
        let (after, patch) = decide(state, replicas, remembered.as_deref())
            .map_err(|m| crate::error::CommandError::usage(anyhow::anyhow!(m)))?;
        changes.push(Change {
            component: target.component.clone(),
            deployment: target.deployment.clone(),
            replicas_before: replicas,
            replicas_after: after,
            patch,
        });
    }
    Ok(changes)
}

/// The Deployments of `components` the kill switch holds at zero, as `name (N replicas
/// remembered)`; empty when it is off for all of them.
pub async fn engaged(
    client: &kube::Client,
    namespace: &str,
    components: &[&Component],
) -> Result<Vec<String>, ClusterError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let mut engaged = Vec::new();
    for target in targets(components) {
        if let Some((_, Some(remembered))) = read(&deployments, &target).await? {
            engaged.push(format!(
                "{} held at 0, {remembered} remembered",
                target.deployment
            ));
        }
    }
    Ok(engaged)
}

/// Every replica change the kill switch makes goes through here.
async fn scale(
    deployments: &Api<Deployment>,
    deployment: &str,
    patch: &serde_json::Value,
) -> Result<(), ClusterError> {
    deployments
        .patch(
            deployment,
            &ownership::patch_params(ownership::KILL_SWITCH),
            &Patch::Merge(patch),
        )
        .await
        .map(drop)
        .map_err(ClusterError::api(format!(
            "patching Deployment `{deployment}`"
        )))
}

pub async fn run(args: KillSwitchArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let KillSwitchArgs { state, components } = args;
    let environment = global.environment()?;
    let selected = environment.select(&components)?;
    let targets = targets(&selected);
    let client = cluster::connect(&environment).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &environment.namespace);
    let changes = plan_changes(&deployments, state, &targets).await?;
    let state_name = match state {
        KillSwitchState::On => "on",
        KillSwitchState::Off => "off",
    };
    let mut report = KillSwitchReport {
        state: state_name.to_owned(),
        dry_run: global.dry_run,
        changes,
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
    let held = match state {
        KillSwitchState::On => {
            support::take_lock_override(
                &client,
                &environment,
                "kill-switch",
                audit.as_ref(),
                output,
            )
            .await?
        }
        KillSwitchState::Off => {
            support::take_lock(&client, &environment, "kill-switch", audit.as_ref(), output).await?
        }
    };
    let overrode = held
        .takeover
        .as_ref()
        .is_some_and(|t| t.reason == lock::TakeoverReason::Override);
    // Read again under the Lease: the previous holder may have scaled something meanwhile.
    report.changes = plan_changes(&deployments, state, &targets).await?;
    let mut failure = None;
    for change in &mut report.changes {
        let Some(patch) = &change.patch else { continue };
        let result = scale(&deployments, &change.deployment, patch).await;
        // Off: the replicas are Helm's again; on: the kill switch keeps them (see
        // cluster::ownership).
        let result = match (result, state) {
            (Ok(()), KillSwitchState::Off) => {
                ownership::hand_back(&deployments, &change.deployment, &[ownership::KILL_SWITCH])
                    .await
                    .map(drop)
                    .map_err(ClusterError::api(format!(
                        "handing the replicas of `{}` back to Helm",
                        change.deployment
                    )))
            }
            (result, _) => result,
        };
        let outcome = if result.is_ok() {
            "succeeded"
        } else {
            "failed"
        };
        support::audit(
            audit.as_ref(),
            output,
            &environment,
            AuditNote {
                action: format!("kill-switch {state_name}"),
                target: change.deployment.clone(),
                from_state: format!("replicas {}", change.replicas_before),
                to_state: format!("replicas {}", change.replicas_after),
                outcome: outcome.to_owned(),
                details: serde_json::json!({"component": change.component}),
            },
        )
        .await;
        match result {
            Ok(()) => output.check(
                CheckState::Ok,
                &format!("kill switch {state_name}"),
                &format!(
                    "{}: replicas {} -> {}",
                    change.deployment, change.replicas_before, change.replicas_after
                ),
            ),
            Err(error) => {
                output.check(
                    CheckState::Fail,
                    &format!("kill switch {state_name}"),
                    &error.to_string(),
                );
                failure.get_or_insert(error);
            }
        }
    }
    if overrode && failure.is_none() {
        // The overridden holder sees its loss within one Lease read and stops at its next safe
        // point; a write it had in flight may still land. Look again once it has had the
        // time, and put back to zero whatever came back up (the remembered count stays).
        tokio::time::sleep(lock::POLL * 3).await;
        for target in &targets {
            if let Some((replicas, Some(_))) = read(&deployments, target).await?
                && replicas > 0
            {
                let patch = serde_json::json!({"spec": {"replicas": 0}});
                scale(&deployments, &target.deployment, &patch).await?;
                output.check(
                    CheckState::Warn,
                    "kill switch on",
                    &format!(
                        "{}: scaled to {replicas} by the overridden operation as it stopped; back to 0",
                        target.deployment
                    ),
                );
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_remembers_the_count_and_off_restores_it_exactly() {
        let (after, patch) = decide(KillSwitchState::On, 3, None).unwrap();
        assert_eq!(after, 0);
        let patch = patch.unwrap();
        assert_eq!(patch["metadata"]["annotations"][REPLICAS_ANNOTATION], "3");
        assert_eq!(patch["spec"]["replicas"], 0);

        let (after, patch) = decide(KillSwitchState::Off, 0, Some("3")).unwrap();
        assert_eq!(after, 3);
        let patch = patch.unwrap();
        assert!(patch["metadata"]["annotations"][REPLICAS_ANNOTATION].is_null());
        assert_eq!(patch["spec"]["replicas"], 3);
    }

    #[test]
    fn both_directions_are_idempotent() {
        // A second `on` must not overwrite the remembered count with 0.
        assert_eq!(
            decide(KillSwitchState::On, 0, Some("3")).unwrap(),
            (0, None)
        );
        assert_eq!(decide(KillSwitchState::Off, 2, None).unwrap(), (2, None));
    }

    #[test]
    fn a_component_already_at_zero_is_restored_to_zero() {
        let (_, patch) = decide(KillSwitchState::On, 0, None).unwrap();
        assert_eq!(
            patch.unwrap()["metadata"]["annotations"][REPLICAS_ANNOTATION],
            "0"
        );
    }

    #[test]
    fn a_corrupt_annotation_is_refused() {
        assert!(
            decide(KillSwitchState::Off, 0, Some("three"))
                .unwrap_err()
                .contains("not a replica count")
        );
    }
}
