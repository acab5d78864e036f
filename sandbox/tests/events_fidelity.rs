//! Events through both API versions, as a real cluster serves them: an Event written by
//! kube-rs's Recorder (`events.k8s.io/v1`, what psctl uses) is one object that real kubectl
//! lists as a core `v1` Event and as an `events.k8s.io/v1` Event, with the fields converted;
//! a repeat becomes a series through a merge patch; the stricter validation of the new API
//! applies only to writes through it; watches, deletes and errors speak the requested version.

mod support;

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::events::{Event as Published, EventType, Recorder, Reporter};
use kube::{Resource as _, ResourceExt as _};

use support::sandbox;

fn find<'a>(items: &'a serde_json::Value, reason: &str) -> &'a serde_json::Value {
    items["items"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|item| item["reason"] == reason)
        .unwrap_or_else(|| panic!("no `{reason}` event in {items:#}"))
}

#[tokio::test]
async fn an_event_written_through_events_k8s_io_is_the_same_object_in_both_versions() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("events");
    let client = sandbox.client();
    let config_map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web", "namespace": namespace.name }
    }))
    .unwrap();
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), &namespace.name)
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create the regarded object");
    let regarding = config_map.object_ref(&());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "psctl".into(),
            instance: Some("host-1".into()),
        },
    );
    let event = Published {
        type_: EventType::Normal,
        reason: "Deployed".into(),
        note: Some(
            "deploy by ci@runner pid 7: revision 1 -> deployed (succeeded; audit #42)".into(),
        ),
        action: "Deploy".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &regarding)
        .await
        .expect("the Recorder's create through events.k8s.io/v1 is accepted");

    // Discovery lists the group, with `ev` as its short name too.
    let resources = sandbox
        .kubectl(&["api-resources", "--api-group=events.k8s.io", "-o", "wide"])
        .ok("api-resources");
    assert!(
        resources.contains("events") && resources.contains("events.k8s.io/v1"),
        "{resources}"
    );

    // The core view: converted field names.
    let core = namespace.get_json(&["get", "events"]);
    let item = find(&core, "Deployed");
    assert_eq!(item["apiVersion"], "v1");
    assert_eq!(item["involvedObject"]["kind"], "ConfigMap");
    assert_eq!(item["involvedObject"]["name"], "web");
    assert_eq!(item["involvedObject"]["uid"], json_str(config_map.uid()));
    assert_eq!(item["message"], event.note.clone().unwrap());
    assert_eq!(item["reportingComponent"], "psctl");
    assert_eq!(item["reportingInstance"], "host-1");
    assert_eq!(item["type"], "Normal");
    assert_eq!(item["action"], "Deploy");
    assert!(
        item.get("note").is_none() && item.get("regarding").is_none(),
        "{item:#}"
    );
    let name = item["metadata"]["name"].as_str().unwrap().to_owned();

    // The events.k8s.io view of the same object.
    let new = namespace.get_json(&["get", "events.v1.events.k8s.io"]);
    let item = find(&new, "Deployed");
    assert_eq!(item["apiVersion"], "events.k8s.io/v1");
    assert_eq!(item["metadata"]["name"], name.as_str());
    assert_eq!(item["regarding"]["name"], "web");
    assert_eq!(item["note"], event.note.clone().unwrap());
    assert_eq!(item["reportingController"], "psctl");
    assert!(item["eventTime"].is_string(), "{item:#}");

    // Both tables show it the way kubectl prints events.
    for resource in ["events", "events.v1.events.k8s.io"] {
        let table = namespace.kubectl(&["get", resource]).ok("get as a table");
        assert!(
            table.contains("Deployed")
                && table.contains("configmap/web")
                && table.contains("audit #42"),
            "{resource}:\n{table}"
        );
    }

    // A repeat within the Recorder's window becomes a series: a merge patch through
    // events.k8s.io/v1, visible through both versions.
    recorder
        .publish(&event, &regarding)
        .await
        .expect("the series patch is accepted");
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace.name);
    let patched = events.get(&name).await.unwrap();
    assert_eq!(patched.series.as_ref().map(|s| s.count), Some(2));
    let core_events: Api<CoreEvent> = Api::namespaced(client.clone(), &namespace.name);
    let core_view = core_events.get(&name).await.unwrap();
    assert_eq!(core_view.series.as_ref().and_then(|s| s.count), Some(2));
    assert_eq!(core_view.message, event.note);

    // The new API's own validation: a rewrite of what the Event says is refused...
    let rewrite = events
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "note": "something else" })),
        )
        .await
        .expect_err("an Event's note is immutable through events.k8s.io/v1");
    assert!(
        matches!(&rewrite, kube::Error::Api(status) if status.code == 422 && status.message.contains("message: Invalid value")),
        "{rewrite:?}"
    );
    // ...and so is a new Event without a reporting controller, which the core API accepts.
    let bare = serde_json::json!({
        "metadata": { "name": "bare", "namespace": namespace.name },
        "regarding": { "kind": "ConfigMap", "name": "web", "namespace": namespace.name },
        "reason": "Bare", "action": "Test", "type": "Normal",
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingInstance": "host-1",
    });
    let refused = events
        .create(
            &PostParams::default(),
            &serde_json::from_value(bare).unwrap(),
        )
        .await
        .expect_err("reportingController is required through events.k8s.io/v1");
    assert!(
        matches!(&refused, kube::Error::Api(status) if status.code == 422 && status.message.contains("reportingController: Required value")),
        "{refused:?}"
    );
    let legacy: CoreEvent = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "legacy", "namespace": namespace.name },
        "involvedObject": { "kind": "ConfigMap", "name": "web", "namespace": namespace.name },
        "reason": "Legacy", "message": "an old-style event", "type": "Normal",
        "source": { "component": "kubelet" }, "count": 1,
    }))
    .unwrap();
    core_events
        .create(&PostParams::default(), &legacy)
        .await
        .expect("the core API keeps its lenient validation");

    // A watch through events.k8s.io/v1 sees the core-written Event in its own form.
    let mut stream = events
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .expect("watch starts")
        .boxed();
    let mut seen = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(next)) = tokio::time::timeout_at(deadline, stream.next()).await {
        if let WatchEvent::Added(event) = next.expect("a watch event")
            && event.name_any() == "legacy"
        {
            seen = Some(event);
            break;
        }
    }
    let seen = seen.expect("the legacy Event is watched through events.k8s.io/v1");
    assert_eq!(seen.note.as_deref(), Some("an old-style event"));
    assert_eq!(seen.deprecated_count, Some(1));
    assert_eq!(
        seen.deprecated_source
            .and_then(|source| source.component)
            .as_deref(),
        Some("kubelet")
    );
    assert_eq!(
        seen.regarding
            .and_then(|r: ObjectReference| r.name)
            .as_deref(),
        Some("web")
    );

    // Deleting through one version removes it from both; errors name the requested resource.
    events
        .delete("legacy", &DeleteParams::default())
        .await
        .expect("delete through events.k8s.io/v1");
    let gone = core_events
        .get("legacy")
        .await
        .expect_err("deleted for the core API too");
    assert!(
        matches!(&gone, kube::Error::Api(status) if status.code == 404),
        "{gone:?}"
    );
    let missing = namespace.kubectl(&["get", "events.v1.events.k8s.io", "legacy"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .stderr
            .contains("events.events.k8s.io \"legacy\" not found"),
        "{}",
        missing.stderr
    );
}

fn json_str(text: Option<String>) -> serde_json::Value {
    serde_json::Value::String(text.expect("the object has a uid"))
}
