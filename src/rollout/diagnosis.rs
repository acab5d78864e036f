//! Rollout diagnosis: a pure verdict over recorded Deployment, ReplicaSet, Pod and Event states.
//!
//! The tracker feeds it snapshots as watches report changes; it answers "done", "still going"
//! or "failed, and here is why" as soon as the cluster already says so, instead of waiting out
//! a timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// Annotation the Deployment controller stamps on a Deployment and its ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// Everything the verdict looks at, recorded at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub deployment: Option<Deployment>,
    pub replica_sets: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    pub events: Vec<Event>,
    pub now: Timestamp,
    /// How long the tracker has been watching the change being judged.
    pub watched: Duration,
}

/// Why a rollout failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// `ErrImagePull`, `ImagePullBackOff` or `InvalidImageName` (the exact reason is in `detail`).
    ImagePull,
    CrashLoopBackOff,
    CreateContainerConfigError,
    OomKilled,
    ReadinessTimeout,
    ProgressDeadlineExceeded,
    DeploymentMissing,
    /// A container of the new ReplicaSet restarted after the rollout completed, during the hold.
    Restarted,
    /// A pod of the new ReplicaSet that was ready stayed unready past [`READINESS_LOSS_GRACE`]
    /// during the hold.
    ReadinessLost,
}

/// The failure explained: what, where, and the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    pub reason: FailureReason,
    /// The Kubernetes reason string as reported (e.g. `ImagePullBackOff`).
    pub detail: String,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub message: String,
    /// Recent events of the pod (or Deployment), oldest first: `Reason: message`.
    pub events: Vec<String>,
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.detail)?;
        if let Some(pod) = &self.pod {
            write!(f, " in pod {pod}")?;
        }
        if let Some(container) = &self.container {
            write!(f, " (container {container})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Progress figures of a rollout still under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub desired: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// Pods of older revisions still present.
    pub old: i32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Verdict {
    Progressing(Progress),
    Complete(Progress),
    Failed(Diagnosis),
}

/// Decides the state of the rollout of `snapshot.deployment`.
pub fn assess(snapshot: &Snapshot) -> Verdict {
    let Some(deployment) = &snapshot.deployment else {
        return Verdict::Failed(Diagnosis {
            reason: FailureReason::DeploymentMissing,
            detail: "DeploymentMissing".into(),
            pod: None,
            container: None,
            message: "the release did not create its Deployment".into(),
            events: Vec::new(),
        });
    };
    // Nothing is judged until the controller has seen the current spec: before that, the
    // revision annotation, the status and the "new" ReplicaSet all describe the previous
    // generation, and its pods' troubles are not the new rollout's (as `kubectl rollout status`).
    let generation = deployment.metadata.generation.unwrap_or(0);
    let observed = deployment
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    if observed < generation {
        return Verdict::Progressing(Progress {
            desired: deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            updated: 0,
            ready: 0,
            available: 0,
            old: 0,
            message: format!(
                "waiting for the Deployment controller to observe generation {generation} (observed {observed})"
            ),
        });
    }
    let new_pods = new_replica_set_pods(snapshot);

    // Pod-level failures first: they are the precise reason behind a stalled Deployment.
    for pod in &new_pods {
        if let Some(diagnosis) = pod_failure(pod) {
            return Verdict::Failed(with_events(diagnosis, &snapshot.events));
        }
    }

    let spec_replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    // The controller keeps `ProgressDeadlineExceeded` until the Deployment makes progress, and
    // judges the deadline from the last progress of any rollout: a rollback onto an existing
    // ReplicaSet right after a rollout that exceeded its deadline is declared timed out at its
    // first sync, before it could progress. The condition is this change's verdict only once
    // the change has been watched for the deadline itself.
    let deadline = deployment
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .and_then(|seconds| u64::try_from(seconds).ok())
        .unwrap_or(600);
    if let Some(condition) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) && snapshot.watched >= Duration::from_secs(deadline)
    {
        let diagnosis = Diagnosis {
            reason: FailureReason::ProgressDeadlineExceeded,
            detail: "ProgressDeadlineExceeded".into(),
            pod: new_pods.first().and_then(|p| p.metadata.name.clone()),
            container: None,
            message: condition.message.clone().unwrap_or_default(),
            events: Vec::new(),
        };
        return Verdict::Failed(with_events(diagnosis, &snapshot.events));
    }

    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let progress = |message: String| Progress {
        desired: spec_replicas,
        updated,
        ready,
        available,
        old: (total - updated).max(0),
        message,
    };
    if updated < spec_replicas {
        return Verdict::Progressing(progress(format!(
            "{updated} of {spec_replicas} new replicas updated"
        )));
    }
    if total > updated {
        return Verdict::Progressing(progress(format!(
            "{} old replicas pending termination",
            total - updated
        )));
    }
    if available < updated {
        return Verdict::Progressing(progress(format!(
            "{available} of {updated} updated replicas available"
        )));
    }
    Verdict::Complete(progress(format!(
        "{updated} of {spec_replicas} replicas updated and available"
    )))
}

/// How long a pod of the new ReplicaSet may stay unready during the hold before the release is
/// judged failing: a readiness probe that fails a few periods in a row (a slow dependency, a
/// garbage-collection pause) is not yet a bad release.
pub const READINESS_LOSS_GRACE: Duration = Duration::from_secs(10);

/// The watch after a complete rollout (`psctl deploy --hold`): a release whose pods crash or
/// stop being ready a few seconds after they first served is as bad as one that never started,
/// but `kubectl rollout status` and `helm --wait` have already said "complete" by then.
///
/// Remembers, per container of each new pod, the restart count when the pod was first seen
/// during the hold, and since when each pod has been unready. Pure: judged on snapshots, timed
/// by [`Snapshot::watched`].
#[derive(Debug, Default)]
pub struct Hold {
    restarts: BTreeMap<(String, String), i32>,
    unready_since: BTreeMap<String, Duration>,
}

impl Hold {
    /// The failure, if any, this snapshot shows since the hold began: a container of a new pod
    /// that restarted, or a new pod unready for longer than `grace`. A pod that appears during
    /// the hold (the ReplicaSet replacing an evicted one) is remembered from its first sight.
    pub fn judge(&mut self, snapshot: &Snapshot, grace: Duration) -> Option<Diagnosis> {
        let new_pods = new_replica_set_pods(snapshot);
        for pod in &new_pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref());
            for container in statuses.into_iter().flatten() {
                let key = (name.clone(), container.name.clone());
                let first = *self.restarts.entry(key).or_insert(container.restart_count);
                if container.restart_count > first {
                    let last = container
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref());
                    let exit = last
                        .map(|t| {
                            let reason = t.reason.as_deref().unwrap_or("exited");
                            format!(" (last exit code {}, {reason})", t.exit_code)
                        })
                        .unwrap_or_default();
                    let restarts = container.restart_count - first;
                    return Some(with_events(
                        Diagnosis {
                            reason: FailureReason::Restarted,
                            detail: "Restarted".to_owned(),
                            pod: Some(name),
                            container: Some(container.name.clone()),
                            message: format!(
                                "restarted {restarts} time(s) after the rollout completed{exit}"
                            ),
                            events: Vec::new(),
                        },
                        &snapshot.events,
                    ));
                }
            }
            if is_ready(pod) {
                self.unready_since.remove(&name);
                continue;
            }
            let since = *self
                .unready_since
                .entry(name.clone())
                .or_insert(snapshot.watched);
            if snapshot.watched.saturating_sub(since) >= grace {
                let container = statuses
                    .into_iter()
                    .flatten()
                    .find(|c| !c.ready)
                    .map(|c| c.name.clone());
                return Some(with_events(
                    Diagnosis {
                        reason: FailureReason::ReadinessLost,
                        detail: "ReadinessLost".to_owned(),
                        pod: Some(name),
                        container,
                        message: format!(
                            "unready for {}s after the rollout completed",
                            snapshot.watched.saturating_sub(since).as_secs()
                        ),
                        events: Vec::new(),
                    },
                    &snapshot.events,
                ));
            }
        }
        None
    }
}

/// The pod's `Ready` condition is `True`.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The live pods of the Deployment's new ReplicaSet: the one owned by the Deployment whose
/// revision annotation is the Deployment's, matched by controller ownerReference and by its
/// `pod-template-hash`. Pods of older ReplicaSets, pods being deleted and pods that ended
/// (`Failed`, e.g. evicted, or `Succeeded`; the ReplicaSet replaces them) are left out.
/// Meaningful only once `status.observedGeneration` has caught up with `metadata.generation`.
pub fn new_replica_set_pods(snapshot: &Snapshot) -> Vec<&Pod> {
    let Some(deployment) = &snapshot.deployment else {
        return Vec::new();
    };
    let Some(revision) = annotation(&deployment.metadata, REVISION_ANNOTATION) else {
        return Vec::new();
    };
    let new_sets: Vec<&ReplicaSet> = snapshot
        .replica_sets
        .iter()
        .filter(|rs| owned_by(&rs.metadata, deployment.metadata.uid.as_deref()))
        .filter(|rs| annotation(&rs.metadata, REVISION_ANNOTATION) == Some(revision))
        .collect();
    snapshot
        .pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| !has_ended(pod))
        .filter(|pod| new_sets.iter().any(|rs| belongs_to(pod, rs)))
        .collect()
}

/// Label the Deployment controller puts on a ReplicaSet and its pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// A pod in phase `Failed` or `Succeeded`: its containers will not run again.
pub fn has_ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded")
    )
}

/// `pod` is controlled by `rs` (by uid when both are known, else by name) and carries its
/// `pod-template-hash`, when the ReplicaSet has one.
fn belongs_to(pod: &Pod, rs: &ReplicaSet) -> bool {
    let owned = pod.metadata.owner_references.iter().flatten().any(|owner| {
        owner.kind == "ReplicaSet"
            && match (&rs.metadata.uid, owner.uid.as_str()) {
                (Some(uid), owner_uid) if !owner_uid.is_empty() => uid == owner_uid,
                _ => rs.metadata.name.as_deref() == Some(owner.name.as_str()),
            }
    });
    let hash = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH))
            .cloned()
    };
    owned
        && match hash(&rs.metadata) {
            Some(expected) => hash(&pod.metadata).as_deref() == Some(expected.as_str()),
            None => true,
        }
}

/// Why one pod is failing (a container crash-looping, unable to pull or start, or
/// OOM-killed), or `None`. Pure.
///
/// A container that runs but is not ready is not failing: a readiness probe's
/// `failureThreshold` only takes a ready container out of service, and a slow starter (caches to
/// warm, a database still migrating) is unready for as long as it needs. Kubernetes calls such a
/// rollout failed at the Deployment's `progressDeadlineSeconds` (`ProgressDeadlineExceeded`,
/// judged in [`assess`]), and so does psctl.
pub fn pod_failure(pod: &Pod) -> Option<Diagnosis> {
    let name = pod.metadata.name.clone();
    let status = pod.status.as_ref()?;
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in statuses {
        if let Some(diagnosis) = container_failure(container) {
            return Some(Diagnosis {
                pod: name,
                ..diagnosis
            });
        }
    }
    None
}

fn container_failure(container: &ContainerStatus) -> Option<Diagnosis> {
    let fail = |reason: FailureReason, detail: &str, message: String| Diagnosis {
        reason,
        detail: detail.to_owned(),
        pod: None,
        container: Some(container.name.clone()),
        message,
        events: Vec::new(),
    };
    if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) {
        let message = waiting.message.clone().unwrap_or_default();
        match waiting.reason.as_deref() {
            Some(
                detail @ ("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
                | "ErrImageNeverPull"),
            ) => {
                return Some(fail(FailureReason::ImagePull, detail, message));
            }
            Some("CrashLoopBackOff") => {
                // The last termination says more than "back-off restarting".
                let last = container
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref());
                if last.and_then(|t| t.reason.as_deref()) == Some("OOMKilled") {
                    return Some(fail(
                        FailureReason::OomKilled,
                        "OOMKilled",
                        "the container exceeded its memory limit (crash-looping)".into(),
                    ));
                }
                let exit = last
                    .map(|t| format!("last exit code {}; ", t.exit_code))
                    .unwrap_or_default();
                return Some(fail(
                    FailureReason::CrashLoopBackOff,
                    "CrashLoopBackOff",
                    format!("{exit}{message}"),
                ));
            }
            Some(
                detail @ ("CreateContainerConfigError"
                | "CreateContainerError"
                | "RunContainerError"),
            ) => {
                return Some(fail(
                    FailureReason::CreateContainerConfigError,
                    detail,
                    message,
                ));
            }
            _ => {}
        }
    }
    let terminated_oom = [container.state.as_ref(), container.last_state.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.terminated.as_ref())
        .any(|t| t.reason.as_deref() == Some("OOMKilled"));
    if terminated_oom {
        return Some(fail(
            FailureReason::OomKilled,
            "OOMKilled",
            "the container exceeded its memory limit".into(),
        ));
    }
    None
}

pub fn with_events(mut diagnosis: Diagnosis, events: &[Event]) -> Diagnosis {
    let mut relevant: Vec<&Event> = events
        .iter()
        .filter(|e| match &diagnosis.pod {
            Some(pod) => e.involved_object.name.as_deref() == Some(pod.as_str()),
            None => e.involved_object.kind.as_deref() == Some("Deployment"),
        })
        .collect();
    relevant.sort_by_key(|e| event_time(e));
    diagnosis.events = relevant
        .iter()
        .rev()
        .take(8)
        .rev()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.as_deref().unwrap_or("?"),
                e.message.as_deref().unwrap_or("").trim()
            )
        })
        .collect();
    diagnosis
}

fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: Option<&str>,
) -> bool {
    match uid {
        Some(uid) => meta.owner_references.iter().flatten().any(|o| o.uid == uid),
        // Without a uid (a recorded fixture), trust the label selector that fetched it.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + seconds).unwrap()
    }

    fn deployment(replicas: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "problemsolver-webhook", "uid": "d-1", "generation": 2,
                         "annotations": {REVISION_ANNOTATION: "2"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "problemsolver-webhook"}},
                     "template": {"metadata": {}, "spec": {"containers": []}}},
            "status": status,
        }))
        .unwrap()
    }

    fn replica_set(name: &str, revision: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {REVISION_ANNOTATION: revision},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "problemsolver-webhook", "uid": "d-1"}]},
        }))
        .unwrap()
    }

    fn pod(name: &str, rs: &str, container_status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("uid-{rs}")}]},
            "spec": {"containers": [{"name": "worker", "image": "x",
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8001}, "periodSeconds": 5, "failureThreshold": 3}}]},
            "status": {"containerStatuses": [container_status]},
        }))
        .unwrap()
    }

    fn waiting(reason: &str, message: &str) -> serde_json::Value {
        json!({"name": "worker", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
               "state": {"waiting": {"reason": reason, "message": message}}})
    }

    fn event(pod: &str, reason: &str, message: &str, second: i64) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{pod}.{second}")},
            "involvedObject": {"kind": "Pod", "name": pod},
            "reason": reason, "message": message, "lastTimestamp": at(second).to_string(),
        }))
        .unwrap()
    }

    fn rolling(status: serde_json::Value, pods: Vec<Pod>) -> Snapshot {
        Snapshot {
            deployment: Some(deployment(2, status)),
            replica_sets: vec![replica_set("web-old", "1"), replica_set("web-new", "2")],
            pods,
            events: Vec::new(),
            now: at(100),
            watched: Duration::from_secs(600),
        }
    }

    const MID_ROLLOUT: fn() -> serde_json::Value = || json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2});

    #[test]
    fn image_pull_back_off_fails_fast_with_events() {
        let mut snapshot = rolling(
            MID_ROLLOUT(),
            vec![pod(
                "web-new-a",
                "web-new",
                waiting(
                    "ImagePullBackOff",
                    "Back-off pulling image \"x:does-not-exist\"",
                ),
            )],
        );
        snapshot.events = vec![
            event("web-new-a", "BackOff", "Back-off pulling image", 20),
            event(
                "web-new-a",
                "Failed",
                "Failed to pull image: manifest unknown",
                10,
            ),
            event("other", "Failed", "unrelated", 15),
        ];
        let Verdict::Failed(diagnosis) = assess(&snapshot) else {
            panic!("expected failure")
        };
        assert_eq!(diagnosis.reason, FailureReason::ImagePull);
        assert_eq!(
            diagnosis.to_string(),
            "ImagePullBackOff in pod web-new-a (container worker): Back-off pulling image \"x:does-not-exist\""
        );
        assert_eq!(
            diagnosis.events,
            [
                "Failed: Failed to pull image: manifest unknown",
                "BackOff: Back-off pulling image"
            ]
        );
    }

    #[test]
    fn old_pods_in_trouble_do_not_fail_the_new_rollout() {
        let snapshot = rolling(
            MID_ROLLOUT(),
            vec![pod("web-old-a", "web-old", waiting("CrashLoopBackOff", ""))],
        );
        assert!(matches!(assess(&snapshot), Verdict::Progressing(_)));
    }

    #[test]
    fn crash_loop_reports_the_last_exit_code_and_oom_is_named() {
        let mut crash = waiting(
            "CrashLoopBackOff",
            "back-off 20s restarting failed container",
        );
        crash["lastState"] = json!({"terminated": {"exitCode": 101, "reason": "Error"}});
        let snapshot = rolling(
            MID_ROLLOUT(),
            vec![pod("web-new-a", "web-new", crash.clone())],
        );
        let Verdict::Failed(diagnosis) = assess(&snapshot) else {
            panic!()
        };
        assert_eq!(diagnosis.reason, FailureReason::CrashLoopBackOff);
        assert!(
            diagnosis.message.starts_with("last exit code 101;"),
            "{}",
            diagnosis.message
        );

        crash["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}});
        let snapshot = rolling(MID_ROLLOUT(), vec![pod("web-new-a", "web-new", crash)]);
        let Verdict::Failed(diagnosis) = assess(&snapshot) else {
            panic!()
        };
        assert_eq!(diagnosis.reason, FailureReason::OomKilled);
    }

    #[test]
    fn config_errors_fail_fast() {
        let snapshot = rolling(
            MID_ROLLOUT(),
            vec![pod(
                "web-new-a",
                "web-new",
                waiting(
                    "CreateContainerConfigError",
                    "couldn't find key BINANCE_API_KEY in Secret default/problemsolver-secrets",
                ),
            )],
        );
        let Verdict::Failed(diagnosis) = assess(&snapshot) else {
            panic!()
        };
        assert_eq!(diagnosis.reason, FailureReason::CreateContainerConfigError);
    }

    #[test]
    fn a_pod_running_unready_is_progressing_until_the_progress_deadline() {
        // Its probe (period 5s, failureThreshold 3) has failed for 95s: a slow starter looks
        // the same, so only the Deployment's progress deadline ends the wait.
        let running = json!({"name": "worker", "image": "x", "imageID": "", "ready": false,
                             "restartCount": 0, "state": {"running": {"startedAt": at(5).to_string()}}});
        let snapshot = rolling(MID_ROLLOUT(), vec![pod("web-new-a", "web-new", running)]);
        assert!(matches!(assess(&snapshot), Verdict::Progressing(_)));
    }

    #[test]
    fn progress_deadline_exceeded_is_a_failure() {
        let status = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet \"web-new\" has timed out progressing."}]});
        let Verdict::Failed(diagnosis) = assess(&rolling(status, Vec::new())) else {
            panic!()
        };
        assert_eq!(diagnosis.reason, FailureReason::ProgressDeadlineExceeded);
    }

    #[test]
    fn a_deadline_exceeded_before_the_change_was_watched_that_long_is_not_its_verdict() {
        // A rollback onto the previous ReplicaSet inherits the failed rollout's condition.
        let status = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet \"web-old\" has timed out progressing."}]});
        let mut snapshot = rolling(status, Vec::new());
        snapshot
            .deployment
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .progress_deadline_seconds = Some(300);
        snapshot.watched = Duration::from_secs(3);
        assert!(matches!(assess(&snapshot), Verdict::Progressing(_)));
        snapshot.watched = Duration::from_secs(300);
        assert!(matches!(
            assess(&snapshot),
            Verdict::Failed(Diagnosis {
                reason: FailureReason::ProgressDeadlineExceeded,
                ..
            })
        ));
    }

    #[test]
    fn completion_needs_every_replica_updated_available_and_old_ones_gone() {
        let steps = [
            (json!({"observedGeneration": 1}), false),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}),
                false,
            ),
            (
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                false,
            ),
            (
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
                true,
            ),
        ];
        for (status, complete) in steps {
            let verdict = assess(&rolling(status.clone(), Vec::new()));
            assert_eq!(
                matches!(verdict, Verdict::Complete(_)),
                complete,
                "{status} → {verdict:?}"
            );
        }
    }

    /// A Deployment whose spec moved to generation 3 while the controller still reports
    /// generation 2: the revision annotation, the status and the ReplicaSets are the previous
    /// rollout's.
    fn lagging(status: serde_json::Value, pods: Vec<Pod>) -> Snapshot {
        let mut snapshot = rolling(status, pods);
        snapshot.deployment.as_mut().unwrap().metadata.generation = Some(3);
        snapshot
    }

    #[test]
    fn nothing_is_judged_before_the_controller_observes_the_new_generation() {
        // The previous rollout's new ReplicaSet is crash-looping: not the new spec's fault.
        let crash = pod(
            "web-new-a",
            "web-new",
            waiting("CrashLoopBackOff", "back-off 40s"),
        );
        let Verdict::Progressing(progress) = assess(&lagging(MID_ROLLOUT(), vec![crash.clone()]))
        else {
            panic!("a stale generation must not fail")
        };
        assert_eq!(
            progress.message,
            "waiting for the Deployment controller to observe generation 3 (observed 2)"
        );
        // The previous generation's ProgressDeadlineExceeded neither.
        let deadline = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet \"web-new\" has timed out progressing."}]});
        assert!(matches!(
            assess(&lagging(deadline.clone(), Vec::new())),
            Verdict::Progressing(_)
        ));
        // Nor is the previous generation's completed status a success.
        let complete = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
            "readyReplicas": 2, "availableReplicas": 2});
        assert!(matches!(
            assess(&lagging(complete.clone(), Vec::new())),
            Verdict::Progressing(_)
        ));
        // Once observed, the same states are judged.
        let mut observed = json!({"observedGeneration": 3});
        for (key, value) in complete.as_object().unwrap() {
            if key != "observedGeneration" {
                observed[key] = value.clone();
            }
        }
        let mut snapshot = lagging(observed, Vec::new());
        assert!(matches!(assess(&snapshot), Verdict::Complete(_)));
        snapshot.pods = vec![crash];
        assert!(matches!(
            assess(&snapshot),
            Verdict::Failed(Diagnosis {
                reason: FailureReason::CrashLoopBackOff,
                ..
            })
        ));
        let mut deadline = deadline;
        deadline["observedGeneration"] = json!(3);
        assert!(matches!(
            assess(&lagging(deadline, Vec::new())),
            Verdict::Failed(Diagnosis {
                reason: FailureReason::ProgressDeadlineExceeded,
                ..
            })
        ));
    }

    /// ReplicaSets and pods as the controller makes them: uids, `pod-template-hash` labels.
    fn hashed_replica_set(name: &str, hash: &str, revision: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"),
                         "labels": {POD_TEMPLATE_HASH: hash},
                         "annotations": {REVISION_ANNOTATION: revision},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "problemsolver-webhook", "uid": "d-1"}]},
        }))
        .unwrap()
    }

    fn hashed_pod(name: &str, rs: &str, hash: &str, status: serde_json::Value) -> Pod {
        let mut pod = pod(name, rs, waiting("ContainerCreating", ""));
        pod.metadata.labels = Some([(POD_TEMPLATE_HASH.to_owned(), hash.to_owned())].into());
        pod.status = Some(serde_json::from_value(status).unwrap());
        pod
    }

    #[test]
    fn only_pods_of_the_new_replica_set_are_judged() {
        let crashing = json!({"phase": "Running",
            "containerStatuses": [waiting("CrashLoopBackOff", "back-off 20s")]});
        let evicted = json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory.",
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]});
        let snapshot = |pods: Vec<Pod>| Snapshot {
            deployment: Some(deployment(2, MID_ROLLOUT())),
            replica_sets: vec![
                hashed_replica_set("web-6d4f8", "6d4f8", "1"),
                hashed_replica_set("web-7c9b2", "7c9b2", "2"),
            ],
            pods,
            events: Vec::new(),
            now: at(100),
            watched: Duration::from_secs(600),
        };
        // The previous ReplicaSet's crash-looping pod and an evicted pod of the new one: still
        // progressing, and neither is the pod the timeout would name.
        let old = hashed_pod("web-6d4f8-a", "web-6d4f8", "6d4f8", crashing.clone());
        let gone = hashed_pod("web-7c9b2-b", "web-7c9b2", "7c9b2", evicted);
        let quiet = snapshot(vec![old.clone(), gone]);
        assert!(matches!(assess(&quiet), Verdict::Progressing(_)));
        assert!(new_replica_set_pods(&quiet).is_empty());
        // A pod naming the new ReplicaSet but carrying another template's hash is not its pod.
        let stray = hashed_pod("web-7c9b2-c", "web-7c9b2", "6d4f8", crashing.clone());
        assert!(matches!(
            assess(&snapshot(vec![stray])),
            Verdict::Progressing(_)
        ));
        // The new ReplicaSet's own crash-looping pod fails the rollout.
        let new = hashed_pod("web-7c9b2-d", "web-7c9b2", "7c9b2", crashing);
        let Verdict::Failed(diagnosis) = assess(&snapshot(vec![old, new])) else {
            panic!("the new ReplicaSet's crash loop must fail")
        };
        assert_eq!(diagnosis.pod.as_deref(), Some("web-7c9b2-d"));
    }

    #[test]
    fn a_missing_deployment_is_a_failure() {
        let verdict = assess(&Snapshot::default());
        assert!(matches!(
            verdict,
            Verdict::Failed(Diagnosis {
                reason: FailureReason::DeploymentMissing,
                ..
            })
        ));
    }

    /// A pod of `rs` whose one container has restarted `restarts` times and is (un)ready.
    fn serving(name: &str, rs: &str, restarts: i32, ready: bool) -> Pod {
        let mut status = json!({"name": "worker", "image": "x", "imageID": "", "ready": ready,
            "restartCount": restarts, "state": {"running": {}}});
        if restarts > 0 {
            status["lastState"] = json!({"terminated": {"exitCode": 2, "reason": "Error"}});
        }
        let mut pod = pod(name, rs, status);
        let condition = if ready { "True" } else { "False" };
        pod.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({"type": "Ready", "status": condition})).unwrap(),
        ]);
        pod
    }

    const COMPLETE: fn() -> serde_json::Value = || json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});

    fn held(pods: Vec<Pod>, second: u64) -> Snapshot {
        Snapshot {
            watched: Duration::from_secs(second),
            ..rolling(COMPLETE(), pods)
        }
    }

    #[test]
    fn the_hold_fails_a_new_container_that_restarts_after_the_rollout_completed() {
        let grace = READINESS_LOSS_GRACE;
        let mut hold = Hold::default();
        let steady = || {
            vec![
                serving("web-new-a", "web-new", 0, true),
                serving("web-new-b", "web-new", 0, true),
                serving("web-old-a", "web-old", 0, true),
            ]
        };
        assert_eq!(hold.judge(&held(steady(), 30), grace), None);
        // An old pod's restart is not the release's.
        let mut pods = steady();
        pods[2] = serving("web-old-a", "web-old", 3, true);
        assert_eq!(hold.judge(&held(pods, 31), grace), None);
        // Crashed after serving, restarted, and already ready again: still a failure.
        let mut pods = steady();
        pods[1] = serving("web-new-b", "web-new", 1, true);
        let diagnosis = hold.judge(&held(pods, 52), grace).expect("a restart fails");
        assert_eq!(diagnosis.reason, FailureReason::Restarted);
        assert_eq!(
            diagnosis.to_string(),
            "Restarted in pod web-new-b (container worker): restarted 1 time(s) after the rollout completed (last exit code 2, Error)"
        );
    }

    #[test]
    fn the_hold_counts_restarts_from_when_it_first_saw_a_pod() {
        let mut hold = Hold::default();
        // Restarted once while the rollout was under way, and stable since: the rollout's
        // own verdict judged that; the hold judges what happens after.
        let once = || vec![serving("web-new-a", "web-new", 1, true)];
        assert_eq!(hold.judge(&held(once(), 30), READINESS_LOSS_GRACE), None);
        assert_eq!(hold.judge(&held(once(), 60), READINESS_LOSS_GRACE), None);
        // A replacement pod first seen during the hold starts from its own count.
        let replaced = vec![
            serving("web-new-a", "web-new", 1, true),
            serving("web-new-c", "web-new", 2, true),
        ];
        assert_eq!(hold.judge(&held(replaced, 61), READINESS_LOSS_GRACE), None);
    }

    #[test]
    fn the_hold_fails_a_pod_unready_past_the_grace_but_not_a_short_flap() {
        let grace = READINESS_LOSS_GRACE;
        let mut hold = Hold::default();
        let ready = || vec![serving("web-new-a", "web-new", 0, true)];
        let unready = || vec![serving("web-new-a", "web-new", 0, false)];
        assert_eq!(hold.judge(&held(ready(), 30), grace), None);
        assert_eq!(hold.judge(&held(unready(), 31), grace), None);
        assert_eq!(hold.judge(&held(unready(), 40), grace), None);
        // Ready again before the grace ran out: the clock starts over.
        assert_eq!(hold.judge(&held(ready(), 41), grace), None);
        assert_eq!(hold.judge(&held(unready(), 42), grace), None);
        assert_eq!(hold.judge(&held(unready(), 51), grace), None);
        let diagnosis = hold
            .judge(&held(unready(), 52), grace)
            .expect("unready for the whole grace fails");
        assert_eq!(diagnosis.reason, FailureReason::ReadinessLost);
        assert_eq!(diagnosis.container.as_deref(), Some("worker"));
        assert_eq!(
            diagnosis.message,
            "unready for 10s after the rollout completed"
        );
    }
}
