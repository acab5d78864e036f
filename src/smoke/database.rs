//! Database checks: the functional round trip through the running poller, the ledger's
//! append-only guard and the reconciliation counts.
//!
//! The functional check writes only rows marked as smoke: a merchant named
//! [`SMOKE_MERCHANT`] (webhooks disabled, so nothing is ever delivered for it), an invoice from
//! the real `create_invoice(…, p_is_smoke => true)` allocation on the dedicated network
//! [`SMOKE_NETWORK`] and address [`SMOKE_ADDRESS`] (no real deposit can match it), and a
//! `deposit_raw` row with `is_smoke = true` and a `psctl-smoke-<uuid>` Binance id. The poller
//! then does the rest exactly as for a real deposit.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::Outcome;
use super::metrics::sum_over_pods;
use crate::settings::Component;

/// Name of the merchant that owns smoke invoices.
pub const SMOKE_MERCHANT: &str = "psctl-smoke";
pub const SMOKE_COIN: &str = "USDT";
pub const SMOKE_NETWORK: &str = "PSCTL-SMOKE";
pub const SMOKE_ADDRESS: &str = "psctl-smoke-address";
/// Base amount of a smoke invoice; `create_invoice` adds the allocation step when taken.
pub const SMOKE_BASE_AMOUNT: &str = "1.00";

/// One line for a database error: the server's message and SQLSTATE, or the transport error.
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

fn database_failure(what: &str, error: &sqlx::Error) -> Outcome {
    let text = format!("{what}: {}", describe(error));
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            Outcome::unreachable(text)
        }
        _ => Outcome::fail(text),
    }
}

/// What the functional check found for its invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub payments: i64,
    pub ledger_entries: i64,
    pub webhook_rows: i64,
    pub smoke_webhook_rows: i64,
}

/// Exactly one payment, one ledger entry and one (smoke-marked) webhook row. Pure.
pub fn judge_written(invoice: &str, written: Written) -> Result<String, String> {
    let Written {
        payments,
        ledger_entries,
        webhook_rows,
        smoke_webhook_rows,
    } = written;
    let mut wrong = Vec::new();
    for (what, count) in [
        ("payment(s)", payments),
        ("ledger entr(y/ies)", ledger_entries),
        ("webhook_queue row(s)", webhook_rows),
    ] {
        if count != 1 {
            wrong.push(format!("{count} {what} instead of 1"));
        }
    }
    if webhook_rows == 1 && smoke_webhook_rows != 1 {
        wrong.push("the webhook_queue row is not marked is_smoke".to_owned());
    }
    if wrong.is_empty() {
        Ok("1 payment, 1 ledger entry, 1 webhook_queue row (is_smoke)".to_owned())
    } else {
        Err(format!(
            "invoice {invoice} was paid but the poller wrote {}: the transaction that pays an invoice is broken; run `psctl db verify`",
            wrong.join(", ")
        ))
    }
}

/// The smoke round trip: invoice → deposit → the poller marks it paid → one payment, one ledger
/// entry, one webhook row, and `counter` (summed over the counter components' pods) rose.
pub async fn functional(
    pool: &PgPool,
    client: &kube::Client,
    namespace: &str,
    counter_components: &[&Component],
    counter: &str,
    timeout: Duration,
) -> Outcome {
    let before = if counter_components.is_empty() {
        None
    } else {
        Some(sum_over_pods(client, namespace, counter_components, counter).await)
    };
    let merchant = match smoke_merchant(pool).await {
        Ok(id) => id,
        Err(error) => return database_failure("creating the smoke merchant", &error),
    };
    let invoice: Result<(String, String), _> = sqlx::query_as(
        "SELECT id::text, trim_scale(publish_amount)::text
           FROM create_invoice($1::uuid, $2, $3, $4, $5::numeric,
                               p_ttl => interval '15 minutes', p_is_smoke => true)",
    )
    .bind(&merchant)
    .bind(SMOKE_COIN)
    .bind(SMOKE_NETWORK)
    .bind(SMOKE_ADDRESS)
    .bind(SMOKE_BASE_AMOUNT)
    .fetch_one(pool)
    .await;
    let (invoice, amount) = match invoice {
        Ok(row) => row,
        Err(error) => return database_failure("create_invoice for the smoke invoice", &error),
    };
    let deposit: Result<String, _> = sqlx::query_scalar(
        "INSERT INTO deposit_raw (binance_deposit_id, tx_id, coin, network, address, amount,
                                  binance_status, insert_time, raw, is_smoke)
         SELECT id, id, $1, $2, $3, $4::numeric, 1, now(),
                jsonb_build_object('source', 'psctl smoke', 'invoice_id', $5::text), true
           FROM (SELECT 'psctl-smoke-' || gen_random_uuid()::text AS id) AS fresh
         RETURNING binance_deposit_id",
    )
    .bind(SMOKE_COIN)
    .bind(SMOKE_NETWORK)
    .bind(SMOKE_ADDRESS)
    .bind(&amount)
    .bind(&invoice)
    .fetch_one(pool)
    .await;
    let deposit = match deposit {
        Ok(id) => id,
        Err(error) => return database_failure("inserting the smoke deposit", &error),
    };
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let status: Result<String, _> =
            sqlx::query_scalar("SELECT status FROM invoices WHERE id = $1::uuid")
                .bind(&invoice)
                .fetch_one(pool)
                .await;
        match status {
            Ok(status) if status == "paid" => break,
            Ok(_) => {}
            Err(error) => return database_failure("reading the smoke invoice", &error),
        }
        if Instant::now() >= deadline {
            return Outcome::fail(format!(
                "smoke invoice {invoice} ({amount} {SMOKE_COIN}) was not paid within {}s of deposit {deposit}: the poller is not matching deposits (scaled to zero, not leading, or failing); check `psctl status` and its logs. The deposit stays queued and is credited when the poller runs",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let paid_after = started.elapsed();
    let written: Result<(i64, i64, i64, i64), _> = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payments WHERE invoice_id = $1::uuid),
                (SELECT count(*) FROM ledger_entries WHERE invoice_id = $1::uuid),
                (SELECT count(*) FROM webhook_queue WHERE invoice_id = $1::uuid),
                (SELECT count(*) FROM webhook_queue WHERE invoice_id = $1::uuid AND is_smoke)",
    )
    .bind(&invoice)
    .fetch_one(pool)
    .await;
    let written = match written {
        Ok((payments, ledger_entries, webhook_rows, smoke_webhook_rows)) => Written {
            payments,
            ledger_entries,
            webhook_rows,
            smoke_webhook_rows,
        },
        Err(error) => {
            return database_failure("counting the rows written for the smoke invoice", &error);
        }
    };
    let rows = match judge_written(&invoice, written) {
        Ok(rows) => rows,
        Err(problem) => return Outcome::fail(problem),
    };
    let counter_note = match before {
        None => {
            format!("`{counter}` not checked: no component lists it among its required metrics")
        }
        Some(Err(problem)) => {
            return Outcome::fail(format!(
                "invoice {invoice} paid, {rows}, but `{counter}` could not be read before the deposit: {problem}"
            ));
        }
        Some(Ok(before)) => {
            // The leader adds to the counter right after the matching transaction commits.
            let settle = Instant::now() + Duration::from_secs(5);
            let mut after = sum_over_pods(client, namespace, counter_components, counter).await;
            while matches!(after, Ok(value) if value <= before) && Instant::now() < settle {
                tokio::time::sleep(Duration::from_millis(250)).await;
                after = sum_over_pods(client, namespace, counter_components, counter).await;
            }
            match after {
                Ok(after) if after > before => format!("`{counter}` {before} → {after}"),
                Ok(after) => {
                    return Outcome::fail(format!(
                        "invoice {invoice} paid, {rows}, but `{counter}` did not rise ({before} → {after}): the pods that export it are not the ones processing deposits (another poller on the same database?)"
                    ));
                }
                Err(problem) => {
                    return Outcome::fail(format!(
                        "invoice {invoice} paid, {rows}, but `{counter}` could not be read afterwards: {problem}"
                    ));
                }
            }
        }
    };
    Outcome::pass(format!(
        "smoke invoice {invoice} paid {:.1}s after deposit {deposit}; {rows}; {counter_note}",
        paid_after.as_secs_f64()
    ))
}

/// The smoke merchant's id, created on first use. Its webhooks are disabled and its secret is
/// a placeholder, so no webhook is ever sent for a smoke invoice.
async fn smoke_merchant(pool: &PgPool) -> Result<String, sqlx::Error> {
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT id::text FROM merchants WHERE name = $1 ORDER BY created_at, id LIMIT 1",
    )
    .bind(SMOKE_MERCHANT)
    .fetch_optional(pool)
    .await?;
    if let Some(id) = existing {
        return Ok(id);
    }
    sqlx::query_scalar(
        "INSERT INTO merchants (name, webhook_url, webhook_secret_ciphertext, webhook_secret_nonce,
                                webhook_enabled, webhook_disabled_reason)
         VALUES ($1, 'https://smoke.invalid/psctl', '\\x00', decode(repeat('00', 12), 'hex'), false,
                 'psctl smoke merchant: webhooks are never delivered')
         RETURNING id::text",
    )
    .bind(SMOKE_MERCHANT)
    .fetch_one(pool)
    .await
}

/// An UPDATE of a (probe) ledger row must be refused with SQLSTATE 42501 and the append-only
/// message. Everything happens in one transaction that is rolled back whatever happens.
pub async fn ledger_append_only(pool: &PgPool) -> Outcome {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(error) => return database_failure("starting a transaction", &error),
    };
    let probe: Result<i64, _> = sqlx::query_scalar(
        "WITH merchant AS (
             INSERT INTO merchants (name, webhook_url, webhook_secret_ciphertext, webhook_secret_nonce, webhook_enabled)
             VALUES ('psctl smoke probe', 'https://probe.invalid/', '\\x00', decode(repeat('00', 12), 'hex'), false)
             RETURNING id)
         INSERT INTO ledger_entries (merchant_id, entry_type, coin, change_amount, description)
         SELECT id, 'adjustment', 'PROBE', 0, 'psctl smoke probe (rolled back)' FROM merchant
         RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await;
    let probe = match probe {
        Ok(id) => id,
        Err(error) => {
            let _ = tx.rollback().await;
            return database_failure("inserting the probe ledger row", &error);
        }
    };
    let update = sqlx::query(
        "UPDATE ledger_entries SET description = 'psctl smoke: must be refused' WHERE id = $1",
    )
    .bind(probe)
    .execute(&mut *tx)
    .await;
    let rolled_back = tx.rollback().await;
    let outcome = judge_update(update.map(|done| done.rows_affected()));
    match rolled_back {
        // A failed statement aborts the transaction; the rollback of an aborted transaction
        // on a dropped connection is not a finding, the server discards it anyway.
        Err(error) if outcome.verdict == super::Verdict::Pass => Outcome::pass(format!(
            "{}; the rollback reported {} (the server discards the transaction)",
            outcome.evidence,
            describe(&error)
        )),
        _ => outcome,
    }
}

/// The verdict on the probe UPDATE. Pure.
pub fn judge_update(result: Result<u64, sqlx::Error>) -> Outcome {
    match result {
        Err(sqlx::Error::Database(error))
            if error.code().as_deref() == Some("42501")
                && error.message().contains("append-only") =>
        {
            Outcome::pass(format!(
                "UPDATE ledger_entries refused: {} (SQLSTATE 42501); rolled back",
                error.message()
            ))
        }
        Err(error @ sqlx::Error::Database(_)) => Outcome::fail(format!(
            "UPDATE ledger_entries failed for another reason than the append-only guard: {}",
            describe(&error)
        )),
        Err(error) => database_failure("probing ledger_entries", &error),
        Ok(rows) => Outcome::fail(format!(
            "UPDATE ledger_entries was ALLOWED ({rows} row(s)): the append-only trigger is missing or disabled; re-apply migration 20261123000002 (`psctl db migrate`) and run `psctl db verify`"
        )),
    }
}

/// The reconciliation counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    pub credited_deposits_without_payment: i64,
    pub payments_without_ledger_entry: i64,
    pub paid_invoices_without_webhook: i64,
    /// Credited deposits that were not a Binance success (status 1) or fell outside their
    /// invoice's life (created before the deposit, not expired at it).
    pub credits_breaking_the_rules: i64,
    /// Processed deposits that were not credited and have no `deposit.<outcome>` system event:
    /// money that arrived without anyone being told.
    pub uncredited_without_event: i64,
}

/// Every count must be zero. Pure.
pub fn judge_reconciliation(counts: Reconciliation) -> Outcome {
    let Reconciliation {
        credited_deposits_without_payment,
        payments_without_ledger_entry,
        paid_invoices_without_webhook,
        credits_breaking_the_rules,
        uncredited_without_event,
    } = counts;
    let evidence = format!(
        "credited deposits without payment: {credited_deposits_without_payment}, payments without ledger entry: {payments_without_ledger_entry}, paid invoices without webhook row: {paid_invoices_without_webhook}, credits breaking the matching rules: {credits_breaking_the_rules}, uncredited deposits without a system event: {uncredited_without_event}"
    );
    if credited_deposits_without_payment == 0
        && payments_without_ledger_entry == 0
        && paid_invoices_without_webhook == 0
        && credits_breaking_the_rules == 0
        && uncredited_without_event == 0
    {
        Outcome::pass(evidence)
    } else {
        Outcome::fail(format!(
            "{evidence}; money moved without its records: `psctl db verify` names the first rows"
        ))
    }
}

pub async fn reconciliation(pool: &PgPool) -> Outcome {
    let counts: Result<(i64, i64, i64, i64, i64), _> = sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM deposit_raw d WHERE d.matched_invoice_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.deposit_id = d.id)),
           (SELECT count(*) FROM payments p WHERE NOT EXISTS
               (SELECT 1 FROM ledger_entries l WHERE l.payment_id = p.id)),
           (SELECT count(*) FROM invoices i WHERE i.status = 'paid' AND NOT EXISTS
               (SELECT 1 FROM webhook_queue w WHERE w.invoice_id = i.id)),
           (SELECT count(*) FROM deposit_raw d JOIN invoices i ON i.id = d.matched_invoice_id
             WHERE d.binance_status <> 1
                OR date_trunc('milliseconds', i.created_at) > d.insert_time
                OR d.insert_time > i.expires_at),
           (SELECT count(*) FROM deposit_raw d
             WHERE d.processed_at IS NOT NULL AND d.outcome <> 'credited'
               AND NOT EXISTS (SELECT 1 FROM system_events e
                                WHERE e.source = 'poller' AND e.details ? 'deposit_id'
                                  AND (e.details ->> 'deposit_id')::bigint = d.id
                                  AND e.kind = 'deposit.' || d.outcome))",
    )
    .fetch_one(pool)
    .await;
    match counts {
        Ok((deposits, payments, invoices, rule_breaking, silent)) => {
            judge_reconciliation(Reconciliation {
                credited_deposits_without_payment: deposits,
                payments_without_ledger_entry: payments,
                paid_invoices_without_webhook: invoices,
                credits_breaking_the_rules: rule_breaking,
                uncredited_without_event: silent,
            })
        }
        Err(error) => database_failure("counting reconciliation gaps", &error),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Verdict;
    use super::*;

    #[test]
    fn exactly_one_row_of_each_is_required() {
        let good = Written {
            payments: 1,
            ledger_entries: 1,
            webhook_rows: 1,
            smoke_webhook_rows: 1,
        };
        assert!(judge_written("i", good).is_ok());
        let twice = Written {
            ledger_entries: 2,
            webhook_rows: 0,
            smoke_webhook_rows: 0,
            ..good
        };
        let problem = judge_written("i", twice).unwrap_err();
        assert!(
            problem
                .contains("2 ledger entr(y/ies) instead of 1, 0 webhook_queue row(s) instead of 1"),
            "{problem}"
        );
        let unmarked = Written {
            smoke_webhook_rows: 0,
            ..good
        };
        assert!(
            judge_written("i", unmarked)
                .unwrap_err()
                .contains("not marked is_smoke")
        );
    }

    #[test]
    fn an_allowed_update_is_a_failure_with_the_fix() {
        let outcome = judge_update(Ok(1));
        assert_eq!(outcome.verdict, Verdict::Fail);
        assert!(outcome.evidence.contains("ALLOWED (1 row(s))"));
        let lost = judge_update(Err(sqlx::Error::PoolTimedOut));
        assert!(lost.unreachable);
    }

    #[test]
    fn reconciliation_reports_the_counts_either_way() {
        let zero = Reconciliation {
            credited_deposits_without_payment: 0,
            payments_without_ledger_entry: 0,
            paid_invoices_without_webhook: 0,
            credits_breaking_the_rules: 0,
            uncredited_without_event: 0,
        };
        assert_eq!(
            judge_reconciliation(zero),
            Outcome::pass(
                "credited deposits without payment: 0, payments without ledger entry: 0, paid invoices without webhook row: 0, credits breaking the matching rules: 0, uncredited deposits without a system event: 0"
            )
        );
        let silent = judge_reconciliation(Reconciliation {
            uncredited_without_event: 1,
            ..zero
        });
        assert_eq!(silent.verdict, Verdict::Fail);
        let gap = judge_reconciliation(Reconciliation {
            paid_invoices_without_webhook: 2,
            ..zero
        });
        assert_eq!(gap.verdict, Verdict::Fail);
        assert!(
            gap.evidence
                .contains("paid invoices without webhook row: 2")
        );
    }
}
