//! End-to-end tests of `psctl smoke` against the sandbox (`scripts/test.sh` brings it up and
//! exports its environment; without it these tests fail, they never skip).
//!
//! Each test gets its own namespace and its own migrated database on the sandbox's Postgres,
//! deploys the real service images (built from this workspace and pushed to the sandbox
//! registry under a content-derived tag, see `support::images`) with `psctl deploy`, breaks one
//! thing, and runs `psctl smoke` as an operator would, as the namespace's least-privilege
//! ServiceAccount (tests/support).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use sqlx::{Connection as _, PgConnection};

use support::{Sandbox, check, report};

#[tokio::test]
async fn a_healthy_deployment_passes_every_check() {
    let sandbox = Sandbox::services("smoke-healthy").await;
    let config = sandbox.config("healthy", |_| {});
    sandbox.deploy(&config, &[]);
    // Prometheus discovers new pods within seconds (file_sd); --wait absorbs that.
    let (code, stdout, stderr) = sandbox.psctl(&config, &["smoke", "--wait", "60s", "-o", "json"]);
    let report = report(&stdout);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(
        report["summary"],
        serde_json::json!({"total": 16, "passed": 16, "failed": 0, "skipped": 0}),
        "{report:#}"
    );
    // Smoke found each release's PrometheusRule loaded for this namespace (the names are
    // checked against Prometheus' own answer below).
    for (name, object) in [
        ("alert-rules/poller", "problemsolver-poller"),
        ("alert-rules/webhook", "problemsolver-webhook"),
    ] {
        let rules = check(&report, name);
        assert_eq!(rules["result"], "pass", "{rules}");
        let evidence = rules["evidence"].as_str().unwrap();
        assert!(
            evidence.starts_with("Prometheus has loaded the ")
                && evidence.ends_with(&format!(
                    "of PrometheusRule `{}/{object}`",
                    sandbox.namespace
                )),
            "{evidence}"
        );
    }
    let functional = check(&report, "functional/deposit-to-paid");
    let evidence = functional["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("1 payment, 1 ledger entry, 1 webhook_queue row (is_smoke)")
            && evidence.contains("`problemsolver_deposits_processed_total`"),
        "{evidence}"
    );
    assert!(
        functional["duration_ms"].as_u64().unwrap() <= 2_000 + 5_000,
        "the functional check took longer than the poll interval plus 5 s: {functional}"
    );
    assert!(!stdout.contains("postgres://") && !stderr.contains("postgres://"));

    // `psctl deploy` installed both charts' PrometheusRules, and Prometheus loaded them as an
    // operator-managed Prometheus does: the runbook's three alerts are evaluated for this
    // namespace.
    let loaded = runbook_alerts_loaded(&sandbox).await;
    for alert in [
        "PollerConsecutiveErrors",
        "ReconciliationMismatch",
        "WebhookFailureRateHigh",
    ] {
        assert!(
            loaded.iter().any(|name| name == alert),
            "{alert} not loaded: {loaded:?}"
        );
    }

    // An environment that turns the rules off is not held to them: skipped, with the reason.
    let rules_off = sandbox.config("rules-off", |environment| {
        environment["components"]["poller"]["values"]["prometheusRule"] =
            serde_json::json!({"enabled": false});
    });
    let (code, stdout, stderr) = sandbox.psctl(
        &rules_off,
        &[
            "smoke",
            "--only",
            "monitoring",
            "--component",
            "poller",
            "-o",
            "json",
        ],
    );
    let monitoring = support::report(&stdout);
    assert_eq!(code, 0, "{monitoring:#}\n{stderr}");
    let skipped = check(&monitoring, "alert-rules/poller");
    assert_eq!(skipped["result"], "skipped", "{skipped}");
    assert!(
        skipped["evidence"]
            .as_str()
            .unwrap()
            .contains("`prometheusRule.enabled: false`"),
        "{skipped}"
    );

    // The same suite as JUnit: well-formed XML with one testcase per check and no failure.
    let (code, junit, stderr) = sandbox.psctl(
        &config,
        &["smoke", "--only", "cluster", "integrity", "-o", "junit"],
    );
    assert_eq!(code, 0, "{junit}\n{stderr}");
    let mut reader = quick_xml::Reader::from_str(&junit);
    let (mut testcases, mut failures) = (0, 0);
    loop {
        match reader.read_event().expect("well-formed JUnit XML") {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                match e.name().as_ref() {
                    b"testcase" => testcases += 1,
                    b"failure" => failures += 1,
                    _ => {}
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!((testcases, failures), (4, 0), "{junit}");

    // The smoke rows are marked as such.
    let mut db = PgConnection::connect(&sandbox.database_url).await.unwrap();
    let (invoices, deposits, hooks): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM invoices WHERE is_smoke AND status = 'paid'),
                (SELECT count(*) FROM deposit_raw WHERE is_smoke AND binance_deposit_id LIKE 'psctl-smoke-%'),
                (SELECT count(*) FROM webhook_queue WHERE is_smoke)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((invoices, deposits, hooks), (1, 1, 1));
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_worker_without_a_required_metric_fails_that_check_by_name() {
    let sandbox = Sandbox::services("smoke-missing-metric").await;
    let config = sandbox.config("deploy", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let strict = sandbox.config("strict", |environment| {
        environment["components"]["webhook"]["metrics"]["required"]
            .as_array_mut()
            .unwrap()
            .push("webhook_smoke_sentinel_total".into());
    });
    let (code, stdout, stderr) = sandbox.psctl(
        &strict,
        &[
            "smoke",
            "--only",
            "metrics",
            "--component",
            "webhook",
            "-o",
            "json",
        ],
    );
    let report = report(&stdout);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    let metrics = check(&report, "metrics/webhook");
    assert_eq!(metrics["result"], "fail", "{report:#}");
    assert!(
        metrics["evidence"]
            .as_str()
            .unwrap()
            .contains("missing required metric(s) webhook_smoke_sentinel_total"),
        "{metrics}"
    );
    assert!(
        stderr.contains("FAIL metrics/webhook"),
        "the failure is named on stderr too: {stderr}"
    );
}

#[tokio::test]
async fn prometheus_down_fails_the_monitoring_checks_with_exit_3() {
    let sandbox = Sandbox::services("smoke-prometheus-down").await;
    let config = sandbox.config("deploy", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down = sandbox.config("down", |environment| {
        environment["prometheus_url"] = format!("http://127.0.0.1:{closed}").into();
    });
    let (code, stdout, stderr) = sandbox.psctl(
        &down,
        &[
            "smoke",
            "--only",
            "monitoring",
            "--component",
            "webhook",
            "-o",
            "json",
        ],
    );
    let report = report(&stdout);
    assert_eq!(code, 3, "{report:#}\n{stderr}");
    for name in ["prometheus-targets/webhook", "promql/webhook"] {
        let failed = check(&report, name);
        assert_eq!(failed["result"], "fail", "{failed}");
        assert_eq!(failed["unreachable"], true, "{failed}");
        let evidence = failed["evidence"].as_str().unwrap();
        assert!(
            evidence.contains(&format!(
                "Prometheus at http://127.0.0.1:{closed} is unreachable"
            )) && evidence.contains("is Prometheus running?"),
            "{evidence}"
        );
    }
    assert_eq!(
        check(&report, "servicemonitor/webhook")["result"],
        "pass",
        "the API server still answers: {report:#}"
    );
}

#[tokio::test]
async fn a_poller_scaled_to_zero_fails_the_functional_check_within_its_timeout() {
    let sandbox = Sandbox::services("smoke-poller-stopped").await;
    let config = sandbox.config("deploy", |_| {});
    sandbox.deploy(&config, &["poller"]);
    let deployments: Api<Deployment> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    deployments
        .patch(
            "problemsolver-poller",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods
        .list(&ListParams::default().labels("app=problemsolver-poller"))
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the poller pods did not go away");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let started = Instant::now();
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "smoke",
            "--only",
            "functional",
            "--functional-timeout",
            "7s",
            "-o",
            "json",
        ],
    );
    let elapsed = started.elapsed();
    let report = report(&stdout);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    let functional = check(&report, "functional/deposit-to-paid");
    assert_eq!(functional["result"], "fail");
    assert!(
        functional["evidence"]
            .as_str()
            .unwrap()
            .contains("was not paid within 7s"),
        "{functional}"
    );
    assert!(
        elapsed < Duration::from_secs(7 + 8),
        "the verdict came after {elapsed:?}, not within the timeout"
    );
}

/// The alerting rules Prometheus has loaded from this test's namespace's PrometheusRules (one
/// file per object, named `<namespace>-<name>.yml`), once both charts' are there.
async fn runbook_alerts_loaded(sandbox: &Sandbox) -> Vec<String> {
    let url = format!(
        "{}/api/v1/rules?type=alert",
        sandbox
            .environment
            .prometheus_url
            .as_deref()
            .expect("the sandbox environment names Prometheus")
            .trim_end_matches('/')
    );
    let prefix = format!("/{}-", sandbox.namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: serde_json::Value = reqwest::get(&url)
            .await
            .expect("Prometheus answers")
            .json()
            .await
            .expect("rules JSON");
        let groups: Vec<&serde_json::Value> = body["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .filter(|group| {
                group["file"]
                    .as_str()
                    .is_some_and(|file| file.contains(&prefix))
            })
            .collect();
        let names: Vec<String> = groups
            .iter()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .filter_map(|rule| rule["name"].as_str().map(str::to_owned))
            .collect();
        if groups.len() >= 2 || Instant::now() > deadline {
            return names;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The runbook's P1 "poller errors > 5" end to end: a healthy poller loses Binance (its
/// Deployment is edited behind psctl's back, as a bad config push would), counts its failed
/// polls, the rule `psctl deploy` installed fires after its `for: 1m`, and Alertmanager
/// receives it on the P1 route.
#[tokio::test(flavor = "multi_thread")]
async fn a_poller_that_cannot_reach_binance_pages_through_the_runbook_alert() {
    let sandbox = Sandbox::services("smoke-alert").await;
    let config = sandbox.config("healthy", |_| {});
    sandbox.deploy(&config, &["poller"]);

    // Same host, a port nothing listens on: every poll fails at connect. Recreate, so the new
    // pod leads as soon as the old one's leadership lapses.
    let deployments: Api<Deployment> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let mut poller = deployments.get("problemsolver-poller").await.unwrap();
    let spec = poller.spec.as_mut().unwrap();
    spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
    let container = &mut spec.template.spec.as_mut().unwrap().containers[0];
    let env = container.env.as_mut().unwrap();
    // The chart's default comes first and the environment's value after it: the last wins.
    let binance = env
        .iter_mut()
        .rev()
        .find(|var| var.name == "BINANCE_API_BASE")
        .expect("the chart sets BINANCE_API_BASE");
    let base = binance.value.clone().unwrap();
    let (host, _) = base.rsplit_once(':').unwrap();
    binance.value = Some(format!("{host}:9"));
    deployments
        .replace("problemsolver-poller", &Default::default(), &poller)
        .await
        .unwrap();

    let alertmanager = std::env::var("ALERTMANAGER_URL")
        .expect("ALERTMANAGER_URL is not set: load the sandbox's environment (psctl-sandbox env)");
    let url = format!(
        "{alertmanager}/api/v2/alerts?filter=alertname%3D%22PollerConsecutiveErrors%22&filter=namespace%3D%22{}%22",
        sandbox.namespace
    );
    // The old leader's lapse, 5 failed polls at 2 s, the rule's `for: 1m`, then evaluation
    // and notification delays.
    let deadline = Instant::now() + Duration::from_secs(240);
    let alert = loop {
        let alerts: serde_json::Value = reqwest::get(&url)
            .await
            .expect("Alertmanager answers")
            .json()
            .await
            .expect("alerts JSON");
        if let Some(alert) = alerts.as_array().and_then(|list| list.first()) {
            break alert.clone();
        }
        if Instant::now() >= deadline {
            let prometheus = std::env::var("PROMETHEUS_URL").unwrap_or_default();
            let query = format!(
                "{prometheus}/api/v1/query?query=%7B__name__%3D~%22problemsolver_poller_(consecutive_errors%7Cis_leader)%22%2Cnamespace%3D%22{}%22%7D",
                sandbox.namespace
            );
            let figures = match reqwest::get(&query).await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(error) => error.to_string(),
            };
            panic!(
                "PollerConsecutiveErrors never reached Alertmanager: {alerts}; Prometheus: {figures}"
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(alert["labels"]["priority"], "P1", "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|url| url.ends_with("poller.md#consecutive-errors")),
        "{alert}"
    );
    let receivers: Vec<&str> = alert["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|receiver| receiver["name"].as_str())
        .collect();
    assert_eq!(receivers, vec!["pagerduty-p1"], "{alert}");
    sandbox.finish().await;
}

/// A real cluster leaves evicted pods behind (phase `Failed`, reason `Evicted`) while the
/// ReplicaSet replaces them: a healthy release with one lying around still passes.
#[tokio::test]
async fn an_evicted_pod_left_around_does_not_fail_a_healthy_release() {
    let sandbox = Sandbox::services("smoke-evicted").await;
    let config = sandbox.config("deploy", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let pods: Api<Pod> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let selector = "app=problemsolver-webhook";
    let before = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items;
    let replicas = before.len();
    let victim = before[0].metadata.name.clone().unwrap();
    sandbox.evict(&victim).await;

    let ended = |pod: &Pod| {
        matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed" | "Succeeded")
        )
    };
    let ready = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    // The evicted pod stays, Failed/Evicted; the ReplicaSet brings the count back.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = pods
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items;
        let evicted = now
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(victim.as_str()))
            .expect("an evicted pod is not deleted");
        let status = evicted.status.clone().unwrap_or_default();
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("Evicted"));
        let live_ready = now.iter().filter(|p| !ended(p) && ready(p)).count();
        if live_ready == replicas && now.len() == replicas + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replacement for the evicted pod: {} pods, {live_ready} ready",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "smoke",
            "--only",
            "cluster",
            "--component",
            "webhook",
            "--wait",
            "30s",
            "-o",
            "json",
        ],
    );
    let smoke = report(&stdout);
    assert_eq!(code, 0, "{smoke:#}\n{stderr}");
    let pods_ready = check(&smoke, "pods-ready/webhook");
    assert_eq!(pods_ready["result"], "pass", "{pods_ready}");
    assert!(
        pods_ready["evidence"]
            .as_str()
            .unwrap()
            .ends_with("(1 ended pod(s) not judged)"),
        "{pods_ready}"
    );

    // `psctl status` shows the evicted pod as kubectl does, and exits 0.
    let (code, stdout, stderr) = sandbox.psctl(&config, &["status", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let status = report(&stdout);
    let shown = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["pods"].as_array().unwrap().iter())
        .find(|p| p["name"] == victim.as_str())
        .cloned()
        .expect("status lists the evicted pod");
    assert_eq!(shown["phase"], "Evicted", "{shown}");
}
