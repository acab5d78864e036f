//! `psctl rollback`: return a component to an earlier Helm revision (default: the last one that
//! was deployed successfully), or to the Deployment's previous ReplicaSet (`--undo`), or recover
//! a release stuck in `pending-*` (`--unstick`). Each builds a plan first, tracks the result
//! like a deploy, verifies the recovery (`crate::recovery`: smoke checks and the deposit-rate
//! baseline, unless `--no-verify`), takes the deploy Lease and writes the audit trail.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use serde::Serialize;

use super::history::read_revisions;
use super::support::{self, AuditNote};
use crate::cli::RollbackArgs;
use crate::cluster::{self, ClusterError, ownership};
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::helm::driver::HelmCommand;
use crate::helm::revision;
use crate::helm::storage::{self, Revision};
use crate::output::{CheckState, Output, Render, Style};
use crate::recovery::{self, Incident, Verification};
use crate::rollout::diagnosis::REVISION_ANNOTATION;
use crate::rollout::track::{self, Target};
use crate::settings::{Component, Environment, GlobalSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Helm(Option<u32>),
    Undo,
    Unstick,
}

/// One step of a rollback plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Run Helm.
    Helm {
        command: String,
        #[serde(skip)]
        run: HelmCommand,
    },
    /// Delete the release Secret of a revision that never finished.
    DeleteRevision {
        secret: String,
        revision: u32,
        status: String,
    },
    /// Put an earlier ReplicaSet's pod template back on the Deployment.
    RestoreTemplate {
        deployment: String,
        from_revision: String,
        to_revision: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackPlan {
    pub component: String,
    pub release: String,
    pub mode: String,
    pub current_revision: Option<u32>,
    pub target_revision: Option<u32>,
    pub steps: Vec<Step>,
}

impl Render for RollbackPlan {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = format!(
            "rollback plan for {} (release {}, {}): revision {} -> {}\n",
            self.component,
            self.release,
            self.mode,
            self.current_revision
                .map_or_else(|| "-".to_owned(), |r| r.to_string()),
            self.target_revision
                .map_or_else(|| "-".to_owned(), |r| r.to_string()),
        );
        for (index, step) in self.steps.iter().enumerate() {
            let line = match step {
                Step::Helm { command, .. } => command.clone(),
                Step::DeleteRevision {
                    secret,
                    revision,
                    status,
                } => {
                    format!("delete Secret {secret} (revision {revision}, {status})")
                }
                Step::RestoreTemplate {
                    deployment,
                    from_revision,
                    to_revision,
                } => {
                    format!(
                        "restore the pod template of ReplicaSet revision {to_revision} on Deployment {deployment} (now {from_revision})"
                    )
                }
            };
            text.push_str(&format!("  {}. {line}\n", index + 1));
        }
        text
    }
}

/// The Helm rollback plan. Pure.
fn helm_plan(
    component: &Component,
    history: &[Revision],
    wanted: Option<u32>,
    helm: &crate::helm::driver::HelmTarget,
) -> Result<RollbackPlan, CommandError> {
    let current = revision::current(history);
    if let Some(current) = current
        && current.status.is_pending()
    {
        return Err(CommandError::usage(anyhow::anyhow!(
            "release `{}` is stuck in {} at revision {}",
            component.release,
            current.status,
            current.revision
        ))
        .hint(format!(
            "recover it first with `psctl rollback {} --unstick`",
            component.name
        )));
    }
    let target = revision::rollback_target(&component.release, history, wanted)?;
    let run = helm.rollback(&component.release, target.revision);
    Ok(RollbackPlan {
        component: component.name.clone(),
        release: component.release.clone(),
        mode: "helm".to_owned(),
        current_revision: current.map(|r| r.revision),
        target_revision: Some(target.revision),
        steps: vec![Step::Helm {
            command: run.display(),
            run,
        }],
    })
}

/// The `--unstick` plan: drop the unfinished revision, then re-apply the last good one (or
/// uninstall when a first install never finished). Pure.
pub fn unstick_plan(
    component: &Component,
    history: &[Revision],
    helm: &crate::helm::driver::HelmTarget,
) -> Result<RollbackPlan, CommandError> {
    let Some(current) = revision::current(history) else {
        return Err(CommandError::usage(anyhow::anyhow!(
            "release `{}` has no revisions",
            component.release
        )));
    };
    if !current.status.is_pending() {
        return Err(CommandError::usage(anyhow::anyhow!(
            "release `{}` is not stuck: revision {} is {}",
            component.release,
            current.revision,
            current.status
        ))
        .hint("use `psctl rollback` without --unstick to change revision"));
    }
    let mut steps = vec![Step::DeleteRevision {
        secret: storage::secret_name(&component.release, current.revision),
        revision: current.revision,
        status: current.status.to_string(),
    }];
    let earlier: Vec<Revision> = history
        .iter()
        .filter(|r| r.revision < current.revision)
        .cloned()
        .collect();
    let good = earlier
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                storage::ReleaseStatus::Deployed | storage::ReleaseStatus::Superseded
            )
        })
        .max_by_key(|r| r.revision);
    let target = match good {
        Some(good) => {
            let run = helm.rollback(&component.release, good.revision);
            steps.push(Step::Helm {
                command: run.display(),
                run,
            });
            Some(good.revision)
        }
        None if earlier.is_empty() => {
            let run = helm.uninstall(&component.release);
            steps.push(Step::Helm {
                command: run.display(),
                run,
            });
            None
        }
        None => {
            return Err(CommandError::usage(anyhow::anyhow!(
                "release `{}` has no successfully deployed revision before {}; recovering needs a decision",
                component.release,
                current.revision
            ))
            .hint(format!("inspect `psctl history {}` and uninstall or redeploy by hand", component.name)));
        }
    };
    Ok(RollbackPlan {
        component: component.name.clone(),
        release: component.release.clone(),
        mode: "unstick".to_owned(),
        current_revision: Some(current.revision),
        target_revision: target,
        steps,
    })
}

/// Picks the ReplicaSet to return to for `--undo`: the highest revision below the
/// Deployment's current one. Pure.
pub fn undo_target<'a>(
    current: Option<&str>,
    replica_sets: &'a [ReplicaSet],
) -> Option<(&'a ReplicaSet, u64)> {
    let current: u64 = current?.parse().ok()?;
    replica_sets
        .iter()
        .filter_map(|rs| {
            let revision: u64 = rs
                .metadata
                .annotations
                .as_ref()?
                .get(REVISION_ANNOTATION)?
                .parse()
                .ok()?;
            (revision < current).then_some((rs, revision))
        })
        .max_by_key(|(_, revision)| *revision)
}

/// What `psctl rollback -o json` prints after acting: the plan and how the recovery was
/// verified.
#[derive(Debug, Serialize)]
pub struct RollbackReport<'a> {
    #[serde(flatten)]
    pub plan: &'a RollbackPlan,
    pub verification: Verification,
}

impl Render for RollbackReport<'_> {
    fn render_table(&self, style: &Style) -> String {
        let mut text = self.plan.render_table(style);
        let verification = &self.verification;
        let status = serde_json::to_value(verification.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match &verification.reason {
            Some(reason) => text.push_str(&format!("verification: {status} ({reason})\n")),
            None => {
                let failed = verification.failure_summary();
                if failed.is_empty() {
                    text.push_str(&format!("verification: {status}\n"));
                } else {
                    text.push_str(&format!("verification: {status}: {failed}\n"));
                }
            }
        }
        text
    }
}

/// Unix seconds of the current revision's last deployment: when the incident began. Pure.
fn incident_start(history: &[Revision]) -> Option<i64> {
    let current = revision::current(history)?;
    chrono::DateTime::parse_from_rfc3339(&current.updated)
        .ok()
        .map(|t| t.timestamp())
}

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
    let (plan, started) = match mode {
        Mode::Undo => (undo_plan(&client, &environment, &component).await?, None),
        Mode::Helm(wanted) => {
            let history = read_revisions(
                &client,
                &environment.namespace,
                std::slice::from_ref(&component.release),
            )
            .await?;
            (
                helm_plan(&component, &history, wanted, &helm)?,
                incident_start(&history),
            )
        }
        Mode::Unstick => {
            let history = read_revisions(
                &client,
                &environment.namespace,
                std::slice::from_ref(&component.release),
            )
            .await?;
            (
                unstick_plan(&component, &history, &helm)?,
                incident_start(&history),
            )
        }
    };
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
    let result = execute(
        &client,
        &environment,
        &component,
        &plan,
        Execution { timeout, force },
        output,
    )
    .await;
    let verification = match &result {
        Err(_) => Verification::not_run("the rollback did not complete"),
        Ok(false) => {
            Verification::skipped("nothing rolled out to verify (the release was uninstalled)")
        }
        Ok(true) if no_verify => Verification::skipped("--no-verify"),
        Ok(true) => recovery::verify(&client, &environment, &component, incident, output).await,
    };
    let outcome = match (&result, verification.status) {
        (Err(_), _) => "failed",
        (Ok(_), recovery::Status::Failed) => "unverified",
        (Ok(_), _) => "succeeded",
    };
    support::audit(
        audit.as_ref(),
        output,
        &environment,
        AuditNote {
            action: format!("rollback ({})", plan.mode),
            target: component.release.clone(),
            from_state: plan
                .current_revision
                .map_or_else(|| "-".to_owned(), |r| format!("revision {r}")),
            to_state: plan
                .target_revision
                .map_or_else(|| "uninstalled".to_owned(), |r| format!("revision {r}")),
            outcome: outcome.to_owned(),
            details: serde_json::json!({
                "component": component.name,
                "verification": verification.status,
            }),
        },
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
    match status {
        ExitStatus::Success => Ok(ExitStatus::Success),
        ExitStatus::Unreachable => Err(CommandError::unreachable(anyhow::anyhow!(
            "the rollback of `{}` rolled out but its recovery could not be verified: {failures}",
            component.name
        ))
        .hint("check that the cluster and Prometheus answer, then `psctl smoke --env ENV`")),
        _ => Err(CommandError::verification(anyhow::anyhow!(
            "the rollback of `{}` rolled out but the service did not recover: {failures}",
            component.name
        ))
        .hint("the revision rolled back to is not healthy either: inspect `psctl status` and `psctl history`, then roll back further with `--to-rev N` or stop it with `psctl kill-switch on`")),
    }
}

async fn undo_plan(
    client: &kube::Client,
    environment: &Environment,
    component: &Component,
) -> Result<RollbackPlan, CommandError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &environment.namespace);
    let deployment = deployments
        .get(&component.deployment)
        .await
        .map_err(ClusterError::api(format!(
            "reading Deployment `{}`",
            component.deployment
        )))?;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &environment.namespace);
    let list = replica_sets
        .list(&ListParams::default().labels(&component.selector))
        .await
        .map_err(ClusterError::api(format!(
            "listing ReplicaSets of `{}`",
            component.deployment
        )))?;
    let uid = deployment.metadata.uid.clone();
    let owned: Vec<ReplicaSet> = list
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        // The stable track only: a canary's pod template is never a rollback target, even
        // if a ReplicaSet carrying it were adopted by the stable Deployment.
        .filter(|rs| {
            rs.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::canary::queries::TRACK_LABEL))
                .map(String::as_str)
                != Some(crate::canary::queries::CANARY_TRACK)
        })
        .collect();
    let current = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .cloned();
    let Some((_, target)) = undo_target(current.as_deref(), &owned) else {
        return Err(CommandError::usage(anyhow::anyhow!(
            "Deployment `{}` has no earlier ReplicaSet revision to return to",
            component.deployment
        ))
        .hint("the ReplicaSet history is limited by revisionHistoryLimit; use Helm revisions instead (drop --undo)"));
    };
    Ok(RollbackPlan {
        component: component.name.clone(),
        release: component.release.clone(),
        mode: "undo".to_owned(),
        current_revision: current.as_deref().and_then(|c| c.parse().ok()),
        target_revision: u32::try_from(target).ok(),
        steps: vec![Step::RestoreTemplate {
            deployment: component.deployment.clone(),
            from_revision: current.unwrap_or_default(),
            to_revision: target.to_string(),
        }],
    })
}

/// How `execute` runs the plan.
#[derive(Debug, Clone, Copy)]
struct Execution {
    timeout: Duration,
    /// `--force`: recover a pending revision younger than [`PENDING_MIN_AGE`].
    force: bool,
}

/// A pending revision younger than this may belong to a Helm operation that is still running
/// (Helm's own default `--timeout` is 5 minutes): `--unstick` leaves it alone without `--force`.
pub const PENDING_MIN_AGE: Duration = Duration::from_secs(300);

/// Whether the pending revision's release Secret may be deleted: it still records the planned
/// revision and status, and it is old enough (or `force`). Pure: `age` is measured by the caller.
pub fn may_delete_pending(
    planned_status: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
    age: Option<Duration>,
    force: bool,
) -> Result<(), String> {
    let status = labels.and_then(|l| l.get("status")).map(String::as_str);
    if status != Some(planned_status) {
        return Err(format!(
            "it is now `{}`, not `{planned_status}` as planned: someone changed the release meanwhile",
            status.unwrap_or("unlabelled")
        ));
    }
    match age {
        Some(age) if age < PENDING_MIN_AGE && !force => Err(format!(
            "it was written {}s ago, and a Helm operation may still be running it (psctl waits {}s)",
            age.as_secs(),
            PENDING_MIN_AGE.as_secs()
        )),
        _ => Ok(()),
    }
}

async fn execute(
    client: &kube::Client,
    environment: &Environment,
    component: &Component,
    plan: &RollbackPlan,
    execution: Execution,
    output: &Output,
) -> Result<bool, CommandError> {
    let Execution { timeout, force } = execution;
    let mut needs_tracking = false;
    for step in &plan.steps {
        match step {
            Step::Helm { run, .. } => {
                run.run().await?;
                needs_tracking = run.args.first().map(String::as_str) == Some("rollback");
                output.check(CheckState::Ok, "helm", &run.display());
            }
            Step::DeleteRevision { secret, status, .. } => {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
                // Read again under the Lease, and delete exactly what was read: a precondition
                // on its resourceVersion and uid makes the API server refuse (409) if anyone
                // rewrote or replaced the Secret since.
                let object = secrets
                    .get(secret)
                    .await
                    .map_err(ClusterError::api(format!(
                        "reading release Secret `{secret}`"
                    )))?;
                // The API server's own creationTimestamp, so Helm's host clock plays no part.
                let age = object.metadata.creation_timestamp.as_ref().and_then(|t| {
                    let now = k8s_openapi::jiff::Timestamp::now();
                    now.duration_since(t.0).try_into().ok()
                });
                if let Err(problem) =
                    may_delete_pending(status, object.metadata.labels.as_ref(), age, force)
                {
                    return Err(CommandError::usage(anyhow::anyhow!(
                        "not deleting release Secret `{secret}`: {problem}"
                    ))
                    .hint("check `psctl history` and `helm status`; nothing was changed")
                    .hint(format!(
                        "once no Helm operation runs on the release, `psctl rollback {} --unstick --force` recovers it anyway",
                        component.name
                    )));
                }
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: object.metadata.resource_version.clone(),
                        uid: object.metadata.uid.clone(),
                    }),
                    ..DeleteParams::default()
                };
                secrets
                    .delete(secret, &params)
                    .await
                    .map_err(ClusterError::api(format!(
                        "deleting release Secret `{secret}` (precondition: unchanged since read)"
                    )))?;
                output.check(CheckState::Ok, "unfinished revision removed", secret);
            }
            Step::RestoreTemplate {
                deployment,
                to_revision,
                ..
            } => {
                restore_template(client, environment, component, deployment, to_revision).await?;
                needs_tracking = true;
                output.check(
                    CheckState::Ok,
                    "pod template restored",
                    &format!("revision {to_revision}"),
                );
            }
        }
    }
    if !needs_tracking {
        return Ok(false);
    }
    let target = Target {
        namespace: environment.namespace.clone(),
        deployment: component.deployment.clone(),
        selector: component.selector.clone(),
    };
    let outcome = track::track(client, &target, timeout, output).await?;
    support::report_outcome(
        output,
        &format!("rollout {}", component.deployment),
        &outcome,
    );
    if outcome.is_complete() {
        Ok(true)
    } else {
        Err(CommandError::verification(anyhow::anyhow!(
            "the rollback of `{}` did not roll out: {}",
            component.name,
            support::outcome_summary(&outcome)
        ))
        .hint("a human must look now: `psctl status`, then `psctl rollback <component> --to-rev <N>` or `psctl kill-switch on`"))
    }
}

async fn restore_template(
    client: &kube::Client,
    environment: &Environment,
    component: &Component,
    deployment: &str,
    to_revision: &str,
) -> Result<(), CommandError> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &environment.namespace);
    let list = replica_sets
        .list(&ListParams::default().labels(&component.selector))
        .await
        .map_err(ClusterError::api(format!(
            "listing ReplicaSets of `{deployment}`"
        )))?;
    let source = list
        .items
        .into_iter()
        .find(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION))
                .map(String::as_str)
                == Some(to_revision)
        })
        .ok_or_else(|| {
            CommandError::usage(anyhow::anyhow!(
                "ReplicaSet revision {to_revision} of `{deployment}` disappeared"
            ))
        })?;
    let mut template = source.spec.and_then(|s| s.template).unwrap_or_default();
    // The hash label belongs to the ReplicaSet; the controller adds it back.
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("pod-template-hash");
    }
    // Replace (not patch) so keys that exist only in the newer template disappear too; the
    // resourceVersion makes a concurrent edit fail instead of being overwritten.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &environment.namespace);
    let mut current = deployments
        .get(deployment)
        .await
        .map_err(ClusterError::api(format!(
            "reading Deployment `{deployment}`"
        )))?;
    if let Some(spec) = current.spec.as_mut() {
        spec.template = template;
    }
    deployments
        .replace(
            deployment,
            &ownership::post_params(ownership::ROLLBACK),
            &current,
        )
        .await
        .map_err(ClusterError::api(format!(
            "restoring the template of `{deployment}`"
        )))?;
    // The restored template is Helm's to change again at the next upgrade (cluster::ownership).
    ownership::hand_back(&deployments, deployment, &[ownership::ROLLBACK])
        .await
        .map_err(ClusterError::api(format!(
            "handing the template of `{deployment}` back to Helm"
        )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::driver::HelmTarget;
    use crate::helm::revision::tests::rev;
    use crate::helm::storage::ReleaseStatus::*;
    use std::path::PathBuf;

    fn component() -> Component {
        crate::settings::file::default_components().remove(1)
    }

    fn helm() -> HelmTarget {
        HelmTarget {
            program: PathBuf::from("helm"),
            namespace: "default".into(),
            kube_context: "c".into(),
            kubeconfig: None,
            in_cluster: false,
        }
    }

    #[test]
    fn the_default_plan_returns_to_the_last_good_revision() {
        let plan = helm_plan(
            &component(),
            &[rev(1, Superseded), rev(2, Failed), rev(3, Deployed)],
            None,
            &helm(),
        )
        .unwrap();
        assert_eq!(
            (plan.current_revision, plan.target_revision),
            (Some(3), Some(1))
        );
        assert!(
            matches!(&plan.steps[0], Step::Helm { command, .. } if command.starts_with("helm rollback problemsolver-webhook 1 "))
        );
    }

    #[test]
    fn a_pending_release_must_be_unstuck_first() {
        let error = helm_plan(
            &component(),
            &[rev(1, Deployed), rev(2, PendingUpgrade)],
            None,
            &helm(),
        )
        .unwrap_err();
        assert!(error.hints()[0].contains("--unstick"));
    }

    #[test]
    fn a_pending_revision_is_deleted_only_as_planned_and_once_old_enough() {
        let labels: std::collections::BTreeMap<String, String> =
            [("status".to_owned(), "pending-upgrade".to_owned())].into();
        let old = Some(PENDING_MIN_AGE);
        let young = Some(Duration::from_secs(30));
        assert_eq!(
            may_delete_pending("pending-upgrade", Some(&labels), old, false),
            Ok(())
        );
        let refused =
            may_delete_pending("pending-upgrade", Some(&labels), young, false).unwrap_err();
        assert!(refused.contains("30s ago"), "{refused}");
        assert_eq!(
            may_delete_pending("pending-upgrade", Some(&labels), young, true),
            Ok(())
        );
        let deployed: std::collections::BTreeMap<String, String> =
            [("status".to_owned(), "deployed".to_owned())].into();
        let changed =
            may_delete_pending("pending-upgrade", Some(&deployed), old, true).unwrap_err();
        assert!(changed.contains("now `deployed`"), "{changed}");
    }

    #[test]
    fn unstick_deletes_the_pending_revision_then_reapplies_the_last_good_one() {
        let plan = unstick_plan(
            &component(),
            &[rev(1, Superseded), rev(2, Deployed), rev(3, PendingUpgrade)],
            &helm(),
        )
        .unwrap();
        assert_eq!(plan.target_revision, Some(2));
        assert!(
            matches!(&plan.steps[0], Step::DeleteRevision { secret, revision: 3, .. } if secret == "sh.helm.release.v1.problemsolver-webhook.v3")
        );
        assert!(
            matches!(&plan.steps[1], Step::Helm { command, .. } if command.starts_with("helm rollback problemsolver-webhook 2 "))
        );
        let text = plan.render_table(&Style::PLAIN);
        assert!(text.contains("1. delete Secret sh.helm.release.v1.problemsolver-webhook.v3 (revision 3, pending-upgrade)"), "{text}");
    }

    #[test]
    fn unstick_of_a_first_install_uninstalls_and_refuses_healthy_releases() {
        let plan = unstick_plan(&component(), &[rev(1, PendingInstall)], &helm()).unwrap();
        assert!(
            matches!(&plan.steps[1], Step::Helm { command, .. } if command.starts_with("helm uninstall problemsolver-webhook"))
        );
        assert!(
            unstick_plan(&component(), &[rev(1, Deployed)], &helm())
                .unwrap_err()
                .error()
                .to_string()
                .contains("is not stuck")
        );
    }

    #[test]
    fn undo_picks_the_previous_replica_set_revision() {
        let rs = |name: &str, revision: &str| {
            serde_json::from_value::<ReplicaSet>(serde_json::json!({"metadata": {"name": name, "annotations": {REVISION_ANNOTATION: revision}}})).unwrap()
        };
        let sets = [
            rs("a", "1"),
            rs("b", "3"),
            rs("c", "4"),
            rs("d", "not-a-number"),
        ];
        let (chosen, revision) = undo_target(Some("4"), &sets).unwrap();
        assert_eq!((chosen.metadata.name.as_deref(), revision), (Some("b"), 3));
        assert!(undo_target(Some("1"), &sets).is_none());
        assert!(undo_target(None, &sets).is_none());
    }
}
