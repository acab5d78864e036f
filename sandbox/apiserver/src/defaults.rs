//! Defaulting and the little validation clients rely on: the fields a real API server fills in
//! (Deployment strategy, pod spec defaults, Service clusterIP, Secret `stringData` → `data`) and
//! the required fields whose absence a real server rejects (Deployment selector, pod containers).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

fn ensure_object<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !value.get(key).is_some_and(Value::is_object) {
        value[key] = json!({});
    }
    match value.get_mut(key) {
        Some(Value::Object(map)) => map,
        // ensured just above
        _ => unreachable!("ensured to be an object"),
    }
}

fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), value);
    }
}

fn container_defaults(container: &mut Value) {
    let Some(map) = container.as_object_mut() else {
        return;
    };
    default_field(map, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(map, "terminationMessagePolicy", json!("File"));
    let latest = map
        .get("image")
        .and_then(Value::as_str)
        .is_some_and(|image| {
            let tail = image.rsplit('/').next().unwrap_or(image);
            !tail.contains(':') && !image.contains('@') || tail.ends_with(":latest")
        });
    default_field(
        map,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    default_field(map, "resources", json!({}));
    if let Some(Value::Array(ports)) = map.get_mut("ports") {
        for port in ports {
            if let Some(port) = port.as_object_mut() {
                default_field(port, "protocol", json!("TCP"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(probe)) = map.get_mut(probe) {
            default_field(probe, "timeoutSeconds", json!(1));
            default_field(probe, "periodSeconds", json!(10));
            default_field(probe, "successThreshold", json!(1));
            default_field(probe, "failureThreshold", json!(3));
            if let Some(Value::Object(http)) = probe.get_mut("httpGet") {
                default_field(http, "scheme", json!("HTTP"));
                default_field(http, "path", json!("/"));
            }
        }
    }
}

/// Pod spec defaults, shared by Pods and the templates of Deployments and ReplicaSets.
pub fn pod_spec_defaults(spec: &mut Value) {
    let Some(map) = spec.as_object_mut() else {
        return;
    };
    default_field(map, "restartPolicy", json!("Always"));
    default_field(map, "terminationGracePeriodSeconds", json!(30));
    default_field(map, "dnsPolicy", json!("ClusterFirst"));
    default_field(map, "securityContext", json!({}));
    default_field(map, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = map.get_mut(list) {
            containers.iter_mut().for_each(container_defaults);
        }
    }
}

fn template_defaults(spec: &mut Map<String, Value>) {
    if let Some(template) = spec.get_mut("template") {
        if let Some(pod_spec) = template.get_mut("spec") {
            pod_spec_defaults(pod_spec);
        }
        if let Some(Value::Object(metadata)) = template.get_mut("metadata") {
            metadata.remove("creationTimestamp");
        }
    }
}

fn require_selector(kind: &str, group: &str, name: &str, object: &Value) -> Result<(), ApiError> {
    let Some(selector) = object.pointer("/spec/selector") else {
        return Err(ApiError::invalid(
            kind,
            group,
            name,
            "spec.selector",
            "Required value",
        ));
    };
    let template_labels = object
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(Value::Object(match_labels)) = selector.get("matchLabels") {
        for (key, value) in match_labels {
            if template_labels.get(key) != Some(value) {
                return Err(ApiError::invalid(
                    kind,
                    group,
                    name,
                    "spec.template.metadata.labels",
                    "Invalid value: selector does not match template labels",
                ));
            }
        }
    }
    Ok(())
}

/// Fills defaults into a new or replaced object of `kind` and checks required fields.
/// `cluster_ip` is called for a Service needing an address.
pub fn apply_defaults(
    kind: &str,
    group: &str,
    object: &mut Value,
    cluster_ip: &mut dyn FnMut() -> String,
) -> Result<(), ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match (group, kind) {
        ("apps", "Deployment") => {
            require_selector(kind, group, &name, object)?;
            let spec = ensure_object(object, "spec");
            default_field(spec, "replicas", json!(1));
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(spec, "progressDeadlineSeconds", json!(600));
            default_field(spec, "strategy", json!({ "type": "RollingUpdate" }));
            if let Some(Value::Object(strategy)) = spec.get_mut("strategy")
                && strategy
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("RollingUpdate")
                    == "RollingUpdate"
            {
                default_field(strategy, "type", json!("RollingUpdate"));
                default_field(strategy, "rollingUpdate", json!({}));
                if let Some(Value::Object(rolling)) = strategy.get_mut("rollingUpdate") {
                    default_field(rolling, "maxSurge", json!("25%"));
                    default_field(rolling, "maxUnavailable", json!("25%"));
                }
            }
            template_defaults(spec);
        }
        ("apps", "ReplicaSet") => {
            require_selector(kind, group, &name, object)?;
            let spec = ensure_object(object, "spec");
            default_field(spec, "replicas", json!(1));
            template_defaults(spec);
        }
        ("", "Pod") => {
            let has_containers = object
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .is_some_and(|list| !list.is_empty());
            if !has_containers {
                return Err(ApiError::invalid(
                    kind,
                    group,
                    &name,
                    "spec.containers",
                    "Required value",
                ));
            }
            if let Some(spec) = object.get_mut("spec") {
                pod_spec_defaults(spec);
                if let Some(map) = spec.as_object_mut() {
                    default_field(map, "serviceAccountName", json!("default"));
                    default_field(map, "enableServiceLinks", json!(true));
                    default_field(map, "priority", json!(0));
                }
            }
        }
        ("", "Service") => {
            let spec = ensure_object(object, "spec");
            default_field(spec, "type", json!("ClusterIP"));
            default_field(spec, "sessionAffinity", json!("None"));
            let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
            if !headless
                && spec
                    .get("clusterIP")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                let address = cluster_ip();
                spec.insert("clusterIP".to_owned(), json!(address));
                spec.insert("clusterIPs".to_owned(), json!([address]));
            }
            default_field(spec, "ipFamilies", json!(["IPv4"]));
            default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
            default_field(spec, "internalTrafficPolicy", json!("Cluster"));
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for port in ports {
                    if let Some(port) = port.as_object_mut() {
                        default_field(port, "protocol", json!("TCP"));
                        let number = port.get("port").cloned().unwrap_or(Value::Null);
                        default_field(port, "targetPort", number);
                    }
                }
            }
        }
        ("", "Secret") => {
            if let Some(Value::Object(string_data)) = object
                .as_object_mut()
                .and_then(|map| map.remove("stringData"))
            {
                let data = ensure_object(object, "data");
                for (key, value) in string_data {
                    let text = value.as_str().unwrap_or_default();
                    data.insert(
                        key,
                        json!(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
            }
            if let Some(map) = object.as_object_mut() {
                default_field(map, "type", json!("Opaque"));
            }
        }
        ("", "Namespace") => {
            let spec = ensure_object(object, "spec");
            default_field(spec, "finalizers", json!(["kubernetes"]));
            object["status"] = json!({ "phase": "Active" });
            if !object
                .pointer("/metadata/labels")
                .is_some_and(Value::is_object)
            {
                object["metadata"]["labels"] = json!({});
            }
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        ("", "ServiceAccount") | ("", "ConfigMap") | ("", "Endpoints") | ("", "Event") => {}
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({
            "metadata": { "name": "web" },
            "spec": {
                "selector": { "matchLabels": { "app": "web" } },
                "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "app", "image": "web:1", "ports": [{ "containerPort": 80 }] }] } }
            }
        })
    }

    #[test]
    fn deployment_gets_the_real_defaults() {
        let mut object = deployment();
        apply_defaults("Deployment", "apps", &mut object, &mut || unreachable!()).expect("valid");
        assert_eq!(object["spec"]["replicas"], 1);
        assert_eq!(object["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(object["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            object["spec"]["strategy"],
            json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" } })
        );
        let container = &object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        assert_eq!(container["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(container["ports"][0]["protocol"], "TCP");
        assert_eq!(
            object["spec"]["template"]["spec"]["restartPolicy"],
            "Always"
        );
    }

    #[test]
    fn deployment_without_selector_is_invalid() {
        let mut object = deployment();
        object["spec"]
            .as_object_mut()
            .expect("map")
            .remove("selector");
        let error = apply_defaults("Deployment", "apps", &mut object, &mut || unreachable!())
            .expect_err("invalid");
        assert_eq!(error.code, 422);
        assert!(error.message.contains("spec.selector"));
    }

    #[test]
    fn service_gets_a_cluster_ip_and_secret_string_data_is_encoded() {
        let mut service =
            json!({ "metadata": { "name": "s" }, "spec": { "ports": [{ "port": 8001 }] } });
        apply_defaults("Service", "", &mut service, &mut || "10.96.0.7".to_owned()).expect("valid");
        assert_eq!(service["spec"]["clusterIP"], "10.96.0.7");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 8001);
        let mut secret = json!({ "metadata": { "name": "s" }, "stringData": { "k": "v" } });
        apply_defaults("Secret", "", &mut secret, &mut || unreachable!()).expect("valid");
        assert_eq!(secret["data"]["k"], "dg==");
        assert!(secret.get("stringData").is_none());
        assert_eq!(secret["type"], "Opaque");
    }

    #[test]
    fn latest_images_are_always_pulled() {
        let mut pod = json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "a", "image": "127.0.0.1:5000/x" }, { "name": "b", "image": "127.0.0.1:5000/x:1" }] } });
        apply_defaults("Pod", "", &mut pod, &mut || unreachable!()).expect("valid");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
    }
}
