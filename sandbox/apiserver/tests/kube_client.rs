//! kube-rs against the emulated API server: CRUD, selectors, errors, patches, subresources,
//! watches, protobuf bodies and runtime CRDs.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

fn deployment(name: &str, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": image, "env": [{ "name": "A", "value": "1" }] }] }
            }
        }
    }))
    .expect("valid deployment")
}

fn pod(name: &str, labels: Value, phase: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": [{ "name": "app", "image": "img:1" }] },
        "status": { "phase": phase }
    }))
    .expect("valid pod")
}

fn api_error(error: kube::Error) -> kube::core::Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn deployment_crud_with_metadata_defaults_and_real_errors() {
    let test = common::start().await;
    common::namespace(&test.client, "crud").await;
    let api: Api<Deployment> = Api::namespaced(test.client.clone(), "crud");
    let created = api
        .create(&PostParams::default(), &deployment("web", "web:1"))
        .await
        .expect("created");
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|uid| uid.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("crud"));
    let spec = created.spec.clone().expect("spec");
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    assert_eq!(
        spec.strategy
            .as_ref()
            .and_then(|strategy| strategy.type_.as_deref()),
        Some("RollingUpdate")
    );
    assert_eq!(
        spec.template
            .spec
            .as_ref()
            .and_then(|pod| pod.restart_policy.as_deref()),
        Some("Always")
    );

    let again = api_error(
        api.create(&PostParams::default(), &deployment("web", "web:1"))
            .await
            .expect_err("duplicate"),
    );
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(again.message, "deployments.apps \"web\" already exists");

    let mut changed = created.clone();
    changed
        .spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("pod spec")
        .containers[0]
        .image = Some("web:2".to_owned());
    let updated = api
        .replace("web", &PostParams::default(), &changed)
        .await
        .expect("updated");
    assert_eq!(updated.metadata.generation, Some(2));
    let created_version: u64 = created
        .metadata
        .resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("numeric rv");
    let updated_version: u64 = updated
        .metadata
        .resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("numeric rv");
    assert!(updated_version > created_version);

    let stale = api_error(
        api.replace("web", &PostParams::default(), &changed)
            .await
            .expect_err("stale resourceVersion"),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale
            .message
            .starts_with("Operation cannot be fulfilled on deployments.apps \"web\""),
        "{}",
        stale.message
    );

    let deleted = api
        .delete("web", &DeleteParams::default())
        .await
        .expect("deleted");
    assert!(
        deleted.is_right(),
        "an immediately deleted object answers with a Status"
    );
    let missing = api_error(api.get("web").await.expect_err("gone"));
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "deployments.apps \"web\" not found");

    let elsewhere: Api<ConfigMap> = Api::namespaced(test.client.clone(), "no-such-namespace");
    let refused = api_error(
        elsewhere
            .create(&PostParams::default(), &ConfigMap::default())
            .await
            .expect_err("namespace missing"),
    );
    assert_eq!(refused.code, 404);
    test.server.shutdown().await;
}

#[tokio::test]
async fn generate_name_and_secret_string_data() {
    let test = common::start().await;
    let api: Api<Secret> = Api::namespaced(test.client.clone(), "default");
    let secret: Secret = serde_json::from_value(
        json!({ "metadata": { "generateName": "token-" }, "stringData": { "key": "value" } }),
    )
    .expect("valid");
    let created = api
        .create(&PostParams::default(), &secret)
        .await
        .expect("created");
    let name = created.metadata.name.clone().expect("named");
    assert!(
        name.starts_with("token-") && name.len() == "token-".len() + 5,
        "{name}"
    );
    assert_eq!(created.data.expect("data")["key"].0, b"value");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    test.server.shutdown().await;
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let test = common::start().await;
    common::namespace(&test.client, "sel").await;
    let api: Api<Pod> = Api::namespaced(test.client.clone(), "sel");
    for (name, track, phase) in [
        ("a", "stable", "Running"),
        ("b", "canary", "Running"),
        ("c", "stable", "Pending"),
    ] {
        let created = api
            .create(
                &PostParams::default(),
                &pod(name, json!({ "app": "web", "track": track }), phase),
            )
            .await
            .expect("created");
        let mut with_status = created.clone();
        with_status.status = pod(name, json!({}), phase).status;
        api.replace_status(name, &PostParams::default(), &with_status)
            .await
            .expect("status set");
    }
    let names = |list: kube::core::ObjectList<Pod>| {
        list.items
            .into_iter()
            .filter_map(|pod| pod.metadata.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("track=stable"))
                .await
                .expect("list")
        ),
        vec!["a", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("track in (canary),app"))
                .await
                .expect("list")
        ),
        vec!["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("track notin (canary),!missing"))
                .await
                .expect("list")
        ),
        vec!["a", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("status.phase=Running"))
                .await
                .expect("list")
        ),
        vec!["a", "b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=c"))
                .await
                .expect("list")
        ),
        vec!["c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("spec.nodeName="))
                .await
                .expect("list")
        )
        .len(),
        3
    );
    let all: Api<Pod> = Api::all(test.client.clone());
    assert_eq!(
        all.list(&ListParams::default().labels("app=web"))
            .await
            .expect("list")
            .items
            .len(),
        3
    );
    test.server.shutdown().await;
}

#[tokio::test]
async fn all_patch_types() {
    let test = common::start().await;
    let api: Api<Deployment> = Api::namespaced(test.client.clone(), "default");
    api.create(&PostParams::default(), &deployment("web", "web:1"))
        .await
        .expect("created");

    let strategic = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "env": [{ "name": "B", "value": "2" }] }] } } } });
    let patched = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(strategic))
        .await
        .expect("strategic");
    let container = &patched
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod")
        .containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("web:1"),
        "strategic merge keeps the other container fields"
    );
    let env: Vec<_> = container
        .env
        .as_ref()
        .expect("env")
        .iter()
        .map(|var| var.name.as_str())
        .collect();
    assert_eq!(env, vec!["A", "B"]);

    let merge = json!({ "metadata": { "labels": { "tier": "front" } }, "spec": { "replicas": 4 } });
    let patched = api
        .patch("web", &PatchParams::default(), &Patch::Merge(merge))
        .await
        .expect("merge");
    assert_eq!(
        patched.spec.as_ref().and_then(|spec| spec.replicas),
        Some(4)
    );
    assert_eq!(
        patched
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get("tier"))
            .map(String::as_str),
        Some("front")
    );

    let operations: json_patch::Patch =
        serde_json::from_value(json!([{ "op": "replace", "path": "/spec/replicas", "value": 1 }]))
            .expect("valid patch");
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::<()>::Json(operations),
        )
        .await
        .expect("json patch");
    assert_eq!(
        patched.spec.as_ref().and_then(|spec| spec.replicas),
        Some(1)
    );

    let stale = json!({ "metadata": { "resourceVersion": "1" }, "spec": { "replicas": 9 } });
    let conflict = api_error(
        api.patch("web", &PatchParams::default(), &Patch::Merge(stale))
            .await
            .expect_err("stale"),
    );
    assert_eq!(conflict.code, 409);

    let applied = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "api" }, "spec": {
        "selector": { "matchLabels": { "app": "api" } },
        "template": { "metadata": { "labels": { "app": "api" } }, "spec": { "containers": [{ "name": "app", "image": "api:1" }] } } } });
    let created = api
        .patch(
            "api",
            &PatchParams::apply("test").force(),
            &Patch::Apply(applied.clone()),
        )
        .await
        .expect("apply creates");
    assert_eq!(
        created.spec.as_ref().and_then(|spec| spec.replicas),
        Some(1)
    );
    let mut second = applied;
    second["spec"]["replicas"] = json!(3);
    let updated = api
        .patch(
            "api",
            &PatchParams::apply("test").force(),
            &Patch::Apply(second),
        )
        .await
        .expect("apply updates");
    assert_eq!(
        updated.spec.as_ref().and_then(|spec| spec.replicas),
        Some(3)
    );
    assert_eq!(updated.metadata.uid, created.metadata.uid);

    let dry = api
        .patch(
            "api",
            &PatchParams {
                dry_run: true,
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "spec": { "replicas": 7 } })),
        )
        .await
        .expect("dry run");
    assert_eq!(dry.spec.as_ref().and_then(|spec| spec.replicas), Some(7));
    assert_eq!(
        api.get("api")
            .await
            .expect("get")
            .spec
            .and_then(|spec| spec.replicas),
        Some(3),
        "dry run stores nothing"
    );
    test.server.shutdown().await;
}

#[tokio::test]
async fn status_and_scale_subresources() {
    let test = common::start().await;
    let api: Api<Deployment> = Api::namespaced(test.client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &deployment("web", "web:1"))
        .await
        .expect("created");

    let status = json!({ "status": { "replicas": 2, "readyReplicas": 2, "observedGeneration": 1 }, "spec": { "replicas": 50 } });
    let after_status = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("status patched");
    assert_eq!(
        after_status
            .status
            .as_ref()
            .and_then(|status| status.ready_replicas),
        Some(2)
    );
    assert_eq!(
        after_status.spec.as_ref().and_then(|spec| spec.replicas),
        Some(2),
        "a status write leaves spec alone"
    );
    assert_eq!(
        after_status.metadata.generation, created.metadata.generation,
        "a status write does not bump generation"
    );

    let main = json!({ "status": { "readyReplicas": 0 }, "metadata": { "labels": { "x": "y" } } });
    let after_main = api
        .patch("web", &PatchParams::default(), &Patch::Merge(main))
        .await
        .expect("main patched");
    assert_eq!(
        after_main
            .status
            .as_ref()
            .and_then(|status| status.ready_replicas),
        Some(2),
        "a main write leaves status alone"
    );
    assert_eq!(
        after_main.metadata.generation, created.metadata.generation,
        "metadata changes do not bump generation"
    );

    let scale = api.get_scale("web").await.expect("scale");
    assert_eq!(scale.spec.as_ref().and_then(|spec| spec.replicas), Some(2));
    assert_eq!(
        scale.status.as_ref().map(|status| status.selector.clone()),
        Some(Some("app=web".to_owned()))
    );
    let scaled = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 5 } })),
        )
        .await
        .expect("scaled");
    assert_eq!(scaled.spec.and_then(|spec| spec.replicas), Some(5));
    let after_scale = api.get("web").await.expect("get");
    assert_eq!(
        after_scale.spec.as_ref().and_then(|spec| spec.replicas),
        Some(5)
    );
    assert_eq!(
        after_scale.metadata.generation,
        created.metadata.generation.map(|generation| generation + 1)
    );
    test.server.shutdown().await;
}

#[tokio::test]
async fn watcher_sees_every_change_in_order_and_resumes() {
    let test = common::start().await;
    common::namespace(&test.client, "watch").await;
    let api: Api<ConfigMap> = Api::namespaced(test.client.clone(), "watch");
    let start_version = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list rv");

    let stream = watcher(api.clone(), watcher::Config::default().labels("app=w")).default_backoff();
    let mut stream = Box::pin(stream);
    // The initial list completes first.
    loop {
        match stream.try_next().await.expect("watcher ok").expect("event") {
            watcher::Event::InitDone => break,
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let map = |name: &str, value: &str, app: &str| -> ConfigMap {
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": { "app": app } }, "data": { "v": value } })).expect("valid")
    };
    api.create(&PostParams::default(), &map("one", "1", "w"))
        .await
        .expect("create");
    api.create(&PostParams::default(), &map("ignored", "1", "other"))
        .await
        .expect("create");
    api.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "v": "2" } })),
    )
    .await
    .expect("patch");
    api.delete("one", &DeleteParams::default())
        .await
        .expect("delete");
    // Relabelling moves objects into and out of the selection.
    let relabel = |app: &str| Patch::Merge(json!({ "metadata": { "labels": { "app": app } } }));
    api.patch("ignored", &PatchParams::default(), &relabel("w"))
        .await
        .expect("relabel in");
    api.patch("ignored", &PatchParams::default(), &relabel("gone"))
        .await
        .expect("relabel out");

    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("event");
        match event {
            watcher::Event::Apply(object) => seen.push(format!(
                "apply {} {}",
                object.metadata.name.unwrap_or_default(),
                object.data.unwrap_or_default()["v"]
            )),
            watcher::Event::Delete(object) => seen.push(format!(
                "delete {}",
                object.metadata.name.unwrap_or_default()
            )),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            "apply one 1",
            "apply one 2",
            "delete one",
            "apply ignored 1",
            "delete ignored"
        ]
    );

    // Resuming from the version before the changes replays them all, in order, with rising versions.
    let mut raw = api
        .watch(&WatchParams::default(), &start_version)
        .await
        .expect("watch")
        .boxed();
    let mut replay = Vec::new();
    let mut last_version = 0u64;
    while replay.len() < 6 {
        let event = tokio::time::timeout(Duration::from_secs(5), raw.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("event");
        let (kind, object) = match event {
            WatchEvent::Added(object) => ("ADDED", object),
            WatchEvent::Modified(object) => ("MODIFIED", object),
            WatchEvent::Deleted(object) => ("DELETED", object),
            other => panic!("unexpected {other:?}"),
        };
        let version: u64 = object
            .metadata
            .resource_version
            .as_deref()
            .expect("rv")
            .parse()
            .expect("numeric");
        assert!(version > last_version);
        last_version = version;
        replay.push(format!(
            "{kind} {}",
            object.metadata.name.unwrap_or_default()
        ));
    }
    assert_eq!(
        replay,
        vec![
            "ADDED one",
            "ADDED ignored",
            "MODIFIED one",
            "DELETED one",
            "MODIFIED ignored",
            "MODIFIED ignored"
        ]
    );
    test.server.shutdown().await;
}

#[tokio::test]
async fn too_old_resource_version_is_410_expired() {
    let test = common::start_with(|config| config.watch_history = 5).await;
    let api: Api<ConfigMap> = Api::namespaced(test.client.clone(), "default");
    for index in 0..20 {
        let map: ConfigMap =
            serde_json::from_value(json!({ "metadata": { "name": format!("m{index}") } }))
                .expect("valid");
        api.create(&PostParams::default(), &map)
            .await
            .expect("create");
    }
    let mut stream = api
        .watch(&WatchParams::default(), "2")
        .await
        .expect("watch starts")
        .boxed();
    match stream.try_next().await.expect("ok").expect("one event") {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // A watcher recovers by re-listing.
    let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
    let mut stream = Box::pin(stream);
    let mut initial = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("event")
        {
            watcher::Event::InitApply(_) => initial += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    // The 20 and the namespace's `kube-root-ca.crt`, there as on every real cluster.
    assert_eq!(initial, 21);
    test.server.shutdown().await;
}

#[tokio::test]
async fn bookmarks_and_streaming_lists() {
    let test =
        common::start_with(|config| config.bookmark_interval = Duration::from_millis(200)).await;
    let api: Api<ConfigMap> = Api::namespaced(test.client.clone(), "default");
    let map: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "present" } })).expect("valid");
    api.create(&PostParams::default(), &map)
        .await
        .expect("create");
    let stream =
        watcher(api.clone(), watcher::Config::default().streaming_lists()).default_backoff();
    let mut stream = Box::pin(stream);
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("event")
        {
            watcher::Event::InitApply(object) => {
                names.push(object.metadata.name.unwrap_or_default())
            }
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names, vec!["kube-root-ca.crt", "present"]);
    let version = test.server.resource_version().to_string();
    let mut raw = api
        .watch(&WatchParams::default(), &version)
        .await
        .expect("watch")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), raw.try_next())
        .await
        .expect("bookmark in time")
        .expect("ok")
        .expect("event")
    {
        WatchEvent::Bookmark(bookmark) => assert_eq!(bookmark.metadata.resource_version, version),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    test.server.shutdown().await;
}

#[tokio::test]
async fn protobuf_secret_create_and_update() {
    use k8s_pb::api::core::v1::Secret as PbSecret;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta as PbMeta;
    use psctl_sandbox_apiserver::protobuf::encode_envelope;

    let test = common::start().await;
    let body = |version: Option<&str>, payload: &[u8]| {
        let secret = PbSecret {
            metadata: Some(PbMeta {
                name: Some("sh.helm.release.v1.web.v1".to_owned()),
                namespace: Some("default".to_owned()),
                labels: [
                    ("owner".to_owned(), "helm".to_owned()),
                    ("status".to_owned(), "deployed".to_owned()),
                ]
                .into_iter()
                .collect(),
                resource_version: version.map(str::to_owned),
                ..PbMeta::default()
            }),
            data: [("release".to_owned(), payload.to_vec())]
                .into_iter()
                .collect(),
            r#type: Some("helm.sh/release.v1".to_owned()),
            ..PbSecret::default()
        };
        encode_envelope("v1", "Secret", &secret)
    };
    let send = |method: &str, path: &str, bytes: Vec<u8>| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/vnd.kubernetes.protobuf")
            .header(
                "accept",
                "application/vnd.kubernetes.protobuf, application/json",
            )
            .body(bytes)
            .expect("request builds")
    };
    let created: Secret = test
        .client
        .request(send(
            "POST",
            "/api/v1/namespaces/default/secrets",
            body(None, b"first"),
        ))
        .await
        .expect("protobuf create");
    assert_eq!(created.data.as_ref().expect("data")["release"].0, b"first");
    let version = created.metadata.resource_version.clone().expect("rv");
    let updated: Secret = test
        .client
        .request(send(
            "PUT",
            "/api/v1/namespaces/default/secrets/sh.helm.release.v1.web.v1",
            body(Some(&version), b"second"),
        ))
        .await
        .expect("protobuf update");
    assert_eq!(updated.data.as_ref().expect("data")["release"].0, b"second");
    let api: Api<Secret> = Api::namespaced(test.client.clone(), "default");
    let listed = api
        .list(&ListParams::default().labels("owner=helm,status=deployed"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].type_.as_deref(), Some("helm.sh/release.v1"));
    test.server.shutdown().await;
}

#[tokio::test]
async fn runtime_crd_becomes_servable_and_servicemonitors_exist() {
    let test = common::start().await;
    let monitors = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(test.client.clone(), "default", &monitors);
    let monitor: DynamicObject = serde_json::from_value(json!({ "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": { "name": "m" }, "spec": { "endpoints": [{ "port": "metrics" }] } })).expect("valid");
    api.create(&PostParams::default(), &monitor)
        .await
        .expect("servicemonitor created");

    let crds: Api<DynamicObject> = Api::all_with(
        test.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.example.com" },
        "spec": { "group": "example.com", "scope": "Namespaced", "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
                  "versions": [{ "name": "v1", "served": true, "storage": true, "subresources": { "status": {} }, "schema": { "openAPIV3Schema": { "type": "object" } } }] }
    }))
    .expect("valid");
    let created = crds
        .create(&PostParams::default(), &crd)
        .await
        .expect("crd created");
    assert_eq!(
        created.data["status"]["conditions"][1]["type"],
        "Established"
    );
    let widgets = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widget_api: Api<DynamicObject> =
        Api::namespaced_with(test.client.clone(), "default", &widgets);
    let widget: DynamicObject = serde_json::from_value(json!({ "apiVersion": "example.com/v1", "kind": "Widget", "metadata": { "name": "w" }, "spec": { "size": 1 } })).expect("valid");
    widget_api
        .create(&PostParams::default(), &widget)
        .await
        .expect("widget created");
    let refused = api_error(
        widget_api
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Strategic(json!({ "spec": { "size": 2 } })),
            )
            .await
            .expect_err("no strategic merge for custom resources"),
    );
    assert_eq!(refused.code, 415);
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .expect("crd deleted");
    let gone = api_error(
        widget_api
            .get("w")
            .await
            .expect_err("resource no longer served"),
    );
    assert_eq!(gone.code, 404);
    test.server.shutdown().await;
}

#[tokio::test]
async fn graceful_pod_deletion_finalizers_and_orphaning() {
    let test = common::start().await;
    let pods: Api<Pod> = Api::namespaced(test.client.clone(), "default");
    let mut scheduled = pod("scheduled", json!({}), "Running");
    scheduled.spec.as_mut().expect("spec").node_name = Some("node-1".to_owned());
    pods.create(&PostParams::default(), &scheduled)
        .await
        .expect("created");
    let first = pods
        .delete("scheduled", &DeleteParams::default())
        .await
        .expect("delete accepted");
    let terminating = first
        .left()
        .expect("a scheduled pod stays until its kubelet confirms");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    pods.delete(
        "scheduled",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("forced");
    assert_eq!(
        api_error(pods.get("scheduled").await.expect_err("gone")).code,
        404
    );

    let maps: Api<ConfigMap> = Api::namespaced(test.client.clone(), "default");
    let held: ConfigMap = serde_json::from_value(
        json!({ "metadata": { "name": "held", "finalizers": ["example.com/hold"] } }),
    )
    .expect("valid");
    maps.create(&PostParams::default(), &held)
        .await
        .expect("created");
    assert!(
        maps.delete("held", &DeleteParams::default())
            .await
            .expect("marked")
            .is_left()
    );
    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .expect("finalizer removed");
    assert_eq!(
        api_error(
            maps.get("held")
                .await
                .expect_err("deleted once finalizers are gone")
        )
        .code,
        404
    );

    let deployments: Api<Deployment> = Api::namespaced(test.client.clone(), "default");
    let owner = deployments
        .create(&PostParams::default(), &deployment("owner", "x:1"))
        .await
        .expect("owner");
    let uid = owner.metadata.uid.clone().expect("uid");
    let dependent: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "dependent", "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "owner", "uid": uid }] } })).expect("valid");
    maps.create(&PostParams::default(), &dependent)
        .await
        .expect("dependent");
    deployments
        .delete("owner", &DeleteParams::orphan())
        .await
        .expect("orphaned delete");
    let orphan = maps.get("dependent").await.expect("dependent survives");
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    test.server.shutdown().await;
}

#[tokio::test]
async fn namespace_deletion_removes_its_contents() {
    let test = common::start().await;
    common::namespace(&test.client, "doomed").await;
    let services: Api<Service> = Api::namespaced(test.client.clone(), "doomed");
    let service: Service = serde_json::from_value(json!({ "metadata": { "name": "s" }, "spec": { "selector": { "app": "s" }, "ports": [{ "port": 80 }] } })).expect("valid");
    let created = services
        .create(&PostParams::default(), &service)
        .await
        .expect("created");
    assert!(
        created
            .spec
            .and_then(|spec| spec.cluster_ip)
            .is_some_and(|ip| ip.starts_with("10.96."))
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(test.client.clone());
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete accepted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while namespaces.get_opt("doomed").await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace still present"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all: Api<Service> = Api::all(test.client.clone());
    assert!(
        all.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .all(|service| service.metadata.namespace.as_deref() != Some("doomed"))
    );
    test.server.shutdown().await;
}

#[tokio::test]
async fn immutable_fields_refuse_every_kind_of_write() {
    let test = common::start().await;
    common::namespace(&test.client, "fixed").await;
    let api: Api<Deployment> = Api::namespaced(test.client.clone(), "fixed");
    api.create(&PostParams::default(), &deployment("web", "web:1"))
        .await
        .expect("created");
    let refused_selector = |status: &kube::core::Status| {
        status.code == 422
            && status.reason == "Invalid"
            && status.message.starts_with(
                "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: v1.LabelSelector{",
            )
            && status.message.ends_with(": field is immutable")
    };

    // A replacement (PUT), a merge patch and a server-side apply that change the selector (and
    // the template's labels with it, so that the selector still matches them).
    let mut replaced = api.get("web").await.unwrap();
    let spec = replaced.spec.as_mut().unwrap();
    spec.selector =
        serde_json::from_value(json!({"matchLabels": {"app": "web", "version": "2"}})).unwrap();
    spec.template.metadata.as_mut().unwrap().labels =
        serde_json::from_value(json!({"app": "web", "version": "2"})).unwrap();
    let status = api_error(
        api.replace("web", &PostParams::default(), &replaced)
            .await
            .unwrap_err(),
    );
    assert!(refused_selector(&status), "{status:?}");
    let status = api_error(
        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "selector": {"matchLabels": {"tier": "x"}},
                "template": {"metadata": {"labels": {"tier": "x"}}},
            }})),
        )
        .await
        .unwrap_err(),
    );
    assert!(refused_selector(&status), "{status:?}");
    let mut applied = serde_json::to_value(deployment("web", "web:2")).unwrap();
    applied["apiVersion"] = json!("apps/v1");
    applied["kind"] = json!("Deployment");
    applied["spec"]["selector"]["matchLabels"]["version"] = json!("2");
    applied["spec"]["template"]["metadata"]["labels"]["version"] = json!("2");
    let status = api_error(
        api.patch(
            "web",
            &PatchParams::apply("chart").force(),
            &Patch::Apply(applied),
        )
        .await
        .unwrap_err(),
    );
    assert!(refused_selector(&status), "{status:?}");
    // Nothing was written, and the fields that may change still do.
    let unchanged = api.get("web").await.unwrap();
    assert_eq!(
        serde_json::to_value(&unchanged.spec.as_ref().unwrap().selector).unwrap(),
        json!({"matchLabels": {"app": "web"}})
    );
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}})),
    )
    .await
    .expect("replicas and the template may change");

    // A Secret marked immutable keeps its data; no Secret changes its type.
    let secrets: Api<Secret> = Api::namespaced(test.client.clone(), "fixed");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "pinned"}, "immutable": true,
                "stringData": {"token": "first"}}))
            .unwrap(),
        )
        .await
        .expect("created");
    let status = api_error(
        secrets
            .patch(
                "pinned",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"token": "second"}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 422, "{status:?}");
    assert_eq!(
        status.message,
        "Secret \"pinned\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
    let status = api_error(
        secrets
            .patch(
                "pinned",
                &PatchParams::default(),
                &Patch::Merge(json!({"type": "kubernetes.io/basic-auth"})),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        status
            .message
            .contains("type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"),
        "{status:?}"
    );
    secrets
        .patch(
            "pinned",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"owner": "ops"}}})),
        )
        .await
        .expect("metadata of an immutable Secret may change");
}
