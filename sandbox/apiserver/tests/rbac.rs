//! Authentication and RBAC through kube-rs: 401 without (or with a wrong) token, TokenRequest
//! round trips, bindings deciding what a ServiceAccount may do, and the exact 403 a real server
//! answers.

mod common;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use psctl_sandbox_apiserver::RunningApiServer;
use serde_json::json;

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

/// Creates ServiceAccount `namespace/name`, binds it to ClusterRole `role` in `namespace`, and
/// returns a client authenticating with a token requested for it.
async fn bound_account(
    admin: &kube::Client,
    server: &RunningApiServer,
    namespace: &str,
    name: &str,
    role: &str,
) -> kube::Client {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    accounts
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": name } })),
        )
        .await
        .expect("service account");
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), namespace);
    bindings
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": { "name": format!("{name}-{role}") },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
                "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": namespace }],
            })),
        )
        .await
        .expect("binding");
    let answer = accounts
        .create_token_request(name, &PostParams::default(), &TokenRequest::default())
        .await
        .expect("token issued");
    let token = answer.status.expect("status").token;
    common::client_with_token(server, &token)
}

fn lease(name: &str) -> Lease {
    object(json!({ "metadata": { "name": name }, "spec": { "holderIdentity": "x" } }))
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401() {
    let test = common::start().await;
    let anonymous = common::anonymous_client(&test.server);
    let maps: Api<ConfigMap> = Api::namespaced(anonymous.clone(), "default");
    let error = maps.list(&Default::default()).await.expect_err("401");
    let kube::Error::Api(status) = error else {
        panic!("not a Status: {error:?}");
    };
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
    let wrong = common::client_with_token(&test.server, "not-a-token");
    let maps: Api<ConfigMap> = Api::namespaced(wrong, "default");
    assert!(matches!(
        maps.get("x").await,
        Err(kube::Error::Api(status)) if status.code == 401 && status.reason == "Unauthorized"
    ));
    // Discovery needs credentials too; only the health endpoints and /version answer anyone.
    let discovery = anonymous
        .request_text(
            http::Request::get("/apis")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect_err("401");
    assert!(matches!(discovery, kube::Error::Api(status) if status.code == 401));
    let version = anonymous
        .request_text(
            http::Request::get("/version")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("anonymous /version");
    assert!(version.contains("v1.33.0"), "{version}");
    test.server.shutdown().await;
}

#[tokio::test]
async fn token_request_round_trips_and_dies_with_its_service_account() {
    let test = common::start().await;
    common::namespace(&test.client, "team").await;
    let client = bound_account(&test.client, &test.server, "team", "deployer", "view").await;
    let review: Api<SelfSubjectReview> = Api::all(client.clone());
    let me = review
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("self subject review");
    let user = me.status.and_then(|status| status.user_info).expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:team:deployer")
    );
    assert_eq!(
        user.groups.unwrap_or_default(),
        vec![
            "system:serviceaccounts",
            "system:serviceaccounts:team",
            "system:authenticated"
        ]
    );

    let accounts: Api<ServiceAccount> = Api::namespaced(test.client.clone(), "team");
    let short: TokenRequest =
        object(json!({ "spec": { "audiences": [], "expirationSeconds": 60 } }));
    let refused = accounts
        .create_token_request("deployer", &PostParams::default(), &short)
        .await
        .expect_err("too short");
    assert!(matches!(refused, kube::Error::Api(status) if status.code == 422));
    let missing = accounts
        .create_token_request("nobody", &PostParams::default(), &TokenRequest::default())
        .await
        .expect_err("no such account");
    assert!(matches!(missing, kube::Error::Api(status) if status.code == 404));

    accounts
        .delete("deployer", &DeleteParams::default())
        .await
        .expect("deleted");
    let after = review
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect_err("the token died with its account");
    assert!(matches!(after, kube::Error::Api(status) if status.code == 401));
    test.server.shutdown().await;
}

#[tokio::test]
async fn bindings_decide_and_refusals_have_the_real_shape() {
    let test = common::start().await;
    common::namespace(&test.client, "team").await;
    common::namespace(&test.client, "other").await;
    let viewer = bound_account(&test.client, &test.server, "team", "viewer", "view").await;
    let editor = bound_account(&test.client, &test.server, "team", "editor", "edit").await;

    let leases: Api<Lease> = Api::namespaced(viewer.clone(), "team");
    let refused = leases
        .create(&PostParams::default(), &lease("psctl-deploy"))
        .await
        .expect_err("view has no leases");
    let kube::Error::Api(status) = refused else {
        panic!("not a Status: {refused:?}");
    };
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert_eq!(
        status.message,
        "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:team:viewer\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"team\""
    );
    let secrets: Api<Secret> = Api::namespaced(viewer.clone(), "team");
    let secret = secrets.get("db").await.expect_err("view has no secrets");
    assert!(
        matches!(&secret, kube::Error::Api(status) if status.code == 403 && status.message.starts_with("secrets \"db\" is forbidden: User \"system:serviceaccount:team:viewer\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team\"")),
        "{secret:?}"
    );
    let maps: Api<ConfigMap> = Api::namespaced(viewer.clone(), "team");
    maps.list(&Default::default())
        .await
        .expect("view lists configmaps");
    let elsewhere: Api<ConfigMap> = Api::namespaced(viewer.clone(), "other");
    assert!(matches!(
        elsewhere.list(&Default::default()).await,
        Err(kube::Error::Api(status)) if status.code == 403
    ));

    // Kubernetes 1.33's `edit` includes leases (system:aggregate-to-edit), but not RBAC.
    let leases: Api<Lease> = Api::namespaced(editor.clone(), "team");
    leases
        .create(&PostParams::default(), &lease("psctl-deploy"))
        .await
        .expect("edit may take a lease");
    let roles: Api<Role> = Api::namespaced(editor.clone(), "team");
    let role: Role = object(json!({ "metadata": { "name": "r" }, "rules": [] }));
    assert!(matches!(
        roles.create(&PostParams::default(), &role).await,
        Err(kube::Error::Api(status)) if status.code == 403 && status.message.starts_with("roles.rbac.authorization.k8s.io is forbidden")
    ));
    let cluster_roles: Api<ClusterRole> = Api::all(editor);
    assert!(matches!(
        cluster_roles.list(&Default::default()).await,
        Err(kube::Error::Api(status)) if status.code == 403 && status.message.ends_with("at the cluster scope")
    ));
    test.server.shutdown().await;
}

#[tokio::test]
async fn rbac_objects_are_validated_and_bootstrapped() {
    let test = common::start().await;
    let cluster_roles: Api<ClusterRole> = Api::all(test.client.clone());
    let edit = cluster_roles.get("edit").await.expect("bootstrapped");
    assert!(edit.aggregation_rule.is_some());
    let leases_in_edit = edit.rules.unwrap_or_default().iter().any(|rule| {
        rule.resources
            .as_ref()
            .is_some_and(|resources| resources.contains(&"leases".to_owned()))
    });
    assert!(leases_in_edit);
    let view = cluster_roles.get("view").await.expect("bootstrapped");
    assert!(!view.rules.unwrap_or_default().iter().any(|rule| {
        rule.resources
            .as_ref()
            .is_some_and(|resources| resources.contains(&"secrets".to_owned()))
    }));

    common::namespace(&test.client, "team").await;
    let bindings: Api<RoleBinding> = Api::namespaced(test.client.clone(), "team");
    let binding: RoleBinding = object(json!({
        "metadata": { "name": "b" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
        "subjects": [{ "kind": "Group", "name": "ops" }],
    }));
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("created");
    let mut changed = bindings.get("b").await.expect("stored");
    changed.role_ref.name = "edit".to_owned();
    let refused = bindings
        .replace("b", &PostParams::default(), &changed)
        .await
        .expect_err("roleRef is immutable");
    assert!(
        matches!(&refused, kube::Error::Api(status) if status.code == 422 && status.message.contains("cannot change roleRef")),
        "{refused:?}"
    );
    test.server.shutdown().await;
}

#[tokio::test]
async fn kube_rs_through_a_kubeconfig_uses_https_with_the_servers_ca() {
    use base64::Engine as _;
    let test = common::start().await;
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster: {{server: \"{}\", certificate-authority-data: \"{}\"}}\nusers:\n- name: s\n  user: {{token: \"{}\"}}\ncontexts:\n- name: s\n  context: {{cluster: s, user: s, namespace: default}}\ncurrent-context: s\n",
        test.server.https_url(),
        base64::engine::general_purpose::STANDARD.encode(test.server.ca_pem()),
        test.server.admin_token()
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    maps.list(&Default::default())
        .await
        .expect("listed over HTTPS, the certificate verified against the CA");
    test.server.shutdown().await;
}

fn sandbox_request(method: &str, uri: &str) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Vec::new())
        .expect("request")
}

/// `/_sandbox/requests` counts what each identity asked, forbidden requests included, in the
/// audit log's terms (its own path is not counted), one row per User-Agent; only the
/// administrator reads or resets it.
#[tokio::test]
async fn requests_are_counted_per_identity_verb_and_resource() {
    let test = common::start().await;
    let viewer = bound_account(&test.client, &test.server, "default", "viewer", "view").await;
    test.client
        .request_text(sandbox_request("DELETE", "/_sandbox/requests"))
        .await
        .expect("reset");

    let maps: Api<ConfigMap> = Api::namespaced(viewer.clone(), "default");
    maps.list(&Default::default()).await.expect("view lists");
    maps.list(&Default::default()).await.expect("view lists");
    maps.get_opt("absent").await.expect("view gets");
    let secrets: Api<Secret> = Api::namespaced(viewer.clone(), "default");
    secrets
        .list(&Default::default())
        .await
        .expect_err("view reads no Secrets");
    // Another program with the same identity names itself in its User-Agent, as kubectl does.
    let mut version = sandbox_request("GET", "/version");
    version.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("kubectl/v1.33.0 (linux/amd64) kubernetes/8adc0f0"),
    );
    viewer.request_text(version).await.expect("version");
    let admin_maps: Api<ConfigMap> = Api::namespaced(test.client.clone(), "default");
    admin_maps
        .list(&Default::default())
        .await
        .expect("admin lists");

    let refused = viewer
        .request_text(sandbox_request("GET", "/_sandbox/requests"))
        .await
        .expect_err("only the administrator reads the counts");
    assert!(matches!(refused, kube::Error::Api(status) if status.code == 403));

    let user = "system:serviceaccount:default:viewer";
    let text = test
        .client
        .request_text(sandbox_request(
            "GET",
            &format!("/_sandbox/requests?user={user}"),
        ))
        .await
        .expect("counts");
    let counts: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let row = |verb: &str, resource: &str, path: &str| json!({"user": user, "user_agent": "", "verb": verb, "group": "", "resource": resource, "subresource": "", "path": path});
    let with_count = |mut row: serde_json::Value, count: u64| {
        row["count"] = json!(count);
        row
    };
    assert_eq!(
        counts,
        json!({
            "total": 5,
            "requests": [
                with_count(row("get", "configmaps", ""), 1),
                with_count(row("list", "configmaps", ""), 2),
                with_count(row("list", "secrets", ""), 1),
                with_count(
                    json!({"user": user, "user_agent": "kubectl/v1.33.0 (linux/amd64) kubernetes/8adc0f0",
                           "verb": "get", "group": "", "resource": "", "subresource": "", "path": "/version"}),
                    1
                ),
            ],
        }),
        "{text}"
    );
    let everyone: serde_json::Value = serde_json::from_str(
        &test
            .client
            .request_text(sandbox_request("GET", "/_sandbox/requests"))
            .await
            .expect("counts"),
    )
    .expect("JSON");
    let admin_lists = everyone["requests"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["user"] == "sandbox-admin" && r["verb"] == "list")
        .expect("the administrator's list is counted");
    assert_eq!(admin_lists["resource"], "configmaps");
    assert_eq!(admin_lists["count"], 1);

    test.client
        .request_text(sandbox_request("DELETE", "/_sandbox/requests"))
        .await
        .expect("reset");
    let after: serde_json::Value = serde_json::from_str(
        &test
            .client
            .request_text(sandbox_request("GET", "/_sandbox/requests"))
            .await
            .expect("counts"),
    )
    .expect("JSON");
    assert_eq!(after, json!({"total": 0, "requests": []}));
    test.server.shutdown().await;
}

/// What a pod needs to reach the API server as its ServiceAccount: admission mounts the
/// projected token volume, the `kubernetes` Endpoints name the advertised address, whose
/// certificate the namespace's `kube-root-ca.crt` verifies, and a token bound to the pod works
/// until the pod is gone.
#[tokio::test]
async fn a_pod_bound_token_reaches_the_advertised_address_until_the_pod_is_deleted() {
    use base64::Engine as _;
    use k8s_openapi::api::core::v1::{Endpoints, Pod};
    let test = common::start_with(|config| {
        config.advertise = Some(std::net::SocketAddr::from(([127, 0, 0, 2], 0)));
    })
    .await;
    let admin = test.client.clone();
    common::namespace(&admin, "ci").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "ci");
    accounts
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "deployer" } })),
        )
        .await
        .expect("service account");
    Api::<RoleBinding>::namespaced(admin.clone(), "ci")
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": { "name": "deployer-view" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
                "subjects": [{ "kind": "ServiceAccount", "name": "deployer" }],
            })),
        )
        .await
        .expect("binding");

    // Admission: the ServiceAccount must exist, and the token volume is mounted.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "ci");
    let pod_of = |name: &str, account: &str| -> Pod {
        object(json!({ "metadata": { "name": name }, "spec": {
            "serviceAccountName": account, "containers": [{ "name": "app", "image": "x:1" }] } }))
    };
    let refused = pods
        .create(&PostParams::default(), &pod_of("ghost", "nobody"))
        .await
        .expect_err("unknown ServiceAccount");
    let kube::Error::Api(status) = refused else {
        panic!("not a Status: {refused:?}");
    };
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            403,
            "pods \"ghost\" is forbidden: error looking up service account ci/nobody: serviceaccount \"nobody\" not found"
        )
    );
    let pod = pods
        .create(&PostParams::default(), &pod_of("job", "deployer"))
        .await
        .expect("pod admitted");
    let spec = pod.spec.clone().expect("spec");
    let volume = spec
        .volumes
        .clone()
        .unwrap_or_default()
        .pop()
        .expect("a volume");
    assert!(
        volume.name.starts_with("kube-api-access-"),
        "{}",
        volume.name
    );
    let mount = spec.containers[0].volume_mounts.clone().unwrap_or_default();
    assert_eq!(mount.len(), 1);
    assert_eq!(
        (
            mount[0].mount_path.as_str(),
            mount[0].read_only,
            mount[0].name.as_str()
        ),
        (
            "/var/run/secrets/kubernetes.io/serviceaccount",
            Some(true),
            volume.name.as_str()
        )
    );

    // Binding checks: another ServiceAccount's pod, another UID.
    let bound = |uid: &str| -> TokenRequest {
        object(
            json!({ "spec": { "expirationSeconds": 3607, "boundObjectRef": {
            "apiVersion": "v1", "kind": "Pod", "name": "job", "uid": uid } } }),
        )
    };
    let uid = pod.metadata.uid.clone().expect("uid");
    let other = accounts
        .create_token_request("default", &PostParams::default(), &bound(&uid))
        .await
        .expect_err("the pod runs as deployer");
    assert!(
        matches!(&other, kube::Error::Api(status) if status.code == 400
            && status.message == "cannot bind token for serviceaccount \"default\" to pod running with different serviceaccount name."),
        "{other:?}"
    );
    let stale = accounts
        .create_token_request("deployer", &PostParams::default(), &bound("0000"))
        .await
        .expect_err("another UID");
    assert!(
        matches!(&stale, kube::Error::Api(status) if status.code == 409),
        "{stale:?}"
    );
    let answer = accounts
        .create_token_request("deployer", &PostParams::default(), &bound(&uid))
        .await
        .expect("token bound to the pod");
    assert_eq!(answer.spec.expiration_seconds, Some(3607));
    let token = answer.status.expect("status").token;

    // Where and how a pod connects: the Endpoints' address, verified with the published CA.
    let endpoints = Api::<Endpoints>::namespaced(admin.clone(), "default")
        .get("kubernetes")
        .await
        .expect("the kubernetes Endpoints");
    let subset = endpoints.subsets.expect("subsets").remove(0);
    let address = subset.addresses.expect("addresses")[0].ip.clone();
    let port = subset.ports.expect("ports")[0].port;
    assert_eq!(address, "127.0.0.2");
    let root_ca = Api::<ConfigMap>::namespaced(admin.clone(), "ci")
        .get("kube-root-ca.crt")
        .await
        .expect("the root CA ConfigMap");
    let ca = root_ca.data.expect("data")["ca.crt"].clone();
    assert_eq!(ca, test.server.ca_pem());
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster: {{server: \"https://{address}:{port}\", certificate-authority-data: \"{}\"}}\nusers:\n- name: s\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: s\n  context: {{cluster: s, user: s, namespace: ci}}\ncurrent-context: s\n",
        base64::engine::general_purpose::STANDARD.encode(&ca),
    );
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&text).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    let in_pod = kube::Client::try_from(config).expect("client");
    let review: SelfSubjectReview = Api::all(in_pod.clone())
        .create(&PostParams::default(), &object(json!({})))
        .await
        .expect("whoami over the advertised address");
    assert_eq!(
        review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .as_deref(),
        Some("system:serviceaccount:ci:deployer")
    );
    let as_pod: Api<Pod> = Api::namespaced(in_pod, "ci");
    as_pod
        .get("job")
        .await
        .expect("the token works while the pod exists");

    pods.delete("job", &DeleteParams::default())
        .await
        .expect("pod deleted");
    let after = as_pod
        .get("job")
        .await
        .expect_err("the token died with the pod");
    assert!(
        matches!(&after, kube::Error::Api(status) if status.code == 401),
        "{after:?}"
    );
    test.server.shutdown().await;
}
