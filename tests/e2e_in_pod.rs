//! End-to-end: psctl as a CI job inside a pod. The image holds psctl, the Helm it drives (the
//! sandbox's `helm` and its engine library) and the charts; its psctl.yaml names no kubeconfig
//! and no context, so psctl and Helm both fall back to the pod's ServiceAccount (the token,
//! `ca.crt` and `namespace` the kubelet mounts, the API server the kubelet's
//! `KUBERNETES_SERVICE_HOST`/`_PORT` name). The pod runs as the test's ServiceAccount, bound to
//! exactly what `psctl rbac` prints. Needs the sandbox (`scripts/test.sh` brings it up); never
//! skips.
//!
//! The sandbox registry listens on the host's loopback only, which pods cannot reach: the pod's
//! psctl.yaml therefore names no `registry` (the tag preflight is skipped, as psctl says) and
//! gives the chart the image repository the kubelet pulls from.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, LogParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use support::images::run;
use support::sandbox::ENV;
use support::{ROOT, Sandbox, images};

/// Where the image keeps what psctl drives, and where the pod finds its psctl.yaml.
const HELM_IN_IMAGE: &str = "/opt/psctl/bin/helm";
const CHARTS_IN_IMAGE: &str = "/opt/psctl/charts";
const CONFIG_DIR: &str = "/etc/psctl";

/// The sandbox's `helm` (psctl.yaml's `helm:`) and its engine library (`<bin>/../lib`).
fn sandbox_helm(sandbox: &Sandbox) -> (PathBuf, PathBuf) {
    let helm = sandbox
        .environment
        .helm
        .clone()
        .expect("the sandbox's psctl.yaml names its helm");
    let lib = helm
        .parent()
        .and_then(Path::parent)
        .expect("helm lives in <state>/bin")
        .join("lib");
    assert!(
        lib.join("libhelm_sdkpy.so").is_file(),
        "the Helm engine library is not in {}",
        lib.display()
    );
    (helm, lib)
}

/// Builds `<registry>/psctl-ci:<hash>` (psctl, helm with its engine, the charts, on the sandbox
/// base image) and pushes it, unless the registry has it. Returns the reference.
fn psctl_image(sandbox: &Sandbox) -> String {
    let psctl = PathBuf::from(env!("CARGO_BIN_EXE_psctl"));
    let (helm, lib) = sandbox_helm(sandbox);
    let mut hash = Sha256::new();
    hash.update(std::fs::read(&psctl).expect("the psctl binary"));
    for path in [&helm, &lib.join("libhelm_sdkpy.so")] {
        let metadata = std::fs::metadata(path).expect("helm files");
        hash.update(format!(
            "{}:{}:{:?}",
            path.display(),
            metadata.len(),
            metadata.modified().ok()
        ));
    }
    let charts = Path::new(ROOT).join("charts");
    let listing = Command::new("sh")
        .args(["-c", "find . -type f | sort | xargs sha256sum"])
        .current_dir(&charts)
        .output()
        .expect("hash the charts");
    hash.update(&listing.stdout);
    let reference = format!(
        "{}/psctl-ci:{}",
        sandbox.registry,
        &hex::encode(hash.finalize())[..12]
    );
    let present = Command::new("docker")
        .args(["manifest", "inspect", "--insecure", &reference])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return reference;
    }
    let context = tempfile::tempdir().unwrap();
    let dir = context.path();
    std::fs::copy(&psctl, dir.join("psctl")).unwrap();
    std::fs::copy(&helm, dir.join("helm")).unwrap();
    std::fs::create_dir(dir.join("lib")).unwrap();
    std::fs::copy(
        lib.join("libhelm_sdkpy.so"),
        dir.join("lib/libhelm_sdkpy.so"),
    )
    .unwrap();
    run(
        Command::new("cp").args([
            "-a",
            &charts.display().to_string(),
            &dir.display().to_string(),
        ]),
        "copy the charts",
    );
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {registry}/psctl-base:bookworm\n\
             COPY psctl /usr/local/bin/psctl\n\
             COPY helm {HELM_IN_IMAGE}\n\
             COPY lib/ /opt/psctl/lib/\n\
             COPY charts/ {CHARTS_IN_IMAGE}/\n\
             ENTRYPOINT [\"/usr/local/bin/psctl\"]\n",
            registry = sandbox.registry
        ),
    )
    .unwrap();
    run(
        Command::new("docker").args(["build", "-q", "-t", &reference, &dir.display().to_string()]),
        "docker build of the psctl image",
    );
    run(
        Command::new("docker").args(["push", "-q", &reference]),
        "docker push of the psctl image",
    );
    reference
}

/// The environment the pod runs with: the test's components, charts at their place in the
/// image, the image repositories the kubelet pulls, and no kubeconfig, context, registry,
/// Prometheus or database (none of them is reachable or wanted from the pod). No namespace
/// either: psctl acts in the pod's own, which is the test's.
fn in_pod_environment(sandbox: &Sandbox, host_config: &Path) -> Value {
    let text = std::fs::read_to_string(host_config).unwrap();
    let whole: Value = psctl::yaml::from_str(&text).unwrap();
    let mut environment = whole["environments"][ENV].clone();
    let object = environment.as_object_mut().unwrap();
    for key in [
        "kube_context",
        "kubeconfig",
        "namespace",
        "registry",
        "prometheus_url",
        "database_url_env",
    ] {
        object.remove(key);
    }
    object.insert("helm".to_owned(), json!(HELM_IN_IMAGE));
    for (name, chart) in [("poller", "poller"), ("webhook", "webhook-worker")] {
        let component = &mut environment["components"][name];
        let image = component["image"].as_str().unwrap().to_owned();
        component["chart"] = json!(format!("{CHARTS_IN_IMAGE}/{chart}"));
        component["values"]["image"]["repository"] = json!(format!("{}/{image}", sandbox.registry));
    }
    json!({ "environments": { ENV: environment } })
}

/// A pod running `psctl ARGS --config /etc/psctl/psctl.yaml` as the test's ServiceAccount, the
/// configuration mounted from the ConfigMap `psctl-ci`.
fn job_pod(name: &str, image: &str, args: &[&str], automount: Option<bool>) -> Pod {
    let mut args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    args.extend(["--config".to_owned(), format!("{CONFIG_DIR}/psctl.yaml")]);
    let mut pod = json!({
        "metadata": { "name": name, "labels": { "app": "psctl-ci" } },
        "spec": {
            "serviceAccountName": support::sandbox::SERVICE_ACCOUNT,
            "restartPolicy": "Never",
            "containers": [{
                "name": "psctl",
                "image": image,
                "args": args,
                "env": [{ "name": "NO_COLOR", "value": "1" }],
                "volumeMounts": [{ "name": "config", "mountPath": CONFIG_DIR, "readOnly": true }],
            }],
            "volumes": [{ "name": "config", "projected": { "sources": [
                { "configMap": { "name": "psctl-ci" } },
            ] } }],
        },
    });
    if let Some(automount) = automount {
        pod["spec"]["automountServiceAccountToken"] = json!(automount);
    }
    serde_json::from_value(pod).unwrap()
}

/// Runs the pod to its end; returns its exit code and its log.
async fn run_pod(sandbox: &Sandbox, pod: Pod, limit: Duration) -> (i32, String) {
    let pods: Api<Pod> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
    let started = Instant::now();
    loop {
        let current = pods.get(&name).await.expect("read the pod");
        let terminated = current
            .status
            .as_ref()
            .and_then(|status| status.container_statuses.as_ref())
            .and_then(|statuses| statuses.first())
            .and_then(|status| status.state.as_ref())
            .and_then(|state| state.terminated.clone());
        if let Some(terminated) = terminated {
            let log = pods
                .logs(&name, &LogParams::default())
                .await
                .expect("the pod's log");
            return (terminated.exit_code, log);
        }
        assert!(
            started.elapsed() < limit,
            "pod {name} did not finish within {limit:?}: {:#?}",
            current.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn psctl_in_a_pod_deploys_and_reports_as_its_service_account() {
    let sandbox = Sandbox::services("in-pod").await;
    let host_config = sandbox.config("host", |_| {});
    // Built while nothing else runs on this test's runtime.
    let image = psctl_image(&sandbox);
    // Revision 1 from the host, as the same least-privilege identity.
    sandbox.deploy(&host_config, &["webhook"]);
    let before = sandbox.history(&host_config, "webhook");
    assert_eq!(before.len(), 1, "{before:#?}");

    // The pod's configuration, in the ConfigMap its volume projects.
    let pod_config = psctl::yaml::to_string(&in_pod_environment(&sandbox, &host_config)).unwrap();
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "psctl-ci" },
        "data": { "psctl.yaml": pod_config },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create the configuration");

    // A new tag of the same image: the upgrade changes the Deployment.
    let new_tag = format!("in-pod-{}", sandbox.tag);
    {
        let (registry, tag, new_tag) = (
            sandbox.registry.clone(),
            sandbox.tag.clone(),
            new_tag.clone(),
        );
        tokio::task::spawn_blocking(move || {
            images::retag(&registry, "problemsolver-webhook-worker", &tag, &new_tag);
        })
        .await
        .unwrap();
    }

    // The CI job: `psctl deploy` of one component, as the pod's ServiceAccount.
    let (code, log) = run_pod(
        &sandbox,
        job_pod(
            "psctl-deploy",
            &image,
            &[
                "deploy",
                "--component",
                "webhook",
                "--tag",
                &new_tag,
                "--timeout",
                "3m",
                "--yes",
                "--allow-no-audit",
            ],
            None,
        ),
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(code, 0, "psctl deploy in the pod failed:\n{log}");
    assert!(
        log.contains("in-cluster"),
        "the deploy names the pod's ServiceAccount as its cluster:\n{log}"
    );
    assert!(
        !log.contains("no kubeconfig"),
        "the deploy fell back to a kubeconfig:\n{log}"
    );
    assert!(
        log.contains(&format!("namespace: {}", sandbox.namespace)),
        "the deploy acts in the pod's own namespace, which its psctl.yaml does not name:\n{log}"
    );

    // The release advanced, read as the test's own identity from the host.
    let after = sandbox.history(&host_config, "webhook");
    assert_eq!(after.len(), 2, "{after:#?}");
    let last = after.last().unwrap();
    assert_eq!(last["revision"], 2, "{last:#}");
    assert_eq!(last["status"], "deployed", "{last:#}");
    let deployment = Api::<Deployment>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .get("problemsolver-webhook")
        .await
        .expect("the webhook Deployment");
    let running = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default();
    assert!(running.ends_with(&format!(":{new_tag}")), "{running}");

    // `psctl status` in a pod reads the same release.
    let (code, log) = run_pod(
        &sandbox,
        job_pod("psctl-status", &image, &["status"], None),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(code, 0, "psctl status in the pod failed:\n{log}");
    assert!(
        log.contains("problemsolver-webhook") && log.contains(&new_tag),
        "status shows the release and its new tag:\n{log}"
    );

    // Without the token, psctl says what to mount instead of guessing.
    let (code, log) = run_pod(
        &sandbox,
        job_pod("psctl-no-token", &image, &["status"], Some(false)),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("in-cluster configuration") && log.contains("mount the ServiceAccount token"),
        "{log}"
    );

    sandbox.finish().await;
}
