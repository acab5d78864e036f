//! The kill switch, the runbook's emergency stop: `on` scales Deployments (each component's
//! stable track and, while one exists, its canary track) to zero and remembers their replica
//! counts in the [`REPLICAS_ANNOTATION`] annotation; `off` restores exactly that count. Both are
//! idempotent.
//!
//! [`decide`] is the pure patch decision; [`plan`], [`apply`] and [`settle_after_override`] run
//! over the [`Deployments`] trait, so the order of writes, hand-backs and audit records is
//! tested with a fake; [`KubeDeployments`] is the one implementation over the API server.
//! [`engaged`] is what every command that could bring a component back asks first. No Lease,
//! prompt or report printing lives here: `commands::kill_switch` sequences those.

use std::future::Future;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch};
use serde::Serialize;

use crate::audit::AuditSink;
use crate::audit::note::{self, AuditNote};
use crate::cluster::{ClusterError, ownership};
use crate::error::CommandError;
use crate::output::{CheckState, Output, Render, Style, table};
use crate::settings::{Component, Environment};

/// Where the replica count is remembered while the switch is on.
pub const REPLICAS_ANNOTATION: &str = "psctl.io/kill-switch-replicas";

/// Which way the switch is thrown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn name(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

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
    switch: Switch,
    replicas: i32,
    remembered: Option<&str>,
) -> Result<(i32, Option<serde_json::Value>), String> {
    match (switch, remembered) {
        // Already on: keep the remembered count; scaling again would overwrite it with 0.
        (Switch::On, Some(_)) if replicas == 0 => Ok((0, None)),
        (Switch::On, _) => Ok((
            0,
            Some(serde_json::json!({
                "metadata": {"annotations": {REPLICAS_ANNOTATION: replicas.to_string()}},
                "spec": {"replicas": 0},
            })),
        )),
        (Switch::Off, None) => Ok((replicas, None)),
        (Switch::Off, Some(text)) => {
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

/// The remembered count of a Deployment the switch holds at zero, read from its annotations.
/// Pure.
pub fn remembered(deployment: &Deployment) -> Option<&str> {
    deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REPLICAS_ANNOTATION))
        .map(String::as_str)
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub component: String,
    pub deployment: String,
    /// The canary track exists only while a canary runs (or was kept for investigation).
    pub optional: bool,
}

/// Each component's stable Deployment and, when it has a canary, its canary Deployment. Pure.
pub fn targets(components: &[&Component]) -> Vec<Target> {
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

/// The edges of the kill switch.
pub trait Deployments {
    /// Replicas and remembered count of a Deployment, `None` when it does not exist.
    fn read(
        &self,
        deployment: &str,
    ) -> impl Future<Output = Result<Option<(i32, Option<String>)>, ClusterError>>;
    /// Every replica change the kill switch makes goes through here.
    fn scale(
        &self,
        deployment: &str,
        patch: &serde_json::Value,
    ) -> impl Future<Output = Result<(), ClusterError>>;
    /// Gives the replicas back to Helm (see `cluster::ownership`).
    fn hand_back(&self, deployment: &str) -> impl Future<Output = Result<(), ClusterError>>;
    /// Records one Deployment's change in the audit trail.
    fn audit(&self, switch: Switch, change: &Change, outcome: &str) -> impl Future<Output = ()>;
}

/// The change for every target: a missing stable Deployment is refused (exit 2), a missing
/// canary Deployment is skipped.
pub async fn plan(
    deployments: &impl Deployments,
    switch: Switch,
    targets: &[Target],
) -> Result<Vec<Change>, CommandError> {
    let mut changes = Vec::new();
    for target in targets {
        let Some((replicas, remembered)) = deployments.read(&target.deployment).await? else {
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
        let (after, patch) = decide(switch, replicas, remembered.as_deref())
            .map_err(|m| CommandError::usage(anyhow::anyhow!(m)))?;
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

/// Sends every planned patch, each audited as it lands (off also hands the replicas back to
/// Helm; on keeps them, see `cluster::ownership`). Every change is attempted; the first
/// failure is returned.
pub async fn apply(
    deployments: &impl Deployments,
    switch: Switch,
    changes: &[Change],
    output: &Output,
) -> Option<ClusterError> {
    let state_name = switch.name();
    let mut failure = None;
    for change in changes {
        let Some(patch) = &change.patch else { continue };
        let result = deployments.scale(&change.deployment, patch).await;
        let result = match (result, switch) {
            (Ok(()), Switch::Off) => deployments.hand_back(&change.deployment).await,
            (result, _) => result,
        };
        deployments
            .audit(switch, change, crate::audit::outcome::of(&result))
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
    failure
}

/// After `on` overrode another holder of the Lease: that holder sees its loss within one Lease
/// read and stops at its next safe point, but a write it had in flight may still land. Once it
/// has had the time, whatever came back up is put back to zero (the remembered count stays).
pub async fn settle_after_override(
    deployments: &impl Deployments,
    targets: &[Target],
    output: &Output,
) -> Result<(), ClusterError> {
    tokio::time::sleep(crate::lock::POLL * 3).await;
    for target in targets {
        if let Some((replicas, Some(_))) = deployments.read(&target.deployment).await?
            && replicas > 0
        {
            let patch = serde_json::json!({"spec": {"replicas": 0}});
            deployments.scale(&target.deployment, &patch).await?;
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
    Ok(())
}

/// The audit record of one Deployment's change.
pub fn audit_note(switch: Switch, change: &Change, outcome: &str) -> AuditNote {
    AuditNote {
        action: format!("kill-switch {}", switch.name()),
        target: change.deployment.clone(),
        from_state: format!("replicas {}", change.replicas_before),
        to_state: format!("replicas {}", change.replicas_after),
        outcome: outcome.to_owned(),
        details: serde_json::json!({"component": change.component}),
    }
}

/// The Deployments of `components` the kill switch holds at zero, as `name held at 0, N
/// remembered`; empty when it is off for all of them.
pub async fn engaged(
    client: &kube::Client,
    namespace: &str,
    components: &[&Component],
) -> Result<Vec<String>, ClusterError> {
    let deployments = KubeDeployments::reader(client, namespace);
    let mut engaged = Vec::new();
    for target in targets(components) {
        if let Some((_, Some(remembered))) = deployments.read(&target.deployment).await? {
            engaged.push(format!(
                "{} held at 0, {remembered} remembered",
                target.deployment
            ));
        }
    }
    Ok(engaged)
}

/// [`Deployments`] over the API server; audited through the command's sink when it writes.
pub struct KubeDeployments<'a> {
    api: Api<Deployment>,
    audit: Option<(&'a dyn AuditSink, &'a Environment, &'a Output)>,
}

impl<'a> KubeDeployments<'a> {
    /// Reads only: writing through it records nothing.
    pub fn reader(client: &kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            audit: None,
        }
    }

    /// Reads and writes, each write recorded in `audit`.
    pub fn writer(
        client: &kube::Client,
        environment: &'a Environment,
        audit: &'a dyn AuditSink,
        output: &'a Output,
    ) -> Self {
        Self {
            api: Api::namespaced(client.clone(), &environment.namespace),
            audit: Some((audit, environment, output)),
        }
    }
}

impl Deployments for KubeDeployments<'_> {
    async fn read(&self, deployment: &str) -> Result<Option<(i32, Option<String>)>, ClusterError> {
        let object = self
            .api
            .get_opt(deployment)
            .await
            .map_err(ClusterError::api(format!(
                "reading Deployment `{deployment}`"
            )))?;
        Ok(object.map(|object| {
            let replicas = object.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            (replicas, remembered(&object).map(str::to_owned))
        }))
    }

    async fn scale(&self, deployment: &str, patch: &serde_json::Value) -> Result<(), ClusterError> {
        self.api
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

    async fn hand_back(&self, deployment: &str) -> Result<(), ClusterError> {
        ownership::hand_back(&self.api, deployment, &[ownership::KILL_SWITCH])
            .await
            .map(drop)
            .map_err(ClusterError::api(format!(
                "handing the replicas of `{deployment}` back to Helm"
            )))
    }

    async fn audit(&self, switch: Switch, change: &Change, outcome: &str) {
        if let Some((sink, environment, output)) = self.audit {
            note::record(
                sink,
                output,
                environment,
                audit_note(switch, change, outcome),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests;
