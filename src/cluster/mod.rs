//! Cluster access: a kube-rs `Client` built from the environment's own kubeconfig and context
//! (never the current-context implicitly), and classification of API failures into exit codes.

pub mod access;
pub mod image;
pub mod ownership;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Classify, ExitStatus};
use crate::settings::Environment;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot load kubeconfig {}", path.as_deref().unwrap_or("from $KUBECONFIG or ~/.kube/config"))]
    Kubeconfig {
        path: Option<String>,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot use context `{context}` of the kubeconfig")]
    Context {
        context: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build a Kubernetes client for context `{context}`")]
    Client {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action}: {}", describe(error))]
    Api { action: String, error: kube::Error },
}

impl ClusterError {
    /// Wraps an API error with what psctl was doing.
    pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |error| Self::Api { action, error }
    }

    /// The API's status code, when the server answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Api {
                error: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }
}

impl Classify for ClusterError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Kubeconfig { .. } | Self::Context { .. } => ExitStatus::Usage,
            Self::Client { .. } => ExitStatus::Unreachable,
            // The server answered: a refusal (403, 404, 409, 422) is not "unreachable".
            Self::Api {
                error: kube::Error::Api(status),
                ..
            } if status.code != 401 && status.code < 500 => ExitStatus::Usage,
            Self::Api { .. } => ExitStatus::Unreachable,
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Kubeconfig { .. } | Self::Context { .. } => vec![
                "set `kubeconfig:` and `kube_context:` for the environment in psctl.yaml, or load the sandbox with `eval \"$(psctl-sandbox env)\"`".to_owned(),
            ],
            Self::Api { error: kube::Error::Api(status), .. } if status.code == 403 || status.code == 401 => {
                vec!["the context's credentials are not authorised for this; check the RBAC of the user in the kubeconfig".to_owned()]
            }
            Self::Api { error: kube::Error::Api(_), .. } => Vec::new(),
            Self::Client { .. } | Self::Api { .. } => {
                vec!["is the cluster up? for the sandbox: `psctl-sandbox up`".to_owned()]
            }
        }
    }
}

/// Connects to the environment's cluster. The context is always the environment's: a kubeconfig
/// whose current-context points elsewhere is never used by accident.
pub async fn connect(environment: &Environment) -> Result<kube::Client, ClusterError> {
    let kubeconfig = match &environment.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map_err(|source| ClusterError::Kubeconfig {
            path: Some(format!("`{}`", path.display())),
            source,
        })?,
        None => {
            Kubeconfig::read().map_err(|source| ClusterError::Kubeconfig { path: None, source })?
        }
    };
    let options = KubeConfigOptions {
        context: Some(environment.kube_context.clone()),
        cluster: None,
        user: None,
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| ClusterError::Context {
            context: environment.kube_context.clone(),
            source,
        })?;
    config.default_namespace = environment.namespace.clone();
    // kube's default retry of 429/503/504 backs off up to 1000 s between 15 tries: against an
    // API server that keeps answering 503, one request would hang for minutes. psctl retries a
    // short burst (4 tries, 0.2 s doubling to 2 s, or the server's Retry-After) and otherwise
    // reports the API server unreachable (exit 3) while the operator can still act.
    config.default_retry = false;
    let builder =
        kube::client::ClientBuilder::try_from(config).map_err(|source| ClusterError::Client {
            context: environment.kube_context.clone(),
            source,
        })?;
    // Retry needs a cloneable service: the buffer (as kube's own client has) provides it.
    Ok(builder
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&tower::retry::RetryLayer::new(retry_policy()))
        .build())
}

/// Connects and asks the API server for its version: a client known to reach the cluster, or
/// the reason it does not (classified like every API failure).
pub async fn connect_checked(
    environment: &Environment,
) -> Result<(kube::Client, k8s_openapi::apimachinery::pkg::version::Info), ClusterError> {
    let client = connect(environment).await?;
    let version = client
        .apiserver_version()
        .await
        .map_err(ClusterError::api(format!(
            "reaching the API server of context `{}`",
            environment.kube_context
        )))?;
    Ok((client, version))
}

/// Bounded retries for 429, 503 and 504 (see [`connect`]): at most [`RETRIES`] more tries,
/// together a few seconds.
pub fn retry_policy() -> kube::client::retry::RetryPolicy {
    kube::client::retry::RetryPolicy::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(2),
        RETRIES,
        true,
    )
    .expect("constant back-off parameters are valid")
}

/// How many times a 429/503/504 answer is retried.
pub const RETRIES: u32 = 4;

/// A kube error in one line: the API's own message and code, without the Debug dump.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.reason.is_empty() => {
            format!("{} (HTTP {})", status.message, status.code)
        }
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

/// True when `error` is the API saying "not found".
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
