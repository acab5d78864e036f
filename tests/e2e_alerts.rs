//! End-to-end tests of the runbook's alerts (`charts/*/rules/alerts.yaml`, exactly as shipped:
//! `psctl deploy` installs them as PrometheusRules, the sandbox's Prometheus loads them and
//! sends what fires to the sandbox's Alertmanager). Each scenario makes its alert fire for real
//! in a namespace of its own and reads it back from Alertmanager's API on the route the runbook
//! promises (`sandbox/src/render.rs`: P1 → `pagerduty-p1`, P2 → `pagerduty-p2`).
//!
//! The rules keep their `for: 5m`, so each scenario takes six minutes or more. Both run at once,
//! in one test: one slot of the test runner waits instead of two, and `.config/nextest.toml`
//! starts this test first so it overlaps the rest of the suite. They use two namespaces because
//! Alertmanager's inhibition (a P1 silences its namespace's P2 and P3) would otherwise suppress
//! the P2 under the P1. `PollerConsecutiveErrors` is proven in `tests/e2e_smoke.rs`.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;

use support::sandbox::RuntimeSecret;
use support::{Sandbox, check, report};

#[tokio::test(flavor = "multi_thread")]
async fn the_runbook_alerts_fire_and_reach_alertmanager_on_their_routes() {
    // Set up one after the other (the image builds and the deploys share the sandbox), then
    // wait out both rules' `for:` at the same time.
    let webhook = WebhookFailures::start().await;
    let reconciliation = Reconciliation::start().await;
    tokio::join!(webhook.pages_p2(), reconciliation.pages_p1());
}

/// `WebhookFailureRateHigh` (> 5 % of deliveries failing over 10 minutes, for 5 minutes → P2):
/// a worker whose `allowInsecureTargets: false` refuses the sandbox's merchant sink (plain HTTP
/// on loopback), so every delivery of this namespace fails and nobody else's does.
struct WebhookFailures {
    sandbox: Sandbox,
    traffic: Traffic,
}

impl WebhookFailures {
    async fn start() -> Self {
        let sandbox = Sandbox::builder("alert-webhook")
            .service_images()
            .runtime_secret(RuntimeSecret::Sandbox)
            .sandbox_merchant()
            .start()
            .await;
        let config = sandbox.config("refusing", |environment| {
            environment["components"]["webhook"]["values"]["allowInsecureTargets"] = false.into();
        });
        sandbox.deploy(&config, &["webhook"]);
        let pool = pool(&sandbox).await;
        // Fed as the canary tests feed the queue: a steady trickle of webhooks for the merchant.
        let traffic = Traffic(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(500));
            loop {
                ticker.tick().await;
                let _ = sqlx::query(
                    "INSERT INTO webhook_queue (merchant_id, event_type, payload, max_attempts) \
                     SELECT id, 'invoice.paid', jsonb_build_object('alert_e2e', now()), 50 FROM merchants LIMIT 1",
                )
                .execute(&pool)
                .await;
            }
        }));
        Self { sandbox, traffic }
    }

    async fn pages_p2(self) {
        let namespace = &self.sandbox.namespace;
        // The first failures are counted within seconds; two scrapes later the 10-minute rate is
        // 100 % failures, then `for: 5m`, evaluation every 5 s and Alertmanager's group_wait.
        let alert = wait_for_alert(
            "WebhookFailureRateHigh",
            namespace,
            Duration::from_secs(9 * 60),
            &[
                format!(
                    "sum by (status) (rate(webhook_deliveries_total{{namespace=\"{namespace}\"}}[10m]))"
                ),
                format!("ALERTS{{alertname=\"WebhookFailureRateHigh\",namespace=\"{namespace}\"}}"),
            ],
        )
        .await;
        assert_routed(
            &alert,
            "P2",
            "warning",
            "webhook.md#failure-rate",
            "pagerduty-p2",
        );
        assert_eq!(alert["labels"]["track"], "stable", "{alert}");
        drop(self.traffic);
        self.sandbox.finish().await;
    }
}

/// `ReconciliationMismatch` (> 0.1 % of checked deposits not reconciling over 15 minutes, for
/// 5 minutes → P1): a deposit credited by hand in SQL, behind the poller's back. The deposit is
/// marked credited to an invoice (and the invoice paid) without the payment, ledger credit and
/// webhook row the poller writes in the same transaction; the running poller reconciles it at
/// its next cycle (`services/poller/src/store.rs::reconcile_after`) and counts the mismatch.
struct Reconciliation {
    sandbox: Sandbox,
    pool: PgPool,
}

impl Reconciliation {
    async fn start() -> Self {
        let sandbox = Sandbox::services("alert-reconcile").await;
        let config = sandbox.config("healthy", |_| {});
        sandbox.deploy(&config, &["poller"]);
        // One deposit the poller credits itself: checked, and consistent.
        let (code, stdout, stderr) =
            sandbox.psctl(&config, &["smoke", "--only", "functional", "-o", "json"]);
        let smoke = report(&stdout);
        assert_eq!(code, 0, "{smoke:#}\n{stderr}");
        assert_eq!(
            check(&smoke, "functional/deposit-to-paid")["result"],
            "pass"
        );
        let pool = pool(&sandbox).await;
        Self { sandbox, pool }
    }

    async fn pages_p1(self) {
        let namespace = self.sandbox.namespace.clone();
        let counters = format!(
            "{{__name__=~\"problemsolver_reconciliation_(checked|mismatches)_total\",namespace=\"{namespace}\"}}"
        );
        // Prometheus has the counters before the mismatch, so the rule's `increase` sees it
        // rise rather than a series that starts at 1.
        let checked =
            format!("sum(problemsolver_reconciliation_checked_total{{namespace=\"{namespace}\"}})");
        wait_for_value(&checked, |value| value >= 1.0, &counters).await;

        let deposit = credit_by_hand(&self.pool).await;

        // The poller really counts it (a 2 s poll interval: at its next cycle).
        let mismatches = format!(
            "sum(problemsolver_reconciliation_mismatches_total{{namespace=\"{namespace}\"}})"
        );
        wait_for_value(&mismatches, |value| value >= 1.0, &counters).await;

        let alert = wait_for_alert(
            "ReconciliationMismatch",
            &namespace,
            Duration::from_secs(8 * 60),
            &[
                counters.clone(),
                format!(
                    "sum(increase(problemsolver_reconciliation_mismatches_total{{namespace=\"{namespace}\"}}[15m])) / sum(increase(problemsolver_reconciliation_checked_total{{namespace=\"{namespace}\"}}[15m]))"
                ),
                format!("ALERTS{{alertname=\"ReconciliationMismatch\",namespace=\"{namespace}\"}}"),
            ],
        )
        .await;
        assert_routed(
            &alert,
            "P1",
            "critical",
            "poller.md#reconciliation-mismatch",
            "pagerduty-p1",
        );
        // `psctl smoke` names the same record: the integrity check fails on the hand credit.
        let config = self.sandbox.config("check", |_| {});
        let (code, stdout, stderr) = self
            .sandbox
            .psctl(&config, &["smoke", "--only", "integrity", "-o", "json"]);
        let integrity = report(&stdout);
        assert_eq!(code, 1, "{integrity:#}\n{stderr}");
        assert_eq!(
            check(&integrity, "integrity/reconciliation")["result"],
            "fail",
            "deposit {deposit}: {integrity:#}"
        );
        self.pool.close().await;
        self.sandbox.finish().await;
    }
}

/// What an operator's hand-written credit does: a fresh invoice marked paid and a deposit marked
/// credited to it, in one transaction, with none of the payment, ledger credit and webhook row
/// the poller writes. Returns the deposit's id.
async fn credit_by_hand(pool: &PgPool) -> i64 {
    let mut transaction = pool.begin().await.unwrap();
    let (invoice, amount): (String, String) = sqlx::query_as(
        "SELECT id::text, publish_amount::text
           FROM create_invoice((SELECT id FROM merchants ORDER BY created_at, id LIMIT 1),
                               'USDT', 'TRX', 'alert-e2e-address', 25.00)",
    )
    .fetch_one(&mut *transaction)
    .await
    .expect("create an invoice");
    sqlx::query(
        "UPDATE invoices SET status = 'paid', paid_at = now(), updated_at = now() WHERE id = $1::uuid",
    )
    .bind(&invoice)
    .execute(&mut *transaction)
    .await
    .expect("mark the invoice paid");
    let deposit: i64 = sqlx::query_scalar(
        "INSERT INTO deposit_raw (binance_deposit_id, tx_id, coin, network, address, amount,
                                  binance_status, insert_time, matched_invoice_id, processed_at,
                                  outcome)
         VALUES ('manual-' || $1, 'manual-' || $1, 'USDT', 'TRX', 'alert-e2e-address',
                 $2::numeric, 1, now(), $1::uuid, now(), 'credited')
         RETURNING id",
    )
    .bind(&invoice)
    .bind(&amount)
    .fetch_one(&mut *transaction)
    .await
    .expect("mark a deposit credited");
    transaction.commit().await.unwrap();
    deposit
}

/// Aborts the feeding task when dropped (also when an assertion fails).
struct Traffic(tokio::task::JoinHandle<()>);

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn pool(sandbox: &Sandbox) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&sandbox.database_url)
        .await
        .expect("connect to the test database")
}

fn prometheus_url() -> String {
    std::env::var("PROMETHEUS_URL")
        .expect("PROMETHEUS_URL is not set: load the sandbox's environment (psctl-sandbox env)")
}

/// The instant-query answer of `promql`, as text (what a failure message shows).
async fn figures(promql: &str) -> String {
    let url = match url::Url::parse_with_params(
        &format!("{}/api/v1/query", prometheus_url()),
        [("query", promql)],
    ) {
        Ok(url) => url,
        Err(error) => return error.to_string(),
    };
    match reqwest::get(url).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(error) => error.to_string(),
    }
}

/// Waits up to a minute for `promql` (a one-series sum) to satisfy `wanted`; fails with the
/// answers of `promql` and `explain`.
async fn wait_for_value(promql: &str, wanted: impl Fn(f64) -> bool, explain: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer: Value = serde_json::from_str(&figures(promql).await).unwrap_or_default();
        let value = answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|text| text.parse::<f64>().ok());
        if value.is_some_and(&wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{promql}` never reached the value waited for: {answer}; {explain}: {}",
            figures(explain).await
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits for `alertname` of `namespace` in Alertmanager (`/api/v2/alerts`); on timeout fails
/// with what Alertmanager holds and the answers of the `explain` queries.
async fn wait_for_alert(
    alertname: &str,
    namespace: &str,
    within: Duration,
    explain: &[String],
) -> Value {
    let alertmanager = std::env::var("ALERTMANAGER_URL")
        .expect("ALERTMANAGER_URL is not set: load the sandbox's environment (psctl-sandbox env)");
    let url = url::Url::parse_with_params(
        &format!("{alertmanager}/api/v2/alerts"),
        [
            ("filter", format!("alertname=\"{alertname}\"")),
            ("filter", format!("namespace=\"{namespace}\"")),
        ],
    )
    .unwrap();
    let deadline = Instant::now() + within;
    loop {
        let alerts: Value = reqwest::get(url.clone())
            .await
            .expect("Alertmanager answers")
            .json()
            .await
            .expect("alerts JSON");
        // Until its inhibitions and silences have been evaluated an alert is `unprocessed`.
        if let Some(alert) = alerts.as_array().and_then(|list| list.first())
            && alert["status"]["state"] != "unprocessed"
        {
            return alert.clone();
        }
        if Instant::now() >= deadline {
            let mut explained = Vec::new();
            for promql in explain {
                explained.push(format!("`{promql}` = {}", figures(promql).await));
            }
            panic!(
                "{alertname} of {namespace} never reached Alertmanager within {within:?}: {alerts}; Prometheus: {}",
                explained.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// The alert carries the runbook's labels and link, is active (not inhibited or silenced) and
/// went to `receiver` only.
fn assert_routed(alert: &Value, priority: &str, severity: &str, runbook: &str, receiver: &str) {
    assert_eq!(alert["labels"]["priority"], priority, "{alert}");
    assert_eq!(alert["labels"]["severity"], severity, "{alert}");
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|url| url.ends_with(runbook)),
        "{alert}"
    );
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    let receivers: Vec<&str> = alert["receivers"]
        .as_array()
        .expect("receivers")
        .iter()
        .filter_map(|receiver| receiver["name"].as_str())
        .collect();
    assert_eq!(receivers, vec![receiver], "{alert}");
}
