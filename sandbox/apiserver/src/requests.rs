//! Request accounting, for measuring what a client costs the control plane: every authenticated
//! request outside `/_sandbox/` is counted by user name, client, verb and resource, in the terms
//! kube-apiserver's audit events use (`user.username`, `userAgent`, `verb`, `objectRef.apiGroup`,
//! `objectRef.resource`, `objectRef.subresource`, or `requestURI` for non-resource paths). The
//! User-Agent tells apart the programs acting as one identity (psctl and the Helm it runs share
//! a kubeconfig).
//!
//! `GET /_sandbox/requests` answers the counts (optionally `?user=NAME` for one identity);
//! `DELETE /_sandbox/requests` resets them. Both are non-resource paths, so only `system:masters`
//! (the administrator) or a ClusterRole granting `nonResourceURLs: ["/_sandbox/requests"]`
//! reaches them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::rbac::Attributes;

/// What one counted request was, as an audit event would name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RequestKind {
    /// The authenticated user name.
    pub user: String,
    /// The request's `User-Agent` header, as sent (empty when there was none).
    pub user_agent: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or the
    /// lower-case HTTP method of a non-resource request.
    pub verb: String,
    /// API group (empty for core and for non-resource requests).
    pub group: String,
    /// Resource plural (empty for a non-resource request).
    pub resource: String,
    /// Subresource (`status`, `log`, `proxy`...), empty if none.
    pub subresource: String,
    /// The path of a non-resource request (`/version`, `/api`...), empty for resource requests.
    pub path: String,
}

impl RequestKind {
    /// The kind of the request the authorizer sees as `attributes`, sent with `user_agent`.
    pub fn of(attributes: &Attributes, user_agent: Option<&str>) -> Self {
        let resource_request = attributes.resource_request;
        Self {
            user: attributes.user.name.clone(),
            user_agent: user_agent.unwrap_or_default().to_owned(),
            verb: attributes.verb.clone(),
            group: attributes.api_group.clone(),
            resource: attributes.resource.clone(),
            subresource: attributes.subresource.clone(),
            path: if resource_request {
                String::new()
            } else {
                attributes.path.clone()
            },
        }
    }
}

/// One row of `GET /_sandbox/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestCount {
    /// What was asked, by whom.
    #[serde(flatten)]
    pub kind: RequestKind,
    /// How many times since the start or the last reset.
    pub count: u64,
}

/// The counts since the server started or was last reset.
#[derive(Default)]
pub struct RequestCounter {
    counts: Mutex<BTreeMap<RequestKind, u64>>,
}

impl RequestCounter {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RequestKind, u64>> {
        // Each mutation is a single insert or clear: a poisoned map is still consistent.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one request.
    pub fn record(&self, kind: RequestKind) {
        *self.lock().entry(kind).or_insert(0) += 1;
    }

    /// Every count (of `user` only, when given), ordered by user, User-Agent, verb, group,
    /// resource, subresource and path.
    pub fn snapshot(&self, user: Option<&str>) -> Vec<RequestCount> {
        self.lock()
            .iter()
            .filter(|(kind, _)| user.is_none_or(|user| kind.user == user))
            .map(|(kind, count)| RequestCount {
                kind: kind.clone(),
                count: *count,
            })
            .collect()
    }

    /// Forgets every count.
    pub fn reset(&self) {
        self.lock().clear();
    }
}

/// The body of `GET /_sandbox/requests`: the rows and their sum.
pub fn report(counts: &[RequestCount]) -> serde_json::Value {
    serde_json::json!({
        "total": counts.iter().map(|c| c.count).sum::<u64>(),
        "requests": counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(user: &str, verb: &str, resource: &str) -> RequestKind {
        RequestKind {
            user: user.to_owned(),
            user_agent: String::new(),
            verb: verb.to_owned(),
            group: String::new(),
            resource: resource.to_owned(),
            subresource: String::new(),
            path: String::new(),
        }
    }

    #[test]
    fn counts_per_user_verb_and_resource_and_resets() {
        let counter = RequestCounter::default();
        counter.record(kind("alice", "list", "pods"));
        counter.record(kind("alice", "list", "pods"));
        counter.record(kind("alice", "get", "pods"));
        counter.record(kind("bob", "list", "pods"));
        counter.record(RequestKind {
            user_agent: "Helm/4.0.0".to_owned(),
            ..kind("alice", "list", "pods")
        });

        let alice = counter.snapshot(Some("alice"));
        let seen: Vec<_> = alice
            .iter()
            .map(|c| (c.kind.verb.as_str(), c.count))
            .collect();
        // One row per client: the Helm child's requests apart from its parent's.
        assert_eq!(seen, [("get", 1), ("list", 2), ("list", 1)]);
        assert_eq!(alice[2].kind.user_agent, "Helm/4.0.0");
        assert_eq!(counter.snapshot(None).len(), 4);
        assert_eq!(report(&counter.snapshot(None))["total"], 5);

        counter.reset();
        assert!(counter.snapshot(None).is_empty());
        assert_eq!(report(&counter.snapshot(None))["total"], 0);
    }

    #[test]
    fn rows_are_flat_json() {
        let row = RequestCount {
            kind: kind("alice", "list", "secrets"),
            count: 2,
        };
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            serde_json::json!({"user": "alice", "user_agent": "", "verb": "list", "group": "", "resource": "secrets",
                               "subresource": "", "path": "", "count": 2})
        );
    }
}
