//! State that outlives a command, kept as one JSON document in a ConfigMap next to what it
//! describes (a canary run, a playbook run's record). One store for all of them:
//! [`ConfigMapStore`] reads the document with its `resourceVersion` and writes it back with
//! optimistic concurrency (a replace carries the version it read; a 409 means somebody else wrote
//! in between and the read–modify–write is repeated). Errors are typed and classified into exit
//! codes in one place.
//!
//! May import: `cluster` (API error classification), `error`. Knows nothing of what it stores.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cluster::ClusterError;
use crate::error::{Classify, ExitStatus};

/// The ConfigMap key holding the JSON document.
pub const STATE_KEY: &str = "state.json";
/// The label every psctl state ConfigMap carries.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "psctl");
/// How often a read–modify–write is repeated after a conflict before giving up.
pub const MAX_ATTEMPTS: usize = 5;

/// Why a state document could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Api(#[from] ClusterError),
    /// The ConfigMap holds something this psctl cannot read.
    #[error("ConfigMap `{name}`: {message}")]
    Corrupt { name: String, message: String },
    /// The document could not be encoded (a bug, not an environment problem).
    #[error("encoding the state for ConfigMap `{name}`: {message}")]
    Encode { name: String, message: String },
    /// Another writer kept winning.
    #[error("ConfigMap `{name}` kept changing under us ({MAX_ATTEMPTS} attempts)")]
    Contended { name: String },
    /// An update needed the document and it was gone.
    #[error("the state ConfigMap `{name}` disappeared")]
    Missing { name: String },
}

impl Classify for StoreError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Api(error) => error.exit_status(),
            Self::Corrupt { .. } | Self::Encode { .. } | Self::Missing { .. } => ExitStatus::Usage,
            Self::Contended { .. } => ExitStatus::Unreachable,
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Api(error) => error.hints(),
            Self::Corrupt { name, .. } => {
                vec![format!(
                    "inspect it with `kubectl get configmap {name} -o yaml`"
                )]
            }
            _ => Vec::new(),
        }
    }
}

/// A stored document and the `resourceVersion` it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub value: T,
    pub resource_version: Option<String>,
}

/// How a document is read back: plain serde by default, or a versioned decoder.
type Decoder<T> = fn(&str) -> Result<T, String>;

/// One JSON document of type `T` in the ConfigMap `name`.
pub struct ConfigMapStore<T> {
    api: Api<ConfigMap>,
    name: String,
    labels: BTreeMap<String, String>,
    decode: Decoder<T>,
    _value: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ConfigMapStore<T> {
    /// The store of ConfigMap `name` in `namespace`, labelled as psctl's.
    pub fn new(client: &kube::Client, namespace: &str, name: impl Into<String>) -> Self {
        let (key, value) = MANAGED_BY_LABEL;
        Self {
            api: Api::namespaced(client.clone(), namespace),
            name: name.into(),
            labels: BTreeMap::from([(key.to_owned(), value.to_owned())]),
            decode: |text| serde_json::from_str(text).map_err(|e| e.to_string()),
            _value: PhantomData,
        }
    }

    /// Adds a label to the ConfigMap written.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Reads documents with `decode` (e.g. one that checks a format version).
    pub fn decoder(mut self, decode: Decoder<T>) -> Self {
        self.decode = decode;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stored document and its `resourceVersion`; `None` when there is no ConfigMap.
    pub async fn read(&self) -> Result<Option<Stored<T>>, StoreError> {
        let config_map = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(ClusterError::api(format!(
                "reading ConfigMap `{}`",
                self.name
            )))?;
        let Some(config_map) = config_map else {
            return Ok(None);
        };
        let text = config_map
            .data
            .as_ref()
            .and_then(|d| d.get(STATE_KEY))
            .map(String::as_str)
            .unwrap_or_default();
        let value = (self.decode)(text).map_err(|message| StoreError::Corrupt {
            name: self.name.clone(),
            message,
        })?;
        Ok(Some(Stored {
            value,
            resource_version: config_map.metadata.resource_version,
        }))
    }

    /// The stored document, without its version.
    pub async fn load(&self) -> Result<Option<T>, StoreError> {
        Ok(self.read().await?.map(|stored| stored.value))
    }

    /// Like [`Self::load`], but a document this psctl cannot read counts as absent: for records
    /// that are rewritten from scratch when they cannot be reused.
    pub async fn load_if_readable(&self) -> Result<Option<T>, StoreError> {
        match self.load().await {
            Err(StoreError::Corrupt { .. }) => Ok(None),
            other => other,
        }
    }

    /// Writes `value` over whatever is stored (create or replace).
    pub async fn save(&self, value: &T) -> Result<(), StoreError> {
        self.replace_with(value, |_| ()).await
    }

    /// Writes `value` over whatever is stored, with optimistic concurrency: each attempt reads
    /// the stored document first and hands it to `seen` (to pick up what another writer left
    /// there, e.g. an operator's request) and replaces it at the version read; after a conflict
    /// the attempt is repeated. Returns what `seen` returned for the document overwritten.
    pub async fn replace_with<R>(
        &self,
        value: &T,
        mut seen: impl FnMut(Option<T>) -> R,
    ) -> Result<R, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.read().await?;
            let (current, version) = match stored {
                Some(stored) => (Some(stored.value), Some(stored.resource_version)),
                None => (None, None),
            };
            let result = seen(current);
            match self.write(value, version).await {
                Ok(()) => return Ok(result),
                Err(Write::Conflict) => continue,
                Err(Write::Failed(error)) => return Err(*error),
            }
        }
        Err(StoreError::Contended {
            name: self.name.clone(),
        })
    }

    /// Read–modify–write of the stored document: `change` edits it in place and it is written
    /// back at the version read, repeated after a conflict. A missing document is
    /// [`StoreError::Missing`].
    pub async fn modify(&self, mut change: impl FnMut(&mut T)) -> Result<(), StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(stored) = self.read().await? else {
                return Err(StoreError::Missing {
                    name: self.name.clone(),
                });
            };
            let mut value = stored.value;
            change(&mut value);
            match self.write(&value, Some(stored.resource_version)).await {
                Ok(()) => return Ok(()),
                Err(Write::Conflict) => continue,
                Err(Write::Failed(error)) => return Err(*error),
            }
        }
        Err(StoreError::Contended {
            name: self.name.clone(),
        })
    }

    /// Creates the ConfigMap (`version` `None`) or replaces the one read at `version`.
    async fn write(&self, value: &T, version: Option<Option<String>>) -> Result<(), Write> {
        let object = self.object(value, version.clone().flatten())?;
        let result = match version {
            None => self.api.create(&PostParams::default(), &object).await,
            Some(_) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &object)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(()),
            // 409: replaced meanwhile (stale resourceVersion) or created meanwhile.
            Err(kube::Error::Api(status)) if status.code == 409 => Err(Write::Conflict),
            Err(error) => Err(Write::Failed(Box::new(
                ClusterError::api(format!("writing ConfigMap `{}`", self.name))(error).into(),
            ))),
        }
    }

    fn object(&self, value: &T, resource_version: Option<String>) -> Result<ConfigMap, Write> {
        let json = serde_json::to_string(value).map_err(|e| {
            Write::Failed(Box::new(StoreError::Encode {
                name: self.name.clone(),
                message: e.to_string(),
            }))
        })?;
        Ok(config_map(
            &self.name,
            self.labels.clone(),
            resource_version,
            json,
        ))
    }
}

enum Write {
    Conflict,
    Failed(Box<StoreError>),
}

/// The ConfigMap holding `json` under [`STATE_KEY`]. Pure.
pub fn config_map(
    name: &str,
    labels: BTreeMap<String, String>,
    resource_version: Option<String>,
    json: String,
) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version,
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(STATE_KEY.to_owned(), json)])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_sits_under_one_key_with_the_labels_and_version() {
        let labels = BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            "psctl".to_owned(),
        )]);
        let map = config_map("psctl-run-x", labels, Some("42".into()), "{}".into());
        assert_eq!(map.metadata.name.as_deref(), Some("psctl-run-x"));
        assert_eq!(map.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(map.data.unwrap()[STATE_KEY], "{}");
        assert_eq!(
            map.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
            "psctl"
        );
    }

    #[test]
    fn errors_map_to_the_exit_code_contract() {
        let name = "psctl-canary-webhook".to_owned();
        assert_eq!(
            StoreError::Corrupt {
                name: name.clone(),
                message: "bad".into()
            }
            .exit_status(),
            ExitStatus::Usage
        );
        assert_eq!(
            StoreError::Contended { name: name.clone() }.exit_status(),
            ExitStatus::Unreachable
        );
        assert_eq!(
            StoreError::Missing { name: name.clone() }.exit_status(),
            ExitStatus::Usage
        );
        let corrupt = StoreError::Corrupt {
            name: name.clone(),
            message: "bad".into(),
        };
        assert_eq!(
            corrupt.hints(),
            vec![format!(
                "inspect it with `kubectl get configmap {name} -o yaml`"
            )]
        );
    }
}
