//! Rollback plans, as values: back to a Helm revision (default: the last one deployed
//! successfully), back to the Deployment's previous ReplicaSet (`--undo`), or out of a release
//! stuck in `pending-*` (`--unstick`); what is printed after acting, and the audit note. All
//! pure: the cluster is read by the caller.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use serde::Serialize;

use crate::audit::note::AuditNote;
use crate::error::{CommandError, ExitStatus};
use crate::helm::driver::{HelmCommand, HelmTarget};
use crate::helm::revision;
use crate::helm::storage::{self, Revision};
use crate::output::{Render, Style};
use crate::recovery::{self, Verification};
use crate::rollout::diagnosis::REVISION_ANNOTATION;
use crate::settings::Component;

/// What a rollback returns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A Helm revision: the one named, or the last good one.
    Helm(Option<u32>),
    /// The Deployment's previous ReplicaSet.
    Undo,
    /// Out of a pending revision.
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

#[derive(Debug, Clone, PartialEq, Serialize)]
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
pub fn helm_plan(
    component: &Component,
    history: &[Revision],
    wanted: Option<u32>,
    helm: &HelmTarget,
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
    helm: &HelmTarget,
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

/// The `--undo` plan from the Deployment and the ReplicaSets its selector lists: only those it
/// owns, on the stable track. Pure.
pub fn undo_plan(
    component: &Component,
    deployment: &Deployment,
    replica_sets: Vec<ReplicaSet>,
) -> Result<RollbackPlan, CommandError> {
    let uid = deployment.metadata.uid.clone();
    let owned: Vec<ReplicaSet> = replica_sets
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

/// Unix seconds of the current revision's last deployment: when the incident began. Pure.
pub fn incident_start(history: &[Revision]) -> Option<i64> {
    let current = revision::current(history)?;
    chrono::DateTime::parse_from_rfc3339(&current.updated)
        .ok()
        .map(|t| t.timestamp())
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

/// The audit outcome of a rollback: `failed` when it did not complete, `unverified` when it
/// rolled out but the service did not recover, `succeeded` otherwise. Pure.
pub fn outcome<T, E>(result: &Result<T, E>, verification: recovery::Status) -> &'static str {
    match (result, verification) {
        (Err(_), _) => "failed",
        (Ok(_), recovery::Status::Failed) => "unverified",
        (Ok(_), _) => "succeeded",
    }
}

/// The audit record of a rollback.
pub fn audit_note(
    plan: &RollbackPlan,
    component: &Component,
    outcome: &str,
    verification: recovery::Status,
) -> AuditNote {
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
            "verification": verification,
        }),
    }
}

/// Refuses to act on a plan the release has moved away from: `shown` was read (and shown, and
/// confirmed) before the deploy Lease was taken, `now` was read again under it. Another
/// operator's deploy or rollback in between would make `shown` roll back over their change.
/// Pure.
pub fn still_current(shown: &RollbackPlan, now: &RollbackPlan) -> Result<(), CommandError> {
    if shown == now {
        return Ok(());
    }
    let revision = |r: Option<u32>| r.map_or_else(|| "-".to_owned(), |r| r.to_string());
    Err(CommandError::usage(anyhow::anyhow!(
        "the release `{}` changed while the deploy lock was being taken: the plan shown went from revision {} to {}, the release now plans {} to {}; nothing was changed",
        shown.release,
        revision(shown.current_revision),
        revision(shown.target_revision),
        revision(now.current_revision),
        revision(now.target_revision),
    ))
    .hint("another operator deployed or rolled back meanwhile: `psctl history` shows what runs now; run the rollback again to see its new plan"))
}

/// The command's result once the rollback rolled out: the verification's exit status, with
/// an error that says what did not recover. Pure.
pub fn verdict(
    component: &Component,
    status: ExitStatus,
    failures: &str,
) -> Result<ExitStatus, CommandError> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::helm::driver::HelmTarget;
    use crate::helm::revision::tests::rev;
    use crate::helm::storage::ReleaseStatus::*;
    use std::path::PathBuf;

    /// The webhook component of the default settings.
    pub(crate) fn component() -> Component {
        crate::settings::file::default_components().remove(1)
    }

    /// A Helm target for plans (nothing runs it).
    pub(crate) fn helm() -> HelmTarget {
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
    fn a_plan_the_release_moved_away_from_is_refused_under_the_lease() {
        let shown = helm_plan(
            &component(),
            &[rev(1, Superseded), rev(2, Superseded), rev(3, Deployed)],
            None,
            &helm(),
        )
        .unwrap();
        let same = helm_plan(
            &component(),
            &[rev(1, Superseded), rev(2, Superseded), rev(3, Deployed)],
            None,
            &helm(),
        )
        .unwrap();
        assert!(still_current(&shown, &same).is_ok());
        // Another operator deployed revision 4 between the plan and the Lease: rolling back to
        // 2 now would undo their deploy, not the one the operator saw.
        let moved = helm_plan(
            &component(),
            &[
                rev(1, Superseded),
                rev(2, Superseded),
                rev(3, Superseded),
                rev(4, Deployed),
            ],
            None,
            &helm(),
        )
        .unwrap();
        let error = still_current(&shown, &moved).unwrap_err();
        assert_eq!(error.status(), ExitStatus::Usage);
        assert_eq!(
            error.error().to_string(),
            "the release `problemsolver-webhook` changed while the deploy lock was being taken: the plan shown went from revision 3 to 2, the release now plans 4 to 3; nothing was changed"
        );
        assert!(error.hints()[0].contains("psctl history"));
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
