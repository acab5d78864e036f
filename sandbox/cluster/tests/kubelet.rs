//! The Docker kubelet against real Docker: ready pods, pull failures, crash loops, readiness
//! failures, secrets in env, logs and deletion. Needs a Docker engine and `/bin/busybox`
//! (Debian's busybox-static); every test uses its own node name and API, and cleans up.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerStatus, EnvVar, EnvVarSource, Event, ExecAction, HTTPGetAction, Pod, Probe, Secret,
    SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use psctl_sandbox_cluster::{DockerLogs, Kubelet};
use support::*;

struct Harness {
    _api: psctl_sandbox_apiserver::RunningApiServer,
    _kubelet: psctl_sandbox_cluster::KubeletHandle,
    _cleanup: NodeCleanup,
    node: String,
    pods: Api<Pod>,
    client: kube::Client,
}

async fn harness() -> Harness {
    ensure_image().await;
    let node = unique("test-node");
    let (api, client) = api(&node).await;
    let cleanup = NodeCleanup(node.clone());
    let kubelet = Kubelet::run(client.clone(), kubelet_config(&node))
        .await
        .expect("kubelet starts");
    Harness {
        pods: Api::namespaced(client.clone(), "default"),
        client,
        node,
        _api: api,
        _kubelet: kubelet,
        _cleanup: cleanup,
    }
}

fn main_status(pod: &Pod) -> Option<ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    main_status(pod)?.state?.waiting?.reason
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn describe(pod: &Pod) -> String {
    serde_json::to_string(&pod.status).unwrap_or_default()
}

fn http_probe(port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/index.html".to_owned()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Probe::default()
    }
}

async fn get(pods: &Api<Pod>, name: &str) -> Pod {
    pods.get(name).await.expect("pod exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_image_becomes_ready_serves_logs_and_is_removed_on_delete() {
    let h = harness().await;
    let mut container = shell("echo started; exec httpd -f -p 8080 -h /www");
    container.readiness_probe = Some(http_probe(8080));
    h.pods
        .create(&PostParams::default(), &pod("web", container))
        .await
        .expect("create pod");

    let ready = eventually("pod web Ready", Duration::from_secs(30), || async {
        let pod = get(&h.pods, "web").await;
        (is_ready(&pod).then(|| pod.clone()), describe(&pod))
    })
    .await;
    let status = ready.status.clone().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(
        status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()),
        "{}",
        describe(&ready)
    );
    assert!(status.host_ip.is_some() && status.start_time.is_some());
    let main = main_status(&ready).expect("container status");
    assert!(main.ready && main.started == Some(true));
    assert!(
        main.container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("docker://"))
    );
    assert_eq!(
        ready.spec.as_ref().and_then(|spec| spec.node_name.clone()),
        Some(h.node.clone())
    );

    // Through the API server's pods/log, served by DockerLogs.
    let logs = h
        .pods
        .logs(
            "web",
            &LogParams {
                tail_lines: Some(10),
                ..LogParams::default()
            },
        )
        .await
        .expect("logs");
    assert!(logs.contains("started"), "{logs:?}");

    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|event| event.reason)
        .collect();
    for reason in ["Pulled", "Created", "Started"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} event in {reasons:?}"
        );
    }

    let uid = ready.metadata.uid.clone().expect("uid");
    assert_eq!(containers_of(&uid).await.len(), 1);
    h.pods
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("containers removed", Duration::from_secs(20), || async {
        let left = containers_of(&uid).await;
        (left.is_empty().then_some(()), format!("{left:?}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tag_gives_err_image_pull_then_image_pull_back_off() {
    let h = harness().await;
    let mut container = shell("true");
    container.image = Some("127.0.0.1:5000/psctl-test/does-not-exist:missing".to_owned());
    h.pods
        .create(&PostParams::default(), &pod("nope", container))
        .await
        .expect("create pod");
    let seen = Arc::new(Mutex::new(Vec::new()));
    eventually(
        "ErrImagePull then ImagePullBackOff",
        Duration::from_secs(40),
        || {
            let pods = h.pods.clone();
            let seen = seen.clone();
            async move {
                let pod = get(&pods, "nope").await;
                let mut seen = seen.lock().expect("lock");
                if let Some(reason) = waiting_reason(&pod)
                    && seen.last() != Some(&reason)
                {
                    seen.push(reason);
                }
                let ok = seen.iter().any(|r| r == "ErrImagePull")
                    && seen.iter().any(|r| r == "ImagePullBackOff");
                (ok.then_some(()), format!("{seen:?} {}", describe(&pod)))
            }
        },
    )
    .await;
    let stuck = get(&h.pods, "nope").await;
    assert_eq!(
        stuck.status.and_then(|status| status.phase).as_deref(),
        Some("Pending")
    );

    // An image from a registry the sandbox cannot reach fails fast instead of hanging.
    let mut outside = shell("true");
    outside.image = Some("docker.io/library/nginx:1.27".to_owned());
    h.pods
        .create(&PostParams::default(), &pod("outside", outside))
        .await
        .expect("create pod");
    let message = eventually(
        "ErrImagePull for an outside registry",
        Duration::from_secs(20),
        || async {
            let pod = get(&h.pods, "outside").await;
            let status = main_status(&pod)
                .and_then(|status| status.state)
                .and_then(|state| state.waiting);
            let found = status
                .as_ref()
                .filter(|waiting| waiting.reason.as_deref() == Some("ErrImagePull"))
                .and_then(|waiting| waiting.message.clone());
            (found, describe(&pod))
        },
    )
    .await;
    assert!(message.contains("127.0.0.1:5000"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exiting_binary_crash_loops_with_rising_restart_count() {
    let h = harness().await;
    h.pods
        .create(
            &PostParams::default(),
            &pod("crash", shell("echo boom; exit 3")),
        )
        .await
        .expect("create pod");
    let saw_back_off = Arc::new(AtomicBool::new(false));
    let pod = eventually(
        "restartCount >= 2 with CrashLoopBackOff seen",
        Duration::from_secs(45),
        || {
            let pods = h.pods.clone();
            let saw = saw_back_off.clone();
            async move {
                let pod = get(&pods, "crash").await;
                if waiting_reason(&pod).as_deref() == Some("CrashLoopBackOff") {
                    saw.store(true, Ordering::SeqCst);
                }
                let restarts = main_status(&pod)
                    .map(|status| status.restart_count)
                    .unwrap_or(0);
                (
                    (saw.load(Ordering::SeqCst) && restarts >= 2).then(|| pod.clone()),
                    describe(&pod),
                )
            }
        },
    )
    .await;
    let main = main_status(&pod).expect("status");
    let last = main
        .last_state
        .and_then(|state| state.terminated)
        .expect("lastState.terminated");
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    let logs = h
        .pods
        .logs(
            "crash",
            &LogParams {
                container: Some("main".to_owned()),
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("previous logs");
    assert_eq!(logs, "boom\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_readiness_probe_keeps_the_pod_not_ready() {
    let h = harness().await;
    let mut container = shell("exec httpd -f -p 8080 -h /www");
    container.readiness_probe = Some(http_probe(9999));
    h.pods
        .create(&PostParams::default(), &pod("unready", container))
        .await
        .expect("create pod");
    eventually("container running", Duration::from_secs(30), || async {
        let pod = get(&h.pods, "unready").await;
        let running = main_status(&pod)
            .and_then(|status| status.state)
            .and_then(|state| state.running)
            .is_some();
        (running.then_some(()), describe(&pod))
    })
    .await;
    // Several probe periods later it is still running and still not ready.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pod = get(&h.pods, "unready").await;
    assert!(!is_ready(&pod), "{}", describe(&pod));
    let main = main_status(&pod).expect("status");
    assert!(
        !main.ready && main.restart_count == 0,
        "readiness failures must not restart: {}",
        describe(&pod)
    );
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    let unhealthy = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .find(|event| event.reason.as_deref() == Some("Unhealthy"))
        .expect("an Unhealthy event");
    assert!(
        unhealthy
            .message
            .unwrap_or_default()
            .starts_with("Readiness probe failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_env_resolves_and_a_missing_secret_is_a_config_error() {
    let h = harness().await;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("app".to_owned()),
                    ..ObjectMeta::default()
                },
                string_data: None,
                data: Some(
                    [(
                        "TOKEN".to_owned(),
                        k8s_openapi::ByteString(b"test-token-value".to_vec()),
                    )]
                    .into(),
                ),
                ..Secret::default()
            },
        )
        .await
        .expect("create secret");
    let env_from = |secret: &str| {
        vec![EnvVar {
            name: "TOKEN".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.to_owned(),
                    key: "TOKEN".to_owned(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        }]
    };
    let mut good = shell("echo token=$TOKEN; sleep 60");
    good.env = Some(env_from("app"));
    let mut bad = shell("sleep 60");
    bad.env = Some(env_from("absent"));
    h.pods
        .create(&PostParams::default(), &pod("good", good))
        .await
        .expect("create");
    h.pods
        .create(&PostParams::default(), &pod("bad", bad))
        .await
        .expect("create");

    let logs = eventually("env in logs", Duration::from_secs(30), || async {
        let logs = DockerLogs::for_node(&h.node)
            .pod_logs("default", "good", None, None, false)
            .await;
        match logs {
            Ok(text) if text.contains("token=") => (Some(text), String::new()),
            other => (None, format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(logs, "token=test-token-value\n");
    let message = eventually(
        "CreateContainerConfigError",
        Duration::from_secs(20),
        || async {
            let pod = get(&h.pods, "bad").await;
            let waiting = main_status(&pod)
                .and_then(|status| status.state)
                .and_then(|state| state.waiting);
            let found = waiting
                .filter(|waiting| waiting.reason.as_deref() == Some("CreateContainerConfigError"))
                .and_then(|waiting| waiting.message);
            (found, describe(&pod))
        },
    )
    .await;
    assert_eq!(message, "secret \"absent\" not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_overrun_is_reported_as_oom_killed() {
    let h = harness().await;
    let mut container = shell("a=xxxxxxxxxxxxxxxx; while true; do a=\"$a$a\"; done");
    container.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
        limits: Some(
            [(
                "memory".to_owned(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("16Mi".to_owned()),
            )]
            .into(),
        ),
        ..Default::default()
    });
    h.pods
        .create(&PostParams::default(), &pod("hungry", container))
        .await
        .expect("create pod");
    let terminated = eventually("OOMKilled termination", Duration::from_secs(30), || async {
        let pod = get(&h.pods, "hungry").await;
        let last = main_status(&pod)
            .and_then(|status| status.last_state)
            .and_then(|state| state.terminated);
        (
            last.filter(|t| t.reason.as_deref() == Some("OOMKilled")),
            describe(&pod),
        )
    })
    .await;
    assert_eq!(terminated.exit_code, 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failure_restarts_the_container() {
    let h = harness().await;
    // Serves for a moment, then stops answering while the process keeps running.
    let mut container = shell(
        "httpd -p 8080 -h /www; sleep 2; kill $(pidof httpd) 2>/dev/null || killall httpd; sleep 600",
    );
    container.liveness_probe = Some(http_probe(8080));
    h.pods
        .create(&PostParams::default(), &pod("liveness", container))
        .await
        .expect("create pod");
    eventually("a liveness restart", Duration::from_secs(40), || async {
        let pod = get(&h.pods, "liveness").await;
        let restarts = main_status(&pod)
            .map(|status| status.restart_count)
            .unwrap_or(0);
        ((restarts >= 1).then_some(()), describe(&pod))
    })
    .await;
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    let killing = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("Killing"))
        .filter_map(|event| event.message)
        .collect::<Vec<_>>();
    assert!(
        killing
            .iter()
            .any(|m| m.contains("failed liveness probe, will be restarted")),
        "{killing:?}"
    );
}

fn exec_probe(command: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".to_owned(), "-c".to_owned(), command.to_owned()]),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

async fn killing_messages(client: &kube::Client) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("Killing"))
        .filter_map(|event| event.message)
        .collect()
}

/// While the startup probe has not succeeded, neither liveness nor readiness runs (a liveness
/// probe that always fails does not kill the container) and `started` and `ready` are false;
/// once it succeeds, `started` turns true and readiness decides `ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_probe_holds_back_liveness_and_readiness_until_it_succeeds() {
    let h = harness().await;
    let mut container = shell("sleep 4; touch /tmp/started; sleep 600");
    container.startup_probe = Some(exec_probe("test -f /tmp/started", 1, 30));
    // Would kill the container within a second if it ran before startup.
    container.liveness_probe = Some(exec_probe("test -f /tmp/started", 1, 1));
    container.readiness_probe = Some(exec_probe("test -f /tmp/started", 1, 1));
    h.pods
        .create(&PostParams::default(), &pod("startup", container))
        .await
        .expect("create pod");
    eventually(
        "a running container that has not started",
        Duration::from_secs(30),
        || async {
            let pod = get(&h.pods, "startup").await;
            let status = main_status(&pod);
            let running = status
                .as_ref()
                .and_then(|status| status.state.as_ref())
                .is_some_and(|state| state.running.is_some());
            let early = running
                && status
                    .as_ref()
                    .is_some_and(|status| status.started == Some(false) && !status.ready);
            (early.then_some(()), describe(&pod))
        },
    )
    .await;
    let pod = eventually("started and ready", Duration::from_secs(30), || async {
        let pod = get(&h.pods, "startup").await;
        let done =
            main_status(&pod).is_some_and(|status| status.started == Some(true) && status.ready);
        (done.then_some(pod.clone()), describe(&pod))
    })
    .await;
    assert!(is_ready(&pod), "{}", describe(&pod));
    let status = main_status(&pod).expect("status");
    assert_eq!(
        status.restart_count,
        0,
        "liveness never ran during startup: {}",
        describe(&pod)
    );
    let killing = killing_messages(&h.client).await;
    assert!(killing.is_empty(), "{killing:?}");
}

/// A startup probe that fails failureThreshold times in a row kills the container, which
/// restarts per restartPolicy, and it never counts as started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_probe_failures_kill_and_restart_the_container() {
    let h = harness().await;
    let mut container = shell("sleep 600");
    container.startup_probe = Some(exec_probe("test -f /tmp/never", 1, 2));
    container.readiness_probe = Some(exec_probe("true", 1, 1));
    h.pods
        .create(&PostParams::default(), &pod("never-starts", container))
        .await
        .expect("create pod");
    let pod = eventually("a startup restart", Duration::from_secs(40), || async {
        let pod = get(&h.pods, "never-starts").await;
        let restarts = main_status(&pod).map_or(0, |status| status.restart_count);
        ((restarts >= 1).then_some(pod.clone()), describe(&pod))
    })
    .await;
    let status = main_status(&pod).expect("status");
    assert_ne!(status.started, Some(true), "{}", describe(&pod));
    assert!(
        !status.ready && !is_ready(&pod),
        "readiness never ran: {}",
        describe(&pod)
    );
    let killing = killing_messages(&h.client).await;
    assert!(
        killing
            .iter()
            .any(|message| message == "Container main failed startup probe, will be restarted"),
        "{killing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_style_security_context_runs_with_a_writable_tmp_only() {
    use k8s_openapi::api::core::v1::{
        Capabilities, EmptyDirVolumeSource, PodSecurityContext, SecurityContext, Volume,
        VolumeMount,
    };
    let h = harness().await;
    let mut container = shell(
        "id -u; echo data > /tmp/file && cat /tmp/file; touch /root-write 2>/dev/null && echo root-writable || echo root-read-only; sleep 60",
    );
    container.security_context = Some(SecurityContext {
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    });
    container.volume_mounts = Some(vec![VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }]);
    let mut secure = pod("secure", container);
    if let Some(spec) = secure.spec.as_mut() {
        spec.security_context = Some(PodSecurityContext {
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            run_as_non_root: Some(true),
            ..PodSecurityContext::default()
        });
        spec.volumes = Some(vec![Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]);
    }
    h.pods
        .create(&PostParams::default(), &secure)
        .await
        .expect("create pod");
    let logs = eventually("the script's output", Duration::from_secs(30), || async {
        let logs = h.pods.logs("secure", &LogParams::default()).await;
        match logs {
            Ok(text) if text.contains("read-only") || text.contains("writable") => {
                (Some(text), String::new())
            }
            other => (None, format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(logs, "65532\ndata\nroot-read-only\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubelet_adopts_running_containers_and_removes_orphans() {
    ensure_image().await;
    let node = unique("test-node");
    let _cleanup = NodeCleanup(node.clone());
    let (_api, client) = api(&node).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let first = Kubelet::run(client.clone(), kubelet_config(&node))
        .await
        .expect("kubelet starts");
    pods.create(&PostParams::default(), &pod("keeper", shell("sleep 600")))
        .await
        .expect("create pod");
    let container_id = |pod: &Pod| main_status(pod).and_then(|status| status.container_id);
    let before = eventually("keeper running", Duration::from_secs(30), || async {
        let pod = get(&pods, "keeper").await;
        let running = main_status(&pod)
            .and_then(|status| status.state)
            .and_then(|state| state.running)
            .is_some();
        (
            running.then(|| container_id(&pod)).flatten(),
            describe(&pod),
        )
    })
    .await;
    drop(first);

    // While no kubelet runs, a container of a pod that no longer exists appears.
    let orphan = tokio::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            "psctl.sandbox=1",
            "--label",
            &format!("psctl.sandbox.node={node}"),
            "--label",
            "psctl.sandbox.pod-uid=gone",
            IMAGE,
            "sleep",
            "600",
        ])
        .output()
        .await
        .expect("docker run");
    assert!(
        orphan.status.success(),
        "{}",
        String::from_utf8_lossy(&orphan.stderr)
    );

    let _second = Kubelet::run(client.clone(), kubelet_config(&node))
        .await
        .expect("kubelet restarts");
    assert!(
        containers_of("gone").await.is_empty(),
        "orphan container survived the restart"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod = get(&pods, "keeper").await;
    assert_eq!(
        container_id(&pod),
        Some(before),
        "the running container must be adopted, not replaced"
    );
    assert_eq!(
        main_status(&pod).map(|status| status.restart_count),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_pods_image_restarts_its_container() {
    let h = harness().await;
    h.pods
        .create(&PostParams::default(), &pod("swap", shell("sleep 600")))
        .await
        .expect("create pod");
    let running_image = |pod: &Pod| {
        main_status(pod)
            .filter(|status| {
                status
                    .state
                    .as_ref()
                    .and_then(|state| state.running.as_ref())
                    .is_some()
            })
            .map(|status| (status.image, status.restart_count, status.container_id))
    };
    let (_, _, first_id) = eventually("swap running", Duration::from_secs(30), || async {
        let pod = get(&h.pods, "swap").await;
        (running_image(&pod), describe(&pod))
    })
    .await;
    let patch = serde_json::json!({"spec": {"containers": [{"name": "main", "image": IMAGE_V2}]}});
    h.pods
        .patch(
            "swap",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(patch),
        )
        .await
        .expect("patch image");
    let (image, restarts, second_id) =
        eventually("running the new image", Duration::from_secs(30), || async {
            let pod = get(&h.pods, "swap").await;
            let found = running_image(&pod).filter(|(image, _, _)| image == IMAGE_V2);
            (found, describe(&pod))
        })
        .await;
    assert_eq!((image.as_str(), restarts), (IMAGE_V2, 1));
    assert_ne!(first_id, second_id);
}
