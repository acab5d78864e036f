//! Health probes of the sandbox's parts, shared by `up` (waiting) and `status` (reporting).

use std::time::{Duration, Instant};

/// An HTTP client for loopback probes: short timeouts, no proxy (a proxy from the environment
/// must never see sandbox traffic).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// Whether `GET url` answers 2xx.
pub async fn http_ok(client: &reqwest::Client, url: &str) -> bool {
    matches!(client.get(url).send().await, Ok(response) if response.status().is_success())
}

/// Whether a TCP connection to `addr` opens.
pub async fn tcp_open(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Polls `check` until it holds or `timeout` passes; the error names `what` and where to look.
pub async fn wait_for<F, Fut>(
    what: &str,
    hint: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{what} did not become ready within {}s; {hint}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
