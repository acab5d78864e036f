//! Gathers a [`Status`] from the cluster: Helm's release Secrets (one list call), the deploy
//! Lease's holder, each component's pods and Deployments, and its metrics endpoint read through
//! the API server's service proxy (a metrics endpoint that does not answer is reported, not
//! fatal).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::{ComponentStatus, Status, deployment_status, headline_metrics, pod_status};
use crate::cluster::ClusterError;
use crate::cluster::image::AppImage;
use crate::error::CommandError;
use crate::helm::revision;
use crate::helm::storage::read_revisions;
use crate::settings::{Component, Environment};

/// The whole screen of one environment.
pub async fn collect(
    client: &kube::Client,
    environment: &Environment,
) -> Result<Status, CommandError> {
    let history = read_revisions(client, &environment.namespace, &environment.releases()).await?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &environment.namespace);
    let deployments_api: Api<Deployment> = Api::namespaced(client.clone(), &environment.namespace);
    let lock_holder = Api::<Lease>::namespaced(client.clone(), &environment.namespace)
        .get_opt(crate::lock::LEASE_NAME)
        .await
        .map_err(ClusterError::api(format!(
            "reading Lease `{}`",
            crate::lock::LEASE_NAME
        )))?
        .and_then(|lease| lease.spec?.holder_identity)
        .filter(|holder| !holder.is_empty());
    let mut components = Vec::new();
    for component in &environment.components {
        let own = revision::of_release(&history, &component.release);
        let current = revision::current(&own);
        let pods = pods_api
            .list(&ListParams::default().labels(&component.selector))
            .await
            .map_err(ClusterError::api(format!(
                "listing pods of `{}`",
                component.name
            )))?;
        let (metrics, metrics_error) = match read_metrics(client, environment, component).await {
            Ok(metrics) => (metrics, None),
            Err(error) => (None, Some(error)),
        };
        let mut deployments = Vec::new();
        let tracks = std::iter::once(("stable", &component.deployment)).chain(
            component
                .canary
                .as_ref()
                .map(|canary| ("canary", &canary.deployment)),
        );
        for (track, name) in tracks {
            let Some(object) = deployments_api
                .get_opt(name)
                .await
                .map_err(ClusterError::api(format!("reading Deployment `{name}`")))?
            else {
                continue;
            };
            deployments.push(deployment_status(name, track, &object));
        }
        let repository = crate::canary::plan::repository(environment, component);
        let app = match &repository {
            Some(repository) => AppImage::Repository(repository),
            None => AppImage::Named(&component.image),
        };
        components.push(ComponentStatus {
            component: component.name.clone(),
            release: component.release.clone(),
            revision: current.map(|r| r.revision),
            release_status: current.map(|r| r.status.to_string()),
            image_tag: current.map(|r| r.image_tag.clone()),
            deployments,
            pods: pods.items.iter().map(|pod| pod_status(pod, app)).collect(),
            metrics,
            metrics_error,
        });
    }
    Ok(Status {
        environment: environment.name.clone(),
        namespace: environment.namespace.clone(),
        lock_holder,
        components,
    })
}

/// The headline gauges of the component's metrics endpoint, `None` when it has none; the error
/// is one line.
async fn read_metrics(
    client: &kube::Client,
    environment: &Environment,
    component: &Component,
) -> Result<Option<BTreeMap<String, f64>>, String> {
    let Some(metrics) = &component.metrics else {
        return Ok(None);
    };
    let path = format!(
        "/api/v1/namespaces/{}/services/{}:{}/proxy{}",
        environment.namespace, metrics.service, metrics.port, metrics.path
    );
    let request = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = tokio::time::timeout(Duration::from_secs(5), client.request_text(request))
        .await
        .map_err(|_| "timed out after 5s".to_owned())?
        .map_err(|e| crate::cluster::describe(&e))?;
    Ok(Some(headline_metrics(&text)))
}
