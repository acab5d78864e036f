//! How psctl's cost grows with the cluster: the API requests the real `psctl` binary makes, and
//! its wall time, for `psctl history` at 10, 100 and 1000 Helm revisions and for `psctl status`
//! and `psctl smoke --only cluster` at 10, 100 and 500 pods.
//!
//! No Docker and no sandbox: the emulated API server (`psctl-sandbox-apiserver`) runs in this
//! process. As its administrator the bench creates what psctl reads, in the shape a real cluster
//! has it: Helm release Secrets re-encoded from a payload the real Helm engine wrote
//! (`src/helm/fixtures`), Deployments, their ReplicaSets and Ready pods (status written through
//! the status subresource, as a kubelet would). psctl runs as a least-privilege ServiceAccount
//! bound to the Role `psctl rbac` prints, with a kubeconfig over HTTPS. The API server counts
//! requests per identity (`/_sandbox/requests`); only psctl's own are reported.
//!
//! `cargo bench -p psctl --bench scaling` prints one line per command and size (requests, the
//! verbs and resources behind them, median wall time of three runs), then one line per command
//! with the growth in requests computed from those figures: `scaling_<command>_requests=<growth>`.
//! Run by `cargo test --bench scaling` (no `--bench` argument) it is the quick mode CI uses: one
//! run per size and smaller sizes.

#[path = "shared/cost.rs"]
mod cost;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use psctl::helm::storage::PAGE_SIZE;
use psctl_sandbox_apiserver::{ApiServer, ApiServerConfig, RunningApiServer};
use serde_json::{Value, json};

const ENV: &str = "bench";
const ACCOUNT: &str = "psctl";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// A release payload the real Helm v4 engine wrote (base64 of gzip of the release JSON).
const HELM_PAYLOAD: &[u8] = include_bytes!("../src/helm/fixtures/fixture-release.v2.release");
const CREATED: &str = "2026-12-01T09:00:00Z";

/// The two components as `psctl.yaml` lists them (the defaults, with the repository's charts).
struct Component {
    name: &'static str,
    release: &'static str,
    chart: &'static str,
    image: &'static str,
    app: &'static str,
    container: &'static str,
    metrics_service: &'static str,
    metrics_port: u16,
}

const POLLER: Component = Component {
    name: "poller",
    release: "problemsolver-poller",
    chart: "poller",
    image: "problemsolver-poller",
    app: "problemsolver-poller",
    container: "poller",
    metrics_service: "problemsolver-poller-metrics",
    metrics_port: 8002,
};

const WEBHOOK: Component = Component {
    name: "webhook",
    release: "problemsolver-webhook",
    chart: "webhook-worker",
    image: "problemsolver-webhook-worker",
    app: "problemsolver-webhook",
    container: "webhook-worker",
    metrics_service: "problemsolver-webhook-metrics",
    metrics_port: 8001,
};

struct Mode {
    runs: usize,
    revisions: [u32; 3],
    pods: [u32; 3],
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --bench scaling` does not: the quick mode.
    let full = std::env::args().any(|arg| arg == "--bench");
    let mode = if full {
        Mode {
            runs: 3,
            revisions: [10, 100, 1000],
            pods: [10, 100, 500],
        }
    } else {
        Mode {
            runs: 1,
            revisions: [10, 30, 100],
            pods: [10, 30, 100],
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench(&mode));
}

async fn bench(mode: &Mode) {
    let server = ApiServer::start(ApiServerConfig {
        bind: ([127, 0, 0, 1], 0).into(),
        ..ApiServerConfig::default()
    })
    .await
    .expect("the API server starts");
    let mut admin_config = kube::Config::new(server.url().parse().expect("server URL"));
    admin_config.auth_info.token = Some(server.admin_token().to_owned().into());
    let admin = kube::Client::try_from(admin_config).expect("administrator client");
    let dir = tempfile::tempdir().expect("temporary directory");

    // history: one namespace, revisions of the webhook release added between sizes.
    let history = Tenant::create(&server, &admin, dir.path(), "scaling-history").await;
    let mut figures = Vec::new();
    let mut written = 0;
    for &size in &mode.revisions {
        while written < size {
            written += 1;
            history.upgrade(WEBHOOK.release, written).await;
        }
        let figure = history
            .measure(mode.runs, &["history", "-o", "json"], |stdout| {
                let revisions = serde_json::from_str::<Value>(stdout)
                    .ok()
                    .and_then(|v| v.as_array().map(Vec::len));
                assert_eq!(
                    revisions,
                    Some(size as usize),
                    "psctl history lists every revision"
                );
            })
            .await;
        figure.print("history", "revisions", size);
        // The revisions are read in chunks of PAGE_SIZE: one list request per chunk.
        assert_eq!(
            figure.requests,
            u64::from(size.div_ceil(PAGE_SIZE)),
            "psctl history lists the release Secrets in pages of {PAGE_SIZE}: {}",
            figure.breakdown
        );
        figures.push((u64::from(size), figure));
    }
    summary("history", "revisions", &figures, Some(PAGE_SIZE));

    // status and smoke: another namespace with Helm's default history (10 revisions per
    // release), one poller pod, and the webhook's pods grown between sizes.
    let cluster = Tenant::create(&server, &admin, dir.path(), "scaling-status").await;
    for component in [&POLLER, &WEBHOOK] {
        for revision in 1..=10 {
            cluster.upgrade(component.release, revision).await;
        }
    }
    let poller = cluster.workload(&POLLER).await;
    cluster.pod(&POLLER, &poller, 0).await;
    let webhook = cluster.workload(&WEBHOOK).await;
    let mut status_figures = Vec::new();
    let mut smoke_figures = Vec::new();
    let mut pods = 1;
    for &size in &mode.pods {
        while pods < size {
            cluster.pod(&WEBHOOK, &webhook, pods).await;
            pods += 1;
        }
        cluster.scale(&WEBHOOK, &webhook, size - 1).await;
        let figure = cluster
            .measure(mode.runs, &["status", "-o", "json"], |stdout| {
                let status: Value = serde_json::from_str(stdout).expect("status JSON");
                let listed: usize = status["components"]
                    .as_array()
                    .expect("components")
                    .iter()
                    .map(|c| c["pods"].as_array().map_or(0, Vec::len))
                    .sum();
                assert_eq!(listed, size as usize, "psctl status shows every pod");
            })
            .await;
        figure.print("status", "pods", size);
        status_figures.push((u64::from(size), figure));
        let figure = cluster
            .measure(
                mode.runs,
                &["smoke", "--only", "cluster", "-o", "json"],
                |stdout| {
                    let report: Value = serde_json::from_str(stdout).expect("smoke JSON");
                    assert_eq!(
                        report["summary"]["failed"], 0,
                        "every pod is Ready: {report}"
                    );
                    assert!(
                        report["summary"]["passed"].as_u64() >= Some(2),
                        "both components were checked: {report}"
                    );
                },
            )
            .await;
        figure.print("smoke_cluster", "pods", size);
        smoke_figures.push((u64::from(size), figure));
    }
    summary("status", "pods", &status_figures, None);
    summary("smoke_cluster", "pods", &smoke_figures, None);
    server.shutdown().await;
}

/// A namespace with psctl's ServiceAccount, its Role and binding, its kubeconfig and a
/// psctl.yaml naming them.
struct Tenant<'a> {
    admin: &'a kube::Client,
    namespace: String,
    config: PathBuf,
    user: String,
}

struct Workload {
    replica_set: String,
    uid: String,
    hash: String,
}

struct Figure {
    requests: u64,
    breakdown: String,
    wall: Duration,
}

impl Figure {
    fn print(&self, command: &str, unit: &str, size: u32) {
        println!(
            "{command} {unit}={size} requests={} ({}) wall_ms={:.1}",
            self.requests,
            self.breakdown,
            self.wall.as_secs_f64() * 1000.0
        );
    }
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

impl<'a> Tenant<'a> {
    async fn create(
        server: &'a RunningApiServer,
        admin: &'a kube::Client,
        dir: &Path,
        namespace: &str,
    ) -> Self {
        Api::<Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": namespace}})),
            )
            .await
            .expect("create the namespace");
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
        accounts
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": ACCOUNT}})),
            )
            .await
            .expect("create the ServiceAccount");
        let kubeconfig = dir.join(format!("{namespace}.kubeconfig"));
        let config = dir.join(format!("{namespace}.yaml"));
        let component = |c: &Component| {
            json!({
                "release": c.release,
                "chart": Path::new(ROOT).join("charts").join(c.chart),
                "image": c.image,
                "deployment": c.release,
                "selector": format!("app={}", c.app),
                "metrics": {"service": c.metrics_service, "port": c.metrics_port},
            })
        };
        let mut webhook = component(&WEBHOOK);
        webhook["canary"] = json!({"deployment": format!("{}-canary", WEBHOOK.release)});
        let environment = json!({
            "kube_context": "scaling",
            "kubeconfig": kubeconfig,
            "namespace": namespace,
            "components": {POLLER.name: component(&POLLER), WEBHOOK.name: webhook},
        });
        std::fs::write(
            &config,
            serde_yaml::to_string(&json!({"environments": {ENV: environment}})).unwrap(),
        )
        .expect("write psctl.yaml");
        let tenant = Self {
            admin,
            namespace: namespace.to_owned(),
            config,
            user: format!("system:serviceaccount:{namespace}:{ACCOUNT}"),
        };

        // What an operator applies for psctl: the Role and RoleBinding `psctl rbac` prints.
        let printed = tenant.psctl(&["rbac", "--subject", &tenant.user]);
        assert!(printed.status.success(), "psctl rbac: {printed:?}");
        for document in serde_yaml::Deserializer::from_slice(&printed.stdout) {
            let value: Value =
                serde::Deserialize::deserialize(document).expect("psctl rbac prints YAML");
            match value["kind"].as_str() {
                Some("Role") => {
                    Api::<Role>::namespaced(admin.clone(), namespace)
                        .create(&PostParams::default(), &object(value))
                        .await
                        .expect("the Role is accepted");
                }
                Some("RoleBinding") => {
                    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
                        .create(&PostParams::default(), &object(value))
                        .await
                        .expect("the RoleBinding is accepted");
                }
                other => panic!("psctl rbac printed an unexpected {other:?}"),
            }
        }
        let token = accounts
            .create_token_request(
                ACCOUNT,
                &PostParams::default(),
                &TokenRequest {
                    spec: TokenRequestSpec {
                        expiration_seconds: Some(3600),
                        ..TokenRequestSpec::default()
                    },
                    ..TokenRequest::default()
                },
            )
            .await
            .expect("a token for psctl's ServiceAccount")
            .status
            .expect("TokenRequest status")
            .token;
        let ca = base64::engine::general_purpose::STANDARD.encode(server.ca_pem());
        let text = serde_yaml::to_string(&json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "scaling", "cluster": {"server": server.https_url(), "certificate-authority-data": ca}}],
            "users": [{"name": ACCOUNT, "user": {"token": token}}],
            "contexts": [{"name": "scaling", "context": {"cluster": "scaling", "user": ACCOUNT, "namespace": namespace}}],
            "current-context": "scaling",
        }))
        .unwrap();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_private()
            .open(&kubeconfig)
            .expect("create the kubeconfig");
        file.write_all(text.as_bytes())
            .expect("write the kubeconfig");
        tenant
    }

    /// `psctl ARGS --env bench --config <psctl.yaml>`, with nothing from this process's
    /// environment but `PATH` and `HOME`.
    fn psctl(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_psctl"));
        command.env_clear();
        for name in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .env("NO_COLOR", "1")
            .args(args)
            .args(["--env", ENV, "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .expect("run psctl")
    }

    /// Runs psctl `runs` times, each after resetting the request counts: the requests of the
    /// last run by psctl's identity (every run must make as many) and the median wall time.
    async fn measure(&self, runs: usize, args: &[&str], check: impl Fn(&str)) -> Figure {
        let mut walls = Vec::new();
        let mut counted: Option<cost::Requests> = None;
        for _ in 0..runs {
            self.sandbox("DELETE", "/_sandbox/requests").await;
            let started = Instant::now();
            let output = self.psctl(args);
            walls.push(started.elapsed());
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "psctl {}: {}\n{stdout}\n{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            check(&stdout);
            let requests = cost::Requests::from_report(
                &self
                    .sandbox("GET", &format!("/_sandbox/requests?user={}", self.user))
                    .await,
            );
            assert_eq!(
                requests.clients(),
                [psctl::cluster::USER_AGENT],
                "every request of psctl {} names psctl as its client",
                args.join(" ")
            );
            if let Some(previous) = &counted {
                assert_eq!(
                    previous,
                    &requests,
                    "psctl {} made different requests from one run to the next",
                    args.join(" ")
                );
            }
            counted = Some(requests);
        }
        walls.sort();
        let requests = counted.expect("at least one run");
        Figure {
            requests: requests.total(),
            breakdown: requests.breakdown(),
            wall: walls[walls.len() / 2],
        }
    }

    /// A `/_sandbox/` request as the administrator.
    async fn sandbox(&self, method: &str, uri: &str) -> Value {
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Vec::new())
            .expect("request");
        let text = self
            .admin
            .request_text(request)
            .await
            .expect("the administrator reaches /_sandbox/requests");
        serde_json::from_str(&text).expect("JSON")
    }

    /// What `helm upgrade` leaves in storage: revision `revision` of `release` deployed, the
    /// previous one (if any) rewritten as superseded.
    async fn upgrade(&self, release: &str, revision: u32) {
        if revision > 1 {
            let name = format!("sh.helm.release.v1.{release}.v{}", revision - 1);
            Api::<Secret>::namespaced(self.admin.clone(), &self.namespace)
                .delete(&name, &Default::default())
                .await
                .expect("delete the previous release Secret");
            self.release_secret(release, revision - 1, "superseded")
                .await;
        }
        self.release_secret(release, revision, "deployed").await;
    }

    /// Helm's release Secret for `release` at `revision`: the real engine's payload with this
    /// release's name, namespace, revision and status, encoded as Helm encodes it.
    async fn release_secret(&self, release: &str, revision: u32, status: &str) {
        let compact: Vec<u8> = HELM_PAYLOAD
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let gzipped = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .expect("the fixture is base64");
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(gzipped.as_slice())
            .read_to_end(&mut text)
            .expect("the fixture is gzip");
        let mut body: Value = serde_json::from_slice(&text).expect("the fixture is JSON");
        body["name"] = json!(release);
        body["namespace"] = json!(self.namespace);
        body["version"] = json!(revision);
        body["info"]["status"] = json!(status);
        body["info"]["description"] = json!(if revision == 1 {
            "Install complete"
        } else {
            "Upgrade complete"
        });
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(body.to_string().as_bytes())
            .expect("gzip");
        let payload = base64::engine::general_purpose::STANDARD
            .encode(encoder.finish().expect("gzip"))
            .into_bytes();
        let mut secret: Secret = object(json!({
            "metadata": {
                "name": format!("sh.helm.release.v1.{release}.v{revision}"),
                "labels": {"name": release, "owner": "helm", "status": status, "version": revision.to_string()},
            },
            "type": "helm.sh/release.v1",
        }));
        secret.data = Some(BTreeMap::from([(
            "release".to_owned(),
            ByteString(payload),
        )]));
        Api::<Secret>::namespaced(self.admin.clone(), &self.namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the release Secret");
    }

    /// The component's Deployment (stable track) and its ReplicaSet, as the Deployment
    /// controller leaves them.
    async fn workload(&self, component: &Component) -> Workload {
        let hash = if component.name == "poller" {
            "5d8c7b9f4"
        } else {
            "7f6d9c8b5"
        };
        let image = format!(
            "127.0.0.1:5000/{}:{}",
            component.image, "0123456789abcdef0123456789abcdef01234567"
        );
        let labels = json!({"app": component.app, "app.kubernetes.io/instance": component.release, "track": "stable"});
        let template = json!({
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": component.container, "image": image,
                                      "ports": [{"name": "metrics", "containerPort": component.metrics_port}]}]},
        });
        let deployment: Deployment = object(json!({
            "metadata": {"name": component.release, "labels": labels,
                         "annotations": {"deployment.kubernetes.io/revision": "1", "meta.helm.sh/release-name": component.release}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
        }));
        let deployment = Api::<Deployment>::namespaced(self.admin.clone(), &self.namespace)
            .create(&PostParams::default(), &deployment)
            .await
            .expect("create the Deployment");
        let mut rs_labels = labels.clone();
        rs_labels["pod-template-hash"] = json!(hash);
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"] = rs_labels.clone();
        let name = format!("{}-{hash}", component.release);
        let replica_set: ReplicaSet = object(json!({
            "metadata": {"name": name, "labels": rs_labels,
                         "annotations": {"deployment.kubernetes.io/revision": "1"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": component.release,
                                              "uid": deployment.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": rs_labels}, "template": rs_template},
        }));
        let replica_set = Api::<ReplicaSet>::namespaced(self.admin.clone(), &self.namespace)
            .create(&PostParams::default(), &replica_set)
            .await
            .expect("create the ReplicaSet");
        Workload {
            replica_set: name,
            uid: replica_set.metadata.uid.unwrap_or_default(),
            hash: hash.to_owned(),
        }
    }

    /// Sets the replicas of the component's Deployment and ReplicaSet, and their status, to
    /// `replicas` Ready pods.
    async fn scale(&self, component: &Component, workload: &Workload, replicas: u32) {
        let params = PatchParams::default();
        let spec = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        let status = |extra: Value| {
            let mut status = json!({"observedGeneration": 2, "replicas": replicas, "readyReplicas": replicas,
                                    "availableReplicas": replicas});
            for (key, value) in extra.as_object().unwrap() {
                status[key] = value.clone();
            }
            Patch::Merge(json!({ "status": status }))
        };
        let deployments = Api::<Deployment>::namespaced(self.admin.clone(), &self.namespace);
        deployments
            .patch(component.release, &params, &spec)
            .await
            .expect("scale the Deployment");
        deployments
            .patch_status(
                component.release,
                &params,
                &status(json!({"updatedReplicas": replicas})),
            )
            .await
            .expect("Deployment status");
        let replica_sets = Api::<ReplicaSet>::namespaced(self.admin.clone(), &self.namespace);
        replica_sets
            .patch(&workload.replica_set, &params, &spec)
            .await
            .expect("scale the ReplicaSet");
        replica_sets
            .patch_status(
                &workload.replica_set,
                &params,
                &status(json!({"fullyLabeledReplicas": replicas})),
            )
            .await
            .expect("ReplicaSet status");
    }

    /// Ready pod number `index` of the component's ReplicaSet, its status written through the
    /// status subresource as the kubelet writes it.
    async fn pod(&self, component: &Component, workload: &Workload, index: u32) {
        let name = format!("{}-{index:05x}", workload.replica_set);
        let image = format!(
            "127.0.0.1:5000/{}:{}",
            component.image, "0123456789abcdef0123456789abcdef01234567"
        );
        let pod: Pod = object(json!({
            "metadata": {
                "name": name,
                "labels": {"app": component.app, "app.kubernetes.io/instance": component.release,
                           "track": "stable", "pod-template-hash": workload.hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": workload.replica_set,
                                     "uid": workload.uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"nodeName": "psctl-sandbox",
                     "containers": [{"name": component.container, "image": image,
                                     "ports": [{"name": "metrics", "containerPort": component.metrics_port}]}]},
        }));
        let api = Api::<Pod>::namespaced(self.admin.clone(), &self.namespace);
        api.create(&PostParams::default(), &pod)
            .await
            .expect("create the pod");
        let condition =
            |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": CREATED});
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"),
                           condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
            "hostIP": "172.18.0.2",
            "podIP": format!("10.244.{}.{}", index / 250, index % 250 + 2),
            "startTime": CREATED,
            "qosClass": "BestEffort",
            "containerStatuses": [{
                "name": component.container, "image": image,
                "imageID": format!("docker-pullable://{image}"),
                "containerID": format!("docker://{:064x}", u64::from(index) + 1),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": CREATED}},
            }],
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("pod status");
    }
}

/// Private files without an extra dependency: `mode(0o600)` on Unix.
trait ModePrivate {
    fn mode_private(&mut self) -> &mut Self;
}

impl ModePrivate for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.mode(0o600)
    }
}

/// Prints the `scaling_<command>_requests=` line of the figures (see `shared/cost.rs`).
fn summary(command: &str, unit: &str, figures: &[(u64, Figure)], page: Option<u32>) {
    let points: Vec<cost::Point> = figures
        .iter()
        .map(|(size, figure)| cost::Point {
            size: *size,
            requests: figure.requests,
            wall: figure.wall,
        })
        .collect();
    println!("{}", cost::growth_line(command, unit, &points, page));
}
