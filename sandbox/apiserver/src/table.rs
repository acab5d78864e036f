//! Server-side printing: `meta.k8s.io/v1` Table answers for clients that ask for them
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the columns kubectl shows for
//! the common kinds (pods' READY/STATUS/RESTARTS, deployments' READY/UP-TO-DATE/AVAILABLE, ...).
//! Other kinds get NAME and AGE, as the real server does for resources without printers.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// Whether an Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .any(|part| part.contains("as=Table") && part.contains("g=meta.k8s.io"))
}

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// Reads the `includeObject` query parameter.
    pub fn from_query(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// kubectl's human duration: `45s`, `3m2s`, `17m`, `5h3m`, `30h`, `3d4h`, `12d`.
pub fn human_age(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        format!("{minutes}m{}s", seconds % 60)
    } else if hours < 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        format!("{hours}h{}m", minutes % 60)
    } else if hours < 48 {
        format!("{hours}h")
    } else if days < 8 {
        format!("{days}d{}h", hours % 24)
    } else {
        format!("{days}d")
    }
}

fn age(object: &Value) -> String {
    let created = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok());
    match created {
        Some(created) => {
            human_age((chrono::Utc::now() - created.with_timezone(&chrono::Utc)).num_seconds())
        }
        None => "<unknown>".to_owned(),
    }
}

fn column(name: &str, kind: &str, priority: u8) -> Value {
    json!({ "name": name, "type": kind, "format": if name == "Name" { "name" } else { "" }, "description": name, "priority": priority })
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn containers_and_images(object: &Value, pointer: &str) -> (String, String) {
    let containers = object
        .pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = containers
        .iter()
        .map(|container| text(container, "/name"))
        .collect();
    let images: Vec<String> = containers
        .iter()
        .map(|container| text(container, "/image"))
        .collect();
    (names.join(","), images.join(","))
}

fn selector_text(object: &Value) -> String {
    let labels = object
        .pointer("/spec/selector/matchLabels")
        .or_else(|| object.pointer("/spec/selector"))
        .and_then(Value::as_object);
    match labels {
        Some(labels) if !labels.is_empty() => labels
            .iter()
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".to_owned(),
    }
}

/// The pod STATUS column: Terminating, a container's waiting/terminated reason, or the phase.
pub fn pod_status(pod: &Value) -> String {
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|value| !value.is_null())
    {
        return "Terminating".to_owned();
    }
    let mut reason = pod
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| text(pod, "/status/phase"));
    for status in pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if let Some(waiting) = status
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
        {
            reason = waiting.to_owned();
        } else if let Some(terminated) = status
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            reason = terminated.to_owned();
        }
    }
    if reason.is_empty() {
        "Pending".to_owned()
    } else {
        reason
    }
}

/// Column definitions and one row's cells for `info`'s kind.
fn columns(info: &ResourceInfo) -> Vec<Value> {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => vec![
            column("Name", "string", 0),
            column("Ready", "string", 0),
            column("Status", "string", 0),
            column("Restarts", "string", 0),
            column("Age", "string", 0),
            column("IP", "string", 1),
            column("Node", "string", 1),
        ],
        ("apps", "Deployment") => vec![
            column("Name", "string", 0),
            column("Ready", "string", 0),
            column("Up-to-date", "integer", 0),
            column("Available", "integer", 0),
            column("Age", "string", 0),
            column("Containers", "string", 1),
            column("Images", "string", 1),
            column("Selector", "string", 1),
        ],
        ("apps", "ReplicaSet") => vec![
            column("Name", "string", 0),
            column("Desired", "integer", 0),
            column("Current", "integer", 0),
            column("Ready", "integer", 0),
            column("Age", "string", 0),
            column("Containers", "string", 1),
            column("Images", "string", 1),
            column("Selector", "string", 1),
        ],
        ("", "Service") => vec![
            column("Name", "string", 0),
            column("Type", "string", 0),
            column("Cluster-IP", "string", 0),
            column("External-IP", "string", 0),
            column("Port(s)", "string", 0),
            column("Age", "string", 0),
            column("Selector", "string", 1),
        ],
        ("", "Namespace") => vec![
            column("Name", "string", 0),
            column("Status", "string", 0),
            column("Age", "string", 0),
        ],
        ("", "Secret") => vec![
            column("Name", "string", 0),
            column("Type", "string", 0),
            column("Data", "string", 0),
            column("Age", "string", 0),
        ],
        ("", "ConfigMap") => vec![
            column("Name", "string", 0),
            column("Data", "string", 0),
            column("Age", "string", 0),
        ],
        ("", "Endpoints") => vec![
            column("Name", "string", 0),
            column("Endpoints", "string", 0),
            column("Age", "string", 0),
        ],
        ("", "Event") => vec![
            column("Last Seen", "string", 0),
            column("Type", "string", 0),
            column("Reason", "string", 0),
            column("Object", "string", 0),
            column("Message", "string", 0),
        ],
        _ => vec![column("Name", "string", 0), column("Age", "string", 0)],
    }
}

fn cells(info: &ResourceInfo, object: &Value) -> Vec<Value> {
    let name = json!(text(object, "/metadata/name"));
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => {
            let statuses = object
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = object
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses
                .iter()
                .filter(|status| status["ready"] == true)
                .count();
            let restarts: i64 = statuses
                .iter()
                .map(|status| status["restartCount"].as_i64().unwrap_or(0))
                .sum();
            let or_none = |value: String| {
                if value.is_empty() {
                    "<none>".to_owned()
                } else {
                    value
                }
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(object)),
                json!(restarts.to_string()),
                json!(age(object)),
                json!(or_none(text(object, "/status/podIP"))),
                json!(or_none(text(object, "/spec/nodeName"))),
            ]
        }
        ("apps", "Deployment") => {
            let (containers, images) =
                containers_and_images(object, "/spec/template/spec/containers");
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(object, "/status/readyReplicas"),
                    int(object, "/spec/replicas")
                )),
                json!(int(object, "/status/updatedReplicas")),
                json!(int(object, "/status/availableReplicas")),
                json!(age(object)),
                json!(containers),
                json!(images),
                json!(selector_text(object)),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (containers, images) =
                containers_and_images(object, "/spec/template/spec/containers");
            vec![
                name,
                json!(int(object, "/spec/replicas")),
                json!(int(object, "/status/replicas")),
                json!(int(object, "/status/readyReplicas")),
                json!(age(object)),
                json!(containers),
                json!(images),
                json!(selector_text(object)),
            ]
        }
        ("", "Service") => {
            let ports: Vec<String> = object
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|port| {
                    format!(
                        "{}/{}",
                        port["port"],
                        port["protocol"].as_str().unwrap_or("TCP")
                    )
                })
                .collect();
            let cluster_ip = text(object, "/spec/clusterIP");
            vec![
                name,
                json!(text(object, "/spec/type")),
                json!(if cluster_ip.is_empty() {
                    "<none>".to_owned()
                } else {
                    cluster_ip
                }),
                json!("<none>"),
                json!(if ports.is_empty() {
                    "<none>".to_owned()
                } else {
                    ports.join(",")
                }),
                json!(age(object)),
                json!(selector_text(object)),
            ]
        }
        ("", "Namespace") => vec![
            name,
            json!(text(object, "/status/phase")),
            json!(age(object)),
        ],
        ("", "Secret") => vec![
            name,
            json!(text(object, "/type")),
            json!(
                object
                    .get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |data| data.len())
            ),
            json!(age(object)),
        ],
        ("", "ConfigMap") => vec![
            name,
            json!(
                object
                    .get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |data| data.len())
                    + object
                        .get("binaryData")
                        .and_then(Value::as_object)
                        .map_or(0, |data| data.len())
            ),
            json!(age(object)),
        ],
        ("", "Endpoints") => {
            let mut addresses = Vec::new();
            for subset in object
                .get("subsets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let ports: Vec<String> = subset["ports"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|port| port["port"].to_string())
                    .collect();
                for address in subset["addresses"].as_array().cloned().unwrap_or_default() {
                    for port in &ports {
                        addresses.push(format!(
                            "{}:{port}",
                            address["ip"].as_str().unwrap_or_default()
                        ));
                    }
                }
            }
            vec![
                name,
                json!(if addresses.is_empty() {
                    "<none>".to_owned()
                } else {
                    addresses.join(",")
                }),
                json!(age(object)),
            ]
        }
        ("", "Event") => vec![
            json!(age(object)),
            json!(text(object, "/type")),
            json!(text(object, "/reason")),
            json!(format!(
                "{}/{}",
                text(object, "/involvedObject/kind").to_lowercase(),
                text(object, "/involvedObject/name")
            )),
            json!(text(object, "/message")),
        ],
        _ => vec![name, json!(age(object))],
    }
}

fn row(info: &ResourceInfo, object: &Value, include: Include) -> Value {
    let mut row = json!({ "cells": cells(info, object) });
    match include {
        Include::None => {}
        Include::Object => row["object"] = object.clone(),
        Include::Metadata => {
            row["object"] = json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"] })
        }
    }
    row
}

/// The Table of one list chunk, its `continue` token and remaining count carried over.
pub fn page(info: &ResourceInfo, page: &crate::paging::Page, include: Include) -> Value {
    let mut table = table(info, &page.items, Some(page.version), include, true);
    if let Some(token) = &page.continue_token {
        table["metadata"]["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining {
        table["metadata"]["remainingItemCount"] = json!(remaining);
    }
    table
}

/// A Table of `objects`; `with_columns` false leaves the definitions out (later watch events).
pub fn table(
    info: &ResourceInfo,
    objects: &[Arc<Value>],
    resource_version: Option<u64>,
    include: Include,
    with_columns: bool,
) -> Value {
    let mut metadata = json!({});
    if let Some(version) = resource_version {
        metadata["resourceVersion"] = json!(version.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": if with_columns { columns(info) } else { Vec::new() },
        "rows": objects.iter().map(|object| row(info, object, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtin;

    fn info(kind: &str) -> ResourceInfo {
        builtin()
            .into_iter()
            .find(|info| info.kind == kind)
            .expect("built in")
    }

    #[test]
    fn pod_rows_show_readiness_waiting_reason_and_restarts() {
        let pod = Arc::new(json!({
            "metadata": { "name": "web-1", "creationTimestamp": "2020-01-01T00:00:00Z" },
            "spec": { "containers": [{ "name": "a" }, { "name": "b" }] },
            "status": { "phase": "Running", "containerStatuses": [
                { "name": "a", "ready": true, "restartCount": 0, "state": { "running": {} } },
                { "name": "b", "ready": false, "restartCount": 4, "state": { "waiting": { "reason": "CrashLoopBackOff" } } }
            ] }
        }));
        let table = table(&info("Pod"), &[pod], Some(7), Include::Metadata, true);
        assert_eq!(table["metadata"]["resourceVersion"], "7");
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "4");
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["columnDefinitions"].as_array().map(Vec::len), Some(7));
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(45), "45s");
        assert_eq!(human_age(182), "3m2s");
        assert_eq!(human_age(17 * 60), "17m");
        assert_eq!(human_age(5 * 3600 + 180), "5h3m");
        assert_eq!(human_age(30 * 3600), "30h");
        assert_eq!(human_age(3 * 86_400 + 4 * 3600), "3d4h");
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
