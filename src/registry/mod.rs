//! Container registries over the distribution HTTP API v2: where a manifest lives, and what a
//! tag currently points at (its manifest digest and image configuration digest).
//!
//! Shared by `deploy` and `canary` ([`preflight`]: the tag must exist) and `build` (a tag must
//! never be overwritten with other content): one client, one policy for 401/403/404/5xx. Anonymous access only; loopback registries are spoken to over plain HTTP.

use std::time::Duration;

use crate::error::{Classify, CommandError, ExitStatus};
use crate::output::{CheckState, Output};

/// Every manifest media type psctl accepts, most specific first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A registry address split into the HTTP base and the repository prefix: `ghcr.io/acme` is
/// the host `ghcr.io` with every repository under `acme/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAddress {
    /// `http://127.0.0.1:5000` or `https://ghcr.io`.
    pub base: String,
    /// `acme/` or empty.
    pub prefix: String,
}

impl RegistryAddress {
    /// Parses `host[:port][/prefix]`, optionally with an explicit `http://` or `https://`.
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
            base: format!("{scheme}://{host}"),
            prefix,
        }
    }

    /// `<base>/v2/<prefix><image>/manifests/<reference>`.
    pub fn manifest_url(&self, image: &str, reference: &str) -> String {
        format!(
            "{}/v2/{}{image}/manifests/{reference}",
            self.base, self.prefix
        )
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

/// The registry API v2 manifest URL of `image:tag` under `registry`.
pub fn manifest_url(registry: &str, image: &str, tag: &str) -> String {
    RegistryAddress::parse(registry).manifest_url(image, tag)
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
    /// The manifest's own digest (`Docker-Content-Digest`), what `image@sha256:…` pulls.
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

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry} unreachable while reading {url}")]
    Unreachable {
        registry: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "registry {registry} needs credentials for {url} (HTTP {status}); psctl reads registries anonymously"
    )]
    Unauthorized {
        registry: String,
        url: String,
        status: u16,
    },
    #[error("registry {registry} answered HTTP {status} for {url}")]
    Status {
        registry: String,
        url: String,
        status: u16,
    },
    #[error("registry {registry} sent a manifest psctl cannot read at {url}: {reason}")]
    Malformed {
        registry: String,
        url: String,
        reason: String,
    },
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl Classify for RegistryError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Unauthorized { .. } | Self::Client(_) => ExitStatus::Usage,
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
            Self::Unauthorized { .. } => vec![
                "grant anonymous pull on the repository, or use a registry psctl can read without credentials".to_owned(),
            ],
            _ => Vec::new(),
        }
    }
}

/// A small anonymous registry client.
#[derive(Debug, Clone)]
pub struct Registry {
    registry: String,
    address: RegistryAddress,
    http: reqwest::Client,
}

impl Registry {
    pub fn new(registry: &str) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(RegistryError::Client)?;
        Ok(Self {
            registry: registry.to_owned(),
            address: RegistryAddress::parse(registry),
            http,
        })
    }

    /// `<registry>/<image>`: the repository as Docker names it.
    pub fn repository(&self, image: &str) -> String {
        format!("{}/{image}", self.registry.trim_end_matches('/'))
    }

    /// Checks that the registry answers its API root (`/v2/`); 401 counts as answering.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.address.base);
        let response =
            self.http
                .get(&url)
                .send()
                .await
                .map_err(|source| RegistryError::Unreachable {
                    registry: self.registry.clone(),
                    url: url.clone(),
                    source,
                })?;
        match response.status().as_u16() {
            200 | 401 => Ok(()),
            status => Err(RegistryError::Status {
                registry: self.registry.clone(),
                url,
                status,
            }),
        }
    }

    /// What `image:reference` points at, or `None` when the registry does not have it.
    pub async fn manifest(
        &self,
        image: &str,
        reference: &str,
    ) -> Result<Option<RemoteManifest>, RegistryError> {
        let url = self.address.manifest_url(image, reference);
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                registry: self.registry.clone(),
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 => return Ok(None),
            401 | 403 => {
                return Err(RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    url,
                    status,
                });
            }
            _ => {
                return Err(RegistryError::Status {
                    registry: self.registry.clone(),
                    url,
                    status,
                });
            }
        }
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .bytes()
            .await
            .map_err(|source| RegistryError::Unreachable {
                registry: self.registry.clone(),
                url: url.clone(),
                source,
            })?;
        parse_manifest(&body, header_digest)
            .map(Some)
            .map_err(|reason| RegistryError::Malformed {
                registry: self.registry.clone(),
                url,
                reason,
            })
    }
}

/// Reads a manifest body. The digest is the registry's header when sent, else the SHA-256 of
/// the body (which is how the registry computes it). Pure.
pub fn parse_manifest(
    body: &[u8],
    header_digest: Option<String>,
) -> Result<RemoteManifest, String> {
    use sha2::Digest as _;
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let media_type = value["mediaType"].as_str().unwrap_or_default().to_owned();
    let config_digest = value["config"]["digest"].as_str().map(str::to_owned);
    if config_digest.is_none() && value.get("manifests").is_none() {
        return Err("neither `config.digest` nor `manifests` present".to_owned());
    }
    let digest = header_digest
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(sha2::Sha256::digest(body))));
    Ok(RemoteManifest {
        digest,
        config_digest,
        media_type,
    })
}

/// What a preflight does with the registry's answer about a tag: the one policy of every
/// command that checks an image before changing anything (deploy, canary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCheck {
    /// The tag exists.
    Present,
    /// The registry says the tag does not exist: the pods would fail with ErrImagePull (exit 1).
    Absent,
    /// The registry wants credentials psctl does not have: the cluster may still pull it with
    /// its own pull secret, so this is a warning, not a refusal.
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
    let client = Registry::new(registry)?;
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
                    &format!("{reference}: the registry needs credentials psctl does not have; not verified"),
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

    #[test]
    fn one_policy_reads_every_registry_answer() {
        let (registry, url) = ("r".to_owned(), "u".to_owned());
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
                url: url.clone(),
                status,
            });
            assert_eq!(tag_check(answer).unwrap(), TagCheck::NotVerified);
        }
        let error = tag_check(Err(RegistryError::Status {
            registry,
            url,
            status: 503,
        }))
        .unwrap_err();
        assert_eq!(error.exit_status(), ExitStatus::Unreachable);
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
        assert_eq!(
            manifest_url("127.0.0.1:5000", "problemsolver-poller", "1.0"),
            "http://127.0.0.1:5000/v2/problemsolver-poller/manifests/1.0"
        );
        assert_eq!(
            manifest_url("localhost:5000", "a", "b"),
            "http://localhost:5000/v2/a/manifests/b"
        );
        assert_eq!(
            manifest_url("registry.example.com", "a", "b"),
            "https://registry.example.com/v2/a/manifests/b"
        );
        assert_eq!(
            tags_url("http://10.0.0.5:5000/", "a"),
            "http://10.0.0.5:5000/v2/a/tags/list"
        );
    }

    #[test]
    fn a_registry_path_is_a_repository_prefix_not_part_of_the_host() {
        assert_eq!(
            manifest_url("ghcr.io/acme", "app", "v1"),
            "https://ghcr.io/v2/acme/app/manifests/v1"
        );
        assert_eq!(
            RegistryAddress::parse("127.0.0.1:5000/team/sub"),
            RegistryAddress {
                base: "http://127.0.0.1:5000".into(),
                prefix: "team/sub/".into()
            }
        );
    }

    #[test]
    fn a_docker_manifest_yields_its_config_digest() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"sha256:abc"},"layers":[]}"#;
        let manifest = parse_manifest(body, Some("sha256:def".into())).unwrap();
        assert_eq!(manifest.config_digest.as_deref(), Some("sha256:abc"));
        assert_eq!(manifest.digest, "sha256:def");
        assert!(manifest.matches_image_id("sha256:abc"));
        assert!(!manifest.matches_image_id("sha256:other"));
    }

    #[test]
    fn without_the_header_the_digest_is_the_body_hash() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let manifest = parse_manifest(body, None).unwrap();
        assert!(manifest.config_digest.is_none());
        use sha2::Digest as _;
        let expected = format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)));
        assert_eq!(manifest.digest, expected);
        assert!(manifest.matches_image_id(&expected));
        assert!(parse_manifest(b"{}", None).is_err());
        assert!(parse_manifest(b"nope", None).is_err());
    }
}
