//! Pure garbage-collection decisions: an object whose owners are all gone is deleted (background
//! propagation). Owners of kinds the collector does not track are assumed alive, so nothing is
//! deleted on a guess.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Owner kinds the collector knows how to check, as (apiVersion, kind).
pub const TRACKED_OWNER_KINDS: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet"),
    ("v1", "Pod"),
    ("v1", "Service"),
];

/// Whether the object should be collected: it has owner references, every one of them points at
/// a tracked kind, and none of those owners' UIDs is alive.
pub fn is_orphan(meta: &ObjectMeta, live_uids: &HashSet<String>) -> bool {
    let Some(owners) = meta.owner_references.as_ref().filter(|owners| !owners.is_empty()) else {
        return false;
    };
    if meta.deletion_timestamp.is_some() {
        return false;
    }
    owners.iter().all(|owner| {
        let tracked = TRACKED_OWNER_KINDS
            .iter()
            .any(|(version, kind)| owner.api_version == *version && owner.kind == *kind);
        tracked && !live_uids.contains(&owner.uid)
    })
}
