//! HTTP plumbing: the listener and its connections (HTTP/1.1 and h2c), fault injection, routing
//! of discovery, admin and resource paths to [`crate::handlers`], and the body codecs (JSON in
//! and out, Kubernetes protobuf in).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{ANONYMOUS_PATHS, Credential, UserInfo};
use crate::faults::FaultSpec;
use crate::handlers::{DeleteOptions, Ownership, Part, ScaleChange, State};
use crate::managed::Writer;
use crate::patch::PatchKind;
use crate::query::{Query, ResourcePath, split_path};
use crate::rbac::{self, Attributes};
use crate::requests::RequestKind;
use crate::status::ApiError;
use crate::{
    ApiServerConfig, Authorization, LogOptions, PodBackendError, PodLogs, discovery, protobuf,
    proxy, table, watch as watches,
};

/// The response body type of every handler.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Request bodies larger than this are refused (Helm release Secrets stay far below it).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Failure to start the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on `{addr}`: {source}; choose another port in ApiServerConfig::bind")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The TLS certificate could not be made or used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Initial objects could not be created.
    #[error("cannot seed the initial objects: {0}")]
    Seed(ApiError),
}

/// Entry point.
pub struct ApiServer;

/// A started server: its address and the handle to stop it.
pub struct RunningApiServer {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    state: Arc<State>,
    ca_pem: String,
}

impl ApiServer {
    /// Binds `config.bind` and serves in the background until [`RunningApiServer::shutdown`].
    pub async fn start(config: ApiServerConfig) -> Result<RunningApiServer, StartError> {
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        // The advertised address is where pods connect: bound as given (its port may differ
        // from the loopback one), its port 0 resolved to the one picked.
        let advertised = match config.advertise {
            Some(addr) if addr != local_addr => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?;
                Some((listener, bound))
            }
            _ => None,
        };
        let mut config = config;
        if let Some((_, bound)) = &advertised {
            config.advertise = Some(*bound);
        }
        let identity = match &config.tls {
            Some(identity) => identity.clone(),
            None => crate::tls::TlsIdentity::generate_for(
                &config
                    .advertise
                    .map(|addr| addr.ip())
                    .into_iter()
                    .collect::<Vec<_>>(),
            )?,
        };
        config.tls = Some(identity.clone());
        let acceptor = identity.acceptor()?;
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let state =
            State::new(config, local_addr, shutdown_receiver.clone()).map_err(StartError::Seed)?;
        let main_loop = accept_loop(
            listener,
            acceptor.clone(),
            state.clone(),
            shutdown_receiver.clone(),
        );
        let task = match advertised {
            Some((listener, bound)) => {
                tracing::info!(%bound, "sandbox API server listening on its advertised address");
                let advertised_loop =
                    accept_loop(listener, acceptor, state.clone(), shutdown_receiver);
                tokio::spawn(async move {
                    futures::join!(main_loop, advertised_loop);
                })
            }
            None => tokio::spawn(main_loop),
        };
        tracing::info!(%local_addr, "sandbox API server listening");
        Ok(RunningApiServer {
            local_addr,
            shutdown,
            task,
            state,
            ca_pem: identity.ca_pem,
        })
    }
}

impl RunningApiServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<addr>`: plain HTTP, for kube-rs clients (client-go clients send no credentials
    /// over it; give them [`Self::https_url`]).
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// `https://<addr>`, the server URL for a kubeconfig, with [`Self::ca_pem`] as its
    /// `certificate-authority-data`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    /// The PEM CA certificate that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The administrator's bearer token (user `sandbox-admin` in `system:masters`), for the
    /// caller's kubeconfig and clients. A secret: never log it.
    pub fn admin_token(&self) -> &str {
        &self.state.config.admin_token
    }

    /// The current global resourceVersion (for tests and diagnostics).
    pub fn resource_version(&self) -> u64 {
        self.state.store.resource_version()
    }

    /// Stops accepting, ends open watches, and waits for the accept loop to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Resolves when the server stops on its own (it only does on shutdown).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let acceptor = acceptor.clone();
        let connection_shutdown = shutdown.clone();
        tokio::spawn(async move {
            // A TLS connection opens with a handshake record (content type 22).
            let mut first = [0u8; 1];
            let is_tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
            if is_tls {
                match acceptor.accept(stream).await {
                    Ok(tls) => serve_connection(tls, state, connection_shutdown).await,
                    Err(error) => tracing::debug!(%error, "TLS handshake failed"),
                }
            } else {
                serve_connection(stream, state, connection_shutdown).await;
            }
        });
    }
}

async fn serve_connection<S>(stream: S, state: Arc<State>, mut shutdown: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, request).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON response.
pub fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.to_status())
}

fn text_response(code: u16, text: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(text));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn stream_response(
    content_type: &'static str,
    stream: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>,
) -> Response<Body> {
    let mut response = Response::new(StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    response
}

pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|error| {
            ApiError::bad_request(format!(
                "cannot read the request body (at most {MAX_BODY_BYTES} bytes): {error}"
            ))
        })
}

pub(crate) fn content_type(request_headers: &http::HeaderMap) -> String {
    request_headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json")
        .to_owned()
}

/// Decodes an object body: JSON, YAML, or Kubernetes protobuf.
pub(crate) fn decode_object(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "application/vnd.kubernetes.protobuf" => protobuf::decode_object(body),
        "application/yaml" => crate::yaml::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("error decoding YAML: {error}"))),
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("error decoding JSON: {error}"))),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Decodes an optional `DeleteOptions` body; an empty or undecodable one is treated as absent,
/// as kubectl and client-go may send protobuf or nothing.
pub(crate) fn decode_delete_options(content_type: &str, body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return protobuf::decode_delete_options(body).ok();
    }
    serde_json::from_slice(body).ok()
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if !path.starts_with("/_sandbox/")
        && let Some(injection) = state.faults.check(method.as_str(), &path)
    {
        if let Some(delay) = injection.delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(error) = injection.error {
            return error_response(&error);
        }
    }
    let user = match authenticate(&state, &request) {
        Ok(user) => user,
        Err(error) => {
            tracing::debug!(%method, %path, "request not authenticated");
            return error_response(&error);
        }
    };
    let attributes = attributes_of(&state, &request, &user);
    if !path.starts_with("/_sandbox/") {
        let user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|agent| agent.to_str().ok());
        state
            .requests
            .record(RequestKind::of(&attributes, user_agent));
    }
    if let Err(error) = authorize(&state, &attributes) {
        tracing::debug!(%method, %path, user = %user.name, "request forbidden");
        return error_response(&error);
    }
    match route(&state, request, &user).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%method, %path, code = error.code, reason = error.reason, "request failed");
            error_response(&error)
        }
    }
}

/// Who sent the request: the administrator, a ServiceAccount whose token is still bound to an
/// existing object, or (on the health endpoints only) the anonymous user. Anything else is 401.
fn authenticate(state: &State, request: &Request<Incoming>) -> Result<UserInfo, ApiError> {
    match state.authenticator.credential(request.headers())? {
        Credential::Admin => Ok(UserInfo::admin()),
        Credential::None => {
            let path = request.uri().path();
            if ANONYMOUS_PATHS.contains(&path) {
                Ok(UserInfo::anonymous())
            } else {
                Err(ApiError::unauthorized())
            }
        }
        Credential::ServiceAccount {
            namespace,
            name,
            uid,
            pod,
        } => {
            let alive = |plural: &str, object: &str, expected: &str| {
                state.find("", "v1", plural).is_some_and(|info| {
                    state
                        .get(&info, Some(&namespace), object)
                        .is_ok_and(|found| {
                            found.pointer("/metadata/uid").and_then(Value::as_str) == Some(expected)
                        })
                })
            };
            // A pod-bound token dies with its pod, as the real token validator checks.
            let pod_alive = pod
                .as_ref()
                .is_none_or(|pod| alive("pods", &pod.name, &pod.uid));
            if alive("serviceaccounts", &name, &uid) && pod_alive {
                Ok(UserInfo::service_account(&namespace, &name, &uid))
            } else {
                Err(ApiError::unauthorized())
            }
        }
    }
}

/// The pod a TokenRequest for the ServiceAccount `namespace/account` binds its token to, checked
/// as kube-apiserver checks it: the pod exists, runs as that ServiceAccount, and has the UID the
/// reference names (if it names one). Other kinds of bound objects are echoed, not enforced.
fn bound_pod(
    state: &State,
    namespace: &str,
    account: &str,
    token_request: &Value,
) -> Result<Option<crate::auth::BoundPod>, ApiError> {
    let Some(reference) = token_request.pointer("/spec/boundObjectRef") else {
        return Ok(None);
    };
    let text = |key: &str| {
        reference
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    if text("kind") != "Pod" || !matches!(text("apiVersion"), "v1" | "") {
        return Ok(None);
    }
    let info = state
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not registered"))?;
    let pod = state.get(&info, Some(namespace), text("name"))?;
    let runs_as = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    if runs_as != account {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount \"{account}\" to pod running with different serviceaccount name."
        )));
    }
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !text("uid").is_empty() && text("uid") != uid {
        return Err(ApiError {
            message: format!(
                "Operation cannot be fulfilled on Pod \"{}\": the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                text("name"),
                text("uid")
            ),
            ..ApiError::conflict("", "Pod", text("name"))
        });
    }
    Ok(Some(crate::auth::BoundPod {
        name: text("name").to_owned(),
        uid,
    }))
}

/// What the request asks to do, as the authorizer sees it.
fn attributes_of(state: &State, request: &Request<Incoming>, user: &UserInfo) -> Attributes {
    let path = request.uri().path();
    let method = request.method().as_str();
    let is_namespaced =
        |group: &str, version: &str, plural: &str| state.is_namespaced(group, version, plural);
    match split_path(path, &is_namespaced) {
        Some(target) => Attributes::resource(
            user.clone(),
            method,
            path,
            &target,
            &Query::parse(request.uri().query()),
        ),
        None => Attributes::non_resource(user.clone(), method, path),
    }
}

fn authorize(state: &State, attributes: &Attributes) -> Result<(), ApiError> {
    if state.config.authorization == Authorization::AlwaysAllow {
        return Ok(());
    }
    if rbac::authorize(state, attributes).allowed {
        Ok(())
    } else {
        Err(attributes.forbidden())
    }
}

async fn route(
    state: &Arc<State>,
    request: Request<Incoming>,
    user: &UserInfo,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let method = request.method().clone();
    let resources = state.resource_table();
    match (method.clone(), path.as_str()) {
        (_, "/_sandbox/faults") => return faults(state, request).await,
        (_, "/_sandbox/requests") => return requests(state, &request),
        (_, "/_sandbox/watches") => return cut_watches(state, request).await,
        (_, "/_sandbox/compact") => return compact(state, &request),
        (Method::GET, "/version") => {
            return Ok(json_response(
                200,
                &discovery::version(&state.config.version),
            ));
        }
        (Method::GET, "/healthz" | "/livez" | "/readyz") => return Ok(text_response(200, "ok")),
        (Method::GET, "/api") => {
            return Ok(json_response(
                200,
                &discovery::core_versions(&state.local_addr.to_string()),
            ));
        }
        (Method::GET, "/apis") => return Ok(json_response(200, &discovery::groups(&resources))),
        (Method::GET, "/api/v1") => {
            return discovery::resource_list(&resources, "", "v1")
                .map(|list| json_response(200, &list))
                .ok_or_else(|| ApiError::no_route(&path));
        }
        _ => {}
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if method == Method::GET {
        let version = state.config.version.as_str();
        match segments.as_slice() {
            ["openapi", "v3"] => {
                return Ok(json_response(200, &discovery::openapi_v3_root(&resources)));
            }
            ["openapi", "v3", "api", gv] => {
                return discovery::openapi_v3_group_version(&resources, "", gv, version)
                    .map(|doc| json_response(200, &doc))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            ["openapi", "v3", "apis", group, gv] => {
                return discovery::openapi_v3_group_version(&resources, group, gv, version)
                    .map(|doc| json_response(200, &doc))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            ["apis", group] => {
                return discovery::group(&resources, group)
                    .map(|found| json_response(200, &found))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            ["apis", group, version] => {
                return discovery::resource_list(&resources, group, version)
                    .map(|list| json_response(200, &list))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            _ => {}
        }
    }
    let is_namespaced =
        |group: &str, version: &str, plural: &str| state.is_namespaced(group, version, plural);
    let Some(target) = split_path(request.uri().path(), &is_namespaced) else {
        return Err(ApiError::no_route(&path));
    };
    resource(state, request, target, user).await
}

async fn faults(
    state: &Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    match *request.method() {
        Method::GET => Ok(json_response(200, &json!(state.faults.list()))),
        Method::DELETE => {
            state.faults.clear();
            Ok(json_response(200, &json!({ "cleared": true })))
        }
        Method::POST => {
            let body = read_body(request.into_body()).await?;
            let spec: FaultSpec = serde_json::from_slice(&body).map_err(|error| ApiError::bad_request(format!("invalid fault: {error}; expected {{\"path_regex\", \"method\"?, \"status\"?, \"delay_ms\"?, \"count\"?}}")))?;
            state.faults.add(spec)?;
            Ok(json_response(201, &json!(state.faults.list())))
        }
        _ => Err(ApiError::method_not_allowed(
            "use GET, POST or DELETE on /_sandbox/faults",
        )),
    }
}

/// `POST /_sandbox/watches` ends every open watch stream now, as an API server restart or a
/// load balancer's idle timeout does; with `{"compact": true}` it also compacts the watch
/// history to the current version, so a client resuming from the last resourceVersion it saw
/// gets 410 Expired and must re-list (what a restarted server's empty watch cache answers), and
/// every outstanding continue token expires too.
async fn cut_watches(
    state: &Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if request.method() != Method::POST {
        return Err(ApiError::method_not_allowed(
            "use POST on /_sandbox/watches (body {\"compact\": true|false})",
        ));
    }
    let body = read_body(request.into_body()).await?;
    let compact = if body.is_empty() {
        false
    } else {
        let spec: Value = serde_json::from_slice(&body).map_err(|error| {
            ApiError::bad_request(format!(
                "invalid body: {error}; expected {{\"compact\": true|false}}"
            ))
        })?;
        spec.get("compact")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    // A compaction also expires the continue tokens of lists in progress, as etcd's does.
    let compacted_to = compact.then(|| {
        state.snapshots.compact();
        state.store.compact()
    });
    let open = state.watch_cuts.receiver_count();
    state.watch_cuts.send_modify(|generation| *generation += 1);
    Ok(json_response(
        200,
        &json!({ "cut": open, "compacted_to": compacted_to.map(|version| version.to_string()) }),
    ))
}

/// `POST /_sandbox/compact`: what an etcd compaction does to lists in progress: every
/// outstanding continue token expires (410 Expired on its next use).
fn compact(state: &State, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    if request.method() != Method::POST {
        return Err(ApiError::method_not_allowed(
            "use POST on /_sandbox/compact",
        ));
    }
    state.snapshots.compact();
    Ok(json_response(200, &json!({ "compacted": true })))
}

fn requests(state: &State, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    match *request.method() {
        Method::GET => {
            let query = Query::parse(request.uri().query());
            let counts = state.requests.snapshot(query.get("user"));
            Ok(json_response(200, &crate::requests::report(&counts)))
        }
        Method::DELETE => {
            state.requests.reset();
            Ok(json_response(200, &json!({ "cleared": true })))
        }
        _ => Err(ApiError::method_not_allowed(
            "use GET (optionally ?user=NAME) or DELETE on /_sandbox/requests",
        )),
    }
}

async fn resource(
    state: &Arc<State>,
    request: Request<Incoming>,
    target: ResourcePath,
    user: &UserInfo,
) -> Result<Response<Body>, ApiError> {
    let info = state
        .find(&target.group, &target.version, &target.resource)
        .ok_or_else(|| ApiError::no_route(request.uri().path()))?;
    if crate::event_versions::serves(&info) {
        return crate::event_versions::resource(state, request, target).await;
    }
    if info.create_only {
        if target.name.is_some() || *request.method() != Method::POST {
            return Err(ApiError::method_not_allowed(format!(
                "{} only accept create",
                info.plural
            )));
        }
        let headers = request.headers().clone();
        let body = read_body(request.into_body()).await?;
        let review = decode_object(&content_type(&headers), &body)?;
        return Ok(json_response(
            201,
            &self_review(state, &info, user, review)?,
        ));
    }
    let query = Query::parse(request.uri().query());
    let namespace = target.namespace.as_deref();
    let method = request.method().clone();
    let headers = request.headers().clone();
    let dry_run = query.dry_run();
    let writer = Writer::from_request(
        query.get("fieldManager"),
        headers
            .get(header::USER_AGENT)
            .and_then(|agent| agent.to_str().ok()),
    );
    let force = query.flag("force");
    let status_writer = writer.clone().through("status");
    let as_table = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(table::wants_table)
        .then(|| table::Include::from_query(query.get("includeObject")));
    let Some(name) = target.name.clone() else {
        return match method {
            Method::GET if query.flag("watch") => Ok(stream_response(
                "application/json",
                watches::start(state, &info, namespace, &query, as_table)?,
            )),
            Method::GET => match as_table {
                Some(include) => {
                    let page = state.select_page(&info, namespace, &query)?;
                    Ok(json_response(200, &table::page(&info, &page, include)))
                }
                None => Ok(json_response(200, &state.list(&info, namespace, &query)?)),
            },
            Method::POST => {
                let body = read_body(request.into_body()).await?;
                let object = decode_object(&content_type(&headers), &body)?;
                Ok(json_response(
                    201,
                    &state.create_as(
                        &info,
                        namespace,
                        object,
                        dry_run,
                        Ownership::Update(&writer),
                    )?,
                ))
            }
            Method::DELETE => {
                let body = read_body(request.into_body()).await?;
                let options = DeleteOptions::from_request(
                    &query,
                    decode_delete_options(&content_type(&headers), &body).as_ref(),
                )?;
                Ok(json_response(
                    200,
                    &state.delete_collection(&info, namespace, &query, &options)?,
                ))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on a collection of {}",
                info.plural
            ))),
        };
    };
    match target.subresource.as_deref() {
        None => match method {
            Method::GET => {
                let object = state.get(&info, namespace, &name)?;
                match as_table {
                    Some(include) => Ok(json_response(
                        200,
                        &table::table(&info, &[object], None, include, true),
                    )),
                    None => Ok(json_response(200, &object)),
                }
            }
            Method::PUT => {
                let body = read_body(request.into_body()).await?;
                let object = decode_object(&content_type(&headers), &body)?;
                let (code, stored) = state.update(
                    &info,
                    namespace,
                    &name,
                    object,
                    Part::Main,
                    dry_run,
                    &writer,
                )?;
                Ok(json_response(code, &stored))
            }
            Method::PATCH => {
                let kind = PatchKind::from_content_type(&content_type(&headers))?;
                let body = read_body(request.into_body()).await?;
                let (code, stored) = state.patch(
                    &info,
                    namespace,
                    &name,
                    (kind, &body),
                    Part::Main,
                    dry_run,
                    (&writer, force),
                )?;
                Ok(json_response(code, &stored))
            }
            Method::DELETE => {
                let body = read_body(request.into_body()).await?;
                let options = DeleteOptions::from_request(
                    &query,
                    decode_delete_options(&content_type(&headers), &body).as_ref(),
                )?;
                Ok(json_response(
                    200,
                    &state.delete(&info, namespace, &name, &options)?,
                ))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on {}",
                info.plural
            ))),
        },
        Some(sub) if !info.has_subresource(sub) => Err(ApiError::no_route(request.uri().path())),
        Some("status") => match method {
            Method::GET => Ok(json_response(200, &*state.get(&info, namespace, &name)?)),
            Method::PUT => {
                let body = read_body(request.into_body()).await?;
                let object = decode_object(&content_type(&headers), &body)?;
                Ok(json_response(
                    200,
                    &state
                        .update(
                            &info,
                            namespace,
                            &name,
                            object,
                            Part::Status,
                            dry_run,
                            &status_writer,
                        )?
                        .1,
                ))
            }
            Method::PATCH => {
                let kind = PatchKind::from_content_type(&content_type(&headers))?;
                let body = read_body(request.into_body()).await?;
                Ok(json_response(
                    200,
                    &state
                        .patch(
                            &info,
                            namespace,
                            &name,
                            (kind, &body),
                            Part::Status,
                            dry_run,
                            (&status_writer, force),
                        )?
                        .1,
                ))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on {}/status",
                info.plural
            ))),
        },
        Some("scale") => match method {
            Method::GET => Ok(json_response(
                200,
                &state.get_scale(&info, namespace, &name)?,
            )),
            Method::PUT => {
                let body = read_body(request.into_body()).await?;
                let scale = decode_object(&content_type(&headers), &body)?;
                Ok(json_response(
                    200,
                    &state.write_scale(
                        &info,
                        namespace,
                        &name,
                        ScaleChange::Replace(&scale),
                        dry_run,
                        (&writer, false),
                    )?,
                ))
            }
            Method::PATCH => {
                let kind = PatchKind::from_content_type(&content_type(&headers))?;
                let body = read_body(request.into_body()).await?;
                Ok(json_response(
                    200,
                    &state.write_scale(
                        &info,
                        namespace,
                        &name,
                        ScaleChange::Patch(kind, &body),
                        dry_run,
                        (&writer, force),
                    )?,
                ))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on {}/scale",
                info.plural
            ))),
        },
        Some("token") if method == Method::POST => {
            let body = read_body(request.into_body()).await?;
            let token_request = decode_object(&content_type(&headers), &body)?;
            let namespace = namespace.unwrap_or("default");
            let account = state.get(&info, Some(namespace), &name)?;
            let uid = account
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let pod = bound_pod(state, namespace, &name, &token_request)?;
            Ok(json_response(
                201,
                &state
                    .authenticator
                    .issue(namespace, &name, uid, pod, &token_request)?,
            ))
        }
        Some("log") if method == Method::GET => {
            logs(state, namespace.unwrap_or("default"), &name, &query).await
        }
        Some("proxy") => {
            proxy::forward(
                state,
                &info,
                namespace.unwrap_or("default"),
                &name,
                &target.rest,
                request,
            )
            .await
        }
        Some(sub) => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}/{sub}",
            info.plural
        ))),
    }
}

/// Answers a SelfSubjectAccessReview, SelfSubjectRulesReview or SelfSubjectReview about `user`:
/// the review comes back with its `status` filled in, nothing is stored.
fn self_review(
    state: &State,
    info: &crate::resources::ResourceInfo,
    user: &UserInfo,
    mut review: Value,
) -> Result<Value, ApiError> {
    if !review.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a {} object",
            info.kind
        )));
    }
    review["kind"] = json!(info.kind);
    review["apiVersion"] = json!(info.api_version());
    let metadata = json!({ "creationTimestamp": Value::Null });
    review["metadata"] = metadata;
    let text = |pointer: &str| {
        review
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match info.kind.as_str() {
        "SelfSubjectAccessReview" => {
            let attributes = if review.pointer("/spec/resourceAttributes").is_some() {
                Attributes {
                    user: user.clone(),
                    verb: text("/spec/resourceAttributes/verb"),
                    resource_request: true,
                    path: String::new(),
                    namespace: text("/spec/resourceAttributes/namespace"),
                    api_group: text("/spec/resourceAttributes/group"),
                    resource: text("/spec/resourceAttributes/resource"),
                    subresource: text("/spec/resourceAttributes/subresource"),
                    name: text("/spec/resourceAttributes/name"),
                }
            } else if review.pointer("/spec/nonResourceAttributes").is_some() {
                Attributes::non_resource(
                    user.clone(),
                    &text("/spec/nonResourceAttributes/verb"),
                    &text("/spec/nonResourceAttributes/path"),
                )
            } else {
                return Err(ApiError::invalid(
                    &info.kind,
                    &info.group,
                    "",
                    "spec.resourceAttributes",
                    "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                ));
            };
            let decision = if state.config.authorization == Authorization::AlwaysAllow {
                rbac::Decision {
                    allowed: true,
                    reason: String::new(),
                }
            } else {
                rbac::authorize(state, &attributes)
            };
            let mut status = json!({ "allowed": decision.allowed });
            if !decision.reason.is_empty() {
                status["reason"] = json!(decision.reason);
            }
            review["status"] = status;
        }
        "SelfSubjectRulesReview" => {
            let namespace = text("/spec/namespace");
            review["status"] = rbac::rules_review(state, user, &namespace);
        }
        _ => {
            review["status"] = json!({ "userInfo": user.to_json() });
        }
    }
    Ok(review)
}

async fn logs(
    state: &Arc<State>,
    namespace: &str,
    pod: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let info = state
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not registered"))?;
    state.get(&info, Some(namespace), pod)?;
    let backend = state.config.pod_backend.clone().ok_or_else(|| {
        ApiError::service_unavailable(
            "no kubelet is connected to this API server: pod logs are unavailable",
        )
    })?;
    let options = LogOptions {
        tail_lines: query.integer("tailLines")?,
        previous: query.flag("previous"),
        follow: query.flag("follow"),
        timestamps: query.flag("timestamps"),
        since_seconds: query.integer("sinceSeconds")?,
        limit_bytes: query.integer("limitBytes")?,
    };
    let container = query
        .get("container")
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    match backend
        .logs(namespace, pod, container.as_deref(), options)
        .await
    {
        Ok(PodLogs::Complete(text)) => Ok(text_response(200, text)),
        Ok(PodLogs::Stream(stream)) => Ok(stream_response("text/plain; charset=utf-8", stream)),
        Err(PodBackendError::BadRequest(message)) => Err(ApiError::bad_request(message)),
        Err(PodBackendError::Internal(message)) => Err(ApiError::internal(message)),
    }
}
