//! Controllers and kubelet together against real Docker: a Deployment rolls out, updates,
//! rolls back onto its old ReplicaSet, scales down (containers go), feeds Endpoints, is garbage
//! collected, a broken rollout reports ProgressDeadlineExceeded, and observedGeneration trails
//! generation by the controllers' sync delay.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Endpoints, Event, HTTPGetAction, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use psctl_sandbox_cluster::controllers::ControllersConfig;
use psctl_sandbox_cluster::{Controllers, Kubelet};
use support::*;

fn labels(app: &str) -> BTreeMap<String, String> {
    [("app".to_owned(), app.to_owned())].into()
}

fn deployment(name: &str, image: &str, replicas: i32, deadline: i32) -> Deployment {
    let mut container = shell("exec httpd -f -p 8080 -h /www");
    container.image = Some(image.to_owned());
    container.image_pull_policy = Some("IfNotPresent".to_owned());
    container.readiness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/index.html".to_owned()),
            port: IntOrString::Int(8080),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(1),
        ..Probe::default()
    });
    let mut template_pod = pod(name, container);
    if let Some(spec) = template_pod.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(1);
    }
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels(name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(name)),
                    ..ObjectMeta::default()
                }),
                spec: template_pod.spec,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            progress_deadline_seconds: Some(deadline),
            revision_history_limit: Some(5),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn progressing_reason(deployment: &Deployment) -> Option<String> {
    deployment
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Progressing")?
        .reason
        .clone()
}

/// `kubectl rollout status`'s success test.
fn rolled_out(deployment: &Deployment) -> bool {
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    status.observed_generation >= deployment.metadata.generation
        && status.updated_replicas == Some(desired)
        && status.replicas == Some(desired)
        && status.available_replicas == Some(desired)
        && progressing_reason(deployment).as_deref() == Some("NewReplicaSetAvailable")
}

fn revision(meta: &ObjectMeta) -> Option<String> {
    meta.annotations
        .as_ref()?
        .get("deployment.kubernetes.io/revision")
        .cloned()
}

async fn wait_rolled_out(
    deployments: &Api<Deployment>,
    name: &str,
    revision_wanted: &str,
) -> Deployment {
    eventually(
        &format!("{name} rolled out at revision {revision_wanted}"),
        Duration::from_secs(60),
        || async {
            let deployment = deployments.get(name).await.expect("deployment");
            let done = rolled_out(&deployment)
                && revision(&deployment.metadata).as_deref() == Some(revision_wanted);
            (
                done.then(|| deployment.clone()),
                serde_json::to_string(&deployment.status).unwrap_or_default(),
            )
        },
    )
    .await
}

async fn running_containers(node: &str) -> usize {
    let output = tokio::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=psctl.sandbox.node={node}"),
        ])
        .output()
        .await
        .expect("docker ps");
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_updates_rolls_back_scales_and_is_collected() {
    ensure_image().await;
    let node = unique("test-node");
    let (_api, client) = api(&node).await;
    let _cleanup = NodeCleanup(node.clone());
    let _kubelet = Kubelet::run(client.clone(), kubelet_config(&node))
        .await
        .expect("kubelet");
    let _controllers = Controllers::run(
        client.clone(),
        ControllersConfig {
            resync: Duration::from_secs(5),
            gc_interval: Duration::from_millis(500),
            ..ControllersConfig::default()
        },
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");

    services
        .create(
            &PostParams::default(),
            &Service {
                metadata: ObjectMeta {
                    name: Some("web".to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(ServiceSpec {
                    selector: Some(labels("web")),
                    ports: Some(vec![ServicePort {
                        name: Some("http".to_owned()),
                        port: 80,
                        target_port: Some(IntOrString::Int(8080)),
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                status: None,
            },
        )
        .await
        .expect("service");

    // First rollout.
    deployments
        .create(&PostParams::default(), &deployment("web", IMAGE, 2, 60))
        .await
        .expect("create");
    wait_rolled_out(&deployments, "web", "1").await;
    let first_rs = replica_sets
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(first_rs.len(), 1);
    let first_name = first_rs[0].name_any();
    let hash = first_rs[0]
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(first_name, format!("web-{hash}"));
    assert_eq!(running_containers(&node).await, 2);

    let ready_ips = eventually("two ready endpoints", Duration::from_secs(20), || async {
        let found = endpoints.get_opt("web").await.expect("get endpoints");
        let ips: Vec<String> = found
            .iter()
            .flat_map(|endpoints| endpoints.subsets.iter().flatten())
            .flat_map(|subset| subset.addresses.iter().flatten())
            .map(|address| address.ip.clone())
            .collect();
        ((ips.len() == 2).then(|| ips.clone()), format!("{ips:?}"))
    })
    .await;
    assert!(ready_ips.iter().all(|ip| !ip.is_empty()));

    // Update: a new ReplicaSet at revision 2 takes over.
    let image_patch = |image: &str| {
        serde_json::json!({"spec": {"template": {"spec": {"containers": [{
            "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", "exec httpd -f -p 8080 -h /www"],
            "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
        }]}}}})
    };
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(image_patch(IMAGE_V2)),
        )
        .await
        .expect("update image");
    wait_rolled_out(&deployments, "web", "2").await;
    let all = replica_sets
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(all.len(), 2);
    let old = all
        .iter()
        .find(|rs| rs.name_any() == first_name)
        .expect("old rs kept");
    assert_eq!(old.spec.as_ref().and_then(|spec| spec.replicas), Some(0));
    eventually("old pods gone", Duration::from_secs(20), || async {
        let count = running_containers(&node).await;
        ((count == 2).then_some(()), format!("{count} containers"))
    })
    .await;

    // Rollback by template (what `kubectl rollout undo` does): the first ReplicaSet is reused
    // and gets revision 3.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(image_patch(IMAGE)),
        )
        .await
        .expect("roll back");
    wait_rolled_out(&deployments, "web", "3").await;
    let reused = replica_sets.get(&first_name).await.expect("first rs");
    assert_eq!(revision(&reused.metadata).as_deref(), Some("3"));
    assert_eq!(
        reused
            .annotations()
            .get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        replica_sets
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );

    // Scale down: one container goes.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale");
    eventually("one container left", Duration::from_secs(30), || async {
        let count = running_containers(&node).await;
        ((count == 1).then_some(()), format!("{count} containers"))
    })
    .await;
    wait_rolled_out(&deployments, "web", "3").await;

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let messages: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|event| event.message)
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Scaled up replica set web-") && m.ends_with("from 0 to 1")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Scaled down replica set")),
        "{messages:?}"
    );

    // Delete the Deployment: the garbage collector removes its ReplicaSets and pods.
    deployments
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("everything collected", Duration::from_secs(30), || async {
        let left = replica_sets
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len();
        let count = running_containers(&node).await;
        (
            (left == 0 && count == 0).then_some(()),
            format!("{left} replica sets, {count} containers"),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_rollout_reports_progress_deadline_exceeded() {
    ensure_image().await;
    let node = unique("test-node");
    let (_api, client) = api(&node).await;
    let _cleanup = NodeCleanup(node.clone());
    let _kubelet = Kubelet::run(client.clone(), kubelet_config(&node))
        .await
        .expect("kubelet");
    let _controllers = Controllers::run(client.clone(), ControllersConfig::default());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(
            &PostParams::default(),
            &deployment("broken", "127.0.0.1:5000/psctl-test/absent:0", 1, 3),
        )
        .await
        .expect("create");
    let status = eventually(
        "ProgressDeadlineExceeded",
        Duration::from_secs(30),
        || async {
            let deployment = deployments.get("broken").await.expect("deployment");
            let exceeded =
                progressing_reason(&deployment).as_deref() == Some("ProgressDeadlineExceeded");
            (
                exceeded.then(|| deployment.status.clone()),
                serde_json::to_string(&deployment.status).unwrap_or_default(),
            )
        },
    )
    .await
    .expect("status");
    assert_eq!(status.available_replicas, Some(0));
    assert_eq!(status.unavailable_replicas, Some(1));
    let available = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Available")
        .expect("Available condition");
    assert_eq!(
        (available.status.as_str(), available.reason.as_deref()),
        ("False", Some("MinimumReplicasUnavailable"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_generation_trails_generation_by_the_sync_delay() {
    let node = unique("test-node");
    let (_api, client) = api(&node).await;
    let _controllers = Controllers::run(
        client.clone(),
        ControllersConfig {
            sync_delay: Duration::from_secs(3),
            ..ControllersConfig::default()
        },
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let observed = |d: &Deployment| d.status.as_ref().and_then(|s| s.observed_generation);
    let created = deployments
        .create(
            &PostParams::default(),
            &deployment("lagging", "127.0.0.1:5000/psctl-test/busybox:1", 0, 60),
        )
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    let now = deployments.get("lagging").await.expect("get");
    assert_eq!(observed(&now), None, "{:?}", now.status);
    eventually("generation 1 observed", Duration::from_secs(20), || async {
        let d = deployments.get("lagging").await.expect("get");
        (
            observed(&d).eq(&Some(1)).then_some(()),
            format!("{:?}", d.status),
        )
    })
    .await;

    let patched = deployments
        .patch(
            "lagging",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"minReadySeconds": 2}})),
        )
        .await
        .expect("patch");
    assert_eq!(patched.metadata.generation, Some(2));
    let now = deployments.get("lagging").await.expect("get");
    assert_eq!(observed(&now), Some(1), "the controller acted at once");
    eventually("generation 2 observed", Duration::from_secs(20), || async {
        let d = deployments.get("lagging").await.expect("get");
        (
            observed(&d).eq(&Some(2)).then_some(()),
            format!("{:?}", d.status),
        )
    })
    .await;
}
