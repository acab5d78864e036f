//! Rollout diagnosis: a pure verdict over recorded Deployment, ReplicaSet, Pod and Event states.
//!
//! The tracker feeds it snapshots as watches report changes; it answers "done", "still going"
//! or "failed, and here is why" as soon as the cluster already says so, instead of waiting out
//! a timeout.

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
}

/// Tunables of the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a running container may stay unready beyond what its probe needs.
    pub readiness_slack: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            readiness_slack: Duration::from_secs(30),
        }
    }
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
pub fn assess(snapshot: &Snapshot, policy: &Policy) -> Verdict {
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
    let revision = annotation(&deployment.metadata, REVISION_ANNOTATION);
    let new_rs_names: Vec<&str> = snapshot
        .replica_sets
        .iter()
        .filter(|rs| owned_by(&rs.metadata, deployment.metadata.uid.as_deref()))
        .filter(|rs| {
            revision.is_some() && annotation(&rs.metadata, REVISION_ANNOTATION) == revision
        })
        .filter_map(|rs| rs.metadata.name.as_deref())
        .collect();
    let new_pods: Vec<&Pod> = snapshot
        .pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| new_rs_names.contains(&owner.name.as_str()))
        })
        .collect();

    // Pod-level failures first: they are the precise reason behind a stalled Deployment.
    for pod in &new_pods {
        if let Some(diagnosis) = pod_failure(pod, snapshot.now, policy) {
            return Verdict::Failed(with_events(diagnosis, &snapshot.events));
        }
    }

    let spec_replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    if let Some(condition) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
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
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Verdict::Progressing(progress(
            "waiting for the Deployment controller to observe the new spec".into(),
        ));
    }
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

/// Why one pod is failing (a container crash-looping, unable to pull or start, OOM-killed, or
/// running unready past its probe's grace), or `None`. Pure.
pub fn pod_failure(pod: &Pod, now: Timestamp, policy: &Policy) -> Option<Diagnosis> {
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
    // Running but never ready past what its readiness probe needs.
    for container in status.container_statuses.iter().flatten() {
        if container.ready {
            continue;
        }
        let Some(started) = container
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
        else {
            continue;
        };
        let grace = readiness_grace(pod, &container.name) + policy.readiness_slack;
        let unready_for = Duration::from_secs(
            u64::try_from(now.as_second() - started.0.as_second()).unwrap_or(0),
        );
        if unready_for > grace {
            return Some(Diagnosis {
                reason: FailureReason::ReadinessTimeout,
                detail: "ReadinessTimeout".into(),
                pod: name,
                container: Some(container.name.clone()),
                message: format!(
                    "running for {}s without becoming ready (grace {}s)",
                    unready_for.as_secs(),
                    grace.as_secs()
                ),
                events: Vec::new(),
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

/// How long the readiness probe of `container` may legitimately take to pass.
fn readiness_grace(pod: &Pod, container: &str) -> Duration {
    let probe = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.readiness_probe.as_ref());
    let Some(probe) = probe else {
        return Duration::ZERO;
    };
    let secs = |v: Option<i32>, default: i32| u64::try_from(v.unwrap_or(default)).unwrap_or(0);
    let initial = secs(probe.initial_delay_seconds, 0);
    let period = secs(probe.period_seconds, 10);
    let failures = secs(probe.failure_threshold, 3);
    Duration::from_secs(initial + period * failures)
}

fn with_events(mut diagnosis: Diagnosis, events: &[Event]) -> Diagnosis {
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
        let Verdict::Failed(diagnosis) = assess(&snapshot, &Policy::default()) else {
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
        assert!(matches!(
            assess(&snapshot, &Policy::default()),
            Verdict::Progressing(_)
        ));
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
        let Verdict::Failed(diagnosis) = assess(&snapshot, &Policy::default()) else {
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
        let Verdict::Failed(diagnosis) = assess(&snapshot, &Policy::default()) else {
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
        let Verdict::Failed(diagnosis) = assess(&snapshot, &Policy::default()) else {
            panic!()
        };
        assert_eq!(diagnosis.reason, FailureReason::CreateContainerConfigError);
    }

    #[test]
    fn readiness_failing_past_its_grace_fails_but_not_before() {
        let running = |started: i64| {
            json!({"name": "worker", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                   "state": {"running": {"startedAt": at(started).to_string()}}})
        };
        // Probe needs 5s*3 = 15s, plus 30s slack: 45s.
        let snapshot = rolling(
            MID_ROLLOUT(),
            vec![pod("web-new-a", "web-new", running(60))],
        );
        assert!(matches!(
            assess(&snapshot, &Policy::default()),
            Verdict::Progressing(_)
        ));
        let snapshot = rolling(
            MID_ROLLOUT(),
            vec![pod("web-new-a", "web-new", running(50))],
        );
        let Verdict::Failed(diagnosis) = assess(&snapshot, &Policy::default()) else {
            panic!()
        };
        assert_eq!(diagnosis.reason, FailureReason::ReadinessTimeout);
        assert_eq!(
            diagnosis.message,
            "running for 50s without becoming ready (grace 45s)"
        );
    }

    #[test]
    fn progress_deadline_exceeded_is_a_failure() {
        let status = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet \"web-new\" has timed out progressing."}]});
        let Verdict::Failed(diagnosis) = assess(&rolling(status, Vec::new()), &Policy::default())
        else {
            panic!()
        };
        assert_eq!(diagnosis.reason, FailureReason::ProgressDeadlineExceeded);
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
            let verdict = assess(&rolling(status.clone(), Vec::new()), &Policy::default());
            assert_eq!(
                matches!(verdict, Verdict::Complete(_)),
                complete,
                "{status} → {verdict:?}"
            );
        }
    }

    #[test]
    fn a_missing_deployment_is_a_failure() {
        let verdict = assess(&Snapshot::default(), &Policy::default());
        assert!(matches!(
            verdict,
            Verdict::Failed(Diagnosis {
                reason: FailureReason::DeploymentMissing,
                ..
            })
        ));
    }
}
