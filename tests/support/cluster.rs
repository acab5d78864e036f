//! Questions the tests ask the cluster (does this Deployment serve that revision?) and states
//! they provoke on purpose (a release left in `pending-upgrade` the way a killed Helm leaves
//! it). These use the administrator's client: they observe and break, they are not psctl.

use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};

/// The tag of an image reference, as psctl reads it.
pub use psctl::helm::storage::tag_of;

/// `Ok` when `deployment` serves `tag`: its template runs that tag, every desired replica is
/// updated and available, and every pod of `selector` runs that tag and is Ready (none of
/// another revision left). Otherwise the reason, for a failure message.
pub async fn serving(
    client: &kube::Client,
    namespace: &str,
    deployment: &str,
    selector: &str,
    tag: &str,
) -> Result<(), String> {
    let object = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(deployment)
        .await
        .map_err(|e| format!("reading Deployment {deployment}: {e}"))?;
    let spec = object.spec.clone().unwrap_or_default();
    let template_image = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    if tag_of(&template_image) != tag {
        return Err(format!("the Deployment's template runs {template_image}"));
    }
    let desired = spec.replicas.unwrap_or(1);
    let status = object.status.unwrap_or_default();
    let (updated, available) = (
        status.updated_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    );
    if updated < desired || available < desired {
        return Err(format!(
            "{updated} of {desired} replicas updated, {available} available"
        ));
    }
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| format!("listing pods {selector}: {e}"))?;
    let mut ready = 0;
    for pod in &pods.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        if tag_of(&image) != tag {
            return Err(format!("pod {name} still runs {image}"));
        }
        let is_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if !is_ready {
            return Err(format!("pod {name} is not Ready"));
        }
        ready += 1;
    }
    if ready < desired {
        return Err(format!("{ready} of {desired} pods Ready"));
    }
    Ok(())
}

/// Polls [`serving`] every 250 ms until it holds or `timeout` passes; returns when it first
/// held, or the last reason.
pub async fn wait_serving(
    client: &kube::Client,
    namespace: &str,
    deployment: &str,
    selector: &str,
    tag: &str,
    timeout: Duration,
) -> Result<Instant, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match serving(client, namespace, deployment, selector, tag).await {
            Ok(()) => return Ok(Instant::now()),
            Err(reason) if Instant::now() >= deadline => return Err(reason),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Leaves `release` the way Helm does when it is killed during an upgrade: a new revision
/// (`from` + 1) recorded as `pending-upgrade`, its release Secret labelled accordingly, and the
/// deployed revision untouched. Returns the stuck revision.
pub async fn leave_pending_upgrade(
    client: &kube::Client,
    namespace: &str,
    release: &str,
    from: u32,
) -> u32 {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let source = secrets
        .get(&format!("sh.helm.release.v1.{release}.v{from}"))
        .await
        .expect("the deployed revision's release Secret");
    let payload = &source.data.as_ref().expect("release Secret data")["release"].0;
    let gzipped = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .expect("Helm's base64 layer");
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(gzipped.as_slice()),
        &mut json,
    )
    .expect("Helm's gzip layer");
    let mut release_json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let stuck = from + 1;
    release_json["version"] = stuck.into();
    release_json["info"]["status"] = "pending-upgrade".into();
    release_json["info"]["description"] = "Preparing upgrade".into();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(release_json.to_string().as_bytes())
        .unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap());
    let mut labels = source.metadata.labels.clone().unwrap_or_default();
    labels.insert("version".to_owned(), stuck.to_string());
    labels.insert("status".to_owned(), "pending-upgrade".to_owned());
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("sh.helm.release.v1.{release}.v{stuck}")),
            labels: Some(labels),
            ..Default::default()
        },
        type_: source.type_.clone(),
        data: Some(
            [(
                "release".to_owned(),
                k8s_openapi::ByteString(encoded.into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the pending-upgrade release Secret");
    stuck
}
