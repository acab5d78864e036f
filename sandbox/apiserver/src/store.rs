//! Object storage: every object as JSON, keyed by group/resource/namespace/name, one global
//! resourceVersion counter, and a bounded history of watch events fed to watchers.
//!
//! Written here rather than on kube-fake-client: watch needs each write, its resourceVersion and
//! its event to happen under one lock so a watcher resuming from any resourceVersion sees every
//! later change exactly once and in order; kube-fake-client has no watch or event stream and
//! keeps its own per-object versions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::status::ApiError;

/// Where one object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// API group, empty for core.
    pub group: String,
    /// Resource plural.
    pub resource: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The watch wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as recorded in the history.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// resourceVersion of the change.
    pub resource_version: u64,
    /// What happened.
    pub event_type: EventType,
    /// Which object.
    pub key: ObjectKey,
    /// The object after the change (before it, for deletions, with the deletion's version).
    pub object: Arc<Value>,
    /// The object before a modification (to tell selector-filtered watchers that an object
    /// entered or left their selection).
    pub previous: Option<Arc<Value>>,
}

/// What a mutation decided to do with the object under its key.
#[derive(Debug)]
pub enum Outcome {
    /// Write this object (create or replace).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Leave everything as it is and answer with the current object.
    Unchanged,
}

struct Inner {
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    resource_version: u64,
    history: VecDeque<Arc<WatchEvent>>,
    /// Highest resourceVersion whose event was dropped from the history.
    compacted: u64,
}

/// The object store shared by every request.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    history_limit: usize,
}

/// A watch started at a resourceVersion: events already in the history, then the live feed.
pub struct Subscription {
    /// Events after the requested version, oldest first.
    pub backlog: Vec<Arc<WatchEvent>>,
    /// Later events.
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
    /// The store's version when the watch started.
    pub current: u64,
    /// The objects of the requested resource at `current`, when a snapshot was asked for.
    pub snapshot: Vec<Arc<Value>>,
}

/// Which objects a subscription's snapshot holds: group, resource, and namespace (all if `None`).
pub type SnapshotOf<'a> = (&'a str, &'a str, Option<&'a str>);

fn set_resource_version(object: &mut Value, version: u64) {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]["resourceVersion"] = json!(version.to_string());
}

/// Objects equal apart from their resourceVersion: a write that changes nothing is not a write.
fn same_content(old: &Value, new: &Value) -> bool {
    let strip = |value: &Value| {
        let mut value = value.clone();
        if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
        }
        value
    };
    strip(old) == strip(new)
}

impl Store {
    /// An empty store keeping the last `history_limit` events for watch resumption.
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(history_limit.clamp(1024, 65536));
        Self {
            inner: Mutex::new(Inner {
                objects: BTreeMap::new(),
                resource_version: 1,
                history: VecDeque::new(),
                compacted: 0,
            }),
            events,
            history_limit: history_limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written map (every write is a
        // single insert/remove), so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object of a resource (in one namespace, or all when `namespace` is `None`), sorted by
    /// namespace and name, with the version the list is consistent at.
    pub fn list(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        (
            Self::range(&inner, group, resource, namespace),
            inner.resource_version,
        )
    }

    fn range(
        inner: &Inner,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Vec<Arc<Value>> {
        let start = ObjectKey {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.unwrap_or_default().to_owned(),
            name: String::new(),
        };
        inner
            .objects
            .range(start..)
            .take_while(|(key, _)| {
                key.group == group
                    && key.resource == resource
                    && namespace.is_none_or(|namespace| key.namespace == namespace)
            })
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Every object in a namespace, of any resource (namespace deletion, orphaning).
    pub fn keys_in_namespace(&self, namespace: &str) -> Vec<ObjectKey> {
        self.lock()
            .objects
            .keys()
            .filter(|key| key.namespace == namespace)
            .cloned()
            .collect()
    }

    /// Runs `decide` on the current object under `key` (if any) and applies its outcome atomically:
    /// the write, its new resourceVersion and its watch event happen under one lock. Returns the
    /// object as stored afterwards (the removed one for deletions), or `None` when there was
    /// nothing and nothing was written.
    pub fn mutate(
        &self,
        key: &ObjectKey,
        decide: impl FnOnce(Option<&Value>) -> Result<Outcome, ApiError>,
    ) -> Result<Option<Arc<Value>>, ApiError> {
        let mut inner = self.lock();
        let current = inner.objects.get(key).cloned();
        let outcome = decide(current.as_deref())?;
        let (event_type, object) = match outcome {
            Outcome::Unchanged => return Ok(current),
            Outcome::Put(new) => {
                if let Some(old) = &current
                    && same_content(old, &new)
                {
                    return Ok(current);
                }
                let version = inner.resource_version + 1;
                let mut new = new;
                set_resource_version(&mut new, version);
                let new = Arc::new(new);
                inner.resource_version = version;
                inner.objects.insert(key.clone(), new.clone());
                (
                    if current.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    new,
                )
            }
            Outcome::Delete => {
                let Some(mut old) = current.as_deref().cloned() else {
                    return Ok(None);
                };
                let version = inner.resource_version + 1;
                set_resource_version(&mut old, version);
                inner.resource_version = version;
                inner.objects.remove(key);
                (EventType::Deleted, Arc::new(old))
            }
        };
        let event = Arc::new(WatchEvent {
            resource_version: inner.resource_version,
            event_type,
            key: key.clone(),
            object: object.clone(),
            previous: if event_type == EventType::Modified {
                current
            } else {
                None
            },
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > self.history_limit {
            if let Some(dropped) = inner.history.pop_front() {
                inner.compacted = dropped.resource_version;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
        Ok(Some(object))
    }

    /// Forgets the watch history up to now, as etcd compaction does: a watch resumed from any
    /// resourceVersion this server has already handed out gets 410 Expired and must re-list.
    /// Returns the version compacted to.
    pub fn compact(&self) -> u64 {
        let mut inner = self.lock();
        inner.history.clear();
        inner.compacted = inner.resource_version;
        inner.compacted
    }

    /// Starts a watch after `from`: the history since then plus the live feed, subscribed under
    /// the lock so no event falls between them. `None` starts at the current version.
    pub fn subscribe(
        &self,
        from: Option<u64>,
        snapshot_of: Option<SnapshotOf<'_>>,
    ) -> Result<Subscription, ApiError> {
        let inner = self.lock();
        let snapshot = match snapshot_of {
            Some((group, resource, namespace)) => Self::range(&inner, group, resource, namespace),
            None => Vec::new(),
        };
        let current = inner.resource_version;
        let from = from.unwrap_or(current);
        if from < inner.compacted {
            return Err(ApiError::expired(from, inner.compacted + 1));
        }
        let backlog = inner
            .history
            .iter()
            .filter(|event| event.resource_version > from)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            live: self.events.subscribe(),
            current,
            snapshot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            resource: "configmaps".to_owned(),
            namespace: "default".to_owned(),
            name: name.to_owned(),
        }
    }

    fn put(store: &Store, name: &str, data: &str) -> Arc<Value> {
        let object = json!({ "metadata": { "name": name }, "data": { "k": data } });
        store
            .mutate(&key(name), |_| Ok(Outcome::Put(object)))
            .expect("writes")
            .expect("stored")
    }

    #[test]
    fn every_write_takes_the_next_global_version_and_no_op_writes_take_none() {
        let store = Store::new(100);
        let first = put(&store, "a", "1");
        let second = put(&store, "b", "1");
        assert_eq!(first["metadata"]["resourceVersion"], "2");
        assert_eq!(second["metadata"]["resourceVersion"], "3");
        let same = put(&store, "a", "1");
        assert_eq!(same["metadata"]["resourceVersion"], "2");
        assert_eq!(store.resource_version(), 3);
    }

    #[test]
    fn subscription_replays_history_after_the_version_and_expires_old_ones() {
        let store = Store::new(2);
        put(&store, "a", "1");
        put(&store, "a", "2");
        put(&store, "a", "3");
        let subscription = store.subscribe(Some(3), None).expect("within history");
        let versions: Vec<u64> = subscription
            .backlog
            .iter()
            .map(|event| event.resource_version)
            .collect();
        assert_eq!(versions, vec![4]);
        assert_eq!(subscription.backlog[0].event_type, EventType::Modified);
        let error = store.subscribe(Some(1), None).err().expect("too old");
        assert_eq!(error.code, 410);
        assert_eq!(error.reason, "Expired");
    }

    #[test]
    fn compaction_expires_every_version_handed_out_before_it() {
        let store = Store::new(100);
        put(&store, "a", "1");
        put(&store, "a", "2");
        let compacted = store.compact();
        assert_eq!(compacted, 3);
        let error = store.subscribe(Some(2), None).err().expect("compacted");
        assert_eq!((error.code, error.reason), (410, "Expired"));
        let resumed = store.subscribe(Some(3), None).expect("the current version");
        assert!(resumed.backlog.is_empty());
        put(&store, "a", "3");
        let later = store
            .subscribe(Some(3), None)
            .expect("after the compaction");
        assert_eq!(later.backlog.len(), 1);
    }

    #[test]
    fn list_is_scoped_to_resource_and_namespace() {
        let store = Store::new(10);
        put(&store, "a", "1");
        let other = ObjectKey {
            namespace: "other".to_owned(),
            ..key("b")
        };
        store
            .mutate(&other, |_| {
                Ok(Outcome::Put(json!({ "metadata": { "name": "b" } })))
            })
            .expect("writes");
        assert_eq!(store.list("", "configmaps", Some("default")).0.len(), 1);
        assert_eq!(store.list("", "configmaps", None).0.len(), 2);
        assert_eq!(store.list("", "secrets", None).0.len(), 0);
        let deleted = store
            .mutate(&key("a"), |_| Ok(Outcome::Delete))
            .expect("deletes")
            .expect("existed");
        assert_eq!(deleted["metadata"]["name"], "a");
        assert!(store.get(&key("a")).is_none());
    }
}
