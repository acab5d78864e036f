//! kube-rs watches against the sandbox: every change arrives in order, and a watch resumes from a
//! resourceVersion without losing or repeating events.

mod support;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};

use support::sandbox;

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "data": {"value": value},
    }))
    .expect("a ConfigMap")
}

fn describe(event: &WatchEvent<ConfigMap>) -> Option<(String, String, String)> {
    let (kind, object) = match event {
        WatchEvent::Added(object) => ("ADDED", object),
        WatchEvent::Modified(object) => ("MODIFIED", object),
        WatchEvent::Deleted(object) => ("DELETED", object),
        WatchEvent::Bookmark(_) | WatchEvent::Error(_) => return None,
    };
    let value = object
        .data
        .as_ref()
        .and_then(|data| data.get("value"))
        .cloned()
        .unwrap_or_default();
    Some((
        kind.to_owned(),
        value,
        object.metadata.resource_version.clone().unwrap_or_default(),
    ))
}

#[tokio::test]
async fn a_watch_sees_every_change_in_order_and_resumes_from_a_resource_version() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("watch");
    let api: Api<ConfigMap> = Api::namespaced(sandbox.client(), &namespace.name);
    let start = api
        .list(&Default::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("a list resourceVersion");

    let mut object = api
        .create(&PostParams::default(), &config_map("watched", "1"))
        .await
        .expect("create");
    for value in ["2", "3"] {
        object.data = Some([("value".to_owned(), value.to_owned())].into());
        object = api
            .replace("watched", &PostParams::default(), &object)
            .await
            .expect("replace");
    }
    api.delete("watched", &DeleteParams::default())
        .await
        .expect("delete");

    let params = WatchParams::default().timeout(10);
    let events: Vec<(String, String, String)> = api
        .watch(&params, &start)
        .await
        .expect("watch")
        .try_filter_map(|event| async move { Ok(describe(&event)) })
        .take(5)
        .try_collect()
        .await
        .expect("events");
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|(kind, value, _)| (kind.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("ADDED", "1"),
            ("MODIFIED", "2"),
            ("MODIFIED", "3"),
            ("DELETED", "3")
        ]
    );
    let versions: Vec<u64> = events
        .iter()
        .map(|(_, _, version)| version.parse().expect("numeric resourceVersion"))
        .collect();
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "resourceVersions must increase: {versions:?}"
    );

    // Resuming after the second event yields exactly the two that followed it.
    let resumed: Vec<(String, String, String)> = api
        .watch(&params, &events[1].2)
        .await
        .expect("resumed watch")
        .try_filter_map(|event| async move { Ok(describe(&event)) })
        .take(3)
        .try_collect()
        .await
        .expect("resumed events");
    let kinds: Vec<(&str, &str)> = resumed
        .iter()
        .map(|(kind, value, _)| (kind.as_str(), value.as_str()))
        .collect();
    assert_eq!(kinds, vec![("MODIFIED", "3"), ("DELETED", "3")]);
}
