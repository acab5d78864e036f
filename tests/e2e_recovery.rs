//! End-to-end tests of the verified rollback (`psctl rollback` checks the recovery after the
//! rollout) with the real service images on the sandbox (`scripts/test.sh` brings it up; without
//! it these tests fail, they never skip). Each test has its own namespace and database and runs
//! psctl as the namespace's least-privilege ServiceAccount (tests/support).
//!
//! What they prove: a rollback to a revision whose pods get Ready but whose metrics endpoint is
//! gone rolls out and then exits 1, naming the failed check in its JSON report and the audit
//! outcome; `--no-verify` accepts the same rollback; a rollback to a healthy revision passes;
//! the deposit-rate baseline is read from the real Prometheus at the bad revision's deploy time.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::{Sandbox, report};

/// `(revision, status)` of every revision of the webhook, oldest first.
fn revisions(sandbox: &Sandbox, config: &Path) -> Vec<(u64, String)> {
    sandbox
        .history(config, "webhook")
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn check<'a>(verification: &'a Value, name: &str) -> &'a Value {
    verification["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {verification:#}"))
}

#[tokio::test]
async fn a_rollback_to_a_revision_that_serves_no_metrics_rolls_out_then_exits_1() {
    let sandbox = &Sandbox::services("recovery-broken").await;
    let config = sandbox.config("good", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    // Revision 2 moves the metrics port: the pods get Ready (their probes follow the named
    // port), but the metrics Service no longer answers on the port psctl.yaml names. Its own
    // deploy fails verification and is kept (--no-rollback), then revision 3 repairs it.
    let broken = sandbox.config("broken", |environment| {
        environment["components"]["webhook"]["values"]["metrics"] = json!({"port": 8011});
    });
    let deploy = |config: &Path, extra: &[&str]| {
        let mut args = vec![
            "deploy",
            "--component",
            "webhook",
            "--tag",
            sandbox.tag.as_str(),
            "--timeout",
            "3m",
        ];
        args.extend_from_slice(extra);
        sandbox.psctl(config, &args)
    };
    let (code, stdout, stderr) = deploy(&broken, &["--no-rollback"]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("post-deploy smoke failed"), "{stderr}");
    let (code, _, stderr) = deploy(&config, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        revisions(sandbox, &config),
        [
            (1, "superseded".to_owned()),
            (2, "superseded".to_owned()),
            (3, "deployed".to_owned()),
        ]
    );

    // Back to the broken revision: Helm rolls back, the rollout completes, the verification
    // says no and the command exits 1.
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &["rollback", "webhook", "--to-rev", "2", "-o", "json"],
    );
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let rolled = report(&stdout);
    assert_eq!(rolled["target_revision"], 2, "{rolled:#}");
    let verification = &rolled["verification"];
    assert_eq!(verification["status"], "failed", "{rolled:#}");
    assert_eq!(check(verification, "pods-ready/webhook")["result"], "pass");
    let metrics = check(verification, "metrics/webhook");
    assert_eq!(metrics["result"], "fail", "{verification:#}");
    assert_eq!(metrics["unreachable"], false, "{verification:#}");
    assert!(verification["deposit_rate"].is_null(), "{verification:#}");
    assert!(
        stderr.contains("the rollback of `webhook` rolled out but the service did not recover: metrics/webhook: "),
        "{stderr}"
    );
    assert!(stderr.contains("--to-rev N"), "the hint: {stderr}");
    // The rollback itself happened: revision 4 is revision 2 again.
    assert_eq!(
        revisions(sandbox, &config).last(),
        Some(&(4, "deployed".to_owned()))
    );

    // Back to the healthy revision 3: verified and exit 0.
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &["rollback", "webhook", "--to-rev", "3", "-o", "json"],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let verification = &report(&stdout)["verification"];
    assert_eq!(verification["status"], "passed", "{verification:#}");
    assert_eq!(check(verification, "metrics/webhook")["result"], "pass");

    // `--no-verify` takes the operator's word: the broken revision again, exit 0, skipped.
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "rollback",
            "webhook",
            "--to-rev",
            "2",
            "--no-verify",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let verification = &report(&stdout)["verification"];
    assert_eq!(verification["status"], "skipped", "{verification:#}");
    assert_eq!(verification["reason"], "--no-verify", "{verification:#}");
    assert_eq!(verification["checks"], json!([]), "{verification:#}");
}

#[tokio::test]
async fn the_deposit_rate_baseline_is_read_from_prometheus_at_the_bad_revisions_deploy_time() {
    let sandbox = &Sandbox::services("recovery-baseline").await;
    let with_baseline = |name: &str, query: &str| {
        let query = query.to_owned();
        sandbox.config(name, move |environment| {
            environment["recovery"] = json!({
                "deposit_rate_baseline": {"query": query, "window": "20s", "interval": "5s"}
            });
        })
    };
    // A constant: Prometheus answers 1 at any time, so the rate is back at once.
    let steady = with_baseline("steady", "vector(1)");
    sandbox.deploy(&steady, &["webhook"]);
    sandbox.deploy(&steady, &["webhook"]);
    let deployed_at = sandbox.history(&steady, "webhook")[1]["updated"]
        .as_str()
        .unwrap()
        .to_owned();
    let deployed_at = chrono::DateTime::parse_from_rfc3339(&deployed_at)
        .unwrap()
        .timestamp();
    let (code, stdout, stderr) = sandbox.psctl(
        &steady,
        &["rollback", "webhook", "--to-rev", "1", "-o", "json"],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let rate = &report(&stdout)["verification"]["deposit_rate"];
    assert_eq!(rate["result"], "pass", "{rate:#}");
    assert_eq!(rate["baseline"], 1.0, "{rate:#}");
    assert_eq!(rate["baseline_source"], "revision_deployed", "{rate:#}");
    assert_eq!(rate["baseline_at"], deployed_at, "{rate:#}");
    assert_eq!(rate["threshold"], 0.8, "{rate:#}");

    // A series that did not exist before the incident: nothing to compare with, exit 1 with
    // the reason (the pods themselves are healthy).
    let absent = with_baseline(
        "absent",
        "sum(rate(problemsolver_no_such_counter_total[5m]))",
    );
    let (code, stdout, stderr) = sandbox.psctl(
        &absent,
        &["rollback", "webhook", "--to-rev", "2", "-o", "json"],
    );
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let verification = &report(&stdout)["verification"];
    assert_eq!(verification["status"], "failed", "{verification:#}");
    assert_eq!(check(verification, "metrics/webhook")["result"], "pass");
    let rate = &verification["deposit_rate"];
    assert_eq!(rate["result"], "fail", "{rate:#}");
    assert!(
        rate["evidence"]
            .as_str()
            .unwrap()
            .contains("no data at the baseline time"),
        "{rate:#}"
    );
    assert!(stderr.contains("deposit-rate: "), "{stderr}");
}

/// The rollback runbook's "uninstall and redeploy the pinned tag": the dry run names what runs
/// and the last good tag, the uninstall removes the release, its Deployment and pods, and a
/// deploy of the pinned tag brings the component back as revision 1.
#[tokio::test]
async fn uninstall_then_deploy_the_pinned_tag() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};

    let sandbox = &Sandbox::services("recovery-uninstall").await;
    let config = sandbox.config("uninstall", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let next = format!("{}-next", sandbox.tag);
    let (registry, from, to) = (sandbox.registry.clone(), sandbox.tag.clone(), next.clone());
    tokio::task::spawn_blocking(move || {
        support::images::retag(&registry, "problemsolver-webhook-worker", &from, &to);
    })
    .await
    .unwrap();
    let (code, _, stderr) = sandbox.psctl(
        &config,
        &[
            "deploy",
            "--component",
            "webhook",
            "--tag",
            &next,
            "--timeout",
            "3m",
        ],
    );
    assert_eq!(code, 0, "{stderr}");

    // The dry run: what runs now, the pinned tag to come back to, nothing changed.
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &["uninstall", "webhook", "--dry-run", "-o", "json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let plan = report(&stdout);
    assert_eq!(plan["installed"]["revision"], 2, "{plan:#}");
    assert_eq!(plan["installed"]["image_tag"], next.as_str(), "{plan:#}");
    assert_eq!(
        plan["installed"]["last_good_tag"],
        sandbox.tag.as_str(),
        "{plan:#}"
    );
    assert_eq!(
        plan["redeploy"],
        format!(
            "psctl deploy --env e2e --component webhook --tag {}",
            sandbox.tag
        ),
        "{plan:#}"
    );
    assert_eq!(revisions(sandbox, &config).len(), 2);

    let (code, stdout, stderr) = sandbox.psctl(&config, &["uninstall", "webhook", "-o", "json"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("Deployment problemsolver-webhook and its pods are gone"),
        "{stderr}"
    );
    assert!(revisions(sandbox, &config).is_empty());
    let deployments = Api::<Deployment>::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    assert!(
        deployments
            .get_opt("problemsolver-webhook")
            .await
            .unwrap()
            .is_none()
    );
    let pods = Api::<Pod>::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let left = pods
        .list(&ListParams::default().labels("app=problemsolver-webhook"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items.len());

    // Nothing left to uninstall: refused.
    let (code, _, stderr) = sandbox.psctl(&config, &["uninstall", "webhook"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not installed"), "{stderr}");

    // The pinned tag again: a fresh release, serving.
    let (code, _, stderr) = sandbox.psctl(
        &config,
        &[
            "deploy",
            "--component",
            "webhook",
            "--tag",
            &sandbox.tag,
            "--timeout",
            "3m",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(revisions(sandbox, &config), [(1, "deployed".to_owned())]);
    support::cluster::wait_serving(
        &sandbox.admin,
        &sandbox.namespace,
        "problemsolver-webhook",
        "app=problemsolver-webhook",
        &sandbox.tag,
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|reason| panic!("the pinned tag is not serving: {reason}"));
}
