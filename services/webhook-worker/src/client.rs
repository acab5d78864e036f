//! The HTTP side of one delivery attempt: the guarded reqwest client, the signed request, and
//! the classification of the merchant's answer. Knows nothing of the queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use crate::backoff::parse_retry_after;
use crate::signing::SignedHeaders;
use crate::ssrf::{GuardedResolver, TargetPolicy, TargetRefused, check_url};

/// Response bodies are read (so the connection can be reused) but never beyond this.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Client settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    pub policy: TargetPolicy,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_idle_per_host: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Delivered { status: u16 },
    /// 410 Gone: the merchant retired this endpoint.
    Gone,
    /// Anything else; `endpoint_fault` says whether it counts against the circuit breaker
    /// (transport errors, timeouts, 5xx, 429, 408), as opposed to our own refusal of the target.
    Failed {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
        endpoint_fault: bool,
    },
}

/// The reusable client (one connection pool for all merchants, keep-alive).
#[derive(Clone, Debug)]
pub struct DeliveryClient {
    http: reqwest::Client,
    policy: TargetPolicy,
}

impl DeliveryClient {
    pub fn new(settings: ClientSettings) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            // 3xx is a failure: following it would let a merchant point us anywhere.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would do its own resolution, bypassing the address check.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: settings.policy,
            }))
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(settings.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!(
                "problemsolver-webhook-worker/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            http,
            policy: settings.policy,
        })
    }

    /// Sends one signed delivery. Returns the outcome and the time spent on the wire (zero when
    /// the target was refused before any connection).
    pub async fn deliver(
        &self,
        url: &str,
        headers: &SignedHeaders,
        body: String,
    ) -> (Attempt, Duration) {
        let url = match check_url(url, self.policy) {
            Ok(url) => url,
            Err(refused) => return (refused_attempt(&refused), Duration::ZERO),
        };
        let started = Instant::now();
        let sent = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", &headers.id)
            .header("webhook-timestamp", headers.timestamp.to_string())
            .header("webhook-signature", &headers.signature)
            .body(body)
            .send()
            .await;
        let attempt = match sent {
            Ok(response) => classify(response).await,
            Err(error) => transport_failure(&error),
        };
        (attempt, started.elapsed())
    }
}

fn refused_attempt(refused: &TargetRefused) -> Attempt {
    Attempt::Failed {
        status: None,
        error: format!("target refused: {refused}"),
        retry_after: None,
        endpoint_fault: false,
    }
}

async fn classify(response: reqwest::Response) -> Attempt {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, chrono::Utc::now()));
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.chars().take(200).collect::<String>());
    drain(response).await;
    if status.is_success() {
        return Attempt::Delivered {
            status: status.as_u16(),
        };
    }
    if status == StatusCode::GONE {
        return Attempt::Gone;
    }
    let error = match (status.is_redirection(), location) {
        (true, Some(location)) => format!("HTTP {status}: redirect to `{location}` not followed"),
        (true, None) => format!("HTTP {status}: redirects are not followed"),
        _ => format!("HTTP {status}"),
    };
    let endpoint_fault = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    Attempt::Failed {
        status: Some(status.as_u16()),
        error,
        retry_after,
        endpoint_fault,
    }
}

/// Reads (and discards) a bounded amount of the body so the connection returns to the pool.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0usize;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > MAX_BODY_BYTES {
            break;
        }
    }
}

fn transport_failure(error: &reqwest::Error) -> Attempt {
    // Our own resolver's refusal surfaces as a connect error; report it as a refusal.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<TargetRefused>() {
            return refused_attempt(refused);
        }
        source = current.source();
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The URL is left out (it may carry a merchant token); the chain explains the cause.
    let mut message = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        message.push_str(": ");
        message.push_str(&current.to_string());
        source = current.source();
    }
    Attempt::Failed {
        status: None,
        error: message,
        retry_after: None,
        endpoint_fault: true,
    }
}
