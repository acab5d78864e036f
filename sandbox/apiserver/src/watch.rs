//! Watch streams: newline-delimited `{"type","object"}` events for one resource, filtered by
//! namespace and selectors, starting after a resourceVersion (history replay), at "now" with
//! synthetic ADDED events for what exists, or with `sendInitialEvents` and its closing bookmark.
//! A resourceVersion older than the kept history yields one ERROR event carrying a 410 Expired
//! Status, which is how clients learn to re-list.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::handlers::State;
use crate::query::Query;
use crate::resources::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{EventType, WatchEvent};
use crate::table::{self, Include};

/// The body of a watch response.
pub type WatchBody = BoxStream<'static, Result<Bytes, std::io::Error>>;

fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text = json!({ "type": event_type, "object": object }).to_string();
    text.push('\n');
    Bytes::from(text)
}

struct Filter {
    info: ResourceInfo,
    /// Render objects as single-row Tables (kubectl get --watch).
    table: Option<Include>,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn wants_object(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event type this watcher sees for `event`, if any: a modification that moves an
    /// object into the selection is ADDED, one that moves it out is DELETED, as the real
    /// server reports them.
    fn wants(&self, event: &WatchEvent) -> Option<&'static str> {
        let ours = event.key.group == self.info.group
            && event.key.resource == self.info.plural
            && self
                .namespace
                .as_deref()
                .is_none_or(|namespace| event.key.namespace == namespace);
        if !ours {
            return None;
        }
        let now = self.wants_object(&event.object);
        let before = event
            .previous
            .as_deref()
            .is_some_and(|previous| self.wants_object(previous));
        match (event.event_type, before, now) {
            (EventType::Modified, false, true) => Some("ADDED"),
            (EventType::Modified, true, false) => Some("DELETED"),
            (EventType::Modified, false, false) => None,
            (_, _, true) => Some(event.event_type.as_str()),
            (_, _, false) => None,
        }
    }

    /// One event line; as a Table, only the first carries column definitions, as the real
    /// server sends them.
    fn event(&self, event_type: &str, object: &Arc<Value>, columns_sent: &mut bool) -> Bytes {
        match self.table {
            None => line(event_type, object),
            Some(include) => {
                let version = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|text| text.parse().ok());
                let rendered = table::table(
                    &self.info,
                    std::slice::from_ref(object),
                    version,
                    include,
                    !*columns_sent,
                );
                *columns_sent = true;
                line(event_type, &rendered)
            }
        }
    }

    fn bookmark(&self, version: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({ "resourceVersion": version.to_string() });
        if initial_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        line(
            "BOOKMARK",
            &json!({ "kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": metadata }),
        )
    }
}

/// Starts a watch of `info` (in `namespace`, or all) as the query asks.
pub fn start(
    state: &Arc<State>,
    info: &ResourceInfo,
    namespace: Option<&str>,
    query: &Query,
    table: Option<Include>,
) -> Result<WatchBody, ApiError> {
    let filter = Filter {
        info: info.clone(),
        table,
        namespace: if info.namespaced {
            namespace.map(str::to_owned)
        } else {
            None
        },
        labels: LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())?,
    };
    let send_initial = query.flag("sendInitialEvents");
    let from = match query.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {text:?}: it must be a resourceVersion this server returned")))?),
    };
    let snapshot_wanted = send_initial || from.is_none();
    // Bookmarks are not Tables; kubectl's table watches do not need them.
    let allow_bookmarks = query.flag("allowWatchBookmarks") && table.is_none();
    let timeout = Duration::from_secs(
        query
            .integer("timeoutSeconds")?
            .filter(|seconds| *seconds > 0)
            .map_or(1800, |seconds| seconds.unsigned_abs()),
    );
    let subscription = match state.store.subscribe(
        if send_initial { None } else { from },
        snapshot_wanted.then_some((
            info.group.as_str(),
            info.plural.as_str(),
            filter.namespace.as_deref(),
        )),
    ) {
        Ok(subscription) => subscription,
        Err(error) => {
            let event = line("ERROR", &error.to_status());
            return Ok(futures::stream::once(async move { Ok(event) }).boxed());
        }
    };
    let bookmark_interval = state.config.bookmark_interval;
    let mut shutdown = state.shutdown.clone();
    let mut cuts = state.watch_cuts.subscribe();
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    tokio::spawn(async move {
        let mut live = subscription.live;
        let mut last = subscription.current;
        let mut columns_sent = false;
        let mut initial: Vec<Bytes> = Vec::new();
        for object in subscription
            .snapshot
            .iter()
            .filter(|object| filter.wants_object(object))
        {
            initial.push(filter.event("ADDED", object, &mut columns_sent));
        }
        if send_initial {
            initial.push(filter.bookmark(last, true));
        }
        for event in &subscription.backlog {
            last = last.max(event.resource_version);
            if let Some(event_type) = filter.wants(event) {
                initial.push(filter.event(event_type, &event.object, &mut columns_sent));
            }
        }
        if let Some(highest) = subscription.backlog.last() {
            last = highest.resource_version;
        }
        for bytes in initial {
            if sender.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval_at(
            tokio::time::Instant::now() + bookmark_interval,
            bookmark_interval,
        );
        loop {
            let bytes = tokio::select! {
                () = &mut deadline => return,
                () = sender.closed() => return,
                _ = shutdown.changed() => return,
                // Cut from outside, as a restarting API server or a load balancer ends streams.
                _ = cuts.changed() => return,
                _ = bookmarks.tick(), if allow_bookmarks => filter.bookmark(last, false),
                received = live.recv() => match received {
                    Ok(event) => {
                        if event.resource_version <= last {
                            continue;
                        }
                        last = event.resource_version;
                        let Some(event_type) = filter.wants(&event) else {
                            continue;
                        };
                        filter.event(event_type, &event.object, &mut columns_sent)
                    }
                    // A watcher too slow to keep up ends its stream; it resumes from the last
                    // version it saw, or re-lists if that has left the history.
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
                },
            };
            if sender.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
    });
    Ok(tokio_stream_from(receiver))
}

fn tokio_stream_from(mut receiver: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> WatchBody {
    futures::stream::poll_fn(move |context| receiver.poll_recv(context)).boxed()
}
