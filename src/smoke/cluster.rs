//! Cluster checks: every pod of a component Ready and none restarting. The verdict is a pure
//! function of the pod list ([`judge_pods`]); only [`pods_ready`] talks to the API server.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

use super::{Outcome, pod_selector};
use crate::cluster::describe;
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
    match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => judge_pods(
            &list.items,
            &selector,
            namespace,
            Timestamp::now(),
            restart_window,
        ),
        Err(error @ kube::Error::Api(_)) => Outcome::fail(format!(
            "listing pods `{selector}` in `{namespace}`: {}",
            describe(&error)
        )),
        Err(error) => Outcome::unreachable(format!(
            "the API server is unreachable (listing pods `{selector}`): {}",
            describe(&error)
        )),
    }
}

/// Pass when there is at least one (non-terminating) pod, every one is Ready and none has a
/// container waiting in a failure state or restarted within `restart_window`. Pure.
pub fn judge_pods(
    pods: &[Pod],
    selector: &str,
    namespace: &str,
    now: Timestamp,
    restart_window: Duration,
) -> Outcome {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    if live.is_empty() {
        return Outcome::fail(format!(
            "no pods match `{selector}` in namespace `{namespace}`: is the release deployed, or scaled to zero (`psctl kill-switch off`)?"
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
            "{n}/{n} pods Ready, {restarts_total} restart(s) in total, none in the last {}s",
            restart_window.as_secs(),
            n = live.len()
        ))
    } else {
        Outcome::fail(format!(
            "{}; see `kubectl describe pod` and `kubectl logs --previous`",
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
        let outcome = judge_pods(&pods, "app=x", "default", now(), WINDOW);
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
        let outcome = judge_pods(&pods, "app=x", "default", now(), WINDOW);
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
        let outcome = judge_pods(&[], "app=x", "apps", now(), WINDOW);
        assert!(!outcome.unreachable);
        assert!(
            outcome
                .evidence
                .starts_with("no pods match `app=x` in namespace `apps`"),
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
        let outcome = judge_pods(&[crashing], "app=x", "default", now(), WINDOW);
        assert!(
            outcome.evidence.contains(
                "pod `c` not Ready (phase Running), container `service` CrashLoopBackOff"
            ),
            "{}",
            outcome.evidence
        );
    }
}
