//! `psctl kill-switch on|off`: the runbook's emergency stop. `on` scales Deployments to zero and
//! remembers their replica counts in the `psctl.io/kill-switch-replicas` annotation; `off`
//! restores exactly that count. Both are idempotent.

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;

use super::support::{self, AuditNote};
use crate::cli::{KillSwitchArgs, KillSwitchState};
use crate::cluster::{self, ClusterError};
use crate::error::{CommandResult, ExitStatus};
use crate::output::{CheckState, Output, Render, Style, table};
use crate::settings::GlobalSettings;

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

pub async fn run(args: KillSwitchArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let KillSwitchArgs { state, components } = args;
    let environment = global.environment()?;
    let selected = environment.select(&components)?;
    let client = cluster::connect(&environment).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &environment.namespace);
    let mut changes = Vec::new();
    for component in &selected {
        let deployment =
            deployments
                .get(&component.deployment)
                .await
                .map_err(ClusterError::api(format!(
                    "reading Deployment `{}`",
                    component.deployment
                )))?;
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
            .map(String::as_str);
        let (after, patch) = decide(state, replicas, remembered)
            .map_err(|m| crate::error::CommandError::usage(anyhow::anyhow!(m)))?;
        changes.push(Change {
            component: component.name.clone(),
            deployment: component.deployment.clone(),
            replicas_before: replicas,
            replicas_after: after,
            patch,
        });
    }
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
    let held =
        support::take_lock(&client, &environment, "kill-switch", audit.as_ref(), output).await?;
    let mut failure = None;
    for change in &mut report.changes {
        let Some(patch) = &change.patch else { continue };
        let result = deployments
            .patch(
                &change.deployment,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(ClusterError::api(format!(
                "patching Deployment `{}`",
                change.deployment
            )));
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
            Ok(_) => output.check(
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
