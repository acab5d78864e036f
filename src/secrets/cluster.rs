//! The runtime Secret and psctl's fingerprint key as stored in the cluster: reading them,
//! writing them (guarded by the resourceVersion read), and the keyed fingerprint of the whole
//! Secret that deploy puts on the pod template.

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::{
    APPLIED_AT_ANNOTATION, APPLIED_BY_ANNOTATION, FINGERPRINT_KEY_FIELD, FINGERPRINT_KEY_SECRET,
};
use crate::cluster::{ClusterError, is_not_found};
use crate::error::CommandError;
use crate::settings::Environment;

/// The Secret's `data`, plus `stringData` (which a real API server folds into `data`).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (key, value) in secret.string_data.iter().flatten() {
        data.insert(key.clone(), value.as_bytes().to_vec());
    }
    data
}

/// The environment's runtime Secret, `None` when it does not exist.
pub async fn read_secret(
    client: &kube::Client,
    environment: &Environment,
) -> Result<Option<Secret>, CommandError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
    let name = &environment.secret.name;
    Ok(api
        .get_opt(name)
        .await
        .map_err(ClusterError::api(format!("reading Secret `{name}`")))?)
}

/// The stored fingerprint key, if psctl has made one in this namespace.
pub async fn read_fingerprint_key(
    client: &kube::Client,
    environment: &Environment,
) -> Result<Option<Vec<u8>>, CommandError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
    match api.get(FINGERPRINT_KEY_SECRET).await {
        Ok(secret) => Ok(secret_data(&secret)
            .remove(FINGERPRINT_KEY_FIELD)
            .filter(|k| k.len() >= 16)),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(
            ClusterError::api(format!("reading Secret `{FINGERPRINT_KEY_SECRET}`"))(error).into(),
        ),
    }
}

/// The whole runtime Secret's fingerprint, or `None` when the Secret or the key is missing.
pub async fn current_fingerprint(
    client: &kube::Client,
    environment: &Environment,
) -> Result<Option<String>, CommandError> {
    let Some(key) = read_fingerprint_key(client, environment).await? else {
        return Ok(None);
    };
    let secret = read_secret(client, environment).await?;
    Ok(secret.map(|s| super::secret_fingerprint(&key, &secret_data(&s))))
}

/// Creates or updates the Secret (guarded by its resourceVersion), and stores the fingerprint
/// key when there was none.
pub async fn write(
    client: &kube::Client,
    environment: &Environment,
    existing: Option<&Secret>,
    desired: &BTreeMap<String, Vec<u8>>,
    new_key: Option<&[u8]>,
    me: &str,
) -> Result<(), CommandError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
    if let Some(key) = new_key {
        let object: Secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(FINGERPRINT_KEY_SECRET.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "psctl".to_owned(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(
                FINGERPRINT_KEY_FIELD.to_owned(),
                ByteString(key.to_vec()),
            )])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            // Another apply stored one first: the fingerprints printed used ours, harmless.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                return Err(ClusterError::api(format!(
                    "creating Secret `{FINGERPRINT_KEY_SECRET}`"
                ))(error)
                .into());
            }
        }
    }
    let name = &environment.secret.name;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let annotations = BTreeMap::from([
        (APPLIED_AT_ANNOTATION.to_owned(), now),
        (APPLIED_BY_ANNOTATION.to_owned(), me.to_owned()),
    ]);
    let data: BTreeMap<String, ByteString> = desired
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone())))
        .collect();
    match existing {
        None => {
            let object = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    annotations: Some(annotations),
                    ..Default::default()
                },
                type_: Some("Opaque".to_owned()),
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &object)
                .await
                .map_err(ClusterError::api(format!("creating Secret `{name}`")))?;
        }
        Some(existing) => {
            // Keys to drop are sent as null; the resourceVersion makes the write fail rather
            // than clobber a change made since the diff was shown.
            let mut patch_data = serde_json::Map::new();
            for key in existing.data.iter().flatten().map(|(k, _)| k) {
                if !desired.contains_key(key) {
                    patch_data.insert(key.clone(), serde_json::Value::Null);
                }
            }
            for (key, value) in &data {
                patch_data.insert(
                    key.clone(),
                    serde_json::to_value(value).context("encoding the Secret")?,
                );
            }
            let patch = serde_json::json!({
                "metadata": {
                    "annotations": annotations,
                    "resourceVersion": existing.metadata.resource_version,
                },
                "data": patch_data,
            });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|error| {
                    let conflict = matches!(&error, kube::Error::Api(s) if s.code == 409);
                    let error: CommandError =
                        ClusterError::api(format!("updating Secret `{name}`"))(error).into();
                    if conflict {
                        error.hint("the Secret changed while psctl was working; run the command again to see the new diff")
                    } else {
                        error
                    }
                })?;
        }
    }
    Ok(())
}

/// 32 bytes from the kernel's CSPRNG.
pub fn random_key() -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(key)
}
