//! Cluster checks: every current pod of a component Ready and none restarting. The verdict is a
//! pure function of the pod and ReplicaSet lists ([`judge_pods`]); only [`pods_ready`] talks to
//! the API server. Pods a real cluster leaves around are not judged: pods that ended (`Failed`,
//! e.g. evicted or after a node shutdown, or `Succeeded`) and pods of a Deployment's older
//! ReplicaSets (still terminating after a rollout).

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

use super::{Outcome, pod_selector};
use crate::cluster::describe;
use crate::rollout::diagnosis::{REVISION_ANNOTATION, has_ended};
use crate::settings::Component;

/// Lists the component's pods (narrowed by `pods`) and judges them.
pub async fn pods_ready(
    client: &kube::Client,
    namespace: &str,
    component: &Component,
    pods: Option<&str>,
    restart_window: Duration,
) -> Outcome {
    let selector = pod_selector(component, pods);
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list,
        Err(error @ kube::Error::Api(_)) if !super::server_error(&error) => {
            return Outcome::fail(format!(
                "listing pods `{selector}` in `{namespace}`: {}",
                describe(&error)
            ));
        }
        Err(error) => {
            return Outcome::unreachable(format!(
                "the API server is unreachable (listing pods `{selector}`): {}",
                describe(&error)
            ));
        }
    };
    // ReplicaSets carry their Deployment's template labels, so the same selector finds them.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let replica_sets = match replica_sets
        .list(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list.items,
        Err(error @ kube::Error::Api(_)) if !super::server_error(&error) => {
            return Outcome::fail(format!(
                "listing ReplicaSets `{selector}` in `{namespace}`: {}",
                describe(&error)
            ));
        }
        Err(error) => {
            return Outcome::unreachable(format!(
                "the API server is unreachable (listing ReplicaSets `{selector}`): {}",
                describe(&error)
            ));
        }
    };
    judge_pods(
        &list.items,
        &replica_sets,
        &selector,
        namespace,
        Timestamp::now(),
        restart_window,
    )
}

/// Names (uids when known) of the ReplicaSets that are not their Deployment's newest revision.
fn old_replica_sets(replica_sets: &[ReplicaSet]) -> Vec<&ReplicaSet> {
    let revision = |rs: &ReplicaSet| -> Option<u64> {
        rs.metadata
            .annotations
            .as_ref()?
            .get(REVISION_ANNOTATION)?
            .parse()
            .ok()
    };
    let deployment = |rs: &ReplicaSet| -> Option<String> {
        rs.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Deployment" && o.controller == Some(true))
            .map(|o| o.uid.clone())
    };
    replica_sets
        .iter()
        .filter(|rs| {
            let (Some(owner), Some(mine)) = (deployment(rs), revision(rs)) else {
                return false;
            };
            replica_sets.iter().any(|other| {
                deployment(other).as_deref() == Some(owner.as_str())
                    && revision(other).is_some_and(|theirs| theirs > mine)
            })
        })
        .collect()
}

/// True when `pod` is controlled by one of `replica_sets`.
fn owned_by_any(pod: &Pod, replica_sets: &[&ReplicaSet]) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "ReplicaSet")
        .any(|o| {
            replica_sets
                .iter()
                .any(|rs| rs.metadata.uid.as_deref() == Some(o.uid.as_str()))
        })
}

/// Pass when there is at least one current pod (not terminating, not ended, not of an older
/// ReplicaSet of its Deployment), every one is Ready and none has a container waiting in a
/// failure state or restarted within `restart_window`. Pure.
pub fn judge_pods(
    pods: &[Pod],
    replica_sets: &[ReplicaSet],
    selector: &str,
    namespace: &str,
    now: Timestamp,
    restart_window: Duration,
) -> Outcome {
    let old = old_replica_sets(replica_sets);
    let not_terminating: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let ended = not_terminating.iter().filter(|p| has_ended(p)).count();
    let of_old = not_terminating
        .iter()
        .filter(|p| !has_ended(p) && owned_by_any(p, &old))
        .count();
    let live: Vec<&Pod> = not_terminating
        .into_iter()
        .filter(|p| !has_ended(p) && !owned_by_any(p, &old))
        .collect();
    let left_out = match (ended, of_old) {
        (0, 0) => String::new(),
        (ended, 0) => format!(" ({ended} ended pod(s) not judged)"),
        (0, old) => format!(" ({old} pod(s) of older ReplicaSets not judged)"),
        (ended, old) => {
            format!(" ({ended} ended pod(s) and {old} pod(s) of older ReplicaSets not judged)")
        }
    };
    if live.is_empty() {
        return Outcome::fail(format!(
            "no running pods match `{selector}` in namespace `{namespace}`{left_out}: is the release deployed, or scaled to zero (`psctl kill-switch off`)?"
        ));
    }
    let mut problems = Vec::new();
    let mut restarts_total = 0;
    for pod in &live {
        let name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let mut why = Vec::new();
        for container in status.container_statuses.iter().flatten() {
            restarts_total += container.restart_count;
            if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref())
                && let Some(reason) = &waiting.reason
                && reason != "ContainerCreating"
            {
                why.push(format!("container `{}` {reason}", container.name));
            }
            if container.restart_count > 0
                && let Some(finished) = container
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.finished_at.as_ref())
            {
                let ago = now.duration_since(finished.0).as_secs();
                if ago >= 0 && (ago as u64) < restart_window.as_secs() {
                    let reason = container
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| {
                            format!(
                                "{} (exit code {})",
                                t.reason.as_deref().unwrap_or("terminated"),
                                t.exit_code
                            )
                        })
                        .unwrap_or_default();
                    why.push(format!(
                        "container `{}` restarted {} time(s), last {ago}s ago: {reason}",
                        container.name, container.restart_count
                    ));
                }
            }
        }
        if !ready {
            let phase = status.phase.as_deref().unwrap_or("Unknown");
            why.insert(0, format!("not Ready (phase {phase})"));
        }
        if !why.is_empty() {
            problems.push(format!("pod `{name}` {}", why.join(", ")));
        }
    }
    if problems.is_empty() {
        Outcome::pass(format!(
            "{n}/{n} pods Ready, {restarts_total} restart(s) in total, none in the last {}s{left_out}",
            restart_window.as_secs(),
            n = live.len()
        ))
    } else {
        Outcome::fail(format!(
            "{}{left_out}; see `kubectl describe pod` and `kubectl logs --previous`",
            problems.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, restarts: i32, last_finished: Option<&str>) -> Pod {
        let mut container = serde_json::json!({
            "name": "service", "image": "x", "imageID": "", "ready": ready,
            "restartCount": restarts, "state": {"running": {}},
        });
        if let Some(at) = last_finished {
            container["lastState"] = serde_json::json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": at}});
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                       "containerStatuses": [container]},
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    const WINDOW: Duration = Duration::from_secs(600);

    #[test]
    fn ready_pods_without_recent_restarts_pass() {
        let pods = [
            pod("a", true, 0, None),
            pod("b", true, 2, Some("2026-11-23T10:00:00Z")),
        ];
        let outcome = judge_pods(&pods, &[], "app=x", "default", now(), WINDOW);
        assert_eq!(
            outcome,
            Outcome::pass("2/2 pods Ready, 2 restart(s) in total, none in the last 600s")
        );
    }

    #[test]
    fn a_recent_restart_or_an_unready_pod_fails_by_name() {
        let pods = [
            pod("a", true, 3, Some("2026-11-23T11:58:00Z")),
            pod("b", false, 0, None),
        ];
        let outcome = judge_pods(&pods, &[], "app=x", "default", now(), WINDOW);
        assert_eq!(outcome.verdict, super::super::Verdict::Fail);
        assert!(
            outcome.evidence.contains(
                "pod `a` container `service` restarted 3 time(s), last 120s ago: Error (exit code 1)"
            ),
            "{}",
            outcome.evidence
        );
        assert!(
            outcome
                .evidence
                .contains("pod `b` not Ready (phase Running)"),
            "{}",
            outcome.evidence
        );
    }

    #[test]
    fn no_pods_is_a_failure_that_says_where_it_looked() {
        let outcome = judge_pods(&[], &[], "app=x", "apps", now(), WINDOW);
        assert!(!outcome.unreachable);
        assert!(
            outcome
                .evidence
                .starts_with("no running pods match `app=x` in namespace `apps`:"),
            "{}",
            outcome.evidence
        );
    }

    #[test]
    fn crash_looping_containers_are_named() {
        let mut crashing = pod("c", false, 5, None);
        let status = crashing.status.as_mut().unwrap();
        status.container_statuses.as_mut().unwrap()[0].state = Some(
            serde_json::from_value(serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}))
                .unwrap(),
        );
        let outcome = judge_pods(&[crashing], &[], "app=x", "default", now(), WINDOW);
        assert!(
            outcome.evidence.contains(
                "pod `c` not Ready (phase Running), container `service` CrashLoopBackOff"
            ),
            "{}",
            outcome.evidence
        );
    }

    fn replica_set(name: &str, deployment: &str, revision: &str) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"),
                         "annotations": {REVISION_ANNOTATION: revision},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                                              "uid": format!("uid-{deployment}"), "controller": true}]},
        }))
        .unwrap()
    }

    fn owned(mut pod: Pod, rs: &str) -> Pod {
        pod.metadata.owner_references = Some(vec![
            serde_json::from_value(
                serde_json::json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": rs, "uid": format!("uid-{rs}"), "controller": true}),
            )
            .unwrap(),
        ]);
        pod
    }

    #[test]
    fn evicted_and_completed_pods_are_not_judged() {
        let mut evicted = pod("web-b", false, 0, None);
        let status = evicted.status.as_mut().unwrap();
        status.phase = Some("Failed".into());
        status.reason = Some("Evicted".into());
        status.container_statuses.as_mut().unwrap()[0].state = Some(
            serde_json::from_value(serde_json::json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown"}}))
                .unwrap(),
        );
        let mut completed = pod("web-c", false, 0, None);
        completed.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let pods = [pod("web-a", true, 0, None), evicted.clone(), completed];
        let outcome = judge_pods(&pods, &[], "app=x", "default", now(), WINDOW);
        assert_eq!(
            outcome,
            Outcome::pass(
                "1/1 pods Ready, 0 restart(s) in total, none in the last 600s (2 ended pod(s) not judged)"
            )
        );
        // Only ended pods left: there is nothing running, and the evidence says why.
        let outcome = judge_pods(&[evicted], &[], "app=x", "default", now(), WINDOW);
        assert_eq!(outcome.verdict, super::super::Verdict::Fail);
        assert!(
            outcome
                .evidence
                .contains("in namespace `default` (1 ended pod(s) not judged)"),
            "{}",
            outcome.evidence
        );
    }

    #[test]
    fn pods_of_older_replica_sets_are_not_judged_but_the_new_ones_are() {
        let replica_sets = [
            replica_set("web-old", "web", "4"),
            replica_set("web-new", "web", "5"),
            // Another Deployment's only ReplicaSet (the canary) is current whatever its number.
            replica_set("web-canary-1", "web-canary", "1"),
        ];
        let old_unready = owned(pod("web-old-a", false, 0, None), "web-old");
        let new_ready = owned(pod("web-new-a", true, 0, None), "web-new");
        let canary_ready = owned(pod("web-canary-1-a", true, 0, None), "web-canary-1");
        let outcome = judge_pods(
            &[old_unready, new_ready.clone(), canary_ready],
            &replica_sets,
            "app=x",
            "default",
            now(),
            WINDOW,
        );
        assert_eq!(
            outcome,
            Outcome::pass(
                "2/2 pods Ready, 0 restart(s) in total, none in the last 600s (1 pod(s) of older ReplicaSets not judged)"
            )
        );
        let new_unready = owned(pod("web-new-b", false, 0, None), "web-new");
        let outcome = judge_pods(
            &[new_ready, new_unready],
            &replica_sets,
            "app=x",
            "default",
            now(),
            WINDOW,
        );
        assert!(
            outcome
                .evidence
                .starts_with("pod `web-new-b` not Ready (phase Running)"),
            "{}",
            outcome.evidence
        );
    }
}
