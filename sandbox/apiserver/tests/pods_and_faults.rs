//! What goes beyond storage: pod logs through the caller's `PodBackend`, Service and Pod proxying
//! to a pod IP, and fault injection.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, LogParams, PostParams};
use psctl_sandbox_apiserver::{LogOptions, PodBackend, PodBackendError, PodLogs};
use serde_json::json;

/// Answers with a line describing the request, so the test sees what reached the backend.
struct EchoLogs;

impl PodBackend for EchoLogs {
    fn logs<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        container: Option<&'a str>,
        options: LogOptions,
    ) -> BoxFuture<'a, Result<PodLogs, PodBackendError>> {
        async move {
            if container == Some("missing") {
                return Err(PodBackendError::BadRequest(format!(
                    "container missing is not valid for pod {pod}"
                )));
            }
            Ok(PodLogs::Complete(format!(
                "{namespace}/{pod} container={} tail={:?} previous={}\n",
                container.unwrap_or("-"),
                options.tail_lines,
                options.previous
            )))
        }
        .boxed()
    }
}

fn pod(name: &str, port: u16) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": "metrics" } },
        "spec": { "containers": [{ "name": "app", "image": "img:1", "ports": [{ "name": "metrics", "containerPort": port }] }] }
    }))
    .expect("valid pod")
}

#[tokio::test]
async fn pod_logs_come_from_the_backend() {
    let test = common::start_with(|config| config.pod_backend = Some(Arc::new(EchoLogs))).await;
    let api: Api<Pod> = Api::namespaced(test.client.clone(), "default");
    api.create(&PostParams::default(), &pod("p", 80))
        .await
        .expect("created");
    let text = api
        .logs(
            "p",
            &LogParams {
                container: Some("app".to_owned()),
                tail_lines: Some(5),
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("logs");
    assert_eq!(text, "default/p container=app tail=Some(5) previous=true\n");
    let refused = api
        .logs(
            "p",
            &LogParams {
                container: Some("missing".to_owned()),
                ..LogParams::default()
            },
        )
        .await
        .expect_err("bad container");
    match refused {
        kube::Error::Api(status) => assert_eq!(
            (status.code, status.message.as_str()),
            (400, "container missing is not valid for pod p")
        ),
        other => panic!("expected an API error, got {other:?}"),
    }
    let absent = api
        .logs("nope", &LogParams::default())
        .await
        .expect_err("no such pod");
    assert!(matches!(absent, kube::Error::Api(status) if status.code == 404));
    test.server.shutdown().await;
}

#[tokio::test]
async fn service_and_pod_proxy_reach_the_pod_ip() {
    // A stand-in for a container: an HTTP server on loopback that echoes the path and query.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("served {}", request.uri());
                        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let test = common::start().await;
    let pods: Api<Pod> = Api::namespaced(test.client.clone(), "default");
    let services: Api<Service> = Api::namespaced(test.client.clone(), "default");
    let service: Service = serde_json::from_value(json!({ "metadata": { "name": "web-metrics" }, "spec": { "selector": { "app": "metrics" }, "ports": [{ "name": "metrics", "port": 8001, "targetPort": "metrics" }] } })).expect("valid");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    pods.create(&PostParams::default(), &pod("m", port))
        .await
        .expect("pod");

    let get = |path: &str| {
        http::Request::builder()
            .uri(path)
            .body(Vec::new())
            .expect("request")
    };
    // Asked without kube-rs, whose client retries 503s with back-off for minutes.
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let url = format!(
        "{}/api/v1/namespaces/default/services/web-metrics:8001/proxy/metrics",
        test.server.url()
    );
    let not_ready = plain
        .request(
            http::Request::builder()
                .uri(url)
                .header(
                    "authorization",
                    format!("Bearer {}", test.server.admin_token()),
                )
                .body(http_body_util::Empty::new())
                .expect("request"),
        )
        .await
        .expect("answered");
    assert_eq!(
        not_ready.status(),
        503,
        "no Ready pod behind the service yet"
    );

    let mut ready = pods.get_status("m").await.expect("pod");
    ready.status = Some(serde_json::from_value(json!({ "phase": "Running", "podIP": "127.0.0.1", "conditions": [{ "type": "Ready", "status": "True" }] })).expect("valid status"));
    pods.replace_status("m", &PostParams::default(), &ready)
        .await
        .expect("status");

    let through_service = test
        .client
        .request_text(get(
            "/api/v1/namespaces/default/services/web-metrics:8001/proxy/metrics?x=1",
        ))
        .await
        .expect("proxied");
    assert_eq!(through_service, "served /metrics?x=1");
    let by_port_name = test
        .client
        .request_text(get(
            "/api/v1/namespaces/default/services/http:web-metrics:metrics/proxy/health",
        ))
        .await
        .expect("proxied");
    assert_eq!(by_port_name, "served /health");
    let through_pod = test
        .client
        .request_text(get(&format!(
            "/api/v1/namespaces/default/pods/m:{port}/proxy/ready"
        )))
        .await
        .expect("proxied");
    assert_eq!(through_pod, "served /ready");
    test.server.shutdown().await;
}

#[tokio::test]
async fn injected_faults_fail_and_delay_matching_requests() {
    let test = common::start().await;
    let post = |body: serde_json::Value| {
        http::Request::builder()
            .method("POST")
            .uri("/_sandbox/faults")
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .expect("request")
    };
    test.client
        .request_text(post(json!({ "path_regex": "/configmaps/broken$", "method": "GET", "status": 500, "count": 1 })))
        .await
        .expect("fault added");
    let api: Api<ConfigMap> = Api::namespaced(test.client.clone(), "default");
    let map: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "broken" } })).expect("valid");
    api.create(&PostParams::default(), &map)
        .await
        .expect("creates are not matched");
    let failed = api.get("broken").await.expect_err("injected 503");
    assert!(
        matches!(failed, kube::Error::Api(ref status) if status.code == 500 && status.reason == "InternalError"),
        "{failed:?}"
    );
    api.get("broken").await.expect("the fault was used up");

    test.client
        .request_text(post(
            json!({ "path_regex": "/configmaps/broken$", "delay_ms": 300 }),
        ))
        .await
        .expect("fault added");
    let started = Instant::now();
    api.get("broken").await.expect("delayed but served");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the request was delayed"
    );

    let invalid = test
        .client
        .request_text(post(json!({ "path_regex": "(" })))
        .await
        .expect_err("bad regex");
    assert!(matches!(invalid, kube::Error::Api(status) if status.code == 400));
    let clear = http::Request::builder()
        .method("DELETE")
        .uri("/_sandbox/faults")
        .body(Vec::new())
        .expect("request");
    test.client.request_text(clear).await.expect("cleared");
    let list = http::Request::builder()
        .uri("/_sandbox/faults")
        .body(Vec::new())
        .expect("request");
    assert_eq!(test.client.request_text(list).await.expect("listed"), "[]");
    test.server.shutdown().await;
}

#[tokio::test]
async fn cut_watches_end_their_streams_and_compaction_expires_old_versions() {
    use futures::{StreamExt as _, TryStreamExt as _};
    use kube::api::{WatchEvent, WatchParams};

    let test = common::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client.clone(), "default");
    let map: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "watched" } })).expect("valid");
    let created = api
        .create(&PostParams::default(), &map)
        .await
        .expect("created");
    let seen = created.metadata.resource_version.expect("a version");
    let mut stream = api
        .watch(&WatchParams::default(), &seen)
        .await
        .expect("watching")
        .boxed();
    let cut = |compact: bool| {
        http::Request::builder()
            .method("POST")
            .uri("/_sandbox/watches")
            .header("content-type", "application/json")
            .body(json!({ "compact": compact }).to_string().into_bytes())
            .expect("request")
    };
    let answer: serde_json::Value = serde_json::from_str(
        &test
            .client
            .request_text(cut(false))
            .await
            .expect("watches cut"),
    )
    .expect("json");
    assert_eq!(answer["cut"], 1, "{answer}");
    assert!(answer["compacted_to"].is_null(), "{answer}");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("the stream ends at once");
    assert!(matches!(ended, Ok(None)), "{ended:?}");

    // Resuming after a plain cut replays what happened since; after a compaction it is 410.
    let mut changed = api.get("watched").await.expect("read");
    changed.data = Some([("k".to_owned(), "v".to_owned())].into());
    api.replace("watched", &PostParams::default(), &changed)
        .await
        .expect("written");
    let mut resumed = api
        .watch(&WatchParams::default(), &seen)
        .await
        .expect("watching")
        .boxed();
    let event = resumed.try_next().await.expect("an event").expect("open");
    assert!(matches!(event, WatchEvent::Modified(_)), "{event:?}");
    drop(resumed);
    let answer: serde_json::Value = serde_json::from_str(
        &test
            .client
            .request_text(cut(true))
            .await
            .expect("watches cut"),
    )
    .expect("json");
    assert!(answer["compacted_to"].is_string(), "{answer}");
    let mut expired = api
        .watch(&WatchParams::default(), &seen)
        .await
        .expect("watching")
        .boxed();
    let event = expired.try_next().await.expect("an event").expect("open");
    assert!(
        matches!(event, WatchEvent::Error(ref status) if status.code == 410),
        "{event:?}"
    );
    test.server.shutdown().await;
}
