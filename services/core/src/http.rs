//! The services' operational HTTP server: `/metrics` (Prometheus text from a
//! `prometheus-client` registry), `/health` (process alive), `/ready` (200 only when the service
//! says so, else 503 with the reason), plus the [`Shutdown`] token fired by SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on `{addr}` (METRICS_ADDR): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Whether the service is ready, and why not. Cheap to clone; the service updates it, `/ready`
/// reads it.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<RwLock<Option<String>>>);

impl Readiness {
    /// Starts not ready with the given reason.
    pub fn new(initial_reason: &str) -> Self {
        Readiness(Arc::new(RwLock::new(Some(initial_reason.to_owned()))))
    }

    pub fn set_ready(&self) {
        self.set(None);
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.set(Some(reason.into()));
    }

    fn set(&self, value: Option<String>) {
        // A poisoned lock only means a writer panicked mid-assignment of an Option; the value is
        // still a valid Option, so keep going.
        let mut guard = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = value;
    }

    /// `Ok(())` when ready, `Err(reason)` otherwise.
    pub fn state(&self) -> Result<(), String> {
        let guard = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_ref() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }
}

/// Graceful shutdown: fired once by SIGTERM/SIGINT (or [`Shutdown::trigger`]); loops check
/// [`Shutdown::is_triggered`] or await [`Shutdown::triggered`] to finish or release in-flight work.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Shutdown(CancellationToken::new())
    }

    /// A token that fires on SIGTERM or SIGINT. Must be called inside a Tokio runtime.
    pub fn on_signals() -> Self {
        let shutdown = Shutdown::new();
        let fire = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; finishing in-flight work");
            fire.trigger();
        });
        shutdown
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    pub async fn triggered(&self) {
        self.0.cancelled().await;
    }

    /// The underlying token, for `select!`-heavy code that prefers it.
    pub fn token(&self) -> CancellationToken {
        self.0.clone()
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, fall back to Ctrl-C only.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// The router, exposed for tests that drive it without a socket.
pub fn router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(AppState {
            registry,
            readiness,
        })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.readiness.state() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

/// A bound, not-yet-serving server, so callers learn the real port (`127.0.0.1:0` in tests).
pub struct MetricsServer {
    listener: TcpListener,
    router: Router,
}

impl MetricsServer {
    pub async fn bind(
        addr: SocketAddr,
        registry: Arc<Registry>,
        readiness: Readiness,
    ) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        Ok(MetricsServer {
            listener,
            router: router(registry, readiness),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` fires.
    pub async fn serve(self, shutdown: Shutdown) -> Result<(), HttpError> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { shutdown.triggered().await })
            .await
            .map_err(HttpError::Serve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_text(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn endpoints_reflect_registry_and_readiness() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("demo_things", "Things", counter.clone());
        counter.inc_by(3);
        let readiness = Readiness::new("database not checked yet");
        let server = MetricsServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
            readiness.clone(),
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(server.serve(shutdown.clone()));

        assert!(get_text(addr, "/health").await.starts_with("HTTP/1.1 200"));
        let not_ready = get_text(addr, "/ready").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.contains("database not checked yet"));
        readiness.set_ready();
        assert!(get_text(addr, "/ready").await.starts_with("HTTP/1.1 200"));
        let metrics = get_text(addr, "/metrics").await;
        assert!(metrics.contains("demo_things_total 3"), "{metrics}");

        shutdown.trigger();
        task.await.unwrap().unwrap();
    }
}
