//! Merchant webhook sink: records deliveries, verifies Standard Webhooks signatures, fails or slows on request.
//!
//! The verifier here is written from the Standard Webhooks specification on its own, not shared
//! with the worker's signer, so a test passing against it means the two agree on the spec.
//!
//! In-process control: [`MerchantSink`] methods. Out-of-process control (sandbox, canary tests):
//! `POST /_control` with a [`Behaviour`] JSON body, `GET /_deliveries`, `DELETE /_deliveries`.
//! Every other POST, on any path, is a delivery.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::oneshot;

/// How far a `webhook-timestamp` may be from the sink's clock (the specification's suggestion).
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How the sink answers deliveries. Every field has a default, so `{}` means "accept everything".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Share of deliveries to fail, 0.0..=1.0 (deterministic: exactly every 1/rate-th request).
    pub fail_rate: f64,
    /// Status code of a failed delivery (e.g. 500, 410, 301, 429).
    pub status: u16,
    /// `Retry-After` header sent with failures, if any.
    pub retry_after: Option<String>,
    /// `Location` header sent with failures, if any (for redirect tests).
    pub location: Option<String>,
    /// Latency added to every delivery.
    pub delay_ms: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            fail_rate: 0.0,
            status: 500,
            retry_after: None,
            location: None,
            delay_ms: 0,
        }
    }
}

/// One delivery as the sink saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub path: String,
    pub webhook_id: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// Whether the signature and timestamp verified.
    pub verified: bool,
    /// Why verification failed, if it did.
    pub verify_error: Option<String>,
    /// The status the sink answered with.
    pub status: u16,
    /// When the request arrived and when the answer was ready (after `delay_ms`), in
    /// microseconds since the Unix epoch.
    pub arrived_unix_us: u64,
    pub answered_unix_us: u64,
}

/// Counters over all deliveries so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub received: u64,
    pub accepted: u64,
    /// Accepted deliveries whose `webhook-id` had already been accepted before.
    pub duplicates: u64,
    pub unverified: u64,
    /// The most requests carrying one `webhook-id` that the sink was handling at the same time,
    /// counting every request (accepted or not) from arrival until it is answered or the client
    /// goes away. 1 means no webhook was ever delivered twice concurrently.
    pub max_in_flight_per_id: u64,
}

#[derive(Serialize)]
struct DeliveriesReport {
    summary: Summary,
    deliveries: Vec<Delivery>,
}

struct Inner {
    behaviour: Behaviour,
    requests: u64,
    summary: Summary,
    accepted_ids: HashMap<String, u32>,
    /// Requests being handled, per `webhook-id`.
    in_flight: HashMap<String, u64>,
    deliveries: Vec<Delivery>,
    record: bool,
}

struct Shared {
    key: Vec<u8>,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running sink. Dropping it stops the server.
pub struct MerchantSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for MerchantSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantSink")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MerchantSink {
    /// Starts a sink on `addr` (port 0 picks a free port) verifying with `secret` (`whsec_<base64>`).
    pub async fn start(addr: SocketAddr, secret: &str) -> anyhow::Result<Self> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = BASE64
            .decode(encoded)
            .context("the sink's webhook secret must be `whsec_` followed by base64")?;
        let shared = Arc::new(Shared {
            key,
            inner: Mutex::new(Inner {
                behaviour: Behaviour::default(),
                requests: 0,
                summary: Summary::default(),
                accepted_ids: HashMap::new(),
                in_flight: HashMap::new(),
                deliveries: Vec::new(),
                record: true,
            }),
        });
        let app = Router::new()
            .route("/_control", post(control))
            .route("/_deliveries", any(deliveries_endpoint))
            .fallback(receive)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind the merchant sink to {addr}"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = server.await {
                tracing::error!(%error, "merchant sink stopped with an error");
            }
        });
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.lock().behaviour = behaviour;
    }

    /// Whether each delivery is kept for [`deliveries`](Self::deliveries); counters are kept regardless.
    /// Benchmarks turn this off to keep the sink's memory flat.
    pub fn set_recording(&self, record: bool) {
        self.shared.lock().record = record;
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    pub fn summary(&self) -> Summary {
        self.shared.lock().summary
    }

    /// Deliveries that have arrived, including those still being answered (see `delay_ms`).
    pub fn arrived(&self) -> u64 {
        self.shared.lock().requests
    }

    /// Requests with `webhook_id` being handled right now.
    pub fn in_flight(&self, webhook_id: &str) -> u64 {
        self.shared
            .lock()
            .in_flight
            .get(webhook_id)
            .copied()
            .unwrap_or(0)
    }

    /// How many times `webhook_id` was accepted.
    pub fn accepted_count(&self, webhook_id: &str) -> u32 {
        self.shared
            .lock()
            .accepted_ids
            .get(webhook_id)
            .copied()
            .unwrap_or(0)
    }

    /// Forgets deliveries and counters (behaviour is kept).
    pub fn reset(&self) {
        reset(&self.shared);
    }

    /// Stops the server.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for MerchantSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn reset(shared: &Shared) {
    let mut inner = shared.lock();
    inner.requests = 0;
    inner.summary = Summary::default();
    inner.accepted_ids.clear();
    inner.deliveries.clear();
}

async fn control(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Behaviour>(&body) {
        Ok(behaviour) if (0.0..=1.0).contains(&behaviour.fail_rate) => {
            shared.lock().behaviour = behaviour.clone();
            axum::Json(behaviour).into_response()
        }
        Ok(_) => (
            StatusCode::BAD_REQUEST,
            "fail_rate must be between 0.0 and 1.0\n",
        )
            .into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            format!("invalid behaviour: {error}\n"),
        )
            .into_response(),
    }
}

async fn deliveries_endpoint(
    State(shared): State<Arc<Shared>>,
    method: axum::http::Method,
) -> Response {
    if method == axum::http::Method::DELETE {
        reset(&shared);
        return StatusCode::NO_CONTENT.into_response();
    }
    let inner = shared.lock();
    axum::Json(DeliveriesReport {
        summary: inner.summary,
        deliveries: inner.deliveries.clone(),
    })
    .into_response()
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_unix_us = unix_us(SystemTime::now());
    let verdict = verify(&shared.key, &headers, &body, SystemTime::now());
    let webhook_id = header_str(&headers, "webhook-id").map(str::to_owned);
    let (behaviour, fail) = {
        let mut inner = shared.lock();
        let k = inner.requests as f64;
        inner.requests += 1;
        let rate = inner.behaviour.fail_rate;
        let fail = should_fail(k, rate);
        (inner.behaviour.clone(), fail)
    };
    // Counted until this handler ends, also when the client hangs up during the delay.
    let _in_flight = webhook_id
        .as_ref()
        .map(|id| InFlight::enter(&shared, id.clone()));
    if behaviour.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.delay_ms)).await;
    }
    let answered_unix_us = unix_us(SystemTime::now());
    let status = if verdict.is_err() {
        StatusCode::UNAUTHORIZED
    } else if fail {
        StatusCode::from_u16(behaviour.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    } else {
        StatusCode::NO_CONTENT
    };
    {
        let mut inner = shared.lock();
        inner.summary.received += 1;
        if verdict.is_err() {
            inner.summary.unverified += 1;
        }
        if status.is_success() {
            inner.summary.accepted += 1;
            if let Some(id) = &webhook_id {
                let seen = inner.accepted_ids.entry(id.clone()).or_insert(0);
                *seen += 1;
                if *seen > 1 {
                    inner.summary.duplicates += 1;
                }
            }
        }
        if inner.record {
            let recorded_headers = headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                })
                .collect();
            inner.deliveries.push(Delivery {
                path: uri.path().to_owned(),
                webhook_id,
                headers: recorded_headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                verified: verdict.is_ok(),
                verify_error: verdict.err(),
                status: status.as_u16(),
                arrived_unix_us,
                answered_unix_us,
            });
        }
    }
    let mut response = status.into_response();
    if fail && !status.is_success() {
        let extra = [
            (header::RETRY_AFTER, behaviour.retry_after.as_deref()),
            (header::LOCATION, behaviour.location.as_deref()),
        ];
        for (name, value) in extra {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

/// One request with a `webhook-id` being handled; leaving (drop) undoes the count.
struct InFlight {
    shared: Arc<Shared>,
    id: String,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>, id: String) -> Self {
        let mut inner = shared.lock();
        let count = inner.in_flight.entry(id.clone()).or_insert(0);
        *count += 1;
        let count = *count;
        inner.summary.max_in_flight_per_id = inner.summary.max_in_flight_per_id.max(count);
        drop(inner);
        Self {
            shared: Arc::clone(shared),
            id,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if let Some(count) = inner.in_flight.get_mut(&self.id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.in_flight.remove(&self.id);
            }
        }
    }
}

fn unix_us(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whether the `k`-th request (0-based) fails: exactly `rate` of the requests, spread evenly,
/// without randomness, so tests can count on it.
fn should_fail(k: f64, rate: f64) -> bool {
    ((k + 1.0) * rate).floor() > (k * rate).floor()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Verifies a delivery as the Standard Webhooks specification describes: the timestamp within
/// tolerance, and at least one `v1,` signature in the space-separated list equal (in constant
/// time) to HMAC-SHA256(key, "{id}.{timestamp}.{body}").
pub fn verify(key: &[u8], headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<(), String> {
    let id = header_str(headers, "webhook-id").ok_or("missing webhook-id")?;
    let timestamp = header_str(headers, "webhook-timestamp").ok_or("missing webhook-timestamp")?;
    let signatures = header_str(headers, "webhook-signature").ok_or("missing webhook-signature")?;
    let sent: i64 = timestamp
        .parse()
        .map_err(|_| "webhook-timestamp is not an integer")?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "sink clock before 1970")?
        .as_secs() as i64;
    if (now - sent).unsigned_abs() > TIMESTAMP_TOLERANCE.as_secs() {
        return Err(format!("webhook-timestamp {sent} is outside the tolerance"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| "unusable key")?;
    let mut signed = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    mac.update(&signed);
    for candidate in signatures.split(' ') {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(bytes) = BASE64.decode(encoded) else {
            continue;
        };
        if mac.clone().verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 signature matched".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        map.insert("webhook-timestamp", HeaderValue::from_str(ts).unwrap());
        map.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
        map
    }

    #[test]
    fn accepts_the_specification_example_and_rejects_tampering() {
        let key = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1614265330);
        let body = br#"{"test": 2432232314}"#;
        let good = headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            "v1,bogus v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        );
        assert_eq!(verify(&key, &good, body, at), Ok(()));
        assert!(verify(&key, &good, br#"{"test": 1}"#, at).is_err());
        let late = at + TIMESTAMP_TOLERANCE + Duration::from_secs(1);
        assert!(
            verify(&key, &good, body, late)
                .unwrap_err()
                .contains("tolerance")
        );
        let mut missing = good.clone();
        missing.remove("webhook-signature");
        assert!(verify(&key, &missing, body, at).is_err());
    }

    /// One HTTP/1.1 exchange over a fresh connection: (status, raw response head, body).
    async fn exchange(addr: SocketAddr, request: String) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    fn post(path: &str, headers: &[(&str, String)], body: &str) -> String {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: sink\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        request
    }

    #[tokio::test]
    async fn http_control_drives_failures_and_reports_deliveries() {
        let secret = "whsec_dGVzdC1rZXktZm9yLXRoZS1zaW5r";
        let sink = MerchantSink::start(SocketAddr::from(([127, 0, 0, 1], 0)), secret)
            .await
            .unwrap();
        let addr = sink.addr();
        let key = BASE64.decode("dGVzdC1rZXktZm9yLXRoZS1zaW5r").unwrap();
        let signed = |id: &str, body: &str| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                .to_string();
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(format!("{id}.{now}.{body}").as_bytes());
            let signature = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
            vec![
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", now),
                ("webhook-signature", signature),
            ]
        };

        let control = r#"{"fail_rate": 1.0, "status": 429, "retry_after": "7"}"#;
        let (status, _, _) = exchange(addr, post("/_control", &[], control)).await;
        assert_eq!(status, 200);
        let (status, head, _) = exchange(addr, post("/hook", &signed("msg_1", "{}"), "{}")).await;
        assert_eq!(status, 429);
        assert!(head.contains("retry-after: 7"), "{head}");

        exchange(addr, post("/_control", &[], "{}")).await;
        let (status, _, _) = exchange(addr, post("/hook", &signed("msg_1", "{}"), "{}")).await;
        assert_eq!(status, 204);
        exchange(addr, post("/hook", &signed("msg_1", "{}"), "{}")).await;
        let (status, _, _) = exchange(
            addr,
            post("/hook", &[("webhook-id", "msg_2".to_owned())], "{}"),
        )
        .await;
        assert_eq!(status, 401, "unsigned deliveries are refused");
        let (status, _, _) = exchange(addr, post("/_control", &[], r#"{"fail_rate": 2}"#)).await;
        assert_eq!(status, 400);

        let get = "GET /_deliveries HTTP/1.1\r\nHost: sink\r\nConnection: close\r\n\r\n".to_owned();
        let (status, _, body) = exchange(addr, get.clone()).await;
        assert_eq!(status, 200);
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["summary"]["received"], 4);
        assert_eq!(report["summary"]["accepted"], 2);
        assert_eq!(report["summary"]["duplicates"], 1);
        assert_eq!(report["summary"]["unverified"], 1);
        assert_eq!(report["summary"]["max_in_flight_per_id"], 1);
        assert_eq!(report["deliveries"][0]["status"], 429);
        assert_eq!(report["deliveries"][1]["verified"], true);
        assert_eq!(sink.accepted_count("msg_1"), 2);

        let delete =
            "DELETE /_deliveries HTTP/1.1\r\nHost: sink\r\nConnection: close\r\n\r\n".to_owned();
        assert_eq!(exchange(addr, delete).await.0, 204);
        assert_eq!(sink.summary(), Summary::default());
    }

    #[tokio::test]
    async fn counts_concurrent_requests_per_webhook_id_also_when_the_client_hangs_up() {
        let sink = MerchantSink::start(SocketAddr::from(([127, 0, 0, 1], 0)), "whsec_AAAA")
            .await
            .unwrap();
        sink.set_behaviour(Behaviour {
            delay_ms: 300,
            ..Behaviour::default()
        });
        let addr = sink.addr();
        let request = |id: &str| post("/hook", &[("webhook-id", id.to_owned())], "{}");
        let (a, b, c) = tokio::join!(
            exchange(addr, request("msg_same")),
            exchange(addr, request("msg_same")),
            exchange(addr, request("msg_other")),
        );
        assert_eq!((a.0, b.0, c.0), (401, 401, 401));
        assert_eq!(sink.summary().max_in_flight_per_id, 2);
        assert_eq!(sink.in_flight("msg_same"), 0);
        let delivery = &sink.deliveries()[0];
        assert!(delivery.answered_unix_us >= delivery.arrived_unix_us + 290_000);

        // A client that goes away mid-answer is no longer counted.
        use tokio::io::AsyncWriteExt as _;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(request("msg_gone").as_bytes())
            .await
            .unwrap();
        for _ in 0..100 {
            if sink.in_flight("msg_gone") == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sink.in_flight("msg_gone"), 1);
        drop(stream);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(sink.in_flight("msg_gone"), 0);
    }

    #[test]
    fn failure_share_is_exact_and_spread() {
        let failed: Vec<bool> = (0..8u32).map(|k| should_fail(f64::from(k), 0.25)).collect();
        assert_eq!(
            failed,
            [false, false, false, true, false, false, false, true]
        );
        assert!((0..10u32).all(|k| should_fail(f64::from(k), 1.0)));
        assert!((0..10u32).all(|k| !should_fail(f64::from(k), 0.0)));
        let half = (0..1000u32)
            .filter(|k| should_fail(f64::from(*k), 0.5))
            .count();
        assert_eq!(half, 500);
    }

    #[test]
    fn behaviour_defaults_accept_everything() {
        let parsed: Behaviour = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, Behaviour::default());
        assert!(serde_json::from_str::<Behaviour>(r#"{"fail_rat": 1}"#).is_err());
    }
}
