//! End-to-end tests of `psctl deploy` and `psctl rollback` with the real service images on the
//! sandbox (`scripts/test.sh` brings it up and exports its environment; without it these tests
//! fail, they never skip). Each test has a namespace and a database of its own, removed at the
//! end even when an assertion fails, and runs psctl as the namespace's least-privilege
//! ServiceAccount (tests/support).
//!
//! What they prove: a release that crash-loops is caught by its CrashLoopBackOff, explained and
//! rolled back so that the previous revision serves again; one that serves for 20 s and then
//! crashes, after its rollout is complete, is caught by deploy's hold and rolled back too; `rollback --to-rev` returns to an
//! explicit revision and refuses one that does not exist; a release left in `pending-upgrade`
//! blocks deploys with the `--unstick` hint, and `rollback --unstick` recovers it; a chart
//! change to the Deployment's immutable selector is refused by the API server, explained with a
//! hint and undone; an identity
//! granted less than `psctl rbac` prints is refused before anything changes.

mod support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use support::cluster::{leave_pending_upgrade, tag_of, wait_serving};
use support::images::{crashes_after_image, crashing_image, retag};
use support::sandbox::Grant;
use support::{Sandbox, report};

const WEBHOOK_DEPLOYMENT: &str = "problemsolver-webhook";
const WEBHOOK_SELECTOR: &str = "app=problemsolver-webhook";

/// `(revision, status, image tag)` of every revision of a component, oldest first.
fn history(sandbox: &Sandbox, config: &Path, component: &str) -> Vec<(u64, String, String)> {
    let (code, stdout, stderr) = sandbox.psctl(config, &["history", component, "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    report(&stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
                r["image_tag"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn revision(number: u64, status: &str, tag: &str) -> (u64, String, String) {
    (number, status.to_owned(), tag.to_owned())
}

async fn template_tag(sandbox: &Sandbox) -> String {
    let deployment = Api::<Deployment>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
        .get(WEBHOOK_DEPLOYMENT)
        .await
        .unwrap();
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    tag_of(&image).to_owned()
}

/// The sandbox's tag serves the webhook (template, replicas, every pod) within a minute.
async fn previous_serving(sandbox: &Sandbox) {
    wait_serving(
        &sandbox.admin,
        &sandbox.namespace,
        WEBHOOK_DEPLOYMENT,
        WEBHOOK_SELECTOR,
        &sandbox.tag,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|reason| panic!("the previous revision is not serving: {reason}"));
}

/// After a failed deploy of `bad` over the sandbox's tag: the webhook's history is revision 1,
/// the failed revision 2 and revision 3 back on the sandbox's tag, and that tag serves again
/// (template, replicas, every pod).
async fn rolled_back_and_serving(sandbox: &Sandbox, config: &Path, bad: &str) {
    assert_eq!(
        history(sandbox, config, "webhook"),
        [
            revision(1, "superseded", &sandbox.tag),
            revision(2, "superseded", bad),
            revision(3, "deployed", &sandbox.tag),
        ]
    );
    previous_serving(sandbox).await;
}

#[tokio::test]
async fn a_crashing_release_is_caught_explained_and_the_previous_revision_serves_again() {
    let sandbox = &Sandbox::services("deploy-crash").await;
    let config = sandbox.config("crash", |_| {});
    sandbox.deploy(&config, &[]);
    let registry = sandbox.environment.registry.clone().unwrap();
    let crashes = tokio::task::spawn_blocking(move || {
        crashing_image(&registry, "problemsolver-webhook-worker")
    })
    .await
    .unwrap();

    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "deploy",
            "--component",
            "webhook",
            "--tag",
            &crashes,
            "--timeout",
            "3m",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");

    // Detected by its reason, named on the FAIL line, with the pod and the way back.
    let fail_line = stderr
        .lines()
        .find(|l| l.starts_with("FAIL rollout problemsolver-webhook"))
        .unwrap_or_else(|| panic!("no FAIL rollout line:\n{stderr}"));
    assert!(fail_line.contains("CrashLoopBackOff"), "{fail_line}");
    assert!(
        fail_line.contains("in pod problemsolver-webhook-"),
        "{fail_line}"
    );
    // Explained: the exit code and the pod's events follow the verdict.
    assert!(fail_line.contains("last exit code 1"), "{fail_line}");
    assert!(
        stderr.contains("  events:\n") && stderr.contains("BackOff: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("rolling back webhook: ")
            && stderr.contains("rollback problemsolver-webhook 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("undone: previous revisions restored"),
        "{stderr}"
    );
    let deployed = report(&stdout);
    let result = &deployed["components"][0];
    assert_eq!(result["component"], "webhook", "{deployed:#}");
    assert_eq!(result["result"], "rolled_back", "{deployed:#}");
    assert_eq!(result["previous_revision"], 1, "{deployed:#}");
    let diagnosis = &result["rollout"]["diagnosis"];
    assert_eq!(diagnosis["reason"], "crash_loop_back_off", "{deployed:#}");
    assert!(
        diagnosis["pod"]
            .as_str()
            .is_some_and(|p| p.starts_with("problemsolver-webhook-")),
        "{deployed:#}"
    );

    // The previous revision is deployed again and serving: template, replicas, every pod.
    rolled_back_and_serving(sandbox, &config, &crashes).await;
    // The poller was not part of the deploy and was not touched.
    assert_eq!(
        history(sandbox, &config, "poller"),
        [revision(1, "deployed", &sandbox.tag)]
    );
}

#[tokio::test]
async fn a_release_that_crashes_after_it_served_is_caught_by_the_hold_and_rolled_back() {
    let sandbox = &Sandbox::services("deploy-hold").await;
    let config = sandbox.config("hold", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let registry = sandbox.environment.registry.clone().unwrap();
    let base = sandbox.tag.clone();
    let crashes = tokio::task::spawn_blocking(move || {
        crashes_after_image(&registry, "problemsolver-webhook-worker", &base, 20)
    })
    .await
    .unwrap();

    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "deploy",
            "--component",
            "webhook",
            "--tag",
            &crashes,
            "--hold",
            "40s",
            "--timeout",
            "3m",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The rollout was complete (where `kubectl rollout status` and `helm --wait` stop) before
    // the crash; the hold caught it.
    let holding = stderr
        .find("rollout complete; holding 40s")
        .unwrap_or_else(|| panic!("the rollout never completed before the crash:\n{stderr}"));
    let fail = stderr
        .find("FAIL rollout problemsolver-webhook")
        .unwrap_or_else(|| panic!("no FAIL rollout line:\n{stderr}"));
    assert!(holding < fail, "{stderr}");
    let deployed = report(&stdout);
    let result = &deployed["components"][0];
    assert_eq!(result["result"], "rolled_back", "{deployed:#}");
    let reason = result["rollout"]["diagnosis"]["reason"].as_str();
    assert!(
        matches!(reason, Some("restarted" | "crash_loop_back_off")),
        "{deployed:#}"
    );
    // The supervisor's last words are among the crashed container's log lines.
    assert!(
        stderr.contains("supervisor: the service ran 20s; exiting 1"),
        "{stderr}"
    );
    rolled_back_and_serving(sandbox, &config, &crashes).await;
}

#[tokio::test]
async fn a_chart_change_to_an_immutable_selector_is_refused_explained_and_undone() {
    let sandbox = &Sandbox::services("deploy-immutable").await;
    let config = sandbox.config("immutable", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let selector = || async {
        let deployment = Api::<Deployment>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
            .get(WEBHOOK_DEPLOYMENT)
            .await
            .unwrap();
        serde_json::to_value(deployment.spec.unwrap().selector).unwrap()
    };
    let before = selector().await;

    // The chart's `appLabel` value is part of the Deployment's selector, which the API server
    // refuses to change once the Deployment exists.
    let relabelled = sandbox.config("relabelled", |environment| {
        environment["components"]["webhook"]["values"]["appLabel"] =
            serde_json::json!("problemsolver-webhook-v2");
    });
    let (code, stdout, stderr) = sandbox.psctl(
        &relabelled,
        &[
            "deploy",
            "--component",
            "webhook",
            "--tag",
            &sandbox.tag,
            "--timeout",
            "3m",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.lines().any(|l| l
            .trim_start()
            .starts_with("FAIL helm upgrade problemsolver-webhook")),
        "no FAIL helm upgrade line:\n{stderr}"
    );
    assert!(
        stderr.contains("spec.selector: Invalid value: v1.LabelSelector{")
            && stderr.contains("field is immutable"),
        "the API server's refusal is shown:\n{stderr}"
    );
    assert!(
        stderr.contains(
            "hint: the chart changes a field Kubernetes fixes when the object is created"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("undone: previous revisions restored"),
        "{stderr}"
    );

    // Nothing of the refused change stuck: the selector is the old one, the revision after the
    // refused one is deployed on the same tag, and the previous pods serve.
    assert_eq!(selector().await, before);
    let revisions = history(sandbox, &config, "webhook");
    assert_eq!(revisions.len(), 3, "{revisions:?}");
    assert_eq!(
        revisions[2],
        revision(3, "deployed", &sandbox.tag),
        "{revisions:?}"
    );
    previous_serving(sandbox).await;
}

#[tokio::test]
async fn rollback_to_an_explicit_revision_and_a_missing_revision_is_refused() {
    let sandbox = &Sandbox::services("deploy-to-rev").await;
    let config = sandbox.config("to-rev", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let registry = sandbox.environment.registry.clone().unwrap();
    let next = format!("{}-next", sandbox.tag);
    let (from, to) = (sandbox.tag.clone(), next.clone());
    tokio::task::spawn_blocking(move || {
        retag(&registry, "problemsolver-webhook-worker", &from, &to);
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
    assert_eq!(template_tag(sandbox).await, next);

    // A revision that does not exist: refused, nothing changes.
    let (code, stdout, stderr) = sandbox.psctl(&config, &["rollback", "webhook", "--to-rev", "9"]);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("release `problemsolver-webhook` has no revision 9; existing: 1, 2"),
        "{stderr}"
    );
    assert!(stderr.contains("psctl history"), "the hint: {stderr}");
    assert_eq!(
        history(sandbox, &config, "webhook"),
        [
            revision(1, "superseded", &sandbox.tag),
            revision(2, "deployed", &next),
        ]
    );

    // Revision 1, explicitly: a new revision 3 with revision 1's image, serving.
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &["rollback", "webhook", "--to-rev", "1", "-o", "json"],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let plan = report(&stdout);
    assert_eq!(plan["current_revision"], 2, "{plan:#}");
    assert_eq!(plan["target_revision"], 1, "{plan:#}");
    assert_eq!(
        history(sandbox, &config, "webhook"),
        [
            revision(1, "superseded", &sandbox.tag),
            revision(2, "superseded", &next),
            revision(3, "deployed", &sandbox.tag),
        ]
    );
    wait_serving(
        &sandbox.admin,
        &sandbox.namespace,
        WEBHOOK_DEPLOYMENT,
        WEBHOOK_SELECTOR,
        &sandbox.tag,
        // The rollout is complete; replaced pods may still be terminating.
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|reason| panic!("revision 1 is not serving after the rollback: {reason}"));
}

#[tokio::test]
async fn a_release_stuck_in_pending_upgrade_blocks_deploys_until_unstuck() {
    let sandbox = &Sandbox::services("deploy-unstick").await;
    let config = sandbox.config("unstick", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let stuck = leave_pending_upgrade(
        &sandbox.admin,
        &sandbox.namespace,
        "problemsolver-webhook",
        1,
    )
    .await;
    assert_eq!(
        history(sandbox, &config, "webhook"),
        [
            revision(1, "deployed", &sandbox.tag),
            revision(stuck.into(), "pending-upgrade", &sandbox.tag),
        ]
    );

    // The next deploy is refused before it changes anything, with the way out.
    let deploy = [
        "deploy",
        "--component",
        "webhook",
        "--tag",
        sandbox.tag.as_str(),
        "--timeout",
        "3m",
    ];
    let (code, _, stderr) = sandbox.psctl(&config, &deploy);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("stuck in pending-upgrade at revision 2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("psctl rollback webhook --unstick"),
        "{stderr}"
    );
    // A plain rollback is refused too, pointing at --unstick.
    let (code, _, stderr) = sandbox.psctl(&config, &["rollback", "webhook"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--unstick"), "{stderr}");

    // The dry run shows the plan and changes nothing.
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "rollback",
            "webhook",
            "--unstick",
            "--dry-run",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let plan = report(&stdout);
    assert_eq!(plan["mode"], "unstick", "{plan:#}");
    assert_eq!(
        plan["steps"][0]["secret"], "sh.helm.release.v1.problemsolver-webhook.v2",
        "{plan:#}"
    );
    assert_eq!(history(sandbox, &config, "webhook").len(), 2);

    // The pending revision was written a moment ago: a Helm operation may still be running
    // it, so it is left alone (exit 2, nothing changed) unless --force says otherwise.
    let (code, stdout, stderr) = sandbox.psctl(&config, &["rollback", "webhook", "--unstick"]);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("a Helm operation may still be running it")
            && stderr.contains("psctl rollback webhook --unstick --force"),
        "{stderr}"
    );
    assert_eq!(history(sandbox, &config, "webhook").len(), 2);

    // Unstick: the unfinished revision goes, revision 1 is re-applied as revision 2.
    let (code, stdout, stderr) =
        sandbox.psctl(&config, &["rollback", "webhook", "--unstick", "--force"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        history(sandbox, &config, "webhook"),
        [
            revision(1, "superseded", &sandbox.tag),
            revision(2, "deployed", &sandbox.tag),
        ]
    );

    // Deploys work again.
    let (code, _, stderr) = sandbox.psctl(&config, &deploy);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        history(sandbox, &config, "webhook").last(),
        Some(&revision(3, "deployed", &sandbox.tag))
    );
    wait_serving(
        &sandbox.admin,
        &sandbox.namespace,
        WEBHOOK_DEPLOYMENT,
        WEBHOOK_SELECTOR,
        &sandbox.tag,
        // The rollout is complete; replaced pods may still be terminating.
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|reason| panic!("not serving after the unstick and deploy: {reason}"));
}

/// The grant `psctl rbac` prints is what deploy needs, and deploy says so before it changes
/// anything: bound to less, it exits 2 naming each missing verb and resource, and the release
/// history and the running template are as before. Kubernetes' bootstrap `edit` role (whose
/// `system:aggregate-to-edit` part grants Leases in current releases, as the sandbox's does)
/// lacks the Prometheus-operator kinds the charts render; the printed Role without its Lease
/// rules lacks the deploy lock. Bound to the printed Role again, the same deploy succeeds.
#[tokio::test]
async fn deploy_with_less_than_the_printed_grant_refuses_before_any_change() {
    let sandbox = &Sandbox::services("deploy-rbac").await;
    let config = sandbox.config("rbac", |_| {});
    sandbox.deploy(&config, &["webhook"]);
    let next = format!("{}-rbac", sandbox.tag);
    let (registry, from, to) = (sandbox.registry.clone(), sandbox.tag.clone(), next.clone());
    tokio::task::spawn_blocking(move || {
        retag(&registry, "problemsolver-webhook-worker", &from, &to);
    })
    .await
    .unwrap();
    let before = history(sandbox, &config, "webhook");
    assert_eq!(before, [revision(1, "deployed", &sandbox.tag)]);
    let deploy = [
        "deploy",
        "--component",
        "webhook",
        "--tag",
        next.as_str(),
        "--timeout",
        "3m",
    ];
    let refusal = format!(
        "missing permissions in namespace `{}`; nothing was changed. This identity cannot:",
        sandbox.namespace
    );

    // Only the bootstrap `edit` ClusterRole, bound in the namespace.
    sandbox.rebind(Grant::ClusterRole("edit")).await;
    let (code, stdout, stderr) = sandbox.psctl(&config, &deploy);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains(&refusal), "{stderr}");
    for missing in [
        "\n  create servicemonitors.monitoring.coreos.com\n",
        "\n  patch prometheusrules.monitoring.coreos.com\n",
    ] {
        assert!(stderr.contains(missing), "`{missing}` not named:\n{stderr}");
    }
    assert!(
        !stderr.contains("leases"),
        "`edit` grants Leases, they must not be named:\n{stderr}"
    );
    assert!(
        stderr.contains("psctl rbac --env e2e --subject"),
        "{stderr}"
    );
    assert_eq!(history(sandbox, &config, "webhook"), before);
    assert_eq!(template_tag(sandbox).await, sandbox.tag);

    // The printed Role without the rules of the deploy lock: `leases` named, nothing changed.
    sandbox.rebind(Grant::PrintedWithout("leases")).await;
    let (code, stdout, stderr) = sandbox.psctl(&config, &deploy);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains(&refusal), "{stderr}");
    for missing in [
        "\n  create leases.coordination.k8s.io\n",
        "\n  update leases.coordination.k8s.io named `psctl-deploy`",
    ] {
        assert!(stderr.contains(missing), "`{missing}` not named:\n{stderr}");
    }
    assert_eq!(history(sandbox, &config, "webhook"), before);
    assert_eq!(template_tag(sandbox).await, sandbox.tag);

    // Exactly the printed grant again: the same deploy goes through.
    sandbox.rebind(Grant::Printed).await;
    let (code, stdout, stderr) = sandbox.psctl(&config, &deploy);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        history(sandbox, &config, "webhook"),
        [
            revision(1, "superseded", &sandbox.tag),
            revision(2, "deployed", &next),
        ]
    );
    assert_eq!(template_tag(sandbox).await, next);
}
