//! The `psctl.yaml` file: its serde schema (unknown keys rejected) and validation into typed
//! environments. Every error names the file, the key path and the fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use super::parse_duration;

/// Default runtime Secret name (the runbooks' own).
pub const DEFAULT_SECRET_NAME: &str = "problemsolver-secrets";
/// Keys the runtime Secret must carry unless the environment says otherwise: the deploy
/// runbook's, less the optional `SENTRY_DSN` and `REDIS_URL`. `WEBHOOK_SECRET` is also satisfied
/// by its older name `ENCRYPTION_MASTER_KEY` (see `secrets::ALIASES`).
pub const DEFAULT_REQUIRED_KEYS: [&str; 4] = [
    "DATABASE_URL",
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "WEBHOOK_SECRET",
];
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_DATABASE_URL_ENV: &str = "DATABASE_URL";
/// How long a deploy watches the new pods after the rollout is complete: a release that crashes
/// or stops being ready within its first half minute of serving is rolled back like one that
/// never started.
pub const DEFAULT_DEPLOY_HOLD: Duration = Duration::from_secs(30);

/// A configuration problem, always pointing at the file and key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
}

impl crate::error::Classify for ConfigError {
    fn exit_status(&self) -> crate::error::ExitStatus {
        crate::error::ExitStatus::Usage
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Read { .. } => vec![
                "pass `--config FILE` or set `PSCTL_CONFIG`; `psctl-sandbox env` prints the sandbox's".to_owned(),
            ],
            _ => vec!["the expected shape is documented in docs/cli.md (\"psctl.yaml\")".to_owned()],
        }
    }
}

// ---- raw schema: every field optional so validation can name what is missing ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    environments: Option<IndexMap<String, RawEnvironment>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    kube_context: Option<String>,
    kubeconfig: Option<PathBuf>,
    namespace: Option<String>,
    production: Option<bool>,
    registry: Option<String>,
    prometheus_url: Option<String>,
    database_url_env: Option<String>,
    helm: Option<PathBuf>,
    secret: Option<RawSecret>,
    build: Option<RawBuild>,
    recovery: Option<RawRecovery>,
    deploy_hold: Option<String>,
    components: Option<IndexMap<String, RawComponent>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecovery {
    deposit_rate_baseline: Option<RawBaseline>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBaseline {
    query: Option<String>,
    window: Option<String>,
    tolerance: Option<f64>,
    interval: Option<String>,
    lookback: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    runtime_base: Option<String>,
    tool: Option<String>,
    dockerfile: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    name: Option<String>,
    required_keys: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    release: Option<String>,
    chart: Option<PathBuf>,
    image: Option<String>,
    binary: Option<String>,
    deployment: Option<String>,
    selector: Option<String>,
    values: Option<crate::yaml::Mapping>,
    metrics: Option<RawMetrics>,
    canary: Option<RawCanary>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    service: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    required: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    deployment: Option<String>,
    steps: Option<Vec<u8>>,
    bake: Option<String>,
    interval: Option<String>,
    policy: Option<crate::canary::gate::GatePolicy>,
    metrics: Option<crate::canary::queries::MetricNames>,
}

// ---- validated types ----

/// Every environment of one configuration file, in file order.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub environments: IndexMap<String, Environment>,
}

/// One named target (cluster context + namespace + components).
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub kube_context: String,
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    pub production: bool,
    pub registry: Option<String>,
    pub prometheus_url: Option<String>,
    /// Name of the environment variable holding the database URL; the value never lives in the file.
    pub database_url_env: String,
    pub helm: Option<PathBuf>,
    pub secret: SecretSpec,
    /// How `psctl build` makes the images.
    pub build: BuildSpec,
    /// What `psctl rollback` checks besides the smoke suite (the `recovery:` section).
    pub recovery: RecoverySpec,
    /// How long `psctl deploy` keeps watching a component's new pods after its rollout is
    /// complete (`deploy_hold`, default [`DEFAULT_DEPLOY_HOLD`]; `--hold` overrides it).
    pub deploy_hold: Duration,
    /// In file order: `deploy` without `--component` walks them in this order.
    pub components: Vec<Component>,
}

/// The `recovery:` section of an environment: how `psctl rollback` proves the service recovered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoverySpec {
    /// The deposit rate must return to its pre-incident level (none: not checked).
    pub deposit_rate_baseline: Option<BaselineSpec>,
}

/// `recovery.deposit_rate_baseline`: a PromQL rate compared with its value before the incident.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineSpec {
    /// Instant query whose series are summed, e.g.
    /// `sum(rate(problemsolver_deposits_processed_total[5m]))`.
    pub query: String,
    /// How long after the rollback the rate may take to come back.
    pub window: Duration,
    /// The share of the baseline that counts as "back" (0 < tolerance <= 1; default 0.8).
    pub tolerance: f64,
    /// How often the rate is read during the window (default 15 s).
    pub interval: Duration,
    /// When psctl cannot tell when the bad revision arrived (`--undo`), the baseline is read
    /// this long before the rollback started (default 30 m).
    pub lookback: Duration,
}

/// Defaults of `recovery.deposit_rate_baseline`.
pub const DEFAULT_BASELINE_TOLERANCE: f64 = 0.8;
pub const DEFAULT_BASELINE_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_BASELINE_LOOKBACK: Duration = Duration::from_secs(1800);

/// The `build:` section of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// The image the service binaries run on (the Dockerfile's `RUNTIME_BASE`); `None` keeps
    /// the Dockerfile's default (distroless).
    pub runtime_base: Option<String>,
    /// The program that builds and pushes images.
    pub tool: BuildTool,
    /// The Dockerfile, relative to the configuration file's directory or the working directory.
    pub dockerfile: PathBuf,
}

impl Default for BuildSpec {
    fn default() -> Self {
        Self {
            runtime_base: None,
            tool: BuildTool::Docker,
            dockerfile: PathBuf::from("Dockerfile"),
        }
    }
}

/// Which container tool `psctl build` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BuildTool {
    /// `docker build` and `docker push`.
    Docker,
    /// `docker buildx build --load` and `docker push`.
    Buildx,
    /// `podman build` and `podman push`.
    Podman,
}

impl BuildTool {
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Buildx => "buildx",
            Self::Podman => "podman",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub name: String,
    pub required_keys: Vec<String>,
}

/// A deployable unit: a Helm release and the Deployment it produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: String,
    pub release: String,
    pub chart: PathBuf,
    /// Repository under the environment's registry.
    pub image: String,
    /// The cargo package and binary the image runs (default: the image name).
    pub binary: String,
    pub deployment: String,
    /// Label selector of the component's pods, e.g. `app=problemsolver-poller`.
    pub selector: String,
    /// Extra non-secret chart values.
    pub values: crate::yaml::Mapping,
    pub metrics: Option<MetricsSpec>,
    pub canary: Option<CanarySpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSpec {
    pub service: String,
    pub port: u16,
    pub path: String,
    pub required: Vec<String>,
}

/// How `psctl canary` promotes a component (see docs/canary.md).
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySpec {
    /// The canary track's Deployment (the chart renders it as `<release>-canary`).
    pub deployment: String,
    pub steps: Vec<u8>,
    pub bake: Duration,
    /// How often the gates are evaluated (default 30 s).
    pub interval: Duration,
    /// Gate thresholds; unspecified fields keep the defaults.
    pub policy: crate::canary::gate::GatePolicy,
    /// Which metrics measure requests, failures and latency (default: the webhook worker's).
    pub metrics: crate::canary::queries::MetricNames,
}

/// Gate evaluations of a canary step happen this often unless configured.
pub const DEFAULT_CANARY_INTERVAL: Duration = Duration::from_secs(30);

impl Environment {
    /// The component called `name`, or an error listing the configured ones.
    pub fn component(&self, name: &str) -> Result<&Component, UnknownComponent> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| UnknownComponent {
                name: name.to_owned(),
                environment: self.name.clone(),
                known: self.components.iter().map(|c| c.name.clone()).collect(),
            })
    }

    /// The components selected by `names` (all of them, in configuration order, when empty).
    pub fn select(&self, names: &[String]) -> Result<Vec<&Component>, UnknownComponent> {
        if names.is_empty() {
            return Ok(self.components.iter().collect());
        }
        let mut selected = Vec::new();
        for component in &self.components {
            if names.contains(&component.name) {
                selected.push(component);
            }
        }
        for name in names {
            self.component(name)?;
        }
        Ok(selected)
    }

    /// Every component's Helm release, in configuration order.
    pub fn releases(&self) -> Vec<String> {
        self.components.iter().map(|c| c.release.clone()).collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("environment `{environment}` has no component `{name}`; configured: {}", known.join(", "))]
pub struct UnknownComponent {
    pub name: String,
    pub environment: String,
    pub known: Vec<String>,
}

impl crate::error::Classify for UnknownComponent {
    fn exit_status(&self) -> crate::error::ExitStatus {
        crate::error::ExitStatus::Usage
    }
}

/// The components used when an environment does not list any: the runbooks' two services.
pub fn default_components() -> Vec<Component> {
    let metrics = |service: &str, port, required: &[&str]| MetricsSpec {
        service: service.to_owned(),
        port,
        path: "/metrics".to_owned(),
        required: required.iter().map(|s| (*s).to_owned()).collect(),
    };
    vec![
        Component {
            name: "poller".to_owned(),
            release: "problemsolver-poller".to_owned(),
            chart: PathBuf::from("charts/poller"),
            image: "problemsolver-poller".to_owned(),
            binary: "problemsolver-poller".to_owned(),
            deployment: "problemsolver-poller".to_owned(),
            selector: "app=problemsolver-poller".to_owned(),
            values: crate::yaml::Mapping::new(),
            metrics: Some(metrics(
                "problemsolver-poller-metrics",
                8002,
                &[
                    "problemsolver_poller_last_success_unixtime",
                    "problemsolver_deposits_processed_total",
                    "problemsolver_deposits_errors_total",
                    "problemsolver_collisions_total",
                ],
            )),
            canary: None,
        },
        Component {
            name: "webhook".to_owned(),
            release: "problemsolver-webhook".to_owned(),
            chart: PathBuf::from("charts/webhook-worker"),
            image: "problemsolver-webhook-worker".to_owned(),
            binary: "problemsolver-webhook-worker".to_owned(),
            deployment: "problemsolver-webhook".to_owned(),
            selector: "app=problemsolver-webhook".to_owned(),
            values: crate::yaml::Mapping::new(),
            metrics: Some(metrics(
                "problemsolver-webhook-metrics",
                8001,
                &[
                    "webhook_deliveries_total",
                    "webhook_queue_depth",
                    "worker_health_status",
                    "circuit_breaker_opens_total",
                ],
            )),
            canary: Some(CanarySpec {
                deployment: "problemsolver-webhook-canary".to_owned(),
                steps: vec![10, 30, 60, 100],
                bake: Duration::from_secs(300),
                interval: DEFAULT_CANARY_INTERVAL,
                policy: crate::canary::gate::GatePolicy::default(),
                metrics: crate::canary::queries::MetricNames::default(),
            }),
        },
    ]
}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Validates configuration text; `path` is used for messages and to resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    let file = display_name(path);
    let deserializer = crate::yaml::Deserializer::from_str(text);
    let raw: RawFile = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let message = error.into_inner().to_string();
        // The YAML library prefixes its own (shorter) path; ours is already in `key`.
        let message = match message.split_once(": ") {
            Some((head, tail)) if !head.contains(' ') => tail.to_owned(),
            _ => message,
        };
        if key == "." || key.is_empty() {
            ConfigError::Syntax {
                file: file.clone(),
                message,
            }
        } else {
            ConfigError::Invalid {
                file: file.clone(),
                key,
                message,
            }
        }
    })?;
    let invalid = |key: String, message: &str| ConfigError::Invalid {
        file: file.clone(),
        key,
        message: message.to_owned(),
    };
    let Some(raw_environments) = raw.environments else {
        return Err(invalid(
            "environments".to_owned(),
            "missing; add at least one environment, e.g. `environments: {sandbox: {kube_context: psctl-sandbox}}`",
        ));
    };
    if raw_environments.is_empty() {
        return Err(invalid(
            "environments".to_owned(),
            "empty; add at least one environment",
        ));
    }
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut environments = IndexMap::new();
    for (name, raw) in raw_environments {
        let environment = validate_environment(&name, raw, &base, &invalid)?;
        environments.insert(name, environment);
    }
    Ok(ConfigFile {
        path: path.to_owned(),
        environments,
    })
}

fn display_name(path: &Path) -> String {
    path.display().to_string()
}

type Invalid<'a> = &'a dyn Fn(String, &str) -> ConfigError;

fn validate_environment(
    name: &str,
    raw: RawEnvironment,
    base: &Path,
    invalid: Invalid<'_>,
) -> Result<Environment, ConfigError> {
    let key = |field: &str| format!("environments.{name}.{field}");
    let RawEnvironment {
        kube_context,
        kubeconfig,
        namespace,
        production,
        registry,
        prometheus_url,
        database_url_env,
        helm,
        secret,
        build,
        recovery,
        deploy_hold,
        components,
    } = raw;
    let deploy_hold = match deploy_hold {
        Some(text) => parse_duration(&text).map_err(|e| invalid(key("deploy_hold"), &e))?,
        None => DEFAULT_DEPLOY_HOLD,
    };
    // No context: the environment is meant for a pod, reached as the pod's ServiceAccount.
    let kube_context = match kube_context {
        None => String::new(),
        Some(context) => non_empty(context, &key("kube_context"), invalid)?,
    };
    // No namespace: `default`, except for an environment meant for a pod (no context, no
    // kubeconfig) run in one, which acts in the pod's own namespace as kubectl and Helm do there.
    let namespace = match namespace {
        Some(namespace) => check_dns_label(namespace, &key("namespace"), invalid)?,
        None if kube_context.is_empty() && kubeconfig.is_none() => {
            crate::cluster::pod_namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
        }
        None => DEFAULT_NAMESPACE.to_owned(),
    };
    let secret = match secret {
        None => SecretSpec {
            name: DEFAULT_SECRET_NAME.to_owned(),
            required_keys: DEFAULT_REQUIRED_KEYS
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
        },
        Some(RawSecret {
            name,
            required_keys,
        }) => SecretSpec {
            name: match name {
                Some(n) => non_empty(n, &key("secret.name"), invalid)?,
                None => DEFAULT_SECRET_NAME.to_owned(),
            },
            required_keys: required_keys.unwrap_or_else(|| {
                DEFAULT_REQUIRED_KEYS
                    .iter()
                    .map(|k| (*k).to_owned())
                    .collect()
            }),
        },
    };
    let build = match build {
        None => BuildSpec::default(),
        Some(RawBuild {
            runtime_base,
            tool,
            dockerfile,
        }) => BuildSpec {
            runtime_base: match runtime_base {
                Some(base) => Some(non_empty(base, &key("build.runtime_base"), invalid)?),
                None => None,
            },
            tool: match tool.as_deref() {
                None | Some("docker") => BuildTool::Docker,
                Some("buildx") => BuildTool::Buildx,
                Some("podman") => BuildTool::Podman,
                Some(other) => {
                    return Err(invalid(
                        key("build.tool"),
                        &format!("`{other}` is not a build tool; use docker, buildx or podman"),
                    ));
                }
            },
            dockerfile: dockerfile.unwrap_or_else(|| PathBuf::from("Dockerfile")),
        },
    };
    if let Some(url) = &prometheus_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(invalid(
            key("prometheus_url"),
            "must start with http:// or https://, e.g. `http://127.0.0.1:9090`",
        ));
    }
    let recovery = validate_recovery(recovery, &key, invalid)?;
    let components = match components {
        None => default_components(),
        Some(raw) if raw.is_empty() => {
            return Err(invalid(
                key("components"),
                "empty; list at least one component or remove the key to use the defaults",
            ));
        }
        Some(raw) => raw
            .into_iter()
            .map(|(component, raw)| {
                validate_component(
                    &format!("environments.{name}.components.{component}"),
                    &component,
                    raw,
                    invalid,
                )
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let mut seen_releases = BTreeMap::new();
    for component in &components {
        if let Some(other) = seen_releases.insert(component.release.clone(), component.name.clone())
        {
            return Err(invalid(
                key(&format!("components.{}.release", component.name)),
                &format!(
                    "`{}` is also the release of component `{other}`; releases must differ",
                    component.release
                ),
            ));
        }
    }
    Ok(Environment {
        name: name.to_owned(),
        kube_context,
        kubeconfig: kubeconfig.map(|p| resolve_relative(base, p)),
        namespace,
        production: production.unwrap_or(false),
        registry: registry.filter(|r| !r.is_empty()),
        prometheus_url,
        database_url_env: database_url_env.unwrap_or_else(|| DEFAULT_DATABASE_URL_ENV.to_owned()),
        helm: helm.map(|p| resolve_relative(base, p)),
        secret,
        build,
        recovery,
        deploy_hold,
        components,
    })
}

fn validate_recovery(
    raw: Option<RawRecovery>,
    key: &dyn Fn(&str) -> String,
    invalid: Invalid<'_>,
) -> Result<RecoverySpec, ConfigError> {
    let Some(RawRecovery {
        deposit_rate_baseline,
    }) = raw
    else {
        return Ok(RecoverySpec::default());
    };
    let Some(RawBaseline {
        query,
        window,
        tolerance,
        interval,
        lookback,
    }) = deposit_rate_baseline
    else {
        return Ok(RecoverySpec::default());
    };
    let prefix = "recovery.deposit_rate_baseline";
    let query = required_text(query, &key(&format!("{prefix}.query")), invalid)?;
    let duration = |field: &str, text: Option<String>, default: Option<Duration>| {
        let name = key(&format!("{prefix}.{field}"));
        let value = match (text, default) {
            (Some(text), _) => parse_duration(&text).map_err(|e| invalid(name.clone(), &e))?,
            (None, Some(default)) => default,
            (None, None) => {
                return Err(invalid(
                    name,
                    "required: how long the rate may take to return, e.g. `10m`",
                ));
            }
        };
        if value.is_zero() {
            return Err(invalid(name, "must be more than zero"));
        }
        Ok(value)
    };
    let window = duration("window", window, None)?;
    let interval = duration("interval", interval, Some(DEFAULT_BASELINE_INTERVAL))?;
    if interval > window {
        return Err(invalid(
            key(&format!("{prefix}.interval")),
            "must be at most the window",
        ));
    }
    let lookback = duration("lookback", lookback, Some(DEFAULT_BASELINE_LOOKBACK))?;
    let tolerance = tolerance.unwrap_or(DEFAULT_BASELINE_TOLERANCE);
    if !(tolerance > 0.0 && tolerance <= 1.0) {
        return Err(invalid(
            key(&format!("{prefix}.tolerance")),
            "must be more than 0 and at most 1 (the share of the baseline that counts as recovered, e.g. 0.8)",
        ));
    }
    Ok(RecoverySpec {
        deposit_rate_baseline: Some(BaselineSpec {
            query,
            window,
            tolerance,
            interval,
            lookback,
        }),
    })
}

fn validate_component(
    prefix: &str,
    name: &str,
    raw: RawComponent,
    invalid: Invalid<'_>,
) -> Result<Component, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let RawComponent {
        release,
        chart,
        image,
        binary,
        deployment,
        selector,
        values,
        metrics,
        canary,
    } = raw;
    let release = check_dns_label(
        required_text(release, &key("release"), invalid)?,
        &key("release"),
        invalid,
    )?;
    let Some(chart) = chart else {
        return Err(invalid(
            key("chart"),
            "missing; the chart directory, e.g. `charts/poller`",
        ));
    };
    let image = required_text(image, &key("image"), invalid)?;
    let binary = match binary {
        Some(binary) => non_empty(binary, &key("binary"), invalid)?,
        None => image.clone(),
    };
    let deployment = required_text(deployment, &key("deployment"), invalid)?;
    let selector = required_text(selector, &key("selector"), invalid)?;
    if !selector.contains('=') {
        return Err(invalid(
            key("selector"),
            "must be a label selector such as `app=problemsolver-poller`",
        ));
    }
    let metrics = metrics
        .map(
            |RawMetrics {
                 service,
                 port,
                 path,
                 required,
             }| {
                Ok::<_, ConfigError>(MetricsSpec {
                    service: required_text(service, &key("metrics.service"), invalid)?,
                    port: port.ok_or_else(|| {
                        invalid(key("metrics.port"), "missing; the metrics port, e.g. 8002")
                    })?,
                    path: path.unwrap_or_else(|| "/metrics".to_owned()),
                    required: required.unwrap_or_default(),
                })
            },
        )
        .transpose()?;
    let canary = canary
        .map(|RawCanary { deployment, steps, bake, interval, policy, metrics }| {
            let steps = steps.unwrap_or_else(|| vec![10, 30, 60, 100]);
            if steps.is_empty() || steps.iter().any(|s| *s == 0 || *s > 100) || !steps.windows(2).all(|w| w[0] < w[1]) {
                return Err(invalid(
                    key("canary.steps"),
                    "must be increasing percentages between 1 and 100, e.g. `[10, 30, 60, 100]`",
                ));
            }
            let bake = match bake {
                Some(text) => parse_duration(&text).map_err(|e| invalid(key("canary.bake"), &e))?,
                None => Duration::from_secs(300),
            };
            let interval = match interval {
                Some(text) => parse_duration(&text).map_err(|e| invalid(key("canary.interval"), &e))?,
                None => DEFAULT_CANARY_INTERVAL,
            };
            if interval.is_zero() || interval > bake {
                return Err(invalid(
                    key("canary.interval"),
                    "must be more than zero and at most the bake, e.g. `30s`",
                ));
            }
            let policy = policy.unwrap_or_default();
            if let Err(message) = crate::canary::gate::check_policy(&policy) {
                return Err(invalid(key("canary.policy"), &message));
            }
            Ok(CanarySpec {
                deployment: required_text(deployment, &key("canary.deployment"), invalid)?,
                steps,
                bake,
                interval,
                policy,
                metrics: metrics.unwrap_or_default(),
            })
        })
        .transpose()?;
    let values = values.unwrap_or_default();
    check_value_tags(&values, &key("values"), invalid)?;
    Ok(Component {
        name: name.to_owned(),
        release,
        chart,
        image,
        binary,
        deployment,
        selector,
        values,
        metrics,
        canary,
    })
}

/// A tag pinned in a component's chart values (`image.tag`, `canary.image.tag`) follows the
/// same grammar as `--tag`.
fn check_value_tags(
    values: &crate::yaml::Mapping,
    prefix: &str,
    invalid: Invalid<'_>,
) -> Result<(), ConfigError> {
    for path in [
        ["image", "tag"].as_slice(),
        ["canary", "image", "tag"].as_slice(),
    ] {
        let mut value = values.get(path[0]);
        for key in &path[1..] {
            value = value.and_then(|v| v.get(*key));
        }
        let text = match value {
            None => continue,
            Some(crate::yaml::Value::String(text)) => text.clone(),
            Some(crate::yaml::Value::Number(number)) => number.to_string(),
            Some(_) => {
                return Err(invalid(
                    format!("{prefix}.{}", path.join(".")),
                    "must be an image tag (a string), e.g. `\"1.4.2\"`",
                ));
            }
        };
        crate::registry::check_tag(&text)
            .map_err(|message| invalid(format!("{prefix}.{}", path.join(".")), &message))?;
    }
    Ok(())
}

fn required_text(
    value: Option<String>,
    key: &str,
    invalid: Invalid<'_>,
) -> Result<String, ConfigError> {
    match value {
        None => Err(invalid(key.to_owned(), "missing")),
        Some(value) => non_empty(value, key, invalid),
    }
}

fn non_empty(value: String, key: &str, invalid: Invalid<'_>) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        Err(invalid(key.to_owned(), "empty; give a value"))
    } else {
        Ok(value)
    }
}

fn check_dns_label(value: String, key: &str, invalid: Invalid<'_>) -> Result<String, ConfigError> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(value)
    } else {
        Err(invalid(
            key.to_owned(),
            &format!(
                "`{value}` is not a valid Kubernetes name (lowercase letters, digits and `-`, at most 63)"
            ),
        ))
    }
}

fn resolve_relative(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() || base.as_os_str().is_empty() {
        path
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT_EXAMPLE: &str = r#"
environments:
  sandbox:
    kube_context: psctl-sandbox
    kubeconfig: /root/.cache/psctl/sandbox/kubeconfig
    namespace: default
    production: false
    registry: 127.0.0.1:5000
    prometheus_url: http://127.0.0.1:9090
    database_url_env: DATABASE_URL
    helm: /root/.cache/psctl/sandbox/bin/helm
    build:
      runtime_base: 127.0.0.1:5000/psctl-base:bookworm
      tool: docker
      dockerfile: Dockerfile
    secret:
      name: problemsolver-secrets
      required_keys: [DATABASE_URL, BINANCE_API_KEY, BINANCE_API_SECRET, WEBHOOK_SECRET]
    components:
      poller:
        release: problemsolver-poller
        chart: charts/poller
        image: problemsolver-poller
        deployment: problemsolver-poller
        selector: app=problemsolver-poller
        values: {}
        metrics: {service: problemsolver-poller-metrics, port: 8002, path: /metrics,
                  required: [problemsolver_poller_last_success_unixtime, problemsolver_deposits_processed_total,
                             problemsolver_deposits_errors_total, problemsolver_collisions_total]}
      webhook:
        release: problemsolver-webhook
        chart: charts/webhook-worker
        image: problemsolver-webhook-worker
        deployment: problemsolver-webhook
        selector: app=problemsolver-webhook
        metrics: {service: problemsolver-webhook-metrics, port: 8001, path: /metrics,
                  required: [webhook_deliveries_total, webhook_queue_depth, worker_health_status, circuit_breaker_opens_total]}
        canary: {deployment: problemsolver-webhook-canary, steps: [10, 30, 60, 100], bake: 5m}
"#;

    fn error_text(text: &str) -> String {
        parse(Path::new("psctl.yaml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_contract_example_parses_and_matches_the_defaults() {
        let config = parse(Path::new("psctl.yaml"), CONTRACT_EXAMPLE).unwrap();
        let sandbox = &config.environments["sandbox"];
        assert_eq!(sandbox.kube_context, "psctl-sandbox");
        assert_eq!(sandbox.components, default_components());
        assert_eq!(sandbox.secret.required_keys, DEFAULT_REQUIRED_KEYS);
        assert_eq!(
            sandbox.build.runtime_base.as_deref(),
            Some("127.0.0.1:5000/psctl-base:bookworm")
        );
    }

    #[test]
    fn the_build_section_defaults_to_docker_and_the_distroless_base() {
        let config = parse(
            Path::new("psctl.yaml"),
            "environments: {dev: {kube_context: kind-dev}}",
        )
        .unwrap();
        assert_eq!(config.environments["dev"].build, BuildSpec::default());
        assert!(
            error_text("environments: {dev: {kube_context: c, build: {tool: kaniko}}}")
                .contains("environments.dev.build.tool: `kaniko` is not a build tool")
        );
    }

    #[test]
    fn a_minimal_environment_gets_the_runbook_defaults() {
        let config = parse(
            Path::new("psctl.yaml"),
            "environments: {dev: {kube_context: kind-dev}}",
        )
        .unwrap();
        let dev = &config.environments["dev"];
        assert_eq!(dev.namespace, "default");
        assert_eq!(dev.secret.name, "problemsolver-secrets");
        let releases: Vec<_> = dev.components.iter().map(|c| c.release.as_str()).collect();
        assert_eq!(releases, ["problemsolver-poller", "problemsolver-webhook"]);
        assert!(!dev.production);
        assert_eq!(dev.deploy_hold, DEFAULT_DEPLOY_HOLD);
    }

    #[test]
    fn the_deploy_hold_is_a_duration_and_zero_turns_it_off() {
        let hold = |text: &str| {
            parse(
                Path::new("psctl.yaml"),
                &format!("environments: {{dev: {{kube_context: c, deploy_hold: {text}}}}}"),
            )
            .map(|config| config.environments["dev"].deploy_hold)
        };
        assert_eq!(hold("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(hold("0s").unwrap(), Duration::ZERO);
        let error = hold("soon").unwrap_err().to_string();
        assert!(
            error.starts_with("psctl.yaml: environments.dev.deploy_hold: `soon`"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_required_key_is_named_with_its_full_path() {
        let text = CONTRACT_EXAMPLE.replace("        release: problemsolver-webhook\n", "");
        assert_eq!(
            error_text(&text),
            "psctl.yaml: environments.sandbox.components.webhook.release: missing"
        );
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_path() {
        let text = CONTRACT_EXAMPLE.replace("    production: false", "    prodution: false");
        let message = error_text(&text);
        assert!(
            message.starts_with("psctl.yaml: environments.sandbox.prodution: unknown field `prodution`, expected one of"),
            "{message}"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let text = CONTRACT_EXAMPLE.replace("port: 8002", "port: eighty");
        let message = error_text(&text);
        assert!(
            message.starts_with("psctl.yaml: environments.sandbox.components.poller.metrics.port:"),
            "{message}"
        );
    }

    #[test]
    fn kube_context_may_be_left_out_for_a_pod_but_not_left_empty() {
        let config = parse(
            Path::new("psctl.yaml"),
            "environments: {ci: {namespace: apps}}",
        )
        .expect("an environment without a context");
        assert_eq!(config.environments["ci"].kube_context, "");
        assert_eq!(
            error_text("environments: {dev: {kube_context: ' ', namespace: default}}"),
            "psctl.yaml: environments.dev.kube_context: empty; give a value"
        );
    }

    /// The production example: 10 worker replicas, so the canary steps are 1+9, 3+7 and 6+4;
    /// the absolute error target and `on_latency: pause`; the deposit-rate baseline.
    #[test]
    fn the_production_example_gives_the_worker_ten_replicas_and_the_runbook_gates() {
        let text = include_str!("../../docs/examples/psctl.production.yaml");
        let config = parse(Path::new("psctl.production.yaml"), text).unwrap();
        let production = &config.environments["production"];
        assert!(production.production);
        let webhook = production.component("webhook").unwrap();
        let replicas = webhook.values["replicaCount"].as_i64().unwrap();
        assert_eq!(replicas, 10);
        let canary = webhook.canary.as_ref().unwrap();
        let splits: Vec<(i32, i32)> = canary
            .steps
            .iter()
            .map(|weight| {
                let split = crate::canary::state::split(i32::try_from(replicas).unwrap(), *weight);
                (split.canary, split.stable)
            })
            .collect();
        assert_eq!(splits, [(1, 9), (3, 7), (6, 4), (10, 0)]);
        assert_eq!(canary.policy.max_error_rate, Some(0.005));
        assert_eq!(
            canary.policy.on_latency,
            crate::canary::gate::OnLatency::Pause
        );
        assert_eq!(
            production
                .recovery
                .deposit_rate_baseline
                .as_ref()
                .map(|b| b.window),
            Some(Duration::from_secs(900))
        );
    }

    #[test]
    fn the_recovery_baseline_is_optional_read_and_checked() {
        let config = parse(Path::new("psctl.yaml"), CONTRACT_EXAMPLE).unwrap();
        assert_eq!(
            config.environments["sandbox"].recovery,
            RecoverySpec::default()
        );
        let with = |baseline: &str| {
            format!(
                "environments: {{dev: {{kube_context: c, recovery: {{deposit_rate_baseline: {baseline}}}}}}}"
            )
        };
        let config = parse(
            Path::new("psctl.yaml"),
            &with("{query: 'sum(rate(problemsolver_deposits_processed_total[5m]))', window: 10m}"),
        )
        .unwrap();
        let baseline = config.environments["dev"]
            .recovery
            .deposit_rate_baseline
            .clone()
            .unwrap();
        assert_eq!(
            baseline,
            BaselineSpec {
                query: "sum(rate(problemsolver_deposits_processed_total[5m]))".to_owned(),
                window: Duration::from_secs(600),
                tolerance: DEFAULT_BASELINE_TOLERANCE,
                interval: DEFAULT_BASELINE_INTERVAL,
                lookback: DEFAULT_BASELINE_LOOKBACK,
            }
        );
        let prefix = "environments.dev.recovery.deposit_rate_baseline";
        assert!(
            error_text(&with("{window: 10m}")).contains(&format!("{prefix}.query: missing")),
            "{}",
            error_text(&with("{window: 10m}"))
        );
        assert!(error_text(&with("{query: q}")).contains(&format!("{prefix}.window: required")));
        assert!(
            error_text(&with("{query: q, window: 10m, tolerance: 1.5}")).contains(&format!(
                "{prefix}.tolerance: must be more than 0 and at most 1"
            ))
        );
        assert!(
            error_text(&with("{query: q, window: 1m, interval: 5m}"))
                .contains(&format!("{prefix}.interval: must be at most the window"))
        );
        assert!(
            error_text(&with("{query: q, window: 10m, baseline: 3}"))
                .contains("unknown field `baseline`")
        );
    }

    #[test]
    fn invalid_values_explain_the_fix() {
        assert!(
            error_text("environments: {dev: {kube_context: c, namespace: Bad_NS}}")
                .contains("environments.dev.namespace: `Bad_NS` is not a valid Kubernetes name")
        );
        let steps = CONTRACT_EXAMPLE.replace("steps: [10, 30, 60, 100]", "steps: [30, 10]");
        assert!(error_text(&steps).contains("components.webhook.canary.steps: must be increasing"));
        let bake = CONTRACT_EXAMPLE.replace("bake: 5m", "bake: soon");
        assert!(error_text(&bake).contains("components.webhook.canary.bake:"));
        assert_eq!(
            error_text("{}"),
            "psctl.yaml: environments: missing; add at least one environment, e.g. `environments: {sandbox: {kube_context: psctl-sandbox}}`"
        );
    }

    #[test]
    fn a_tag_in_chart_values_follows_the_tag_grammar() {
        let pinned = CONTRACT_EXAMPLE.replace(
            "values: {}",
            "values: {image: {tag: \"v1,image.repository=evil/x\"}}",
        );
        assert_ne!(pinned, CONTRACT_EXAMPLE);
        let error = error_text(&pinned);
        assert!(
            error.contains("components.poller.values.image.tag: \"v1,image.repository=evil/x\" is not a valid image tag"),
            "{error}"
        );
        let fine = pinned.replace("v1,image.repository=evil/x", "1.4.2");
        assert!(parse(Path::new("psctl.yaml"), &fine).is_ok());
        let canary =
            CONTRACT_EXAMPLE.replace("values: {}", "values: {canary: {image: {tag: [1]}}}");
        assert!(
            error_text(&canary)
                .contains("components.poller.values.canary.image.tag: must be an image tag")
        );
    }

    #[test]
    fn canary_interval_policy_and_metrics_are_read_and_checked() {
        let tuned = CONTRACT_EXAMPLE.replace(
            "bake: 5m}",
            "bake: 5m, interval: 20s, policy: {min_requests: 20, on_inconclusive: abort, guardrail_window: 120}, \
             metrics: {requests: http_requests_total}}",
        );
        let config = parse(Path::new("psctl.yaml"), &tuned).unwrap();
        let canary = config.environments["sandbox"].components[1]
            .canary
            .clone()
            .unwrap();
        assert_eq!(canary.interval, Duration::from_secs(20));
        assert_eq!(canary.policy.min_requests, 20.0);
        assert_eq!(canary.policy.guardrail_window, Duration::from_secs(120));
        assert_eq!(
            canary.policy.confidence, 0.95,
            "unset fields keep the defaults"
        );
        assert_eq!(canary.metrics.requests, "http_requests_total");
        assert_eq!(canary.metrics.failure_matcher, "status=\"failure\"");

        let slow = CONTRACT_EXAMPLE.replace("bake: 5m}", "bake: 5m, interval: 10m}");
        assert!(
            error_text(&slow)
                .contains("canary.interval: must be more than zero and at most the bake")
        );
        let unsure = CONTRACT_EXAMPLE.replace("bake: 5m}", "bake: 5m, policy: {confidence: 1.2}}");
        assert!(error_text(&unsure).contains("canary.policy: `confidence` must be"));
        let typo = CONTRACT_EXAMPLE.replace("bake: 5m}", "bake: 5m, policy: {confidense: 0.9}}");
        assert!(error_text(&typo).contains("unknown field `confidense`"));
    }

    #[test]
    fn duplicate_releases_are_refused() {
        let text = CONTRACT_EXAMPLE.replace(
            "release: problemsolver-webhook",
            "release: problemsolver-poller",
        );
        assert!(error_text(&text).contains("components.webhook.release: `problemsolver-poller` is also the release of component `poller`"));
    }

    #[test]
    fn components_are_selected_in_configuration_order() {
        let config = parse(Path::new("psctl.yaml"), CONTRACT_EXAMPLE).unwrap();
        let sandbox = &config.environments["sandbox"];
        let names =
            |sel: Vec<&Component>| sel.into_iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(sandbox.select(&[]).unwrap()), ["poller", "webhook"]);
        assert_eq!(
            names(
                sandbox
                    .select(&["webhook".into(), "poller".into()])
                    .unwrap()
            ),
            ["poller", "webhook"]
        );
        let error = sandbox.select(&["api".into()]).unwrap_err().to_string();
        assert_eq!(
            error,
            "environment `sandbox` has no component `api`; configured: poller, webhook"
        );
    }
}
