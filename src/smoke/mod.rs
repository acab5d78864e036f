//! Post-deploy validation: the smoke suite behind `psctl smoke`, the post-rollout verification
//! of `psctl deploy` and the canary steps.
//!
//! A run is a plan of checks (a value: [`plan`]) executed concurrently by a small runner
//! ([`run_checks`]), each under its own timeout, each ending in a [`CheckResult`]: pass, fail or
//! skipped, always with evidence. Five categories:
//!
//! - `cluster`: every pod of each component Ready, none restarting ([`cluster`]);
//! - `metrics`: each metrics endpoint read through the API server's service proxy, parsed with
//!   prometheus-parse, the exposition valid and every required name present; the poller's
//!   `problemsolver_poller_last_success_unixtime` recent ([`metrics`]);
//! - `monitoring`: a ServiceMonitor selects each component, Prometheus lists its targets UP, a
//!   PromQL query over its required metrics returns data, and Prometheus has loaded the rules
//!   of the component's PrometheusRule ([`monitoring`]);
//! - `functional`: a smoke invoice paid end to end by the running poller ([`database`]);
//! - `integrity`: the ledger refuses UPDATE, and the reconciliation counts are zero.
//!
//! Components come from configuration: no check names a component. The poller-specific checks
//! attach to whichever components list the metric they read among their required metrics.
//!
//! # Library entry point
//!
//! ```ignore
//! let context = SmokeContext::new(environment, client, prometheus, database_url, settings);
//! let selection = Selection {
//!     categories: vec![Category::Cluster, Category::Metrics],
//!     components: vec!["webhook".into()],
//!     pod_selector: Some("track=canary".into()),
//!     explicit: false,
//! };
//! let report: SmokeReport = smoke::run(&context, &selection).await;
//! if !report.passed() { /* abort the canary step */ }
//! ```
//!
//! `pod_selector` narrows the cluster and metrics checks to the matching pods (each pod's own
//! endpoint is read through the pod proxy instead of the service) and the Prometheus targets to
//! series carrying those labels. [`SmokeReport::exit_status`] maps the verdict to the
//! documented exit codes: 0 all passed, 1 a check judged and failed, 3 every failure was a
//! dependency out of reach (nothing that could be judged said no).

pub mod cluster;
pub mod database;
pub mod metrics;
pub mod monitoring;
pub mod report;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use crate::db::DatabaseUrl;
use crate::error::ExitStatus;
use crate::prom::Prometheus;
use crate::settings::Environment;

/// What a check looks at; `--only` selects categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Cluster,
    Metrics,
    Monitoring,
    Functional,
    Integrity,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Cluster,
        Category::Metrics,
        Category::Monitoring,
        Category::Functional,
        Category::Integrity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Cluster => "cluster",
            Category::Metrics => "metrics",
            Category::Monitoring => "monitoring",
            Category::Functional => "functional",
            Category::Integrity => "integrity",
        }
    }

    /// Categories that observe state which converges (pods starting, Prometheus discovering
    /// targets): a failure there is retried until the run's `wait` is used up. Functional and
    /// integrity checks act on the database and are never repeated.
    fn converges(self) -> bool {
        matches!(
            self,
            Category::Cluster | Category::Metrics | Category::Monitoring
        )
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Skipped,
}

/// What one attempt of a check concluded, with the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// What was seen (pass), what is wrong and how to fix it (fail), or why nothing was
    /// checked (skipped).
    pub evidence: String,
    /// The failure is "could not ask" (Prometheus, the API server or the database unreachable),
    /// not "asked and the answer was wrong".
    pub unreachable: bool,
}

/// An API server answer saying it could not serve the request (5xx): the check could not ask,
/// as when the server is out of reach, and is not a verdict on the component
/// (`cluster::ClusterError` classifies it the same way, exit 3). Other answers (403, 404, …) are.
pub fn server_error(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code >= 500)
}

impl Outcome {
    pub fn pass(evidence: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Pass,
            evidence: evidence.into(),
            unreachable: false,
        }
    }

    pub fn fail(evidence: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Fail,
            evidence: evidence.into(),
            unreachable: false,
        }
    }

    pub fn skip(reason: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Skipped,
            evidence: reason.into(),
            unreachable: false,
        }
    }

    /// A failure because a dependency could not be reached.
    pub fn unreachable(evidence: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Fail,
            evidence: evidence.into(),
            unreachable: true,
        }
    }
}

/// Which check to run: the plan's unit. Plain data, printed and tested without I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckKind {
    /// Pods of the component Ready, none restarting.
    PodsReady { component: String },
    /// The metrics endpoint parses and serves every required name.
    MetricsEndpoint { component: String },
    /// The freshness gauge (`metric`, unix seconds) is at most `max_age_seconds` old.
    Freshness {
        component: String,
        metric: String,
        max_age_seconds: u64,
    },
    /// A ServiceMonitor selects the component's pods' Service.
    ServiceMonitor { component: String },
    /// Prometheus lists the component's targets, all UP.
    PrometheusTargets { component: String },
    /// `query` returns at least one series with a positive value.
    PromQuery { component: String, query: String },
    /// Prometheus has loaded every rule of the PrometheusRules the component's release deployed.
    AlertRules { component: String },
    /// A smoke invoice is paid by the poller; `counter` (summed over the pods of
    /// `counter_components`) rises.
    Functional {
        counter: String,
        counter_components: Vec<String>,
        timeout_seconds: u64,
    },
    /// An UPDATE of `ledger_entries` is refused by the database.
    LedgerAppendOnly,
    /// Credited deposits without payments, payments without ledger entries, paid invoices
    /// without a webhook row: all zero.
    Reconciliation,
}

/// One planned check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckSpec {
    /// Stable name, e.g. `metrics/webhook`; what JUnit and the table call the check.
    pub name: String,
    pub category: Category,
    pub component: Option<String>,
    /// Upper bound of one attempt.
    #[serde(skip)]
    pub timeout: Duration,
    #[serde(flatten)]
    pub kind: CheckKind,
}

/// One executed check: the `checks[]` entries of `psctl smoke -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub category: Category,
    pub component: Option<String>,
    /// `pass`, `fail` or `skipped`.
    pub result: Verdict,
    pub duration_ms: u64,
    pub evidence: String,
    /// True when the failure was a dependency that could not be reached.
    pub unreachable: bool,
}

/// The counts of the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Summary {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Everything a smoke run found: the `-o json` document of `psctl smoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmokeReport {
    pub environment: String,
    pub namespace: String,
    /// In plan order (the order of [`plan`]), whatever order they finished in.
    pub checks: Vec<CheckResult>,
    pub summary: Summary,
    /// Wall time of the whole run.
    pub duration_ms: u64,
}

impl SmokeReport {
    /// Builds the report and its summary from results.
    pub fn new(
        environment: &str,
        namespace: &str,
        checks: Vec<CheckResult>,
        duration: Duration,
    ) -> Self {
        let count = |verdict| checks.iter().filter(|c| c.result == verdict).count();
        let summary = Summary {
            total: checks.len(),
            passed: count(Verdict::Pass),
            failed: count(Verdict::Fail),
            skipped: count(Verdict::Skipped),
        };
        Self {
            environment: environment.to_owned(),
            namespace: namespace.to_owned(),
            checks,
            summary,
            duration_ms: millis(duration),
        }
    }

    /// No check failed.
    pub fn passed(&self) -> bool {
        self.summary.failed == 0
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.result == Verdict::Fail)
    }

    /// 0 when nothing failed; 3 when every failure was a dependency out of reach (Prometheus,
    /// the API server, the database): those checks could not be judged and nothing else said
    /// no; 1 when any check judged and failed.
    pub fn exit_status(&self) -> ExitStatus {
        if self.passed() {
            ExitStatus::Success
        } else if self.failures().all(|c| c.unreachable) {
            ExitStatus::Unreachable
        } else {
            ExitStatus::VerificationFailed
        }
    }

    /// Prints every check as a `smoke <name>` check line (the post-rollout checks of deploy
    /// and of each canary step).
    pub fn print_checks(&self, output: &crate::output::Output) {
        use crate::output::CheckState;
        for check in &self.checks {
            let state = match check.result {
                Verdict::Pass => CheckState::Ok,
                Verdict::Fail => CheckState::Fail,
                Verdict::Skipped => CheckState::Skip,
            };
            output.check(state, &format!("smoke {}", check.name), &check.evidence);
        }
    }

    /// `; `-joined `name: evidence` of every failed check.
    pub fn failure_summary(&self) -> String {
        self.failures()
            .map(|c| format!("{}: {}", c.name, c.evidence))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `Total: N  Passed: N  Failed: N  Skipped: N`.
    pub fn summary_line(&self) -> String {
        let Summary {
            total,
            passed,
            failed,
            skipped,
        } = self.summary;
        format!("Total: {total}  Passed: {passed}  Failed: {failed}  Skipped: {skipped}")
    }
}

/// What to check: categories, components and (for canaries) a pod label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Empty means every category.
    pub categories: Vec<Category>,
    /// Empty means every component of the environment.
    pub components: Vec<String>,
    /// Extra label selector narrowing the pods judged, e.g. `track=canary`.
    pub pod_selector: Option<String>,
    /// The categories were asked for by name (`--only`): a check whose prerequisite is not
    /// configured (no Prometheus URL, no database URL) fails instead of being skipped.
    pub explicit: bool,
}

impl Selection {
    fn includes(&self, category: Category) -> bool {
        self.categories.is_empty() || self.categories.contains(&category)
    }
}

/// Knobs of a run; defaults follow the runbooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeSettings {
    /// Oldest acceptable `problemsolver_poller_last_success_unixtime`.
    pub freshness: Duration,
    /// The functional check's wait for the poller (its poll interval plus a margin).
    pub functional_timeout: Duration,
    /// Upper bound of one attempt of any other check.
    pub check_timeout: Duration,
    /// Keep retrying failing cluster/metrics/monitoring checks this long (right after a
    /// rollout pods and Prometheus targets take a few seconds to converge).
    pub wait: Duration,
    /// A container restart more recent than this counts as "restarting".
    pub restart_window: Duration,
    /// Run the functional check against a production environment.
    pub force: bool,
    /// The gauge the freshness check reads.
    pub freshness_metric: String,
    /// The counter the functional check expects to rise.
    pub deposit_counter: String,
}

/// The poller's poll interval in the charts' defaults (`pollIntervalSecs`).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

impl Default for SmokeSettings {
    fn default() -> Self {
        Self {
            freshness: Duration::from_secs(60),
            functional_timeout: DEFAULT_POLL_INTERVAL + Duration::from_secs(5),
            check_timeout: Duration::from_secs(10),
            wait: Duration::ZERO,
            restart_window: Duration::from_secs(600),
            force: false,
            freshness_metric: "problemsolver_poller_last_success_unixtime".to_owned(),
            deposit_counter: "problemsolver_deposits_processed_total".to_owned(),
        }
    }
}

/// Everything a run talks to: the environment's configuration and its edges.
#[derive(Clone)]
pub struct SmokeContext {
    pub environment: Environment,
    pub client: kube::Client,
    /// `None` when the environment has no `prometheus_url`.
    pub prometheus: Option<Prometheus>,
    /// `None` when no database URL is configured.
    pub database: Option<DatabaseUrl>,
    pub settings: SmokeSettings,
}

impl SmokeContext {
    pub fn new(
        environment: Environment,
        client: kube::Client,
        prometheus: Option<Prometheus>,
        database: Option<DatabaseUrl>,
        settings: SmokeSettings,
    ) -> Self {
        Self {
            environment,
            client,
            prometheus,
            database,
            settings,
        }
    }
}

/// Why a selection cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    UnknownComponent(#[from] crate::settings::file::UnknownComponent),
    #[error(
        "the functional check creates a smoke invoice and deposit, and `{environment}` is a production environment"
    )]
    Production { environment: String },
}

impl crate::error::Classify for PlanError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Usage
    }

    fn hints(&self) -> Vec<String> {
        match self {
            PlanError::UnknownComponent(_) => Vec::new(),
            PlanError::Production { .. } => vec![
                "pass `--force` to run it there anyway (the rows are marked is_smoke), or leave out `--only functional`".to_owned(),
            ],
        }
    }
}

/// The checks of `selection` against `environment`, in report order. Pure.
pub fn plan(
    environment: &Environment,
    selection: &Selection,
    settings: &SmokeSettings,
) -> Result<Vec<CheckSpec>, PlanError> {
    let components = environment.select(&selection.components)?;
    if selection.explicit
        && selection.categories.contains(&Category::Functional)
        && environment.production
        && !settings.force
    {
        return Err(PlanError::Production {
            environment: environment.name.clone(),
        });
    }
    let timeout = settings.check_timeout;
    let spec = |name: String, category, component: Option<&str>, kind| CheckSpec {
        name,
        category,
        component: component.map(str::to_owned),
        timeout,
        kind,
    };
    let mut checks = Vec::new();
    if selection.includes(Category::Cluster) {
        for component in &components {
            checks.push(spec(
                format!("pods-ready/{}", component.name),
                Category::Cluster,
                Some(&component.name),
                CheckKind::PodsReady {
                    component: component.name.clone(),
                },
            ));
        }
    }
    if selection.includes(Category::Metrics) {
        for component in &components {
            checks.push(spec(
                format!("metrics/{}", component.name),
                Category::Metrics,
                Some(&component.name),
                CheckKind::MetricsEndpoint {
                    component: component.name.clone(),
                },
            ));
            if requires(component, &settings.freshness_metric) {
                checks.push(spec(
                    format!("freshness/{}", component.name),
                    Category::Metrics,
                    Some(&component.name),
                    CheckKind::Freshness {
                        component: component.name.clone(),
                        metric: settings.freshness_metric.clone(),
                        max_age_seconds: settings.freshness.as_secs(),
                    },
                ));
            }
        }
    }
    if selection.includes(Category::Monitoring) {
        for component in &components {
            checks.push(spec(
                format!("servicemonitor/{}", component.name),
                Category::Monitoring,
                Some(&component.name),
                CheckKind::ServiceMonitor {
                    component: component.name.clone(),
                },
            ));
            checks.push(spec(
                format!("prometheus-targets/{}", component.name),
                Category::Monitoring,
                Some(&component.name),
                CheckKind::PrometheusTargets {
                    component: component.name.clone(),
                },
            ));
            checks.push(spec(
                format!("promql/{}", component.name),
                Category::Monitoring,
                Some(&component.name),
                CheckKind::PromQuery {
                    component: component.name.clone(),
                    query: monitoring::sample_query(
                        &environment.namespace,
                        component,
                        selection.pod_selector.as_deref(),
                    ),
                },
            ));
            checks.push(spec(
                format!("alert-rules/{}", component.name),
                Category::Monitoring,
                Some(&component.name),
                CheckKind::AlertRules {
                    component: component.name.clone(),
                },
            ));
        }
    }
    if selection.includes(Category::Functional) {
        let counter_components = environment
            .components
            .iter()
            .filter(|c| requires(c, &settings.deposit_counter))
            .map(|c| c.name.clone())
            .collect();
        let mut check = spec(
            "functional/deposit-to-paid".to_owned(),
            Category::Functional,
            None,
            CheckKind::Functional {
                counter: settings.deposit_counter.clone(),
                counter_components,
                timeout_seconds: settings.functional_timeout.as_secs(),
            },
        );
        // The check's own wait ends first and explains itself; this bound is the backstop.
        check.timeout = settings.functional_timeout + settings.check_timeout;
        checks.push(check);
    }
    if selection.includes(Category::Integrity) {
        checks.push(spec(
            "integrity/ledger-append-only".to_owned(),
            Category::Integrity,
            None,
            CheckKind::LedgerAppendOnly,
        ));
        checks.push(spec(
            "integrity/reconciliation".to_owned(),
            Category::Integrity,
            None,
            CheckKind::Reconciliation,
        ));
    }
    Ok(checks)
}

/// The component lists `metric` among its required metric names.
fn requires(component: &crate::settings::Component, metric: &str) -> bool {
    component
        .metrics
        .as_ref()
        .is_some_and(|m| m.required.iter().any(|r| r == metric))
}

/// Runs every check concurrently and returns the results in plan order.
///
/// Each attempt is bounded by the check's timeout. A failing check of a converging category
/// (cluster, metrics, monitoring) is attempted again every second until `wait` has passed; the
/// last attempt's outcome is the verdict.
pub async fn run_checks<'a, F, Fut>(
    checks: &'a [CheckSpec],
    wait: Duration,
    attempt: F,
) -> Vec<CheckResult>
where
    F: Fn(&'a CheckSpec) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let attempt = &attempt;
    let runs = checks.iter().map(|check| async move {
        let started = Instant::now();
        let deadline = started + wait;
        let outcome = loop {
            let outcome = match tokio::time::timeout(check.timeout, attempt(check)).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::fail(format!(
                    "no verdict within {} (the check's timeout)",
                    describe_duration(check.timeout)
                )),
            };
            let retry = outcome.verdict == Verdict::Fail
                && check.category.converges()
                && Instant::now() + Duration::from_secs(1) < deadline;
            if !retry {
                break outcome;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        CheckResult {
            name: check.name.clone(),
            category: check.category,
            component: check.component.clone(),
            result: outcome.verdict,
            duration_ms: millis(started.elapsed()),
            evidence: outcome.evidence,
            unreachable: outcome.unreachable,
        }
    });
    futures::future::join_all(runs).await
}

/// Plans and runs `selection` against the context's environment. Never fails as a whole: a
/// check that cannot be judged is a failed (or skipped) result carrying the reason.
pub async fn run(context: &SmokeContext, selection: &Selection) -> Result<SmokeReport, PlanError> {
    let started = Instant::now();
    let checks = plan(&context.environment, selection, &context.settings)?;
    let edges = Edges::open(context, &checks).await;
    let results = run_checks(&checks, context.settings.wait, |check| {
        execute(context, &edges, selection, check)
    })
    .await;
    Ok(SmokeReport::new(
        &context.environment.name,
        &context.environment.namespace,
        results,
        started.elapsed(),
    ))
}

/// How long the checks run after psctl changed a component (a deploy, a rollback) retry a
/// failing check: new pods and Prometheus' discovery catch up within seconds.
pub const AFTER_CHANGE_WAIT: Duration = Duration::from_secs(30);

/// The cluster and metrics checks of `component` as psctl runs them after changing it (the
/// post-deploy smoke, a rollback's verification), failing checks retried for
/// [`AFTER_CHANGE_WAIT`].
pub async fn after_change(
    client: &kube::Client,
    environment: &Environment,
    component: &str,
) -> Result<SmokeReport, PlanError> {
    let selection = Selection {
        categories: vec![Category::Cluster, Category::Metrics],
        components: vec![component.to_owned()],
        pod_selector: None,
        explicit: false,
    };
    let settings = SmokeSettings {
        wait: AFTER_CHANGE_WAIT,
        ..SmokeSettings::default()
    };
    let context = SmokeContext::new(environment.clone(), client.clone(), None, None, settings);
    run(&context, &selection).await
}

/// Connections opened once per run and shared by the checks.
struct Edges {
    /// The database pool, or why there is none.
    database: Result<sqlx::PgPool, Outcome>,
}

impl Edges {
    async fn open(context: &SmokeContext, checks: &[CheckSpec]) -> Self {
        let needs_database = checks
            .iter()
            .any(|c| matches!(c.category, Category::Functional | Category::Integrity));
        let database = match (&context.database, needs_database) {
            (_, false) => Err(Outcome::skip("not needed")),
            (None, true) => Err(Outcome::skip(format!(
                "no database URL: set `{}` (the environment's database_url_env) or pass --database-url",
                context.environment.database_url_env
            ))),
            (Some(url), true) => {
                match crate::db::connect(url, context.settings.check_timeout).await {
                    Ok(pool) => Ok(pool),
                    Err(error) => Err(Outcome::unreachable(format!(
                        "{error}: {}; check that the server is up and the URL is right",
                        database::describe(&error.source)
                    ))),
                }
            }
        };
        Self { database }
    }
}

/// One attempt of one check.
async fn execute(
    context: &SmokeContext,
    edges: &Edges,
    selection: &Selection,
    check: &CheckSpec,
) -> Outcome {
    let environment = &context.environment;
    let settings = &context.settings;
    let pods = selection.pod_selector.as_deref();
    let component = |name: &str| environment.components.iter().find(|c| c.name == name);
    let missing_prerequisite = |reason: String| {
        if selection.explicit {
            Outcome::fail(reason)
        } else {
            Outcome::skip(reason)
        }
    };
    match &check.kind {
        CheckKind::PodsReady { component: name } => match component(name) {
            Some(component) => {
                cluster::pods_ready(
                    &context.client,
                    &environment.namespace,
                    component,
                    pods,
                    settings.restart_window,
                )
                .await
            }
            None => Outcome::fail(format!("component `{name}` is not configured")),
        },
        CheckKind::MetricsEndpoint { component: name } => match component(name) {
            Some(component) => {
                metrics::endpoint(&context.client, &environment.namespace, component, pods).await
            }
            None => Outcome::fail(format!("component `{name}` is not configured")),
        },
        CheckKind::Freshness {
            component: name,
            metric,
            max_age_seconds,
        } => match component(name) {
            Some(component) => {
                metrics::freshness(
                    &context.client,
                    &environment.namespace,
                    component,
                    pods,
                    metric,
                    Duration::from_secs(*max_age_seconds),
                )
                .await
            }
            None => Outcome::fail(format!("component `{name}` is not configured")),
        },
        CheckKind::ServiceMonitor { component: name } => match component(name) {
            Some(component) => {
                monitoring::service_monitor(&context.client, &environment.namespace, component)
                    .await
            }
            None => Outcome::fail(format!("component `{name}` is not configured")),
        },
        CheckKind::PrometheusTargets { component: name } => {
            match (component(name), &context.prometheus) {
                (Some(component), Some(prometheus)) => {
                    monitoring::targets(prometheus, &environment.namespace, component, pods).await
                }
                (None, _) => Outcome::fail(format!("component `{name}` is not configured")),
                (_, None) => missing_prerequisite(no_prometheus(environment)),
            }
        }
        CheckKind::PromQuery { query, .. } => match &context.prometheus {
            Some(prometheus) => monitoring::query(prometheus, query).await,
            None => missing_prerequisite(no_prometheus(environment)),
        },
        CheckKind::AlertRules { component: name } => match (component(name), &context.prometheus) {
            (None, _) => Outcome::fail(format!("component `{name}` is not configured")),
            // Rules turned off need no Prometheus to say so.
            (Some(component), _) if monitoring::rules_switch(component) == Some(false) => {
                monitoring::judge_rules(
                    &environment.namespace,
                    &component.release,
                    Some(false),
                    &[],
                    &[],
                    "",
                )
            }
            (Some(component), Some(prometheus)) => {
                monitoring::alert_rules(
                    &context.client,
                    prometheus,
                    &environment.namespace,
                    component,
                )
                .await
            }
            (Some(_), None) => missing_prerequisite(no_prometheus(environment)),
        },
        CheckKind::Functional {
            counter,
            counter_components,
            timeout_seconds,
        } => {
            if environment.production && !settings.force {
                return Outcome::skip(format!(
                    "`{}` is a production environment: pass --force to create a smoke invoice there",
                    environment.name
                ));
            }
            let pool = match &edges.database {
                Ok(pool) => pool,
                Err(outcome) => return prerequisite(outcome, selection),
            };
            let counters: Vec<_> = counter_components
                .iter()
                .filter_map(|name| component(name))
                .collect();
            database::functional(
                pool,
                &context.client,
                &environment.namespace,
                &counters,
                counter,
                Duration::from_secs(*timeout_seconds),
            )
            .await
        }
        CheckKind::LedgerAppendOnly => match &edges.database {
            Ok(pool) => database::ledger_append_only(pool).await,
            Err(outcome) => prerequisite(outcome, selection),
        },
        CheckKind::Reconciliation => match &edges.database {
            Ok(pool) => database::reconciliation(pool).await,
            Err(outcome) => prerequisite(outcome, selection),
        },
    }
}

/// A database check without a database: skipped (or failed when asked for by name) with the
/// reason, or the connection failure itself.
fn prerequisite(outcome: &Outcome, selection: &Selection) -> Outcome {
    match outcome.verdict {
        Verdict::Skipped if selection.explicit => Outcome::fail(outcome.evidence.clone()),
        _ => outcome.clone(),
    }
}

fn no_prometheus(environment: &Environment) -> String {
    format!(
        "no Prometheus configured: set `prometheus_url` for environment `{}` in psctl.yaml",
        environment.name
    )
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `15s`, `1.5s`, `250ms`.
pub fn describe_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// Label pairs of a `k=v,k2=v2` equality selector (anything else is ignored).
pub fn selector_pairs(selector: &str) -> Vec<(String, String)> {
    selector
        .split(',')
        .filter_map(|term| {
            let (key, value) = term.split_once('=')?;
            let key = key.trim().trim_end_matches('!');
            let value = value.trim().trim_start_matches('=');
            (!key.is_empty() && !term.contains("!=")).then(|| (key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The component's selector narrowed by `pods` (for canaries).
pub fn pod_selector(component: &crate::settings::Component, pods: Option<&str>) -> String {
    match pods {
        Some(extra) if !extra.trim().is_empty() => format!("{},{}", component.selector, extra),
        _ => component.selector.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_answer_is_could_not_ask_and_a_refusal_is_a_verdict() {
        let answer = |code: u16| {
            kube::Error::Api(Box::new(
                kube::core::Status::failure("injected", "InternalError").with_code(code),
            ))
        };
        assert!(server_error(&answer(500)));
        assert!(server_error(&answer(503)));
        assert!(!server_error(&answer(403)), "RBAC says no: a failed check");
        assert!(!server_error(&answer(404)));
    }
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(crate) fn environment() -> Environment {
        let text = "environments:\n  sandbox:\n    kube_context: psctl-sandbox\n    namespace: apps\n    prometheus_url: http://127.0.0.1:9090\n";
        crate::settings::file::parse(Path::new("psctl.yaml"), text)
            .unwrap()
            .environments["sandbox"]
            .clone()
    }

    fn names(checks: &[CheckSpec]) -> Vec<&str> {
        checks.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn the_full_plan_covers_every_category_and_component_in_order() {
        let checks = plan(
            &environment(),
            &Selection::default(),
            &SmokeSettings::default(),
        )
        .unwrap();
        assert_eq!(
            names(&checks),
            [
                "pods-ready/poller",
                "pods-ready/webhook",
                "metrics/poller",
                "freshness/poller",
                "metrics/webhook",
                "servicemonitor/poller",
                "prometheus-targets/poller",
                "promql/poller",
                "alert-rules/poller",
                "servicemonitor/webhook",
                "prometheus-targets/webhook",
                "promql/webhook",
                "alert-rules/webhook",
                "functional/deposit-to-paid",
                "integrity/ledger-append-only",
                "integrity/reconciliation",
            ]
        );
        let functional = checks
            .iter()
            .find(|c| c.category == Category::Functional)
            .unwrap();
        assert_eq!(
            functional.kind,
            CheckKind::Functional {
                counter: "problemsolver_deposits_processed_total".into(),
                counter_components: vec!["poller".into()],
                timeout_seconds: 15,
            }
        );
        assert_eq!(functional.timeout, Duration::from_secs(25));
    }

    #[test]
    fn only_and_components_narrow_the_plan() {
        let selection = Selection {
            categories: vec![Category::Metrics, Category::Cluster],
            components: vec!["webhook".into()],
            pod_selector: Some("track=canary".into()),
            explicit: true,
        };
        let checks = plan(&environment(), &selection, &SmokeSettings::default()).unwrap();
        assert_eq!(names(&checks), ["pods-ready/webhook", "metrics/webhook"]);
        let unknown = Selection {
            components: vec!["api".into()],
            ..Selection::default()
        };
        assert!(
            plan(&environment(), &unknown, &SmokeSettings::default())
                .unwrap_err()
                .to_string()
                .contains("no component `api`")
        );
    }

    #[test]
    fn an_explicit_functional_run_on_production_needs_force() {
        let mut environment = environment();
        environment.production = true;
        let selection = Selection {
            categories: vec![Category::Functional],
            explicit: true,
            ..Selection::default()
        };
        let error = plan(&environment, &selection, &SmokeSettings::default()).unwrap_err();
        assert!(matches!(error, PlanError::Production { .. }), "{error}");
        let forced = SmokeSettings {
            force: true,
            ..SmokeSettings::default()
        };
        assert_eq!(plan(&environment, &selection, &forced).unwrap().len(), 1);
    }

    fn spec(name: &str, category: Category, timeout: Duration) -> CheckSpec {
        CheckSpec {
            name: name.to_owned(),
            category,
            component: None,
            timeout,
            kind: CheckKind::Reconciliation,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_concurrently_and_report_in_plan_order() {
        let checks = [
            spec("slow", Category::Integrity, Duration::from_secs(10)),
            spec("fast", Category::Integrity, Duration::from_secs(10)),
        ];
        let started = tokio::time::Instant::now();
        let results = run_checks(&checks, Duration::ZERO, |check| {
            let delay = if check.name == "slow" { 3 } else { 1 };
            async move {
                tokio::time::sleep(Duration::from_secs(delay)).await;
                Outcome::pass("ok")
            }
        })
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(3), "not sequential");
        assert_eq!(
            results.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["slow", "fast"]
        );
        assert_eq!(results[0].duration_ms, 3000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_past_its_timeout_fails_saying_so() {
        let checks = [spec("hangs", Category::Integrity, Duration::from_secs(2))];
        let results = run_checks(&checks, Duration::ZERO, |_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Outcome::pass("never")
        })
        .await;
        assert_eq!(results[0].result, Verdict::Fail);
        assert_eq!(
            results[0].evidence,
            "no verdict within 2s (the check's timeout)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn converging_checks_are_retried_within_the_wait_and_others_are_not() {
        let attempts = AtomicU32::new(0);
        let checks = [spec(
            "targets",
            Category::Monitoring,
            Duration::from_secs(5),
        )];
        let results = run_checks(&checks, Duration::from_secs(10), |_| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Outcome::fail("0 targets")
                } else {
                    Outcome::pass("2 targets up")
                }
            }
        })
        .await;
        assert_eq!(results[0].result, Verdict::Pass);
        assert_eq!(attempts.load(Ordering::SeqCst), 4);

        let attempts = AtomicU32::new(0);
        let checks = [spec("ledger", Category::Integrity, Duration::from_secs(5))];
        let results = run_checks(&checks, Duration::from_secs(10), |_| {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Outcome::fail("allowed") }
        })
        .await;
        assert_eq!(results[0].result, Verdict::Fail);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    fn result(name: &str, verdict: Verdict, unreachable: bool) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            category: Category::Monitoring,
            component: None,
            result: verdict,
            duration_ms: 1,
            evidence: String::new(),
            unreachable,
        }
    }

    #[test]
    fn exit_status_distinguishes_failed_from_unjudgeable() {
        let report = |checks| SmokeReport::new("sandbox", "default", checks, Duration::ZERO);
        assert_eq!(
            report(vec![
                result("a", Verdict::Pass, false),
                result("b", Verdict::Skipped, false)
            ])
            .exit_status(),
            ExitStatus::Success
        );
        assert_eq!(
            report(vec![
                result("a", Verdict::Pass, false),
                result("b", Verdict::Fail, true)
            ])
            .exit_status(),
            ExitStatus::Unreachable,
            "Prometheus down while the rest passes: nothing said no"
        );
        assert_eq!(
            report(vec![
                result("a", Verdict::Fail, true),
                result("b", Verdict::Fail, true)
            ])
            .exit_status(),
            ExitStatus::Unreachable
        );
        let mixed = report(vec![
            result("a", Verdict::Fail, true),
            result("b", Verdict::Fail, false),
            result("c", Verdict::Skipped, false),
        ]);
        assert_eq!(mixed.exit_status(), ExitStatus::VerificationFailed);
        assert_eq!(
            mixed.summary_line(),
            "Total: 3  Passed: 0  Failed: 2  Skipped: 1"
        );
    }

    #[test]
    fn selectors_split_into_pairs() {
        assert_eq!(
            selector_pairs("app=problemsolver-webhook, track==canary,tier!=db,exists"),
            [
                ("app".to_owned(), "problemsolver-webhook".to_owned()),
                ("track".to_owned(), "canary".to_owned())
            ]
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(describe_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(describe_duration(Duration::from_secs(15)), "15s");
        assert_eq!(describe_duration(Duration::from_millis(1500)), "1.5s");
    }
}
