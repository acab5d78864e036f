//! The runtime Secret and psctl's fingerprint key as stored in the cluster: reading them, and
//! the keyed fingerprint of the whole Secret that deploy puts on the pod template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::{FINGERPRINT_KEY_FIELD, FINGERPRINT_KEY_SECRET};
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
    let api: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
    let name = &environment.secret.name;
    let secret = api
        .get_opt(name)
        .await
        .map_err(ClusterError::api(format!("reading Secret `{name}`")))?;
    Ok(secret.map(|s| super::secret_fingerprint(&key, &secret_data(&s))))
}
