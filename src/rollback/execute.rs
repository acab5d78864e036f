//! Runs a rollback plan. The loop is written over [`RollbackBackend`], so which steps need
//! their rollout tracked (a Helm rollback or a restored template, not an uninstall) and where a
//! failure stops are tested with a fake; [`KubeRollback`] is the one backend over Helm and the
//! cluster: the release Secret deleted exactly as read (preconditions on resourceVersion and
//! uid), the pod template replaced under its resourceVersion and handed back to Helm, the
//! rollout tracked with watches.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};

use super::plan::{self, Mode, RollbackPlan, Step};
use crate::cluster::{ClusterError, ownership};
use crate::error::CommandError;
use crate::helm::driver::{HelmCommand, HelmTarget};
use crate::helm::storage::read_revisions;
use crate::output::{CheckState, Output};
use crate::rollout::diagnosis::REVISION_ANNOTATION;
use crate::rollout::report::{outcome_summary, report_outcome};
use crate::rollout::track::{self, Target};
use crate::settings::{Component, Environment};

/// The edges of a rollback.
pub trait RollbackBackend {
    /// Runs one Helm command of the plan.
    fn helm(&self, run: &HelmCommand) -> impl Future<Output = Result<(), CommandError>>;
    /// Deletes the release Secret of an unfinished revision, if it is still as planned.
    fn delete_revision(
        &self,
        secret: &str,
        status: &str,
    ) -> impl Future<Output = Result<(), CommandError>>;
    /// Puts the pod template of ReplicaSet revision `to_revision` back on `deployment`.
    fn restore_template(
        &self,
        deployment: &str,
        to_revision: &str,
    ) -> impl Future<Output = Result<(), CommandError>>;
    /// Watches the component's rollout to its verdict; an incomplete one is an error.
    fn track(&self) -> impl Future<Output = Result<(), CommandError>>;
}

/// Runs every step in order, then tracks the rollout when a step changed what runs. `Ok(false)`:
/// nothing rolled out (the release was uninstalled).
pub async fn execute(
    backend: &impl RollbackBackend,
    plan: &RollbackPlan,
    output: &Output,
) -> Result<bool, CommandError> {
    let mut needs_tracking = false;
    for step in &plan.steps {
        match step {
            Step::Helm { run, .. } => {
                backend.helm(run).await?;
                needs_tracking = run.args.first().map(String::as_str) == Some("rollback");
                output.check(CheckState::Ok, "helm", &run.display());
            }
            Step::DeleteRevision { secret, status, .. } => {
                backend.delete_revision(secret, status).await?;
                output.check(CheckState::Ok, "unfinished revision removed", secret);
            }
            Step::RestoreTemplate {
                deployment,
                to_revision,
                ..
            } => {
                backend.restore_template(deployment, to_revision).await?;
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
    backend.track().await?;
    Ok(true)
}

/// The plan of `mode` from what the cluster holds now, and when the incident began (the
/// current Helm revision's deployment; unknown for `--undo`).
pub async fn read_plan(
    client: &kube::Client,
    environment: &Environment,
    component: &Component,
    mode: Mode,
    helm: &HelmTarget,
) -> Result<(RollbackPlan, Option<i64>), CommandError> {
    if mode == Mode::Undo {
        return Ok((read_undo_plan(client, environment, component).await?, None));
    }
    let history = read_revisions(
        client,
        &environment.namespace,
        std::slice::from_ref(&component.release),
    )
    .await?;
    let plan = match mode {
        Mode::Helm(wanted) => plan::helm_plan(component, &history, wanted, helm)?,
        _ => plan::unstick_plan(component, &history, helm)?,
    };
    Ok((plan, plan::incident_start(&history)))
}

/// The `--undo` plan from what the cluster holds now.
async fn read_undo_plan(
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
    plan::undo_plan(component, &deployment, list.items)
}

/// [`RollbackBackend`] over Helm and the cluster.
pub struct KubeRollback<'a> {
    pub client: &'a kube::Client,
    pub environment: &'a Environment,
    pub component: &'a Component,
    pub timeout: Duration,
    /// `--force`: recover a pending revision younger than [`plan::PENDING_MIN_AGE`].
    pub force: bool,
    pub output: &'a Output,
}

impl RollbackBackend for KubeRollback<'_> {
    async fn helm(&self, run: &HelmCommand) -> Result<(), CommandError> {
        run.run().await?;
        Ok(())
    }

    async fn delete_revision(&self, secret: &str, status: &str) -> Result<(), CommandError> {
        let secrets: Api<Secret> =
            Api::namespaced(self.client.clone(), &self.environment.namespace);
        // Read again under the Lease, and delete exactly what was read: a precondition on its
        // resourceVersion and uid makes the API server refuse (409) if anyone rewrote or
        // replaced the Secret since.
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
            plan::may_delete_pending(status, object.metadata.labels.as_ref(), age, self.force)
        {
            return Err(CommandError::usage(anyhow::anyhow!(
                "not deleting release Secret `{secret}`: {problem}"
            ))
            .hint("check `psctl history` and `helm status`; nothing was changed")
            .hint(format!(
                "once no Helm operation runs on the release, `psctl rollback {} --unstick --force` recovers it anyway",
                self.component.name
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
        Ok(())
    }

    async fn restore_template(
        &self,
        deployment: &str,
        to_revision: &str,
    ) -> Result<(), CommandError> {
        let namespace = &self.environment.namespace;
        let replica_sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let list = replica_sets
            .list(&ListParams::default().labels(&self.component.selector))
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
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
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

    async fn track(&self) -> Result<(), CommandError> {
        let component = self.component;
        let target = Target {
            namespace: self.environment.namespace.clone(),
            deployment: component.deployment.clone(),
            selector: component.selector.clone(),
        };
        let outcome = track::track(self.client, &target, self.timeout, self.output).await?;
        report_outcome(
            self.output,
            &format!("rollout {}", component.deployment),
            &outcome,
        );
        if outcome.is_complete() {
            Ok(())
        } else {
            Err(CommandError::verification(anyhow::anyhow!(
                "the rollback of `{}` did not roll out: {}",
                component.name,
                outcome_summary(&outcome)
            ))
            .hint("a human must look now: `psctl status`, then `psctl rollback <component> --to-rev <N>` or `psctl kill-switch on`"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::helm::revision::tests::rev;
    use crate::helm::storage::ReleaseStatus::*;
    use crate::output::{Format, Style};
    use crate::rollback::plan::tests::{component, helm};

    /// Logs every call; fails the one named.
    #[derive(Default)]
    struct Fake {
        calls: RefCell<Vec<String>>,
        fail: Option<&'static str>,
    }

    impl Fake {
        fn call(&self, call: String) -> Result<(), CommandError> {
            let failing = self.fail.is_some_and(|f| call.starts_with(f));
            self.calls.borrow_mut().push(call);
            if failing {
                Err(CommandError::usage(anyhow::anyhow!("refused")))
            } else {
                Ok(())
            }
        }
    }

    impl RollbackBackend for Fake {
        async fn helm(&self, run: &HelmCommand) -> Result<(), CommandError> {
            self.call(format!("helm {}", run.args[..2].join(" ")))
        }
        async fn delete_revision(&self, secret: &str, status: &str) -> Result<(), CommandError> {
            self.call(format!("delete {secret} {status}"))
        }
        async fn restore_template(&self, deployment: &str, to: &str) -> Result<(), CommandError> {
            self.call(format!("restore {deployment} {to}"))
        }
        async fn track(&self) -> Result<(), CommandError> {
            self.call("track".to_owned())
        }
    }

    #[tokio::test]
    async fn an_unstick_deletes_then_rolls_back_and_tracks_the_rollout() {
        let plan = plan::unstick_plan(
            &component(),
            &[rev(1, Deployed), rev(2, PendingUpgrade)],
            &helm(),
        )
        .unwrap();
        let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
        let fake = Fake::default();
        assert!(execute(&fake, &plan, &output).await.unwrap());
        assert_eq!(
            *fake.calls.borrow(),
            [
                "delete sh.helm.release.v1.problemsolver-webhook.v2 pending-upgrade",
                "helm rollback problemsolver-webhook",
                "track",
            ]
        );
    }

    #[tokio::test]
    async fn an_uninstalled_first_install_has_nothing_to_track() {
        let plan = plan::unstick_plan(&component(), &[rev(1, PendingInstall)], &helm()).unwrap();
        let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
        let fake = Fake::default();
        assert!(!execute(&fake, &plan, &output).await.unwrap());
        assert_eq!(
            fake.calls.borrow().last().unwrap(),
            "helm uninstall problemsolver-webhook"
        );
    }

    #[tokio::test]
    async fn a_refused_deletion_stops_before_helm_runs() {
        let plan = plan::unstick_plan(
            &component(),
            &[rev(1, Deployed), rev(2, PendingUpgrade)],
            &helm(),
        )
        .unwrap();
        let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
        let fake = Fake {
            fail: Some("delete"),
            ..Fake::default()
        };
        assert!(execute(&fake, &plan, &output).await.is_err());
        assert_eq!(fake.calls.borrow().len(), 1);
    }

    #[tokio::test]
    async fn a_restored_template_is_tracked() {
        let plan = RollbackPlan {
            component: "webhook".into(),
            release: "problemsolver-webhook".into(),
            mode: "undo".into(),
            current_revision: Some(4),
            target_revision: Some(3),
            steps: vec![Step::RestoreTemplate {
                deployment: "problemsolver-webhook".into(),
                from_revision: "4".into(),
                to_revision: "3".into(),
            }],
        };
        let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
        let fake = Fake::default();
        assert!(execute(&fake, &plan, &output).await.unwrap());
        assert_eq!(
            *fake.calls.borrow(),
            ["restore problemsolver-webhook 3", "track"]
        );
    }
}
