//! What the poller's integration tests share: a fresh database, the Binance stub over HTTP, a
//! poller wired to both, and builders for merchants, invoices and deposits.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use problemsolver_core::Secret;
use problemsolver_core::crypto::{MasterKey, NewMerchant, create_merchant};
use problemsolver_core::db::connect_options;
use problemsolver_core::http::{Readiness, Shutdown};
use problemsolver_core::invoice::{Invoice, NewInvoice, create_invoice};
use problemsolver_core::money::Decimal;
use problemsolver_core::testing::TestDb;
use problemsolver_poller::binance::BinanceClient;
use problemsolver_poller::config::Settings;
use problemsolver_poller::leader::{Leadership, POLLER_LOCK_KEY};
use problemsolver_poller::metrics::Metrics;
use problemsolver_poller::service::{CycleOutcome, CycleReport, Poller};
use problemsolver_stubs::binance::{BinanceStub, BinanceStubHandle, StubDeposit};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use uuid::Uuid;

pub const API_KEY: &str = "test-api-key-value";
pub const API_SECRET: &str = "test-api-secret-value";
pub const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const NETWORK: &str = "TRX";
pub const ADDRESS: &str = "TXdepositaddress";

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

pub struct Harness {
    pub db: TestDb,
    pub stub: BinanceStubHandle,
    pub poller: Poller,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub shutdown: Shutdown,
    pub registry: Registry,
}

pub async fn stub() -> BinanceStubHandle {
    BinanceStub::start(SocketAddr::from(([127, 0, 0, 1], 0)), API_KEY, API_SECRET)
        .await
        .unwrap()
}

pub fn settings() -> Settings {
    Settings {
        poll_interval: Duration::from_millis(50),
        overlap: Duration::from_secs(600),
        initial_lookback: Duration::from_secs(3600),
        recv_window_ms: 5000,
        match_batch_size: 1000,
        collision_settle: Duration::ZERO,
        ..Settings::default()
    }
}

pub fn poller_for(
    db: &TestDb,
    base: &str,
    settings: Settings,
) -> (Poller, Metrics, Readiness, Registry) {
    poller_on_pool(db, db.pool.clone(), base, settings)
}

/// A poller over a pool of the test's own making (size, timeouts), on `db`.
pub fn poller_on_pool(
    db: &TestDb,
    pool: PgPool,
    base: &str,
    settings: Settings,
) -> (Poller, Metrics, Readiness, Registry) {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::new("starting");
    let client = BinanceClient::new(
        base,
        Secret::new(API_KEY.to_owned()),
        Secret::new(API_SECRET.to_owned()),
        5000,
    )
    .unwrap();
    let leadership = Leadership::new(connect_options(&db.url()).unwrap(), POLLER_LOCK_KEY);
    let poller = Poller::new(
        pool,
        client,
        leadership,
        metrics.clone(),
        readiness.clone(),
        settings,
    );
    (poller, metrics, readiness, registry)
}

pub async fn harness(name: &str, settings: Settings) -> Harness {
    let db = TestDb::new(name).await;
    let stub = stub().await;
    let (poller, metrics, readiness, registry) = poller_for(&db, &stub.base_url(), settings);
    Harness {
        db,
        stub,
        poller,
        metrics,
        readiness,
        shutdown: Shutdown::new(),
        registry,
    }
}

pub async fn merchant(pool: &PgPool) -> Uuid {
    let key = MasterKey::parse("ENCRYPTION_MASTER_KEY", MASTER_KEY).unwrap();
    let new = NewMerchant {
        name: "shop".to_owned(),
        webhook_url: "http://127.0.0.1:9/hook".to_owned(),
        webhook_secret: Secret::new("whsec_dGVzdA==".to_owned()),
    };
    create_merchant(pool, &key, &new).await.unwrap()
}

pub async fn invoice(pool: &PgPool, merchant_id: Uuid, base: &str) -> Invoice {
    let new = NewInvoice {
        merchant_id,
        coin: "USDT".to_owned(),
        network: NETWORK.to_owned(),
        address: ADDRESS.to_owned(),
        base_amount: dec(base),
        is_smoke: false,
    };
    create_invoice(pool, &new).await.unwrap()
}

/// A successful deposit Binance saw now: after every invoice the test created before it.
pub fn deposit(id: &str, amount: &str) -> StubDeposit {
    StubDeposit::success(id, "USDT", NETWORK, ADDRESS, amount, now_ms())
}

pub async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

pub async fn led(harness: &mut Harness) -> CycleReport {
    match harness.poller.cycle(&harness.shutdown).await {
        Ok(CycleOutcome::Led(report)) => report,
        other => panic!("expected a led cycle, got {other:?}"),
    }
}

/// An invoice whose life is placed in time (created and expiring at the given Binance
/// milliseconds), allocated by the real `create_invoice`.
pub async fn invoice_between(
    pool: &PgPool,
    merchant_id: Uuid,
    base: &str,
    created_ms: i64,
    expires_ms: i64,
) -> Invoice {
    let made = invoice(pool, merchant_id, base).await;
    sqlx::query(
        "UPDATE invoices SET created_at = to_timestamp($2::float8 / 1000),
                             expires_at = to_timestamp($3::float8 / 1000)
          WHERE id = $1",
    )
    .bind(made.id)
    .bind(created_ms as f64)
    .bind(expires_ms as f64)
    .execute(pool)
    .await
    .unwrap();
    made
}

/// A deposit Binance saw at `insert_ms`, with a status.
pub fn deposit_at(id: &str, amount: &str, insert_ms: i64, status: i32) -> StubDeposit {
    StubDeposit::success(id, "USDT", NETWORK, ADDRESS, amount, insert_ms).with_status(status)
}

/// The outcome recorded for a Binance deposit id (None while unprocessed).
pub async fn outcome_of(pool: &PgPool, binance_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT outcome FROM deposit_raw WHERE binance_deposit_id = $1")
        .bind(binance_id)
        .fetch_optional(pool)
        .await
        .unwrap()
        .flatten()
}

/// How many system events of a kind name this deposit.
pub async fn events_for(pool: &PgPool, kind: &str, binance_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM system_events
          WHERE kind = $1 AND (details ->> 'binance_deposit_id' = $2 OR details ->> 'quarantine_key' = $2)",
    )
    .bind(kind)
    .bind(binance_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub const MINUTE_MS: i64 = 60_000;

/// The text exposition of a registry, as Prometheus would scrape it.
pub fn metrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}
