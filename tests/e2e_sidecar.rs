//! End-to-end: a service mesh injects a sidecar into every pod of the namespace (the sandbox's
//! mutating admission, for namespaces labelled `sidecar-injection=enabled`, puts the container
//! `mesh-proxy` first in each pod, as Linkerd does). psctl must deploy, judge and report the
//! application's containers and never mistake the sidecar for the application, nor fail because
//! of it. Needs the sandbox (`scripts/test.sh` brings it up); never skips.

mod support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use support::{Sandbox, check, report, sandbox::RuntimeSecret};

const SIDECAR: &str = "mesh-proxy";

#[tokio::test]
async fn an_injected_sidecar_is_neither_the_application_nor_a_failure() {
    let sandbox = Sandbox::builder("sidecar")
        .service_images()
        .runtime_secret(RuntimeSecret::Sandbox)
        .sidecar_injection()
        .start()
        .await;
    let config = sandbox.config("sidecar", |_| {});
    // The charts' Deployments say nothing of the sidecar; admission adds it to their pods, and
    // `psctl deploy` (which waits for the rollout and checks the running image) succeeds.
    sandbox.deploy(&config, &[]);

    let pods: Api<Pod> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let listed = pods.list(&ListParams::default()).await.expect("list pods");
    assert!(!listed.items.is_empty(), "the deploy left no pods");
    for pod in &listed.items {
        let spec = pod.spec.as_ref().expect("a pod spec");
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert!(
            names.len() >= 2 && names[0] == SIDECAR,
            "{:?} was not injected: {names:?}",
            pod.metadata.name
        );
    }

    // Every cluster check passes with the sidecar in every pod (pods-ready counts it: it is
    // ready, as a healthy mesh proxy is).
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &["smoke", "--only", "cluster", "--wait", "60s", "-o", "json"],
    );
    let smoke = report(&stdout);
    assert_eq!(code, 0, "{smoke:#}\n{stderr}");
    assert_eq!(smoke["summary"]["failed"], 0, "{smoke:#}");
    for component in ["poller", "webhook"] {
        let ready = check(&smoke, &format!("pods-ready/{component}"));
        assert_eq!(ready["result"], "pass", "{ready}");
    }

    // `psctl status` reports the application's image for every pod, not the sidecar's.
    let (code, stdout, stderr) = sandbox.psctl(&config, &["status", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let status = report(&stdout);
    let components = status["components"].as_array().expect("components");
    assert!(!components.is_empty(), "{status:#}");
    for component in components {
        assert_eq!(
            component["image_tag"],
            sandbox.tag.as_str(),
            "{component:#}"
        );
        for pod in component["pods"].as_array().expect("pods") {
            let image = pod["image"].as_str().unwrap_or_default();
            assert!(
                image.ends_with(&format!(":{}", sandbox.tag)) && !image.contains("mesh-proxy"),
                "{pod}"
            );
            let ready = pod["ready"].as_str().unwrap_or_default();
            let (up, total) = ready.split_once('/').unwrap_or_default();
            assert!(
                total.parse::<u32>().unwrap_or(0) >= 2 && up == total,
                "{pod}"
            );
        }
    }
    sandbox.finish().await;
}
