//! A test's own corner of the sandbox (`scripts/test.sh` brings the sandbox up and exports its
//! environment; without it these tests fail, they never skip):
//!
//! - a namespace and a migrated database of its own, removed when the [`Sandbox`] is dropped,
//!   also when an assertion fails;
//! - a ServiceAccount `psctl` in that namespace bound to exactly what
//!   `psctl rbac --env e2e --subject system:serviceaccount:<namespace>:psctl` prints, and a
//!   kubeconfig holding a token of that ServiceAccount (TokenRequest). Every psctl invocation
//!   and every Helm call psctl makes act as that identity, never as the sandbox administrator,
//!   so a permission psctl forgets to declare fails the test that needs it;
//! - the administrator's client ([`Sandbox::admin`]), for setup, for breaking things on
//!   purpose and for looking at the result; psctl never runs with it.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use psctl::settings::Environment;
use serde_json::{Value, json};

use super::db::TestDb;
use super::{Psctl, ROOT, images, run_detached};

/// The environment name in every configuration the harness writes.
pub const ENV: &str = "e2e";
/// The least-privilege ServiceAccount of each test namespace.
pub const SERVICE_ACCOUNT: &str = "psctl";
/// The variable psctl reads the test database's URL from (`database_url_env`).
pub const DATABASE_URL_ENV: &str = "PSCTL_E2E_DATABASE_URL";

/// The runtime Secret (`problemsolver-secrets`) a test starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeSecret {
    /// The sandbox's own values, `DATABASE_URL` pointed at the test's database.
    Sandbox,
    /// Dummy values: the pods never reach a database or Binance.
    Dummy,
    /// None: the test creates it (`psctl secrets apply`).
    Absent,
}

/// What the test's ServiceAccount is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The Role and RoleBinding `psctl rbac` prints (the default).
    Printed,
    /// The printed Role without the rules on `resource` (a plural, e.g. `leases`).
    PrintedWithout(&'static str),
    /// A RoleBinding in the namespace to the bootstrap ClusterRole of that name.
    ClusterRole(&'static str),
}

/// How to set a [`Sandbox`] up.
#[derive(Debug)]
pub struct Builder {
    test: String,
    images: bool,
    secret: RuntimeSecret,
    merchant: bool,
    sidecar_injection: bool,
}

impl Builder {
    /// Build the service images and push them (their tag is [`Sandbox::tag`]).
    pub fn service_images(mut self) -> Self {
        self.images = true;
        self
    }

    pub fn runtime_secret(mut self, secret: RuntimeSecret) -> Self {
        self.secret = secret;
        self
    }

    /// Copy the sandbox's seeded merchant (whose endpoint is the sandbox's merchant sink) into
    /// the test database.
    pub fn sandbox_merchant(mut self) -> Self {
        self.merchant = true;
        self
    }

    /// Label the namespace `sidecar-injection=enabled`: the sandbox's mutating admission adds a
    /// sidecar container to every pod created in it, as a service mesh's injector does.
    pub fn sidecar_injection(mut self) -> Self {
        self.sidecar_injection = true;
        self
    }

    pub async fn start(self) -> Sandbox {
        Sandbox::start(self).await
    }
}

/// Deletes the namespace when dropped. Declared before the database in [`Sandbox`], so the pods
/// go first.
struct NamespaceGuard {
    namespace: String,
    environment: Environment,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let (namespace, environment) = (self.namespace.clone(), self.environment.clone());
        run_detached(&format!("namespace {namespace}"), async move {
            let admin = psctl::cluster::connect(&environment)
                .await
                .map_err(|e| e.to_string())?;
            match Api::<Namespace>::all(admin)
                .delete(&namespace, &DeleteParams::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(error) => Err(error.to_string()),
            }
        });
    }
}

/// One test's namespace, database and least-privilege identity on the sandbox.
pub struct Sandbox {
    pub namespace: String,
    /// The sandbox administrator's client: setup, faults and observation only.
    pub admin: kube::Client,
    /// The sandbox's own environment (`PSCTL_CONFIG`, environment `sandbox`).
    pub environment: Environment,
    /// The sandbox registry, `host:port`.
    pub registry: String,
    /// The tag of the service images, when the builder asked for them (else empty).
    pub tag: String,
    /// The test database's URL from the host.
    pub database_url: String,
    /// The kubeconfig of the test's ServiceAccount: the one psctl uses.
    pub kubeconfig: PathBuf,
    /// The Role `psctl rbac` printed for this namespace.
    pub printed_role: Value,
    sandbox_json: Value,
    namespace_guard: NamespaceGuard,
    database: TestDb,
    dir: tempfile::TempDir,
}

fn sandbox_config_path() -> PathBuf {
    let path = std::env::var_os("PSCTL_CONFIG").map(PathBuf::from).expect(
        "PSCTL_CONFIG is not set: these tests need the sandbox; run them through scripts/test.sh \
         or `eval \"$(psctl-sandbox env)\"` first",
    );
    assert!(
        path.exists(),
        "PSCTL_CONFIG points at {} which does not exist; is the sandbox up?",
        path.display()
    );
    path
}

fn sandbox_admin_database_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: load the sandbox's environment with `eval \"$(psctl-sandbox env)\"`",
    )
}

impl Sandbox {
    pub fn builder(test: &str) -> Builder {
        Builder {
            test: test.to_owned(),
            images: false,
            secret: RuntimeSecret::Dummy,
            merchant: false,
            sidecar_injection: false,
        }
    }

    /// The usual set-up of the tests that run the real services: images built and pushed, the
    /// sandbox's runtime Secret pointed at the test's database.
    pub async fn services(test: &str) -> Self {
        Self::builder(test)
            .service_images()
            .runtime_secret(RuntimeSecret::Sandbox)
            .start()
            .await
    }

    async fn start(builder: Builder) -> Self {
        let Builder {
            test,
            images,
            secret,
            merchant,
            sidecar_injection,
        } = builder;
        let path = sandbox_config_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {} ({e}); is the sandbox up?", path.display()));
        let environment = psctl::settings::file::parse(&path, &text)
            .expect("the sandbox's psctl.yaml is valid")
            .environments
            .get("sandbox")
            .expect("the sandbox config has environment `sandbox`")
            .clone();
        let whole: Value = psctl::yaml::from_str(&text).expect("the sandbox's psctl.yaml is YAML");
        let sandbox_json = whole["environments"]["sandbox"].clone();
        let registry = environment
            .registry
            .clone()
            .expect("the sandbox config names its registry");
        let tag = if images {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || images::service_images(&registry))
                .await
                .unwrap()
        } else {
            String::new()
        };

        // The database: migrated like production, maybe with the sandbox merchant.
        let namespace = super::unique(&format!("e2e-{test}"));
        assert!(
            namespace.len() <= 63,
            "namespace `{namespace}` is longer than a DNS label; shorten the test name"
        );
        let admin_url = sandbox_admin_database_url();
        let database = TestDb::create_on(&admin_url, &namespace.replace('-', "_"), None).await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&database.url)
            .await
            .expect("connect to the test database");
        psctl::db::migrate::MIGRATOR
            .run(&pool)
            .await
            .expect("migrate the test database");
        if merchant {
            use sqlx::Connection as _;
            let mut sandbox_db = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("the sandbox database is reachable");
            let row: Value = sqlx::query_scalar(
                "SELECT row_to_json(m)::jsonb FROM merchants m WHERE name = 'sandbox-merchant' LIMIT 1",
            )
            .fetch_one(&mut sandbox_db)
            .await
            .expect("the sandbox database has the seeded merchant");
            sandbox_db.close().await.unwrap();
            sqlx::query(
                "INSERT INTO merchants SELECT * FROM jsonb_populate_record(NULL::merchants, $1)",
            )
            .bind(&row)
            .execute(&pool)
            .await
            .expect("copy the sandbox merchant");
        }
        pool.close().await;

        // The namespace, owned by its guard from the moment it exists.
        let admin = psctl::cluster::connect(&environment)
            .await
            .expect("the sandbox API server is reachable");
        let labels = if sidecar_injection {
            json!({ "sidecar-injection": "enabled" })
        } else {
            json!({})
        };
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": namespace, "labels": labels}}))
                .unwrap();
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &object)
            .await
            .expect("create the test namespace");
        let namespace_guard = NamespaceGuard {
            namespace: namespace.clone(),
            environment: environment.clone(),
        };

        let dir = tempfile::tempdir().unwrap();
        let mut sandbox = Self {
            kubeconfig: dir.path().join("kubeconfig"),
            namespace,
            admin,
            environment,
            registry,
            tag,
            database_url: database.url.clone(),
            printed_role: Value::Null,
            sandbox_json,
            namespace_guard,
            database,
            dir,
        };
        sandbox.create_identity().await;
        match secret {
            RuntimeSecret::Sandbox => sandbox.copy_runtime_secret().await,
            RuntimeSecret::Dummy => sandbox.dummy_runtime_secret().await,
            RuntimeSecret::Absent => {}
        }
        sandbox
    }

    /// The ServiceAccount, the Role and RoleBinding `psctl rbac` prints for it (applied as the
    /// administrator: the only thing the administrator does for psctl), and its kubeconfig.
    async fn create_identity(&mut self) {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), &self.namespace);
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": SERVICE_ACCOUNT}})).unwrap();
        accounts
            .create(&PostParams::default(), &account)
            .await
            .expect("create the test ServiceAccount");

        // What an operator pipes to `kubectl apply -f -`, for the environment with both charts.
        let config = self.config("rbac", |_| {});
        let (role, binding) = self.printed_rbac(&config);
        self.create_role(&role).await;
        self.create_binding(&binding).await;
        self.printed_role = role;

        // A token of the ServiceAccount in a copy of the sandbox's kubeconfig: same cluster, CA
        // and context name, another user.
        let token = accounts
            .create_token_request(
                SERVICE_ACCOUNT,
                &PostParams::default(),
                &TokenRequest {
                    spec: TokenRequestSpec {
                        expiration_seconds: Some(4 * 3600),
                        ..TokenRequestSpec::default()
                    },
                    ..TokenRequest::default()
                },
            )
            .await
            .expect("a token for the test ServiceAccount")
            .status
            .expect("the TokenRequest status")
            .token;
        let source = self
            .environment
            .kubeconfig
            .as_ref()
            .expect("the sandbox config names its kubeconfig");
        let mut kubeconfig: Value = psctl::yaml::from_str(
            &std::fs::read_to_string(source).expect("the sandbox's kubeconfig is readable"),
        )
        .expect("the sandbox's kubeconfig is YAML");
        for user in kubeconfig["users"]
            .as_array_mut()
            .expect("the kubeconfig has users")
        {
            user["user"] = json!({ "token": token });
        }
        write_private(
            &self.kubeconfig,
            &psctl::yaml::to_string(&kubeconfig).unwrap(),
        );
    }

    /// The Role and RoleBinding `psctl rbac --env e2e --subject <the ServiceAccount>` prints for
    /// the environment of `config`.
    fn printed_rbac(&self, config: &Path) -> (Value, Value) {
        let subject = format!("system:serviceaccount:{}:{SERVICE_ACCOUNT}", self.namespace);
        let printed = Psctl::new()
            .args(["rbac", "--env", ENV, "--subject", &subject])
            .config(config)
            .run();
        assert_eq!(printed.code, 0, "psctl rbac: {printed:#?}");
        let mut role = None;
        let mut binding = None;
        for document in psctl::yaml::Deserializer::from_str(&printed.stdout) {
            let object: Value = serde::Deserialize::deserialize(document).unwrap_or_else(|e| {
                panic!("psctl rbac printed invalid YAML ({e}):\n{}", printed.stdout)
            });
            match object["kind"].as_str() {
                Some("Role") => role = Some(object),
                Some("RoleBinding") => binding = Some(object),
                other => panic!(
                    "psctl rbac printed an unexpected {other:?}:\n{}",
                    printed.stdout
                ),
            }
        }
        let role = role.expect("psctl rbac prints a Role");
        let binding = binding.expect("psctl rbac --subject prints a RoleBinding");
        assert_eq!(role["metadata"]["namespace"], self.namespace.as_str());
        (role, binding)
    }

    /// Replaces the Role the ServiceAccount is bound to with what `psctl rbac` prints for the
    /// environment of `config` (its own charts: a configuration of other components needs
    /// Helm's verbs on other kinds), so psctl holds exactly what that configuration needs.
    pub async fn grant_printed_for(&mut self, config: &Path) {
        let (role, _) = self.printed_rbac(config);
        Api::<Role>::namespaced(self.admin.clone(), &self.namespace)
            .delete(psctl::rbac::ROLE_NAME, &DeleteParams::default())
            .await
            .expect("delete the Role printed for the default components");
        self.create_role(&role).await;
        self.printed_role = role;
    }

    async fn create_role(&self, role: &Value) {
        let role: Role = serde_json::from_value(role.clone()).expect("a valid Role");
        Api::<Role>::namespaced(self.admin.clone(), &self.namespace)
            .create(&PostParams::default(), &role)
            .await
            .expect("the Role is accepted by the API server");
    }

    async fn create_binding(&self, binding: &Value) {
        let binding: RoleBinding =
            serde_json::from_value(binding.clone()).expect("a valid RoleBinding");
        Api::<RoleBinding>::namespaced(self.admin.clone(), &self.namespace)
            .create(&PostParams::default(), &binding)
            .await
            .expect("the RoleBinding is accepted by the API server");
    }

    /// Binds the test's ServiceAccount to `grant` instead of whatever it was bound to.
    pub async fn rebind(&self, grant: Grant) {
        let bindings: Api<RoleBinding> = Api::namespaced(self.admin.clone(), &self.namespace);
        for existing in bindings.list(&Default::default()).await.unwrap().items {
            let name = existing.metadata.name.clone().unwrap_or_default();
            bindings
                .delete(&name, &DeleteParams::default())
                .await
                .expect("delete the previous RoleBinding");
        }
        let subjects = json!([{ "kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": self.namespace }]);
        let role_ref = match &grant {
            Grant::Printed => {
                json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": psctl::rbac::ROLE_NAME })
            }
            Grant::PrintedWithout(resource) => {
                let mut role = self.printed_role.clone();
                let name = format!("psctl-without-{resource}");
                role["metadata"]["name"] = name.clone().into();
                role["rules"]
                    .as_array_mut()
                    .expect("the printed Role has rules")
                    .retain(|rule| {
                        !rule["resources"]
                            .as_array()
                            .is_some_and(|r| r.iter().any(|r| r.as_str() == Some(*resource)))
                    });
                self.create_role(&role).await;
                json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name })
            }
            Grant::ClusterRole(name) => {
                json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name })
            }
        };
        self.create_binding(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": { "name": format!("psctl-{}", role_ref["name"].as_str().unwrap()), "namespace": self.namespace },
            "roleRef": role_ref,
            "subjects": subjects,
        }))
        .await;
    }

    /// The sandbox's runtime Secret in the test namespace, `DATABASE_URL` (as the pods reach
    /// it) pointed at the test's database.
    async fn copy_runtime_secret(&self) {
        let source = Api::<Secret>::namespaced(self.admin.clone(), &self.environment.namespace)
            .get(&self.environment.secret.name)
            .await
            .expect("the sandbox's runtime Secret");
        let mut data = source.data.unwrap_or_default();
        let pod_url =
            String::from_utf8(data["DATABASE_URL"].0.clone()).expect("UTF-8 database URL");
        let mut pod_url = url::Url::parse(&pod_url).unwrap();
        pod_url.set_path(&format!("/{}", self.database.name));
        data.insert(
            "DATABASE_URL".to_owned(),
            k8s_openapi::ByteString(pod_url.to_string().into_bytes()),
        );
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(self.environment.secret.name.clone()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        Api::<Secret>::namespaced(self.admin.clone(), &self.namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the runtime Secret");
    }

    /// Dummy runtime values, for tests whose pods never reach a database or Binance.
    async fn dummy_runtime_secret(&self) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": self.environment.secret.name},
            "stringData": {"DATABASE_URL": "postgres://e2e@127.0.0.1:1/none", "BINANCE_API_KEY": "e2e-key-value",
                           "BINANCE_API_SECRET": "e2e-secret-value", "ENCRYPTION_MASTER_KEY": "e2e-master-key-value"},
        }))
        .unwrap();
        Api::<Secret>::namespaced(self.admin.clone(), &self.namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the runtime Secret");
    }

    /// The test database's name.
    pub fn database(&self) -> &str {
        &self.database.name
    }

    /// The keys every environment the harness writes shares: the cluster as the test's
    /// ServiceAccount, the test namespace, the sandbox's registry, Helm and Prometheus.
    pub fn connection(&self) -> Value {
        let sandbox = &self.environment;
        json!({
            "kube_context": sandbox.kube_context,
            "kubeconfig": self.kubeconfig,
            "namespace": self.namespace,
            "registry": sandbox.registry,
            "prometheus_url": sandbox.prometheus_url,
            "helm": sandbox.helm,
            "database_url_env": DATABASE_URL_ENV,
            // Dozens of deploys run in the suite; half a minute of hold after each would
            // double its time. `tests/e2e_deploy.rs` tests the hold with `--hold`.
            "deploy_hold": "0s",
        })
    }

    /// Writes `{environments: {e2e: environment}}` to `<name>.yaml`; returns its path.
    pub fn write_config(&self, name: &str, environment: Value) -> PathBuf {
        let text = psctl::yaml::to_string(&json!({"environments": {ENV: environment}})).unwrap();
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A psctl.yaml with both services as the sandbox configures them (fast poller, metrics,
    /// ServiceMonitors) in this test's namespace; `adjust` edits the environment (as JSON)
    /// before it is written. Returns its path.
    pub fn config(&self, name: &str, adjust: impl FnOnce(&mut Value)) -> PathBuf {
        let sandbox = &self.sandbox_json;
        let components = &sandbox["components"];
        let chart = |name: &str| Path::new(ROOT).join("charts").join(name);
        let component = |key: &str, chart_dir: &str, values: Value| {
            let c = &components[key];
            json!({
                "release": c["release"], "chart": chart(chart_dir), "image": c["image"],
                "deployment": c["deployment"], "selector": c["selector"], "values": values,
                "metrics": c["metrics"],
            })
        };
        let mut environment = self.connection();
        environment["components"] = json!({
            "poller": component("poller", "poller", json!({
                "env": {"BINANCE_API_BASE": components["poller"]["values"]["env"]["BINANCE_API_BASE"]},
                "pollIntervalSecs": 2,
                "serviceMonitor": {"enabled": true},
            })),
            "webhook": component("webhook", "webhook-worker", json!({"serviceMonitor": {"enabled": true}})),
        });
        adjust(&mut environment);
        self.write_config(name, environment)
    }

    /// The sandbox's own psctl.yaml environment (build settings, runtime Secret keys, canary
    /// settings...), moved to this test's namespace and identity; `adjust` edits it.
    pub fn sandbox_config(&self, name: &str, adjust: impl FnOnce(&mut Value)) -> PathBuf {
        let mut environment = self.sandbox_json.clone();
        for (key, value) in self.connection().as_object().unwrap() {
            environment[key] = value.clone();
        }
        adjust(&mut environment);
        self.write_config(name, environment)
    }

    /// `psctl ARGS --config CONFIG --allow-no-audit`, the test database's URL in
    /// [`DATABASE_URL_ENV`]; nothing else from the test's environment.
    pub fn command(&self, config: &Path, args: &[&str]) -> Psctl {
        Psctl::new()
            .args(args)
            .config(config)
            .arg("--allow-no-audit")
            .env(DATABASE_URL_ENV, &self.database_url)
    }

    /// Runs `psctl ARGS --config CONFIG --allow-no-audit --yes`.
    pub fn psctl(&self, config: &Path, args: &[&str]) -> (i32, String, String) {
        self.command(config, args).arg("--yes").run().parts()
    }

    /// Deploys [`Sandbox::tag`] of `components` (all when empty); asserts success.
    pub fn deploy(&self, config: &Path, components: &[&str]) {
        assert!(
            !self.tag.is_empty(),
            "the builder did not build service images"
        );
        let mut args = vec!["deploy", "--tag", &self.tag, "--timeout", "3m"];
        for component in components {
            args.extend(["--component", component]);
        }
        let (code, stdout, stderr) = self.psctl(config, &args);
        assert_eq!(code, 0, "deploy failed:\n{stdout}\n{stderr}");
    }

    /// `psctl history COMPONENT -o json`: every revision, oldest first.
    pub fn history(&self, config: &Path, component: &str) -> Vec<Value> {
        let (code, stdout, stderr) = self.psctl(config, &["history", component, "-o", "json"]);
        assert_eq!(code, 0, "psctl history {component}: {stderr}");
        super::report(&stdout)
            .as_array()
            .unwrap_or_else(|| panic!("history is a list: {stdout}"))
            .clone()
    }

    /// `psctl-sandbox fault evict POD -n <namespace>`, through the daemon's control endpoint
    /// (whose port `$PSCTL_SANDBOX_DIR/sandbox.json` records): the kubelet kills the pod's
    /// containers and leaves it `Failed`/`Evicted`. Asserts the daemon did.
    pub async fn evict(&self, pod: &str) {
        let dir = std::env::var_os("PSCTL_SANDBOX_DIR").map(PathBuf::from).expect(
            "PSCTL_SANDBOX_DIR is not set: load the sandbox's environment with `eval \"$(psctl-sandbox env)\"`",
        );
        let settings: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("sandbox.json"))
                .unwrap_or_else(|e| panic!("read {}/sandbox.json: {e}", dir.display())),
        )
        .expect("sandbox.json is JSON");
        let port = settings["control_port"]
            .as_u64()
            .expect("sandbox.json names the control port");
        let response = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(45))
            .build()
            .unwrap()
            .post(format!(
                "http://127.0.0.1:{port}/kubelet/evict/{}/{pod}",
                self.namespace
            ))
            .send()
            .await
            .expect("the sandbox daemon answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "eviction of {pod} refused ({status}): {text} (a daemon older than `fault evict` needs `psctl-sandbox down && psctl-sandbox up`)"
        );
    }

    /// Ends the test explicitly (dropping does the same).
    pub async fn finish(self) {
        drop(self);
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap();
}
