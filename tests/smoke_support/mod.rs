//! Shared by `tests/e2e_smoke.rs` and `benches/smoke.rs`: a namespace and a migrated database
//! of their own on the sandbox, the real service images built from this workspace and pushed
//! to the sandbox registry, and the `psctl` binary run against a generated psctl.yaml.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use sha2::{Digest, Sha256};
use sqlx::{Connection as _, PgConnection};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn sandbox_environment() -> psctl::settings::Environment {
    let path = std::env::var_os("PSCTL_CONFIG").map(PathBuf::from).expect(
        "PSCTL_CONFIG is not set: these tests need the sandbox; run them through scripts/test.sh \
         or `eval \"$(psctl-sandbox env)\"` first",
    );
    let config = psctl::settings::file::load(&path).expect("the sandbox's psctl.yaml is valid");
    config
        .environments
        .get("sandbox")
        .expect("the sandbox config has environment `sandbox`")
        .clone()
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: load the sandbox's environment with `eval \"$(psctl-sandbox env)\"`",
    )
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds both service binaries (debug), wraps each in an image on the sandbox base image and
/// pushes it to the sandbox registry. The tag is derived from the binaries' content, so
/// parallel tests and re-runs reuse the same images. Returns the tag.
pub fn service_images(registry: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(
        Command::new(&cargo).current_dir(ROOT).args([
            "build",
            "--quiet",
            "-p",
            "problemsolver-poller",
            "-p",
            "problemsolver-webhook-worker",
        ]),
        "cargo build of the services",
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target"));
    let binaries = ["problemsolver-poller", "problemsolver-webhook-worker"];
    let mut hash = Sha256::new();
    for binary in binaries {
        hash.update(std::fs::read(target.join("debug").join(binary)).expect("built binary"));
    }
    let tag = format!("smoke-e2e-{}", &hex::encode(hash.finalize())[..12]);
    for binary in binaries {
        let image = format!("{registry}/{binary}:{tag}");
        let present = Command::new("docker")
            .args(["manifest", "inspect", "--insecure", &image])
            .output()
            .is_ok_and(|o| o.status.success());
        if present {
            continue;
        }
        let context = tempfile::tempdir().unwrap();
        std::fs::create_dir(context.path().join("dist")).unwrap();
        std::fs::copy(
            target.join("debug").join(binary),
            context.path().join("dist").join(binary),
        )
        .unwrap();
        std::fs::copy(
            Path::new(ROOT).join("Dockerfile"),
            context.path().join("Dockerfile"),
        )
        .unwrap();
        run(
            Command::new("docker").args([
                "build",
                "-q",
                "--build-arg",
                &format!("RUNTIME_BASE={registry}/psctl-base:bookworm"),
                "--build-arg",
                &format!("BINARY={binary}"),
                "-t",
                &image,
                &context.path().display().to_string(),
            ]),
            "docker build",
        );
        run(
            Command::new("docker").args(["push", "-q", &image]),
            "docker push",
        );
    }
    tag
}

pub struct Sandbox {
    pub namespace: String,
    pub database: String,
    pub database_url: String,
    pub client: kube::Client,
    pub environment: psctl::settings::Environment,
    pub tag: String,
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub async fn new(test: &str) -> Self {
        let environment = sandbox_environment();
        let registry = environment
            .registry
            .clone()
            .expect("the sandbox config names its registry");
        let tag = tokio::task::spawn_blocking(move || service_images(&registry))
            .await
            .unwrap();
        let namespace = format!("e2e-smoke-{test}-{}", std::process::id());
        let database = format!(
            "psctl_smoke_{}_{}",
            test.replace('-', "_"),
            std::process::id()
        );

        // A database of its own, migrated like production.
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect with DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&format!("/{database}"));
        let database_url = url.to_string();
        let migrator = sqlx::migrate::Migrator::new(Path::new(ROOT).join("migrations"))
            .await
            .unwrap();
        let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
        migrator.run(&pool).await.expect("migrations apply");
        pool.close().await;

        // The namespace and its runtime Secret: the sandbox's values, the database swapped.
        let client = psctl::cluster::connect(&environment)
            .await
            .expect("the sandbox API server is reachable");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .expect("create the test namespace");
        let sandbox_secret = Api::<Secret>::namespaced(client.clone(), &environment.namespace)
            .get(&environment.secret.name)
            .await
            .expect("the sandbox's runtime Secret");
        let mut data = sandbox_secret.data.unwrap_or_default();
        let container_url =
            String::from_utf8(data["DATABASE_URL"].0.clone()).expect("UTF-8 database URL");
        let mut container_url = url::Url::parse(&container_url).unwrap();
        container_url.set_path(&format!("/{database}"));
        data.insert(
            "DATABASE_URL".to_owned(),
            k8s_openapi::ByteString(container_url.to_string().into_bytes()),
        );
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(environment.secret.name.clone()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the runtime Secret");
        Self {
            namespace,
            database,
            database_url,
            client,
            environment,
            tag,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes a psctl.yaml for this test's namespace; `adjust` edits the environment (as JSON)
    /// before it is written. Returns its path.
    pub fn config(&self, name: &str, adjust: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
        let sandbox = &self.environment;
        let component = |name: &str| {
            sandbox
                .components
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("the sandbox config has component `{name}`"))
        };
        let metrics = |c: &psctl::settings::Component| {
            let m = c.metrics.as_ref().expect("metrics configured");
            serde_json::json!({"service": m.service, "port": m.port, "path": m.path, "required": m.required})
        };
        let poller = component("poller");
        let webhook = component("webhook");
        let binance =
            serde_json::to_value(&poller.values).unwrap()["env"]["BINANCE_API_BASE"].clone();
        let mut environment = serde_json::json!({
            "kube_context": sandbox.kube_context,
            "kubeconfig": sandbox.kubeconfig,
            "namespace": self.namespace,
            "registry": sandbox.registry,
            "prometheus_url": sandbox.prometheus_url,
            "database_url_env": "PSCTL_E2E_SMOKE_DATABASE_URL",
            "helm": sandbox.helm,
            "components": {
                "poller": {
                    "release": poller.release, "chart": Path::new(ROOT).join("charts/poller"),
                    "image": poller.image, "deployment": poller.deployment, "selector": poller.selector,
                    "values": {"env": {"BINANCE_API_BASE": binance}, "pollIntervalSecs": 2,
                               "serviceMonitor": {"enabled": true}},
                    "metrics": metrics(poller),
                },
                "webhook": {
                    "release": webhook.release, "chart": Path::new(ROOT).join("charts/webhook-worker"),
                    "image": webhook.image, "deployment": webhook.deployment, "selector": webhook.selector,
                    "values": {"serviceMonitor": {"enabled": true}},
                    "metrics": metrics(webhook),
                },
            },
        });
        adjust(&mut environment);
        let text =
            serde_yaml::to_string(&serde_json::json!({"environments": {"e2e": environment}}))
                .unwrap();
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn psctl(&self, config: &Path, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_psctl"))
            .current_dir(ROOT)
            .args(args)
            .args([
                "--config",
                &config.display().to_string(),
                "--allow-no-audit",
                "--yes",
            ])
            .env("NO_COLOR", "1")
            .env("PSCTL_E2E_SMOKE_DATABASE_URL", &self.database_url)
            .env_remove("PSCTL_ENV")
            .env_remove("PSCTL_OUTPUT")
            .output()
            .expect("run psctl");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    pub fn deploy(&self, config: &Path, components: &[&str]) {
        let mut args = vec!["deploy", "--tag", &self.tag, "--timeout", "3m"];
        for component in components {
            args.extend(["--component", component]);
        }
        let (code, stdout, stderr) = self.psctl(config, &args);
        assert_eq!(code, 0, "deploy failed:\n{stdout}\n{stderr}");
    }

    pub async fn finish(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

/// Runs `body` in a sandbox of its own and removes the namespace and database afterwards, also
/// when an assertion in `body` fails.
pub async fn in_sandbox(test: &str, body: impl AsyncFnOnce(&Sandbox)) {
    use futures::FutureExt as _;
    let sandbox = Sandbox::new(test).await;
    let result = std::panic::AssertUnwindSafe(body(&sandbox))
        .catch_unwind()
        .await;
    sandbox.finish().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Pushes `image:from` again as `image:to` (same content, another tag).
pub fn retag(registry: &str, image: &str, from: &str, to: &str) {
    let source = format!("{registry}/{image}:{from}");
    let target = format!("{registry}/{image}:{to}");
    for args in [
        vec!["pull", "-q", source.as_str()],
        vec!["tag", source.as_str(), target.as_str()],
        vec!["push", "-q", target.as_str()],
    ] {
        let output = Command::new("docker").args(&args).output().unwrap();
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The `-o json` report on stdout.
pub fn report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// The check called `name` in a report.
pub fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}
