//! The Docker kubelet as a real cluster shows it: a good image becomes Ready, a missing tag gives
//! ImagePullBackOff, an exiting binary CrashLoopBackOff with rising restarts, and a failing
//! readiness probe keeps the pod NotReady.

mod support;

use std::time::Duration;

use support::{Namespace, eventually, sandbox};

fn pod(
    namespace: &Namespace<'_>,
    name: &str,
    image: &str,
    command: &str,
    readiness_port: Option<u16>,
) {
    let probe = readiness_port
        .map(|port| format!("      readinessProbe:\n        httpGet: {{path: /, port: {port}}}\n        periodSeconds: 1\n"))
        .unwrap_or_default();
    namespace.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n    - name: main\n      image: {image}\n      command: [\"/bin/sh\", \"-c\", \"{command}\"]\n{probe}"
    ));
}

fn pod_json(namespace: &Namespace<'_>, name: &str) -> serde_json::Value {
    namespace.get_json(&["get", "pod", name])
}

fn ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|condition| condition["type"] == "Ready" && condition["status"] == "True")
}

#[test]
fn a_good_image_becomes_ready() {
    let sandbox = sandbox();
    let image = sandbox.busybox_image("1");
    let namespace = sandbox.namespace("good");
    pod(&namespace, "good", &image, "sleep 3600", None);
    eventually("pod Ready", Duration::from_secs(90), || {
        let pod = pod_json(&namespace, "good");
        if ready(&pod) && pod["status"]["phase"] == "Running" && pod["status"]["podIP"].is_string()
        {
            Ok(())
        } else {
            Err(pod["status"].to_string())
        }
    });
}

#[test]
fn a_missing_tag_gives_image_pull_back_off() {
    let sandbox = sandbox();
    let namespace = sandbox.namespace("pull");
    let image = format!(
        "{}/psctl-sandbox-test/busybox:does-not-exist",
        sandbox.registry
    );
    pod(&namespace, "missing", &image, "true", None);
    eventually("ImagePullBackOff", Duration::from_secs(120), || {
        let pod = pod_json(&namespace, "missing");
        let reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if reason == "ImagePullBackOff" {
            Ok(())
        } else {
            Err(format!("waiting reason `{reason}`"))
        }
    });
}

#[test]
fn an_exiting_binary_crash_loops_with_rising_restarts() {
    let sandbox = sandbox();
    let image = sandbox.busybox_image("1");
    let namespace = sandbox.namespace("crash");
    pod(&namespace, "crash", &image, "echo dying; exit 3", None);
    let first = eventually("CrashLoopBackOff", Duration::from_secs(120), || {
        let pod = pod_json(&namespace, "crash");
        let status = &pod["status"]["containerStatuses"][0];
        let reason = status["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default();
        let restarts = status["restartCount"].as_i64().unwrap_or(0);
        if reason == "CrashLoopBackOff" && restarts >= 1 {
            assert_eq!(status["lastState"]["terminated"]["exitCode"], 3);
            Ok(restarts)
        } else {
            Err(status.to_string())
        }
    });
    eventually("restart count rising", Duration::from_secs(120), || {
        let restarts =
            pod_json(&namespace, "crash")["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0);
        if restarts > first {
            Ok(())
        } else {
            Err(format!("still {restarts}"))
        }
    });
    let previous = namespace
        .kubectl(&["logs", "crash", "--previous"])
        .ok("logs --previous");
    assert!(previous.contains("dying"), "{previous}");
}

#[test]
fn a_failing_readiness_probe_keeps_the_pod_not_ready() {
    let sandbox = sandbox();
    let image = sandbox.busybox_image("1");
    let namespace = sandbox.namespace("unready");
    // Nothing listens on 8081: the probe fails while the container keeps running.
    pod(&namespace, "unready", &image, "sleep 3600", Some(8081));
    eventually("pod running", Duration::from_secs(90), || {
        let pod = pod_json(&namespace, "unready");
        if pod["status"]["phase"] == "Running" {
            Ok(())
        } else {
            Err(pod["status"].to_string())
        }
    });
    std::thread::sleep(Duration::from_secs(8));
    let pod = pod_json(&namespace, "unready");
    assert_eq!(pod["status"]["phase"], "Running");
    assert!(
        !ready(&pod),
        "a pod whose probe fails must not be Ready: {}",
        pod["status"]
    );
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], false);
}
