//! The whole flow on real Postgres: invoice → successful deposit → the poller's matching step
//! (invoice paid, one payment, one ledger entry, one webhook row) → this worker delivers one
//! webhook whose signature the merchant sink's independent verifier accepts.

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::Arc;

use problemsolver_core::Secret;
use problemsolver_core::crypto::{MasterKey, NewMerchant, create_merchant};
use problemsolver_core::invoice::{NewInvoice, create_invoice};
use problemsolver_core::testing::TestDb;
use problemsolver_stubs::merchant::MerchantSink;
use problemsolver_webhook_worker::metrics::Metrics;
use problemsolver_webhook_worker::secrets::MasterKeyOpener;
use problemsolver_webhook_worker::ssrf::TargetPolicy;
use problemsolver_webhook_worker::worker::{Worker, WorkerConfig};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

mod common;

const MASTER_KEY_HEX: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

#[tokio::test]
async fn invoice_paid_by_a_deposit_reaches_the_merchant_once_with_a_valid_signature() {
    let db = TestDb::new("webhook_flow").await;
    let sink = MerchantSink::start(SocketAddr::from(([127, 0, 0, 1], 0)), common::SECRET)
        .await
        .unwrap();
    let key = MasterKey::parse("ENCRYPTION_MASTER_KEY", MASTER_KEY_HEX).unwrap();
    let merchant = create_merchant(
        &db.pool,
        &key,
        &NewMerchant {
            name: "flow merchant".to_owned(),
            webhook_url: sink.url("/payments"),
            webhook_secret: Secret::new(common::SECRET.to_owned()),
        },
    )
    .await
    .unwrap();
    let invoice = create_invoice(
        &db.pool,
        &NewInvoice {
            merchant_id: merchant,
            coin: "USDT".to_owned(),
            network: "TRX".to_owned(),
            address: "TXflowAddress".to_owned(),
            base_amount: Decimal::from_str("0.0099").unwrap(),
            is_smoke: false,
        },
    )
    .await
    .unwrap();
    // Binance pads amounts; the comparison is numeric.
    let padded = format!("{:.8}", invoice.publish_amount);
    for (deposit_id, status) in [("dep-1", 1), ("dep-1-again", 1)] {
        sqlx::query(
            "INSERT INTO deposit_raw (binance_deposit_id, tx_id, coin, network, address, amount, binance_status, insert_time)
             VALUES ($1, 'tx-flow', 'USDT', 'TRX', 'TXflowAddress', $2::numeric, $3, now())",
        )
        .bind(deposit_id)
        .bind(&padded)
        .bind(status)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    problemsolver_poller::store::match_batch(&db.pool, 100, None)
        .await
        .unwrap();
    problemsolver_poller::store::match_batch(&db.pool, 100, None)
        .await
        .unwrap();

    let mut config: WorkerConfig = common::config("flow-worker");
    config.client.policy = TargetPolicy::Insecure;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let worker = Arc::new(
        Worker::new(
            db.pool.clone(),
            config,
            metrics,
            Arc::new(MasterKeyOpener(key)),
        )
        .unwrap(),
    );
    worker.run(CancellationToken::new(), true).await;

    let count = |sql: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM invoices WHERE status = 'paid'").await,
        1
    );
    assert_eq!(count("SELECT count(*) FROM payments").await, 1);
    assert_eq!(count("SELECT count(*) FROM ledger_entries").await, 1);
    assert_eq!(
        count("SELECT count(*) FROM webhook_queue WHERE status = 'delivered'").await,
        1
    );
    let deliveries = sink.deliveries();
    assert_eq!(deliveries.len(), 1, "exactly one webhook");
    assert!(deliveries[0].verified, "{:?}", deliveries[0].verify_error);
    let body: serde_json::Value = serde_json::from_str(&deliveries[0].body).unwrap();
    assert_eq!(body["type"], "invoice.paid");
    assert_eq!(body["data"]["invoice_id"], invoice.id.to_string());
    assert!(body["data"].get("data").is_none(), "no double envelope");
    db.drop_db().await;
}
