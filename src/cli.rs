//! Command-line interface: clap derive types only, no logic.
//!
//! One `*Args` struct per subcommand; the doc comment on every field is its `--help` text.
//! `crate::settings` turns these into resolved settings by destructuring every field, so a flag
//! nobody handles does not compile.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `psctl --version`: the crate version and the git commit it was built from (`unknown` when
/// built without git).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_GIT_COMMIT"),
    ")"
);

/// Deploy, validate, promote and roll back the problemsolver services on Kubernetes.
#[derive(Debug, Parser)]
#[command(
    name = "psctl",
    version = VERSION,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Exit codes: 0 success, 1 a verification said no, 2 usage or configuration error, \
3 environment unreachable, 4 the automatic rollback failed (a human must act).\n\n\
Examples:\n  psctl deploy --env sandbox --yes\n  psctl history webhook --env sandbox -o json\n  \
psctl rollback webhook --env sandbox"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file describing the environments.
    #[arg(
        long,
        global = true,
        env = "PSCTL_CONFIG",
        hide_env_values = true,
        default_value = "psctl.yaml",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// Environment from the configuration file to act on (optional when the file has exactly one).
    #[arg(
        long = "env",
        global = true,
        env = "PSCTL_ENV",
        hide_env_values = true,
        value_name = "NAME"
    )]
    pub environment: Option<String>,

    /// Kubernetes context, overriding the environment's `kube_context` (unused in a pod that
    /// falls back to its ServiceAccount for want of a kubeconfig).
    #[arg(
        long,
        visible_alias = "kube-context",
        global = true,
        env = "PSCTL_CONTEXT",
        hide_env_values = true,
        value_name = "NAME"
    )]
    pub context: Option<String>,

    /// Namespace, overriding the environment's `namespace`.
    #[arg(
        long,
        global = true,
        env = "PSCTL_NAMESPACE",
        hide_env_values = true,
        value_name = "NAME"
    )]
    pub namespace: Option<String>,

    /// Output format for data written to stdout.
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "PSCTL_OUTPUT",
        hide_env_values = true,
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,

    /// Print the plan of a mutating command and stop without changing anything.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Do not ask for confirmation (required with `-q` or when stdin or stderr is not a terminal:
    /// a question nobody can see is refused, never left waiting).
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,

    /// More detail on stderr (repeat for debug logs).
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less detail on stderr (repeat to keep only errors).
    #[arg(short = 'q', long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// PostgreSQL URL, overriding the variable named by the environment's `database_url_env`
    /// (default `DATABASE_URL`). Shown only with its password masked.
    #[arg(long, global = true, value_name = "URL", value_parser = parse_database_url)]
    pub database_url: Option<crate::db::DatabaseUrl>,

    /// Proceed even when the audit trail cannot be written (the gap is reported on stderr).
    #[arg(long, global = true)]
    pub allow_no_audit: bool,
}

fn parse_database_url(text: &str) -> Result<crate::db::DatabaseUrl, String> {
    crate::db::DatabaseUrl::parse(text, crate::db::UrlSource::Flag)
        .map_err(|error| error.to_string())
}

/// How data is rendered on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables.
    Table,
    /// JSON with the stable schemas documented in docs/cli.md.
    Json,
    /// The same data as `json`, as YAML.
    Yaml,
    /// JUnit XML for CI systems (`psctl smoke` only; other commands refuse it).
    Junit,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy components with Helm, track the rollout, roll back automatically on failure.
    Deploy(DeployArgs),
    /// Show a component's Helm revisions, oldest first.
    History(HistoryArgs),
    /// Roll a component back to an earlier revision, or recover a release stuck in pending-*.
    Rollback(RollbackArgs),
    /// Remove a component's Helm release (then redeploy a pinned tag with `psctl deploy`).
    Uninstall(UninstallArgs),
    /// Releases, revisions, pods, last poller success and queue depth on one screen.
    Status(StatusArgs),
    /// Post-deploy validation: pods, metrics, monitoring, a paid smoke invoice, ledger integrity.
    Smoke(SmokeArgs),
    /// Phased canary promotion (10/30/60/100) with statistical gates and automatic abort.
    #[command(subcommand)]
    Canary(CanaryCommand),
    /// Emergency stop: scale components to zero and restore them exactly.
    #[command(name = "kill-switch")]
    KillSwitch(KillSwitchArgs),
    /// Database migrations, backups, restores and verification.
    Db(DbArgs),
    /// List the audit trail of operator actions (newest last).
    Audit(AuditArgs),
    /// Build both service images, tag them immutably, scan and push them, print their digests.
    Build(BuildArgs),
    /// Create, update and check the runtime Secret without putting a value on a command line.
    Secrets(SecretsArgs),
    /// Run a playbook: a reviewed YAML procedure of psctl steps (release, rollback, ...).
    Run(RunArgs),
    /// Gather incident evidence: pod logs, events, Helm history, checkpoint, system events.
    Evidence(EvidenceArgs),
    /// Print the least-privilege Role (and RoleBinding) psctl and Helm need in an environment.
    Rbac(RbacArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Man(ManArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  psctl deploy --env sandbox --yes\n  \
psctl deploy --env sandbox --component webhook --tag 1.4.2\n  \
psctl deploy --env sandbox --dry-run")]
pub struct DeployArgs {
    /// Component to deploy (repeatable; default: every component, in configuration order).
    #[arg(long = "component", short = 'c', value_name = "NAME")]
    pub components: Vec<String>,

    /// Image tag to deploy: letters, digits, `_`, `.`, `-` (the OCI tag grammar). Default: the
    /// tag each release runs now (said on stderr); a first install needs `--tag`.
    #[arg(long, value_name = "TAG", value_parser = crate::registry::parse_tag)]
    pub tag: Option<String>,

    /// Upper bound for the whole rollout of each component, e.g. `90s`, `5m`.
    #[arg(long, default_value = "5m", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// After each rollout is complete, keep watching its new pods this long: a container that
    /// restarts, or a pod unready for more than 10 s, fails the rollout and rolls it back.
    /// Default: the environment's `deploy_hold` in psctl.yaml (30s when unset); `0s` skips it.
    #[arg(long, value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub hold: Option<Duration>,

    /// On failure, report the diagnosis but leave the failed revision in place.
    #[arg(long)]
    pub no_rollback: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  psctl history webhook --env sandbox\n  \
psctl history --env sandbox -o json")]
pub struct HistoryArgs {
    /// Component whose release history to show (default: every component).
    #[arg(value_name = "COMPONENT")]
    pub component: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "After the rollback rolls out, psctl verifies the recovery: the component's \
pods Ready and not restarting, its metrics endpoint serving every required metric, and, when \
psctl.yaml sets `recovery.deposit_rate_baseline`, the deposit rate back to its level before the \
incident within the configured window. A failed verification exits 1 (3 when only Prometheus or \
the API server was out of reach); `--no-verify` skips it (see docs/rollback.md).\n\n\
Examples:\n  psctl rollback webhook --env sandbox\n  \
psctl rollback webhook --env sandbox --to-rev 3\n  psctl rollback poller --undo\n  \
psctl rollback webhook --unstick --yes\n  psctl rollback webhook --env sandbox --no-verify"
)]
pub struct RollbackArgs {
    /// Component to roll back (optional when the environment has exactly one component).
    #[arg(value_name = "COMPONENT")]
    pub component: Option<String>,

    /// Helm revision to roll back to (default: the last successfully deployed one before the current).
    #[arg(long, value_name = "N", conflicts_with_all = ["undo", "unstick"])]
    pub to_rev: Option<u32>,

    /// Use the Deployment's own ReplicaSet history instead of Helm (like `kubectl rollout undo`).
    #[arg(long, conflicts_with = "unstick")]
    pub undo: bool,

    /// Recover a release stuck in pending-install/upgrade/rollback (shows the plan, then asks).
    #[arg(long)]
    pub unstick: bool,

    /// With --unstick: also recover a pending revision younger than 5 minutes, whose Helm
    /// operation may still be running.
    #[arg(long, requires = "unstick")]
    pub force: bool,

    /// Upper bound for tracking the rollback's rollout.
    #[arg(long, default_value = "5m", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Do not verify the recovery after the rollout (smoke checks and the deposit-rate
    /// baseline); the rollback then succeeds once its rollout completes.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The rollback runbook's other way back, when a Helm rollback is not wanted: \
uninstall the release, then deploy the pinned tag again. The plan shows what runs now and the \
last good tag before it, recorded in the audit trail before Helm deletes the release's history. \
Takes the deploy Lease, refuses while the kill switch is on for the component, asks unless \
--yes, and on a production environment also needs --force-production (see docs/rollback.md).\n\n\
Examples:\n  psctl uninstall webhook --env staging --dry-run -o json\n  \
psctl uninstall webhook --env staging --yes\n  \
psctl deploy --env staging --component webhook --tag 1.4.1 --yes"
)]
pub struct UninstallArgs {
    /// Component whose release is removed.
    #[arg(value_name = "COMPONENT")]
    pub component: String,

    /// Uninstall in an environment marked `production: true` (it stops serving until the next deploy).
    #[arg(long)]
    pub force_production: bool,

    /// Upper bound for waiting until the Deployment and its pods are gone.
    #[arg(long, default_value = "2m", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl status --env sandbox\n  psctl status --env sandbox -o json"
)]
pub struct StatusArgs {}

#[derive(Debug, Args)]
#[command(
    after_help = "Prints YAML for `kubectl apply -f -` (a Role named psctl in the \
environment's namespace, each rule commented with who needs it; see docs/rbac.md), or the objects \
as JSON with -o json. Nothing is sent to the cluster.\n\n\
Examples:\n  psctl rbac --env production\n  \
psctl rbac --env production --subject system:serviceaccount:ci:psctl | kubectl apply -f -\n  \
psctl rbac --env staging --subject User:alice"
)]
pub struct RbacArgs {
    /// Also print a RoleBinding of the Role to this subject: `system:serviceaccount:NS:NAME` or
    /// `User:NAME`.
    #[arg(long, value_name = "SUBJECT")]
    pub subject: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Categories: cluster (pods Ready, none restarting), metrics (each /metrics \
endpoint through the API server's service proxy: valid exposition, required names, poller \
freshness), monitoring (ServiceMonitors, Prometheus targets UP, a sample PromQL query, the \
rules of each release's PrometheusRule loaded by Prometheus; skipped when the component's values \
set prometheusRule.enabled: false), functional \
(a smoke invoice paid by the running poller: one payment, one ledger entry, one webhook row, the \
deposit counter rising; refused on production without --force), integrity (ledger UPDATE refused, \
reconciliation counts zero). Every check is documented in docs/smoke.md.\n\n\
Exit codes: 0 every check passed or was skipped, 1 a check failed, 2 usage or configuration \
error, 3 every failure was an unreachable dependency (Prometheus, cluster, database): nothing \
that could be judged said no.\n\n\
Examples:\n  psctl smoke --env sandbox\n  psctl smoke --env sandbox --only cluster metrics monitoring\n  \
psctl smoke --env staging -o junit > smoke.xml\n  \
psctl smoke --env sandbox --component webhook --selector track=canary --wait 30s"
)]
pub struct SmokeArgs {
    /// Run only these categories (several after one flag, or repeat it).
    #[arg(long, value_enum, num_args = 1.., value_name = "CATEGORY")]
    pub only: Vec<SmokeCategory>,

    /// Judge only this component (repeatable; default: every component).
    #[arg(long = "component", short = 'c', value_name = "NAME")]
    pub components: Vec<String>,

    /// Extra label selector narrowing the pods and Prometheus targets judged, e.g.
    /// `track=canary`.
    #[arg(long, value_name = "LABELS")]
    pub selector: Option<String>,

    /// Run the functional check on a production environment (it writes rows marked is_smoke).
    #[arg(long)]
    pub force: bool,

    /// Oldest acceptable last successful poll (`problemsolver_poller_last_success_unixtime`).
    #[arg(long, default_value = "60s", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub freshness: Duration,

    /// How long the functional check waits for the poller to pay the smoke invoice (its poll
    /// interval plus a margin).
    #[arg(long, default_value = "15s", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub functional_timeout: Duration,

    /// Upper bound of one attempt of every other check.
    #[arg(long, default_value = "10s", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Keep retrying failing cluster, metrics and monitoring checks this long (right after a
    /// rollout, pods and Prometheus targets take seconds to converge).
    #[arg(long, default_value = "0s", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub wait: Duration,
}

/// A smoke check category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SmokeCategory {
    /// Pods Ready, none restarting.
    Cluster,
    /// Metrics endpoints valid with the required names; poller freshness.
    Metrics,
    /// ServiceMonitors, Prometheus targets UP, a sample query.
    Monitoring,
    /// A smoke invoice paid end to end by the running poller.
    Functional,
    /// Ledger append-only guard and reconciliation counts.
    Integrity,
}

/// `psctl canary` subcommands. The run's state lives in the ConfigMap `psctl-canary-<component>`,
/// so any operator can follow, pause, promote or abort it from any machine.
#[derive(Debug, Subcommand)]
pub enum CanaryCommand {
    /// Deploy TAG as the canary track and promote it step by step while the gates pass.
    Start(CanaryStartArgs),
    /// Show a run: step, weights, who drives it, every evaluation with its figures (`--watch`
    /// follows it live).
    Status(CanaryStatusArgs),
    /// End the current step now and continue (or, with --full, promote to 100 % at once).
    Promote(CanaryPromoteArgs),
    /// Scale the canary to zero (kept for investigation) and restore stable.
    Abort(CanaryTargetArgs),
    /// Continue a run from its recorded step (after a crash, or after a pause).
    Resume(CanaryResumeArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  psctl canary status --env sandbox\n  \
psctl canary status --env sandbox --component webhook -o json\n  \
psctl canary status --env production --watch          # follow a run someone else started")]
pub struct CanaryStatusArgs {
    /// Component whose canary to show (default: the only component with a canary track).
    #[arg(long, short = 'c', value_name = "NAME")]
    pub component: Option<String>,

    /// Keep watching the run from any machine: print each evaluation and event as the driver
    /// records it (under a live line on a terminal, as plain lines otherwise) until the run is
    /// promoted (exit 0) or aborted (exit 1); then print the report. A paused run is watched
    /// until someone promotes, resumes or aborts it.
    #[arg(long, short = 'w')]
    pub watch: bool,

    /// How often `--watch` reads the run's state (one GET of its ConfigMap each time).
    #[arg(long, default_value = "2s", value_parser = crate::settings::parse_duration, value_name = "DURATION", requires = "watch")]
    pub every: Duration,
}

/// Which component's canary, plus how long a scale or rollout may take.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  psctl canary status --env sandbox\n  \
psctl canary abort --env sandbox --component webhook --yes")]
pub struct CanaryTargetArgs {
    /// Component whose canary to act on (default: the only component with a canary track).
    #[arg(long, short = 'c', value_name = "NAME")]
    pub component: Option<String>,

    /// Upper bound for each scale, rollout or promotion the command waits for.
    #[arg(long, default_value = "5m", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl canary start --env sandbox --component webhook --tag 1.4.3 --yes\n  \
psctl canary start --tag 1.4.3 --steps 10,30,60,100 --bake 5m --interval 30s\n  \
psctl canary start --tag 1.4.3 --values new-release.yaml --dry-run\n  \
psctl canary start --tag 1.4.3 --max-error-rate 0.005 --on-latency pause\n\n\
Each step scales the canary and stable Deployments to the weight (10 % of 10 replicas is 1 canary\n\
+ 9 stable), smokes the canary pods, then compares canary and stable in Prometheus every\n\
interval. A step passes after its bake with enough evidence; it extends while inconclusive and\n\
then pauses for a human. Two failed evaluations in a row, or the absolute guardrail, abort:\n\
the canary is scaled to zero and stable restored (exit 1). Reaching 100 % promotes: stable is\n\
upgraded to TAG with Helm and the canary track removed. See docs/canary.md."
)]
pub struct CanaryStartArgs {
    /// Component to canary (default: the only component with a `canary:` section).
    #[arg(long, short = 'c', value_name = "NAME")]
    pub component: Option<String>,

    /// Image tag of the new release (must exist in the registry; letters, digits, `_`, `.`, `-`).
    #[arg(long, value_name = "TAG", value_parser = crate::registry::parse_tag)]
    pub tag: String,

    /// Canary weights in percent, increasing; 100 means promotion [default: from psctl.yaml,
    /// else 10,30,60,100].
    #[arg(long, value_delimiter = ',', value_name = "PERCENT,...")]
    pub steps: Option<Vec<u8>>,

    /// How long each step must pass before the next [default: from psctl.yaml, else 5m].
    #[arg(long, value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub bake: Option<Duration>,

    /// How often the gates are evaluated [default: from psctl.yaml, else 30s].
    #[arg(long, value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Canary requests needed in a step before the error-rate gate can pass [default: 50].
    #[arg(long, value_name = "N")]
    pub min_requests: Option<f64>,

    /// Probability needed to call the canary worse, or not worse, than stable [default: 0.95].
    #[arg(long, value_name = "P")]
    pub confidence: Option<f64>,

    /// What an inconclusive step does at its bake limit [default: pause].
    #[arg(long, value_enum, value_name = "ACTION")]
    pub on_inconclusive: Option<CanaryInconclusive>,

    /// Absolute target for the canary's failure rate since its step began, judged beside the
    /// comparison with stable, e.g. 0.005 for the runbook's "error rate < 0.5 %"; between 0 and
    /// 1 (exclusive) [default: the policy's `max_error_rate` in psctl.yaml, else none].
    #[arg(long, value_name = "RATE")]
    pub max_error_rate: Option<f64>,

    /// What a p95 latency breach does once it has failed the evaluations that abort a run
    /// [default: the policy's `on_latency` in psctl.yaml, else abort].
    #[arg(long, value_enum, value_name = "ACTION")]
    pub on_latency: Option<CanaryLatency>,

    /// Extra chart values of the new release (YAML, no secrets): applied to the canary track,
    /// and to stable at promotion.
    #[arg(long, value_name = "FILE")]
    pub values: Option<PathBuf>,

    /// Upper bound for each scale, rollout or promotion the run waits for.
    #[arg(long, default_value = "5m", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// What an inconclusive step does once its bake has been extended to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CanaryInconclusive {
    /// Stop and wait for `psctl canary promote` or `psctl canary abort`.
    Pause,
    /// Abort the canary.
    Abort,
}

/// What a latency breach does at the abort limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CanaryLatency {
    /// Abort the canary like any other failed gate.
    Abort,
    /// Stop and wait for a human (only when latency is the one gate that failed).
    Pause,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl canary promote --env sandbox --yes\n  \
psctl canary promote --env sandbox --full --yes\n\n\
While another psctl drives the run, the request is stored in the run's state and acted on at its\n\
next evaluation. A paused run is continued by this command itself."
)]
pub struct CanaryPromoteArgs {
    #[command(flatten)]
    pub target: CanaryTargetArgs,

    /// Skip every remaining step: upgrade stable to the canary's tag now.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl canary resume --env sandbox --yes\n\n\
A run whose psctl died continues at the recorded step, with the step's clock and tally: if the\n\
dead process still holds the deploy Lease, resume waits for it to expire (60 s) unless the\n\
holder is a process of this host that no longer exists. A paused run restarts its step's bake."
)]
pub struct CanaryResumeArgs {
    #[command(flatten)]
    pub target: CanaryTargetArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl kill-switch on --env sandbox --component poller --yes\n  \
psctl kill-switch off --env sandbox --yes"
)]
pub struct KillSwitchArgs {
    /// `on` scales the components to zero; `off` restores the remembered replica counts.
    #[arg(value_enum)]
    pub state: KillSwitchState,

    /// Component to stop or restore (repeatable; default: every component).
    #[arg(long = "component", short = 'c', value_name = "NAME")]
    pub components: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KillSwitchState {
    On,
    Off,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The tag is `<git-sha12>[-dirty-<diff8>][-<ci-build>]` unless --tag is given. A tag \
already in the registry is never overwritten: the same image is reported as already present, \
another image is refused (exit 2). A dirty work tree is refused for production environments.\n\n\
Examples:\n  psctl build --env sandbox\n  \
psctl build --env sandbox --prebuilt \"$CARGO_TARGET_DIR/release\" -o json\n  \
psctl build --env production --ci-build \"$GITHUB_RUN_NUMBER\"\n  \
psctl build --env sandbox --component webhook --dry-run"
)]
pub struct BuildArgs {
    /// Component whose image to build (repeatable; default: every component).
    #[arg(long = "component", short = 'c', value_name = "NAME")]
    pub components: Vec<String>,

    /// Use this tag instead of the one derived from git (CI pipelines with their own scheme;
    /// letters, digits, `_`, `.`, `-`).
    #[arg(long, value_name = "TAG", value_parser = crate::registry::parse_tag)]
    pub tag: Option<String>,

    /// CI build number appended to the derived tag: `<git-sha12>-<ID>`.
    #[arg(
        long,
        env = "PSCTL_CI_BUILD",
        hide_env_values = true,
        value_name = "ID",
        conflicts_with = "tag"
    )]
    pub ci_build: Option<String>,

    /// Directory holding already built service binaries; skips `cargo build --release`.
    #[arg(long, value_name = "DIR")]
    pub prebuilt: Option<PathBuf>,

    /// Base image to run the binaries on (the Dockerfile's RUNTIME_BASE), overriding the
    /// environment's `build.runtime_base`.
    #[arg(long, value_name = "IMAGE")]
    pub runtime_base: Option<String>,

    /// Container tool, overriding the environment's `build.tool` [default: docker].
    #[arg(long, value_enum)]
    pub tool: Option<crate::settings::BuildTool>,

    /// Build from a dirty work tree even for a production environment (the tag says `-dirty-`).
    #[arg(long)]
    pub allow_dirty: bool,
}

#[derive(Debug, Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub command: SecretsCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Create or update the runtime Secret from an env file or the process environment.
    Apply(SecretsApplyArgs),
    /// Which required keys are present, missing or empty, and when the Secret last changed.
    Check(SecretsCheckArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Values are read from FILE or the process environment only, never from \
the command line, and are never printed: the diff shows key names, whether each value is added, \
changed, unchanged or removed, its length class and a keyed fingerprint (see docs/secrets.md).\n\n\
Examples:\n  psctl secrets apply --env sandbox --from-env-file runtime.env --dry-run\n  \
psctl secrets apply --env sandbox --from-env-file runtime.env --yes -v\n  \
BINANCE_API_KEY=… psctl secrets apply --env production --from-env BINANCE_API_KEY"
)]
pub struct SecretsApplyArgs {
    /// Env file with `KEY=VALUE` lines (`#` comments, optional `export`, single or double quotes).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "from_env",
        conflicts_with = "from_env"
    )]
    pub from_env_file: Option<PathBuf>,

    /// Read these keys from psctl's own environment (repeatable, or several after one flag).
    #[arg(long, value_name = "KEY", num_args = 1..)]
    pub from_env: Vec<String>,

    /// Remove keys the Secret has but the input does not (default: keep them).
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl secrets check --env sandbox\n  psctl secrets check --env production -o json"
)]
pub struct SecretsCheckArgs {}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl completions bash > /etc/bash_completion.d/psctl\n  \
psctl completions zsh > ~/.zfunc/_psctl"
)]
pub struct CompletionsArgs {
    /// Shell to generate the completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  psctl man | man -l -")]
pub struct ManArgs {}

#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations (after a verified backup), or revert the newest N with --down.
    Migrate(DbMigrateArgs),
    /// Take a verified `pg_dump --format=custom` backup and prune psctl's old ones.
    Backup(DbBackupArgs),
    /// Restore a verified backup into a NEW database, migrate it and verify it.
    Restore(DbRestoreArgs),
    /// Check append-only enforcement, reconciliation totals and the audit hash chain.
    Verify(DbVerifyArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl db migrate --env staging --dry-run\n  \
psctl db migrate --database-url postgres://app@db/payments --yes\n  \
psctl db migrate --env staging --down 1 --yes"
)]
pub struct DbMigrateArgs {
    /// Revert the newest N applied migrations instead of applying pending ones. Refused on a
    /// production environment unless --force-production and the environment name is typed.
    #[arg(long, value_name = "N")]
    pub down: Option<u32>,

    /// Allow --down on a production environment (a typed confirmation is still required).
    #[arg(long, requires = "down")]
    pub force_production: bool,

    /// Directory for the backup taken before migrating [default: $PSCTL_BACKUP_DIR or
    /// ~/.local/share/psctl/backups].
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl db backup --env production --dir /var/backups/psctl\n  \
psctl db backup --database-url postgres://app@db/payments --retention-days 7 -o json"
)]
pub struct DbBackupArgs {
    /// Directory to write the dump and its manifest into [default: $PSCTL_BACKUP_DIR or
    /// ~/.local/share/psctl/backups].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Delete psctl's backups in DIR older than this many days (only files with a psctl manifest).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub retention_days: u32,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  psctl db restore --env production --into payments_restore_1123 --yes \\\n    \
--backup /var/backups/psctl/psctl-payments-20261123T100000Z.dump"
)]
pub struct DbRestoreArgs {
    /// The backup file (its `.manifest.json` must sit beside it).
    #[arg(long, value_name = "FILE")]
    pub backup: PathBuf,

    /// Name of the NEW database to create on the same server (must not exist, must not be the
    /// live one).
    #[arg(long, value_name = "NEW_DATABASE")]
    pub into: String,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  psctl db verify --env production\n  \
psctl db verify --database-url postgres://app@db/payments_restore -o json")]
pub struct DbVerifyArgs {}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl audit --env production --limit 20\n  psctl audit -o json"
)]
pub struct AuditArgs {
    /// How many of the newest rows to show.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: u32,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  psctl run playbooks/release.yaml --env staging --dry-run\n  \
psctl run playbooks/release.yaml --env staging --var tag=1.4.2 --yes\n  \
psctl run playbooks/release.yaml --env staging --from smoke --yes\n  \
psctl run playbooks/emergency-stop.yaml --env production --yes\n\n\
Each step is one psctl command; --dry-run prints them as command lines. The playbook format is \
documented in docs/playbooks.md."
)]
pub struct RunArgs {
    /// The playbook file, e.g. playbooks/release.yaml.
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: PathBuf,

    /// Start at this step (its number or name), e.g. to resume a run that stopped; the
    /// rollback baseline recorded by the interrupted run is reused.
    #[arg(long, value_name = "STEP")]
    pub from: Option<String>,

    /// Set a playbook variable (repeatable), overriding its `vars:` default.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has an empty name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  psctl evidence --env production\n  \
psctl evidence --env staging --dir /tmp/incident-42 --since 2h\n\n\
Never collected: Secrets, environment values of containers, database credentials.")]
pub struct EvidenceArgs {
    /// Directory to write into (created; default: ./psctl-evidence-<UTC timestamp>).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// How far back logs, events and system events go, e.g. `30m`, `2h`.
    #[arg(long, default_value = "1h", value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub since: Duration,

    /// Log lines kept per container (current and previous instance).
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub tail: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kube_context_is_the_same_flag_as_context() {
        use clap::Parser as _;
        for args in [
            ["psctl", "--kube-context", "prod-eu", "status"],
            ["psctl", "status", "--kube-context=prod-eu", ""],
            ["psctl", "--context", "prod-eu", "status"],
        ] {
            let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
            let cli = Cli::try_parse_from(&args).unwrap();
            assert_eq!(cli.global.context.as_deref(), Some("prod-eu"), "{args:?}");
        }
        // Given twice under both names, it is one flag given twice: refused like any repeat.
        assert!(
            Cli::try_parse_from(["psctl", "--context", "a", "--kube-context", "b", "status"])
                .is_err()
        );
    }
}
