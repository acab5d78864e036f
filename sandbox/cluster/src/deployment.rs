//! Pure Deployment controller decisions: template hashing, revision numbering, rolling-update and
//! Recreate steps, and the Deployment status the real controller would write. No I/O lives here;
//! `controllers::deployment` feeds these functions with what it listed and applies what they return.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

/// Label carrying the template hash on ReplicaSets, their selectors and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotation holding a revision number, on Deployments and ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation listing the earlier revisions a reused ReplicaSet had.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Annotation on a ReplicaSet recording the Deployment's replicas when it was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation on a ReplicaSet recording replicas + maxSurge when it was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Annotation copied from the Deployment to the ReplicaSet so `rollout history` can show it.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// Default `progressDeadlineSeconds` when the field is unset.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Default `revisionHistoryLimit` when the field is unset.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// Annotations the controller owns on a ReplicaSet and therefore never copies from the Deployment.
const CONTROLLER_ANNOTATIONS: &[&str] = &[
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// The alphabet Kubernetes uses for generated names: no vowels, no confusable characters.
pub const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Encodes a string the way Kubernetes' `SafeEncodeString` does, mapping each byte into
/// [`SAFE_ALPHABET`], so hashes look like real ones (`5d9c7b8f6`).
pub fn safe_encode(input: &str) -> String {
    input
        .bytes()
        .map(|byte| SAFE_ALPHABET[usize::from(byte) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// Hash of a pod template, stable across processes: the same template always yields the same
/// ReplicaSet name, which is what makes rollbacks find their old ReplicaSet.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut template = template.clone();
    strip_hash_label(&mut template);
    // serde_json renders k8s-openapi structs in declaration order and maps as BTreeMaps, so this
    // serialisation is canonical.
    let canonical = serde_json::to_vec(&template).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(&canonical);
    if let Some(count) = collision_count {
        hasher.update(count.to_le_bytes());
    }
    let digest = hasher.finalize();
    let value = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    safe_encode(&value.to_string())
}

fn strip_hash_label(template: &mut PodTemplateSpec) {
    if let Some(metadata) = template.metadata.as_mut()
        && let Some(labels) = metadata.labels.as_mut()
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            metadata.labels = None;
        }
    }
}

/// Whether two templates are equal once the hash label is ignored (the real `EqualIgnoreHash`).
pub fn templates_equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    strip_hash_label(&mut a);
    strip_hash_label(&mut b);
    // Compare through JSON: absent and empty optional collections are the same object to the API.
    normalise(serde_json::to_value(&a).unwrap_or_default())
        == normalise(serde_json::to_value(&b).unwrap_or_default())
}

fn normalise(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter_map(|(key, value)| {
                    let value = normalise(value);
                    let empty = match &value {
                        serde_json::Value::Null => true,
                        serde_json::Value::Object(inner) => inner.is_empty(),
                        serde_json::Value::Array(inner) => inner.is_empty(),
                        _ => false,
                    };
                    (!empty).then_some((key, value))
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(normalise).collect())
        }
        other => other,
    }
}

/// The revision number recorded on an object, 0 when absent or unparsable.
pub fn revision_of(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations
        .and_then(|annotations| annotations.get(REVISION))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Highest revision among the ReplicaSets.
pub fn max_revision(replica_sets: &[ReplicaSet]) -> i64 {
    replica_sets
        .iter()
        .map(|rs| revision_of(rs.metadata.annotations.as_ref()))
        .max()
        .unwrap_or(0)
}

/// The ReplicaSet running the Deployment's current template, if any. When several match (which a
/// real cluster avoids), the oldest wins, as in the real controller.
pub fn find_new_replica_set<'a>(
    deployment: &Deployment,
    replica_sets: &'a [ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let template = &deployment.spec.as_ref()?.template;
    let mut matching: Vec<&ReplicaSet> = replica_sets
        .iter()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|spec| spec.template.as_ref())
                .is_some_and(|rs_template| templates_equal_ignoring_hash(rs_template, template))
        })
        .collect();
    matching.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|time| time.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|time| time.0))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    matching.into_iter().next()
}

/// What the new ReplicaSet's annotations must become: revision bumped to `max + 1` when it is not
/// already the newest (a rollback reuses an old ReplicaSet and gives it a fresh revision, keeping
/// the old numbers in `revision-history`), change-cause and user annotations carried from the
/// Deployment. Returns `None` when nothing changes.
pub fn new_replica_set_annotations(
    deployment: &Deployment,
    new_rs: &ReplicaSet,
    max_old_revision: i64,
    max_surge: i32,
) -> Option<BTreeMap<String, String>> {
    let current = new_rs.metadata.annotations.clone().unwrap_or_default();
    let mut next = current.clone();
    let own_revision = revision_of(Some(&current));
    if own_revision <= max_old_revision {
        let revision = max_old_revision + 1;
        if own_revision > 0 {
            let mut history: Vec<String> = current
                .get(REVISION_HISTORY)
                .map(|history| history.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            history.push(own_revision.to_string());
            next.insert(REVISION_HISTORY.to_owned(), history.join(","));
        }
        next.insert(REVISION.to_owned(), revision.to_string());
    }
    copy_deployment_annotations(deployment, &mut next);
    let replicas = desired_replicas(deployment);
    next.insert(DESIRED_REPLICAS.to_owned(), replicas.to_string());
    next.insert(MAX_REPLICAS.to_owned(), (replicas + max_surge).to_string());
    (next != current).then_some(next)
}

/// Copies the Deployment's own annotations (change-cause included) onto a ReplicaSet's, skipping
/// those the controller owns.
pub fn copy_deployment_annotations(deployment: &Deployment, into: &mut BTreeMap<String, String>) {
    if let Some(annotations) = deployment.metadata.annotations.as_ref() {
        for (key, value) in annotations {
            if !CONTROLLER_ANNOTATIONS.contains(&key.as_str()) {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

/// `spec.replicas`, defaulting to 1 as the API does.
pub fn desired_replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

/// Whether the Deployment uses the Recreate strategy.
pub fn is_recreate(deployment: &Deployment) -> bool {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.type_.as_deref())
        == Some("Recreate")
}

/// Errors in a Deployment's spec that the real API server would have rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// A maxSurge/maxUnavailable string that is not a percentage.
    #[error("`{field}` is `{value}`: use an integer or a percentage such as `25%`")]
    BadIntOrPercent {
        /// Which field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
}

/// Scales an int-or-percent against `total`, rounding up or down as asked (the real
/// `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(
    value: &IntOrString,
    total: i32,
    round_up: bool,
    field: &'static str,
) -> Result<i32, SpecError> {
    match value {
        IntOrString::Int(int) => Ok(*int),
        IntOrString::String(text) => {
            let bad = || SpecError::BadIntOrPercent {
                field,
                value: text.clone(),
            };
            let percent: i64 = text
                .strip_suffix('%')
                .ok_or_else(bad)?
                .trim()
                .parse()
                .map_err(|_| bad())?;
            let product = percent * i64::from(total);
            let scaled = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            i32::try_from(scaled).map_err(|_| bad())
        }
    }
}

/// The absolute (maxSurge, maxUnavailable) for a rolling update: surge rounds up, unavailable
/// rounds down, and both zero becomes unavailable = 1 so the rollout can proceed.
pub fn resolve_fenceposts(deployment: &Deployment) -> Result<(i32, i32), SpecError> {
    let desired = desired_replicas(deployment);
    let rolling = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.rolling_update.as_ref());
    let default = IntOrString::String("25%".to_owned());
    let surge_spec = rolling
        .and_then(|rolling| rolling.max_surge.clone())
        .unwrap_or_else(|| default.clone());
    let unavailable_spec = rolling
        .and_then(|rolling| rolling.max_unavailable.clone())
        .unwrap_or(default);
    let surge = scaled_value(&surge_spec, desired, true, "maxSurge")?;
    let mut unavailable = scaled_value(&unavailable_spec, desired, false, "maxUnavailable")?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    if unavailable > desired {
        unavailable = desired;
    }
    Ok((surge, unavailable))
}

/// The numbers the rollout logic needs from one ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsCounts {
    /// ReplicaSet name.
    pub name: String,
    /// `spec.replicas`.
    pub spec_replicas: i32,
    /// `status.replicas`: pods that exist.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

impl RsCounts {
    /// Reads the counts off a ReplicaSet object.
    pub fn of(rs: &ReplicaSet) -> Self {
        let status = rs.status.as_ref();
        Self {
            name: rs.metadata.name.clone().unwrap_or_default(),
            spec_replicas: rs.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1),
            replicas: status.map(|status| status.replicas).unwrap_or(0),
            ready: status.and_then(|status| status.ready_replicas).unwrap_or(0),
            available: status
                .and_then(|status| status.available_replicas)
                .unwrap_or(0),
        }
    }
}

/// One scaling step: set ReplicaSet `name` to `replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleStep {
    /// ReplicaSet name.
    pub name: String,
    /// New `spec.replicas`.
    pub replicas: i32,
}

/// The next step of a rolling update, or none when nothing should change now. Mirrors the real
/// controller: first grow the new ReplicaSet within maxSurge; failing that, shrink old ones,
/// unhealthy replicas first, without dropping below `desired - maxUnavailable` available pods.
pub fn rolling_step(
    desired: i32,
    max_surge: i32,
    max_unavailable: i32,
    new_rs: &RsCounts,
    old: &[RsCounts],
) -> Vec<ScaleStep> {
    // Grow (or trim) the new ReplicaSet.
    if new_rs.spec_replicas > desired {
        return vec![ScaleStep {
            name: new_rs.name.clone(),
            replicas: desired,
        }];
    }
    if new_rs.spec_replicas < desired {
        let current_total: i32 =
            new_rs.spec_replicas + old.iter().map(|rs| rs.spec_replicas).sum::<i32>();
        let max_total = desired + max_surge;
        if current_total < max_total {
            let scale_up = (max_total - current_total).min(desired - new_rs.spec_replicas);
            return vec![ScaleStep {
                name: new_rs.name.clone(),
                replicas: new_rs.spec_replicas + scale_up,
            }];
        }
    }

    // Shrink old ReplicaSets.
    let old_total: i32 = old.iter().map(|rs| rs.spec_replicas).sum();
    if old_total == 0 {
        return Vec::new();
    }
    let all_pods: i32 = new_rs.replicas + old.iter().map(|rs| rs.replicas).sum::<i32>();
    let min_available = desired - max_unavailable;
    let new_unavailable = (new_rs.spec_replicas - new_rs.available).max(0);
    let mut budget = all_pods - min_available - new_unavailable;
    if budget <= 0 {
        return Vec::new();
    }
    let mut targets: Vec<(String, i32, i32)> = old
        .iter()
        .filter(|rs| rs.spec_replicas > 0)
        .map(|rs| (rs.name.clone(), rs.spec_replicas, rs.available))
        .collect();
    // Unhealthy replicas first: scaling those down costs no availability.
    let mut steps: BTreeMap<String, i32> = BTreeMap::new();
    for (name, spec, available) in targets.iter_mut() {
        if budget <= 0 {
            break;
        }
        let unhealthy = (*spec - *available).max(0);
        let cut = unhealthy.min(budget);
        if cut > 0 {
            *spec -= cut;
            budget -= cut;
            steps.insert(name.clone(), *spec);
        }
    }
    // Then healthy ones, keeping min_available across every ReplicaSet.
    let total_available: i32 = new_rs.available
        + targets
            .iter()
            .map(|(_, spec, available)| (*available).min(*spec))
            .sum::<i32>();
    let mut can_remove = total_available - min_available;
    for (name, spec, _) in targets.iter_mut() {
        if can_remove <= 0 {
            break;
        }
        let cut = (*spec).min(can_remove);
        if cut > 0 {
            *spec -= cut;
            can_remove -= cut;
            steps.insert(name.clone(), *spec);
        }
    }
    steps
        .into_iter()
        .map(|(name, replicas)| ScaleStep { name, replicas })
        .collect()
}

/// The next step of a Recreate rollout: old ReplicaSets to zero, wait until their pods are gone,
/// then the new one to `desired`.
pub fn recreate_step(desired: i32, new_rs: &RsCounts, old: &[RsCounts]) -> Vec<ScaleStep> {
    let shrink: Vec<ScaleStep> = old
        .iter()
        .filter(|rs| rs.spec_replicas > 0)
        .map(|rs| ScaleStep {
            name: rs.name.clone(),
            replicas: 0,
        })
        .collect();
    if !shrink.is_empty() {
        return shrink;
    }
    if old.iter().any(|rs| rs.replicas > 0) {
        return Vec::new();
    }
    if new_rs.spec_replicas != desired {
        return vec![ScaleStep {
            name: new_rs.name.clone(),
            replicas: desired,
        }];
    }
    Vec::new()
}

/// Old ReplicaSets to delete under `revisionHistoryLimit`: only those scaled to zero with no pods
/// left, oldest revision first.
pub fn history_to_prune(limit: i32, old: &[ReplicaSet]) -> Vec<String> {
    let mut candidates: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| {
            let counts = RsCounts::of(rs);
            counts.spec_replicas == 0
                && counts.replicas == 0
                && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let excess = candidates.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Vec::new();
    }
    candidates.sort_by_key(|rs| revision_of(rs.metadata.annotations.as_ref()));
    candidates
        .into_iter()
        .take(usize::try_from(excess).unwrap_or(0))
        .filter_map(|rs| rs.metadata.name.clone())
        .collect()
}

/// Condition type `Available`.
pub const AVAILABLE: &str = "Available";
/// Condition type `Progressing`.
pub const PROGRESSING: &str = "Progressing";

/// How this sync touched the new ReplicaSet, which decides the Progressing reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewRsEvent {
    /// The new ReplicaSet was created by this sync.
    Created,
    /// It already existed and the Deployment had no Progressing condition yet.
    Found,
    /// Nothing special.
    None,
}

/// Inputs for [`compute_status`].
#[derive(Debug)]
pub struct StatusInput<'a> {
    /// The Deployment as read.
    pub deployment: &'a Deployment,
    /// The new ReplicaSet's name and counts, if it exists.
    pub new_rs: Option<&'a RsCounts>,
    /// All ReplicaSets the Deployment owns (new included).
    pub all: &'a [RsCounts],
    /// maxUnavailable resolved.
    pub max_unavailable: i32,
    /// What happened to the new ReplicaSet in this sync.
    pub event: NewRsEvent,
    /// The current time.
    pub now: Timestamp,
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition the way the real `SetDeploymentCondition` does: same status and reason leaves
/// the old one (and its times) alone; same status keeps the transition time.
fn set_condition(conditions: &mut Vec<DeploymentCondition>, mut next: DeploymentCondition) {
    if let Some(position) = conditions.iter().position(|c| c.type_ == next.type_) {
        let current = &conditions[position];
        if current.status == next.status && current.reason == next.reason {
            return;
        }
        if current.status == next.status {
            next.last_transition_time = current.last_transition_time.clone();
        }
        conditions.remove(position);
    }
    conditions.push(next);
}

/// The status the real controller would write for this Deployment now.
pub fn compute_status(input: &StatusInput<'_>) -> DeploymentStatus {
    let deployment = input.deployment;
    let old_status = deployment.status.clone().unwrap_or_default();
    let desired = desired_replicas(deployment);
    let replicas: i32 = input.all.iter().map(|rs| rs.replicas).sum();
    let ready: i32 = input.all.iter().map(|rs| rs.ready).sum();
    let available: i32 = input.all.iter().map(|rs| rs.available).sum();
    let updated = input.new_rs.map(|rs| rs.replicas).unwrap_or(0);
    let mut conditions = old_status.conditions.clone().unwrap_or_default();
    let now = input.now;

    if available >= desired - input.max_unavailable {
        set_condition(
            &mut conditions,
            condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".to_owned(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut conditions,
            condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".to_owned(),
                now,
            ),
        );
    }

    let paused = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.paused)
        .unwrap_or(false);
    let current_progressing = conditions.iter().find(|c| c.type_ == PROGRESSING).cloned();
    let name = input.new_rs.map(|rs| rs.name.clone()).unwrap_or_default();
    if paused {
        if current_progressing
            .as_ref()
            .and_then(|c| c.reason.as_deref())
            != Some("DeploymentPaused")
        {
            set_condition(
                &mut conditions,
                condition(
                    PROGRESSING,
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".to_owned(),
                    now,
                ),
            );
        }
    } else {
        let was_paused = current_progressing
            .as_ref()
            .and_then(|c| c.reason.as_deref())
            == Some("DeploymentPaused");
        if was_paused {
            set_condition(
                &mut conditions,
                condition(
                    PROGRESSING,
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".to_owned(),
                    now,
                ),
            );
        }
        match input.event {
            NewRsEvent::Created => set_condition(
                &mut conditions,
                condition(
                    PROGRESSING,
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                    now,
                ),
            ),
            NewRsEvent::Found if current_progressing.is_none() => set_condition(
                &mut conditions,
                condition(
                    PROGRESSING,
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{name}\""),
                    now,
                ),
            ),
            _ => {}
        }
        let complete = updated == desired
            && replicas == desired
            && available == desired
            && input.new_rs.is_some();
        let progressed = updated > old_status.updated_replicas.unwrap_or(0)
            || replicas < old_status.replicas.unwrap_or(0)
            || ready > old_status.ready_replicas.unwrap_or(0)
            || available > old_status.available_replicas.unwrap_or(0);
        let deadline = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.progress_deadline_seconds)
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
        let progressing_now = conditions.iter().find(|c| c.type_ == PROGRESSING).cloned();
        if complete {
            set_condition(
                &mut conditions,
                condition(
                    PROGRESSING,
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{name}\" has successfully progressed."),
                    now,
                ),
            );
        } else if progressed && input.new_rs.is_some() {
            let mut next = condition(
                PROGRESSING,
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{name}\" is progressing."),
                now,
            );
            if let Some(current) = progressing_now.as_ref()
                && current.status == "True"
            {
                next.last_transition_time = current.last_transition_time.clone();
            }
            // Progress refreshes lastUpdateTime even when the reason is unchanged: that is what
            // the deadline is measured from.
            conditions.retain(|c| c.type_ != PROGRESSING);
            conditions.push(next);
        } else if timed_out(progressing_now.as_ref(), deadline, now) {
            set_condition(
                &mut conditions,
                condition(
                    PROGRESSING,
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{name}\" has timed out progressing."),
                    now,
                ),
            );
        }
    }

    // Stable order (Available, Progressing, others) so unchanged status compares equal.
    conditions.sort_by_key(|c| match c.type_.as_str() {
        AVAILABLE => 0,
        PROGRESSING => 1,
        _ => 2,
    });

    DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        conditions: Some(conditions),
        collision_count: old_status.collision_count,
        // Set only under the DeploymentReplicaSetTerminatingReplicas feature gate, off by
        // default in 1.33.
        terminating_replicas: None,
    }
}

fn timed_out(
    progressing: Option<&DeploymentCondition>,
    deadline_seconds: i32,
    now: Timestamp,
) -> bool {
    let Some(condition) = progressing else {
        return false;
    };
    match condition.reason.as_deref() {
        Some("NewReplicaSetAvailable") | Some("DeploymentPaused") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => condition.last_update_time.as_ref().is_some_and(|since| {
            now.duration_since(since.0) > SignedDuration::from_secs(i64::from(deadline_seconds))
        }),
    }
}

/// When the Deployment next needs looking at even without any change, so the progress deadline
/// fires on time.
pub fn seconds_until_deadline(
    status: &DeploymentStatus,
    deadline_seconds: i32,
    now: Timestamp,
) -> Option<i64> {
    let condition = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == PROGRESSING)?;
    match condition.reason.as_deref() {
        Some("NewReplicaSetAvailable" | "ProgressDeadlineExceeded" | "DeploymentPaused") => None,
        _ => {
            let since = condition.last_update_time.as_ref()?.0;
            let elapsed = now.duration_since(since).as_secs();
            Some((i64::from(deadline_seconds) - elapsed).max(0) + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, RollingUpdateDeployment,
    };
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".to_owned(),
                    image: Some(image.to_owned()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn mk_deployment(
        replicas: i32,
        surge: Option<IntOrString>,
        unavailable: Option<IntOrString>,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".to_owned()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                template: template("img:1"),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".to_owned()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: surge,
                        max_unavailable: unavailable,
                    }),
                }),
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    fn mk_rs(name: &str, image: &str, revision: i64) -> ReplicaSet {
        let mut template = template(image);
        if let Some(labels) = template
            .metadata
            .as_mut()
            .and_then(|meta| meta.labels.as_mut())
        {
            labels.insert(POD_TEMPLATE_HASH.to_owned(), "abc".to_owned());
        }
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some([(REVISION.to_owned(), revision.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                template: Some(template),
                ..ReplicaSetSpec::default()
            }),
            status: None,
        }
    }

    fn counts(name: &str, spec: i32, available: i32) -> RsCounts {
        RsCounts {
            name: name.to_owned(),
            spec_replicas: spec,
            replicas: spec,
            ready: available,
            available,
        }
    }

    fn pct(text: &str) -> Option<IntOrString> {
        Some(IntOrString::String(text.to_owned()))
    }

    #[test]
    fn hash_is_stable_ignores_the_hash_label_and_changes_with_the_template() {
        let a = template("img:1");
        let mut labelled = a.clone();
        labelled
            .metadata
            .as_mut()
            .and_then(|meta| meta.labels.as_mut())
            .map(|labels| labels.insert(POD_TEMPLATE_HASH.to_owned(), "zzz".to_owned()));
        assert_eq!(
            pod_template_hash(&a, None),
            pod_template_hash(&labelled, None)
        );
        assert_ne!(
            pod_template_hash(&a, None),
            pod_template_hash(&template("img:2"), None)
        );
        assert_ne!(pod_template_hash(&a, None), pod_template_hash(&a, Some(1)));
        let hash = pod_template_hash(&a, None);
        assert!(
            hash.bytes().all(|byte| SAFE_ALPHABET.contains(&byte)),
            "{hash}"
        );
        assert!((6..=10).contains(&hash.len()), "{hash}");
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let deployment = mk_deployment(10, pct("25%"), pct("25%"));
        assert_eq!(resolve_fenceposts(&deployment), Ok((3, 2)));
        let deployment = mk_deployment(3, pct("25%"), pct("25%"));
        assert_eq!(resolve_fenceposts(&deployment), Ok((1, 0)));
        let deployment = mk_deployment(1, Some(IntOrString::Int(0)), Some(IntOrString::Int(0)));
        assert_eq!(
            resolve_fenceposts(&deployment),
            Ok((0, 1)),
            "both zero must still allow progress"
        );
        let deployment = mk_deployment(4, None, None);
        assert_eq!(
            resolve_fenceposts(&deployment),
            Ok((1, 1)),
            "defaults are 25%/25%"
        );
        let deployment = mk_deployment(4, pct("lots"), None);
        assert!(matches!(
            resolve_fenceposts(&deployment),
            Err(SpecError::BadIntOrPercent {
                field: "maxSurge",
                ..
            })
        ));
    }

    #[test]
    fn rolling_update_surge_one_unavailable_zero_walks_one_pod_at_a_time() {
        // 3 replicas, maxSurge 1, maxUnavailable 0: +1 new, then -1 old once the new is available.
        let step = rolling_step(3, 1, 0, &counts("new", 0, 0), &[counts("old", 3, 3)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "new".into(),
                replicas: 1
            }]
        );
        // New pod not yet available: nothing may go down.
        let step = rolling_step(3, 1, 0, &counts("new", 1, 0), &[counts("old", 3, 3)]);
        assert_eq!(step, Vec::new());
        // Now available: one old goes.
        let step = rolling_step(3, 1, 0, &counts("new", 1, 1), &[counts("old", 3, 3)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "old".into(),
                replicas: 2
            }]
        );
        // And the new one grows again.
        let step = rolling_step(3, 1, 0, &counts("new", 1, 1), &[counts("old", 2, 2)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "new".into(),
                replicas: 2
            }]
        );
    }

    #[test]
    fn rolling_update_surge_zero_unavailable_one_goes_down_first() {
        let step = rolling_step(3, 0, 1, &counts("new", 0, 0), &[counts("old", 3, 3)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "old".into(),
                replicas: 2
            }]
        );
        let step = rolling_step(3, 0, 1, &counts("new", 0, 0), &[counts("old", 2, 2)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "new".into(),
                replicas: 1
            }]
        );
    }

    #[test]
    fn rolling_update_with_percentages_on_ten_replicas() {
        // 25%/25% of 10: surge 3, unavailable 2 → new to 3 at once, then old down to 5 (8 available).
        let step = rolling_step(10, 3, 2, &counts("new", 0, 0), &[counts("old", 10, 10)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "new".into(),
                replicas: 3
            }]
        );
        let step = rolling_step(10, 3, 2, &counts("new", 3, 0), &[counts("old", 10, 10)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "old".into(),
                replicas: 8
            }]
        );
    }

    #[test]
    fn unhealthy_old_replicas_are_removed_before_healthy_ones() {
        // Old RS has 3 replicas of which one is not available: available pods are exactly at the
        // minimum (1 new + 2 old), so only the unhealthy one may go.
        let step = rolling_step(3, 1, 0, &counts("new", 1, 1), &[counts("old", 3, 2)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "old".into(),
                replicas: 2
            }]
        );
        // A new pod that is not available yet uses up the budget: nothing goes.
        let step = rolling_step(3, 1, 0, &counts("new", 1, 0), &[counts("old", 3, 2)]);
        assert_eq!(step, Vec::new());
        let step = rolling_step(3, 1, 0, &counts("new", 1, 1), &[counts("old", 3, 2)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "old".into(),
                replicas: 2
            }]
        );
    }

    #[test]
    fn new_replica_set_scaled_back_when_deployment_shrinks() {
        let step = rolling_step(2, 1, 0, &counts("new", 5, 5), &[]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "new".into(),
                replicas: 2
            }]
        );
        assert_eq!(rolling_step(2, 1, 0, &counts("new", 2, 2), &[]), Vec::new());
    }

    #[test]
    fn recreate_kills_everything_first() {
        let step = recreate_step(2, &counts("new", 0, 0), &[counts("old", 2, 2)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "old".into(),
                replicas: 0
            }]
        );
        let mut terminating = counts("old", 0, 0);
        terminating.replicas = 1;
        assert_eq!(
            recreate_step(2, &counts("new", 0, 0), &[terminating]),
            Vec::new()
        );
        let step = recreate_step(2, &counts("new", 0, 0), &[counts("old", 0, 0)]);
        assert_eq!(
            step,
            vec![ScaleStep {
                name: "new".into(),
                replicas: 2
            }]
        );
    }

    #[test]
    fn rollback_reuses_the_old_replica_set_and_bumps_its_revision() {
        let mut deployment = mk_deployment(1, None, None);
        let old = mk_rs("web-old", "img:1", 1);
        let newer = mk_rs("web-new", "img:2", 2);
        let all = vec![old.clone(), newer];
        // The template is back to img:1: the revision-1 ReplicaSet is the "new" one.
        let found = find_new_replica_set(&deployment, &all).map(|rs| rs.metadata.name.clone());
        assert_eq!(found, Some(Some("web-old".to_owned())));
        deployment.metadata.annotations =
            Some([(CHANGE_CAUSE.to_owned(), "undo".to_owned())].into());
        let annotations =
            new_replica_set_annotations(&deployment, &old, 2, 0).expect("annotations change");
        assert_eq!(annotations.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(
            annotations.get(REVISION_HISTORY).map(String::as_str),
            Some("1")
        );
        assert_eq!(
            annotations.get(CHANGE_CAUSE).map(String::as_str),
            Some("undo")
        );
        assert_eq!(
            annotations.get(DESIRED_REPLICAS).map(String::as_str),
            Some("1")
        );
        // Already newest: revision untouched.
        let mut current = old.clone();
        current.metadata.annotations = Some(annotations);
        let again = new_replica_set_annotations(&deployment, &current, 2, 0);
        assert_eq!(again, None);
        assert_eq!(max_revision(&all), 2);
    }

    #[test]
    fn history_limit_prunes_oldest_empty_replica_sets_only() {
        let mut busy = mk_rs("busy", "img:0", 1);
        if let Some(spec) = busy.spec.as_mut() {
            spec.replicas = Some(1);
        }
        let old = vec![
            busy,
            mk_rs("r2", "img:2", 2),
            mk_rs("r3", "img:3", 3),
            mk_rs("r4", "img:4", 4),
        ];
        assert_eq!(
            history_to_prune(1, &old),
            vec!["r2".to_owned(), "r3".to_owned()]
        );
        assert_eq!(history_to_prune(10, &old), Vec::<String>::new());
        assert_eq!(history_to_prune(0, &old).len(), 3);
    }

    fn status_of(
        deployment: &Deployment,
        new_rs: &RsCounts,
        all: &[RsCounts],
        event: NewRsEvent,
        now: Timestamp,
    ) -> DeploymentStatus {
        compute_status(&StatusInput {
            deployment,
            new_rs: Some(new_rs),
            all,
            max_unavailable: 0,
            event,
            now,
        })
    }

    fn reason(status: &DeploymentStatus, type_: &str) -> (String, String) {
        let condition = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .expect("condition present");
        (
            condition.status.clone(),
            condition.reason.clone().unwrap_or_default(),
        )
    }

    #[test]
    fn status_conditions_follow_the_rollout() {
        let now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_000_000);
        let mut deployment = mk_deployment(2, Some(IntOrString::Int(1)), Some(IntOrString::Int(0)));
        // Just created: no pods exist yet.
        let mut new_rs = counts("web-1", 2, 0);
        new_rs.replicas = 0;
        let status = status_of(
            &deployment,
            &new_rs,
            std::slice::from_ref(&new_rs),
            NewRsEvent::Created,
            now,
        );
        assert_eq!(
            reason(&status, PROGRESSING),
            ("True".into(), "NewReplicaSetCreated".into())
        );
        assert_eq!(
            reason(&status, AVAILABLE),
            ("False".into(), "MinimumReplicasUnavailable".into())
        );
        assert_eq!(status.unavailable_replicas, Some(2));
        assert_eq!(status.observed_generation, Some(1));

        deployment.status = Some(status);
        let half = counts("web-1", 2, 1);
        let status = status_of(
            &deployment,
            &half,
            std::slice::from_ref(&half),
            NewRsEvent::None,
            now,
        );
        assert_eq!(
            reason(&status, PROGRESSING),
            ("True".into(), "ReplicaSetUpdated".into())
        );

        deployment.status = Some(status);
        let done = counts("web-1", 2, 2);
        let status = status_of(
            &deployment,
            &done,
            std::slice::from_ref(&done),
            NewRsEvent::None,
            now,
        );
        assert_eq!(
            reason(&status, PROGRESSING),
            ("True".into(), "NewReplicaSetAvailable".into())
        );
        assert_eq!(
            reason(&status, AVAILABLE),
            ("True".into(), "MinimumReplicasAvailable".into())
        );
        assert_eq!(status.updated_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(2));
        assert_eq!(status.unavailable_replicas, Some(0));
    }

    #[test]
    fn progress_deadline_is_exceeded_only_after_the_deadline_without_progress() {
        let start = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_000_000);
        let mut deployment = mk_deployment(1, None, None);
        if let Some(spec) = deployment.spec.as_mut() {
            spec.progress_deadline_seconds = Some(30);
        }
        let stuck = counts("web-1", 1, 0);
        let status = status_of(
            &deployment,
            &stuck,
            std::slice::from_ref(&stuck),
            NewRsEvent::Created,
            start,
        );
        deployment.status = Some(status);
        let later = start + SignedDuration::from_secs(29);
        let status = status_of(
            &deployment,
            &stuck,
            std::slice::from_ref(&stuck),
            NewRsEvent::None,
            later,
        );
        assert_eq!(
            reason(&status, PROGRESSING),
            ("True".into(), "ReplicaSetUpdated".into())
        );
        assert_eq!(seconds_until_deadline(&status, 30, later), Some(2));
        deployment.status = Some(status);
        let after = start + SignedDuration::from_secs(31);
        let status = status_of(
            &deployment,
            &stuck,
            std::slice::from_ref(&stuck),
            NewRsEvent::None,
            after,
        );
        assert_eq!(
            reason(&status, PROGRESSING),
            ("False".into(), "ProgressDeadlineExceeded".into())
        );
        assert_eq!(seconds_until_deadline(&status, 30, after), None);
    }

    #[test]
    fn paused_deployment_reports_paused() {
        let mut deployment = mk_deployment(1, None, None);
        if let Some(spec) = deployment.spec.as_mut() {
            spec.paused = Some(true);
        }
        let rs = counts("web-1", 1, 1);
        let status = status_of(
            &deployment,
            &rs,
            std::slice::from_ref(&rs),
            NewRsEvent::None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            reason(&status, PROGRESSING),
            ("Unknown".into(), "DeploymentPaused".into())
        );
    }
}
