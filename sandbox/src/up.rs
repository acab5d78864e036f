//! `psctl-sandbox up`: takes this machine to a running sandbox, idempotently. Each step checks
//! what is already there, does only what is missing, and waits until its part is healthy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::probe::{http, http_ok, wait_for};
use crate::process::{self, run};
use crate::secrets::{Generated, write_private};
use crate::settings::{Layout, RUNTIME_SECRET, SEED_MERCHANT, Settings};
use crate::{base_image, render};

/// Program names as they appear in /proc, for pid checks.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const PROMETHEUS_BIN: &str = "prometheus";
/// Debian's name for the Alertmanager binary (package prometheus-alertmanager).
pub const ALERTMANAGER_BIN: &str = "prometheus-alertmanager";

/// What `up` does besides starting the parts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub repo: PathBuf,
    /// Run `scripts/bootstrap.sh` (packages) first.
    pub bootstrap: bool,
    /// Run `scripts/fetch-tools.sh` (kubectl, Helm engine).
    pub tools: bool,
}

fn step(name: &str) -> Instant {
    eprintln!("psctl-sandbox: {name}…");
    Instant::now()
}

fn done(name: &str, started: Instant, detail: &str) {
    eprintln!(
        "psctl-sandbox: {name}: {detail} ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
}

fn script(repo: &Path, name: &str, args: &[&str]) -> anyhow::Result<String> {
    let path = repo.join("scripts").join(name);
    let output = Command::new(&path)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| {
            format!(
                "cannot run `{}`; pass --repo with the psctl checkout",
                path.display()
            )
        })?;
    if !output.status.success() {
        anyhow::bail!("`{}` failed ({})", path.display(), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs every step; returns the total time.
pub async fn up(
    layout: &Layout,
    settings: &Settings,
    options: &UpOptions,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    settings.validate()?;
    std::fs::create_dir_all(&layout.root).with_context(|| {
        format!(
            "cannot create the state directory `{}`",
            layout.root.display()
        )
    })?;
    std::fs::write(layout.settings(), serde_json::to_string_pretty(settings)?)?;

    if options.bootstrap {
        let t = step("packages");
        script(&options.repo, "bootstrap.sh", &[])?;
        done("packages", t, "installed");
    }
    if options.tools && options.repo.join("scripts/fetch-tools.sh").exists() {
        let t = step("tools");
        script(
            &options.repo,
            "fetch-tools.sh",
            &[&layout.root.display().to_string()],
        )?;
        done("tools", t, "kubectl and helm in place");
    }

    let t = step("network");
    let gateway = ensure_network(settings)?;
    std::fs::write(layout.gateway(), format!("{gateway}\n"))?;
    done(
        "network",
        t,
        &format!("`{}` gateway {gateway}", settings.network),
    );

    let t = step("postgres");
    if settings.postgres_admin_url == Settings::default().postgres_admin_url {
        script(&options.repo, "postgres.sh", &["start"])?;
    }
    let secrets = Generated::load_or_create(&layout.secrets_dir())?;
    let merchant_url = format!("http://{gateway}:{}/webhook", settings.merchant_port);
    write_runtime_env(layout, settings, &secrets, &gateway)?;
    prepare_database(settings, &secrets, &merchant_url).await?;
    done(
        "postgres",
        t,
        &format!("database `{}` migrated, merchant seeded", settings.database),
    );

    let t = step("registry");
    ensure_registry(layout, settings).await?;
    done("registry", t, &format!("{} up", settings.registry()));

    let t = step("base image");
    let image = base_image::ensure(layout, settings)?;
    let sidecar = base_image::ensure_sidecar(layout, settings)?;
    done("base image", t, &format!("{image}, sidecar {sidecar}"));

    let t = step("configuration");
    // The serving certificate is also valid for the gateway, where pods reach the API server.
    // A running daemon keeps the identity it serves with (its clients hold that CA).
    let pod_address: std::net::IpAddr = gateway
        .parse()
        .context("the network gateway is not an IP address")?;
    let daemon_running = http_ok(&http(), &format!("{}/healthz", settings.control_url())).await;
    let tls = crate::secrets::api_tls(&layout.secrets_dir(), !daemon_running, &[pod_address])
        .or_else(|_| crate::secrets::api_tls(&layout.secrets_dir(), true, &[pod_address]))?;
    std::fs::write(
        layout.psctl_config(),
        render::psctl_config(settings, layout, &gateway),
    )?;
    done("configuration", t, "psctl.yaml written");

    let t = step("daemon");
    ensure_daemon(layout, settings).await?;
    // The kubeconfig follows the daemon that runs: one started by an older build serves plain
    // HTTP without authentication, and `up` keeps it rather than empty the API server.
    let kubeconfig = if answers_https(settings, &tls.ca_pem).await {
        render::kubeconfig(settings, secrets.api_admin_token.expose(), &tls.ca_pem)
    } else {
        eprintln!(
            "psctl-sandbox: warning: the running API server predates authentication (plain HTTP, no RBAC); \
             the kubeconfig has no credentials. `psctl-sandbox down && psctl-sandbox up` starts the current one."
        );
        render::unauthenticated_kubeconfig(settings)
    };
    write_private(&layout.kubeconfig(), &kubeconfig)?;
    apply_runtime_secret(settings, &secrets, &gateway).await?;
    done(
        "daemon",
        t,
        &format!(
            "API server {} with controllers, kubelet and merchant sink",
            settings.api_url()
        ),
    );

    let t = step("alertmanager");
    ensure_alertmanager(layout, settings).await?;
    done(
        "alertmanager",
        t,
        &format!("{} up", settings.alertmanager_url()),
    );

    let t = step("prometheus");
    ensure_prometheus(layout, settings).await?;
    done(
        "prometheus",
        t,
        &format!("{} up", settings.prometheus_url()),
    );

    Ok(started.elapsed())
}

/// Creates the Docker network (labelled as ours) if missing; returns its gateway address.
pub fn ensure_network(settings: &Settings) -> anyhow::Result<String> {
    if run("docker", &["network", "inspect", &settings.network]).is_err() {
        run(
            "docker",
            &[
                "network",
                "create",
                "--driver",
                "bridge",
                "--label",
                &format!("psctl.sandbox.network={}", settings.node),
                &settings.network,
            ],
        )
        .context("cannot create the sandbox Docker network (is Docker running?)")?;
    }
    let gateway = run(
        "docker",
        &[
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
            &settings.network,
        ],
    )?;
    let gateway = gateway.trim().to_owned();
    if gateway.is_empty() {
        anyhow::bail!(
            "the Docker network `{}` has no gateway address",
            settings.network
        );
    }
    Ok(gateway)
}

async fn prepare_database(
    settings: &Settings,
    secrets: &Generated,
    merchant_url: &str,
) -> anyhow::Result<()> {
    use problemsolver_core::crypto::{MasterKey, NewMerchant, create_merchant};

    let admin = sqlx::PgPool::connect(&settings.postgres_admin_url)
        .await
        .context("cannot connect to the Postgres server (scripts/postgres.sh start)")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&settings.database)
            .fetch_one(&admin)
            .await?;
    if !exists {
        // The name passed `Settings::validate` (a plain identifier), so quoting it is safe.
        let statement = format!("CREATE DATABASE \"{}\"", settings.database);
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&admin)
            .await?;
    }
    admin.close().await;
    let pool = sqlx::PgPool::connect(&settings.admin_url_for(&settings.database)?)
        .await
        .context("cannot connect to the sandbox database")?;
    problemsolver_core::db::MIGRATOR
        .run(&pool)
        .await
        .context("cannot migrate the sandbox database")?;
    let key = MasterKey::parse(
        "ENCRYPTION_MASTER_KEY",
        secrets.encryption_master_key.expose(),
    )
    .map_err(|error| anyhow::anyhow!("the generated master key is unusable: {error}"))?;
    let existing: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM merchants WHERE name = $1 ORDER BY created_at LIMIT 1")
            .bind(SEED_MERCHANT)
            .fetch_optional(&pool)
            .await?;
    match existing {
        // Re-encrypt on every `up`: the gateway address or the master key may have changed.
        Some(id) => {
            let (ciphertext, nonce) = key.encrypt(secrets.merchant_webhook_secret.expose())?;
            sqlx::query(
                "UPDATE merchants SET webhook_url = $2, webhook_secret_ciphertext = $3, webhook_secret_nonce = $4, updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(merchant_url)
            .bind(ciphertext)
            .bind(nonce)
            .execute(&pool)
            .await?;
        }
        None => {
            let merchant = NewMerchant {
                name: SEED_MERCHANT.to_owned(),
                webhook_url: merchant_url.to_owned(),
                webhook_secret: problemsolver_core::Secret::new(
                    secrets.merchant_webhook_secret.expose().to_owned(),
                ),
            };
            create_merchant(&pool, &key, &merchant).await?;
        }
    }
    pool.close().await;
    Ok(())
}

/// Starts the registry with its own configuration unless it already answers.
pub async fn ensure_registry(layout: &Layout, settings: &Settings) -> anyhow::Result<()> {
    let client = http();
    let url = format!("http://{}/v2/", settings.registry());
    if http_ok(&client, &url).await {
        return Ok(());
    }
    if !Path::new(REGISTRY_BIN).exists() {
        anyhow::bail!(
            "`{REGISTRY_BIN}` is missing: install the Debian package docker-registry (scripts/bootstrap.sh)"
        );
    }
    std::fs::create_dir_all(layout.registry_dir().join("data"))?;
    let config = layout.registry_dir().join("config.yml");
    std::fs::write(&config, render::registry_config(settings, layout))?;
    process::spawn_detached(
        layout,
        "registry",
        Path::new(REGISTRY_BIN),
        &["serve".to_owned(), config.display().to_string()],
    )?;
    let log = layout.log_file("registry");
    wait_for(
        "the registry",
        &format!("see `{}`", log.display()),
        Duration::from_secs(30),
        || http_ok(&client, &url),
    )
    .await
}

/// Starts `psctl-sandbox serve` detached unless the daemon already answers.
pub async fn ensure_daemon(layout: &Layout, settings: &Settings) -> anyhow::Result<()> {
    let client = http();
    let health = format!("{}/healthz", settings.control_url());
    if http_ok(&client, &health).await {
        let running: Option<serde_json::Value> = match client.get(&health).send().await {
            Ok(response) => response.json().await.ok(),
            Err(_) => None,
        };
        let running = running
            .and_then(|value| value["build"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if running != process::build_stamp() {
            // Restarting would empty the API server under whoever uses it: say so instead.
            eprintln!(
                "psctl-sandbox: warning: the running daemon is another build of psctl-sandbox; \
                 `psctl-sandbox down && psctl-sandbox up` restarts it (the API server starts empty)"
            );
        }
        return Ok(());
    }
    let exe =
        std::env::current_exe().context("cannot find this program's path to start the daemon")?;
    process::stop(
        layout,
        "daemon",
        &exe.display().to_string(),
        Duration::from_secs(5),
    )?;
    process::spawn_detached(
        layout,
        "daemon",
        &exe,
        &[
            "--state-dir".to_owned(),
            layout.root.display().to_string(),
            "serve".to_owned(),
        ],
    )?;
    let log = layout.log_file("daemon");
    wait_for(
        "the sandbox daemon",
        &format!("see `{}`", log.display()),
        Duration::from_secs(60),
        || http_ok(&client, &health),
    )
    .await?;
    let version = format!("{}/version", settings.api_url());
    wait_for(
        "the API server",
        &format!("see `{}`", log.display()),
        Duration::from_secs(10),
        || http_ok(&client, &version),
    )
    .await
}

/// Creates or replaces the runtime Secret in `default` with the generated values.
async fn apply_runtime_secret(
    settings: &Settings,
    secrets: &Generated,
    gateway: &str,
) -> anyhow::Result<()> {
    let client = kube_client(settings, secrets)?;
    let api: Api<Secret> = Api::namespaced(client, "default");
    let data = secrets
        .runtime_secret(&settings.database_url_containers(gateway))
        .into_iter()
        .map(|(key, value)| (key, ByteString(value.expose().as_bytes().to_vec())))
        .collect();
    let mut secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(RUNTIME_SECRET.to_owned()),
            namespace: Some("default".to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "psctl-sandbox".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Default::default()
    };
    // Errors from the API carry object names, never data; `kube::Error` does not echo bodies sent.
    match api
        .get_opt(RUNTIME_SECRET)
        .await
        .context("cannot read the runtime Secret")?
    {
        Some(existing) => {
            secret.metadata.resource_version = existing.metadata.resource_version;
            api.replace(RUNTIME_SECRET, &PostParams::default(), &secret)
                .await
                .context("cannot update the runtime Secret")?;
        }
        None => {
            api.create(&PostParams::default(), &secret)
                .await
                .context("cannot create the runtime Secret")?;
        }
    }
    Ok(())
}

/// A client for the sandbox API server.
/// Whether the API server answers HTTPS with a certificate from the sandbox's CA.
async fn answers_https(settings: &Settings, ca_pem: &str) -> bool {
    let Ok(ca) = reqwest::Certificate::from_pem(ca_pem.as_bytes()) else {
        return false;
    };
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .add_root_certificate(ca)
        .build()
    else {
        return false;
    };
    http_ok(&client, &format!("{}/version", settings.api_https_url())).await
}

/// A client for the sandbox API server, authenticating as its administrator.
pub fn kube_client(settings: &Settings, secrets: &Generated) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::new(
        settings
            .api_url()
            .parse()
            .context("the API server URL does not parse")?,
    );
    config.auth_info.token = Some(secrets.api_admin_token.expose().to_owned().into());
    kube::Client::try_from(config).context("cannot build a client for the sandbox API server")
}

/// Starts Prometheus with the generated configuration unless it already answers.
pub async fn ensure_prometheus(layout: &Layout, settings: &Settings) -> anyhow::Result<()> {
    let client = http();
    let ready = format!("{}/-/ready", settings.prometheus_url());
    let dir = layout.prometheus_dir();
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("prometheus.yml");
    std::fs::create_dir_all(layout.prometheus_rules_dir())?;
    std::fs::write(&config, render::prometheus_config(settings, layout))?;
    if !layout.prometheus_targets().exists() {
        std::fs::write(layout.prometheus_targets(), "[]\n")?;
    }
    if http_ok(&client, &ready).await {
        return Ok(());
    }
    let program = which(PROMETHEUS_BIN).context(
        "`prometheus` is missing: install the Debian package prometheus (scripts/bootstrap.sh)",
    )?;
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!(
            "--web.listen-address=127.0.0.1:{}",
            settings.prometheus_port
        ),
        "--web.enable-lifecycle".to_owned(),
        "--storage.tsdb.retention.time=2d".to_owned(),
    ];
    process::spawn_detached(layout, "prometheus", &program, &args)?;
    let log = layout.log_file("prometheus");
    wait_for(
        "Prometheus",
        &format!("see `{}`", log.display()),
        Duration::from_secs(60),
        || http_ok(&client, &ready),
    )
    .await
}

/// Starts Alertmanager (no clustering: one instance, no gossip port) unless it already answers.
pub async fn ensure_alertmanager(layout: &Layout, settings: &Settings) -> anyhow::Result<()> {
    let client = http();
    let ready = format!("{}/-/ready", settings.alertmanager_url());
    let dir = layout.alertmanager_dir();
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, render::alertmanager_config())?;
    if http_ok(&client, &ready).await {
        return Ok(());
    }
    let program = which(ALERTMANAGER_BIN).context(
        "`prometheus-alertmanager` is missing: install the Debian package prometheus-alertmanager (scripts/bootstrap.sh)",
    )?;
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.join("data").display()),
        format!(
            "--web.listen-address=127.0.0.1:{}",
            settings.alertmanager_port
        ),
        "--cluster.listen-address=".to_owned(),
    ];
    process::spawn_detached(layout, "alertmanager", &program, &args)?;
    let log = layout.log_file("alertmanager");
    wait_for(
        "Alertmanager",
        &format!("see `{}`", log.display()),
        Duration::from_secs(60),
        || http_ok(&client, &ready),
    )
    .await
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
}

/// Writes a 0600 env file with the secrets the runtime Secret holds, for people who need them
/// outside the cluster (never printed).
pub fn write_runtime_env(
    layout: &Layout,
    settings: &Settings,
    secrets: &Generated,
    gateway: &str,
) -> anyhow::Result<()> {
    let mut text = String::new();
    for (key, value) in secrets.runtime_secret(&settings.database_url_containers(gateway)) {
        text.push_str(&format!("{key}={}\n", value.expose()));
    }
    write_private(&layout.secrets_dir().join("runtime.env"), &text)
}
