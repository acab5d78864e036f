//! `psctl uninstall`: remove a component's Helm release, the first half of the rollback
//! runbook's "uninstall and redeploy the pinned tag".
//!
//! The plan ([`plan`], pure) names the release, the Helm command, what runs now and the tag to
//! redeploy afterwards — recorded before anything is removed, because `helm uninstall` deletes
//! the release's history with it. [`execute`] runs Helm, then waits until the component's
//! Deployment and pods are gone, so the redeploy that follows starts from nothing.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::audit::note::AuditNote;
use crate::cluster::ClusterError;
use crate::error::CommandError;
use crate::helm::driver::{HelmCommand, HelmTarget};
use crate::helm::revision;
use crate::helm::storage::{ReleaseStatus, Revision};
use crate::output::{CheckState, Output, Render, Style};
use crate::settings::{Component, Environment};

/// What the release runs now, read from Helm's history before the uninstall deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Installed {
    pub revision: u32,
    pub status: String,
    pub image_tag: String,
    /// The newest revision before the current one that deployed successfully: the pinned tag to
    /// redeploy when the current one is the bad one.
    pub last_good_revision: Option<u32>,
    pub last_good_tag: Option<String>,
}

/// The `--dry-run -o json` document, and what `psctl uninstall -o json` prints after acting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UninstallPlan {
    pub environment: String,
    pub namespace: String,
    pub component: String,
    pub release: String,
    /// `None` when the release history could not be read (a dry run without a cluster).
    pub installed: Option<Installed>,
    /// The Helm command line, as run.
    pub command: String,
    #[serde(skip)]
    pub run: HelmCommand,
    /// What is waited for after Helm returns.
    pub wait_for: WaitFor,
    /// The command that brings the component back (the runbook's second half).
    pub redeploy: String,
}

/// The objects that must be gone before the uninstall counts as done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitFor {
    pub deployment: String,
    pub pods: String,
}

impl Render for UninstallPlan {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = format!(
            "uninstall plan for {} in `{}` (namespace {}): release {}\n",
            self.component, self.environment, self.namespace, self.release
        );
        match &self.installed {
            Some(installed) => {
                text.push_str(&format!(
                    "  now: revision {} ({}), image tag {}\n",
                    installed.revision, installed.status, installed.image_tag
                ));
                if let (Some(revision), Some(tag)) =
                    (installed.last_good_revision, &installed.last_good_tag)
                {
                    text.push_str(&format!(
                        "  last good before it: revision {revision}, image tag {tag}\n"
                    ));
                }
            }
            None => text.push_str("  now: unknown (the release history was not read)\n"),
        }
        text.push_str(&format!("  1. {}\n", self.command));
        text.push_str(&format!(
            "  2. wait until Deployment {} and pods {} are gone\n",
            self.wait_for.deployment, self.wait_for.pods
        ));
        text.push_str(&format!(
            "  the history is deleted with the release; bring it back with: {}\n",
            self.redeploy
        ));
        text
    }
}

/// Why an uninstall is refused before anything changes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error(
        "release `{release}` is not installed in namespace `{namespace}`: nothing to uninstall"
    )]
    NotInstalled { release: String, namespace: String },
    #[error(
        "`{environment}` is a production environment: uninstalling `{component}` stops it until it is deployed again"
    )]
    Production {
        environment: String,
        component: String,
    },
}

impl crate::error::Classify for Refusal {
    fn exit_status(&self) -> crate::error::ExitStatus {
        crate::error::ExitStatus::Usage
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Refusal::NotInstalled { .. } => {
                vec!["`psctl history <component>` lists what is installed".to_owned()]
            }
            Refusal::Production { component, .. } => vec![
                format!(
                    "prefer `psctl rollback {component}`, which keeps serving while it changes revision"
                ),
                "pass `--force-production` to uninstall anyway".to_owned(),
            ],
        }
    }
}

/// Refuses a production environment without `--force-production`. Pure.
pub fn guard_production(
    environment: &Environment,
    component: &Component,
    force_production: bool,
) -> Result<(), Refusal> {
    if environment.production && !force_production {
        return Err(Refusal::Production {
            environment: environment.name.clone(),
            component: component.name.clone(),
        });
    }
    Ok(())
}

/// The plan; `history` is the release's revisions (`None`: not read). Pure.
pub fn plan(
    environment: &Environment,
    component: &Component,
    helm: &HelmTarget,
    history: Option<&[Revision]>,
) -> Result<UninstallPlan, Refusal> {
    let installed = match history {
        None => None,
        Some(history) => {
            let Some(current) = revision::current(history) else {
                return Err(Refusal::NotInstalled {
                    release: component.release.clone(),
                    namespace: environment.namespace.clone(),
                });
            };
            let last_good = history
                .iter()
                .filter(|r| {
                    r.revision < current.revision
                        && matches!(
                            r.status,
                            ReleaseStatus::Deployed | ReleaseStatus::Superseded
                        )
                        && !r.image_tag.is_empty()
                })
                .max_by_key(|r| r.revision);
            Some(Installed {
                revision: current.revision,
                status: current.status.to_string(),
                image_tag: current.image_tag.clone(),
                last_good_revision: last_good.map(|r| r.revision),
                last_good_tag: last_good.map(|r| r.image_tag.clone()),
            })
        }
    };
    let tag = installed
        .as_ref()
        .and_then(|i| {
            i.last_good_tag
                .clone()
                .or_else(|| Some(i.image_tag.clone()))
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "<pinned-tag>".to_owned());
    let run = helm.uninstall(&component.release);
    Ok(UninstallPlan {
        environment: environment.name.clone(),
        namespace: environment.namespace.clone(),
        component: component.name.clone(),
        release: component.release.clone(),
        installed,
        command: run.display(),
        run,
        wait_for: WaitFor {
            deployment: component.deployment.clone(),
            pods: component.selector.clone(),
        },
        redeploy: format!(
            "psctl deploy --env {} --component {} --tag {tag}",
            environment.name, component.name
        ),
    })
}

/// The audit record of an uninstall (`outcome`: `succeeded` or `failed`).
pub fn audit_note(plan: &UninstallPlan, outcome: &str) -> AuditNote {
    AuditNote {
        action: "uninstall".to_owned(),
        target: plan.release.clone(),
        from_state: plan.installed.as_ref().map_or_else(
            || "unknown".to_owned(),
            |i| format!("revision {} ({})", i.revision, i.image_tag),
        ),
        to_state: "uninstalled".to_owned(),
        outcome: outcome.to_owned(),
        details: serde_json::json!({
            "component": plan.component,
            "image_tag": plan.installed.as_ref().map(|i| i.image_tag.clone()),
            "last_good_tag": plan.installed.as_ref().and_then(|i| i.last_good_tag.clone()),
        }),
    }
}

/// Runs Helm, then waits (up to `timeout`) until the Deployment and its pods are gone.
pub async fn execute(
    client: &kube::Client,
    environment: &Environment,
    plan: &UninstallPlan,
    timeout: Duration,
    output: &Output,
) -> Result<(), CommandError> {
    plan.run.run().await?;
    output.check(CheckState::Ok, "helm", &plan.command);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &environment.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &environment.namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let deployment = deployments
            .get_opt(&plan.wait_for.deployment)
            .await
            .map_err(ClusterError::api(format!(
                "reading Deployment `{}`",
                plan.wait_for.deployment
            )))?;
        let remaining = pods
            .list(&ListParams::default().labels(&plan.wait_for.pods))
            .await
            .map_err(ClusterError::api(format!(
                "listing pods `{}`",
                plan.wait_for.pods
            )))?
            .items
            .len();
        if deployment.is_none() && remaining == 0 {
            output.check(
                CheckState::Ok,
                "removed",
                &format!(
                    "Deployment {} and its pods are gone",
                    plan.wait_for.deployment
                ),
            );
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let still = match deployment {
                Some(_) => format!("Deployment {} still exists", plan.wait_for.deployment),
                None => format!("{remaining} pod(s) `{}` remain", plan.wait_for.pods),
            };
            return Err(CommandError::verification(anyhow::anyhow!(
                "Helm uninstalled `{}`, but after {}s {still}",
                plan.release,
                timeout.as_secs()
            ))
            .hint("pods may be slow to terminate (terminationGracePeriodSeconds); check `kubectl get pods` before redeploying"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::revision::tests::rev;
    use crate::helm::storage::ReleaseStatus::*;
    use std::path::{Path, PathBuf};

    fn environment(production: bool) -> Environment {
        let text = format!(
            "environments:\n  prod:\n    kube_context: c\n    namespace: apps\n    production: {production}\n"
        );
        crate::settings::file::parse(Path::new("psctl.yaml"), &text)
            .unwrap()
            .environments["prod"]
            .clone()
    }

    fn helm() -> HelmTarget {
        HelmTarget {
            program: PathBuf::from("helm"),
            namespace: "apps".into(),
            kube_context: "c".into(),
            kubeconfig: None,
            in_cluster: false,
        }
    }

    fn tagged(revision: u32, status: crate::helm::storage::ReleaseStatus, tag: &str) -> Revision {
        Revision {
            image_tag: tag.to_owned(),
            ..rev(revision, status)
        }
    }

    #[test]
    fn the_plan_records_what_runs_and_the_last_good_tag_before_the_history_goes() {
        let environment = environment(false);
        let component = environment.component("webhook").unwrap().clone();
        let history = [
            tagged(1, Superseded, "1.4.1"),
            tagged(2, Failed, "1.4.2"),
            tagged(3, Deployed, "1.4.3"),
        ];
        let plan = plan(&environment, &component, &helm(), Some(&history)).unwrap();
        assert_eq!(
            plan.installed,
            Some(Installed {
                revision: 3,
                status: "deployed".to_owned(),
                image_tag: "1.4.3".to_owned(),
                last_good_revision: Some(1),
                last_good_tag: Some("1.4.1".to_owned()),
            })
        );
        assert!(
            plan.command
                .starts_with("helm uninstall problemsolver-webhook --namespace apps"),
            "{}",
            plan.command
        );
        assert_eq!(
            plan.redeploy,
            "psctl deploy --env prod --component webhook --tag 1.4.1"
        );
        let text = plan.render_table(&Style::PLAIN);
        assert!(
            text.contains("last good before it: revision 1, image tag 1.4.1"),
            "{text}"
        );
        let note = audit_note(&plan, "succeeded");
        assert_eq!(note.from_state, "revision 3 (1.4.3)");
        assert_eq!(note.details["last_good_tag"], "1.4.1");
    }

    #[test]
    fn a_release_that_is_not_installed_is_refused_and_production_needs_force() {
        let environment = environment(false);
        let component = environment.component("poller").unwrap().clone();
        assert_eq!(
            plan(&environment, &component, &helm(), Some(&[])).unwrap_err(),
            Refusal::NotInstalled {
                release: "problemsolver-poller".to_owned(),
                namespace: "apps".to_owned(),
            }
        );
        // Without history (a dry run that could not read it) the tag is a placeholder.
        let blind = plan(&environment, &component, &helm(), None).unwrap();
        assert!(blind.redeploy.ends_with("--tag <pinned-tag>"));

        let production = self::environment(true);
        assert!(matches!(
            guard_production(&production, &component, false),
            Err(Refusal::Production { .. })
        ));
        assert_eq!(guard_production(&production, &component, true), Ok(()));
        assert_eq!(guard_production(&environment, &component, false), Ok(()));
    }
}
