//! End-to-end tests of `psctl run` against the sandbox (`scripts/test.sh` brings it up and
//! exports its environment; without it these tests fail, they never skip).
//!
//! The test deploys the real service images into a namespace and database of its own
//! (tests/support; psctl runs as the namespace's least-privilege ServiceAccount), then runs
//! playbooks as an operator would: a failing smoke step
//! rolls back the release the run changed, `--from` resumes with the recorded baseline, a
//! `continue` step lets the run go on but still exit 1, and dry runs are deterministic.

mod support;

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

use support::images::retag;
use support::{Psctl, Sandbox, report};

fn with_canary(environment: &mut serde_json::Value) {
    environment["components"]["webhook"]["canary"] = serde_json::json!({
        "deployment": "problemsolver-webhook-canary", "steps": [10, 30, 60, 100], "bake": "5m",
    });
}

fn steps(report: &serde_json::Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn history(sandbox: &Sandbox, config: &Path, component: &str) -> Vec<serde_json::Value> {
    let (code, stdout, stderr) = sandbox.psctl(config, &["history", component, "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    report(&stdout).as_array().unwrap().clone()
}

#[tokio::test]
async fn a_failed_step_rolls_back_what_the_run_changed_and_the_run_resumes_from_it() {
    let sandbox = Sandbox::services("playbook").await;
    failed_step_rolls_back_and_resumes(&sandbox).await;
}

async fn failed_step_rolls_back_and_resumes(sandbox: &Sandbox) {
    let good = sandbox.config("good", with_canary);
    // The same environment, but the webhook must expose a metric it does not have: the smoke
    // step of the run fails while the deploy step (poller only) succeeds.
    let broken = sandbox.config("broken", |environment| {
        with_canary(environment);
        environment["components"]["webhook"]["metrics"]["required"]
            .as_array_mut()
            .unwrap()
            .push("webhook_metric_nobody_exports".into());
    });
    sandbox.deploy(&good, &[]);
    let registry = sandbox.environment.registry.clone().unwrap();
    let next = format!("{}-next", sandbox.tag);
    retag(&registry, "problemsolver-poller", &sandbox.tag, &next);

    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("e2e.yaml");
    std::fs::write(
        &playbook,
        "name: e2e-release\nvars:\n  wait: 60s\nsteps:\n  - deploy:\n      name: deploy-poller\n      components: [poller]\n      \
         tag: ${tag}\n  - smoke:\n      name: smoke\n      only: [metrics]\n      wait: ${wait}\n      on_failure: rollback\n  - status\n",
    )
    .unwrap();
    let playbook = playbook.display().to_string();

    // 1. The smoke step fails: the poller returns to the revision it ran before the run.
    let (code, stdout, stderr) = sandbox.psctl(
        &broken,
        &[
            "run",
            &playbook,
            "--var",
            &format!("tag={next}"),
            "--var",
            "wait=1s",
            "-o",
            "json",
        ],
    );
    let first = report(&stdout);
    assert_eq!(code, 1, "{first:#}\n{stderr}");
    assert_eq!(first["result"], "rolled-back", "{first:#}");
    assert_eq!(
        steps(&first),
        [
            ("deploy-poller".to_owned(), "passed".to_owned()),
            ("smoke".to_owned(), "failed".to_owned()),
            ("status".to_owned(), "not-run".to_owned()),
        ]
    );
    assert_eq!(
        first["rollbacks"],
        serde_json::json!(["poller to revision 1"])
    );
    assert!(
        first["steps"][1]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{first:#}"
    );
    assert!(
        first["resume"]
            .as_str()
            .is_some_and(|r| r.contains("--from 2")),
        "{first:#}"
    );
    assert!(stderr.contains("[1/3] deploy-poller"), "{stderr}");
    let poller = history(sandbox, &good, "poller");
    assert_eq!(poller.len(), 3, "{poller:#?}");
    assert_eq!(poller[1]["image_tag"], next.as_str());
    assert_eq!(poller[2]["image_tag"], sandbox.tag.as_str());
    assert_eq!(poller[2]["status"], "deployed");
    // The webhook was never touched by the run.
    assert_eq!(history(sandbox, &good, "webhook").len(), 1);

    // The record in the cluster says what happened, for any operator.
    let record = Api::<ConfigMap>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .get("psctl-run-e2e-release")
        .await
        .unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&record.data.unwrap()["state.json"]).unwrap();
    assert_eq!(state["status"], "rolled-back");
    assert_eq!(state["baseline"]["poller"]["revision"], 1);
    assert_eq!(state["baseline"]["webhook"]["revision"], 1);

    // 2. After the fix (the good configuration), resume at the smoke step: step 1 keeps its
    //    earlier result, the rest runs, and the run succeeds.
    let (code, stdout, stderr) = sandbox.psctl(
        &good,
        &[
            "run",
            &playbook,
            "--var",
            &format!("tag={next}"),
            "--from",
            "smoke",
            "-o",
            "json",
        ],
    );
    let resumed = report(&stdout);
    assert_eq!(code, 0, "{resumed:#}\n{stderr}");
    assert!(stderr.contains("resuming the run started"), "{stderr}");
    assert_eq!(resumed["result"], "succeeded");
    assert_eq!(
        steps(&resumed),
        [
            ("deploy-poller".to_owned(), "passed".to_owned()),
            ("smoke".to_owned(), "passed".to_owned()),
            ("status".to_owned(), "passed".to_owned()),
        ]
    );
    // Each step's own JSON is in the report.
    assert!(
        resumed["steps"][2]["data"]["components"].is_array(),
        "{resumed:#}"
    );

    // 3. `continue`: a failing step is recorded, the run goes on, and still exits 1.
    std::fs::write(
        dir.path().join("continue.yaml"),
        "name: e2e-continue\nsteps:\n  - deploy:\n      components: [webhook]\n      tag: tag-that-was-never-pushed\n      \
         on_failure: continue\n  - status\n",
    )
    .unwrap();
    let (code, stdout, stderr) = sandbox.psctl(
        &good,
        &[
            "run",
            &dir.path().join("continue.yaml").display().to_string(),
            "-o",
            "json",
        ],
    );
    let continued = report(&stdout);
    assert_eq!(code, 1, "{continued:#}\n{stderr}");
    assert_eq!(continued["result"], "completed-with-failures");
    assert_eq!(
        steps(&continued),
        [
            ("deploy".to_owned(), "failed".to_owned()),
            ("status".to_owned(), "passed".to_owned()),
        ]
    );
    assert_eq!(history(sandbox, &good, "webhook").len(), 1);

    // 4. The shipped release playbook's plan, twice: identical, and nothing changes.
    let dry = || {
        let (code, stdout, stderr) = sandbox.psctl(
            &good,
            &[
                "run",
                "playbooks/release.yaml",
                "--var",
                "tag=1.2.3",
                "--dry-run",
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let plan = dry();
    assert_eq!(plan, dry());
    for line in [
        "psctl build --tag 1.2.3 --env e2e",
        "psctl deploy --component poller --tag 1.2.3 --env e2e",
        "psctl canary start --component webhook --tag 1.2.3 --steps 10,30,60,100 --bake 5m --env e2e",
    ] {
        assert!(plan.contains(line), "`{line}` missing from:\n{plan}");
    }
    assert_eq!(history(sandbox, &good, "poller").len(), 3);
}

#[test]
fn a_playbook_error_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("typo.yaml");
    std::fs::write(
        &playbook,
        "name: typo\nsteps:\n  - status\n  - deploy:\n      components: [poller]\n      tgs: v1\n",
    )
    .unwrap();
    let config = dir.path().join("psctl.yaml");
    std::fs::write(&config, "environments:\n  x:\n    kube_context: nowhere\n").unwrap();
    let run = Psctl::new()
        .args(["run", &playbook.display().to_string(), "--dry-run"])
        .config(&config)
        .run();
    let stderr = &run.stderr;
    assert_eq!(run.code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:6: step 2 (deploy", playbook.display())),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `tgs`"), "{stderr}");
}
