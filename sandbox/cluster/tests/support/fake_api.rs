//! A deliberately small in-memory Kubernetes API for this crate's integration tests: generic
//! create / get / list / watch / replace / merge-patch / delete over any resource path, with
//! resourceVersions, label-selector filtering and status subresource semantics. It exists so
//! the controllers and the kubelet can be exercised end to end independently of the sandbox API
//! server crate; it is not a substitute for it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::broadcast;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Clone, Debug)]
struct WatchEvent {
    rv: u64,
    resource: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<WatchEvent>,
}

struct State {
    store: Mutex<Store>,
    events: broadcast::Sender<WatchEvent>,
}

/// A running fake API; dropping it stops the server.
pub struct FakeApi {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parsed request path.
struct Target {
    /// `group/resource`, group empty for core.
    resource: String,
    api_version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some((*namespace).to_owned()), rest)
        }
        rest => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some((*name).to_owned()), None),
        [resource, name, sub] => (*resource, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    let api_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(Target {
        resource: format!("{group}/{resource}"),
        api_version,
        namespace,
        name,
        subresource,
    })
}

fn kind_of(resource: &str) -> String {
    let plural = resource.rsplit('/').next().unwrap_or_default();
    match plural {
        "replicasets" => "ReplicaSet".to_owned(),
        "endpoints" => "Endpoints".to_owned(),
        "configmaps" => "ConfigMap".to_owned(),
        other => {
            let singular = other.strip_suffix('s').unwrap_or(other);
            let mut chars = singular.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        }
    }
}

fn query(uri: &hyper::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), percent_decode(value)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && index + 2 < bytes.len()
            && let Ok(value) = u8::from_str_radix(&text[index + 1..index + 3], 16)
        {
            out.push(value);
            index += 3;
            continue;
        }
        out.push(if bytes[index] == b'+' {
            b' '
        } else {
            bytes[index]
        });
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn selector_matches(selector: Option<&String>, object: &Value) -> bool {
    let Some(selector) = selector.filter(|selector| !selector.is_empty()) else {
        return true;
    };
    let labels = object
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    selector.split(',').all(|term| {
        if let Some((key, value)) = term.split_once("!=") {
            labels.get(key).and_then(Value::as_str) != Some(value)
        } else if let Some((key, value)) = term.split_once('=') {
            labels.get(key).and_then(Value::as_str) == Some(value.trim_start_matches('='))
        } else if let Some(key) = term.strip_prefix('!') {
            labels.get(key).is_none()
        } else {
            labels.get(term).is_some()
        }
    })
}

fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(entries) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(map) = target {
                for (key, value) in entries {
                    if value.is_null() {
                        map.remove(key);
                    } else {
                        merge(map.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn status_error(code: u16, reason: &str, message: String) -> Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

impl State {
    fn record(
        &self,
        store: &mut Store,
        resource: &str,
        namespace: &str,
        kind: &'static str,
        object: Value,
    ) {
        let event = WatchEvent {
            rv: store.rv,
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            kind,
            object,
        };
        store.history.push(event.clone());
        let _ = self.events.send(event);
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let Some(target) = parse_path(request.uri().path()) else {
            return status_error(
                404,
                "NotFound",
                format!("no route for {}", request.uri().path()),
            );
        };
        let params = query(request.uri());
        let method = request.method().clone();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|body| body.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let namespace = target.namespace.clone().unwrap_or_default();
        let is_put = method == Method::PUT;
        match (method, &target.name) {
            (Method::GET, None)
                if params
                    .get("watch")
                    .is_some_and(|watch| watch == "true" || watch == "1") =>
            {
                self.watch(&target, params)
            }
            (Method::GET, None) => {
                let store = self
                    .store
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let items: Vec<Value> = store
                    .objects
                    .iter()
                    .filter(|((resource, ns, _), object)| {
                        *resource == target.resource
                            && (target.namespace.is_none() || *ns == namespace)
                            && selector_matches(params.get("labelSelector"), object)
                    })
                    .map(|(_, object)| object.clone())
                    .collect();
                json_response(
                    200,
                    &json!({"kind": format!("{}List", kind_of(&target.resource)), "apiVersion": target.api_version,
                            "metadata": {"resourceVersion": store.rv.to_string()}, "items": items}),
                )
            }
            (Method::GET, Some(name)) => {
                let store = self
                    .store
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                match store
                    .objects
                    .get(&(target.resource.clone(), namespace, name.clone()))
                {
                    Some(object) => json_response(200, object),
                    None => status_error(
                        404,
                        "NotFound",
                        format!("{} \"{name}\" not found", target.resource),
                    ),
                }
            }
            (Method::POST, None) => {
                let mut object = body;
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let mut store = self
                    .store
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let key = (target.resource.clone(), namespace.clone(), name.clone());
                if store.objects.contains_key(&key) {
                    return status_error(
                        409,
                        "AlreadyExists",
                        format!("{} \"{name}\" already exists", target.resource),
                    );
                }
                store.rv += 1;
                let now =
                    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    ))
                    .unwrap_or(Value::Null);
                merge(
                    &mut object,
                    &json!({"apiVersion": target.api_version, "kind": kind_of(&target.resource), "metadata": {
                        "uid": format!("uid-{}-{}", store.rv, rand::random::<u32>()),
                        "resourceVersion": store.rv.to_string(), "creationTimestamp": now, "generation": 1,
                    }}),
                );
                if target.namespace.is_some() {
                    merge(&mut object, &json!({"metadata": {"namespace": namespace}}));
                }
                store.objects.insert(key, object.clone());
                self.record(
                    &mut store,
                    &target.resource,
                    &namespace,
                    "ADDED",
                    object.clone(),
                );
                json_response(201, &object)
            }
            (Method::PUT | Method::PATCH, Some(name)) => {
                let mut store = self
                    .store
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let key = (target.resource.clone(), namespace.clone(), name.clone());
                let Some(current) = store.objects.get(&key).cloned() else {
                    return status_error(
                        404,
                        "NotFound",
                        format!("{} \"{name}\" not found", target.resource),
                    );
                };
                let mut next = if is_put {
                    let sent = body
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str);
                    if sent.is_some_and(|sent| {
                        Some(sent)
                            != current
                                .pointer("/metadata/resourceVersion")
                                .and_then(Value::as_str)
                    }) {
                        return status_error(
                            409,
                            "Conflict",
                            format!("the object {name} has been modified"),
                        );
                    }
                    let mut replaced = body.clone();
                    merge(
                        &mut replaced,
                        &json!({"metadata": current["metadata"].clone()}),
                    );
                    if let Some(labels) = body.pointer("/metadata/labels") {
                        replaced["metadata"]["labels"] = labels.clone();
                    }
                    replaced
                } else {
                    let mut patched = current.clone();
                    merge(&mut patched, &body);
                    patched
                };
                // Status subresource semantics: the main resource ignores status, /status ignores
                // everything else.
                if target.subresource.as_deref() == Some("status") {
                    let status = next.get("status").cloned();
                    next = current.clone();
                    match status {
                        Some(status) => next["status"] = status,
                        None => {
                            next.as_object_mut().map(|map| map.remove("status"));
                        }
                    }
                } else if let Some(status) = current.get("status") {
                    next["status"] = status.clone();
                } else if next.get("status").is_some()
                    && ["apps/deployments", "apps/replicasets", "/pods"]
                        .contains(&target.resource.as_str())
                {
                    next.as_object_mut().map(|map| map.remove("status"));
                }
                if next.get("spec") != current.get("spec") {
                    let generation = current
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                        + 1;
                    next["metadata"]["generation"] = json!(generation);
                }
                store.rv += 1;
                next["metadata"]["resourceVersion"] = json!(store.rv.to_string());
                store.objects.insert(key, next.clone());
                self.record(
                    &mut store,
                    &target.resource,
                    &namespace,
                    "MODIFIED",
                    next.clone(),
                );
                json_response(200, &next)
            }
            (Method::DELETE, Some(name)) => {
                let mut store = self
                    .store
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let key = (target.resource.clone(), namespace.clone(), name.clone());
                match store.objects.remove(&key) {
                    Some(mut object) => {
                        store.rv += 1;
                        object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
                        self.record(
                            &mut store,
                            &target.resource,
                            &namespace,
                            "DELETED",
                            object.clone(),
                        );
                        json_response(200, &object)
                    }
                    None => status_error(
                        404,
                        "NotFound",
                        format!("{} \"{name}\" not found", target.resource),
                    ),
                }
            }
            (method, _) => status_error(
                405,
                "MethodNotAllowed",
                format!("{method} is not supported here"),
            ),
        }
    }

    fn watch(self: Arc<Self>, target: &Target, params: BTreeMap<String, String>) -> Response<Body> {
        let since: u64 = params
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        let (backlog, receiver) = {
            let store = self
                .store
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let backlog: Vec<WatchEvent> = store
                .history
                .iter()
                .filter(|event| event.rv > since)
                .cloned()
                .collect();
            (backlog, self.events.subscribe())
        };
        let resource = target.resource.clone();
        let namespace = target.namespace.clone();
        let selector = params.get("labelSelector").cloned();
        let wanted = move |event: &WatchEvent| {
            event.resource == resource
                && namespace
                    .as_ref()
                    .is_none_or(|namespace| *namespace == event.namespace)
                && selector_matches(selector.as_ref(), &event.object)
                && event.rv > since
        };
        let wanted_live = wanted.clone();
        let live = tokio_stream_from(receiver)
            .filter(move |event| futures::future::ready(wanted_live(event)));
        let stream = futures::stream::iter(backlog.into_iter().filter(wanted))
            .chain(live)
            .map(|event| {
                let line = json!({"type": event.kind, "object": event.object}).to_string() + "\n";
                Ok::<_, Infallible>(Frame::data(Bytes::from(line)))
            });
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        response.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json"),
        );
        response
    }
}

fn tokio_stream_from(
    receiver: broadcast::Receiver<WatchEvent>,
) -> impl futures::Stream<Item = WatchEvent> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(event) => return Some((event, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

impl FakeApi {
    /// Starts the fake API on a free loopback port.
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (events, _) = broadcast::channel(4096);
        let state = Arc::new(State {
            store: Mutex::new(Store::default()),
            events,
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.handle(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApi { url, task }
    }

    /// A kube client for this API.
    pub fn client(&self) -> kube::Client {
        // kube and reqwest enable more than one rustls backend; a process must pick one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new(self.url.parse().expect("valid url"));
        kube::Client::try_from(config).expect("client")
    }
}
