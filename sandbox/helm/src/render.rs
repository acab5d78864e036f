//! `helm template` without a cluster. The engine library has no render-only entry point, so
//! the chart is really installed, with the real engine, against a throwaway API endpoint that
//! lives in this process for the duration of the call: it answers discovery for the kinds
//! charts use, stores nothing, and echoes every object back. The rendered manifest is read from
//! the release the engine returns. Nothing leaves loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;

/// A resource served by discovery: (plural name, kind, namespaced).
type Resource = (&'static str, &'static str, bool);

/// (group, version, resources) served by discovery.
const RESOURCES: &[(&str, &str, &[Resource])] = &[
    (
        "",
        "v1",
        &[
            ("namespaces", "Namespace", false),
            ("secrets", "Secret", true),
            ("configmaps", "ConfigMap", true),
            ("services", "Service", true),
            ("serviceaccounts", "ServiceAccount", true),
            ("pods", "Pod", true),
            ("persistentvolumeclaims", "PersistentVolumeClaim", true),
            ("endpoints", "Endpoints", true),
        ],
    ),
    (
        "apps",
        "v1",
        &[
            ("deployments", "Deployment", true),
            ("replicasets", "ReplicaSet", true),
            ("statefulsets", "StatefulSet", true),
            ("daemonsets", "DaemonSet", true),
        ],
    ),
    (
        "batch",
        "v1",
        &[("jobs", "Job", true), ("cronjobs", "CronJob", true)],
    ),
    (
        "policy",
        "v1",
        &[("poddisruptionbudgets", "PodDisruptionBudget", true)],
    ),
    (
        "autoscaling",
        "v2",
        &[("horizontalpodautoscalers", "HorizontalPodAutoscaler", true)],
    ),
    (
        "networking.k8s.io",
        "v1",
        &[
            ("networkpolicies", "NetworkPolicy", true),
            ("ingresses", "Ingress", true),
        ],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        &[
            ("roles", "Role", true),
            ("rolebindings", "RoleBinding", true),
            ("clusterroles", "ClusterRole", false),
            ("clusterrolebindings", "ClusterRoleBinding", false),
        ],
    ),
    ("coordination.k8s.io", "v1", &[("leases", "Lease", true)]),
    (
        "apiextensions.k8s.io",
        "v1",
        &[(
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        )],
    ),
    (
        "monitoring.coreos.com",
        "v1",
        &[
            ("servicemonitors", "ServiceMonitor", true),
            ("podmonitors", "PodMonitor", true),
            ("prometheusrules", "PrometheusRule", true),
        ],
    ),
];

/// One HTTP request, as far as the endpoint needs it.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(stream: &mut BufReader<TcpStream>) -> std::io::Result<Request> {
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if stream.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            stream.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        stream.read_exact(&mut body)?;
    }
    Ok(Request { method, path, body })
}

fn discovery_list(group: &str, version: &str, resources: &[Resource]) -> String {
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<serde_json::Value> = resources
        .iter()
        .map(|(name, kind, namespaced)| {
            serde_json::json!({
                "name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced,
                "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    serde_json::json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": group_version, "resources": resources,
    })
    .to_string()
}

/// The answer to one request: status code and JSON body.
fn answer(request: &Request) -> (u16, String) {
    let path = request.path.trim_end_matches('/');
    match path {
        "/version" => {
            return (
                200,
                serde_json::json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0",
                                   "platform": "linux/amd64"})
                .to_string(),
            );
        }
        "/api" => {
            return (
                200,
                serde_json::json!({"kind": "APIVersions", "versions": ["v1"]}).to_string(),
            );
        }
        "/apis" => {
            let groups: Vec<serde_json::Value> = RESOURCES
                .iter()
                .filter(|(group, _, _)| !group.is_empty())
                .map(|(group, version, _)| {
                    let gv = serde_json::json!({"groupVersion": format!("{group}/{version}"),
                                                "version": version});
                    serde_json::json!({"name": group, "versions": [gv.clone()],
                                       "preferredVersion": gv})
                })
                .collect();
            return (
                200,
                serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
                    .to_string(),
            );
        }
        _ => {}
    }
    for (group, version, resources) in RESOURCES {
        let root = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        if path == root {
            return (200, discovery_list(group, version, resources));
        }
    }
    match request.method.as_str() {
        // Release storage: no earlier revisions.
        "GET" if path.ends_with("/secrets") => (
            200,
            r#"{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}"#
                .to_string(),
        ),
        "GET" => (
            404,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}"#
                .to_string(),
        ),
        "POST" | "PUT" | "PATCH" => {
            // Release records arrive as protobuf (`k8s\0` envelope); anything answers them.
            if request.body.starts_with(b"k8s\0") {
                return (
                    201,
                    r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"release"}}"#
                        .to_string(),
                );
            }
            match serde_json::from_slice::<serde_json::Value>(&request.body) {
                Ok(object) => (201, object.to_string()),
                Err(_) => (201, "{}".to_string()),
            }
        }
        _ => (
            200,
            r#"{"kind":"Status","apiVersion":"v1","status":"Success"}"#.to_string(),
        ),
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let request = read_request(&mut reader)?;
    let (code, body) = answer(&request);
    let reason = if code == 404 { "Not Found" } else { "OK" };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// A throwaway API endpoint and a kubeconfig pointing at it; stops when dropped (its thread
/// ends with the process, which exits right after rendering).
pub struct RenderEndpoint {
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl RenderEndpoint {
    /// Starts the endpoint on an ephemeral loopback port.
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    // A client that hangs up early is not an error worth reporting.
                    let _ = serve(stream);
                });
            }
        });
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: render\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: render\n  context:\n    cluster: render\n    user: render\nusers:\n- name: render\n  user: {{}}\ncurrent-context: render\n"
            ),
        )?;
        Ok(Self {
            _dir: dir,
            kubeconfig,
        })
    }

    /// The kubeconfig that targets this endpoint.
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }
}

/// The manifest `helm template` prints for a release JSON: the rendered objects, then hook
/// manifests with their source comments.
pub fn manifest_of(release: &serde_json::Value) -> String {
    let mut out = release
        .get("manifest")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    for hook in release
        .get("hooks")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = hook
            .get("path")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let manifest = hook
            .get("manifest")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        out.push_str(&format!("---\n# Source: {path}\n{manifest}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, body: &[u8]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn discovery_lists_the_kinds_charts_use() {
        let (code, body) = answer(&request("GET", "/apis/monitoring.coreos.com/v1", b""));
        assert_eq!(code, 200);
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["groupVersion"], "monitoring.coreos.com/v1");
        assert_eq!(list["resources"][0]["kind"], "ServiceMonitor");
        let (_, body) = answer(&request("GET", "/apis", b""));
        assert!(body.contains("\"policy/v1\""));
    }

    #[test]
    fn storage_is_empty_and_objects_echo() {
        let (code, body) = answer(&request("GET", "/api/v1/namespaces/x/secrets", b""));
        assert_eq!((code, body.contains("\"items\":[]")), (200, true));
        assert_eq!(
            answer(&request("GET", "/api/v1/namespaces/x/configmaps/y", b"")).0,
            404
        );
        let (code, body) = answer(&request(
            "POST",
            "/api/v1/namespaces/x/configmaps",
            br#"{"kind":"ConfigMap"}"#,
        ));
        assert_eq!((code, body.as_str()), (201, r#"{"kind":"ConfigMap"}"#));
        let (code, _) = answer(&request(
            "POST",
            "/api/v1/namespaces/x/secrets",
            b"k8s\0\x0a\x02",
        ));
        assert_eq!(code, 201);
    }

    #[test]
    fn manifest_includes_hooks() {
        let release = serde_json::json!({
            "manifest": "---\n# Source: c/templates/a.yaml\nkind: A\n",
            "hooks": [{"path": "c/templates/hook.yaml", "manifest": "kind: Job"}]
        });
        assert_eq!(
            manifest_of(&release),
            "---\n# Source: c/templates/a.yaml\nkind: A\n---\n# Source: c/templates/hook.yaml\nkind: Job\n"
        );
    }
}
