//! Binance deposit-history client: builds and signs requests (HMAC-SHA256 over the exact query
//! string, `X-MBX-APIKEY` header), pages through a window, classifies failures (429/418 with
//! `Retry-After`, -1021 clock skew, 5xx as unknown) and keeps a server-time offset.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use problemsolver_core::Secret;
use problemsolver_core::money::{Decimal, parse_amount};
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use sha2::Sha256;

use crate::window::Window;

/// Binance's page-size ceiling for deposit history.
pub const PAGE_LIMIT: usize = 1000;
const DEPOSIT_HISTORY_PATH: &str = "/sapi/v1/capital/deposit/hisrec";
const TIME_PATH: &str = "/api/v3/time";
/// When Binance sends no usable `Retry-After`, wait this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BinanceError {
    #[error("Binance rate limit (HTTP {status}); retry after {retry_after:?}")]
    RateLimited { status: u16, retry_after: Duration },
    #[error(
        "Binance says our timestamp is outside recvWindow (-1021) even after resyncing the clock offset"
    )]
    ClockSkew,
    #[error("Binance returned HTTP {status}: outcome unknown, will retry next cycle")]
    ServerUnknown { status: u16 },
    #[error("Binance rejected the request (HTTP {status}, code {code}): {msg}")]
    Api { status: u16, code: i64, msg: String },
    #[error("cannot reach Binance at `BINANCE_API_BASE`: {0}")]
    Transport(String),
    #[error("unexpected Binance response: {0}")]
    Decode(String),
}

/// A deposit as read from Binance, with the amount parsed exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Deposit {
    pub binance_id: String,
    pub tx_id: String,
    pub coin: String,
    pub network: String,
    pub address: String,
    pub address_tag: String,
    pub amount: Decimal,
    pub status: i32,
    pub insert_time: DateTime<Utc>,
    pub raw: serde_json::Value,
}

/// HMAC-SHA256 of the query under the API secret, lowercase hex.
pub fn sign(secret: &Secret<String>, query: &str) -> String {
    // HMAC-SHA256 accepts keys of any length; an error here is impossible.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(query.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The unsigned query for one page (parameter order is part of what gets signed).
pub fn page_query(
    window: Window,
    offset: usize,
    limit: usize,
    recv_window_ms: i64,
    timestamp_ms: i64,
) -> String {
    format!(
        "startTime={}&endTime={}&offset={offset}&limit={limit}&recvWindow={recv_window_ms}&timestamp={timestamp_ms}",
        window.start_ms, window.end_ms
    )
}

/// Parses one deposit object; `None` names the field that was wrong.
pub fn parse_deposit(raw: &serde_json::Value) -> Result<Deposit, String> {
    let text = |name: &str| -> Result<String, String> {
        match raw.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            Some(serde_json::Value::Null) | None => Ok(String::new()),
            Some(_) => Err(format!("field `{name}` has an unexpected type")),
        }
    };
    let int = |name: &str| -> Result<i64, String> {
        raw.get(name)
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| format!("field `{name}` is missing or not an integer"))
    };
    let binance_id = text("id")?;
    if binance_id.is_empty() {
        return Err("field `id` is missing".to_owned());
    }
    let amount =
        parse_amount(&text("amount")?).map_err(|error| format!("field `amount`: {error}"))?;
    if amount <= Decimal::ZERO {
        return Err(format!("field `amount`: `{amount}` is not positive"));
    }
    // The column is numeric(38, 18): at most 18 decimals and 20 integer digits.
    if amount.scale() > 18 || amount.trunc().abs().to_string().len() > 20 {
        return Err(format!(
            "field `amount`: `{amount}` does not fit numeric(38, 18)"
        ));
    }
    if contains_nul(raw) {
        return Err("a field contains a NUL character, which the database cannot store".to_owned());
    }
    let status =
        i32::try_from(int("status")?).map_err(|_| "field `status` out of range".to_owned())?;
    let insert_time = DateTime::from_timestamp_millis(int("insertTime")?)
        .ok_or("field `insertTime` out of range")?;
    Ok(Deposit {
        binance_id,
        tx_id: text("txId")?,
        coin: text("coin")?,
        network: text("network")?,
        address: text("address")?,
        address_tag: text("addressTag")?,
        amount,
        status,
        insert_time,
        raw: raw.clone(),
    })
}

/// Whether any string in the value (keys included) holds U+0000, which neither `text` nor
/// `jsonb` columns accept.
fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || contains_nul(item)),
        _ => false,
    }
}

fn local_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses `Retry-After` as delta-seconds (Binance's form); anything else gets the default.
pub fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

pub struct BinanceClient {
    http: reqwest::Client,
    base: String,
    api_key: Secret<String>,
    api_secret: Secret<String>,
    recv_window_ms: i64,
    /// Binance time minus local time, learnt from `/api/v3/time` after a -1021.
    time_offset_ms: AtomicI64,
}

impl std::fmt::Debug for BinanceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinanceClient")
            .field("base", &self.base)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl BinanceClient {
    pub fn new(
        base: &str,
        api_key: Secret<String>,
        api_secret: Secret<String>,
        recv_window_ms: i64,
    ) -> Result<Self, BinanceError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("problemsolver-poller/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| BinanceError::Transport(error.without_url().to_string()))?;
        Ok(BinanceClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            api_secret,
            recv_window_ms,
            time_offset_ms: AtomicI64::new(0),
        })
    }

    pub fn time_offset_ms(&self) -> i64 {
        self.time_offset_ms.load(Ordering::Relaxed)
    }

    /// Binance's "now" as far as we know it.
    pub fn server_now_ms(&self) -> i64 {
        local_now_ms() + self.time_offset_ms()
    }

    /// Asks `/api/v3/time` and stores the offset (assuming symmetric latency).
    pub async fn sync_time(&self) -> Result<i64, BinanceError> {
        let sent = local_now_ms();
        let response = self
            .http
            .get(format!("{}{TIME_PATH}", self.base))
            .send()
            .await
            .map_err(|error| BinanceError::Transport(error.without_url().to_string()))?;
        let received = local_now_ms();
        let body: serde_json::Value = decode(response).await?;
        let server = body
            .get("serverTime")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| {
                BinanceError::Decode("`serverTime` missing from /api/v3/time".to_owned())
            })?;
        let offset = server - (sent + received) / 2;
        self.time_offset_ms.store(offset, Ordering::Relaxed);
        tracing::info!(offset_ms = offset, "synchronised with Binance server time");
        Ok(offset)
    }

    /// One page of deposit history; on -1021 resyncs the clock offset and retries once.
    pub async fn deposit_page(
        &self,
        window: Window,
        offset: usize,
    ) -> Result<Vec<serde_json::Value>, BinanceError> {
        match self.deposit_page_once(window, offset).await {
            Err(BinanceError::Api { code: -1021, .. }) => {
                tracing::warn!("Binance reported clock skew (-1021); resyncing time offset");
                self.sync_time().await?;
                match self.deposit_page_once(window, offset).await {
                    Err(BinanceError::Api { code: -1021, .. }) => Err(BinanceError::ClockSkew),
                    other => other,
                }
            }
            other => other,
        }
    }

    async fn deposit_page_once(
        &self,
        window: Window,
        offset: usize,
    ) -> Result<Vec<serde_json::Value>, BinanceError> {
        let query = page_query(
            window,
            offset,
            PAGE_LIMIT,
            self.recv_window_ms,
            self.server_now_ms(),
        );
        let signature = sign(&self.api_secret, &query);
        let mut key = HeaderValue::from_str(self.api_key.expose()).map_err(|_| {
            BinanceError::Decode(
                "`BINANCE_API_KEY` contains characters not allowed in a header".to_owned(),
            )
        })?;
        key.set_sensitive(true);
        let response = self
            .http
            .get(format!(
                "{}{DEPOSIT_HISTORY_PATH}?{query}&signature={signature}",
                self.base
            ))
            .header("X-MBX-APIKEY", key)
            .send()
            .await
            .map_err(|error| BinanceError::Transport(error.without_url().to_string()))?;
        decode(response).await
    }

    /// Every deposit in the window, paging with `offset` until a short page.
    pub async fn deposits_in(
        &self,
        window: Window,
    ) -> Result<Vec<serde_json::Value>, BinanceError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.deposit_page(window, offset).await?;
            let count = page.len();
            all.extend(page);
            if count < PAGE_LIMIT {
                return Ok(all);
            }
            offset += count;
        }
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, BinanceError> {
    let status = response.status();
    let code = status.as_u16();
    if code == 429 || code == 418 {
        return Err(BinanceError::RateLimited {
            status: code,
            retry_after: retry_after(response.headers()),
        });
    }
    if status.is_server_error() {
        return Err(BinanceError::ServerUnknown { status: code });
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| BinanceError::Transport(error.without_url().to_string()))?;
    if !status.is_success() {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let api_code = parsed
            .as_ref()
            .and_then(|v| v.get("code"))
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let msg = parsed
            .as_ref()
            .and_then(|v| v.get("msg"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("no message")
            .to_owned();
        return Err(BinanceError::Api {
            status: code,
            code: api_code,
            msg,
        });
    }
    serde_json::from_slice(&body).map_err(|error| BinanceError::Decode(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_binance_documentation_example() {
        let secret = Secret::new(
            "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j".to_owned(),
        );
        let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            sign(&secret, query),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }

    #[test]
    fn page_query_carries_window_paging_and_timing() {
        let query = page_query(
            Window {
                start_ms: 10,
                end_ms: 20,
            },
            2000,
            1000,
            5000,
            99,
        );
        assert_eq!(
            query,
            "startTime=10&endTime=20&offset=2000&limit=1000&recvWindow=5000&timestamp=99"
        );
    }

    #[test]
    fn parses_padded_amounts_and_string_or_numeric_ids() {
        let raw = serde_json::json!({"id": "769800519366885376", "amount": "0.00999800", "coin": "USDT",
            "network": "TRX", "status": 1, "address": "TXa", "addressTag": "", "txId": "abc",
            "insertTime": 1_661_493_146_000_i64, "confirmTimes": "1/1"});
        let deposit = parse_deposit(&raw).unwrap();
        assert_eq!(deposit.amount, "0.009998".parse::<Decimal>().unwrap());
        assert_eq!(deposit.binance_id, "769800519366885376");
        assert_eq!(deposit.insert_time.timestamp_millis(), 1_661_493_146_000);
        let numeric_id = serde_json::json!({"id": 42, "amount": "1", "status": 0, "insertTime": 1});
        assert_eq!(parse_deposit(&numeric_id).unwrap().binance_id, "42");
        let bad = serde_json::json!({"id": "1", "amount": "1e3", "status": 1, "insertTime": 1});
        assert!(parse_deposit(&bad).unwrap_err().contains("amount"));
    }

    #[test]
    fn rows_the_database_would_refuse_are_rejected_at_parse() {
        let row = |amount: &str, tx: &str| serde_json::json!({"id": "9", "amount": amount, "status": 1, "insertTime": 1, "txId": tx});
        assert!(
            parse_deposit(&row("0", "t"))
                .unwrap_err()
                .contains("not positive")
        );
        assert!(
            parse_deposit(&row("0.00000000", "t"))
                .unwrap_err()
                .contains("not positive")
        );
        assert!(
            parse_deposit(&row("123456789012345678901", "t"))
                .unwrap_err()
                .contains("numeric(38, 18)")
        );
        assert!(
            parse_deposit(&row("0.0000000000000000001", "t"))
                .unwrap_err()
                .contains("numeric(38, 18)")
        );
        assert!(
            parse_deposit(&row("1", "a\u{0}b"))
                .unwrap_err()
                .contains("NUL")
        );
        assert!(parse_deposit(&row("12345678901234567890.12345678", "t")).is_ok());
    }

    #[test]
    fn retry_after_seconds_or_default() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), DEFAULT_RETRY_AFTER);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Duration::from_secs(7));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let client = BinanceClient::new(
            "http://127.0.0.1:1",
            Secret::new("the-api-key".to_owned()),
            Secret::new("the-api-secret".to_owned()),
            5000,
        )
        .unwrap();
        let shown = format!("{client:?}");
        assert!(
            !shown.contains("the-api-key") && !shown.contains("the-api-secret"),
            "{shown}"
        );
    }
}
