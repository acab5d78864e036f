//! Command-line types of `psctl-sandbox` (clap only; the doc comments are the `--help` text).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The psctl sandbox: an emulated Kubernetes control plane over real Docker containers, with a
/// registry, Prometheus, Postgres, real kubectl and the real Helm engine.
#[derive(Debug, Parser)]
#[command(
    name = "psctl-sandbox",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BUILD_GIT_COMMIT"), ")")
)]
pub struct Cli {
    /// State directory of the sandbox (kubeconfig, secrets, logs, registry data).
    #[arg(long, global = true, env = "PSCTL_SANDBOX_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the sandbox up (idempotent: running parts are kept).
    Up(UpArgs),
    /// Stop everything the sandbox started.
    Down(DownArgs),
    /// Show whether each part is up (exit 0 when all are, 1 otherwise).
    Status(StatusArgs),
    /// Print shell `export` lines: eval "$(psctl-sandbox env)".
    Env,
    /// Inject a fault into one part.
    #[command(subcommand)]
    Fault(FaultCommand),
    /// Run the sandbox daemon in the foreground (`up` starts it detached).
    Serve,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The psctl checkout whose scripts/ and migrations are used.
    #[arg(long, env = "PSCTL_REPO")]
    pub repo: Option<PathBuf>,
    /// Skip scripts/bootstrap.sh (Debian packages).
    #[arg(long)]
    pub no_bootstrap: bool,
    /// Skip scripts/fetch-tools.sh (kubectl and the Helm engine).
    #[arg(long)]
    pub no_tools: bool,
    /// API server port on 127.0.0.1.
    #[arg(long)]
    pub api_port: Option<u16>,
    /// Daemon control port on 127.0.0.1.
    #[arg(long)]
    pub control_port: Option<u16>,
    /// Registry port on 127.0.0.1.
    #[arg(long)]
    pub registry_port: Option<u16>,
    /// Prometheus port on 127.0.0.1.
    #[arg(long)]
    pub prometheus_port: Option<u16>,
    /// Alertmanager port on 127.0.0.1.
    #[arg(long)]
    pub alertmanager_port: Option<u16>,
    /// Port of the sandbox's Postgres endpoint (loopback and network gateway).
    #[arg(long)]
    pub postgres_port: Option<u16>,
    /// Merchant webhook sink port (network gateway).
    #[arg(long)]
    pub merchant_port: Option<u16>,
    /// Binance stub port (network gateway).
    #[arg(long)]
    pub binance_port: Option<u16>,
    /// Admin URL of the Postgres server to use (no password; trust or peer auth).
    #[arg(long)]
    pub postgres_admin_url: Option<String>,
    /// Name of the sandbox database on the Postgres server.
    #[arg(long)]
    pub database: Option<String>,
    /// Docker network for pods.
    #[arg(long)]
    pub network: Option<String>,
    /// Node name of the kubelet (labels this sandbox's containers).
    #[arg(long)]
    pub node: Option<String>,
    /// Milliseconds the Deployment and ReplicaSet controllers wait before acting on a change,
    /// like a controller manager's work queue (default 1000; 0 reacts at once). Takes effect
    /// when the daemon starts: `down`, then `up`.
    #[arg(long, value_name = "MS")]
    pub controller_sync_delay_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also delete the state directory (secrets, registry data, tools).
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Make the API server fail or slow down for matching requests (or --clear, or list).
    Api(ApiFaultArgs),
    /// Turn the registry off (pushes and pulls fail) or back on.
    Registry {
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Stop or start Prometheus.
    Prometheus {
        #[arg(value_enum)]
        action: StartStop,
    },
    /// Cut the sandbox's Postgres endpoint (open connections dropped) or restore it.
    Postgres {
        #[arg(value_enum)]
        action: StartStop,
    },
    /// Evict a pod as the kubelet does under node pressure: its containers are killed and the
    /// pod is left `Failed` with reason `Evicted` (its ReplicaSet creates a replacement).
    Evict {
        /// Pod name.
        pod: String,
        /// Pod namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// End every open watch stream of the API server now, as a restarting API server or a load
    /// balancer's idle timeout does; clients must re-watch.
    CutWatches {
        /// Also compact the watch history to now: resuming from an earlier resourceVersion gets
        /// 410 Expired, so clients must re-list (a restarted server's empty watch cache).
        #[arg(long)]
        compact: bool,
    },
    /// Kill the containers of a pod (the kubelet restarts them per restartPolicy).
    KillContainer {
        /// Pod name.
        pod: String,
        /// Pod namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Args)]
pub struct ApiFaultArgs {
    /// Regular expression over the request path, e.g. `/apis/apps/v1/.*/deployments`.
    #[arg(long)]
    pub path: Option<String>,
    /// Only this HTTP method.
    #[arg(long)]
    pub method: Option<String>,
    /// Answer with this HTTP status.
    #[arg(long)]
    pub status: Option<u16>,
    /// Delay answers by this many milliseconds.
    #[arg(long)]
    pub delay_ms: Option<u64>,
    /// Expire after this many matching requests.
    #[arg(long)]
    pub count: Option<u64>,
    /// Remove every API fault.
    #[arg(long, conflicts_with = "path")]
    pub clear: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum StartStop {
    Start,
    Stop,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fault_api_parses() {
        let cli = Cli::try_parse_from([
            "psctl-sandbox",
            "fault",
            "api",
            "--path",
            "/api/.*",
            "--status",
            "500",
        ])
        .unwrap();
        let Command::Fault(FaultCommand::Api(args)) = cli.command else {
            panic!("wrong command")
        };
        assert_eq!(args.status, Some(500));
        assert!(
            Cli::try_parse_from(["psctl-sandbox", "fault", "api", "--path", "x", "--clear"])
                .is_err()
        );
    }
}
