//! Command-line types: Helm's own command and flag names for the subset psctl uses. Clap
//! types only; what the flags mean for the engine is decided in `commands`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The Kubernetes package manager (Helm v4 engine; the subset of the CLI psctl uses).
#[derive(Debug, Parser)]
#[command(name = "helm", disable_version_flag = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every Helm command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Namespace scope for this request.
    #[arg(short = 'n', long, global = true, env = "HELM_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the kubeconfig context to use.
    #[arg(long, global = true, env = "HELM_KUBECONTEXT")]
    pub kube_context: Option<String>,
    /// Path to the kubeconfig file.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Enable verbose output.
    #[arg(long, global = true)]
    pub debug: bool,
}

/// The supported commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upgrade a release (or install it with --install).
    Upgrade(UpgradeArgs),
    /// Install a chart.
    Install(InstallArgs),
    /// Fetch release history.
    #[command(visible_alias = "hist")]
    History(HistoryArgs),
    /// Roll back a release to a previous revision.
    Rollback(RollbackArgs),
    /// Display the status of the named release.
    Status(StatusArgs),
    /// Uninstall a release.
    #[command(visible_aliases = ["un", "delete", "del"])]
    Uninstall(UninstallArgs),
    /// List releases.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Examine a chart for possible issues.
    Lint(LintArgs),
    /// Locally render templates.
    Template(TemplateArgs),
    /// Download extended information of a named release.
    #[command(subcommand)]
    Get(GetCommand),
    /// Print the client version information.
    Version(VersionArgs),
}

/// Output formats of Helm's `-o` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Where values come from: shared by install, upgrade and template.
#[derive(Debug, Args, Default, Clone)]
pub struct ValuesArgs {
    /// Specify values in a YAML file (can specify multiple).
    #[arg(short = 'f', long = "values", value_delimiter = ',')]
    pub values: Vec<PathBuf>,
    /// Set values on the command line (key1=val1,key2=val2).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Set STRING values on the command line (key1=val1,key2=val2).
    #[arg(long = "set-string")]
    pub set_string: Vec<String>,
}

/// Flags of install and upgrade that change how the release is applied.
#[derive(Debug, Args, Clone)]
pub struct ApplyArgs {
    /// Create the release namespace if not present.
    #[arg(long)]
    pub create_namespace: bool,
    /// Chart version constraint (exact version for local charts).
    #[arg(long)]
    pub version: Option<String>,
    /// Add a custom description.
    #[arg(long)]
    pub description: Option<String>,
    /// Wait until resources are ready (optionally naming the strategy: watcher, legacy).
    #[arg(long, num_args = 0..=1, default_missing_value = "watcher", require_equals = true)]
    pub wait: Option<String>,
    /// With --wait, also wait for Jobs to complete.
    #[arg(long)]
    pub wait_for_jobs: bool,
    /// Time to wait for any individual Kubernetes operation (like Jobs for hooks).
    #[arg(long, default_value = "5m0s")]
    pub timeout: String,
    /// Deprecated alias of --rollback-on-failure.
    #[arg(long)]
    pub atomic: bool,
    /// Undo the change (uninstall, or roll back an upgrade) if it fails.
    #[arg(long)]
    pub rollback_on_failure: bool,
    /// Skip validation of values against the chart's schema.
    #[arg(long)]
    pub skip_schema_validation: bool,
    /// Apply with server-side apply: for install a boolean (default true); for upgrade true,
    /// false or auto (default: the apply method recorded in the release).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub server_side: Option<String>,
    /// With server-side apply, force conflicting field ownership.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Adopt existing resources that lack Helm's ownership metadata.
    #[arg(long)]
    pub take_ownership: bool,
    /// Output format of the release summary.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `helm upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Release name.
    pub release: String,
    /// Chart path.
    pub chart: String,
    /// Install the release if it does not exist.
    #[arg(short = 'i', long)]
    pub install: bool,
    /// Limit the maximum number of revisions saved per release (0 = no limit).
    #[arg(long, default_value_t = 10)]
    pub max_history: u32,
    /// Reset values to the chart's defaults before applying the given ones.
    #[arg(long)]
    pub reset_values: bool,
    /// Reuse the last release's values and merge the given ones over them.
    #[arg(long)]
    pub reuse_values: bool,
    /// Delete new resources created by this upgrade when it fails.
    #[arg(long)]
    pub cleanup_on_fail: bool,
    #[command(flatten)]
    pub values: ValuesArgs,
    #[command(flatten)]
    pub apply: ApplyArgs,
}

/// `helm install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Release name.
    pub release: String,
    /// Chart path.
    pub chart: String,
    #[command(flatten)]
    pub values: ValuesArgs,
    #[command(flatten)]
    pub apply: ApplyArgs,
}

/// `helm history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Release name.
    pub release: String,
    /// Maximum number of revisions to include in history.
    #[arg(long, default_value_t = 256)]
    pub max: usize,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `helm rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Release name.
    pub release: String,
    /// Revision to roll back to (default: the previous one).
    pub revision: Option<u32>,
    /// Wait until resources are ready.
    #[arg(long, num_args = 0..=1, default_missing_value = "watcher", require_equals = true)]
    pub wait: Option<String>,
    /// Time to wait for any individual Kubernetes operation.
    #[arg(long, default_value = "5m0s")]
    pub timeout: String,
    /// Limit the maximum number of revisions saved per release (0 = no limit).
    #[arg(long, default_value_t = 10)]
    pub history_max: u32,
    /// Delete new resources created by this rollback when it fails.
    #[arg(long)]
    pub cleanup_on_fail: bool,
    /// Apply with server-side apply: true, false or auto (auto follows the apply method of the
    /// revision rolled back to).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub server_side: Option<String>,
    /// With server-side apply, force conflicting field ownership.
    #[arg(long)]
    pub force_conflicts: bool,
}

/// `helm status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Release name.
    pub release: String,
    /// Display the status of the named release with this revision (default: the latest).
    #[arg(long)]
    pub revision: Option<u64>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `helm uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Release names.
    #[arg(required = true)]
    pub releases: Vec<String>,
    /// Wait until all resources are deleted.
    #[arg(long, num_args = 0..=1, default_missing_value = "watcher", require_equals = true)]
    pub wait: Option<String>,
    /// Time to wait for any individual Kubernetes operation.
    #[arg(long, default_value = "5m0s")]
    pub timeout: String,
    /// Treat "release not found" as success.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// `helm list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show all releases, not only deployed and failed ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// List releases across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Show deployed releases (the default, with failed ones, when no state is asked for).
    #[arg(long)]
    pub deployed: bool,
    /// Show failed releases.
    #[arg(long)]
    pub failed: bool,
    /// Show pending releases.
    #[arg(long)]
    pub pending: bool,
    /// Show superseded releases.
    #[arg(long)]
    pub superseded: bool,
    /// Show uninstalled releases (if `helm uninstall --keep-history` was used).
    #[arg(long)]
    pub uninstalled: bool,
    /// Show releases that are currently being uninstalled.
    #[arg(long)]
    pub uninstalling: bool,
    /// A regular expression: only releases whose name matches it are listed.
    #[arg(short = 'f', long)]
    pub filter: Option<String>,
    /// Reverse the sort order.
    #[arg(short = 'r', long)]
    pub reverse: bool,
    /// Maximum number of releases to fetch.
    #[arg(short = 'm', long, default_value_t = 256)]
    pub max: usize,
    /// Don't print headers when using the default output format.
    #[arg(long)]
    pub no_headers: bool,
    /// Output short (quiet) listing format: release names only.
    #[arg(short = 'q', long)]
    pub short: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `helm lint`.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// Chart paths.
    #[arg(default_value = ".")]
    pub charts: Vec<String>,
    /// Fail on lint warnings.
    #[arg(long)]
    pub strict: bool,
}

/// `helm template`.
#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// Release name, then chart path (the name defaults to `release-name`).
    #[arg(num_args = 1..=2, required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub values: ValuesArgs,
    /// Chart version constraint.
    #[arg(long)]
    pub version: Option<String>,
}

/// `helm get`.
#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// Download the values file for a named release.
    Values(GetValuesArgs),
    /// Download the manifest for a named release.
    Manifest(GetManifestArgs),
    /// Download the notes for a named release.
    Notes(GetManifestArgs),
    /// Download all hooks for a named release.
    Hooks(GetManifestArgs),
}

/// `helm get values`.
#[derive(Debug, Args)]
pub struct GetValuesArgs {
    /// Release name.
    pub release: String,
    /// Dump all (computed) values.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Get the values of this revision (default: the latest).
    #[arg(long)]
    pub revision: Option<u64>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `helm get manifest`.
#[derive(Debug, Args)]
pub struct GetManifestArgs {
    /// Release name.
    pub release: String,
    /// Get the named release with this revision (default: the latest).
    #[arg(long)]
    pub revision: Option<u64>,
}

/// `helm version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print the version number only.
    #[arg(long)]
    pub short: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("helm").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn upgrade_install_with_every_flag_psctl_passes() {
        let cli = parse(&[
            "upgrade",
            "--install",
            "problemsolver-poller",
            "charts/poller",
            "-n",
            "default",
            "--create-namespace",
            "-f",
            "a.yaml",
            "--values",
            "b.yaml,c.yaml",
            "--set",
            "image.tag=abc",
            "--set-string",
            "podAnnotations.x=1",
            "--version",
            "0.1.0",
            "--description",
            "deploy abc",
            "--wait",
            "--timeout",
            "10m",
            "--atomic",
            "--kube-context",
            "psctl-sandbox",
            "--kubeconfig",
            "/k",
        ]);
        assert_eq!(cli.global.namespace.as_deref(), Some("default"));
        assert_eq!(cli.global.kube_context.as_deref(), Some("psctl-sandbox"));
        assert_eq!(cli.global.kubeconfig, Some(PathBuf::from("/k")));
        let Command::Upgrade(upgrade) = cli.command else {
            panic!("not an upgrade");
        };
        assert!(upgrade.install);
        assert_eq!(upgrade.release, "problemsolver-poller");
        assert_eq!(upgrade.chart, "charts/poller");
        assert_eq!(
            upgrade.values.values,
            vec![
                PathBuf::from("a.yaml"),
                PathBuf::from("b.yaml"),
                PathBuf::from("c.yaml")
            ]
        );
        assert_eq!(upgrade.values.set, vec!["image.tag=abc"]);
        assert_eq!(upgrade.values.set_string, vec!["podAnnotations.x=1"]);
        assert_eq!(upgrade.apply.version.as_deref(), Some("0.1.0"));
        assert_eq!(upgrade.apply.wait.as_deref(), Some("watcher"));
        assert_eq!(upgrade.apply.timeout, "10m");
        assert!(upgrade.apply.atomic);
        assert!(upgrade.apply.create_namespace);
    }

    #[test]
    fn wait_does_not_swallow_the_next_positional() {
        let cli = parse(&["upgrade", "r", "--wait", "chart", "--rollback-on-failure"]);
        let Command::Upgrade(upgrade) = cli.command else {
            panic!("not an upgrade");
        };
        assert_eq!(upgrade.chart, "chart");
        assert!(upgrade.apply.rollback_on_failure);
        let cli = parse(&["upgrade", "r", "c", "--wait=legacy"]);
        let Command::Upgrade(upgrade) = cli.command else {
            panic!("not an upgrade");
        };
        assert_eq!(upgrade.apply.wait.as_deref(), Some("legacy"));
    }

    #[test]
    fn history_rollback_status_list_and_aliases() {
        let Command::History(history) =
            parse(&["history", "r", "-o", "json", "--max", "3"]).command
        else {
            panic!("not history");
        };
        assert_eq!((history.max, history.output), (3, OutputFormat::Json));
        let Command::Rollback(rollback) = parse(&["rollback", "r", "4", "--wait"]).command else {
            panic!("not rollback");
        };
        assert_eq!(rollback.revision, Some(4));
        let Command::Rollback(rollback) = parse(&["rollback", "r"]).command else {
            panic!("not rollback");
        };
        assert_eq!(rollback.revision, None);
        assert!(matches!(
            parse(&["status", "r", "-o", "json"]).command,
            Command::Status(StatusArgs {
                output: OutputFormat::Json,
                ..
            })
        ));
        assert!(matches!(
            parse(&["ls", "-o", "json"]).command,
            Command::List(_)
        ));
        assert!(matches!(parse(&["un", "r"]).command, Command::Uninstall(_)));
        assert!(matches!(parse(&["hist", "r"]).command, Command::History(_)));
    }

    #[test]
    fn get_lint_template_version() {
        assert!(matches!(
            parse(&["get", "values", "r", "-a", "-o", "json"]).command,
            Command::Get(GetCommand::Values(GetValuesArgs { all: true, .. }))
        ));
        assert!(matches!(
            parse(&["get", "manifest", "r"]).command,
            Command::Get(GetCommand::Manifest(_))
        ));
        let Command::Lint(lint) = parse(&["lint", "charts/a", "charts/b"]).command else {
            panic!("not lint");
        };
        assert_eq!(lint.charts, vec!["charts/a", "charts/b"]);
        let Command::Template(template) = parse(&["template", "rel", "charts/a"]).command else {
            panic!("not template");
        };
        assert_eq!(template.names, vec!["rel", "charts/a"]);
        assert!(matches!(
            parse(&["version", "--short"]).command,
            Command::Version(VersionArgs { short: true })
        ));
    }

    #[test]
    fn bad_usage_is_rejected() {
        let bad = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("helm").chain(args.iter().copied())).is_err()
        };
        assert!(bad(&["upgrade", "only-release"]));
        assert!(bad(&["history", "r", "-o", "xml"]));
        assert!(bad(&["rollback", "r", "not-a-number"]));
        assert!(bad(&["uninstall"]));
        assert!(bad(&["frobnicate"]));
    }
}
