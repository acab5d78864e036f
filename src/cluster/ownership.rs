//! Field ownership psctl leaves on the Deployments Helm manages.
//!
//! Helm 4 installs with server-side apply under the field manager `helm`, and later upgrades and
//! rollbacks apply the whole rendered manifest again without forcing conflicts. On a real API
//! server every other write is an Update that takes ownership of the fields it changes: scaling
//! through the `scale` subresource owns `.spec.replicas`, a merge patch owns what it sets, a PUT
//! of the Deployment owns the template fields it changed. The next `helm upgrade` or
//! `helm rollback` that sets one of those fields to another value then fails with a 409
//! conflict naming psctl's manager.
//!
//! psctl therefore writes under named managers ([`KILL_SWITCH`], [`CANARY`], [`ROLLBACK`]) and,
//! once the state it wrote is no longer its own to keep (kill switch off, canary promoted or
//! aborted, `rollback --undo` done), hands the fields back with [`hand_back`]: it removes its
//! own managers' `managedFields` entries and nobody else's. The fields become unowned, which
//! never conflicts, so Helm's next apply sets them and owns them again. Fields psctl does not
//! own are never touched, and nothing is forced. While the kill switch is on or a canary runs,
//! psctl keeps ownership on purpose: a `helm upgrade` run by hand then fails with a conflict
//! naming `psctl-kill-switch` or `psctl-canary` instead of silently undoing the kill switch.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// The manager of the kill switch's replica writes.
pub const KILL_SWITCH: &str = "psctl-kill-switch";
/// The manager of canary scaling (and of the canary Deployment psctl applies).
pub const CANARY: &str = "psctl-canary";
/// The manager of `rollback --undo`'s template restore.
pub const ROLLBACK: &str = "psctl-rollback";

/// Patch options naming `manager` (an Update recorded under that name).
pub fn patch_params(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.to_owned()),
        ..PatchParams::default()
    }
}

/// PUT/POST options naming `manager`.
pub fn post_params(manager: &str) -> PostParams {
    PostParams {
        field_manager: Some(manager.to_owned()),
        ..PostParams::default()
    }
}

/// The entries left once every entry of `managers` is gone, or `None` when none of them owns
/// anything. An empty result is spelled `[{}]`: the API server reads an empty list as "keep the
/// live entries" and a single empty entry as "clear them".
pub fn without(
    entries: &[ManagedFieldsEntry],
    managers: &[&str],
) -> Option<Vec<ManagedFieldsEntry>> {
    let ours = |entry: &ManagedFieldsEntry| {
        entry
            .manager
            .as_deref()
            .is_some_and(|manager| managers.contains(&manager))
    };
    if !entries.iter().any(ours) {
        return None;
    }
    let kept: Vec<ManagedFieldsEntry> = entries.iter().filter(|e| !ours(e)).cloned().collect();
    Some(if kept.is_empty() {
        vec![ManagedFieldsEntry::default()]
    } else {
        kept
    })
}

/// Removes `managers`' ownership of fields of the Deployment `name` (see the module docs).
/// Returns whether anything was handed back. The change is guarded by the resourceVersion read,
/// so a concurrent writer's entries are never overwritten: psctl reads again and retries.
pub async fn hand_back(
    deployments: &Api<Deployment>,
    name: &str,
    managers: &[&str],
) -> Result<bool, kube::Error> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Some(current) = deployments.get_opt(name).await? else {
            return Ok(false);
        };
        let entries = current.metadata.managed_fields.unwrap_or_default();
        let Some(kept) = without(&entries, managers) else {
            return Ok(false);
        };
        // The resourceVersion in a merge patch is a precondition: a stale one is a 409.
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": current.metadata.resource_version,
            "managedFields": kept,
        }});
        match deployments
            .patch(name, &patch_params(managers[0]), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            // The object changed between the read and the patch: read it again.
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => {}
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(manager: &str, operation: &str) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some(operation.to_owned()),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn only_psctl_entries_are_removed() {
        let entries = vec![
            entry("helm", "Apply"),
            entry(KILL_SWITCH, "Update"),
            entry("kube-controller-manager", "Update"),
        ];
        let kept = without(&entries, &[KILL_SWITCH]).expect("psctl owns something");
        assert_eq!(
            kept.iter()
                .map(|e| e.manager.as_deref().unwrap())
                .collect::<Vec<_>>(),
            vec!["helm", "kube-controller-manager"]
        );
        assert!(without(&kept, &[KILL_SWITCH]).is_none());
        assert!(without(&entries, &[ROLLBACK, CANARY]).is_none());
    }

    #[test]
    fn removing_the_last_entry_clears_with_an_empty_entry() {
        let kept = without(&[entry(ROLLBACK, "Update")], &[ROLLBACK]).expect("owned");
        assert_eq!(kept, vec![ManagedFieldsEntry::default()]);
        assert_eq!(
            serde_json::to_value(&kept).unwrap(),
            serde_json::json!([{}])
        );
    }
}
