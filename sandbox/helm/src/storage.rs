//! Helm's release storage in the cluster: Secrets `sh.helm.release.v1.<name>.v<N>` (type
//! `helm.sh/release.v1`) whose `release` key holds base64 of gzipped release JSON. The engine
//! writes them; this module reads one back (for rollback) and edits the description of one
//! (the engine has no description option). Talks to the cluster with kube-rs, using the same
//! kubeconfig and context as the engine.

use anyhow::{Context, Result};
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;

/// The User-Agent of this CLI's own requests (the engine's carry Helm's).
const USER_AGENT: &str = concat!("psctl-sandbox-helm/", env!("CARGO_PKG_VERSION"));

/// Where the release lives and how to reach the cluster.
pub struct Target<'a> {
    pub kubeconfig: Option<&'a Path>,
    pub context: Option<&'a str>,
    pub namespace: &'a str,
}

/// Name of the Secret holding one revision, as Helm's storage driver names it.
pub fn secret_name(release: &str, revision: u64) -> String {
    format!("sh.helm.release.v1.{release}.v{revision}")
}

/// Decodes the `release` value of a release Secret: base64 text of (usually gzipped) JSON.
pub fn decode_release(stored: &[u8]) -> Result<Value> {
    let text: Vec<u8> = stored
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .context("the release record is not base64")?;
    let json = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .context("the release record is not valid gzip")?;
        out
    } else {
        raw
    };
    serde_json::from_slice(&json).context("the release record is not JSON")
}

/// Encodes a release as Helm stores it: gzipped JSON, base64 text.
pub fn encode_release(release: &Value) -> Result<Vec<u8>> {
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(release.to_string().as_bytes())?;
    let compressed = gzip.finish()?;
    Ok(base64::engine::general_purpose::STANDARD
        .encode(compressed)
        .into_bytes())
}

/// Runs `work` with a client for the target's cluster on a private single-thread runtime
/// (the CLI is otherwise synchronous).
fn with_secrets<T>(
    target: &Target<'_>,
    work: impl AsyncFnOnce(kube::Api<Secret>) -> Result<T>,
) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    runtime.block_on(async {
        let mut config = match (target.kubeconfig, target.context) {
            // Neither given: client-go's loading rules, `$KUBECONFIG` or `~/.kube/config`, else
            // the pod's ServiceAccount (what the engine's genericclioptions fall back to too).
            (None, None) => kube::Config::infer()
                .await
                .context("loading the kubeconfig or the in-cluster configuration")?,
            (kubeconfig, context) => {
                let kubeconfig = match kubeconfig {
                    Some(path) => kube::config::Kubeconfig::read_from(path)
                        .with_context(|| format!("reading kubeconfig `{}`", path.display()))?,
                    None => kube::config::Kubeconfig::read().context("reading the kubeconfig")?,
                };
                let options = kube::config::KubeConfigOptions {
                    context: context.map(str::to_owned),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .context("loading the kube context")?
            }
        };
        // Its own User-Agent: the API server's request counts tell these edits of the release
        // record (which the real Helm makes inside the engine) from the engine's requests.
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        ));
        let client = kube::Client::try_from(config).context("creating the cluster client")?;
        // An empty namespace is every namespace, as Helm's Secrets driver lists them for `-A`.
        if target.namespace.is_empty() {
            work(kube::Api::all(client)).await
        } else {
            work(kube::Api::namespaced(client, target.namespace)).await
        }
    })
}

/// Every revision of every release the target's namespace (or, when it is empty, every
/// namespace) stores: what Helm's Secrets driver queries (`owner=helm`) for `helm list`.
pub fn list_records(target: &Target<'_>) -> Result<Vec<Value>> {
    with_secrets(target, async |secrets| {
        let listed = secrets
            .list(&kube::api::ListParams::default().labels("owner=helm"))
            .await
            .context("listing the release records")?;
        let mut records = Vec::new();
        for secret in listed.items {
            let Some(stored) = secret.data.as_ref().and_then(|data| data.get("release")) else {
                continue;
            };
            let mut value = decode_release(&stored.0)?;
            if value.get("namespace").is_none()
                && let Some(namespace) = secret.metadata.namespace.clone()
            {
                value["namespace"] = Value::String(namespace);
            }
            records.push(value);
        }
        Ok(records)
    })
}

async fn get_record(
    secrets: &kube::Api<Secret>,
    release: &str,
    revision: u64,
) -> Result<(Secret, Value)> {
    let name = secret_name(release, revision);
    let secret = secrets
        .get_opt(&name)
        .await
        .with_context(|| format!("reading the release record `{name}`"))?
        .with_context(|| format!("release: revision {revision} of `{release}` not found"))?;
    let stored = secret
        .data
        .as_ref()
        .and_then(|data| data.get("release"))
        .with_context(|| format!("the release record `{name}` has no `release` key"))?;
    let value = decode_release(&stored.0)?;
    Ok((secret, value))
}

/// Reads revision `revision` of `release` from the cluster.
pub fn read_revision(target: &Target<'_>, release: &str, revision: u64) -> Result<Value> {
    with_secrets(target, async |secrets| {
        Ok(get_record(&secrets, release, revision).await?.1)
    })
}

/// Sets the description of a stored revision (what `helm history` shows), as Helm's
/// `--description` does at write time.
pub fn set_description(
    target: &Target<'_>,
    release: &str,
    revision: u64,
    description: &str,
) -> Result<()> {
    with_secrets(target, async |secrets| {
        let (mut secret, mut value) = get_record(&secrets, release, revision).await?;
        value["info"]["description"] = Value::String(description.to_owned());
        let encoded = encode_release(&value)?;
        secret
            .data
            .get_or_insert_with(Default::default)
            .insert("release".to_owned(), ByteString(encoded));
        let name = secret_name(release, revision);
        // The resourceVersion read above makes this a compare-and-swap.
        secrets
            .replace(&name, &Default::default(), &secret)
            .await
            .with_context(|| format!("updating the release record `{name}`"))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_what_it_encodes_and_plain_records() {
        let release = json!({"name": "web", "version": 2, "info": {"description": "x"}});
        assert_eq!(
            decode_release(&encode_release(&release).unwrap()).unwrap(),
            release
        );
        let plain = base64::engine::general_purpose::STANDARD.encode("{\"a\":1}");
        assert_eq!(decode_release(plain.as_bytes()).unwrap(), json!({"a": 1}));
        assert!(decode_release(b"not base64!").is_err());
    }

    #[test]
    fn secret_names_follow_helm() {
        assert_eq!(secret_name("web", 3), "sh.helm.release.v1.web.v3");
    }
}
