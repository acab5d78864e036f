//! Pure pod-status assembly: phase from the container states and restart policy, and the four
//! pod conditions with lastTransitionTime carried over while their status holds.

use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The pod phase for these container statuses under `restart_policy`.
pub fn phase(restart_policy: &str, statuses: &[ContainerStatus]) -> &'static str {
    if statuses.is_empty() {
        return "Pending";
    }
    let never_ran = |status: &ContainerStatus| {
        status.restart_count == 0
            && status
                .last_state
                .as_ref()
                .and_then(|state| state.terminated.as_ref())
                .is_none()
            && status
                .state
                .as_ref()
                .is_none_or(|state| state.waiting.is_some())
    };
    if statuses.iter().any(never_ran) {
        return "Pending";
    }
    let terminated: Vec<i32> = statuses
        .iter()
        .filter_map(|status| {
            status
                .state
                .as_ref()?
                .terminated
                .as_ref()
                .map(|terminated| terminated.exit_code)
        })
        .collect();
    if terminated.len() == statuses.len() {
        let all_ok = terminated.iter().all(|code| *code == 0);
        return match (restart_policy, all_ok) {
            (_, true) if restart_policy != "Always" => "Succeeded",
            ("Never", false) => "Failed",
            _ => "Running",
        };
    }
    "Running"
}

fn condition(
    previous: Option<&PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let carried = previous
        .and_then(|previous| previous.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        last_transition_time: Some(carried.unwrap_or(Time(now))),
        reason: reason.map(str::to_owned),
        message: None,
        last_probe_time: None,
        // Set only under the PodObservedGenerationTracking feature gate, off by default in 1.33.
        observed_generation: None,
    }
}

/// Conditions PodScheduled, Initialized, ContainersReady and Ready (in that order).
pub fn conditions(
    previous: Option<&PodStatus>,
    statuses: &[ContainerStatus],
    now: Timestamp,
) -> Vec<PodCondition> {
    let all_ready = !statuses.is_empty() && statuses.iter().all(|status| status.ready);
    let reason = (!all_ready).then_some("ContainersNotReady");
    vec![
        condition(previous, "PodScheduled", true, None, now),
        condition(previous, "Initialized", true, None, now),
        condition(previous, "ContainersReady", all_ready, reason, now),
        condition(previous, "Ready", all_ready, reason, now),
    ]
}

/// `status.reason` of a pod the kubelet evicted.
pub const EVICTED: &str = "Evicted";

/// The status a kubelet eviction leaves: phase `Failed`, reason `Evicted` and the eviction
/// message, the `DisruptionTarget` condition (`TerminationByKubelet`), `Ready` and
/// `ContainersReady` false (`PodFailed`), and the killed containers' `statuses`; addresses
/// and start time as they were. The pod object stays until someone deletes it.
pub fn evicted(
    previous: &PodStatus,
    statuses: Vec<ContainerStatus>,
    message: &str,
    now: Timestamp,
) -> PodStatus {
    let mut conditions = vec![
        condition(Some(previous), "PodScheduled", true, None, now),
        condition(Some(previous), "Initialized", true, None, now),
        condition(
            Some(previous),
            "ContainersReady",
            false,
            Some("PodFailed"),
            now,
        ),
        condition(Some(previous), "Ready", false, Some("PodFailed"), now),
    ];
    let mut disruption = condition(
        Some(previous),
        "DisruptionTarget",
        true,
        Some("TerminationByKubelet"),
        now,
    );
    disruption.message = Some(message.to_owned());
    conditions.push(disruption);
    PodStatus {
        phase: Some("Failed".to_owned()),
        reason: Some(EVICTED.to_owned()),
        message: Some(message.to_owned()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        ..previous.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    };
    use k8s_openapi::jiff::SignedDuration;

    fn waiting(reason: &str, restarts: i32) -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.to_owned()),
                    message: None,
                }),
                ..ContainerState::default()
            }),
            restart_count: restarts,
            ..ContainerStatus::default()
        }
    }

    fn running(ready: bool) -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }),
            ready,
            ..ContainerStatus::default()
        }
    }

    fn terminated(code: i32) -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn phases() {
        assert_eq!(phase("Always", &[waiting("ErrImagePull", 0)]), "Pending");
        assert_eq!(
            phase("Always", &[waiting("CrashLoopBackOff", 3)]),
            "Running"
        );
        assert_eq!(phase("Always", &[running(false)]), "Running");
        assert_eq!(phase("Never", &[terminated(0)]), "Succeeded");
        assert_eq!(phase("Never", &[terminated(2)]), "Failed");
        assert_eq!(
            phase("OnFailure", &[terminated(0), terminated(0)]),
            "Succeeded"
        );
        assert_eq!(
            phase("Always", &[running(true), waiting("ContainerCreating", 0)]),
            "Pending"
        );
    }

    #[test]
    fn ready_follows_containers_and_transition_time_is_kept_while_unchanged() {
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(100);
        let t1 = t0 + SignedDuration::from_secs(50);
        let first = conditions(None, &[running(false)], t0);
        let ready = first.iter().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("ContainersNotReady"))
        );
        let previous = PodStatus {
            conditions: Some(first),
            ..PodStatus::default()
        };
        let again = conditions(Some(&previous), &[running(false)], t1);
        let ready = again.iter().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!(
            ready.last_transition_time.as_ref().map(|time| time.0),
            Some(t0)
        );
        let now_ready = conditions(Some(&previous), &[running(true)], t1);
        let ready = now_ready
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(
            (
                ready.status.as_str(),
                ready.last_transition_time.as_ref().map(|time| time.0)
            ),
            ("True", Some(t1))
        );
        let types: Vec<&str> = now_ready.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        );
    }

    #[test]
    fn an_evicted_pod_is_failed_with_the_kubelet_s_reason_and_condition() {
        let before = PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some("172.18.0.5".to_owned()),
            conditions: Some(conditions(None, &[running(true)], Timestamp::UNIX_EPOCH)),
            ..PodStatus::default()
        };
        let killed = ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some("Error".to_owned()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let message = "The node was low on resource: memory. ";
        let now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(60);
        let after = evicted(&before, vec![killed], message, now);
        assert_eq!(after.phase.as_deref(), Some("Failed"));
        assert_eq!(after.reason.as_deref(), Some("Evicted"));
        assert_eq!(after.message.as_deref(), Some(message));
        assert_eq!(after.pod_ip.as_deref(), Some("172.18.0.5"));
        let find = |type_: &str| {
            after
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == type_)
                .cloned()
                .unwrap()
        };
        let ready = find("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("PodFailed"))
        );
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        // Unchanged conditions keep their transition time.
        assert_eq!(
            find("PodScheduled").last_transition_time,
            Some(Time(Timestamp::UNIX_EPOCH))
        );
        let disruption = find("DisruptionTarget");
        assert_eq!(
            (
                disruption.status.as_str(),
                disruption.reason.as_deref(),
                disruption.message.as_deref()
            ),
            ("True", Some("TerminationByKubelet"), Some(message))
        );
        assert_eq!(
            after.container_statuses.unwrap()[0]
                .state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            137
        );
    }
}
