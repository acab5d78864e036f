//! Binance deposit-history stub: `GET /sapi/v1/capital/deposit/hisrec` and `GET /api/v3/time`,
//! checking the API-key header and the HMAC-SHA256 signature exactly as Binance does, with the
//! same filters, limits and error JSON. Tests script deposits through [`BinanceStubHandle`] and
//! inject rate limits, bans, server errors and clock skew.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Binance's documented ceiling for one deposit-history query: with both bounds sent, "time
/// between startTime and endTime must be less than 90 days", so exactly 90 days is refused.
const MAX_WINDOW_MS: i64 = 90 * 24 * 60 * 60 * 1000;
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 1000;
const DEFAULT_RECV_WINDOW_MS: i64 = 5000;
const MAX_RECV_WINDOW_MS: i64 = 60_000;

/// One deposit as Binance reports it. `amount` is the padded string Binance sends.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StubDeposit {
    pub id: String,
    pub amount: String,
    pub coin: String,
    pub network: String,
    /// 0 pending, 6 credited but cannot withdraw, 7 wrong deposit, 8 waiting user confirm, 1 success.
    pub status: i32,
    pub address: String,
    pub address_tag: String,
    pub tx_id: String,
    pub insert_time: i64,
    pub complete_time: i64,
    pub transfer_type: i32,
    pub confirm_times: String,
    pub unlock_confirm: i32,
    pub wallet_type: i32,
}

impl StubDeposit {
    /// A successful deposit with defaults for the fields tests rarely care about.
    pub fn success(
        id: &str,
        coin: &str,
        network: &str,
        address: &str,
        amount: &str,
        insert_time_ms: i64,
    ) -> Self {
        StubDeposit {
            id: id.to_owned(),
            amount: amount.to_owned(),
            coin: coin.to_owned(),
            network: network.to_owned(),
            status: 1,
            address: address.to_owned(),
            address_tag: String::new(),
            tx_id: format!("0x{id}"),
            insert_time: insert_time_ms,
            complete_time: insert_time_ms,
            transfer_type: 0,
            confirm_times: "12/12".to_owned(),
            unlock_confirm: 0,
            wallet_type: 0,
        }
    }

    pub fn with_status(mut self, status: i32) -> Self {
        self.status = status;
        self
    }
}

/// A one-shot failure served instead of the next deposit-history response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 429 with `Retry-After` (seconds) and code -1003.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 418 (IP banned after ignoring 429s) with `Retry-After`.
    Banned { retry_after_secs: u64 },
    /// An HTTP 5xx with an empty body: the outcome is unknown to the caller.
    ServerError { status: u16 },
}

/// A request the stub received (for assertions on windows and paging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub path: String,
    pub query: String,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    deposits: Vec<StubDeposit>,
    faults: std::collections::VecDeque<Fault>,
    /// Added to the local clock to get the stub's "server time" (simulates client clock skew).
    server_time_offset_ms: i64,
    requests: Vec<SeenRequest>,
}

#[derive(Clone)]
struct Shared {
    api_key: Arc<str>,
    api_secret: Arc<[u8]>,
    inner: Arc<Mutex<Inner>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data stays consistent even if a test thread panicked while holding the lock.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn server_time_ms(&self) -> i64 {
        now_ms() + self.lock().server_time_offset_ms
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Entry point: `BinanceStub::start(addr, api_key, api_secret)`.
pub struct BinanceStub;

impl BinanceStub {
    /// Binds `addr` (use port 0 in tests) and serves until the handle is shut down or dropped.
    pub async fn start(
        addr: SocketAddr,
        api_key: &str,
        api_secret: &str,
    ) -> std::io::Result<BinanceStubHandle> {
        let shared = Shared {
            api_key: Arc::from(api_key),
            api_secret: Arc::from(api_secret.as_bytes()),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let app = Router::new()
            .route("/sapi/v1/capital/deposit/hisrec", get(deposit_history))
            .route("/api/v3/time", get(server_time))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "binance stub server stopped with an error");
            }
        });
        Ok(BinanceStubHandle {
            addr: local_addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// Controls a running stub. Dropping it stops the server.
pub struct BinanceStubHandle {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BinanceStubHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, suitable for `BINANCE_API_BASE`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push_deposit(&self, deposit: StubDeposit) {
        self.shared.lock().deposits.push(deposit);
    }

    /// Changes the status of a scripted deposit (e.g. pending → success); returns whether it existed.
    pub fn set_deposit_status(&self, id: &str, status: i32) -> bool {
        let mut inner = self.shared.lock();
        match inner.deposits.iter_mut().find(|d| d.id == id) {
            Some(deposit) => {
                deposit.status = status;
                true
            }
            None => false,
        }
    }

    /// Queues a failure for the next deposit-history request(s), in order.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Makes the stub's clock run `offset_ms` ahead of (positive) or behind (negative) the local
    /// clock, so a client that does not sync its time offset gets -1021.
    pub fn set_server_time_offset_ms(&self, offset_ms: i64) {
        self.shared.lock().server_time_offset_ms = offset_ms;
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.lock().requests.clone()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BinanceStubHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn binance_error(status: StatusCode, code: i32, msg: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "code": code, "msg": msg })),
    )
        .into_response()
}

async fn server_time(State(shared): State<Shared>) -> Response {
    axum::Json(serde_json::json!({ "serverTime": shared.server_time_ms() })).into_response()
}

/// HMAC-SHA256 of `payload` under `secret`, lowercase hex (Binance's signature format).
pub fn sign(secret: &[u8], payload: &str) -> String {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn deposit_history(
    State(shared): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let response = answer_deposit_history(&shared, &headers, &query);
    shared.lock().requests.push(SeenRequest {
        path: "/sapi/v1/capital/deposit/hisrec".to_owned(),
        query,
        status: response.status().as_u16(),
    });
    response
}

fn answer_deposit_history(shared: &Shared, headers: &HeaderMap, query: &str) -> Response {
    if let Some(fault) = shared.lock().faults.pop_front() {
        return fault_response(fault);
    }
    match headers.get("X-MBX-APIKEY").and_then(|v| v.to_str().ok()) {
        None => return binance_error(StatusCode::UNAUTHORIZED, -2014, "API-key format invalid."),
        Some(key) if key != &*shared.api_key => {
            return binance_error(
                StatusCode::UNAUTHORIZED,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            );
        }
        Some(_) => {}
    }
    // The signature covers the exact query text before `&signature=`, which must come last.
    let Some((payload, signature)) = query.rsplit_once("&signature=") else {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
        );
    };
    let expected = sign(&shared.api_secret, payload);
    if !constant_time_eq(
        expected.as_bytes(),
        signature.to_ascii_lowercase().as_bytes(),
    ) {
        return binance_error(
            StatusCode::UNAUTHORIZED,
            -1022,
            "Signature for this request is not valid.",
        );
    }
    let params = match parse_params(payload) {
        Ok(params) => params,
        Err(name) => {
            let msg = format!("Illegal characters found in parameter '{name}'.");
            return binance_error(StatusCode::BAD_REQUEST, -1100, &msg);
        }
    };
    let Some(timestamp) = params.timestamp else {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
        );
    };
    let recv_window = params.recv_window.unwrap_or(DEFAULT_RECV_WINDOW_MS);
    if !(1..=MAX_RECV_WINDOW_MS).contains(&recv_window) {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1131,
            "recvWindow must be less than 60000",
        );
    }
    let server_time = shared.server_time_ms();
    if timestamp >= server_time + 1000 || server_time - timestamp > recv_window {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        );
    }
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1127,
            "limit must be between 1 and 1000.",
        );
    }
    // Binance's defaults: no times → the last 90 days; one bound → 90 days from/to it. Only a
    // window the caller chose is held to the limit: both bounds sent must be less than 90 days
    // apart.
    let (start, end) = match (params.start_time, params.end_time) {
        (Some(start), Some(end)) => {
            if end < start || end - start >= MAX_WINDOW_MS {
                return binance_error(
                    StatusCode::BAD_REQUEST,
                    -1127,
                    "More than 90 days between startTime and endTime.",
                );
            }
            (start, end)
        }
        (Some(start), None) => (start, start + MAX_WINDOW_MS),
        (None, Some(end)) => (end - MAX_WINDOW_MS, end),
        (None, None) => (server_time - MAX_WINDOW_MS, server_time),
    };
    let inner = shared.lock();
    let mut rows: Vec<&StubDeposit> = inner
        .deposits
        .iter()
        .filter(|d| d.insert_time >= start && d.insert_time <= end)
        .filter(|d| params.status.is_none_or(|s| d.status == s))
        .filter(|d| params.coin.as_deref().is_none_or(|c| d.coin == c))
        .filter(|d| params.tx_id.as_deref().is_none_or(|t| d.tx_id == t))
        .collect();
    // Newest first, as Binance pages its history.
    rows.sort_by(|a, b| {
        b.insert_time
            .cmp(&a.insert_time)
            .then_with(|| b.id.cmp(&a.id))
    });
    let page: Vec<&StubDeposit> = rows
        .into_iter()
        .skip(params.offset.unwrap_or(0))
        .take(limit)
        .collect();
    axum::Json(page).into_response()
}

fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::RateLimited { retry_after_secs } => with_retry_after(
            binance_error(
                StatusCode::TOO_MANY_REQUESTS,
                -1003,
                "Too many requests; please use the websocket for live updates.",
            ),
            retry_after_secs,
        ),
        Fault::Banned { retry_after_secs } => with_retry_after(
            binance_error(
                StatusCode::IM_A_TEAPOT,
                -1003,
                "Way too many requests; IP banned until later.",
            ),
            retry_after_secs,
        ),
        Fault::ServerError { status } => StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
    }
}

fn with_retry_after(mut response: Response, secs: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Default)]
struct Params {
    timestamp: Option<i64>,
    recv_window: Option<i64>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    offset: Option<usize>,
    limit: Option<usize>,
    status: Option<i32>,
    coin: Option<String>,
    tx_id: Option<String>,
}

/// Parses the query; the error is the name of the malformed parameter.
fn parse_params(payload: &str) -> Result<Params, String> {
    fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
        value.parse().map_err(|_| name.to_owned())
    }
    let mut params = Params::default();
    for pair in payload.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "timestamp" => params.timestamp = Some(number(name, value)?),
            "recvWindow" => params.recv_window = Some(number(name, value)?),
            "startTime" => params.start_time = Some(number(name, value)?),
            "endTime" => params.end_time = Some(number(name, value)?),
            "offset" => params.offset = Some(number(name, value)?),
            "limit" => params.limit = Some(number(name, value)?),
            "status" => params.status = Some(number(name, value)?),
            "coin" => params.coin = Some(value.to_owned()),
            "txId" => params.tx_id = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_binance_documentation_example() {
        // The worked example from Binance's signed-endpoint documentation.
        let secret = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let payload = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            sign(secret, payload),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }

    #[test]
    fn a_window_of_ninety_days_is_refused_one_millisecond_less_is_not() {
        let shared = Shared {
            api_key: Arc::from("key"),
            api_secret: Arc::from(&b"secret"[..]),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let mut headers = HeaderMap::new();
        headers.insert("X-MBX-APIKEY", HeaderValue::from_static("key"));
        let status = |span_ms: i64| {
            let payload = format!(
                "startTime=0&endTime={span_ms}&timestamp={}",
                shared.server_time_ms()
            );
            let query = format!("{payload}&signature={}", sign(b"secret", &payload));
            answer_deposit_history(&shared, &headers, &query).status()
        };
        assert_eq!(status(MAX_WINDOW_MS), StatusCode::BAD_REQUEST);
        assert_eq!(status(MAX_WINDOW_MS + 1), StatusCode::BAD_REQUEST);
        assert_eq!(status(MAX_WINDOW_MS - 1), StatusCode::OK);
    }

    #[test]
    fn params_parse_and_reject_garbage() {
        let params =
            parse_params("startTime=1&endTime=2&offset=3&limit=4&status=1&coin=USDT&timestamp=9")
                .ok()
                .unwrap();
        assert_eq!(
            (
                params.start_time,
                params.end_time,
                params.offset,
                params.limit
            ),
            (Some(1), Some(2), Some(3), Some(4))
        );
        assert_eq!(params.status, Some(1));
        assert!(parse_params("limit=abc").is_err());
    }
}
