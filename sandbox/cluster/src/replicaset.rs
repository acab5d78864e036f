//! Pure ReplicaSet controller decisions: which pods a ReplicaSet owns, which to delete first when
//! scaling down, the pods to create, and the ReplicaSet status. No I/O lives here.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rand::Rng;

use crate::deployment::SAFE_ALPHABET;
use crate::selector::selector_matches;

/// Whether a pod counts towards a ReplicaSet: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod's Ready condition last became True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == "Ready")?;
    if condition.status != "True" {
        return None;
    }
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map(|time| time.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Ready for at least `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => {
            now.duration_since(since) >= SignedDuration::from_secs(i64::from(min_ready_seconds))
        }
    }
}

/// Whether `owner_refs` names `uid` as controller.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|owner| owner.uid == uid && owner.controller == Some(true))
    })
}

/// The pods this ReplicaSet controls (by owner reference) among those listed.
pub fn owned_pods<'a>(rs: &ReplicaSet, pods: &'a [Pod]) -> Vec<&'a Pod> {
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    pods.iter()
        .filter(|pod| controlled_by(&pod.metadata, uid))
        .collect()
}

fn restart_total(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .map(|statuses| statuses.iter().map(|status| status.restart_count).sum())
        .unwrap_or(0)
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
    {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    }
}

/// Orders pods so that the best deletion candidates come first, as the real `ActivePods` sort:
/// unscheduled before scheduled, pending before running, not ready before ready, recently ready
/// before long ready, more restarts before fewer, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_ref())
            .is_some()
    };
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        .then_with(|| restart_total(b).cmp(&restart_total(a)))
        .then_with(|| {
            let created = |pod: &Pod| pod.metadata.creation_timestamp.as_ref().map(|time| time.0);
            created(b).cmp(&created(a))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The names of pods to delete to bring `active` down to `replicas`.
pub fn pods_to_delete(active: &[&Pod], replicas: i32) -> Vec<String> {
    let excess = active.len() as i64 - i64::from(replicas.max(0));
    if excess <= 0 {
        return Vec::new();
    }
    let mut sorted: Vec<&Pod> = active.to_vec();
    sorted.sort_by(|a, b| deletion_order(a, b));
    sorted
        .into_iter()
        .take(usize::try_from(excess).unwrap_or(0))
        .filter_map(|pod| pod.metadata.name.clone())
        .collect()
}

/// A random 5-character suffix from the Kubernetes name alphabet.
pub fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..5)
        .map(|_| SAFE_ALPHABET[rng.random_range(0..SAFE_ALPHABET.len())] as char)
        .collect()
}

/// A new pod for the ReplicaSet: its template, named `<rs>-<suffix>`, controlled by the
/// ReplicaSet.
pub fn new_pod(rs: &ReplicaSet, suffix: &str) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|spec| spec.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{suffix}")),
            namespace: rs.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: "ReplicaSet".to_owned(),
                name,
                uid: rs.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The ReplicaSet status for the pods it owns.
pub fn compute_status(rs: &ReplicaSet, owned: &[&Pod], now: Timestamp) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|spec| spec.min_ready_seconds).unwrap_or(0);
    let template_labels: BTreeMap<String, String> = spec
        .and_then(|spec| spec.template.as_ref())
        .and_then(|template| template.metadata.as_ref())
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    let active: Vec<&&Pod> = owned.iter().filter(|pod| is_active(pod)).collect();
    let fully_labeled = active
        .iter()
        .filter(|pod| {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        })
        .count();
    let ready = active.iter().filter(|pod| is_ready(pod)).count();
    let available = active
        .iter()
        .filter(|pod| is_available(pod, min_ready, now))
        .count();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    ReplicaSetStatus {
        replicas: count(active.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation,
        conditions: rs
            .status
            .as_ref()
            .and_then(|status| status.conditions.clone()),
        // Set only under the DeploymentReplicaSetTerminatingReplicas feature gate, off by
        // default in 1.33.
        terminating_replicas: None,
    }
}

/// Whether any owned pod is ready but not yet available, and how long until the first becomes
/// available, so the controller can look again then.
pub fn seconds_until_available(rs: &ReplicaSet, owned: &[&Pod], now: Timestamp) -> Option<i64> {
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|spec| spec.min_ready_seconds)
        .unwrap_or(0);
    if min_ready <= 0 {
        return None;
    }
    owned
        .iter()
        .filter(|pod| is_active(pod) && !is_available(pod, min_ready, now))
        .filter_map(|pod| ready_since(pod))
        .map(|since| i64::from(min_ready) - now.duration_since(since).as_secs() + 1)
        .min()
}

/// Whether the pod matches the ReplicaSet's selector (used for adoption checks and by tests).
pub fn selects(rs: &ReplicaSet, pod: &Pod) -> bool {
    rs.spec
        .as_ref()
        .is_some_and(|spec| selector_matches(&spec.selector, pod.metadata.labels.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{
        ContainerStatus, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    fn mk_rs() -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".to_owned()),
                namespace: Some("default".to_owned()),
                uid: Some("rs-uid".to_owned()),
                generation: Some(4),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(2),
                min_ready_seconds: Some(10),
                selector: LabelSelector {
                    match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
                    match_expressions: None,
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(
                            [
                                ("app".to_owned(), "web".to_owned()),
                                ("pod-template-hash".to_owned(), "abc".to_owned()),
                            ]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec::default()),
                }),
            }),
            status: None,
        }
    }

    fn mk_pod(
        name: &str,
        node: bool,
        phase: &str,
        ready_since_secs: Option<i64>,
        restarts: i32,
        created: i64,
    ) -> Pod {
        let mut pod = new_pod(&mk_rs(), name);
        pod.metadata.name = Some(name.to_owned());
        pod.metadata.creation_timestamp = Some(Time(
            Timestamp::UNIX_EPOCH + SignedDuration::from_secs(created),
        ));
        if node {
            pod.spec.get_or_insert_with(PodSpec::default).node_name = Some("n".to_owned());
        }
        pod.status = Some(PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: if ready_since_secs.is_some() {
                    "True"
                } else {
                    "False"
                }
                .to_owned(),
                last_transition_time: ready_since_secs
                    .map(|secs| Time(Timestamp::UNIX_EPOCH + SignedDuration::from_secs(secs))),
                ..PodCondition::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                restart_count: restarts,
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    #[test]
    fn new_pods_carry_template_labels_and_a_controller_reference() {
        let rs = mk_rs();
        let pod = new_pod(&rs, &random_suffix());
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(
            name.starts_with("web-abc-") && name.len() == "web-abc-".len() + 5,
            "{name}"
        );
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ReplicaSet", "rs-uid", Some(true))
        );
        assert!(selects(&rs, &pod));
        assert!(controlled_by(&pod.metadata, "rs-uid"));
        assert!(!controlled_by(&pod.metadata, "other"));
    }

    #[test]
    fn deletion_prefers_unscheduled_then_pending_then_not_ready_then_newest() {
        let unscheduled = mk_pod("unscheduled", false, "Pending", None, 0, 1);
        let pending = mk_pod("pending", true, "Pending", None, 0, 1);
        let not_ready = mk_pod("not-ready", true, "Running", None, 0, 1);
        let ready_old = mk_pod("ready-old", true, "Running", Some(100), 0, 1);
        let ready_new = mk_pod("ready-new", true, "Running", Some(200), 0, 1);
        let crashy = mk_pod("crashy", true, "Running", Some(100), 5, 1);
        let all = [
            &ready_old,
            &crashy,
            &ready_new,
            &not_ready,
            &pending,
            &unscheduled,
        ];
        assert_eq!(pods_to_delete(&all, 5), vec!["unscheduled".to_owned()]);
        assert_eq!(
            pods_to_delete(&all, 0),
            [
                "unscheduled",
                "pending",
                "not-ready",
                "ready-new",
                "crashy",
                "ready-old"
            ]
            .map(str::to_owned)
            .to_vec()
        );
        assert!(pods_to_delete(&all, 6).is_empty());
    }

    #[test]
    fn status_counts_ready_and_available_with_min_ready_seconds() {
        let rs = mk_rs();
        let now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1000);
        let long_ready = mk_pod("a", true, "Running", Some(900), 0, 1);
        let just_ready = mk_pod("b", true, "Running", Some(995), 0, 1);
        let not_ready = mk_pod("c", true, "Running", None, 0, 1);
        let mut finished = mk_pod("d", true, "Succeeded", None, 0, 1);
        finished.metadata.labels = None;
        let mut relabelled = mk_pod("e", true, "Running", None, 0, 1);
        relabelled.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
        let owned = [&long_ready, &just_ready, &not_ready, &finished, &relabelled];
        let status = compute_status(&rs, &owned, now);
        assert_eq!(status.replicas, 4, "finished pods do not count");
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(
            status.available_replicas,
            Some(1),
            "ready for 5 s of the required 10 s is not available"
        );
        assert_eq!(status.fully_labeled_replicas, Some(3));
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(seconds_until_available(&rs, &owned, now), Some(6));
    }
}
