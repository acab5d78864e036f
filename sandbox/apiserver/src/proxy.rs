//! The `services/{name}:{port}/proxy/...` and `pods/{name}:{port}/proxy/...` subresources: the
//! target is resolved to a pod IP and port (Service → selector → a Ready pod's `status.podIP`,
//! named target ports through the pod's container ports) and the request is forwarded over plain
//! HTTP; pod IPs are Docker container addresses reachable from the host.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Request, Response, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::handlers::State;
use crate::resources::ResourceInfo;
use crate::server::Body;
use crate::status::ApiError;

fn client() -> &'static Client<HttpConnector, Body> {
    static CLIENT: OnceLock<Client<HttpConnector, Body>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

/// `[scheme:]name[:port]` as the proxy path names its target.
fn parse_target(spec: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [name] => ((*name).to_owned(), None),
        [name, port] => (
            (*name).to_owned(),
            Some((*port).to_owned()).filter(|port| !port.is_empty()),
        ),
        [_scheme, name, port, ..] => (
            (*name).to_owned(),
            Some((*port).to_owned()).filter(|port| !port.is_empty()),
        ),
        [] => (String::new(), None),
    }
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .is_some_and(|ip| !ip.is_empty())
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|condition| condition["type"] == "Ready" && condition["status"] == "True")
            })
}

/// Resolves a container port by name or number on a pod.
fn pod_port(pod: &Value, wanted: &Value) -> Option<u16> {
    if let Some(number) = wanted
        .as_u64()
        .or_else(|| wanted.as_str().and_then(|text| text.parse().ok()))
    {
        return u16::try_from(number).ok();
    }
    let name = wanted.as_str()?;
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .flat_map(|container| {
            container
                .get("ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .find(|port| port["name"] == name)
        .and_then(|port| port["containerPort"].as_u64())
        .and_then(|port| u16::try_from(port).ok())
}

fn resolve_service(
    state: &State,
    namespace: &str,
    name: &str,
    port: Option<&str>,
) -> Result<(String, u16), ApiError> {
    let services = state
        .find("", "v1", "services")
        .ok_or_else(|| ApiError::internal("services are not registered"))?;
    let service = state.get(&services, Some(namespace), name)?;
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let service_port = match port {
        None => ports.first().cloned(),
        Some(wanted) => ports
            .iter()
            .find(|candidate| {
                candidate["name"] == wanted
                    || candidate["port"]
                        .as_u64()
                        .map(|number| number.to_string())
                        .as_deref()
                        == Some(wanted)
            })
            .cloned(),
    }
    .ok_or_else(|| {
        ApiError::service_unavailable(format!(
            "no service port {:?} found for service \"{name}\"",
            port.unwrap_or_default()
        ))
    })?;
    let target_port = service_port
        .get("targetPort")
        .cloned()
        .unwrap_or_else(|| service_port["port"].clone());
    let selector = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if selector.is_empty() {
        return Err(ApiError::service_unavailable(format!(
            "no endpoints available for service \"{name}\": it has no selector"
        )));
    }
    let pods = state
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not registered"))?;
    let (candidates, _) = state.store.list(&pods.group, &pods.plural, Some(namespace));
    let ready: Vec<_> = candidates
        .iter()
        .filter(|pod| {
            selector.iter().all(|(key, value)| {
                pod.pointer("/metadata/labels")
                    .and_then(|labels| labels.get(key))
                    == Some(value)
            })
        })
        .filter(|pod| pod_ready(pod))
        .collect();
    if ready.is_empty() {
        return Err(ApiError::service_unavailable(format!(
            "no endpoints available for service \"{name}\""
        )));
    }
    let pick = usize::from(uuid::Uuid::new_v4().as_bytes()[0]) % ready.len();
    let pod = ready[pick];
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let port = pod_port(pod, &target_port).ok_or_else(|| {
        ApiError::service_unavailable(format!(
            "target port {target_port} of service \"{name}\" is not a port of pod {}",
            crate::handlers::name_of(pod)
        ))
    })?;
    Ok((ip, port))
}

fn resolve_pod(
    state: &State,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
    port: Option<&str>,
) -> Result<(String, u16), ApiError> {
    let pod = state.get(info, Some(namespace), name)?;
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            ApiError::service_unavailable(format!("pod \"{name}\" has no IP address yet"))
        })?
        .to_owned();
    let port = match port {
        Some(wanted) => pod_port(&pod, &Value::String(wanted.to_owned())),
        None => pod
            .pointer("/spec/containers/0/ports/0/containerPort")
            .and_then(Value::as_u64)
            .and_then(|port| u16::try_from(port).ok()),
    }
    .ok_or_else(|| {
        ApiError::service_unavailable(format!(
            "no port {:?} on pod \"{name}\"",
            port.unwrap_or_default()
        ))
    })?;
    Ok((ip, port))
}

/// Forwards `request` to the resolved pod and streams its answer back.
pub async fn forward(
    state: &Arc<State>,
    info: &ResourceInfo,
    namespace: &str,
    target: &str,
    rest: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (name, port) = parse_target(target);
    let (ip, port) = match info.kind.as_str() {
        "Service" => resolve_service(state, namespace, &name, port.as_deref())?,
        "Pod" => resolve_pod(state, info, namespace, &name, port.as_deref())?,
        other => {
            return Err(ApiError::method_not_allowed(format!(
                "{other} has no proxy subresource"
            )));
        }
    };
    let query = request
        .uri()
        .query()
        .map(|query| format!("?{query}"))
        .unwrap_or_default();
    let uri: Uri = format!("http://{ip}:{port}/{rest}{query}")
        .parse()
        .map_err(|error| ApiError::bad_request(format!("cannot build the proxied URL: {error}")))?;
    let (parts, body) = request.into_parts();
    let mut outgoing = Request::builder().method(parts.method).uri(uri);
    for (key, value) in &parts.headers {
        if !matches!(
            *key,
            header::HOST | header::CONNECTION | header::AUTHORIZATION | header::TRANSFER_ENCODING
        ) {
            outgoing = outgoing.header(key, value);
        }
    }
    let outgoing = outgoing
        .body(body.map_err(std::io::Error::other).boxed_unsync())
        .map_err(|error| {
            ApiError::bad_request(format!("cannot build the proxied request: {error}"))
        })?;
    let answer = tokio::time::timeout(Duration::from_secs(60), client().request(outgoing))
        .await
        .map_err(|_| ApiError::service_unavailable(format!("timed out proxying to {ip}:{port}")))?
        .map_err(|error| {
            ApiError::service_unavailable(format!("error trying to reach service: {error}"))
        })?;
    let (parts, body) = answer.into_parts();
    let mut response = Response::new(body.map_err(std::io::Error::other).boxed_unsync());
    *response.status_mut() = parts.status;
    for (key, value) in &parts.headers {
        if !matches!(*key, header::CONNECTION | header::TRANSFER_ENCODING) {
            response.headers_mut().append(key, value.clone());
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn target_spec_forms() {
        assert_eq!(parse_target("web"), ("web".to_owned(), None));
        assert_eq!(
            parse_target("web:8001"),
            ("web".to_owned(), Some("8001".to_owned()))
        );
        assert_eq!(
            parse_target("http:web:metrics"),
            ("web".to_owned(), Some("metrics".to_owned()))
        );
    }

    #[test]
    fn named_ports_resolve_through_container_ports() {
        let pod = json!({ "spec": { "containers": [{ "ports": [{ "name": "metrics", "containerPort": 8001 }] }] } });
        assert_eq!(pod_port(&pod, &json!("metrics")), Some(8001));
        assert_eq!(pod_port(&pod, &json!(9000)), Some(9000));
        assert_eq!(pod_port(&pod, &json!("nope")), None);
    }
}
