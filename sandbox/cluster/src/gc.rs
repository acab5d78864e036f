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
    let Some(owners) = meta
        .owner_references
        .as_ref()
        .filter(|owners| !owners.is_empty())
    else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(kind: &str, version: &str, uid: &str) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: version.to_owned(),
                kind: kind.to_owned(),
                name: "owner".to_owned(),
                uid: uid.to_owned(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn orphans_are_objects_whose_tracked_owners_are_all_gone() {
        let live: HashSet<String> = ["alive".to_owned()].into();
        assert!(is_orphan(&owned_by("ReplicaSet", "apps/v1", "dead"), &live));
        assert!(!is_orphan(
            &owned_by("ReplicaSet", "apps/v1", "alive"),
            &live
        ));
        assert!(
            !is_orphan(&owned_by("Job", "batch/v1", "dead"), &live),
            "unknown owner kinds are never guessed at"
        );
        assert!(
            !is_orphan(&ObjectMeta::default(), &live),
            "unowned objects stay"
        );
        let mut two = owned_by("ReplicaSet", "apps/v1", "dead");
        if let Some(refs) = two.owner_references.as_mut() {
            refs.push(OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: "Deployment".to_owned(),
                uid: "alive".to_owned(),
                ..OwnerReference::default()
            });
        }
        assert!(!is_orphan(&two, &live), "one live owner keeps the object");
    }
}
