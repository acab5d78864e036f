//! Error reporting end to end: the services' Sentry options and tracing layer send an error event
//! to a DSN served by a local HTTP endpoint, which receives the real envelope; the event arrives
//! with its message, release and breadcrumbs, and without any secret (configured values, URL
//! passwords, signing secrets, secret-named fields).

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use problemsolver_core::telemetry::{Scrubber, client_options, sentry_layers};
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt as _;

const DATABASE_URL: &str = "postgres://app:db-pass-8c1f@db.internal:5432/app";
const BINANCE_SECRET: &str = "binance-secret-value-3d9a";
const SIGNING_SECRET: &str = "whsec_c2VjcmV0LXNpZ25pbmcta2V5";
const REDIS_PASSWORD: &str = "redis-pass-77aa";

struct Received {
    path: String,
    auth: Option<String>,
    body: String,
}

async fn receive(
    State(sender): State<mpsc::UnboundedSender<Received>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let _ = sender.send(Received {
        path: uri.path().to_owned(),
        auth: headers
            .get("x-sentry-auth")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_event_reaches_the_dsn_scrubbed() {
    let (sender, mut received) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(receive).with_state(sender);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dsn = format!("http://publickey@{addr}/42").parse().unwrap();
    let scrubber = Scrubber::new([DATABASE_URL.to_owned(), BINANCE_SECRET.to_owned()]);
    let guard = sentry::init(client_options(
        dsn,
        "problemsolver-test@1.2.3".to_owned(),
        scrubber,
    ));
    assert!(guard.is_enabled());
    let subscriber = tracing_subscriber::registry().with(sentry_layers());
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(database_url = DATABASE_URL, "database slow, retrying");
        tracing::info!("merchant endpoint redis://:{REDIS_PASSWORD}@cache:6379/0 configured");
        tracing::error!(
            api_key = "plain-field-value-9f2e",
            attempt = 3,
            "cannot connect to {DATABASE_URL} with key {BINANCE_SECRET}; signing with {SIGNING_SECRET}"
        );
    });
    assert!(
        guard.flush(Some(Duration::from_secs(10))),
        "the event was not sent"
    );

    let envelope = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the DSN received a request")
        .unwrap();
    assert_eq!(envelope.path, "/api/42/envelope/");
    // Authenticated with the DSN's public key, as Sentry expects.
    let auth = envelope.auth.unwrap_or_default();
    assert!(auth.contains("sentry_key=publickey"), "{auth}");
    let body = envelope.body;
    // The error itself, as an event of the release, with the fields and the breadcrumbs.
    assert!(body.contains(r#""type":"event""#), "{body}");
    // `error` is the protocol's default level, so only the warning breadcrumb names one.
    assert!(body.contains(r#""level":"warning""#), "{body}");
    assert!(body.contains("problemsolver-test@1.2.3"), "{body}");
    assert!(
        body.contains("cannot connect to [redacted] with key [redacted]; signing with [redacted]"),
        "{body}"
    );
    assert!(body.contains("database slow, retrying"), "{body}");
    assert!(body.contains("redis://:[redacted]@cache:6379/0"), "{body}");
    assert!(body.contains(r#""attempt":3"#), "{body}");
    for secret in [
        "db-pass-8c1f",
        DATABASE_URL,
        BINANCE_SECRET,
        SIGNING_SECRET,
        "c2VjcmV0LXNpZ25pbmcta2V5",
        REDIS_PASSWORD,
        "plain-field-value-9f2e",
    ] {
        assert!(!body.contains(secret), "`{secret}` was sent:\n{body}");
    }
    drop(guard);
}
