//! `psctl db verify`: the invariants the services and the runbooks rely on, checked against a
//! live database without changing it.
//!
//! - Append-only enforcement: UPDATE, DELETE and TRUNCATE of `ledger_entries` and `ops_audit`
//!   are attempted on probe rows inside one transaction that is always rolled back; each must be
//!   refused with SQLSTATE 42501. (A row trigger does not fire for zero rows, so probing an
//!   empty table with `WHERE false` would prove nothing; hence the probe rows.)
//! - Reconciliation: matched deposits = payments = ledger credits (counts and sums, and row by
//!   row), paid invoices ↔ payments, paid invoices all have webhook rows.
//! - The `ops_audit` hash chain, naming the first broken row.

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use crate::audit::{self, BreakReason, ChainKey};
use crate::output::github::{self, markdown_cell};
use crate::output::{Render, Style, table};

/// Tables the checks need; missing ones mean an unmigrated database.
const REQUIRED_TABLES: [&str; 7] = [
    "merchants",
    "invoices",
    "deposit_raw",
    "payments",
    "ledger_entries",
    "webhook_queue",
    "ops_audit",
];

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// A count and a sum (NUMERIC as text with 18 decimals, so no precision is lost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Total {
    pub count: i64,
    pub sum: String,
}

/// The reconciliation totals; two databases holding the same history have equal totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Totals {
    pub deposits_matched: Total,
    pub payments: Total,
    pub ledger_credits: Total,
    pub ledger_entries: i64,
    pub invoices_paid: i64,
    pub webhook_rows: i64,
    pub audit_rows: i64,
}

/// Everything `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub database: String,
    pub checks: Vec<CheckResult>,
    pub totals: Option<Totals>,
    /// The first row whose hash or link is wrong.
    pub chain_broken_at: Option<i64>,
}

impl VerifyReport {
    pub fn findings(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.ok)
    }

    pub fn is_clean(&self) -> bool {
        self.findings().next().is_none()
    }

    /// GitHub Actions annotations: one `::error` per finding, titled `db verify: <check>`.
    pub fn annotations(&self) -> String {
        self.findings()
            .map(|finding| {
                github::error_annotation(&format!("db verify: {}", finding.check), &finding.detail)
            })
            .collect()
    }

    /// The job summary: the database (its label, never its password), then every check.
    pub fn step_summary(&self) -> String {
        let findings = self.findings().count();
        let mut markdown = format!(
            "## psctl db verify: {}\n\n{findings} finding(s)\n\n| check | result | detail |\n| --- | --- | --- |\n",
            markdown_cell(&self.database)
        );
        for check in &self.checks {
            markdown.push_str(&format!(
                "| {} | {} | {} |\n",
                markdown_cell(&check.check),
                if check.ok { "ok" } else { "**FINDING**" },
                markdown_cell(&check.detail)
            ));
        }
        markdown
    }
}

impl Render for VerifyReport {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = table::render(
            &["CHECK", "RESULT", "DETAIL"],
            self.checks.iter().map(|c| {
                [
                    c.check.clone(),
                    if c.ok { "ok" } else { "FINDING" }.to_owned(),
                    c.detail.clone(),
                ]
            }),
        );
        if let Some(t) = &self.totals {
            text.push('\n');
            text.push_str(&table::render(
                &["TOTAL", "COUNT", "SUM"],
                [
                    [
                        "deposits matched".to_owned(),
                        t.deposits_matched.count.to_string(),
                        t.deposits_matched.sum.clone(),
                    ],
                    [
                        "payments".to_owned(),
                        t.payments.count.to_string(),
                        t.payments.sum.clone(),
                    ],
                    [
                        "ledger credits".to_owned(),
                        t.ledger_credits.count.to_string(),
                        t.ledger_credits.sum.clone(),
                    ],
                    [
                        "ledger entries".to_owned(),
                        t.ledger_entries.to_string(),
                        String::new(),
                    ],
                    [
                        "invoices paid".to_owned(),
                        t.invoices_paid.to_string(),
                        String::new(),
                    ],
                    [
                        "webhook rows".to_owned(),
                        t.webhook_rows.to_string(),
                        String::new(),
                    ],
                    [
                        "audit rows".to_owned(),
                        t.audit_rows.to_string(),
                        String::new(),
                    ],
                ],
            ));
        }
        text
    }
}

fn ok(check: impl Into<String>, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        check: check.into(),
        ok: true,
        detail: detail.into(),
    }
}

fn finding(check: impl Into<String>, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        check: check.into(),
        ok: false,
        detail: detail.into(),
    }
}

/// Runs every check. Database errors while checking are errors (the verdict is unknown), not
/// findings; a refused probe is the expected, healthy answer.
pub async fn verify(
    pool: &PgPool,
    database: &str,
    key: ChainKey,
) -> Result<VerifyReport, sqlx::Error> {
    let mut checks = Vec::new();
    let mut missing = Vec::new();
    for table in REQUIRED_TABLES {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(pool)
            .await?;
        if !exists {
            missing.push(table);
        }
    }
    if !missing.is_empty() {
        checks.push(finding(
            "schema",
            format!(
                "missing table(s) {}; run `psctl db migrate`",
                missing.join(", ")
            ),
        ));
        return Ok(VerifyReport {
            database: database.to_owned(),
            checks,
            totals: None,
            chain_broken_at: None,
        });
    }
    checks.push(ok("schema", "all tables present"));
    checks.extend(probe_append_only(pool).await?);
    let totals = totals(pool).await?;
    checks.extend(compare_totals(&totals));
    checks.extend(row_checks(pool).await?);
    let chain = audit::verify_chain(pool, key.clone())
        .await
        .map_err(|error| match error {
            audit::AuditError::Read(source) | audit::AuditError::Write(source) => source,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
    let chain_broken_at = chain.broken.as_ref().map(|b| b.id);
    checks.push(match &chain.broken {
        None => ok("ops_audit hash chain", format!("{} row(s) intact ({})", chain.rows, chain.algorithm)),
        Some(broken) => {
            let mut detail = format!("first broken row id {}: {}", broken.id, broken.reason);
            if broken.reason == BreakReason::HashMismatch && matches!(key, ChainKey::Sha256) {
                detail.push_str("; if the trail was written with PSCTL_AUDIT_HMAC_KEY set, set it for verify too");
            }
            finding("ops_audit hash chain", detail)
        }
    });
    Ok(VerifyReport {
        database: database.to_owned(),
        checks,
        totals: Some(totals),
        chain_broken_at,
    })
}

/// The statements that must each be refused, per protected table; `$1` is the probe row's id.
fn mutations(table: &str) -> [(&'static str, String); 3] {
    let update = match table {
        "ledger_entries" => {
            "UPDATE ledger_entries SET description = description WHERE id = $1".to_owned()
        }
        _ => "UPDATE ops_audit SET outcome = outcome WHERE id = $1".to_owned(),
    };
    [
        ("UPDATE", update),
        ("DELETE", format!("DELETE FROM {table} WHERE id = $1")),
        ("TRUNCATE", format!("TRUNCATE {table}")),
    ]
}

async fn probe_append_only(pool: &PgPool) -> Result<Vec<CheckResult>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // TRUNCATE wants an exclusive lock: never queue behind live traffic for long.
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    let merchant: sqlx::types::Uuid = sqlx::query_scalar(
        "INSERT INTO merchants (name, webhook_url, webhook_secret_ciphertext, webhook_secret_nonce, webhook_enabled) \
         VALUES ('psctl verify probe', 'https://probe.invalid/', '\\x00', decode(repeat('00', 12), 'hex'), false) \
         RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await?;
    let ledger_id: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_entries (merchant_id, entry_type, coin, change_amount, description) \
         VALUES ($1, 'adjustment', 'PROBE', 0, 'psctl verify probe (rolled back)') RETURNING id",
    )
    .bind(merchant)
    .fetch_one(&mut *tx)
    .await?;
    let audit_id: i64 = sqlx::query_scalar(
        "INSERT INTO ops_audit (os_user, action, outcome, hash) \
         VALUES ('psctl', 'verify-probe', 'rolled_back', sha256(convert_to(random()::text || clock_timestamp()::text, 'UTF8'))) \
         RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut results = Vec::new();
    for (table, id) in [("ledger_entries", ledger_id), ("ops_audit", audit_id)] {
        for (operation, sql) in mutations(table) {
            let check = format!("append-only {table} {operation}");
            results.push(probe(&mut tx, &check, &sql, id).await?);
        }
    }
    tx.rollback().await?;
    Ok(results)
}

async fn probe(
    tx: &mut Transaction<'static, Postgres>,
    check: &str,
    sql: &str,
    id: i64,
) -> Result<CheckResult, sqlx::Error> {
    sqlx::query("SAVEPOINT psctl_probe")
        .execute(&mut **tx)
        .await?;
    let query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    let query = if sql.contains("$1") {
        query.bind(id)
    } else {
        query
    };
    let result = query.execute(&mut **tx).await;
    sqlx::query("ROLLBACK TO SAVEPOINT psctl_probe")
        .execute(&mut **tx)
        .await?;
    Ok(match result {
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42501") => {
            ok(check, "refused")
        }
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("55P03") => finding(
            check,
            "could not take the table lock within 5s to probe; re-run when traffic is lower",
        ),
        Err(sqlx::Error::Database(error)) => finding(
            check,
            format!(
                "failed for another reason than the append-only guard: {}",
                error.message()
            ),
        ),
        Err(other) => return Err(other),
        Ok(done) => finding(
            check,
            format!(
                "ALLOWED ({} row(s) affected): the append-only trigger is missing or disabled",
                done.rows_affected()
            ),
        ),
    })
}

async fn totals(pool: &PgPool) -> Result<Totals, sqlx::Error> {
    let row: (i64, String, i64, String, i64, String, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM deposit_raw WHERE matched_invoice_id IS NOT NULL), \
           (SELECT coalesce(sum(amount), 0)::numeric(60, 18)::text FROM deposit_raw WHERE matched_invoice_id IS NOT NULL), \
           (SELECT count(*) FROM payments), \
           (SELECT coalesce(sum(amount), 0)::numeric(60, 18)::text FROM payments), \
           (SELECT count(*) FROM ledger_entries WHERE entry_type = 'credit'), \
           (SELECT coalesce(sum(change_amount), 0)::numeric(60, 18)::text FROM ledger_entries WHERE entry_type = 'credit'), \
           (SELECT count(*) FROM ledger_entries), \
           (SELECT count(*) FROM invoices WHERE status = 'paid'), \
           (SELECT count(*) FROM webhook_queue), \
           (SELECT count(*) FROM ops_audit)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Totals {
        deposits_matched: Total {
            count: row.0,
            sum: row.1,
        },
        payments: Total {
            count: row.2,
            sum: row.3,
        },
        ledger_credits: Total {
            count: row.4,
            sum: row.5,
        },
        ledger_entries: row.6,
        invoices_paid: row.7,
        webhook_rows: row.8,
        audit_rows: row.9,
    })
}

/// Matched deposits, payments and ledger credits must agree in count and sum.
pub fn compare_totals(totals: &Totals) -> Vec<CheckResult> {
    let t = totals;
    let mut results = Vec::new();
    let pairs = [
        (
            "matched deposits = payments",
            &t.deposits_matched,
            &t.payments,
        ),
        ("payments = ledger credits", &t.payments, &t.ledger_credits),
    ];
    for (check, left, right) in pairs {
        results.push(if left == right {
            ok(check, format!("{} row(s), sum {}", left.count, left.sum))
        } else {
            finding(
                check,
                format!(
                    "{} row(s) sum {} vs {} row(s) sum {}",
                    left.count, left.sum, right.count, right.sum
                ),
            )
        });
    }
    results
}

/// Row-by-row checks: each query returns how many rows break the rule and the smallest id.
const ROW_CHECKS: [(&str, &str); 7] = [
    (
        "matched deposits have a payment",
        "SELECT count(*), min(d.id)::text FROM deposit_raw d WHERE d.matched_invoice_id IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.deposit_id = d.id)",
    ),
    (
        "payments match their deposit",
        "SELECT count(*), min(p.id::text) FROM payments p JOIN deposit_raw d ON d.id = p.deposit_id \
         WHERE d.matched_invoice_id IS DISTINCT FROM p.invoice_id OR d.amount <> p.amount",
    ),
    (
        "payments have a ledger credit",
        "SELECT count(*), min(p.id::text) FROM payments p WHERE NOT EXISTS \
         (SELECT 1 FROM ledger_entries l WHERE l.payment_id = p.id AND l.entry_type = 'credit')",
    ),
    (
        "ledger credits match their payment",
        "SELECT count(*), min(l.id)::text FROM ledger_entries l LEFT JOIN payments p ON p.id = l.payment_id \
         WHERE l.entry_type = 'credit' AND (p.id IS NULL OR p.amount <> l.change_amount OR p.merchant_id <> l.merchant_id)",
    ),
    (
        "paid invoices have a payment",
        "SELECT count(*), min(i.id::text) FROM invoices i WHERE i.status = 'paid' \
         AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = i.id)",
    ),
    (
        "paid invoices have webhook rows",
        "SELECT count(*), min(i.id::text) FROM invoices i WHERE i.status = 'paid' \
         AND NOT EXISTS (SELECT 1 FROM webhook_queue w WHERE w.invoice_id = i.id)",
    ),
    (
        "payments belong to paid invoices",
        "SELECT count(*), min(p.id::text) FROM payments p JOIN invoices i ON i.id = p.invoice_id WHERE i.status <> 'paid'",
    ),
];

async fn row_checks(pool: &PgPool) -> Result<Vec<CheckResult>, sqlx::Error> {
    let mut results = Vec::new();
    for (check, sql) in ROW_CHECKS {
        let (count, first): (i64, Option<String>) = sqlx::query_as(sql).fetch_one(pool).await?;
        results.push(match (count, first) {
            (0, _) => ok(check, ""),
            (count, first) => finding(
                check,
                format!(
                    "{count} row(s) break it; first id {}",
                    first.unwrap_or_default()
                ),
            ),
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(count: i64, sum: &str) -> Total {
        Total {
            count,
            sum: sum.to_owned(),
        }
    }

    #[test]
    fn equal_totals_pass_and_a_difference_is_a_finding() {
        let mut totals = Totals {
            deposits_matched: total(2, "15.000000000000000000"),
            payments: total(2, "15.000000000000000000"),
            ledger_credits: total(2, "15.000000000000000000"),
            ..Totals::default()
        };
        assert!(compare_totals(&totals).iter().all(|c| c.ok));
        totals.ledger_credits = total(1, "10.000000000000000000");
        let results = compare_totals(&totals);
        assert!(results[0].ok);
        assert!(!results[1].ok);
        assert_eq!(
            results[1].detail,
            "2 row(s) sum 15.000000000000000000 vs 1 row(s) sum 10.000000000000000000"
        );
    }

    #[test]
    fn every_protected_table_is_probed_with_all_three_mutations() {
        for table in ["ledger_entries", "ops_audit"] {
            let ops: Vec<&str> = mutations(table).iter().map(|(op, _)| *op).collect();
            assert_eq!(ops, ["UPDATE", "DELETE", "TRUNCATE"]);
            assert!(mutations(table).iter().all(|(_, sql)| sql.contains(table)));
        }
    }

    #[test]
    fn the_report_renders_findings_and_totals() {
        let report = VerifyReport {
            database: "h:1/db".into(),
            checks: vec![
                ok("schema", "all tables present"),
                finding("ops_audit hash chain", "first broken row id 7"),
            ],
            totals: Some(Totals::default()),
            chain_broken_at: Some(7),
        };
        let text = report.render_table(&Style::PLAIN);
        assert!(
            text.contains("FINDING")
                && text.contains("first broken row id 7")
                && text.contains("ledger credits")
        );
        assert!(!report.is_clean());
        assert_eq!(report.findings().count(), 1);
    }

    #[test]
    fn findings_become_annotations_and_a_summary_table() {
        let report = VerifyReport {
            database: "h:1/db".into(),
            checks: vec![
                ok("schema", "all tables present"),
                finding(
                    "ledger_entries: UPDATE refused",
                    "UPDATE succeeded, 100% writable\nfix the trigger",
                ),
            ],
            totals: None,
            chain_broken_at: None,
        };
        assert_eq!(
            report.annotations(),
            "::error title=db verify%3A ledger_entries%3A UPDATE refused::UPDATE succeeded, 100%25 writable%0Afix the trigger\n"
        );
        assert_eq!(
            report.step_summary(),
            "## psctl db verify: h:1/db\n\n1 finding(s)\n\n| check | result | detail |\n| --- | --- | --- |\n\
             | schema | ok | all tables present |\n\
             | ledger_entries: UPDATE refused | **FINDING** | UPDATE succeeded, 100% writable<br>fix the trigger |\n"
        );
        let clean = VerifyReport {
            checks: vec![ok("schema", "all tables present")],
            ..report
        };
        assert_eq!(clean.annotations(), "");
    }
}
