//! Where a sandbox lives and how it is wired: the state directory layout, ports and names.
//!
//! `up` writes the resolved [`Settings`] to `<state>/sandbox.json`; every later command (`serve`,
//! `status`, `env`, `down`, `fault`) reads them from there, so flags only matter on `up`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Name of the kubeconfig cluster, context and user the sandbox writes.
pub const CONTEXT: &str = "psctl-sandbox";
/// The sandbox database's default name.
pub const DATABASE: &str = "problemsolver";
/// The runtime Secret the services read.
pub const RUNTIME_SECRET: &str = "problemsolver-secrets";
/// Name of the merchant seeded into the sandbox database.
pub const SEED_MERCHANT: &str = "sandbox-merchant";
/// Base image name (local tag); the registry copy is `<registry>/<this>`.
pub const BASE_IMAGE: &str = "psctl-base:bookworm";
/// The sidecar the API server's admission injects into pods of labelled namespaces
/// (`psctl_sandbox_apiserver::admission`): the host's static busybox serving a readiness file.
pub const SIDECAR_IMAGE: &str = "psctl-mesh-proxy:1";

/// Ports and names of one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    /// The emulated API server, on 127.0.0.1.
    pub api_port: u16,
    /// The daemon's control endpoint (health, Postgres fault switch), on 127.0.0.1.
    pub control_port: u16,
    /// The Docker registry, on 127.0.0.1.
    pub registry_port: u16,
    /// Prometheus, on 127.0.0.1.
    pub prometheus_port: u16,
    /// Alertmanager, on 127.0.0.1 (Prometheus sends it the alerts of the loaded rules).
    #[serde(default = "default_alertmanager_port")]
    pub alertmanager_port: u16,
    /// The sandbox's Postgres endpoint (a proxy to the shared server), on 127.0.0.1 and the
    /// network gateway, so it can be cut off by `fault postgres stop` without touching the server.
    pub postgres_port: u16,
    /// The merchant webhook sink, on the network gateway.
    pub merchant_port: u16,
    /// The Binance stub, on the network gateway.
    pub binance_port: u16,
    /// The Postgres server the proxy forwards to (admin URL, trust auth, no secret in it).
    pub postgres_admin_url: String,
    /// The sandbox database on that server (isolated sandboxes use their own).
    #[serde(default = "default_database")]
    pub database: String,
    /// The Docker network pods join.
    pub network: String,
    /// The node name of the kubelet; containers carry it as a label, which is how `down` finds
    /// this sandbox's containers and no one else's.
    pub node: String,
    /// How long the Deployment and ReplicaSet controllers wait before acting on a change (a
    /// real controller manager's work queue lag: `status.observedGeneration` trails
    /// `metadata.generation` meanwhile); 0 reacts at once.
    #[serde(default = "default_controller_sync_delay_ms")]
    pub controller_sync_delay_ms: u64,
}

/// The default of [`Settings::controller_sync_delay_ms`].
pub const CONTROLLER_SYNC_DELAY_MS: u64 = 1000;

fn default_controller_sync_delay_ms() -> u64 {
    CONTROLLER_SYNC_DELAY_MS
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            api_port: 6443,
            control_port: 6444,
            registry_port: 5000,
            prometheus_port: 9090,
            alertmanager_port: 9093,
            postgres_port: 55433,
            merchant_port: 18080,
            binance_port: 18081,
            postgres_admin_url: "postgres://postgres@127.0.0.1:55432/postgres".to_owned(),
            database: DATABASE.to_owned(),
            network: "psctl-sandbox".to_owned(),
            node: "psctl-sandbox".to_owned(),
            controller_sync_delay_ms: CONTROLLER_SYNC_DELAY_MS,
        }
    }
}

fn default_alertmanager_port() -> u16 {
    9093
}

fn default_database() -> String {
    DATABASE.to_owned()
}

impl Settings {
    /// Checks what the shell, SQL and Docker will see: names must be plain identifiers.
    pub fn validate(&self) -> anyhow::Result<()> {
        let plain = |value: &str| {
            !value.is_empty()
                && value
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        };
        if !plain(&self.database)
            || self.database.contains('-')
            || self.database.as_bytes()[0].is_ascii_digit()
        {
            anyhow::bail!(
                "invalid database name `{}`: use letters, digits and `_`, starting with a letter",
                self.database
            );
        }
        for (what, value) in [("network", &self.network), ("node", &self.node)] {
            if !plain(value) {
                anyhow::bail!("invalid {what} name `{value}`: use letters, digits, `-` and `_`");
            }
        }
        Ok(())
    }

    /// `127.0.0.1:<registry_port>`, the registry as image references name it.
    pub fn registry(&self) -> String {
        format!("127.0.0.1:{}", self.registry_port)
    }

    /// The API server URL.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The API server over HTTPS, as kubeconfigs name it: client-go sends credentials only over
    /// TLS. The same port also answers plain HTTP ([`Self::api_url`]).
    pub fn api_https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The daemon's control URL.
    pub fn control_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.control_port)
    }

    /// The Binance stub as containers reach it.
    pub fn binance_url(&self, gateway: &str) -> String {
        format!("http://{gateway}:{}", self.binance_port)
    }

    /// The Prometheus URL.
    pub fn prometheus_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.prometheus_port)
    }

    /// Alertmanager's base URL.
    pub fn alertmanager_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.alertmanager_port)
    }

    /// The sandbox database as seen from this machine.
    pub fn database_url_host(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.postgres_port, self.database
        )
    }

    /// The sandbox database as seen from a container on the network (through its gateway).
    pub fn database_url_containers(&self, gateway: &str) -> String {
        format!(
            "postgres://postgres@{gateway}:{}/{}",
            self.postgres_port, self.database
        )
    }

    /// The admin URL pointed at another database of the same server.
    pub fn admin_url_for(&self, database: &str) -> anyhow::Result<String> {
        let (base, _) = self.postgres_admin_url.rsplit_once('/').with_context(|| {
            format!(
                "the Postgres admin URL `{}` has no `/<database>` part",
                self.postgres_admin_url
            )
        })?;
        Ok(format!("{base}/{database}"))
    }

    /// `host:port` the proxy forwards to, from the admin URL.
    pub fn postgres_upstream(&self) -> anyhow::Result<String> {
        let rest = self
            .postgres_admin_url
            .split_once("://")
            .map(|(_, rest)| rest)
            .with_context(|| {
                format!(
                    "the Postgres admin URL `{}` has no scheme",
                    self.postgres_admin_url
                )
            })?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let host_port = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if host_port.contains(':') {
            Ok(host_port.to_owned())
        } else {
            Ok(format!("{host_port}:5432"))
        }
    }
}

/// The files of a sandbox state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// `--state-dir`, else `$PSCTL_SANDBOX_DIR`, else `~/.cache/psctl/sandbox`.
    pub fn resolve(flag: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(dir) = flag {
            return Ok(Self::new(absolute(&dir)?));
        }
        let home = std::env::var_os("HOME")
            .context("HOME is not set: pass --state-dir or set PSCTL_SANDBOX_DIR")?;
        Ok(Self::new(PathBuf::from(home).join(".cache/psctl/sandbox")))
    }

    pub fn settings(&self) -> PathBuf {
        self.root.join("sandbox.json")
    }
    pub fn gateway(&self) -> PathBuf {
        self.root.join("gateway")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    pub fn psctl_config(&self) -> PathBuf {
        self.root.join("psctl.yaml")
    }
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
    /// The kubelet's root directory: projected volumes (ServiceAccount tokens) of its pods.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.root.join("kubelet")
    }
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.pid"))
    }
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }
    pub fn registry_dir(&self) -> PathBuf {
        self.root.join("registry")
    }
    pub fn prometheus_dir(&self) -> PathBuf {
        self.root.join("prometheus")
    }
    pub fn prometheus_targets(&self) -> PathBuf {
        self.prometheus_dir().join("targets.json")
    }
    /// Rule files from the API server's PrometheusRules (`rules.rs`).
    pub fn prometheus_rules_dir(&self) -> PathBuf {
        self.prometheus_dir().join("rules")
    }
    pub fn alertmanager_dir(&self) -> PathBuf {
        self.root.join("alertmanager")
    }
    pub fn base_image_dir(&self) -> PathBuf {
        self.root.join("base-image")
    }
    pub fn kubectl(&self) -> PathBuf {
        self.root.join("bin/kubectl")
    }
    pub fn helm(&self) -> PathBuf {
        self.root.join("bin/helm")
    }

    /// The settings `up` recorded.
    pub fn load_settings(&self) -> anyhow::Result<Settings> {
        let path = self.settings();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no sandbox at `{}` (cannot read `{}`): run `psctl-sandbox up` first",
                self.root.display(),
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "`{}` is not valid sandbox settings; `psctl-sandbox up` rewrites it",
                path.display()
            )
        })
    }

    /// The Docker network gateway recorded by `up`.
    pub fn load_gateway(&self) -> anyhow::Result<String> {
        let path = self.gateway();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read `{}`: run `psctl-sandbox up` first",
                path.display()
            )
        })?;
        Ok(text.trim().to_owned())
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("cannot read the current directory")?
            .join(path))
    }
}

/// The repository root: `--repo`/`PSCTL_REPO`, else the checkout this binary was built from.
pub fn repo_root(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_ports() {
        let settings = Settings {
            api_port: 7000,
            postgres_port: 7001,
            ..Settings::default()
        };
        assert_eq!(settings.api_url(), "http://127.0.0.1:7000");
        assert_eq!(
            settings.database_url_host(),
            "postgres://postgres@127.0.0.1:7001/problemsolver"
        );
        assert_eq!(
            settings.database_url_containers("172.30.0.1"),
            "postgres://postgres@172.30.0.1:7001/problemsolver"
        );
    }

    #[test]
    fn upstream_and_admin_urls_are_derived_from_the_admin_url() {
        let settings = Settings::default();
        assert_eq!(settings.postgres_upstream().unwrap(), "127.0.0.1:55432");
        assert_eq!(
            settings.admin_url_for("x").unwrap(),
            "postgres://postgres@127.0.0.1:55432/x"
        );
        let bare = Settings {
            postgres_admin_url: "postgres://db.local/postgres".to_owned(),
            ..Settings::default()
        };
        assert_eq!(bare.postgres_upstream().unwrap(), "db.local:5432");
        let isolated = Settings {
            database: "sbx_two".to_owned(),
            ..Settings::default()
        };
        assert!(isolated.database_url_host().ends_with("/sbx_two"));
        assert!(
            isolated
                .database_url_containers("10.0.0.1")
                .ends_with("/sbx_two")
        );
        let broken = Settings {
            postgres_admin_url: "nonsense".to_owned(),
            ..Settings::default()
        };
        assert!(broken.postgres_upstream().is_err());
    }

    #[test]
    fn names_that_would_need_quoting_are_refused() {
        assert!(Settings::default().validate().is_ok());
        for database in ["", "drop table", "a-b", "1db", "x;y"] {
            let settings = Settings {
                database: database.to_owned(),
                ..Settings::default()
            };
            assert!(settings.validate().is_err(), "{database:?}");
        }
        let settings = Settings {
            network: "net work".to_owned(),
            ..Settings::default()
        };
        assert!(settings.validate().is_err());
    }

    #[test]
    fn settings_round_trip_through_json() {
        let settings = Settings::default();
        let text = serde_json::to_string(&settings).unwrap();
        assert_eq!(serde_json::from_str::<Settings>(&text).unwrap(), settings);
    }
}
