//! Container registries: the one client psctl reads them with, and the one policy for what
//! their answers mean. What a tag currently points at (its manifest digest and image
//! configuration digest), the tag grammar, and [`preflight`].
//!
//! Shared by `deploy` and `canary` ([`preflight`]: the tag must exist) and `build` (a tag must
//! never be overwritten with other content). The distribution protocol (the `/v2/` challenge,
//! Bearer tokens from the registry's token service as Docker Hub, GHCR, ECR and Harbor issue
//! them, or Basic auth) is `oci-client`'s; the credentials are Docker's own
//! ([`credentials`]: `$DOCKER_CONFIG/config.json` and its credential helpers). Plain HTTP only
//! for a loopback registry or one written with an explicit `http://`. No credential reaches an
//! error, a log line or a plan: the client holds it, messages say only where it came from.

pub mod credentials;

use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::{Client, Reference, client::ClientConfig, client::ClientProtocol};

use crate::error::{Classify, CommandError, ExitStatus};
use crate::output::{CheckState, Output, redact::Redactor};

pub use credentials::Credentials;

/// Every manifest media type psctl accepts, most specific first.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A registry address split into host, repository prefix and scheme: `ghcr.io/acme` is the
/// host `ghcr.io` over HTTPS with every repository under `acme/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAddress {
    /// `127.0.0.1:5000` or `ghcr.io`: what credentials are filed under.
    pub host: String,
    /// `http://127.0.0.1:5000` or `https://ghcr.io`.
    pub base: String,
    /// `acme/` or empty.
    pub prefix: String,
}

impl RegistryAddress {
    /// Parses `host[:port][/prefix]`, optionally with an explicit `http://` or `https://`.
    /// Without a scheme, a loopback host is plain HTTP and every other host HTTPS.
    pub fn parse(registry: &str) -> Self {
        let (scheme, rest) = if let Some(rest) = registry.strip_prefix("http://") {
            (Some("http"), rest)
        } else if let Some(rest) = registry.strip_prefix("https://") {
            (Some("https"), rest)
        } else {
            (None, registry)
        };
        let rest = rest.trim_end_matches('/');
        let (host, prefix) = match rest.split_once('/') {
            Some((host, prefix)) => (host, format!("{prefix}/")),
            None => (rest, String::new()),
        };
        let scheme = scheme.unwrap_or_else(|| if is_loopback(host) { "http" } else { "https" });
        Self {
            host: host.to_owned(),
            base: format!("{scheme}://{host}"),
            prefix,
        }
    }

    /// True when the registry is spoken to over plain HTTP.
    pub fn plain_http(&self) -> bool {
        self.base.starts_with("http://")
    }

    /// `<prefix><image>`: the repository inside the registry.
    pub fn repository(&self, image: &str) -> String {
        format!("{}{image}", self.prefix)
    }

    /// `<base>/v2/<prefix><image>/tags/list`.
    pub fn tags_url(&self, image: &str) -> String {
        format!("{}/v2/{}{image}/tags/list", self.base, self.prefix)
    }
}

fn is_loopback(host: &str) -> bool {
    let name = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or(bracketed)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    name == "localhost" || name.starts_with("127.") || name == "::1"
}

/// The registry API v2 tag list URL of `image` under `registry`.
pub fn tags_url(registry: &str, image: &str) -> String {
    RegistryAddress::parse(registry).tags_url(image)
}

/// The OCI tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
///
/// Every tag psctl accepts (a flag, a playbook variable, `psctl.yaml`, a recorded canary run)
/// passes here before it reaches a registry URL, a Helm values file or a Kubernetes object, so
/// a tag can never carry Helm, YAML or shell syntax.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "{tag:?} is not a valid image tag: letters, digits, `_`, `.` and `-`, at most 128, \
             not starting with `.` or `-`"
        ))
    }
}

/// [`check_tag`] as a clap value parser, so a bad `--tag` is a usage error (exit 2) before
/// anything runs.
pub fn parse_tag(tag: &str) -> Result<String, String> {
    check_tag(tag).map(|()| tag.to_owned())
}

/// What a tag points at in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManifest {
    /// The manifest's own digest (`Docker-Content-Digest`, checked against the body), what
    /// `image@sha256:…` pulls.
    pub digest: String,
    /// The image configuration digest (`config.digest`); equals the local image ID of the image
    /// that was pushed. `None` for an index (multi-platform list).
    pub config_digest: Option<String>,
    pub media_type: String,
}

impl RemoteManifest {
    /// True when the image with local ID `image_id` is what this manifest describes.
    pub fn matches_image_id(&self, image_id: &str) -> bool {
        self.config_digest.as_deref() == Some(image_id) || self.digest == image_id
    }
}

/// Reads a manifest body whose digest the client has already verified. Pure.
pub fn parse_manifest(body: &[u8], digest: String) -> Result<RemoteManifest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let media_type = value["mediaType"].as_str().unwrap_or_default().to_owned();
    let config_digest = value["config"]["digest"].as_str().map(str::to_owned);
    if config_digest.is_none() && value.get("manifests").is_none() {
        return Err("neither `config.digest` nor `manifests` present".to_owned());
    }
    Ok(RemoteManifest {
        digest,
        config_digest,
        media_type,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry} unreachable while reading {reference}")]
    Unreachable {
        registry: String,
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error(
        "registry {registry} refused to show {reference} (HTTP {status}) to psctl, which read it {access}"
    )]
    Unauthorized {
        registry: String,
        reference: String,
        status: u16,
        /// [`Credentials::describe`]: `anonymously` or where the credential came from.
        access: String,
    },
    #[error("registry {registry} answered {answer} for {reference}")]
    Status {
        registry: String,
        reference: String,
        /// `HTTP 503`, or the distribution error code when only that is known.
        answer: String,
    },
    #[error("registry {registry} sent a manifest psctl cannot read for {reference}: {reason}")]
    Malformed {
        registry: String,
        reference: String,
        reason: String,
    },
    #[error("cannot read the credentials for registry {registry}")]
    Credentials {
        registry: String,
        #[source]
        source: credentials::CredentialError,
    },
    #[error("cannot build the registry client")]
    Client(#[source] OciDistributionError),
}

impl Classify for RegistryError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Unauthorized { .. } | Self::Credentials { .. } | Self::Client(_) => {
                ExitStatus::Usage
            }
            Self::Unreachable { .. } | Self::Status { .. } | Self::Malformed { .. } => {
                ExitStatus::Unreachable
            }
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Unreachable { .. } => {
                vec!["is the registry up? for the sandbox: `psctl-sandbox up`".to_owned()]
            }
            Self::Unauthorized { registry, .. } | Self::Credentials { registry, .. } => {
                let host = RegistryAddress::parse(registry).host;
                vec![format!(
                    "log in as an identity that may pull (and, for `psctl build`, push): `docker login {host}`; psctl reads $DOCKER_CONFIG/config.json (else ~/.docker/config.json) and its credential helpers, as docker does"
                )]
            }
            _ => Vec::new(),
        }
    }
}

/// How the registry answered a manifest request, before the policy reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 404 (`MANIFEST_UNKNOWN`, `NAME_UNKNOWN`): no such tag or repository.
    NotFound,
    /// 401 or 403 (`UNAUTHORIZED`, `DENIED`), or a token service that refused the credential.
    Unauthorized { status: u16 },
    /// No answer: connection refused, DNS, TLS, timeout.
    Unreachable,
    /// Any other HTTP status or distribution error code (5xx, 429...).
    Status(String),
    /// An answer that breaks the protocol: a digest that does not match the body, bad JSON.
    Malformed(String),
}

/// Reads `oci-client`'s error into the registry's answer: the one place that knows how the
/// library reports statuses (an error envelope for a 4xx that has one, a bare status otherwise).
/// Pure.
pub fn answer_of(error: &OciDistributionError) -> Answer {
    match error {
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
            Answer::Unreachable
        }
        OciDistributionError::UnauthorizedError { .. } => Answer::Unauthorized { status: 401 },
        OciDistributionError::AuthenticationFailure(_) => Answer::Unauthorized { status: 401 },
        OciDistributionError::ServerError { code: 404, .. } => Answer::NotFound,
        OciDistributionError::ServerError {
            code: code @ (401 | 403),
            ..
        } => Answer::Unauthorized { status: *code },
        OciDistributionError::ServerError { code, .. } => Answer::Status(format!("HTTP {code}")),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let any = |wanted: &[OciErrorCode]| codes.iter().any(|c| wanted.contains(*c));
            if any(&[
                OciErrorCode::ManifestUnknown,
                OciErrorCode::NameUnknown,
                OciErrorCode::NotFound,
            ]) {
                Answer::NotFound
            } else if any(&[OciErrorCode::Denied]) {
                Answer::Unauthorized { status: 403 }
            } else if any(&[OciErrorCode::Unauthorized]) {
                Answer::Unauthorized { status: 401 }
            } else {
                Answer::Status(
                    codes
                        .iter()
                        // The code as sent (`TOOMANYREQUESTS`, or a registry's own).
                        .map(|c| match serde_json::to_value(c) {
                            Ok(serde_json::Value::String(code)) => code,
                            _ => format!("{c:?}"),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }
        }
        other => Answer::Malformed(other.to_string()),
    }
}

/// The registry client: `oci-client` with the host's Docker credentials.
#[derive(Clone)]
pub struct Registry {
    registry: String,
    address: RegistryAddress,
    credentials: Credentials,
    client: Client,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("registry", &self.registry)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The client for `registry` (`host[:port][/prefix]`), with the credential Docker holds
    /// for its host. Blocking for as long as a credential helper takes.
    pub fn new(registry: &str) -> Result<Self, RegistryError> {
        let address = RegistryAddress::parse(registry);
        let credentials =
            credentials::lookup(&address.host).map_err(|source| RegistryError::Credentials {
                registry: registry.to_owned(),
                source,
            })?;
        Self::with_credentials(registry, credentials)
    }

    /// The client for `registry` with the given credentials.
    pub fn with_credentials(
        registry: &str,
        credentials: Credentials,
    ) -> Result<Self, RegistryError> {
        let address = RegistryAddress::parse(registry);
        let protocol = if address.plain_http() {
            ClientProtocol::HttpsExcept(vec![address.host.clone()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::try_from(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(15)),
            user_agent: concat!("psctl/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        })
        .map_err(RegistryError::Client)?;
        Ok(Self {
            registry: registry.to_owned(),
            address,
            credentials,
            client,
        })
    }

    /// Registers the credential's secret with the output's redactor, so that no message can
    /// show it even if a registry echoed it back.
    pub fn guard(self, redactor: &Redactor) -> Self {
        if let Some(secret) = self.credentials.secret() {
            redactor.register(secret);
        }
        self
    }

    /// `anonymously` or where the credential came from: safe to print.
    pub fn access(&self) -> String {
        self.credentials.describe()
    }

    /// `<registry>/<image>`: the repository as Docker names it.
    pub fn repository(&self, image: &str) -> String {
        format!("{}/{image}", self.registry.trim_end_matches('/'))
    }

    /// What `image:reference` points at, or `None` when the registry does not have it.
    pub async fn manifest(
        &self,
        image: &str,
        reference: &str,
    ) -> Result<Option<RemoteManifest>, RegistryError> {
        let shown = format!("{}:{reference}", self.repository(image));
        let target = Reference::with_tag(
            self.address.host.clone(),
            self.address.repository(image),
            reference.to_owned(),
        );
        let pulled = self
            .client
            .pull_manifest_raw(&target, &self.credentials.auth(), &MANIFEST_MEDIA_TYPES)
            .await;
        let (body, digest) = match pulled {
            Ok(pulled) => pulled,
            Err(error) => {
                return match answer_of(&error) {
                    Answer::NotFound => Ok(None),
                    Answer::Unauthorized { status } => Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        reference: shown,
                        status,
                        access: self.access(),
                    }),
                    Answer::Unreachable => Err(RegistryError::Unreachable {
                        registry: self.registry.clone(),
                        reference: shown,
                        source: error,
                    }),
                    Answer::Status(answer) => Err(RegistryError::Status {
                        registry: self.registry.clone(),
                        reference: shown,
                        answer,
                    }),
                    Answer::Malformed(reason) => Err(RegistryError::Malformed {
                        registry: self.registry.clone(),
                        reference: shown,
                        reason,
                    }),
                };
            }
        };
        parse_manifest(&body, digest)
            .map(Some)
            .map_err(|reason| RegistryError::Malformed {
                registry: self.registry.clone(),
                reference: shown,
                reason,
            })
    }
}

/// What a preflight does with the registry's answer about a tag: the one policy of every
/// command that checks an image before changing anything (deploy, canary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCheck {
    /// The tag exists.
    Present,
    /// The registry says the tag does not exist: the pods would fail with ErrImagePull (exit 1).
    Absent,
    /// The registry refused psctl's identity (none, or a credential it rejects): the cluster
    /// may still pull with its own pull secret, so this is a warning, not a refusal.
    NotVerified,
}

/// The preflight's reading of [`Registry::manifest`]'s answer; any other failure (unreachable,
/// 5xx, an unreadable manifest) is an error the caller reports as exit 3. Pure.
pub fn tag_check(
    answer: Result<Option<RemoteManifest>, RegistryError>,
) -> Result<TagCheck, RegistryError> {
    match answer {
        Ok(Some(_)) => Ok(TagCheck::Present),
        Ok(None) => Ok(TagCheck::Absent),
        Err(RegistryError::Unauthorized { .. }) => Ok(TagCheck::NotVerified),
        Err(error) => Err(error),
    }
}

/// Checks that every `(image, tag)` exists under `registry` before anything changes, printing
/// one check line per image. `None` (no registry configured) skips the check.
pub async fn preflight(
    registry: Option<&str>,
    images: &[(&str, &str)],
    output: &Output,
) -> Result<(), CommandError> {
    let Some(registry) = registry else {
        output.check(
            CheckState::Skip,
            "image tag",
            "no registry configured for the environment",
        );
        return Ok(());
    };
    let client = Registry::new(registry)?.guard(output.redactor());
    for (image, tag) in images {
        let reference = format!("{registry}/{image}:{tag}");
        match tag_check(client.manifest(image, tag).await) {
            Ok(TagCheck::Present) => {
                output.check(CheckState::Ok, "image tag", &format!("{reference} exists"));
            }
            Ok(TagCheck::Absent) => {
                output.check(
                    CheckState::Fail,
                    "image tag",
                    &format!("{reference} is not in the registry: pods would fail with ErrImagePull / ImagePullBackOff"),
                );
                return Err(CommandError::verification(anyhow::anyhow!(
                    "image {reference} does not exist (deploying it would end in ErrImagePull/ImagePullBackOff); nothing was changed"
                ))
                .hint(format!(
                    "build and push it first (`psctl build`), or pick an existing tag; list tags at {}",
                    tags_url(registry, image)
                )));
            }
            Ok(TagCheck::NotVerified) => {
                output.check(
                    CheckState::Warn,
                    "image tag",
                    &format!(
                        "{reference}: the registry refused psctl, which read it {}; not verified (the cluster pulls with its own pull secret)",
                        client.access()
                    ),
                );
            }
            Err(error) => {
                let line = match &error {
                    RegistryError::Unreachable { .. } => format!("registry {registry} unreachable"),
                    other => format!("{reference}: {other}"),
                };
                output.check(CheckState::Fail, "image tag", &line);
                return Err(error.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::OciEnvelope;

    fn envelope(codes: &[&str]) -> OciDistributionError {
        let errors: Vec<serde_json::Value> = codes
            .iter()
            .map(|code| serde_json::json!({"code": code, "message": "m"}))
            .collect();
        OciDistributionError::RegistryError {
            envelope: serde_json::from_value::<OciEnvelope>(serde_json::json!({"errors": errors}))
                .unwrap(),
            url: "u".into(),
        }
    }

    fn server(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "<html>".into(),
        }
    }

    #[test]
    fn every_way_the_client_reports_a_status_is_read_the_same() {
        // Distribution answers 404 with an error envelope; a proxy or CDN answers with none.
        assert_eq!(
            answer_of(&envelope(&["MANIFEST_UNKNOWN"])),
            Answer::NotFound
        );
        assert_eq!(answer_of(&envelope(&["NAME_UNKNOWN"])), Answer::NotFound);
        assert_eq!(answer_of(&server(404)), Answer::NotFound);
        assert_eq!(
            answer_of(&OciDistributionError::UnauthorizedError { url: "u".into() }),
            Answer::Unauthorized { status: 401 }
        );
        assert_eq!(
            answer_of(&envelope(&["DENIED"])),
            Answer::Unauthorized { status: 403 }
        );
        assert_eq!(
            answer_of(&envelope(&["UNAUTHORIZED"])),
            Answer::Unauthorized { status: 401 }
        );
        assert_eq!(
            answer_of(&server(403)),
            Answer::Unauthorized { status: 403 }
        );
        assert_eq!(
            answer_of(&OciDistributionError::AuthenticationFailure("no".into())),
            Answer::Unauthorized { status: 401 }
        );
        assert_eq!(answer_of(&server(503)), Answer::Status("HTTP 503".into()));
        assert_eq!(
            answer_of(&envelope(&["TOOMANYREQUESTS"])),
            Answer::Status("TOOMANYREQUESTS".into())
        );
        assert!(matches!(
            answer_of(&OciDistributionError::SpecViolationError("x".into())),
            Answer::Malformed(_)
        ));
        assert_eq!(
            answer_of(&OciDistributionError::IoError(std::io::Error::other(
                "reset"
            ))),
            Answer::Unreachable
        );
    }

    #[test]
    fn one_policy_reads_every_registry_answer() {
        let (registry, reference) = ("r".to_owned(), "r/i:t".to_owned());
        let manifest = RemoteManifest {
            digest: "sha256:a".into(),
            config_digest: None,
            media_type: "m".into(),
        };
        assert_eq!(tag_check(Ok(Some(manifest))).unwrap(), TagCheck::Present);
        assert_eq!(tag_check(Ok(None)).unwrap(), TagCheck::Absent);
        for status in [401, 403] {
            let answer = Err(RegistryError::Unauthorized {
                registry: registry.clone(),
                reference: reference.clone(),
                status,
                access: "anonymously".into(),
            });
            assert_eq!(tag_check(answer).unwrap(), TagCheck::NotVerified);
        }
        let error = tag_check(Err(RegistryError::Status {
            registry: registry.clone(),
            reference: reference.clone(),
            answer: "HTTP 503".into(),
        }))
        .unwrap_err();
        assert_eq!(error.exit_status(), ExitStatus::Unreachable);
        let error = tag_check(Err(RegistryError::Unreachable {
            registry: registry.clone(),
            reference: reference.clone(),
            source: OciDistributionError::IoError(std::io::Error::other("refused")),
        }))
        .unwrap_err();
        assert_eq!(error.exit_status(), ExitStatus::Unreachable);
        // Outside a preflight (build's overwrite check), a refusal is a configuration error.
        let refused = RegistryError::Unauthorized {
            registry: "127.0.0.1:5000".into(),
            reference,
            status: 401,
            access: "anonymously".into(),
        };
        assert_eq!(refused.exit_status(), ExitStatus::Usage);
        assert!(refused.hints()[0].contains("docker login 127.0.0.1:5000"));
    }

    #[test]
    fn a_credential_never_reaches_a_message() {
        let credentials = Credentials::Basic {
            username: "ci".into(),
            password: secrecy::SecretString::from("hunter2-secret".to_owned()),
            source: "/c/config.json".into(),
        };
        let registry = Registry::with_credentials("127.0.0.1:5000", credentials.clone()).unwrap();
        let error = RegistryError::Unauthorized {
            registry: "127.0.0.1:5000".into(),
            reference: "127.0.0.1:5000/a:b".into(),
            status: 401,
            access: registry.access(),
        };
        for shown in [
            format!("{registry:?}"),
            error.to_string(),
            registry.access(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        let redactor = Redactor::default();
        let _guarded = registry.guard(&redactor);
        assert_eq!(redactor.scrub("echoed hunter2-secret"), "echoed [REDACTED]");
    }

    #[test]
    fn tags_follow_the_oci_grammar() {
        for good in [
            "1.4.2",
            "v1",
            "_x",
            "0123456789ab-dirty-feedc0de-417",
            &"a".repeat(128),
        ] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", &"a".repeat(129), "v1 ", "é"] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_tag_cannot_carry_helm_or_yaml_syntax() {
        // Helm splits `--set` at commas; YAML would read `{`, `:` and newlines.
        for injection in [
            "v1,image.repository=evil/x",
            "v1=2",
            "v1\nrepository: evil",
            "{v1}",
            "v1#x",
            "'v1'",
        ] {
            let error = check_tag(injection).unwrap_err();
            assert!(error.contains("is not a valid image tag"), "{error}");
        }
        assert_eq!(parse_tag("1.4.2").unwrap(), "1.4.2");
    }

    #[test]
    fn loopback_registries_use_http_and_others_https() {
        let loopback = RegistryAddress::parse("127.0.0.1:5000");
        assert!(loopback.plain_http());
        assert_eq!(loopback.host, "127.0.0.1:5000");
        assert!(RegistryAddress::parse("localhost:5000").plain_http());
        assert!(RegistryAddress::parse("[::1]:5000").plain_http());
        let remote = RegistryAddress::parse("registry.example.com");
        assert!(!remote.plain_http());
        assert_eq!(remote.base, "https://registry.example.com");
        // Plain HTTP elsewhere only when written so.
        assert!(RegistryAddress::parse("http://10.0.0.5:5000").plain_http());
        assert!(!RegistryAddress::parse("https://127.0.0.1:5000").plain_http());
        assert_eq!(
            tags_url("http://10.0.0.5:5000/", "a"),
            "http://10.0.0.5:5000/v2/a/tags/list"
        );
    }

    #[test]
    fn a_registry_path_is_a_repository_prefix_not_part_of_the_host() {
        let address = RegistryAddress::parse("ghcr.io/acme");
        assert_eq!(address.host, "ghcr.io");
        assert_eq!(address.repository("app"), "acme/app");
        assert_eq!(
            RegistryAddress::parse("127.0.0.1:5000/team/sub"),
            RegistryAddress {
                host: "127.0.0.1:5000".into(),
                base: "http://127.0.0.1:5000".into(),
                prefix: "team/sub/".into()
            }
        );
    }

    #[test]
    fn a_docker_manifest_yields_its_config_digest() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"sha256:abc"},"layers":[]}"#;
        let manifest = parse_manifest(body, "sha256:def".into()).unwrap();
        assert_eq!(manifest.config_digest.as_deref(), Some("sha256:abc"));
        assert_eq!(manifest.digest, "sha256:def");
        assert!(manifest.matches_image_id("sha256:abc"));
        assert!(!manifest.matches_image_id("sha256:other"));
    }

    #[test]
    fn an_index_is_matched_by_its_own_digest() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let manifest = parse_manifest(body, "sha256:index".into()).unwrap();
        assert!(manifest.config_digest.is_none());
        assert!(manifest.matches_image_id("sha256:index"));
        assert!(parse_manifest(b"{}", "sha256:x".into()).is_err());
        assert!(parse_manifest(b"nope", "sha256:x".into()).is_err());
    }
}
