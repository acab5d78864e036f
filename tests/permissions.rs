//! psctl's preflight permission check against the emulated API server's RBAC: the Role
//! `psctl rbac` prints is exactly enough, `edit` and `view` are not, the administrator lacks
//! nothing. Each test starts its own server on a free port.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use psctl::rbac::{self, Access};
use psctl_sandbox_apiserver::{ApiServer, ApiServerConfig, RunningApiServer};
use serde_json::json;

fn client(server: &RunningApiServer, token: &str) -> kube::Client {
    let mut config = kube::Config::new(server.url().parse().expect("URL"));
    config.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(config).expect("client")
}

fn repository_rules() -> Vec<rbac::Rule> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts");
    let charts: BTreeMap<String, BTreeSet<String>> = ["poller", "webhook-worker"]
        .iter()
        .map(|chart| {
            (
                (*chart).to_owned(),
                rbac::chart_kinds(&root.join(chart)).expect("chart"),
            )
        })
        .collect();
    rbac::required_rules(&charts).expect("known kinds")
}

/// A namespace `team` with ServiceAccount `psctl` bound by `binding` (a RoleBinding's roleRef),
/// and a client authenticating as it.
async fn account(
    server: &RunningApiServer,
    admin: &kube::Client,
    role_ref: serde_json::Value,
) -> kube::Client {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "team" } })).expect("ns"),
        )
        .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "team");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "psctl" } })).expect("sa"),
        )
        .await
        .expect("service account");
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "team");
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "psctl-binding" },
                "roleRef": role_ref,
                "subjects": [{ "kind": "ServiceAccount", "name": "psctl", "namespace": "team" }],
            }))
            .expect("binding"),
        )
        .await
        .expect("binding created");
    let token = accounts
        .create_token_request("psctl", &PostParams::default(), &TokenRequest::default())
        .await
        .expect("token")
        .status
        .expect("status")
        .token;
    client(server, &token)
}

async fn start() -> (RunningApiServer, kube::Client) {
    let server = ApiServer::start(ApiServerConfig {
        bind: ([127, 0, 0, 1], 0).into(),
        ..ApiServerConfig::default()
    })
    .await
    .expect("server");
    let admin = client(&server, server.admin_token());
    (server, admin)
}

fn names(missing: &[Access]) -> Vec<String> {
    missing.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn the_printed_role_is_exactly_enough() {
    let (server, admin) = start().await;
    let rules = repository_rules();
    let printed = rbac::permissions("team", rules.clone(), None);
    let roles: Api<Role> = Api::namespaced(admin.clone(), "team");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "team" } })).expect("ns"),
        )
        .await
        .expect("namespace");
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(printed.role.clone()).expect("role"),
        )
        .await
        .expect("the printed Role is valid for the API server");
    let as_psctl = account(
        &server,
        &admin,
        json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": rbac::ROLE_NAME }),
    )
    .await;
    let wanted = rbac::accesses(&rules);
    let missing = psctl::cluster::access::missing(&as_psctl, "team", &wanted)
        .await
        .expect("reviews");
    assert_eq!(names(&missing), Vec::<String>::new());
    // The Role grants nothing elsewhere.
    let elsewhere = psctl::cluster::access::missing(&as_psctl, "other", &wanted)
        .await
        .expect("reviews");
    assert_eq!(elsewhere.len(), wanted.len());
    let administrator = psctl::cluster::access::missing(&admin, "team", &wanted)
        .await
        .expect("reviews");
    assert!(administrator.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn edit_and_view_lack_what_psctl_needs() {
    let (server, admin) = start().await;
    let as_view = account(
        &server,
        &admin,
        json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" }),
    )
    .await;
    let wanted = rbac::accesses(&repository_rules());
    let missing = names(
        &psctl::cluster::access::missing(&as_view, "team", &wanted)
            .await
            .expect("reviews"),
    );
    assert!(
        missing.contains(&"create leases.coordination.k8s.io".to_owned()),
        "{missing:?}"
    );
    assert!(missing.contains(&"get secrets".to_owned()), "{missing:?}");
    assert!(!missing.contains(&"list pods".to_owned()), "{missing:?}");
    let message = rbac::refusal(
        "team",
        &psctl::cluster::access::missing(&as_view, "team", &wanted)
            .await
            .expect("reviews"),
    );
    assert!(
        message.contains("\n  create leases.coordination.k8s.io\n"),
        "{message}"
    );
    server.shutdown().await;
}
