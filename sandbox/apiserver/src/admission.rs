//! Mutating admission: the sidecar injection a service mesh's webhook performs on pods (Linkerd's
//! proxy injector, Istio's sidecar injector), so clients meet pods with a container they did not
//! ask for. Pure: the handler passes the pod being created and its namespace.
//!
//! A pod created in a namespace labelled [`INJECTION_LABEL`]`=enabled` gets the container
//! [`SIDECAR_NAME`] first in `spec.containers` (where Linkerd puts its proxy), unless the pod opts
//! out with the annotation [`INJECT_ANNOTATION`]`: disabled`; it is marked with
//! [`STATUS_ANNOTATION`] so a pod is injected once, and `kubectl.kubernetes.io/default-container`
//! names the first application container, as both meshes set it. Only CREATE is mutated, as the
//! webhooks register for it: a Deployment's template never shows the sidecar, its pods do.

use serde_json::{Value, json};

/// The namespace label that turns injection on (value `enabled`).
pub const INJECTION_LABEL: &str = "sidecar-injection";
/// The pod annotation that turns it off for one pod (value `disabled`).
pub const INJECT_ANNOTATION: &str = "sidecar-injection/inject";
/// The annotation an injected pod carries.
pub const STATUS_ANNOTATION: &str = "sidecar-injection/status";
/// The injected container's name.
pub const SIDECAR_NAME: &str = "mesh-proxy";
/// The port the sidecar answers its readiness probe on (Istio's health port).
pub const SIDECAR_HEALTH_PORT: u16 = 15021;

/// What is injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarInjection {
    /// The sidecar's image: it must run `/bin/busybox httpd` and hold `/var/lib/mesh-proxy/healthz/ready`
    /// (the sandbox builds one from the host's static busybox).
    pub image: String,
}

impl SidecarInjection {
    /// The container added to pods.
    pub fn container(&self) -> Value {
        json!({
            "name": SIDECAR_NAME,
            "image": self.image,
            "command": ["/bin/busybox", "httpd", "-f", "-p", SIDECAR_HEALTH_PORT.to_string(), "-h", "/var/lib/mesh-proxy"],
            "ports": [{ "name": "mesh-health", "containerPort": SIDECAR_HEALTH_PORT, "protocol": "TCP" }],
            "readinessProbe": {
                "httpGet": { "path": "/healthz/ready", "port": SIDECAR_HEALTH_PORT },
                "periodSeconds": 2,
                "failureThreshold": 30,
            },
            "resources": { "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "memory": "32Mi" } },
            "securityContext": {
                "runAsUser": 1337,
                "runAsNonRoot": true,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] },
            },
        })
    }

    /// Injects the sidecar into `pod` when `namespace` asks for it; true when the pod changed.
    pub fn mutate(&self, namespace: &Value, pod: &mut Value) -> bool {
        let enabled = namespace
            .pointer(&format!("/metadata/labels/{INJECTION_LABEL}"))
            .and_then(Value::as_str)
            == Some("enabled");
        let annotations = pod.pointer("/metadata/annotations");
        let annotation = |key: &str| {
            annotations
                .and_then(|annotations| annotations.get(key))
                .and_then(Value::as_str)
        };
        if !enabled
            || annotation(INJECT_ANNOTATION) == Some("disabled")
            || annotation(STATUS_ANNOTATION).is_some()
        {
            return false;
        }
        let Some(containers) = pod
            .pointer_mut("/spec/containers")
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        if containers
            .iter()
            .any(|container| container["name"] == SIDECAR_NAME)
        {
            return false;
        }
        let first_app = containers
            .first()
            .and_then(|container| container["name"].as_str())
            .map(str::to_owned);
        containers.insert(0, self.container());
        let metadata = &mut pod["metadata"];
        if !metadata["annotations"].is_object() {
            metadata["annotations"] = json!({});
        }
        metadata["annotations"][STATUS_ANNOTATION] = json!(format!("injected: {SIDECAR_NAME}"));
        if let Some(first_app) = first_app
            && metadata["annotations"]
                .get("kubectl.kubernetes.io/default-container")
                .is_none()
        {
            metadata["annotations"]["kubectl.kubernetes.io/default-container"] = json!(first_app);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injection() -> SidecarInjection {
        SidecarInjection {
            image: "127.0.0.1:5000/psctl-mesh-proxy:1".to_owned(),
        }
    }

    fn namespace(label: Option<&str>) -> Value {
        match label {
            Some(value) => {
                json!({ "metadata": { "name": "team", "labels": { INJECTION_LABEL: value } } })
            }
            None => json!({ "metadata": { "name": "team" } }),
        }
    }

    fn pod() -> Value {
        json!({ "metadata": { "name": "web-1" }, "spec": { "containers": [{ "name": "app", "image": "web:1" }] } })
    }

    #[test]
    fn a_labelled_namespace_gets_the_sidecar_first_and_the_default_container_annotation() {
        let mut pod = pod();
        assert!(injection().mutate(&namespace(Some("enabled")), &mut pod));
        let names: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter_map(|container| container["name"].as_str())
            .collect();
        assert_eq!(names, [SIDECAR_NAME, "app"]);
        assert_eq!(
            pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
            "app"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["image"],
            "127.0.0.1:5000/psctl-mesh-proxy:1"
        );
        // Injected once: a second pass changes nothing.
        let before = pod.clone();
        assert!(!injection().mutate(&namespace(Some("enabled")), &mut pod));
        assert_eq!(pod, before);
    }

    #[test]
    fn other_namespaces_and_opted_out_pods_are_left_alone() {
        for label in [None, Some("disabled")] {
            let mut pod = pod();
            assert!(!injection().mutate(&namespace(label), &mut pod));
            assert_eq!(pod, self::pod());
        }
        let mut opted_out = pod();
        opted_out["metadata"]["annotations"] = json!({ INJECT_ANNOTATION: "disabled" });
        let before = opted_out.clone();
        assert!(!injection().mutate(&namespace(Some("enabled")), &mut opted_out));
        assert_eq!(opted_out, before);
    }
}
