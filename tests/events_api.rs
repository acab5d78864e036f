//! psctl's Events against the emulated API server (started in-process on a free port, RBAC on):
//! an audited action recorded through `events::publishing` becomes one Event about the object
//! it changed, readable through both Event APIs; an identity without `create
//! events.k8s.io/events` gets one warning naming that permission, and the audit record is
//! still written and returned.

use std::path::Path;
use std::sync::Mutex;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use psctl::audit::{AuditEntry, AuditError, AuditSink, Receipt};
use psctl::output::{Format, Output, Style};
use psctl_sandbox_apiserver::{ApiServer, ApiServerConfig, RunningApiServer};
use serde_json::json;

const NAMESPACE: &str = "team";

fn client(server: &RunningApiServer, token: &str) -> kube::Client {
    let mut config = kube::Config::new(server.url().parse().expect("URL"));
    config.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(config).expect("client")
}

/// ServiceAccount `name` in the namespace, bound to `role_ref`, and a client acting as it.
async fn account(
    server: &RunningApiServer,
    admin: &kube::Client,
    name: &str,
    role_ref: serde_json::Value,
) -> kube::Client {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap(),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": format!("{name}-binding") },
                "roleRef": role_ref,
                "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": NAMESPACE }],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let token = accounts
        .create_token_request(name, &PostParams::default(), &TokenRequest::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    client(server, &token)
}

/// The server, an administrator client, the namespace with the Deployment of the webhook
/// component, and the Role `psctl rbac` prints for the repository's charts.
async fn start() -> (RunningApiServer, kube::Client, String) {
    let server = ApiServer::start(ApiServerConfig {
        bind: ([127, 0, 0, 1], 0).into(),
        ..ApiServerConfig::default()
    })
    .await
    .unwrap();
    let admin = client(&server, server.admin_token());
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": NAMESPACE } })).unwrap(),
        )
        .await
        .unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "problemsolver-webhook" },
        "spec": {
            "selector": { "matchLabels": { "app": "problemsolver-webhook" } },
            "template": {
                "metadata": { "labels": { "app": "problemsolver-webhook" } },
                "spec": { "containers": [{ "name": "worker", "image": "worker:1" }] }
            }
        }
    }))
    .unwrap();
    let uid = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let charts: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        ["poller", "webhook-worker"]
            .iter()
            .map(|chart| {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("charts")
                    .join(chart);
                (
                    (*chart).to_owned(),
                    psctl::rbac::chart_kinds(&path).unwrap(),
                )
            })
            .collect();
    let rules = psctl::rbac::required_rules(&charts).unwrap();
    let printed = psctl::rbac::permissions(NAMESPACE, rules, None);
    Api::<Role>::namespaced(admin.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &serde_json::from_value(printed.role).unwrap(),
        )
        .await
        .unwrap();
    (server, admin, uid)
}

fn environment() -> psctl::settings::Environment {
    let text =
        format!("environments:\n  prod:\n    kube_context: prod\n    namespace: {NAMESPACE}\n");
    psctl::settings::file::parse(Path::new("psctl.yaml"), &text)
        .unwrap()
        .environments["prod"]
        .clone()
}

/// An audit trail that hands out ids 7, 8, ... and keeps what it recorded.
#[derive(Default)]
struct Trail(Mutex<Vec<AuditEntry>>);

impl AuditSink for Trail {
    fn record<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<Receipt, AuditError>> {
        let mut entries = self.0.lock().unwrap();
        entries.push(entry.clone());
        let id = 6 + i64::try_from(entries.len()).unwrap();
        Box::pin(async move {
            Ok(Receipt {
                id: Some(id),
                hash: None,
            })
        })
    }
}

fn kill_switch_on() -> AuditEntry {
    AuditEntry::new("kill-switch on", "problemsolver-webhook")
        .environment("prod")
        .transition("replicas 2", "replicas 0")
        .outcome("succeeded")
}

#[tokio::test]
async fn an_audited_change_is_an_event_on_the_deployment_it_changed() {
    let (server, admin, uid) = start().await;
    let as_psctl = account(
        &server,
        &admin,
        "psctl",
        json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": psctl::rbac::ROLE_NAME }),
    )
    .await;
    let (output, _, stderr) = Output::buffered(Format::Table, Style::PLAIN);
    let sink = psctl::events::publishing(
        Box::new(Trail::default()),
        &as_psctl,
        &environment(),
        &output,
    );
    let receipt = sink.record(&kill_switch_on()).await.unwrap();
    assert_eq!(receipt.id, Some(7), "the inner sink's receipt is returned");
    assert_eq!(stderr.contents(), "", "no warning for a written Event");

    // Read back as psctl's own identity (its Role reads core Events)...
    let core: Vec<CoreEvent> = Api::<CoreEvent>::namespaced(as_psctl.clone(), NAMESPACE)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(core.len(), 1, "{core:?}");
    let event = &core[0];
    assert_eq!(event.reason.as_deref(), Some("KillSwitchOn"));
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(event.action.as_deref(), Some("KillSwitch"));
    assert_eq!(event.reporting_component.as_deref(), Some("psctl"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("Deployment"));
    assert_eq!(
        event.involved_object.name.as_deref(),
        Some("problemsolver-webhook")
    );
    assert_eq!(event.involved_object.uid.as_deref(), Some(uid.as_str()));
    let note = event.message.as_deref().unwrap();
    assert_eq!(
        note,
        format!(
            "kill-switch on by {}: replicas 2 -> replicas 0 (succeeded; audit #7)",
            psctl::lock::identity()
        )
    );
    // ...and through events.k8s.io/v1 as the administrator: the same object.
    let new: Vec<Event> = Api::<Event>::namespaced(admin.clone(), NAMESPACE)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].metadata.name, event.metadata.name);
    assert_eq!(new[0].note.as_deref(), Some(note));
    assert_eq!(new[0].reporting_controller.as_deref(), Some("psctl"));
    server.shutdown().await;
}

#[tokio::test]
async fn without_the_permission_the_command_goes_on_with_one_warning() {
    let (server, admin, _) = start().await;
    let as_viewer = account(
        &server,
        &admin,
        "viewer",
        json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" }),
    )
    .await;
    let (output, _, stderr) = Output::buffered(Format::Table, Style::PLAIN);
    let trail = Box::new(Trail::default());
    let sink = psctl::events::publishing(trail, &as_viewer, &environment(), &output);
    for _ in 0..2 {
        let receipt = sink.record(&kill_switch_on()).await;
        assert!(
            receipt.is_ok(),
            "the audit record does not depend on the Event"
        );
    }
    let text = stderr.contents();
    assert_eq!(
        text.matches("cannot `create events.k8s.io/events` in namespace `team`")
            .count(),
        1,
        "{text}"
    );
    let written = Api::<CoreEvent>::namespaced(admin, NAMESPACE)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert!(written.is_empty(), "{written:?}");
    server.shutdown().await;
}
