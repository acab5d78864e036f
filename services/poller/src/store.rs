//! The poller's SQL: idempotent raw-deposit upsert with quarantine of refused rows, checkpoints
//! and the persisted back-off, the set-based matching step (invoice→paid, payment, ledger
//! credit, webhook_queue row in one transaction per batch; every other outcome recorded with its
//! reason), the deposit and invoice lifecycles (re-checks, stuck reports, expiry), reconciliation
//! and the allocation-collision watermark.

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

/// Binance deposit statuses that end a deposit's life without a credit (2 rejected, 7 wrong
/// deposit). 1 (success) is the only crediting status; every other status (0 pending, 6
/// credited but cannot withdraw, 8 waiting user confirm, and any status Binance adds) is not
/// final and is re-checked until it becomes final.
pub const FAILED_FINAL_STATUSES: [i32; 2] = [2, 7];
/// The one status that credits.
pub const SUCCESS_STATUS: i32 = 1;

/// What storing a fetched page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// Rows inserted or whose status changed.
    pub stored: u64,
    /// Rows the database refused, now in `deposit_quarantine` (first sighting only).
    pub quarantined: u64,
}

/// Whether an error is about the data of one row (a check, a type, a constraint, a raised
/// exception) rather than about the database being unreachable: only such errors justify
/// retrying row by row and quarantining the rows that still fail.
pub fn is_row_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("22") || code.starts_with("23") || code == "P0001"
        }),
        _ => false,
    }
}

/// Inserts new deposits; for ones already stored and not yet processed, refreshes the Binance
/// status (pending → success) and raw JSON. Processed rows are never touched, so re-fetching
/// the same history is harmless. A row the database refuses is quarantined and the rest are
/// stored anyway: one bad row never blocks the others.
pub async fn upsert_deposits(
    pool: &PgPool,
    deposits: &[Deposit],
) -> Result<UpsertOutcome, sqlx::Error> {
    match upsert_many(pool, deposits).await {
        Ok(stored) => Ok(UpsertOutcome {
            stored,
            quarantined: 0,
        }),
        Err(error) if is_row_error(&error) && deposits.len() > 1 => {
            tracing::warn!(%error, rows = deposits.len(), "a deposit page could not be stored at once; storing row by row");
            let mut outcome = UpsertOutcome::default();
            for deposit in deposits {
                match upsert_many(pool, std::slice::from_ref(deposit)).await {
                    Ok(stored) => outcome.stored += stored,
                    Err(error) if is_row_error(&error) => {
                        if quarantine_row(
                            pool,
                            &deposit.binance_id,
                            &error.to_string(),
                            &deposit.raw,
                        )
                        .await?
                        {
                            outcome.quarantined += 1;
                        }
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(outcome)
        }
        Err(error) if is_row_error(&error) && deposits.len() == 1 => {
            let deposit = &deposits[0];
            let quarantined =
                quarantine_row(pool, &deposit.binance_id, &error.to_string(), &deposit.raw).await?;
            Ok(UpsertOutcome {
                stored: 0,
                quarantined: u64::from(quarantined),
            })
        }
        Err(error) => Err(error),
    }
}

async fn upsert_many(pool: &PgPool, deposits: &[Deposit]) -> Result<u64, sqlx::Error> {
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
    // A page can name one deposit twice (offset paging while rows arrive): keep one.
    let result = sqlx::query(
        "INSERT INTO deposit_raw (binance_deposit_id, tx_id, coin, network, address, address_tag, amount,
                                  binance_status, insert_time, raw)
         SELECT DISTINCT ON (id) * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::numeric[], $8::int4[], $9::timestamptz[], $10::jsonb[])
                AS page(id, tx, coin, network, address, tag, amount, status, inserted, raw)
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

/// The quarantine key of a row Binance sent: its id, or a digest of the row when it has none.
pub fn quarantine_key(binance_id: &str, raw: &serde_json::Value) -> String {
    if binance_id.is_empty() {
        use sha2::Digest;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(raw.to_string().as_bytes()))
        )
    } else {
        binance_id.to_owned()
    }
}

/// Keeps a row Binance sent that cannot be stored or parsed, once per row: the first sighting
/// writes a `deposit.quarantined` system event and returns true; later sightings (the row comes
/// back with every overlapping poll) only count. The row's text is kept as JSON text so NUL
/// characters and other unstorable values survive for the operator.
pub async fn quarantine_row(
    pool: &PgPool,
    binance_id: &str,
    reason: &str,
    raw: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let key = quarantine_key(binance_id, raw);
    // jsonb refuses U+0000: store the row as a JSON string of its escaped text instead.
    let stored = serde_json::Value::String(raw.to_string().replace('\0', "\\u0000"));
    let reason = reason.replace('\0', "");
    let key = key.replace('\0', "\\u0000");
    let inserted: bool = sqlx::query_scalar(
        "WITH kept AS (
             INSERT INTO deposit_quarantine (quarantine_key, reason, raw)
             VALUES ($1, $2, $3)
             ON CONFLICT (quarantine_key) DO UPDATE
                SET last_seen_at = now(), seen_count = deposit_quarantine.seen_count + 1
             RETURNING (xmax = 0) AS inserted
         ), event AS (
             INSERT INTO system_events (source, kind, severity, message, details)
             SELECT 'poller', 'deposit.quarantined', 'error',
                    'a deposit Binance sent cannot be stored; it is kept in deposit_quarantine for an operator',
                    jsonb_build_object('quarantine_key', $1::text, 'reason', $2::text)
               FROM kept WHERE inserted
         )
         SELECT inserted FROM kept",
    )
    .bind(&key)
    .bind(&reason)
    .bind(sqlx::types::Json(stored))
    .fetch_one(pool)
    .await?;
    if inserted {
        tracing::error!(quarantine_key = %key, %reason, "quarantined a deposit Binance sent (see deposit_quarantine)");
    }
    Ok(inserted)
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

/// Saves the end of a fully fetched window. The checkpoint only moves forward, except that a
/// checkpoint lying beyond `server_now` (saved by a skewed clock) is replaced: a checkpoint can
/// never hold a time Binance has not reached yet.
pub async fn save_checkpoint(
    executor: impl sqlx::PgExecutor<'_>,
    name: &str,
    at: DateTime<Utc>,
    server_now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let at = at.min(server_now);
    sqlx::query(
        "INSERT INTO poller_checkpoint (name, last_insert_time, last_success_at, updated_at)
         VALUES ($1, $2, now(), now())
         ON CONFLICT (name) DO UPDATE
            SET last_insert_time = CASE
                    WHEN poller_checkpoint.last_insert_time > $3 THEN EXCLUDED.last_insert_time
                    ELSE GREATEST(poller_checkpoint.last_insert_time, EXCLUDED.last_insert_time)
                END,
                last_success_at = now(), updated_at = now()",
    )
    .bind(name)
    .bind(at)
    .bind(server_now)
    .execute(executor)
    .await?;
    Ok(())
}

/// Writes a poller `system_events` row saying how far back the deposit history is read when
/// that is not simply "from the checkpoint": `kind` is `poll.history_start` (no checkpoint yet:
/// nothing inserted before `from` is ever read) or `poll.checkpoint_ahead` (the stored
/// checkpoint was ahead of Binance's clock and was not trusted).
pub async fn record_poll_reach(
    executor: impl sqlx::PgExecutor<'_>,
    kind: &str,
    severity: &str,
    message: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO system_events (source, kind, severity, message, details)
         VALUES ('poller', $1, $2, $3, $4)",
    )
    .bind(kind)
    .bind(severity)
    .bind(message)
    .bind(sqlx::types::Json(details))
    .execute(executor)
    .await?;
    Ok(())
}

/// The persisted Binance back-off, if it still runs (by the database's clock).
pub async fn load_backoff(pool: &PgPool) -> Result<Option<Duration>, sqlx::Error> {
    let left: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM until - now())::float8 FROM binance_backoff WHERE until > now()",
    )
    .fetch_optional(pool)
    .await?;
    Ok(left.map(|secs| Duration::from_secs_f64(secs.max(0.0))))
}

/// Persists a 418/429 back-off so a restarted poller honours it too. A longer back-off already
/// stored is kept.
pub async fn save_backoff(
    pool: &PgPool,
    retry_after: Duration,
    status: u16,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO binance_backoff (only_row, until, http_status, updated_at)
         VALUES (true, now() + make_interval(secs => $1), $2, now())
         ON CONFLICT (only_row) DO UPDATE
            SET until = GREATEST(binance_backoff.until, EXCLUDED.until),
                http_status = EXCLUDED.http_status, updated_at = now()",
    )
    .bind(retry_after.as_secs_f64())
    .bind(i32::from(status))
    .execute(pool)
    .await?;
    Ok(())
}

/// What one reconciliation pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileOutcome {
    /// Processed deposits examined (credited or not).
    pub checked: u64,
    /// Deposits of `checked` whose records do not add up.
    pub mismatches: u64,
    /// Where the next pass starts: the last (`processed_at`, id) examined.
    pub through: ReconcileMark,
    /// The ids of the mismatching deposits (at most the first 20), for the log.
    pub mismatching_ids: Vec<i64>,
}

/// A position in the order deposits were processed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileMark {
    pub processed_at: Option<DateTime<Utc>>,
    pub id: i64,
}

/// Reconciles up to `limit` processed deposits after `after`, in the order they were processed.
///
/// A credited deposit must be a Binance success inside its invoice's life (created before the
/// deposit's `insertTime`, not expired at it) and have exactly one payment for its invoice with
/// the same amount, a ledger credit of that amount, a paid invoice and an `invoice.paid` webhook
/// row. Any other outcome must have no payment and its `deposit.<outcome>` system event. The
/// poller writes each of these in one transaction, so a mismatch means records were changed
/// behind its back.
pub async fn reconcile_after(
    pool: &PgPool,
    after: ReconcileMark,
    limit: i64,
) -> Result<ReconcileOutcome, sqlx::Error> {
    let rows: Vec<(i64, DateTime<Utc>, bool)> = sqlx::query_as(
        "SELECT d.id, d.processed_at,
                CASE WHEN d.outcome = 'credited' THEN
                    (p.id IS NOT NULL
                     AND d.binance_status = $4
                     AND p.invoice_id = d.matched_invoice_id
                     AND p.amount = d.amount
                     AND EXISTS (SELECT 1 FROM ledger_entries l
                                  WHERE l.payment_id = p.id AND l.entry_type = 'credit'
                                    AND l.change_amount = p.amount)
                     AND EXISTS (SELECT 1 FROM invoices i
                                  WHERE i.id = d.matched_invoice_id AND i.status = 'paid'
                                    AND date_trunc('milliseconds', i.created_at) <= d.insert_time
                                    AND d.insert_time <= i.expires_at)
                     AND EXISTS (SELECT 1 FROM webhook_queue w
                                  WHERE w.invoice_id = d.matched_invoice_id AND w.event_type = $3))
                ELSE
                    (p.id IS NULL
                     AND EXISTS (SELECT 1 FROM system_events e
                                  WHERE e.source = 'poller' AND e.details ? 'deposit_id'
                                    AND (e.details ->> 'deposit_id')::bigint = d.id
                                    AND e.kind = 'deposit.' || d.outcome))
                END AS consistent
           FROM deposit_raw d
           LEFT JOIN payments p ON p.deposit_id = d.id
          WHERE d.processed_at IS NOT NULL
            AND ($1::timestamptz IS NULL OR (d.processed_at, d.id) > ($1, $2))
          ORDER BY d.processed_at, d.id
          LIMIT $5",
    )
    .bind(after.processed_at)
    .bind(after.id)
    .bind(INVOICE_PAID_EVENT)
    .bind(SUCCESS_STATUS)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut outcome = ReconcileOutcome {
        through: after,
        ..ReconcileOutcome::default()
    };
    for (id, processed_at, consistent) in rows {
        outcome.checked += 1;
        outcome.through = ReconcileMark {
            processed_at: Some(processed_at),
            id,
        };
        if !consistent {
            outcome.mismatches += 1;
            if outcome.mismatching_ids.len() < 20 {
                outcome.mismatching_ids.push(id);
            }
        }
    }
    Ok(outcome)
}

/// Why a deposit taken off the unprocessed list was not credited, or that it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DepositOutcome {
    /// Paid its invoice.
    Credited,
    /// Its invoice was already paid (by an earlier deposit): the customer paid twice.
    Duplicate,
    /// Arrived after its invoice expired.
    Late,
    /// Its amount matches only an invoice created after the deposit: never credited.
    BeforeInvoice,
    /// Its invoice was cancelled.
    CancelledInvoice,
    /// Matches no invoice.
    Unmatched,
    /// Binance finalised it as rejected (2) or wrong deposit (7).
    Rejected,
    /// Could not be matched without an error; kept for an operator.
    Quarantined,
}

impl DepositOutcome {
    pub const ALL: [DepositOutcome; 8] = [
        DepositOutcome::Credited,
        DepositOutcome::Duplicate,
        DepositOutcome::Late,
        DepositOutcome::BeforeInvoice,
        DepositOutcome::CancelledInvoice,
        DepositOutcome::Unmatched,
        DepositOutcome::Rejected,
        DepositOutcome::Quarantined,
    ];

    /// The `deposit_raw.outcome` value (also the metric label and, after `deposit.`, the
    /// system event kind).
    pub fn as_str(self) -> &'static str {
        match self {
            DepositOutcome::Credited => "credited",
            DepositOutcome::Duplicate => "duplicate",
            DepositOutcome::Late => "late",
            DepositOutcome::BeforeInvoice => "before_invoice",
            DepositOutcome::CancelledInvoice => "cancelled_invoice",
            DepositOutcome::Unmatched => "unmatched",
            DepositOutcome::Rejected => "rejected",
            DepositOutcome::Quarantined => "quarantined",
        }
    }

    pub fn parse(text: &str) -> Option<DepositOutcome> {
        DepositOutcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// What one matching batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchOutcome {
    /// Deposits taken off the unprocessed list (credited or recorded with their reason).
    pub processed: u64,
    /// Of those, deposits that paid an invoice.
    pub credited: u64,
    /// How many ended with each outcome other than `credited`.
    pub recorded: Vec<(DepositOutcome, u64)>,
}

/// Matches up to `batch_size` unprocessed successful (status 1) deposits in one transaction,
/// or only deposit `only` when given.
///
/// A deposit pays the newest invoice with the same coin, network, address and numerically equal
/// publish_amount that was created before the deposit's `insertTime` (compared at Binance's
/// millisecond resolution), when that invoice is
/// pending or expired and the deposit's `insertTime` is not after its `expires_at` (a deposit
/// Binance saw in time is credited even when it became final after the invoice expired). For
/// each credit the invoice becomes paid, and a payment, a ledger credit and an `invoice.paid`
/// webhook row are written. Two deposits for one invoice in a batch: the earlier one pays.
/// Every other candidate is marked processed with its reason ([`DepositOutcome`]) and a
/// `deposit.<reason>` system event for a human; nothing is credited to another invoice.
pub async fn match_batch(
    pool: &PgPool,
    batch_size: i64,
    only: Option<i64>,
) -> Result<MatchOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Every write below reads only `paid` (payment ids are generated up front), never a join of
    // one CTE against another: CTE row estimates are guesses, and a nested loop between two
    // 5,000-row CTEs costs seconds per batch.
    let (candidate_ids, credited): (Option<Vec<i64>>, i64) = sqlx::query_as(
        "WITH candidates AS (
             SELECT id, binance_deposit_id, tx_id, coin, network, address, amount, insert_time
               FROM deposit_raw
              WHERE processed_at IS NULL AND binance_status = $3
                AND ($4::bigint IS NULL OR id = $4)
              ORDER BY id
              LIMIT $1
                FOR UPDATE SKIP LOCKED
         ), chosen AS (
             SELECT DISTINCT ON (inv.id) c.id AS deposit_id, inv.id AS invoice_id,
                    c.binance_deposit_id, c.tx_id, c.amount
               FROM candidates c
               JOIN LATERAL (
                    SELECT i.id, i.status, i.expires_at FROM invoices i
                     WHERE i.network = c.network AND i.address = c.address
                       AND i.publish_amount = c.amount AND i.coin = c.coin
                       AND date_trunc('milliseconds', i.created_at) <= c.insert_time
                     ORDER BY i.created_at DESC
                     LIMIT 1) inv ON true
              WHERE inv.status IN ('pending', 'expired') AND c.insert_time <= inv.expires_at
              ORDER BY inv.id, c.insert_time, c.id
         ), paid AS (
             UPDATE invoices i
                SET status = 'paid', paid_at = now(), updated_at = now()
               FROM chosen ch
              WHERE i.id = ch.invoice_id AND i.status IN ('pending', 'expired')
          RETURNING i.id AS invoice_id, i.merchant_id, i.coin, i.network, i.address, i.base_amount,
                    i.is_smoke, i.paid_at, ch.deposit_id, ch.binance_deposit_id, ch.tx_id, ch.amount,
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
                SET processed_at = now(), updated_at = now(), matched_invoice_id = p.invoice_id,
                    outcome = 'credited'
               FROM paid p
              WHERE d.id = p.deposit_id
         )
         SELECT (SELECT array_agg(id) FROM candidates), (SELECT count(*) FROM paid)",
    )
    .bind(batch_size)
    .bind(INVOICE_PAID_EVENT)
    .bind(SUCCESS_STATUS)
    .bind(only)
    .fetch_one(&mut *tx)
    .await?;
    let candidate_ids = candidate_ids.unwrap_or_default();
    // Candidates still unprocessed were not credited: record each with its reason, for a human.
    let recorded: Vec<(String, i64)> = sqlx::query_as(
        "WITH remaining AS (
             SELECT d.id, d.binance_deposit_id, d.tx_id, d.coin, d.network, d.address, d.amount,
                    d.insert_time, inv.id AS invoice_id, inv.status AS invoice_status,
                    inv.expires_at AS invoice_expires_at,
                    EXISTS (SELECT 1 FROM invoices later
                             WHERE later.network = d.network AND later.address = d.address
                               AND later.publish_amount = d.amount AND later.coin = d.coin
                               AND date_trunc('milliseconds', later.created_at) > d.insert_time) AS invoice_after
               FROM deposit_raw d
               LEFT JOIN LATERAL (
                    SELECT i.id, i.status, i.expires_at FROM invoices i
                     WHERE i.network = d.network AND i.address = d.address
                       AND i.publish_amount = d.amount AND i.coin = d.coin
                       AND date_trunc('milliseconds', i.created_at) <= d.insert_time
                     ORDER BY i.created_at DESC
                     LIMIT 1) inv ON true
              WHERE d.id = ANY($1) AND d.processed_at IS NULL
         ), classified AS (
             SELECT r.*, CASE
                        WHEN r.invoice_id IS NULL AND r.invoice_after THEN 'before_invoice'
                        WHEN r.invoice_id IS NULL THEN 'unmatched'
                        WHEN r.invoice_status = 'paid' THEN 'duplicate'
                        WHEN r.invoice_status = 'cancelled' THEN 'cancelled_invoice'
                        WHEN r.insert_time > r.invoice_expires_at THEN 'late'
                        ELSE 'unmatched'
                    END AS outcome
               FROM remaining r
         ), marked AS (
             UPDATE deposit_raw d
                SET processed_at = now(), updated_at = now(), outcome = c.outcome,
                    related_invoice_id = c.invoice_id
               FROM classified c
              WHERE d.id = c.id
          RETURNING c.*
         ), events AS (
             INSERT INTO system_events (source, kind, severity, message, details)
             SELECT 'poller', 'deposit.' || outcome,
                    CASE outcome WHEN 'unmatched' THEN 'warning' ELSE 'error' END,
                    CASE outcome
                        WHEN 'duplicate' THEN 'successful deposit for an invoice that is already paid; recorded, not credited (refund or resolve by hand)'
                        WHEN 'late' THEN 'successful deposit arrived after its invoice expired; recorded as a late payment, not credited'
                        WHEN 'before_invoice' THEN 'successful deposit predates every invoice with its amount; recorded, not credited'
                        WHEN 'cancelled_invoice' THEN 'successful deposit for a cancelled invoice; recorded, not credited'
                        ELSE 'successful deposit matched no invoice; it was recorded but not credited'
                    END,
                    jsonb_build_object('deposit_id', id, 'binance_deposit_id', binance_deposit_id,
                                       'tx_id', tx_id, 'coin', coin, 'network', network,
                                       'address', address, 'amount', trim_scale(amount)::text,
                                       'invoice_id', invoice_id)
               FROM marked
          RETURNING kind
         )
         SELECT substr(kind, length('deposit.') + 1), count(*) FROM events GROUP BY kind",
    )
    .bind(&candidate_ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let credited = u64::try_from(credited).unwrap_or(0);
    let mut outcome = MatchOutcome {
        processed: candidate_ids.len() as u64,
        credited,
        recorded: Vec::new(),
    };
    for (kind, count) in recorded {
        if let Some(reason) = DepositOutcome::parse(&kind) {
            tracing::warn!(
                outcome = reason.as_str(),
                count,
                "successful deposits recorded without a credit (see system_events)"
            );
            outcome
                .recorded
                .push((reason, u64::try_from(count).unwrap_or(0)));
        }
    }
    Ok(outcome)
}

/// The ids the next batch would take (for matching row by row after a batch failed).
pub async fn next_candidates(pool: &PgPool, batch_size: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM deposit_raw WHERE processed_at IS NULL AND binance_status = $2
          ORDER BY id LIMIT $1",
    )
    .bind(batch_size)
    .bind(SUCCESS_STATUS)
    .fetch_all(pool)
    .await
}

/// Takes a deposit that cannot be matched without an error off the unprocessed list, uncredited,
/// with the error in a `deposit.quarantined` system event. Returns whether it was still
/// unprocessed.
pub async fn quarantine_deposit(pool: &PgPool, id: i64, reason: &str) -> Result<bool, sqlx::Error> {
    let marked: Option<i64> = sqlx::query_scalar(
        "WITH marked AS (
             UPDATE deposit_raw SET processed_at = now(), updated_at = now(), outcome = 'quarantined'
              WHERE id = $1 AND processed_at IS NULL
          RETURNING id, binance_deposit_id, tx_id, coin, network, address, amount
         ), event AS (
             INSERT INTO system_events (source, kind, severity, message, details)
             SELECT 'poller', 'deposit.quarantined', 'error',
                    'a successful deposit could not be matched without an error; quarantined, not credited',
                    jsonb_build_object('deposit_id', id, 'binance_deposit_id', binance_deposit_id,
                                       'tx_id', tx_id, 'coin', coin, 'network', network,
                                       'address', address, 'amount', trim_scale(amount)::text,
                                       'reason', $2::text)
               FROM marked
         )
         SELECT id FROM marked",
    )
    .bind(id)
    .bind(reason)
    .fetch_optional(pool)
    .await?;
    Ok(marked.is_some())
}

/// Marks deposits Binance finalised without success (rejected, wrong deposit) processed, with a
/// `deposit.rejected` system event each. Returns how many.
pub async fn record_failed_deposits(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar(
        "WITH marked AS (
             UPDATE deposit_raw SET processed_at = now(), updated_at = now(), outcome = 'rejected'
              WHERE processed_at IS NULL AND binance_status = ANY($1)
          RETURNING id, binance_deposit_id, tx_id, coin, network, address, amount, binance_status
         ), events AS (
             INSERT INTO system_events (source, kind, severity, message, details)
             SELECT 'poller', 'deposit.rejected', 'warning',
                    'Binance finalised this deposit without success (2 rejected, 7 wrong deposit); not credited',
                    jsonb_build_object('deposit_id', id, 'binance_deposit_id', binance_deposit_id,
                                       'tx_id', tx_id, 'coin', coin, 'network', network,
                                       'address', address, 'amount', trim_scale(amount)::text,
                                       'binance_status', binance_status)
               FROM marked
          RETURNING 1
         )
         SELECT count(*) FROM events",
    )
    .bind(FAILED_FINAL_STATUSES.to_vec())
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Unresolved deposits (stored, not processed, not a success yet) inserted before `before`,
/// the least recently re-checked first: `(id, insertTime)`.
pub async fn unresolved_before(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(i64, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, insert_time FROM deposit_raw
          WHERE processed_at IS NULL AND binance_status <> 1 AND insert_time < $1
          ORDER BY rechecked_at NULLS FIRST, insert_time
          LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records that these deposits' windows were fetched again.
pub async fn mark_rechecked(pool: &PgPool, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE deposit_raw SET rechecked_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many deposits are unresolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unresolved {
    /// Stored, unprocessed, not a success yet.
    pub total: u64,
    /// Of those, inserted before the stuck limit.
    pub stuck: u64,
    /// Of those, reported by this call (once per deposit).
    pub newly_reported: u64,
}

/// Counts unresolved deposits and reports those inserted before `older_than` as stuck (a
/// `deposit.stuck` system event, once per deposit).
pub async fn report_stuck(
    pool: &PgPool,
    older_than: DateTime<Utc>,
) -> Result<Unresolved, sqlx::Error> {
    let (total, stuck, reported): (i64, i64, i64) = sqlx::query_as(
        "WITH unresolved AS (
             SELECT id, insert_time FROM deposit_raw
              WHERE processed_at IS NULL AND binance_status <> 1
         ), stuck AS (
             SELECT id FROM unresolved WHERE insert_time < $1
         ), reported AS (
             UPDATE deposit_raw d SET stuck_reported_at = now()
               FROM stuck s
              WHERE d.id = s.id AND d.stuck_reported_at IS NULL
          RETURNING d.id, d.binance_deposit_id, d.tx_id, d.coin, d.network, d.address, d.amount,
                    d.binance_status, d.insert_time
         ), events AS (
             INSERT INTO system_events (source, kind, severity, message, details)
             SELECT 'poller', 'deposit.stuck', 'error',
                    'Binance has not finalised this deposit for longer than DEPOSIT_STUCK_AFTER_SECS; it is still re-checked',
                    jsonb_build_object('deposit_id', id, 'binance_deposit_id', binance_deposit_id,
                                       'tx_id', tx_id, 'coin', coin, 'network', network,
                                       'address', address, 'amount', trim_scale(amount)::text,
                                       'binance_status', binance_status,
                                       'insert_time', insert_time)
               FROM reported
          RETURNING 1
         )
         SELECT (SELECT count(*) FROM unresolved), (SELECT count(*) FROM stuck),
                (SELECT count(*) FROM events)",
    )
    .bind(older_than)
    .fetch_one(pool)
    .await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Unresolved {
        total: count(total),
        stuck: count(stuck),
        newly_reported: count(reported),
    })
}

/// Pending invoices whose `expires_at` is before `as_of` (Binance's clock: the same clock
/// deposits' `insertTime` is compared with) become `expired`, at most `limit` per call. Their
/// publish_amount stays held by `create_invoice` for its hold period. Returns how many.
pub async fn expire_invoices(
    pool: &PgPool,
    as_of: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE invoices SET status = 'expired', updated_at = now()
          WHERE id IN (SELECT id FROM invoices
                        WHERE status = 'pending' AND expires_at < $1
                        ORDER BY expires_at LIMIT $2
                          FOR UPDATE SKIP LOCKED)",
    )
    .bind(as_of)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
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
