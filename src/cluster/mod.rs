//! Cluster access: a kube-rs `Client` built from the environment's own kubeconfig and context
//! (never the current-context implicitly), or, in a pod without any kubeconfig, from the pod's
//! ServiceAccount (in-cluster configuration, as client-go falls back to); and classification of
//! API failures into exit codes.

pub mod access;
pub mod image;
pub mod ownership;

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Classify, ExitStatus};
use crate::settings::Environment;

/// The User-Agent of psctl's requests to the API server (kubectl sends `kubectl/<version> ...`).
pub const USER_AGENT: &str = concat!("psctl/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot load kubeconfig {}", path.as_deref().unwrap_or("from $KUBECONFIG or ~/.kube/config"))]
    Kubeconfig {
        path: Option<String>,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot use context `{context}` of the kubeconfig")]
    Context {
        context: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "the environment names no kube_context, and the pod's in-cluster configuration (KUBERNETES_SERVICE_HOST and _PORT, the ServiceAccount's token, CA and namespace) is unusable"
    )]
    InCluster {
        #[source]
        source: kube::config::InClusterError,
    },
    #[error(
        "environment `{environment}` names no `kube_context`: a kubeconfig is used only with a named context, and the pod's ServiceAccount only in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT set) with no `kubeconfig:` configured"
    )]
    NoContext { environment: String },
    #[error("{origin} is not a valid proxy URL")]
    Proxy {
        origin: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("cannot build a Kubernetes client for context `{context}`")]
    Client {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action}: {}", describe(error))]
    Api { action: String, error: kube::Error },
}

impl ClusterError {
    /// Wraps an API error with what psctl was doing.
    pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |error| Self::Api { action, error }
    }

    /// The API's status code, when the server answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Api {
                error: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }
}

impl Classify for ClusterError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Kubeconfig { .. }
            | Self::Context { .. }
            | Self::InCluster { .. }
            | Self::NoContext { .. }
            | Self::Proxy { .. } => ExitStatus::Usage,
            Self::Client { .. } => ExitStatus::Unreachable,
            // The server answered: a refusal (403, 404, 409, 422) is not "unreachable".
            Self::Api {
                error: kube::Error::Api(status),
                ..
            } if status.code != 401 && status.code < 500 => ExitStatus::Usage,
            Self::Api { .. } => ExitStatus::Unreachable,
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::InCluster { .. } => vec![
                format!("the pod has no usable ServiceAccount credentials in {SERVICE_ACCOUNT_DIR}: mount the ServiceAccount token (leave `automountServiceAccountToken` unset or `true` on the pod and its ServiceAccount), or set `kubeconfig:` and `kube_context:` for the environment in psctl.yaml"),
            ],
            Self::NoContext { .. } => vec![
                "set `kube_context:` for the environment in psctl.yaml (or pass `--context`), or run psctl in a pod".to_owned(),
            ],
            Self::Kubeconfig { .. } | Self::Context { .. } => vec![
                "set `kubeconfig:` and `kube_context:` for the environment in psctl.yaml, or load the sandbox with `eval \"$(psctl-sandbox env)\"`; in a pod, leave `kube_context` out to use the pod's ServiceAccount".to_owned(),
            ],
            Self::Api { error: kube::Error::Api(status), .. } if status.code == 403 || status.code == 401 => {
                vec!["the context's credentials are not authorised for this; check the RBAC of the user in the kubeconfig".to_owned()]
            }
            Self::Api { error: kube::Error::Api(_), .. } | Self::Proxy { .. } => Vec::new(),
            Self::Client { .. } | Self::Api { .. } => {
                vec!["is the cluster up? for the sandbox: `psctl-sandbox up`".to_owned()]
            }
        }
    }
}

/// Where the cluster's address and credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The environment's `kubeconfig:`, with its `kube_context`.
    File(PathBuf),
    /// `$KUBECONFIG` or `~/.kube/config` (as kubectl reads them), with the `kube_context`.
    Default,
    /// A pod's ServiceAccount: `KUBERNETES_SERVICE_HOST`/`_PORT`, the token, CA and namespace
    /// files under [`SERVICE_ACCOUNT_DIR`]. Chosen only for an environment that names no
    /// `kube_context`.
    InCluster,
}

/// Where Kubernetes mounts a pod's ServiceAccount credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the process can see of its surroundings, for [`select_source`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Surroundings {
    /// `$KUBECONFIG` is set and not empty.
    pub kubeconfig_env: bool,
    /// `~/.kube/config` exists.
    pub default_file: bool,
    /// `KUBERNETES_SERVICE_HOST` and `_PORT` are set: the process runs in a pod (whether or not
    /// its ServiceAccount token is mounted, which [`connect`] then reports).
    pub in_pod: bool,
}

impl Surroundings {
    pub fn probe() -> Self {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        Self {
            kubeconfig_env: set("KUBECONFIG"),
            default_file: std::env::var_os("HOME")
                .is_some_and(|home| Path::new(&home).join(".kube/config").is_file()),
            in_pod: set("KUBERNETES_SERVICE_HOST") && set("KUBERNETES_SERVICE_PORT"),
        }
    }
}

/// The namespace of the pod this process runs in, as client-go's in-cluster configuration reads
/// it: `$POD_NAMESPACE` (set by the downward API) when not empty, else the ServiceAccount's
/// `namespace` file. `None` outside a pod, or when neither says.
pub fn pod_namespace() -> Option<String> {
    if !Surroundings::probe().in_pod {
        return None;
    }
    let file = std::fs::read_to_string(Path::new(SERVICE_ACCOUNT_DIR).join("namespace")).ok();
    choose_pod_namespace(
        std::env::var("POD_NAMESPACE").ok().as_deref(),
        file.as_deref(),
    )
}

/// [`pod_namespace`]'s choice from what it read. Pure.
pub fn choose_pod_namespace(variable: Option<&str>, file: Option<&str>) -> Option<String> {
    [variable, file]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|namespace| !namespace.is_empty())
        .map(str::to_owned)
}

/// The environment's kubeconfig when configured; else, for an environment that names a
/// `kube_context`, `$KUBECONFIG` or `~/.kube/config` (whose loading error says what is missing
/// when neither exists); else, in a pod, the pod's ServiceAccount. A context is never looked
/// for in the pod's ServiceAccount, nor the ServiceAccount used for a named context: in a CI
/// pod, psctl.yaml's `kube_context: prod` reaches prod through a kubeconfig or not at all,
/// never the pod's own cluster by accident. Pure.
pub fn select_source(
    configured: Option<&Path>,
    context: &str,
    surroundings: Surroundings,
) -> Source {
    match configured {
        Some(path) => Source::File(path.to_owned()),
        None if context.is_empty() && surroundings.in_pod => Source::InCluster,
        None => Source::Default,
    }
}

/// The source [`connect`] uses for `environment` in this process.
pub fn source(environment: &Environment) -> Source {
    select_source(
        environment.kubeconfig.as_deref(),
        &environment.kube_context,
        Surroundings::probe(),
    )
}

/// How the environment's cluster is named in messages: its context, or the pod's ServiceAccount.
pub fn context_label(environment: &Environment) -> String {
    if environment.kube_context.is_empty() {
        "in-cluster (the pod's ServiceAccount)".to_owned()
    } else {
        environment.kube_context.clone()
    }
}

/// The proxy for the API server at `server`, as client-go chooses it: the kubeconfig cluster's
/// `proxy-url` when set (NO_PROXY does not apply to it), else `HTTPS_PROXY` unless `NO_PROXY`
/// (comma-separated hosts, domains with their subdomains, IPs, CIDRs, `*`) exempts the
/// server's host. Pure.
pub fn effective_proxy(
    kubeconfig_proxy: Option<&str>,
    https_proxy: Option<&str>,
    no_proxy: Option<&str>,
    server: &http::Uri,
) -> Option<String> {
    if let Some(proxy) = kubeconfig_proxy.filter(|p| !p.is_empty()) {
        return Some(proxy.to_owned());
    }
    let proxy = https_proxy.filter(|p| !p.is_empty())?;
    let exempt = no_proxy.is_some_and(|no| {
        hyper_util::client::proxy::matcher::Matcher::builder()
            .https(proxy.to_owned())
            .no(no.to_owned())
            .build()
            .intercept(&with_https_scheme(server))
            .is_none()
    });
    (!exempt).then(|| proxy.to_owned())
}

/// `server` as an `https` URI (the matcher only intercepts http(s) destinations by scheme; the
/// proxy choice is the same for both here).
fn with_https_scheme(server: &http::Uri) -> http::Uri {
    let authority = server.authority().map_or("", |a| a.as_str());
    format!("https://{authority}/")
        .parse()
        .unwrap_or_else(|_| server.clone())
}

fn env_nonempty(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// The `proxy-url` of the cluster `context` points at in `kubeconfig`.
fn kubeconfig_proxy(kubeconfig: &Kubeconfig, context: &str) -> Option<String> {
    let cluster = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .cluster
        .clone();
    kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster)?
        .cluster
        .as_ref()?
        .proxy_url
        .clone()
}

/// Connects to the environment's cluster. The context is always the environment's: a kubeconfig
/// whose current-context points elsewhere is never used by accident. Without any kubeconfig, in
/// a pod, the pod's ServiceAccount is used (see [`select_source`]).
pub async fn connect(environment: &Environment) -> Result<kube::Client, ClusterError> {
    let https_proxy = env_nonempty(&["HTTPS_PROXY", "https_proxy"]);
    let no_proxy = env_nonempty(&["NO_PROXY", "no_proxy"]);
    let mut config = match source(environment) {
        Source::InCluster => {
            let mut config =
                kube::Config::incluster().map_err(|source| ClusterError::InCluster { source })?;
            config.proxy_url = None;
            if let Some(proxy) = effective_proxy(
                None,
                https_proxy.as_deref(),
                no_proxy.as_deref(),
                &config.cluster_url,
            ) {
                config.proxy_url = Some(parse_proxy(&proxy, "HTTPS_PROXY").map_err(|e| *e)?);
            }
            config
        }
        _ if environment.kube_context.is_empty() => {
            return Err(ClusterError::NoContext {
                environment: environment.name.clone(),
            });
        }
        source => {
            let kubeconfig = match source {
                Source::File(path) => {
                    Kubeconfig::read_from(&path).map_err(|source| ClusterError::Kubeconfig {
                        path: Some(format!("`{}`", path.display())),
                        source,
                    })?
                }
                _ => Kubeconfig::read()
                    .map_err(|source| ClusterError::Kubeconfig { path: None, source })?,
            };
            let from_file = kubeconfig_proxy(&kubeconfig, &environment.kube_context);
            let options = KubeConfigOptions {
                context: Some(environment.kube_context.clone()),
                cluster: None,
                user: None,
            };
            let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|source| ClusterError::Context {
                    context: environment.kube_context.clone(),
                    source,
                })?;
            // kube takes HTTPS_PROXY without looking at NO_PROXY; client-go honours both.
            let origin = if from_file.is_some() {
                "the kubeconfig's proxy-url"
            } else {
                "HTTPS_PROXY"
            };
            config.proxy_url = match effective_proxy(
                from_file.as_deref(),
                https_proxy.as_deref(),
                no_proxy.as_deref(),
                &config.cluster_url,
            ) {
                Some(proxy) => Some(parse_proxy(&proxy, origin).map_err(|e| *e)?),
                None => None,
            };
            config
        }
    };
    config.default_namespace = environment.namespace.clone();
    // psctl names itself to the API server, as kubectl and Helm do: audit logs (and the
    // sandbox's request counts) tell its requests from those of the Helm it runs with the same
    // identity, and a write without `fieldManager` is recorded under the manager `psctl`.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    // kube's default retry of 429/503/504 backs off up to 1000 s between 15 tries: against an
    // API server that keeps answering 503, one request would hang for minutes. psctl retries a
    // short burst (4 tries, 0.2 s doubling to 2 s, or the server's Retry-After) and otherwise
    // reports the API server unreachable (exit 3) while the operator can still act.
    config.default_retry = false;
    let builder =
        kube::client::ClientBuilder::try_from(config).map_err(|source| ClusterError::Client {
            context: environment.kube_context.clone(),
            source,
        })?;
    // Retry needs a cloneable service: the buffer (as kube's own client has) provides it.
    Ok(builder
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&tower::retry::RetryLayer::new(retry_policy()))
        .build())
}

/// A proxy URL from `origin`; the error names where it came from without echoing it (it may
/// carry credentials).
fn parse_proxy(proxy: &str, origin: &str) -> Result<http::Uri, Box<ClusterError>> {
    proxy.parse().map_err(|source| {
        Box::new(ClusterError::Proxy {
            origin: origin.to_owned(),
            source,
        })
    })
}

/// Connects and asks the API server for its version: a client known to reach the cluster, or
/// the reason it does not (classified like every API failure).
pub async fn connect_checked(
    environment: &Environment,
) -> Result<(kube::Client, k8s_openapi::apimachinery::pkg::version::Info), ClusterError> {
    let client = connect(environment).await?;
    let version = client
        .apiserver_version()
        .await
        .map_err(ClusterError::api(format!(
            "reaching the API server of context `{}`",
            context_label(environment)
        )))?;
    Ok((client, version))
}

/// Bounded retries for 429, 503 and 504 (see [`connect`]): at most [`RETRIES`] more tries,
/// together a few seconds.
pub fn retry_policy() -> kube::client::retry::RetryPolicy {
    kube::client::retry::RetryPolicy::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(2),
        RETRIES,
        true,
    )
    .expect("constant back-off parameters are valid")
}

/// How many times a 429/503/504 answer is retried.
pub const RETRIES: u32 = 4;

/// A kube error in one line: the API's own message and code, without the Debug dump.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.reason.is_empty() => {
            format!("{} (HTTP {})", status.message, status.code)
        }
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

/// True when `error` is the API saying "not found".
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_kubeconfig_always_wins() {
        let everything = Surroundings {
            kubeconfig_env: true,
            default_file: true,
            in_pod: true,
        };
        for context in ["", "prod"] {
            assert_eq!(
                select_source(
                    Some(Path::new("/etc/psctl/kubeconfig")),
                    context,
                    everything
                ),
                Source::File("/etc/psctl/kubeconfig".into())
            );
        }
    }

    #[test]
    fn the_pod_namespace_is_the_downward_variable_then_the_service_account_file() {
        assert_eq!(
            choose_pod_namespace(Some("ci"), Some("payments\n")).as_deref(),
            Some("ci")
        );
        assert_eq!(
            choose_pod_namespace(Some(""), Some("payments\n")).as_deref(),
            Some("payments")
        );
        assert_eq!(
            choose_pod_namespace(None, Some("payments")).as_deref(),
            Some("payments")
        );
        assert_eq!(choose_pod_namespace(None, Some("  \n")), None);
        assert_eq!(choose_pod_namespace(None, None), None);
    }

    #[test]
    fn in_a_pod_without_kubeconfig_the_service_account_is_used() {
        let pod = Surroundings {
            in_pod: true,
            ..Surroundings::default()
        };
        assert_eq!(select_source(None, "", pod), Source::InCluster);
        // No context is named: a kubeconfig lying around in the image changes nothing, since
        // psctl never uses a kubeconfig's current-context.
        for surroundings in [
            Surroundings {
                kubeconfig_env: true,
                ..pod
            },
            Surroundings {
                default_file: true,
                ..pod
            },
        ] {
            assert_eq!(select_source(None, "", surroundings), Source::InCluster);
        }
        // Outside a pod, the default loading rules report what is missing (and `connect`
        // refuses an environment without a context).
        assert_eq!(
            select_source(None, "", Surroundings::default()),
            Source::Default
        );
    }

    #[test]
    fn a_pod_without_its_token_and_an_environment_without_a_context_are_usage_errors() {
        let missing = ClusterError::InCluster {
            source: kube::config::InClusterError::ReadDefaultNamespace(std::io::Error::from(
                std::io::ErrorKind::NotFound,
            )),
        };
        assert_eq!(missing.exit_status(), ExitStatus::Usage);
        let hints = missing.hints().join("\n");
        assert!(
            hints.contains("mount the ServiceAccount token") && hints.contains(SERVICE_ACCOUNT_DIR),
            "{hints}"
        );
        let no_context = ClusterError::NoContext {
            environment: "ci".to_owned(),
        };
        assert_eq!(no_context.exit_status(), ExitStatus::Usage);
        assert!(
            no_context
                .to_string()
                .contains("environment `ci` names no `kube_context`")
        );
    }

    #[tokio::test]
    async fn an_environment_without_a_context_outside_a_pod_is_refused_before_any_request() {
        // The test process is no pod (KUBERNETES_SERVICE_HOST unset), and a kubeconfig is
        // configured: it is never read without a context naming what to use in it.
        let environment = crate::settings::file::parse(
            Path::new("psctl.yaml"),
            "environments: {ci: {kubeconfig: /nonexistent/kubeconfig, namespace: apps}}",
        )
        .expect("valid")
        .environments["ci"]
            .clone();
        assert_eq!(
            context_label(&environment),
            "in-cluster (the pod's ServiceAccount)"
        );
        let Err(error) = connect(&environment).await else {
            panic!("connected without a context");
        };
        assert!(
            matches!(&error, ClusterError::NoContext { environment } if environment == "ci"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn requests_name_psctl_in_their_user_agent() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // A loopback listener standing in for the API server: it keeps the request's head and
        // answers `/version`.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let body = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://{address}'}}}}]\n\
                 users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: ctx, context: {{cluster: c, user: u}}}}]\n"
            ),
        )
        .unwrap();
        let environment = crate::settings::file::parse(
            Path::new("psctl.yaml"),
            &format!(
                "environments: {{ci: {{kube_context: ctx, kubeconfig: {}, namespace: apps}}}}",
                kubeconfig.display()
            ),
        )
        .expect("valid")
        .environments["ci"]
            .clone();
        let client = connect(&environment).await.expect("a client");
        client.apiserver_version().await.expect("the version");
        let head = server.await.unwrap();
        assert!(
            head.lines()
                .any(|line| line.eq_ignore_ascii_case(&format!("user-agent: {USER_AGENT}"))),
            "{head}"
        );
        assert!(USER_AGENT.starts_with("psctl/"), "{USER_AGENT}");
    }

    #[test]
    fn a_named_context_in_a_pod_is_never_answered_by_the_service_account() {
        let pod = Surroundings {
            in_pod: true,
            ..Surroundings::default()
        };
        assert_eq!(select_source(None, "prod", pod), Source::Default);
        assert_eq!(
            select_source(
                None,
                "prod",
                Surroundings {
                    kubeconfig_env: true,
                    ..pod
                }
            ),
            Source::Default
        );
    }

    #[test]
    fn no_proxy_exempts_the_api_server_but_never_a_kubeconfig_proxy() {
        let server: http::Uri = "https://api.prod.example.com:6443".parse().unwrap();
        let env = Some("http://proxy.corp:3128");
        assert_eq!(
            effective_proxy(None, env, None, &server).as_deref(),
            Some("http://proxy.corp:3128")
        );
        for no_proxy in [
            "example.com",
            ".prod.example.com",
            "*",
            "localhost, api.prod.example.com",
        ] {
            assert_eq!(
                effective_proxy(None, env, Some(no_proxy), &server),
                None,
                "{no_proxy}"
            );
        }
        assert!(effective_proxy(None, env, Some("other.example.org"), &server).is_some());
        let by_ip: http::Uri = "https://10.96.0.1:443".parse().unwrap();
        assert_eq!(
            effective_proxy(None, env, Some("10.96.0.0/12"), &by_ip),
            None
        );
        assert!(effective_proxy(None, env, Some("10.0.0.0/16"), &by_ip).is_some());
        assert_eq!(
            effective_proxy(Some("socks5://bastion:1080"), env, Some("*"), &server).as_deref(),
            Some("socks5://bastion:1080")
        );
        assert_eq!(effective_proxy(None, None, Some("*"), &server), None);
        assert_eq!(effective_proxy(None, Some(""), None, &server), None);
    }
}
