//! Chunked lists, as kube-apiserver serves them from etcd: `limit` caps the items of one answer,
//! `metadata.continue` is an opaque token for the next chunk, and every chunk of one list is
//! consistent at the resourceVersion of the first (the server keeps that snapshot, as etcd keeps
//! old revisions until compaction). `metadata.remainingItemCount` is set only for lists without
//! a label or field selector, as the real server does.
//!
//! A token names the snapshot's resourceVersion and the key to resume after, in the real
//! encoding (`base64url(JSON {"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"})`). Once its
//! snapshot is compacted (after [`RETENTION`], like kube-apiserver's 5-minute etcd compaction, or
//! at once through `POST /_sandbox/compact`), a continue gets `410 Gone`, reason `Expired`, whose
//! Status carries a token to continue inconsistently from the current state, as the real one
//! does. `continue` with a `resourceVersion` other than `0` is a 400, as is a malformed token.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::status::ApiError;

/// How long a list snapshot stays continuable: kube-apiserver compacts etcd every 5 minutes
/// (`--etcd-compaction-interval`), after which tokens into older revisions expire. A token here
/// never outlives its snapshot by more, which is at most as kind as the real server.
pub const RETENTION: Duration = Duration::from_secs(300);

/// Snapshots kept at once; the oldest is compacted first when more are taken.
const MAX_SNAPSHOTS: usize = 64;

/// The real server's message for an expired continue token.
pub const EXPIRED_MESSAGE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Which objects one snapshot holds: a resource in one namespace, or in all of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Scope {
    group: String,
    resource: String,
    namespace: Option<String>,
}

struct Snapshot {
    taken: Instant,
    /// Every object of the scope at the snapshot's version, in key order.
    items: Arc<Vec<Arc<Value>>>,
}

/// The snapshots behind outstanding continue tokens.
#[derive(Default)]
pub struct Snapshots {
    inner: Mutex<BTreeMap<(u64, Scope), Snapshot>>,
}

/// One chunk of a list.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Arc<Value>>,
    /// The version every chunk of this list is consistent at.
    pub version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// A decoded continue token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The snapshot's version; negative for an inconsistent continuation (the current state).
    pub version: i64,
    /// Resume after this key (`<namespace>/<name>`, or `<name>` for cluster-scoped objects).
    pub after: String,
}

impl Token {
    pub fn encode(&self) -> String {
        let body = json!({ "v": "meta.k8s.io/v1", "rv": self.version, "start": format!("{}\u{0}", self.after) });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body.to_string())
    }

    pub fn decode(token: &str) -> Result<Self, ApiError> {
        let invalid = |why: &str| ApiError::bad_request(format!("invalid continue token: {why}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| invalid("continue key is not valid"))?;
        let body: Value =
            serde_json::from_slice(&bytes).map_err(|_| invalid("continue key is not valid"))?;
        if body["v"] != "meta.k8s.io/v1" {
            return Err(invalid(
                "continue key is not valid: server does not recognize this encoded version",
            ));
        }
        let version = body["rv"].as_i64().filter(|rv| *rv != 0).ok_or_else(|| {
            invalid("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        })?;
        let start = body["start"].as_str().unwrap_or_default();
        let after = start.strip_suffix('\u{0}').unwrap_or(start);
        if after.is_empty() || after.contains("..") {
            return Err(invalid(
                "continue key is not valid: encoded start key empty",
            ));
        }
        Ok(Self {
            version,
            after: after.to_owned(),
        })
    }
}

/// The key a token resumes after.
pub fn key_of(item: &Value) -> String {
    let name = item
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match item
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|namespace| !namespace.is_empty())
    {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_owned(),
    }
}

/// What a list request asks about paging.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// At most this many items; `None` (or ≤ 0) for all.
    pub limit: Option<i64>,
    pub continue_token: Option<&'a str>,
    pub resource_version: Option<&'a str>,
    /// The list filters by a label or field selector (no `remainingItemCount` then).
    pub filtered: bool,
}

impl Snapshots {
    /// Drops every snapshot: every outstanding continue token expires (etcd compaction).
    pub fn compact(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u64, Scope), Snapshot>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One chunk. `current` reads the scope's objects now, with the store's version; `keep`
    /// says whether an object passes the request's selectors.
    #[allow(clippy::too_many_arguments)]
    pub fn page(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        request: &Request<'_>,
        current: impl FnOnce() -> (Vec<Arc<Value>>, u64),
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Page, ApiError> {
        let scope = Scope {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
        };
        let limit = request
            .limit
            .filter(|limit| *limit > 0)
            .and_then(|limit| usize::try_from(limit).ok());
        let (items, version, after) = match request.continue_token.filter(|t| !t.is_empty()) {
            None => {
                let (items, version) = current();
                (Arc::new(items), version, None)
            }
            Some(token) => {
                if request
                    .resource_version
                    .is_some_and(|rv| !rv.is_empty() && rv != "0")
                {
                    return Err(ApiError::bad_request(
                        "specifying resource version is not allowed when using continue",
                    ));
                }
                let token = Token::decode(token)?;
                if token.version < 0 {
                    let (items, version) = current();
                    (Arc::new(items), version, Some(token.after))
                } else {
                    let version = u64::try_from(token.version).unwrap_or(0);
                    let mut snapshots = self.lock();
                    expire(&mut snapshots);
                    match snapshots.get(&(version, scope.clone())) {
                        Some(snapshot) => (snapshot.items.clone(), version, Some(token.after)),
                        None => {
                            let mut error = ApiError::resource_expired(EXPIRED_MESSAGE);
                            error.list_continue = Some(
                                Token {
                                    version: -1,
                                    after: token.after,
                                }
                                .encode(),
                            );
                            return Err(error);
                        }
                    }
                }
            }
        };
        let start = match &after {
            None => 0,
            Some(after) => items.partition_point(|item| key_of(item).as_str() <= after.as_str()),
        };
        let mut page = Vec::new();
        // Index of the last item examined: the next chunk starts after it.
        let mut examined = None;
        for (index, item) in items.iter().enumerate().skip(start) {
            if limit.is_some_and(|limit| page.len() == limit) {
                break;
            }
            examined = Some(index);
            if keep(item) {
                page.push(item.clone());
            }
        }
        // As etcd answers: more keys in the range after the chunk make a token, whether or not
        // any of them passes the selectors (the next chunk may then be empty).
        let more = limit.is_some() && examined.is_some_and(|last| last + 1 < items.len());
        if !more {
            return Ok(Page {
                items: page,
                version,
                continue_token: None,
                remaining: None,
            });
        }
        let last = examined.unwrap_or(start);
        let remaining = (!request.filtered).then(|| items.len() - last - 1);
        let mut snapshots = self.lock();
        expire(&mut snapshots);
        if !snapshots.contains_key(&(version, scope.clone())) {
            while snapshots.len() >= MAX_SNAPSHOTS {
                let oldest = snapshots
                    .iter()
                    .min_by_key(|(_, snapshot)| snapshot.taken)
                    .map(|(key, _)| key.clone());
                match oldest {
                    Some(key) => snapshots.remove(&key),
                    None => break,
                };
            }
            snapshots.insert(
                (version, scope),
                Snapshot {
                    taken: Instant::now(),
                    items: items.clone(),
                },
            );
        }
        let token = Token {
            version: i64::try_from(version).unwrap_or(i64::MAX),
            after: key_of(&items[last]),
        };
        Ok(Page {
            items: page,
            version,
            continue_token: Some(token.encode()),
            remaining,
        })
    }
}

fn expire(snapshots: &mut BTreeMap<(u64, Scope), Snapshot>) {
    snapshots.retain(|_, snapshot| snapshot.taken.elapsed() < RETENTION);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(names: &[&str]) -> Vec<Arc<Value>> {
        names
            .iter()
            .map(|name| {
                Arc::new(json!({"metadata": {"name": name, "namespace": "ns", "labels": {"owner": if name.starts_with('h') { "helm" } else { "other" }}}}))
            })
            .collect()
    }

    fn names(page: &Page) -> Vec<String> {
        page.items
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn request(limit: i64, token: Option<&str>) -> Request<'_> {
        Request {
            limit: Some(limit),
            continue_token: token,
            resource_version: None,
            filtered: false,
        }
    }

    #[test]
    fn chunks_are_consistent_at_the_first_version_and_count_what_remains() {
        let snapshots = Snapshots::default();
        let all = |_: &Value| true;
        let first = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &request(2, None),
                || (secrets(&["a", "b", "c", "d", "e"]), 7),
                all,
            )
            .unwrap();
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first.remaining, Some(3));
        let token = first.continue_token.clone().unwrap();
        // The store changed meanwhile: the next chunks still show version 7.
        let second = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &request(2, Some(&token)),
                || (secrets(&["a", "z"]), 9),
                all,
            )
            .unwrap();
        assert_eq!(
            (names(&second), second.version),
            (vec!["c".to_owned(), "d".to_owned()], 7)
        );
        let token = second.continue_token.clone().unwrap();
        let last = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &request(2, Some(&token)),
                || (Vec::new(), 9),
                all,
            )
            .unwrap();
        assert_eq!(names(&last), ["e"]);
        assert_eq!((last.continue_token, last.remaining), (None, None));
    }

    #[test]
    fn selectors_fill_chunks_and_leave_remaining_unset() {
        let snapshots = Snapshots::default();
        let helm = |item: &Value| item["metadata"]["labels"]["owner"] == "helm";
        let mut filtered = request(2, None);
        filtered.filtered = true;
        let first = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &filtered,
                || (secrets(&["h1", "o1", "h2", "o2", "h3"]), 3),
                helm,
            )
            .unwrap();
        assert_eq!(names(&first), ["h1", "h2"]);
        assert_eq!(first.remaining, None);
        let token = first.continue_token.unwrap();
        let mut next = request(2, Some(&token));
        next.filtered = true;
        let second = snapshots
            .page("", "secrets", Some("ns"), &next, || (Vec::new(), 4), helm)
            .unwrap();
        assert_eq!(names(&second), ["h3"]);
        assert!(second.continue_token.is_none());
    }

    #[test]
    fn a_compacted_token_is_410_expired_with_an_inconsistent_token() {
        let snapshots = Snapshots::default();
        let all = |_: &Value| true;
        let first = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &request(1, None),
                || (secrets(&["a", "b", "c"]), 5),
                all,
            )
            .unwrap();
        snapshots.compact();
        let token = first.continue_token.unwrap();
        let error = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &request(1, Some(&token)),
                || (secrets(&["a", "b", "c"]), 6),
                all,
            )
            .unwrap_err();
        assert_eq!((error.code, error.reason), (410, "Expired"));
        assert_eq!(error.message, EXPIRED_MESSAGE);
        let inconsistent = error.list_continue.unwrap();
        assert_eq!(
            Token::decode(&inconsistent).unwrap(),
            Token {
                version: -1,
                after: "ns/a".into()
            }
        );
        let rest = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &request(5, Some(&inconsistent)),
                || (secrets(&["a", "b", "d"]), 6),
                all,
            )
            .unwrap();
        assert_eq!(
            (names(&rest), rest.version),
            (vec!["b".to_owned(), "d".to_owned()], 6)
        );
    }

    #[test]
    fn continue_refuses_a_resource_version_and_malformed_tokens() {
        let snapshots = Snapshots::default();
        let all = |_: &Value| true;
        let token = Token {
            version: 5,
            after: "ns/a".into(),
        }
        .encode();
        let mut with_version = request(1, Some(&token));
        with_version.resource_version = Some("5");
        let error = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &with_version,
                || (Vec::new(), 5),
                all,
            )
            .unwrap_err();
        assert_eq!(error.code, 400);
        assert_eq!(
            error.message,
            "specifying resource version is not allowed when using continue"
        );
        let error = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &request(1, Some("not-a-token")),
                || (Vec::new(), 5),
                all,
            )
            .unwrap_err();
        assert_eq!((error.code, error.reason), (400, "BadRequest"));
    }

    #[test]
    fn no_limit_is_the_whole_list_and_a_fitting_limit_has_no_token() {
        let snapshots = Snapshots::default();
        let all = |_: &Value| true;
        let whole = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &Request::default(),
                || (secrets(&["a", "b"]), 2),
                all,
            )
            .unwrap();
        assert_eq!(names(&whole), ["a", "b"]);
        let fits = snapshots
            .page(
                "",
                "secrets",
                Some("ns"),
                &request(2, None),
                || (secrets(&["a", "b"]), 2),
                all,
            )
            .unwrap();
        assert_eq!((fits.continue_token, fits.remaining), (None, None));
    }
}
