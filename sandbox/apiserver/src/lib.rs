//! The sandbox control plane: an emulated Kubernetes API server on loopback, speaking the real
//! REST protocol well enough for kube-rs, kubectl and the Helm engine to work against it
//! unmodified.
//!
//! Start it with [`ApiServer::start`]; what only a kubelet knows (container logs) comes from the
//! caller's [`PodBackend`]. Objects are stored as JSON ([`store`]), with one global
//! resourceVersion counter and a bounded watch history; semantics that clients rely on
//! (defaulting, generation, status/scale subresources, deletion with finalizers and graceful pod
//! termination) live in [`handlers`]. Controllers (Deployment → ReplicaSet → Pod, garbage
//! collection by ownerReferences) are not here: they run as ordinary clients of this server.
//!
//! Every request is authenticated ([`auth`]: bearer tokens) and authorized ([`rbac`]: roles and
//! bindings evaluated as kube-apiserver's RBAC authorizer does) before it reaches a handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub mod admission;
pub mod auth;
pub mod defaults;
pub mod discovery;
pub mod event_versions;
pub mod faults;
pub mod handlers;
pub mod immutable;
pub mod managed;
pub mod paging;
pub mod patch;
pub mod protobuf;
pub mod proxy;
pub mod query;
pub mod rbac;
pub mod requests;
pub mod resources;
pub mod selector;
pub mod server;
pub mod service_accounts;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod watch;
mod yaml;

pub use server::{ApiServer, RunningApiServer};
pub use status::ApiError;

/// The Kubernetes release the server reports at `/version`: the one whose API the workspace's
/// k8s-openapi feature (`v1_33`) compiles, so clients and the emulation agree on one version.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

/// How to run the server.
#[derive(Clone)]
pub struct ApiServerConfig {
    /// Where to listen; port 0 picks a free one (see [`RunningApiServer::local_addr`]).
    pub bind: SocketAddr,
    /// Container logs, from the kubelet. Without one, `pods/log` answers 503.
    pub pod_backend: Option<Arc<dyn PodBackend>>,
    /// Watch events kept for resumption; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// How often a watch asking for bookmarks receives one.
    pub bookmark_interval: Duration,
    /// The `gitVersion` reported by `/version` ([`KUBERNETES_VERSION`] by default).
    pub version: String,
    /// The bearer token of the administrator (user `sandbox-admin` in `system:masters`). A secret:
    /// never logged, and hidden from this struct's Debug output. Random by default.
    pub admin_token: String,
    /// How authenticated requests are authorized.
    pub authorization: Authorization,
    /// The certificate served over HTTPS; `None` generates a fresh CA and certificate at start
    /// (see [`RunningApiServer::ca_pem`]).
    pub tls: Option<tls::TlsIdentity>,
    /// Mutating admission injecting a sidecar into pods of namespaces that ask for it
    /// ([`admission`]); `None` (the default) admits pods unchanged.
    pub sidecar_injection: Option<admission::SidecarInjection>,
    /// Where pods reach the server (kube-apiserver's `--advertise-address` with its secure port):
    /// the server listens there too, and the `kubernetes` Endpoints in `default` name it, which
    /// is what the kubelet hands pods as `KUBERNETES_SERVICE_HOST`/`_PORT`. The TLS identity
    /// must be valid for its IP ([`tls::TlsIdentity::generate_for`]; a generated one is). `None`:
    /// the Endpoints name [`Self::bind`]'s address.
    pub advertise: Option<SocketAddr>,
}

/// The authorization mode, as kube-apiserver's `--authorization-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Authorization {
    /// Roles and bindings decide (the default; what a real cluster does).
    #[default]
    Rbac,
    /// Every authenticated request is allowed: for debugging only, never kinder by default.
    AlwaysAllow,
}

impl std::fmt::Debug for ApiServerConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiServerConfig")
            .field("bind", &self.bind)
            .field(
                "pod_backend",
                &self.pod_backend.as_ref().map(|_| "PodBackend"),
            )
            .field("watch_history", &self.watch_history)
            .field("bookmark_interval", &self.bookmark_interval)
            .field("version", &self.version)
            .field("admin_token", &"[redacted]")
            .field("authorization", &self.authorization)
            .field("tls", &self.tls)
            .field("sidecar_injection", &self.sidecar_injection)
            .field("advertise", &self.advertise)
            .finish()
    }
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 6443)),
            pod_backend: None,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(10),
            version: KUBERNETES_VERSION.to_owned(),
            admin_token: auth::random_token(),
            authorization: Authorization::Rbac,
            tls: None,
            sidecar_injection: None,
            advertise: None,
        }
    }
}

/// Options of a `pods/log` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail_lines: Option<i64>,
    /// The previous (terminated) container instance.
    pub previous: bool,
    /// Keep streaming new output.
    pub follow: bool,
    /// Prefix lines with timestamps.
    pub timestamps: bool,
    /// Only output newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// At most this many bytes.
    pub limit_bytes: Option<i64>,
}

/// Log output from the backend.
pub enum PodLogs {
    /// Everything there is, at once.
    Complete(String),
    /// A stream that ends when the container does (for `follow`).
    Stream(BoxStream<'static, Result<Bytes, std::io::Error>>),
}

/// Why the backend could not give logs. Messages are shown to the user as the API error message.
#[derive(Debug, thiserror::Error)]
pub enum PodBackendError {
    /// The request cannot be satisfied (no such container, not started yet): 400, as the real
    /// server answers.
    #[error("{0}")]
    BadRequest(String),
    /// The backend itself failed: 500.
    #[error("{0}")]
    Internal(String),
}

/// What only the kubelet knows, supplied by the caller of [`ApiServer::start`].
pub trait PodBackend: Send + Sync + 'static {
    /// Logs of `container` (the only one when `None`) of pod `namespace/pod`.
    fn logs<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        container: Option<&'a str>,
        options: LogOptions,
    ) -> BoxFuture<'a, Result<PodLogs, PodBackendError>>;
}
