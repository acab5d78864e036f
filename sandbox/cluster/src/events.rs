//! Writing core/v1 Events the way the real components do, so `kubectl describe` and psctl's
//! diagnosis can show them. Repeats of the same event on the same object bump `count` and
//! `lastTimestamp` instead of creating a new object, as the real event aggregator does.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Mutex;

/// Event type `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Routine transition.
    Normal,
    /// Something an operator should look at.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A reference to the object an event is about.
pub fn object_reference<K: Resource<DynamicType = ()>>(
    object: &K,
    field_path: Option<String>,
) -> ObjectReference {
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path,
    }
}

/// (object UID, reason, message): repeats of one key are aggregated.
type EventKey = (String, String, String);

/// Records events for one component (`deployment-controller`, `kubelet`, ...).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    seen: Arc<Mutex<HashMap<EventKey, (String, i32)>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Recorder")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder for `component`, optionally on node `host`.
    pub fn new(client: Client, component: &str, host: Option<String>) -> Self {
        Self {
            client,
            component: component.to_owned(),
            host,
            seen: Arc::default(),
        }
    }

    /// Records an event; failures are logged and swallowed, since an event lost must never stop
    /// a controller.
    pub async fn record(
        &self,
        regarding: ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(error) = self.try_record(regarding, kind, reason, message).await {
            tracing::debug!(%error, reason, "could not record event");
        }
    }

    async fn try_record(
        &self,
        regarding: ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        let key = (
            regarding.uid.clone().unwrap_or_default(),
            reason.to_owned(),
            message.to_owned(),
        );
        let mut seen = self.seen.lock().await;
        if let Some((name, count)) = seen.get_mut(&key) {
            *count += 1;
            let patch = serde_json::json!({"count": *count, "lastTimestamp": Time(now)});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // The event expired or was deleted: write a fresh one below.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let object_name = regarding.name.clone().unwrap_or_default();
        let name = format!("{object_name}.{:x}", now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: regarding,
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(kind.as_str().to_owned()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: self.host.clone().or_else(|| Some(self.component.clone())),
            ..Event::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        seen.insert(key, (created.name_any(), 1));
        // Bounded memory: aggregation only matters for recent repeats.
        if seen.len() > 4096 {
            seen.clear();
        }
        Ok(())
    }
}
