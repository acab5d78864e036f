//! End-to-end: every mutating command leaves a Kubernetes Event on the object it changed, read
//! back here through the API (and with real kubectl, through both Event APIs) after a deploy, a
//! second deploy, a rollback and the kill switch on and off. Each Event names its reason, type,
//! the component's Deployment (with its uid, so `kubectl describe` shows it), reporting
//! controller `psctl`, the operator and the audit row it mirrors. Needs the sandbox, like every
//! e2e test (`eval "$(psctl-sandbox env)"`); it fails, never skips, without it.

mod support;

use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use support::Sandbox;
use support::images::retag;

const WEBHOOK_DEPLOYMENT: &str = "problemsolver-webhook";

/// `(id, os_user, action)` of every audit row, oldest first.
async fn audit_rows(database_url: &str) -> Vec<(i64, String, String)> {
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let rows = sqlx::query_as("SELECT id, os_user, action FROM ops_audit ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

/// Real kubectl as the sandbox administrator (observation only: psctl's identity writes
/// Events, it need not read them back).
fn kubectl(sandbox: &Sandbox, args: &[&str]) -> String {
    let program = std::env::var("KUBECTL").expect("KUBECTL is set by `psctl-sandbox env`");
    let mut command = Command::new(program);
    if let Some(kubeconfig) = &sandbox.environment.kubeconfig {
        command.arg("--kubeconfig").arg(kubeconfig);
    }
    let output = command
        .arg("--context")
        .arg(&sandbox.environment.kube_context)
        .args(["-n", &sandbox.namespace])
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn deploy_rollback_and_the_kill_switch_each_leave_an_event_naming_the_audit_row() {
    {
        let sandbox = &Sandbox::services("events").await;
        let config = sandbox.config("events", |_| {});
        sandbox.deploy(&config, &["webhook"]);
        let registry = sandbox.registry.clone();
        let next = format!("{}-next", sandbox.tag);
        let (from, to) = (sandbox.tag.clone(), next.clone());
        tokio::task::spawn_blocking(move || {
            retag(&registry, "problemsolver-webhook-worker", &from, &to);
        })
        .await
        .unwrap();
        for args in [
            &[
                "deploy",
                "--component",
                "webhook",
                "--tag",
                next.as_str(),
                "--timeout",
                "3m",
            ][..],
            &["rollback", "webhook"],
            &["kill-switch", "on", "--component", "webhook"],
            &["kill-switch", "off", "--component", "webhook"],
        ] {
            let (code, stdout, stderr) = sandbox.psctl(&config, args);
            assert_eq!(code, 0, "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
            assert!(
                !stderr.contains("Event was not written")
                    && !stderr.contains("Events are not written"),
                "{args:?}: {stderr}"
            );
        }

        let rows = audit_rows(&sandbox.database_url).await;
        let audited: Vec<&(i64, String, String)> = rows
            .iter()
            .filter(|(_, _, action)| action != "lock-takeover")
            .collect();
        assert_eq!(
            audited
                .iter()
                .map(|(_, _, action)| action.as_str())
                .collect::<Vec<_>>(),
            [
                "deploy",
                "deploy",
                "rollback (helm)",
                "kill-switch on",
                "kill-switch off"
            ],
            "{rows:?}"
        );

        let deployment = Api::<Deployment>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
            .get(WEBHOOK_DEPLOYMENT)
            .await
            .unwrap();
        let uid = deployment.metadata.uid.clone().expect("a uid");
        let mut events: Vec<Event> =
            Api::<Event>::namespaced(sandbox.admin.clone(), &sandbox.namespace)
                .list(&ListParams::default())
                .await
                .expect("events.k8s.io/v1 Events are listed")
                .items
                .into_iter()
                .filter(|event| event.reporting_controller.as_deref() == Some("psctl"))
                .collect();
        events.sort_by_key(|event| event.event_time.clone().map(|time| time.0));
        let seen: Vec<(&str, &str)> = events
            .iter()
            .map(|event| {
                (
                    event.reason.as_deref().unwrap_or_default(),
                    event.type_.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("Deployed", "Normal"),
                ("Deployed", "Normal"),
                ("RolledBack", "Warning"),
                ("KillSwitchOn", "Normal"),
                ("KillSwitchOff", "Normal"),
            ]
        );
        for (event, (id, os_user, action)) in events.iter().zip(&audited) {
            let regarding = event.regarding.as_ref().expect("regarding");
            assert_eq!(regarding.kind.as_deref(), Some("Deployment"));
            assert_eq!(regarding.api_version.as_deref(), Some("apps/v1"));
            assert_eq!(regarding.name.as_deref(), Some(WEBHOOK_DEPLOYMENT));
            assert_eq!(
                regarding.namespace.as_deref(),
                Some(sandbox.namespace.as_str())
            );
            assert_eq!(regarding.uid.as_deref(), Some(uid.as_str()), "{event:?}");
            assert!(
                event
                    .reporting_instance
                    .as_deref()
                    .is_some_and(|i| !i.is_empty())
            );
            let note = event.note.as_deref().unwrap_or_default();
            assert!(
                note.starts_with(&format!("{action} by {os_user}"))
                    && note.contains(&format!("audit #{id})")),
                "event {:?} does not mirror audit row #{id} ({action} by {os_user}): {note}",
                event.reason
            );
        }

        // Real kubectl lists them through both APIs.
        for resource in ["events", "events.v1.events.k8s.io"] {
            let table = kubectl(sandbox, &["get", resource]);
            assert!(
                table.contains("KillSwitchOn")
                    && table.contains("RolledBack")
                    && table.contains(&format!("deployment/{WEBHOOK_DEPLOYMENT}")),
                "{resource}:\n{table}"
            );
        }
    }
}
