//! The audit trail: every mutating psctl action appends one hash-chained `ops_audit` row (who,
//! what, from → to, outcome, when). Commands talk to an [`AuditSink`]; [`open`] gives them the
//! Postgres one, or — only under `--allow-no-audit` — one that records nothing and says so on
//! stderr every time. Secrets never enter a row: `details` keys that look secret are masked.

pub mod chain;
pub mod note;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

pub use chain::{BreakReason, ChainBreak, ChainKey, ChainVerifier, ChainedRow};

use crate::db::url::DatabaseUrl;
use crate::error::{Classify, ExitStatus};
use crate::output::Output;

/// Serialises writers of the chain (any value, fixed: it is part of the on-disk protocol).
const AUDIT_LOCK_KEY: i64 = 0x7073_6374_6c61_7564; // "psctlaud"

/// Outcomes psctl writes; free text is allowed for other tools.
pub mod outcome {
    pub const STARTED: &str = "started";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const REFUSED: &str = "refused";
    pub const ROLLED_BACK: &str = "rolled_back";

    /// The outcome of an action that either happened or did not: `succeeded` or `failed`.
    pub fn of<T, E>(result: &Result<T, E>) -> &'static str {
        if result.is_ok() { SUCCEEDED } else { FAILED }
    }
}

/// One operator action to record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub os_user: String,
    pub kube_identity: String,
    pub environment: String,
    pub action: String,
    pub target: String,
    pub from_state: String,
    pub to_state: String,
    pub outcome: String,
    /// Free-form context; keys that look secret are masked by [`AuditEntry::details`].
    pub details: Value,
}

impl AuditEntry {
    /// An entry for `action` on `target` by this process (`user@host pid N`, the identity
    /// the deploy Lease names too), outcome `started`.
    pub fn new(action: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            os_user: crate::lock::identity(),
            kube_identity: String::new(),
            environment: String::new(),
            action: action.into(),
            target: target.into(),
            from_state: String::new(),
            to_state: String::new(),
            outcome: outcome::STARTED.to_owned(),
            details: Value::Object(serde_json::Map::new()),
        }
    }

    #[must_use]
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = environment.into();
        self
    }

    /// The Kubernetes identity, e.g. `<context>/<user>` from the kubeconfig.
    #[must_use]
    pub fn kube_identity(mut self, identity: impl Into<String>) -> Self {
        self.kube_identity = identity.into();
        self
    }

    #[must_use]
    pub fn transition(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.from_state = from.into();
        self.to_state = to.into();
        self
    }

    #[must_use]
    pub fn outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = outcome.into();
        self
    }

    /// Sets `details`, masking values under keys that look like secrets.
    #[must_use]
    pub fn details(mut self, details: Value) -> Self {
        self.details = mask_secrets(details);
        self
    }
}

const SECRET_KEY_MARKERS: [&str; 6] = [
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "database_url",
];

/// True for keys such as `db_password`, `BINANCE_API_SECRET`, `api_key` (but not `keys`).
fn looks_secret(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_KEY_MARKERS
        .iter()
        .any(|marker| lower.contains(marker))
        || lower == "key"
        || lower.ends_with("_key")
        || lower.ends_with("-key")
}

/// `details` with every value under a secret-looking key replaced, at every depth.
pub fn mask_secrets(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    if looks_secret(&key) {
                        (
                            key,
                            Value::String(crate::output::redact::REDACTED.to_owned()),
                        )
                    } else {
                        (key, mask_secrets(value))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(mask_secrets).collect()),
        other => other,
    }
}

/// What a sink did with an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The `ops_audit` id, or None when nothing was recorded (`--allow-no-audit`).
    pub id: Option<i64>,
    pub hash: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit trail is unavailable ({reason}); refusing to act without an audit record")]
    Unavailable { reason: String },
    #[error("the database has no ops_audit table; run `psctl db migrate` first")]
    NoTable,
    #[error("writing the audit record")]
    Write(#[source] sqlx::Error),
    #[error("reading the audit trail")]
    Read(#[source] sqlx::Error),
}

impl Classify for AuditError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Unreachable
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Unavailable { .. } | Self::Write(_) => vec![
                "fix the database connection, or pass `--allow-no-audit` to proceed without a record (it will be said on stderr)"
                    .to_owned(),
            ],
            Self::NoTable => vec!["`psctl db migrate --yes` creates it".to_owned()],
            Self::Read(_) => Vec::new(),
        }
    }
}

/// Where commands send their audit entries.
pub trait AuditSink: Send + Sync {
    fn record<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<Receipt, AuditError>>;
}

/// Appends to `ops_audit` in the database.
#[derive(Debug, Clone)]
pub struct PostgresAudit {
    pool: PgPool,
    key: ChainKey,
}

impl PostgresAudit {
    pub fn new(pool: PgPool, key: ChainKey) -> Self {
        Self { pool, key }
    }

    /// True when the table exists (it does not before `psctl db migrate`).
    pub async fn table_exists(pool: &PgPool) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT to_regclass('ops_audit') IS NOT NULL")
            .fetch_one(pool)
            .await
    }

    /// Appends `entry`, chained to the current tail, in one transaction holding the chain lock.
    pub async fn append(&self, entry: &AuditEntry) -> Result<Receipt, AuditError> {
        if !Self::table_exists(&self.pool)
            .await
            .map_err(AuditError::Write)?
        {
            return Err(AuditError::NoTable);
        }
        let mut tx = self.pool.begin().await.map_err(AuditError::Write)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(AuditError::Write)?;
        let prev_hash: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM ops_audit ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(AuditError::Write)?;
        let (id, at): (i64, DateTime<Utc>) = sqlx::query_as(
            "SELECT nextval(pg_get_serial_sequence('ops_audit', 'id')), date_trunc('microseconds', clock_timestamp())",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(AuditError::Write)?;
        let row = ChainedRow {
            id,
            at,
            os_user: entry.os_user.clone(),
            kube_identity: entry.kube_identity.clone(),
            environment: entry.environment.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            from_state: entry.from_state.clone(),
            to_state: entry.to_state.clone(),
            outcome: entry.outcome.clone(),
            details: mask_secrets(entry.details.clone()),
            prev_hash,
        };
        let hash = self.key.hash(&row);
        sqlx::query(
            "INSERT INTO ops_audit (id, at, os_user, kube_identity, environment, action, target, from_state, \
             to_state, outcome, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(row.id)
        .bind(row.at)
        .bind(&row.os_user)
        .bind(&row.kube_identity)
        .bind(&row.environment)
        .bind(&row.action)
        .bind(&row.target)
        .bind(&row.from_state)
        .bind(&row.to_state)
        .bind(&row.outcome)
        .bind(&row.details)
        .bind(&row.prev_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(AuditError::Write)?;
        tx.commit().await.map_err(AuditError::Write)?;
        Ok(Receipt {
            id: Some(id),
            hash: Some(hex::encode(hash)),
        })
    }
}

impl AuditSink for PostgresAudit {
    fn record<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<Receipt, AuditError>> {
        Box::pin(self.append(entry))
    }
}

/// Used only under `--allow-no-audit` when the trail is unavailable: records nothing and says
/// so on stderr for every entry, so the gap is visible in the operator's terminal and CI logs.
#[derive(Debug, Clone)]
pub struct UnrecordedAudit {
    reason: String,
    output: Output,
}

impl UnrecordedAudit {
    pub fn new(reason: impl Into<String>, output: Output) -> Self {
        Self {
            reason: reason.into(),
            output,
        }
    }
}

impl AuditSink for UnrecordedAudit {
    fn record<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<Receipt, AuditError>> {
        self.output.warn(format!(
            "audit record NOT written (--allow-no-audit; {}): {} {} {} -> {} [{}]",
            self.reason,
            entry.action,
            entry.target,
            entry.from_state,
            entry.to_state,
            entry.outcome
        ));
        Box::pin(async {
            Ok(Receipt {
                id: None,
                hash: None,
            })
        })
    }
}

/// The sink for a command: Postgres when reachable and migrated; otherwise an error, unless
/// `allow_no_audit`, in which case the gap is announced now and at every record.
pub async fn open(
    url: Result<DatabaseUrl, String>,
    allow_no_audit: bool,
    output: &Output,
) -> Result<Box<dyn AuditSink>, AuditError> {
    let reason = match url {
        Err(reason) => reason,
        Ok(url) => match crate::db::connect(&url, Duration::from_secs(10)).await {
            Err(error) => format!("{:#}", anyhow::Error::new(error)),
            Ok(pool) => match PostgresAudit::table_exists(&pool).await {
                Ok(true) => return Ok(Box::new(PostgresAudit::new(pool, ChainKey::from_env()))),
                Ok(false) => "the database has no ops_audit table".to_owned(),
                Err(error) => format!("{:#}", anyhow::Error::new(error)),
            },
        },
    };
    if allow_no_audit {
        output.warn(format!(
            "proceeding WITHOUT an audit trail (--allow-no-audit): {reason}"
        ));
        Ok(Box::new(UnrecordedAudit::new(reason, output.clone())))
    } else {
        Err(AuditError::Unavailable { reason })
    }
}

/// One listed row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub os_user: String,
    pub kube_identity: String,
    pub environment: String,
    pub action: String,
    pub target: String,
    pub from_state: String,
    pub to_state: String,
    pub outcome: String,
    pub details: Value,
    pub prev_hash: Option<String>,
    pub hash: String,
}

type RawRow = (
    i64,
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Value,
    Option<Vec<u8>>,
    Vec<u8>,
);

const SELECT_COLUMNS: &str = "id, at, os_user, kube_identity, environment, action, target, from_state, to_state, \
                              outcome, details, prev_hash, hash";

fn split(raw: RawRow) -> (ChainedRow, Vec<u8>) {
    let (
        id,
        at,
        os_user,
        kube_identity,
        environment,
        action,
        target,
        from_state,
        to_state,
        outcome,
        details,
        prev_hash,
        hash,
    ) = raw;
    let row = ChainedRow {
        id,
        at,
        os_user,
        kube_identity,
        environment,
        action,
        target,
        from_state,
        to_state,
        outcome,
        details,
        prev_hash,
    };
    (row, hash)
}

/// The newest `limit` rows, oldest first (so the tail reads like a log).
pub async fn list(pool: &PgPool, limit: i64) -> Result<Vec<AuditRow>, AuditError> {
    let sql = format!(
        "SELECT * FROM (SELECT {SELECT_COLUMNS} FROM ops_audit ORDER BY id DESC LIMIT $1) t ORDER BY id"
    );
    let rows: Vec<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(AuditError::Read)?;
    Ok(rows.into_iter().map(listed).collect())
}

fn listed(raw: RawRow) -> AuditRow {
    let (row, hash) = split(raw);
    AuditRow {
        id: row.id,
        at: row.at,
        os_user: row.os_user,
        kube_identity: row.kube_identity,
        environment: row.environment,
        action: row.action,
        target: row.target,
        from_state: row.from_state,
        to_state: row.to_state,
        outcome: row.outcome,
        details: row.details,
        prev_hash: row.prev_hash.map(hex::encode),
        hash: hex::encode(hash),
    }
}

/// The rows of `environment` (and those recorded without one, such as database commands)
/// written at or after `from`: the newest `limit`, oldest first.
pub async fn since(
    pool: &PgPool,
    environment: &str,
    from: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<AuditRow>, AuditError> {
    let sql = format!(
        "SELECT * FROM (SELECT {SELECT_COLUMNS} FROM ops_audit \
          WHERE at >= $1 AND (environment = $2 OR environment = '') ORDER BY id DESC LIMIT $3) t ORDER BY id"
    );
    let rows: Vec<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(environment)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(AuditError::Read)?;
    Ok(rows.into_iter().map(listed).collect())
}

/// Result of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub rows: u64,
    pub algorithm: &'static str,
    pub broken: Option<ChainBreak>,
}

/// Streams every row in id order through the verifier.
pub async fn verify_chain(pool: &PgPool, key: ChainKey) -> Result<ChainReport, AuditError> {
    let algorithm = key.algorithm();
    let mut verifier = ChainVerifier::new(key);
    let sql = format!("SELECT {SELECT_COLUMNS} FROM ops_audit ORDER BY id");
    let mut rows = sqlx::query_as::<_, RawRow>(sqlx::AssertSqlSafe(sql)).fetch(pool);
    while let Some(raw) = rows.try_next().await.map_err(AuditError::Read)? {
        let (row, hash) = split(raw);
        verifier.push(&row, &hash);
    }
    Ok(ChainReport {
        rows: verifier.rows(),
        algorithm,
        broken: verifier.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_looking_details_are_masked_at_every_depth() {
        let entry = AuditEntry::new("secrets-apply", "problemsolver-secrets").details(json!({
            "keys": ["DATABASE_URL", "BINANCE_API_KEY"],
            "BINANCE_API_SECRET": "abc123",
            "nested": {"db_password": "hunter22", "replicas": 2},
            "tag": "1.4.2",
        }));
        let text = entry.details.to_string();
        assert!(
            !text.contains("abc123") && !text.contains("hunter22"),
            "{text}"
        );
        assert_eq!(entry.details["nested"]["replicas"], 2);
        assert_eq!(
            entry.details["keys"],
            json!(["DATABASE_URL", "BINANCE_API_KEY"])
        );
        assert_eq!(entry.details["tag"], "1.4.2");
    }

    #[test]
    fn entries_start_as_started_and_carry_the_os_user() {
        let entry = AuditEntry::new("deploy", "problemsolver-poller")
            .environment("sandbox")
            .transition("rev 1", "rev 2");
        assert_eq!(entry.outcome, "started");
        assert!(!entry.os_user.is_empty());
        assert_eq!(
            (entry.from_state.as_str(), entry.to_state.as_str()),
            ("rev 1", "rev 2")
        );
    }

    #[tokio::test]
    async fn without_a_database_the_action_is_refused_unless_allowed() {
        let (output, _, stderr) =
            Output::buffered(crate::output::Format::Table, crate::output::Style::PLAIN);
        let refused = open(Err("no database URL".into()), false, &output)
            .await
            .err()
            .unwrap();
        assert!(matches!(refused, AuditError::Unavailable { .. }));
        assert_eq!(refused.exit_status(), ExitStatus::Unreachable);
        let sink = open(Err("no database URL".into()), true, &output)
            .await
            .unwrap();
        let receipt = sink
            .record(&AuditEntry::new("deploy", "problemsolver-poller"))
            .await
            .unwrap();
        assert_eq!(
            receipt,
            Receipt {
                id: None,
                hash: None
            }
        );
        let text = stderr.contents();
        assert!(
            text.contains("WITHOUT an audit trail") && text.contains("audit record NOT written"),
            "{text}"
        );
    }
}
