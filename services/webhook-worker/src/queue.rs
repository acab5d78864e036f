//! The `webhook_queue` table as a lease-based work queue. All SQL of the worker lives here.
//!
//! Claim: one statement picks due rows with `FOR UPDATE SKIP LOCKED` and marks them
//! `delivering` under this worker's lease, then commits, so no lock is held while merchants are
//! called. The lease also moves `next_attempt_at` to its expiry: a row whose worker died becomes
//! due again by the same index condition as a fresh one. Complete: one `UPDATE … FROM unnest(…)`
//! per batch, guarded by the lease owner so a worker whose lease was taken over writes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A claimed row with what is needed to deliver it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub attempts: i32,
    pub max_attempts: i32,
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
    /// Whether an HTTP attempt was made (counts towards `attempts`).
    pub attempted: bool,
    /// When the row is due again (only meaningful for `Pending`).
    pub retry_in: Duration,
    pub last_error: Option<String>,
    pub status_code: Option<i32>,
}

impl Completion {
    /// Puts a row back untouched (not attempted), due again after `retry_in`.
    pub fn release(id: Uuid, retry_in: Duration) -> Self {
        Self {
            id,
            status: FinalStatus::Pending,
            attempted: false,
            retry_in,
            last_error: None,
            status_code: None,
        }
    }
}

/// Claims up to `limit` due rows for `owner` for `lease`.
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    limit: i64,
    lease: Duration,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as::<_, Claimed>(
        r#"
        WITH due AS (
            SELECT id FROM webhook_queue
            WHERE status IN ('pending', 'delivering') AND next_attempt_at <= now()
            ORDER BY next_attempt_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE webhook_queue q
        SET status = 'delivering',
            lease_owner = $2,
            lease_expires_at = now() + make_interval(secs => $3),
            next_attempt_at = now() + make_interval(secs => $3)
        FROM due, merchants m
        WHERE q.id = due.id AND m.id = q.merchant_id
        RETURNING q.id, q.merchant_id, q.attempts, q.max_attempts,
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

/// Writes the results of a batch in one statement. Returns how many rows were still ours.
pub async fn complete(pool: &PgPool, owner: &str, completions: &[Completion]) -> sqlx::Result<u64> {
    if completions.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(completions.len());
    let mut statuses = Vec::with_capacity(completions.len());
    let mut attempted = Vec::with_capacity(completions.len());
    let mut retry_secs = Vec::with_capacity(completions.len());
    let mut errors = Vec::with_capacity(completions.len());
    let mut codes = Vec::with_capacity(completions.len());
    for completion in completions {
        ids.push(completion.id);
        statuses.push(completion.status.as_str());
        attempted.push(completion.attempted);
        retry_secs.push(completion.retry_in.as_secs_f64());
        errors.push(completion.last_error.clone());
        codes.push(completion.status_code);
    }
    let result = sqlx::query(
        r#"
        UPDATE webhook_queue q
        SET status = u.status,
            attempts = q.attempts + CASE WHEN u.attempted THEN 1 ELSE 0 END,
            next_attempt_at = CASE WHEN u.status = 'pending'
                                   THEN now() + make_interval(secs => u.retry_secs)
                                   ELSE q.next_attempt_at END,
            last_error = CASE WHEN u.attempted OR u.last_error IS NOT NULL THEN u.last_error ELSE q.last_error END,
            last_status_code = CASE WHEN u.attempted THEN u.status_code ELSE q.last_status_code END,
            delivered_at = CASE WHEN u.status = 'delivered' THEN now() ELSE q.delivered_at END,
            lease_owner = NULL,
            lease_expires_at = NULL
        FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::float8[], $5::text[], $6::int4[])
             AS u(id, status, attempted, retry_secs, last_error, status_code)
        WHERE q.id = u.id AND q.status = 'delivering' AND q.lease_owner = $7
        "#,
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&attempted)
    .bind(&retry_secs)
    .bind(&errors)
    .bind(&codes)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
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
