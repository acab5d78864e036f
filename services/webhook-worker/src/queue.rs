//! The `webhook_queue` table as a lease-based work queue. All SQL of the worker lives here.
//!
//! Claim: one statement picks due rows with `FOR UPDATE SKIP LOCKED`, marks them `delivering`
//! under a lease owner that is unique to that one claim, **charges the attempt** (`attempts + 1`)
//! and commits, so no lock is held while merchants are called and an attempt is counted even if
//! the process dies while sending it. The lease also moves `next_attempt_at` to its expiry: a row
//! whose worker died becomes due again by the same index condition as a fresh one.
//!
//! A row that is still `delivering` when it is claimed again was left behind by a claim that never
//! completed (the process was killed, or the lease ran out). Such a *suspect* is claimed on its
//! own, in a batch of one, so a row whose delivery kills the process takes no other row down with
//! it; a suspect whose charged attempts already reached `max_attempts` comes back `exhausted` and
//! is dead-lettered without another delivery.
//!
//! Complete: one `UPDATE … FROM unnest(…)` per batch, written only while the claim's owner still
//! holds an unexpired lease, so a claim whose rows were taken over (or simply expired) writes
//! nothing. Every row it turns `dead` also gets a `system_events` row.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A claimed row with what is needed to deliver it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub merchant_id: Uuid,
    /// Attempts including the one this claim charged (unless `exhausted`).
    pub attempts: i32,
    pub max_attempts: i32,
    /// The row's previous claim never completed and had already used the last attempt: it is
    /// dead-lettered without being sent again (nothing was charged for this claim).
    pub exhausted: bool,
    /// The row's previous claim never completed (process killed, lease expired).
    pub suspect: bool,
    /// The exact bytes to send: the Standard Webhooks envelope `{type, timestamp, data}`: the
    /// payload itself when the producer already wrote an envelope (the poller does), else one
    /// built from `event_type`, `created_at` and the payload.
    pub body: String,
    pub webhook_url: String,
    pub webhook_secret_ciphertext: Vec<u8>,
    pub webhook_secret_nonce: Vec<u8>,
    pub webhook_enabled: bool,
    pub merchant_updated_at: DateTime<Utc>,
}

/// The state a row leaves the worker in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Pending,
    Delivered,
    Dead,
    Disabled,
}

impl FinalStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Disabled => "disabled",
        }
    }
}

/// The result of processing one claimed row.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: Uuid,
    pub status: FinalStatus,
    /// Whether an HTTP attempt was made (then `last_error` and `last_status_code` are its own).
    pub attempted: bool,
    /// Gives back the attempt charged at claim: the row was put back without being sent.
    pub refund: bool,
    /// When the row is due again (only meaningful for `Pending`).
    pub retry_in: Duration,
    pub last_error: Option<String>,
    pub status_code: Option<i32>,
}

impl Completion {
    /// Puts a row back unsent (its charged attempt refunded), due again after `retry_in`.
    pub fn release(id: Uuid, retry_in: Duration) -> Self {
        Self {
            id,
            status: FinalStatus::Pending,
            attempted: false,
            refund: true,
            retry_in,
            last_error: None,
            status_code: None,
        }
    }
}

/// What a completion wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows whose results were written (the lease was still this claim's).
    pub rows: u64,
    /// Of those, rows now `dead` (each with a `system_events` row).
    pub dead: u64,
}

/// Claims up to `limit` due rows for `owner` (unique to this claim) for `lease`, charging each
/// an attempt. When any of the due rows is a suspect, only the oldest suspect is claimed.
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    limit: i64,
    lease: Duration,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as::<_, Claimed>(
        r#"
        WITH due AS (
            SELECT id, next_attempt_at,
                   status = 'delivering' AS suspect,
                   status = 'delivering' AND attempts >= max_attempts AS exhausted
            FROM webhook_queue
            WHERE status IN ('pending', 'delivering') AND next_attempt_at <= now()
            ORDER BY next_attempt_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ),
        picked AS (
            SELECT id, suspect, exhausted FROM due
            WHERE NOT EXISTS (SELECT 1 FROM due WHERE suspect)
            UNION ALL
            (SELECT id, suspect, exhausted FROM due WHERE suspect ORDER BY next_attempt_at LIMIT 1)
        )
        UPDATE webhook_queue q
        SET status = 'delivering',
            attempts = q.attempts + CASE WHEN p.exhausted THEN 0 ELSE 1 END,
            lease_owner = $2,
            lease_expires_at = now() + make_interval(secs => $3),
            next_attempt_at = now() + make_interval(secs => $3)
        FROM picked p, merchants m
        WHERE q.id = p.id AND m.id = q.merchant_id
        RETURNING q.id, q.merchant_id, q.attempts, q.max_attempts, p.exhausted, p.suspect,
            CASE WHEN q.payload ?& array['type', 'timestamp', 'data'] THEN q.payload::text
                 ELSE jsonb_build_object(
                     'type', q.event_type,
                     'timestamp', to_char(q.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                     'data', q.payload
                 )::text
            END AS body,
            m.webhook_url, m.webhook_secret_ciphertext, m.webhook_secret_nonce, m.webhook_enabled,
            m.updated_at AS merchant_updated_at
        "#,
    )
    .bind(limit)
    .bind(owner)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Writes the results of a batch in one statement, for the rows `owner` still holds under an
/// unexpired lease (checked against the database clock at the time of the write). Rows taken
/// over by another claim, or whose lease ran out, are left alone.
pub async fn complete(
    pool: &PgPool,
    owner: &str,
    completions: &[Completion],
) -> sqlx::Result<Written> {
    if completions.is_empty() {
        return Ok(Written::default());
    }
    let mut ids = Vec::with_capacity(completions.len());
    let mut statuses = Vec::with_capacity(completions.len());
    let mut attempted = Vec::with_capacity(completions.len());
    let mut refund = Vec::with_capacity(completions.len());
    let mut retry_secs = Vec::with_capacity(completions.len());
    let mut errors = Vec::with_capacity(completions.len());
    let mut codes = Vec::with_capacity(completions.len());
    for completion in completions {
        ids.push(completion.id);
        statuses.push(completion.status.as_str());
        attempted.push(completion.attempted);
        refund.push(completion.refund);
        retry_secs.push(completion.retry_in.as_secs_f64());
        errors.push(completion.last_error.clone());
        codes.push(completion.status_code);
    }
    let (rows, dead): (i64, i64) = sqlx::query_as(
        r#"
        WITH done AS (
            UPDATE webhook_queue q
            SET status = u.status,
                attempts = CASE WHEN u.refund THEN greatest(q.attempts - 1, 0) ELSE q.attempts END,
                next_attempt_at = CASE WHEN u.status = 'pending'
                                       THEN now() + make_interval(secs => u.retry_secs)
                                       ELSE q.next_attempt_at END,
                last_error = CASE WHEN u.attempted OR u.last_error IS NOT NULL THEN u.last_error ELSE q.last_error END,
                last_status_code = CASE WHEN u.attempted THEN u.status_code ELSE q.last_status_code END,
                delivered_at = CASE WHEN u.status = 'delivered' THEN now() ELSE q.delivered_at END,
                lease_owner = NULL,
                lease_expires_at = NULL
            FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::bool[], $5::float8[], $6::text[], $7::int4[])
                 AS u(id, status, attempted, refund, retry_secs, last_error, status_code)
            WHERE q.id = u.id AND q.status = 'delivering' AND q.lease_owner = $8
              AND q.lease_expires_at > clock_timestamp()
            RETURNING q.id, q.merchant_id, q.invoice_id, q.event_type, q.status, q.attempts,
                      q.max_attempts, q.last_error, q.last_status_code
        ),
        dead_letters AS (
            INSERT INTO system_events (source, kind, severity, message, details)
            SELECT 'webhook-worker', 'webhook_dead_lettered', 'error',
                   format('webhook %s (%s) is dead after %s of %s attempts: %s',
                          id, event_type, attempts, max_attempts, coalesce(last_error, 'no error recorded')),
                   jsonb_build_object('webhook_id', id, 'merchant_id', merchant_id,
                                      'invoice_id', invoice_id, 'event_type', event_type,
                                      'attempts', attempts, 'max_attempts', max_attempts,
                                      'last_error', last_error, 'last_status_code', last_status_code)
            FROM done WHERE status = 'dead'
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM dead_letters)
        "#,
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&attempted)
    .bind(&refund)
    .bind(&retry_secs)
    .bind(&errors)
    .bind(&codes)
    .bind(owner)
    .fetch_one(pool)
    .await?;
    Ok(Written {
        rows: u64::try_from(rows).unwrap_or(0),
        dead: u64::try_from(dead).unwrap_or(0),
    })
}

/// Disables a merchant's webhooks after a 410: the merchant row, every row waiting for it (rows
/// leased by live workers are left to them), and a system event for operators.
pub async fn disable_merchant(pool: &PgPool, merchant_id: Uuid, reason: &str) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE merchants SET webhook_enabled = false, webhook_disabled_reason = $2, updated_at = now()
         WHERE id = $1 AND webhook_enabled",
    )
    .bind(merchant_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let rows = sqlx::query(
        "UPDATE webhook_queue SET status = 'disabled', last_error = $2, lease_owner = NULL, lease_expires_at = NULL
         WHERE merchant_id = $1
           AND (status = 'pending' OR (status = 'delivering' AND lease_expires_at < now()))",
    )
    .bind(merchant_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed > 0 {
        sqlx::query(
            "INSERT INTO system_events (source, kind, severity, message, details)
             VALUES ('webhook-worker', 'merchant_webhook_disabled', 'warning', $2,
                     jsonb_build_object('merchant_id', $1::uuid, 'queued_rows_disabled', $3::bigint))",
        )
        .bind(merchant_id)
        .bind(reason)
        .bind(i64::try_from(rows).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows)
}

/// Rows waiting to be delivered or being delivered.
pub async fn depth(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM webhook_queue WHERE status IN ('pending', 'delivering')",
    )
    .fetch_one(pool)
    .await
}
