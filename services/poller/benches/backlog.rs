//! Backlog benchmark: seeds 100,000 pending invoices and 100,000 matching successful deposits
//! in a fresh database, then times the poller's matching step draining the backlog (invoice→paid,
//! payment, ledger credit and webhook row per deposit). Also reports raw-deposit ingest speed.
//! Last line: `deposits_per_s=N`.

use std::time::Instant;

use chrono::Utc;
use problemsolver_core::money::Decimal;
use problemsolver_core::testing::TestDb;
use problemsolver_poller::binance::Deposit;
use problemsolver_poller::store;

const DEPOSITS: i64 = 100_000;
const BATCH: i64 = 5_000;
/// Binance's page size: ingest is measured in the chunks the poller would receive.
const PAGE: usize = 1_000;

#[tokio::main]
async fn main() {
    let db = TestDb::with_pool_size("bench_backlog", 4).await;
    let pool = db.pool.clone();
    let merchant_id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO merchants (name, webhook_url, webhook_secret_ciphertext, webhook_secret_nonce)
         VALUES ('bench', 'https://merchant.example/hook', '\\x00', '\\x000000000000000000000000') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("insert merchant");
    // One address per invoice, as a gateway handing out many deposit addresses would.
    sqlx::query(
        "INSERT INTO invoices (merchant_id, coin, network, address, base_amount, publish_amount)
         SELECT $1, 'USDT', 'TRX', 'addr-' || i, 10 + i * 0.0001, 10 + i * 0.0001
           FROM generate_series(1, $2::int8) AS i",
    )
    .bind(merchant_id)
    .bind(DEPOSITS)
    .execute(&pool)
    .await
    .expect("seed invoices");

    // Ingest: the same rows Binance would send, upserted page by page.
    let deposits: Vec<Deposit> = (1..=DEPOSITS)
        .map(|i| {
            let amount = Decimal::from(10) + Decimal::new(i, 4);
            Deposit {
                binance_id: format!("bench-{i}"),
                tx_id: format!("0xbench{i}"),
                coin: "USDT".to_owned(),
                network: "TRX".to_owned(),
                address: format!("addr-{i}"),
                address_tag: String::new(),
                amount,
                status: 1,
                insert_time: Utc::now(),
                raw: serde_json::json!({"id": format!("bench-{i}"), "amount": format!("{amount:.8}"), "status": 1}),
            }
        })
        .collect();
    let ingest_started = Instant::now();
    for page in deposits.chunks(PAGE) {
        store::upsert_deposits(&pool, page)
            .await
            .expect("upsert deposits");
    }
    let ingest_secs = ingest_started.elapsed().as_secs_f64();
    sqlx::query("ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");

    let started = Instant::now();
    let mut processed = 0u64;
    let mut credited = 0u64;
    loop {
        let outcome = store::match_batch(&pool, BATCH, None)
            .await
            .expect("match batch");
        processed += outcome.processed;
        credited += outcome.credited;
        if outcome.processed == 0 {
            break;
        }
    }
    let match_secs = started.elapsed().as_secs_f64();

    let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices WHERE status = 'paid'")
        .fetch_one(&pool)
        .await
        .expect("count paid");
    let hooks: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_queue")
        .fetch_one(&pool)
        .await
        .expect("count hooks");
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries")
        .fetch_one(&pool)
        .await
        .expect("count ledger");
    db.drop_db().await;
    // A fast wrong answer is not a result.
    assert_eq!(
        (processed, credited),
        (DEPOSITS as u64, DEPOSITS as u64),
        "every deposit credited"
    );
    assert_eq!(
        (paid, hooks, ledger),
        (DEPOSITS, DEPOSITS, DEPOSITS),
        "one paid invoice, webhook and ledger entry each"
    );

    println!(
        "ingest: {DEPOSITS} deposits upserted in {ingest_secs:.2}s ({:.0}/s)",
        DEPOSITS as f64 / ingest_secs
    );
    println!("match: {DEPOSITS} deposits credited in {match_secs:.2}s (batches of {BATCH})");
    println!("deposits_per_s={:.0}", DEPOSITS as f64 / match_secs);
}
