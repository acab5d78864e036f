//! The poller's SQL: idempotent raw-deposit upsert, checkpoints, the set-based matching step
//! (invoice→paid, payment, ledger credit, webhook_queue row in one transaction per batch) and
//! the allocation-collision watermark.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::binance::Deposit;

/// Checkpoint row holding the end of the last fully fetched Binance window.
pub const DEPOSITS_CHECKPOINT: &str = "binance_deposits";
/// Checkpoint row holding the `invoices.created_at` watermark up to which collisions were counted.
pub const COLLISIONS_CHECKPOINT: &str = "invoice_collisions";
/// Webhook event written for a credited invoice.
pub const INVOICE_PAID_EVENT: &str = "invoice.paid";

/// Inserts new deposits; for ones already stored and not yet processed, refreshes the Binance
/// status (pending → success) and raw JSON. Processed rows are never touched, so re-fetching
/// the same history is harmless. Returns the number of rows inserted or changed.
pub async fn upsert_deposits(pool: &PgPool, deposits: &[Deposit]) -> Result<u64, sqlx::Error> {
    if deposits.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(deposits.len());
    let mut tx_ids = Vec::with_capacity(deposits.len());
    let mut coins = Vec::with_capacity(deposits.len());
    let mut networks = Vec::with_capacity(deposits.len());
    let mut addresses = Vec::with_capacity(deposits.len());
    let mut tags = Vec::with_capacity(deposits.len());
    let mut amounts = Vec::with_capacity(deposits.len());
    let mut statuses = Vec::with_capacity(deposits.len());
    let mut times = Vec::with_capacity(deposits.len());
    let mut raws = Vec::with_capacity(deposits.len());
    for deposit in deposits {
        ids.push(deposit.binance_id.clone());
        tx_ids.push(deposit.tx_id.clone());
        coins.push(deposit.coin.clone());
        networks.push(deposit.network.clone());
        addresses.push(deposit.address.clone());
        tags.push(deposit.address_tag.clone());
        amounts.push(deposit.amount);
        statuses.push(deposit.status);
        times.push(deposit.insert_time);
        raws.push(sqlx::types::Json(deposit.raw.clone()));
    }
    let result = sqlx::query(
        "INSERT INTO deposit_raw (binance_deposit_id, tx_id, coin, network, address, address_tag, amount,
                                  binance_status, insert_time, raw)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::numeric[], $8::int4[], $9::timestamptz[], $10::jsonb[])
         ON CONFLICT (binance_deposit_id) DO UPDATE
            SET binance_status = EXCLUDED.binance_status, raw = EXCLUDED.raw, updated_at = now()
          WHERE deposit_raw.processed_at IS NULL
            AND deposit_raw.binance_status IS DISTINCT FROM EXCLUDED.binance_status",
    )
    .bind(ids)
    .bind(tx_ids)
    .bind(coins)
    .bind(networks)
    .bind(addresses)
    .bind(tags)
    .bind(amounts)
    .bind(statuses)
    .bind(times)
    .bind(raws)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub async fn load_checkpoint(
    pool: &PgPool,
    name: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT last_insert_time FROM poller_checkpoint WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

pub async fn save_checkpoint(
    pool: &PgPool,
    name: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO poller_checkpoint (name, last_insert_time, last_success_at, updated_at)
         VALUES ($1, $2, now(), now())
         ON CONFLICT (name) DO UPDATE
            SET last_insert_time = GREATEST(poller_checkpoint.last_insert_time, EXCLUDED.last_insert_time),
                last_success_at = now(), updated_at = now()",
    )
    .bind(name)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// What one reconciliation pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileOutcome {
    /// Credited deposits examined.
    pub checked: u64,
    /// Deposits of `checked` whose records do not add up.
    pub mismatches: u64,
    /// Highest `deposit_raw.id` examined (the next pass starts after it).
    pub last_id: i64,
    /// The ids of the mismatching deposits (at most the first 20), for the log.
    pub mismatching_ids: Vec<i64>,
}

/// Reconciles up to `limit` credited deposits with `id > after_id`, oldest first: each must
/// have exactly one payment for its invoice with the same amount, a ledger credit of that
/// amount for the payment, a paid invoice and an `invoice.paid` webhook row. Matching writes
/// all of them in one transaction, so a mismatch means records were changed behind the
/// poller's back.
pub async fn reconcile_after(
    pool: &PgPool,
    after_id: i64,
    limit: i64,
) -> Result<ReconcileOutcome, sqlx::Error> {
    let rows: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT d.id,
                (p.id IS NOT NULL
                 AND p.invoice_id = d.matched_invoice_id
                 AND p.amount = d.amount
                 AND EXISTS (SELECT 1 FROM ledger_entries l
                              WHERE l.payment_id = p.id AND l.entry_type = 'credit'
                                AND l.change_amount = p.amount)
                 AND EXISTS (SELECT 1 FROM invoices i
                              WHERE i.id = d.matched_invoice_id AND i.status = 'paid')
                 AND EXISTS (SELECT 1 FROM webhook_queue w
                              WHERE w.invoice_id = d.matched_invoice_id AND w.event_type = $3)
                ) AS consistent
           FROM deposit_raw d
           LEFT JOIN payments p ON p.deposit_id = d.id
          WHERE d.id > $1 AND d.processed_at IS NOT NULL AND d.matched_invoice_id IS NOT NULL
          ORDER BY d.id
          LIMIT $2",
    )
    .bind(after_id)
    .bind(limit)
    .bind(INVOICE_PAID_EVENT)
    .fetch_all(pool)
    .await?;
    let mut outcome = ReconcileOutcome {
        last_id: after_id,
        ..ReconcileOutcome::default()
    };
    for (id, consistent) in rows {
        outcome.checked += 1;
        outcome.last_id = id;
        if !consistent {
            outcome.mismatches += 1;
            if outcome.mismatching_ids.len() < 20 {
                outcome.mismatching_ids.push(id);
            }
        }
    }
    Ok(outcome)
}

/// What one matching batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchOutcome {
    /// Successful deposits taken off the unprocessed list (credited or recorded as unmatched).
    pub processed: u64,
    /// Of those, deposits that paid an invoice.
    pub credited: u64,
}

/// Matches up to `batch_size` unprocessed, successful (status 1) deposits in one transaction.
///
/// A deposit pays the pending invoice with the same coin, network, address and numerically equal
/// publish_amount (the partial unique index guarantees at most one). For each match the invoice
/// becomes paid, and a payment, a ledger credit and an `invoice.paid` webhook row are written.
/// A second deposit for an already-paid invoice, or one matching nothing, is marked processed
/// without credit and reported in `system_events` for a human. Deposits with any other Binance
/// status stay unprocessed until Binance reports them successful.
pub async fn match_batch(pool: &PgPool, batch_size: i64) -> Result<MatchOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Every write below reads only `paid` (payment ids are generated up front), never a join of
    // one CTE against another: CTE row estimates are guesses, and a nested loop between two
    // 5,000-row CTEs costs seconds per batch.
    let (candidate_ids, credited): (Option<Vec<i64>>, i64) = sqlx::query_as(
        "WITH candidates AS (
             SELECT id, binance_deposit_id, tx_id, coin, network, address, amount
               FROM deposit_raw
              WHERE processed_at IS NULL AND binance_status = 1
              ORDER BY id
              LIMIT $1
                FOR UPDATE SKIP LOCKED
         ), paid AS (
             UPDATE invoices i
                SET status = 'paid', paid_at = now(), updated_at = now()
               FROM candidates c
              WHERE i.status = 'pending' AND i.coin = c.coin AND i.network = c.network
                AND i.address = c.address AND i.publish_amount = c.amount
          RETURNING i.id AS invoice_id, i.merchant_id, i.coin, i.network, i.address, i.base_amount,
                    i.is_smoke, i.paid_at, c.id AS deposit_id, c.binance_deposit_id, c.tx_id, c.amount,
                    gen_random_uuid() AS payment_id
         ), payment AS (
             INSERT INTO payments (id, invoice_id, deposit_id, merchant_id, coin, network, amount, tx_id)
             SELECT payment_id, invoice_id, deposit_id, merchant_id, coin, network, amount, tx_id FROM paid
         ), ledger AS (
             INSERT INTO ledger_entries (merchant_id, invoice_id, payment_id, entry_type, coin, change_amount, description)
             SELECT merchant_id, invoice_id, payment_id, 'credit', coin, amount,
                    'deposit ' || binance_deposit_id || ' tx ' || tx_id
               FROM paid
         ), hook AS (
             INSERT INTO webhook_queue (merchant_id, invoice_id, event_type, payload, is_smoke)
             SELECT merchant_id, invoice_id, $2, jsonb_build_object(
                        'type', $2::text,
                        'timestamp', to_char(paid_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        'data', jsonb_build_object(
                            'invoice_id', invoice_id,
                            'merchant_id', merchant_id,
                            'payment_id', payment_id,
                            'status', 'paid',
                            'coin', coin,
                            'network', network,
                            'address', address,
                            'amount', trim_scale(amount)::text,
                            'base_amount', trim_scale(base_amount)::text,
                            'tx_id', tx_id,
                            'binance_deposit_id', binance_deposit_id)),
                    is_smoke
               FROM paid
         ), marked AS (
             UPDATE deposit_raw d
                SET processed_at = now(), updated_at = now(), matched_invoice_id = p.invoice_id
               FROM paid p
              WHERE d.id = p.deposit_id
         )
         SELECT (SELECT array_agg(id) FROM candidates), (SELECT count(*) FROM paid)",
    )
    .bind(batch_size)
    .bind(INVOICE_PAID_EVENT)
    .fetch_one(&mut *tx)
    .await?;
    let candidate_ids = candidate_ids.unwrap_or_default();
    // Candidates still unprocessed now matched nothing: record them, uncredited, for a human.
    let unmatched = sqlx::query(
        "WITH marked AS (
             UPDATE deposit_raw
                SET processed_at = now(), updated_at = now()
              WHERE id = ANY($1) AND processed_at IS NULL
          RETURNING id, binance_deposit_id, tx_id, coin, network, address, amount
         )
         INSERT INTO system_events (source, kind, severity, message, details)
         SELECT 'poller', 'deposit.unmatched', 'warning',
                'successful deposit matched no pending invoice; it was recorded but not credited',
                jsonb_build_object('deposit_id', id, 'binance_deposit_id', binance_deposit_id,
                                   'tx_id', tx_id, 'coin', coin, 'network', network,
                                   'address', address, 'amount', trim_scale(amount)::text)
           FROM marked",
    )
    .bind(&candidate_ids)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    let credited = u64::try_from(credited).unwrap_or(0);
    if unmatched > 0 {
        tracing::warn!(
            unmatched,
            "successful deposits matched no pending invoice (see system_events)"
        );
    }
    Ok(MatchOutcome {
        processed: candidate_ids.len() as u64,
        credited,
    })
}

/// Sum of `allocation_collisions` over invoices created since the watermark and at least
/// `settle` ago, then advances the watermark (both in one transaction).
///
/// Each invoice is counted once across all poller replicas and restarts: the watermark lives in
/// `poller_checkpoint` (`invoice_collisions`). `created_at` is the creating transaction's start
/// time, so an invoice whose transaction is still open could later appear behind the watermark;
/// `settle` (seconds, far longer than `create_invoice` takes) leaves room for those to commit.
pub async fn count_new_collisions(pool: &PgPool, settle: Duration) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let watermark: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT last_insert_time FROM poller_checkpoint WHERE name = $1 FOR UPDATE",
    )
    .bind(COLLISIONS_CHECKPOINT)
    .fetch_optional(&mut *tx)
    .await?;
    let settle_us = i64::try_from(settle.as_micros()).unwrap_or(i64::MAX);
    let (sum, upper): (i64, DateTime<Utc>) = sqlx::query_as(
        "WITH bounds AS (SELECT now() - make_interval(secs => $2::float8 / 1000000) AS upper)
         SELECT coalesce(sum(i.allocation_collisions), 0)::int8, (SELECT upper FROM bounds)
           FROM invoices i, bounds
          WHERE ($1::timestamptz IS NULL OR i.created_at > $1) AND i.created_at <= bounds.upper",
    )
    .bind(watermark)
    .bind(settle_us)
    .fetch_one(&mut *tx)
    .await?;
    if watermark.is_none_or(|w| upper > w) {
        sqlx::query(
            "INSERT INTO poller_checkpoint (name, last_insert_time, last_success_at, updated_at)
             VALUES ($1, $2, now(), now())
             ON CONFLICT (name) DO UPDATE SET last_insert_time = EXCLUDED.last_insert_time,
                                              last_success_at = now(), updated_at = now()",
        )
        .bind(COLLISIONS_CHECKPOINT)
        .bind(upper)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(u64::try_from(sum).unwrap_or(0))
}
