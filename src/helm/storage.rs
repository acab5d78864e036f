//! Helm's release storage read directly from the cluster: Secrets named
//! `sh.helm.release.v1.<release>.v<revision>` whose `release` key holds base64(gzip(JSON)).
//!
//! [`read_revisions`] is the one place revisions are read from the cluster: one labelled list,
//! read in chunks of [`PAGE_SIZE`] (`limit` and `continue`, as kubectl and client-go's pager
//! read lists), each chunk decoded before the next is asked for.
//! Decoding is pure and works on bytes as the API returns them (the API's own base64 layer is
//! already removed by the client, leaving Helm's inner base64 string). Only the fields psctl shows
//! are extracted; chart values and user values never leave this module because they may hold
//! secrets.

use std::io::Read as _;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectList};
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterError;
use crate::error::{CommandError, ExitStatus};

/// Prefix of Helm's release Secret names (storage driver "secret", format v1).
pub const SECRET_PREFIX: &str = "sh.helm.release.v1.";
/// The label selector Helm puts on its release Secrets.
pub const OWNER_SELECTOR: &str = "owner=helm";

/// Refuses a Helm storage driver other than Secrets (`HELM_DRIVER` unset, empty, `secret` or
/// `secrets`, the spellings Helm itself takes for its default): psctl reads release history
/// from Secrets only, so with ConfigMaps, SQL or memory storage it would see no history, or a
/// stale one, while Helm recorded revisions elsewhere.
pub fn check_driver(driver: Option<&str>) -> Result<(), CommandError> {
    match driver {
        None | Some("" | "secret" | "secrets") => Ok(()),
        Some(other) => Err(CommandError::usage(anyhow::anyhow!(
            "HELM_DRIVER={other:?} is not supported: psctl reads Helm release history from Secrets only"
        ))
        .hint("unset HELM_DRIVER (or set it to `secret`) for psctl and every Helm that manages these releases")),
    }
}

/// The lifecycle states Helm records for a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseStatus {
    Unknown,
    Deployed,
    Uninstalled,
    Superseded,
    Failed,
    Uninstalling,
    PendingInstall,
    PendingUpgrade,
    PendingRollback,
    /// A status this version of psctl does not know; kept verbatim.
    #[serde(untagged)]
    Other(String),
}

impl ReleaseStatus {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Unknown => "unknown",
            Self::Deployed => "deployed",
            Self::Uninstalled => "uninstalled",
            Self::Superseded => "superseded",
            Self::Failed => "failed",
            Self::Uninstalling => "uninstalling",
            Self::PendingInstall => "pending-install",
            Self::PendingUpgrade => "pending-upgrade",
            Self::PendingRollback => "pending-rollback",
            Self::Other(other) => other,
        }
    }

    /// `pending-*`: an operation started and never finished (a killed CI job, usually).
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            Self::PendingInstall | Self::PendingUpgrade | Self::PendingRollback
        )
    }
}

impl std::fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One revision of a release, as `psctl history` shows it. The JSON form is a documented schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revision {
    pub release: String,
    pub revision: u32,
    pub status: ReleaseStatus,
    /// `<chart name>-<chart version>`, like `helm history`.
    pub chart: String,
    pub app_version: String,
    /// The image tag of the release's first container image ("" when none could be found).
    pub image_tag: String,
    /// RFC 3339 time of the last deployment of this revision.
    pub updated: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("release Secret `{secret}` has no `release` key")]
    MissingData { secret: String },
    #[error("release Secret `{secret}`: the payload is not base64")]
    Base64 {
        secret: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("release Secret `{secret}`: cannot decompress the payload")]
    Gzip {
        secret: String,
        #[source]
        source: std::io::Error,
    },
    #[error("release Secret `{secret}`: the payload is not a Helm release")]
    Json {
        secret: String,
        #[source]
        source: serde_json::Error,
    },
}

// Helm's release JSON, reduced to what we read. Unknown fields are ignored on purpose: this is
// someone else's format.
#[derive(Deserialize)]
struct RawRelease {
    name: String,
    #[serde(default)]
    info: RawInfo,
    #[serde(default)]
    chart: Option<RawChart>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    manifest: String,
    version: u32,
}

#[derive(Deserialize, Default)]
struct RawInfo {
    #[serde(default)]
    last_deployed: Option<String>,
    #[serde(default)]
    first_deployed: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    status: Option<ReleaseStatus>,
}

#[derive(Deserialize)]
struct RawChart {
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default)]
    values: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawMetadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default, rename = "appVersion")]
    app_version: String,
}

/// Decodes the `release` value of a Helm release Secret (`payload` = bytes after the API's own
/// base64 layer, i.e. Helm's base64 text).
pub fn decode_release(secret: &str, payload: &[u8]) -> Result<Revision, DecodeError> {
    let compact: Vec<u8> = payload
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|source| DecodeError::Base64 {
            secret: secret.to_owned(),
            source,
        })?;
    // Helm gzips unless the payload was written by a very old client; accept both.
    let json = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| DecodeError::Gzip {
                secret: secret.to_owned(),
                source,
            })?;
        out
    } else {
        bytes
    };
    let raw: RawRelease = serde_json::from_slice(&json).map_err(|source| DecodeError::Json {
        secret: secret.to_owned(),
        source,
    })?;
    Ok(into_revision(raw))
}

fn into_revision(raw: RawRelease) -> Revision {
    let RawRelease {
        name,
        info,
        chart,
        config,
        manifest,
        version,
    } = raw;
    let (chart_label, app_version, chart_values) = match chart {
        Some(RawChart {
            metadata: Some(meta),
            values,
        }) => (
            format!("{}-{}", meta.name, meta.version),
            meta.app_version,
            values,
        ),
        Some(RawChart {
            metadata: None,
            values,
        }) => (String::new(), String::new(), values),
        None => (String::new(), String::new(), None),
    };
    let image_tag = image_tag_from_manifest(&manifest)
        .or_else(|| config.as_ref().and_then(image_tag_from_values))
        .or_else(|| chart_values.as_ref().and_then(image_tag_from_values))
        .unwrap_or_default();
    Revision {
        release: name,
        revision: version,
        status: info.status.unwrap_or(ReleaseStatus::Unknown),
        chart: chart_label,
        app_version,
        image_tag,
        updated: info
            .last_deployed
            .or(info.first_deployed)
            .unwrap_or_default(),
        description: info.description,
    }
}

/// The tag of the first `image:` in a rendered manifest (what actually ran), if any.
fn image_tag_from_manifest(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let rest = line
            .trim_start()
            .trim_start_matches("- ")
            .trim_start()
            .strip_prefix("image:")?;
        let image = rest.trim().trim_matches(|c| c == '"' || c == '\'');
        if image.is_empty() {
            return None;
        }
        Some(tag_of(image))
    })
}

/// `image.tag` from a values tree.
fn image_tag_from_values(values: &serde_json::Value) -> Option<String> {
    match values.get("image")?.get("tag")? {
        serde_json::Value::String(tag) if !tag.is_empty() => Some(tag.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The tag part of an image reference (`latest` when absent, as the runtime assumes).
pub fn tag_of(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let name_start = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[name_start..].rsplit_once(':') {
        Some((_, tag)) => tag.to_owned(),
        None if image.contains('@') => image
            .rsplit_once('@')
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default(),
        None => "latest".to_owned(),
    }
}

/// Parses `sh.helm.release.v1.<release>.v<N>` into `(release, N)`.
pub fn parse_secret_name(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix(SECRET_PREFIX)?;
    let (release, version) = rest.rsplit_once(".v")?;
    Some((release, version.parse().ok()?))
}

/// The Secret name Helm uses for `release` at `revision`.
pub fn secret_name(release: &str, revision: u32) -> String {
    format!("{SECRET_PREFIX}{release}.v{revision}")
}

/// Sorts revisions oldest first (by revision number, per release).
pub fn sort_oldest_first(revisions: &mut [Revision]) {
    revisions.sort_by(|a, b| a.release.cmp(&b.release).then(a.revision.cmp(&b.revision)));
}

/// Release Secrets asked for per list request. Each holds a whole release (chart, values,
/// manifest: tens of KB, up to the 1 MiB a Secret may hold), so one unpaginated list of a long
/// history is tens of MB in one answer; chunks of 100 keep an answer to a few MB while Helm's
/// default history (10 revisions per release) still takes one request.
pub const PAGE_SIZE: u32 = 100;

/// How many times a list whose continue token expired (410 Gone: the server compacted the
/// version the chunks were consistent at) starts again from its first chunk before giving up.
pub const EXPIRED_RESTARTS: u32 = 2;

/// Every revision of `releases`, oldest first, from one labelled list read in chunks.
pub async fn read_revisions(
    client: &kube::Client,
    namespace: &str,
    releases: &[String],
) -> Result<Vec<Revision>, CommandError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let selector = if let [release] = releases {
        format!("{},name={release}", OWNER_SELECTOR)
    } else {
        OWNER_SELECTOR.to_owned()
    };
    let fetch = |token: Option<String>| {
        let mut params = ListParams::default().labels(&selector).limit(PAGE_SIZE);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let api = api.clone();
        async move { api.list(&params).await }
    };
    read_pages(fetch, |secrets| decode_secrets(secrets, releases))
        .await
        .map_err(|error| match error {
            PagedError::Api(error) => ClusterError::api(format!(
                "listing Helm release Secrets in namespace `{namespace}`"
            ))(error)
            .into(),
            PagedError::Decode(error) => error,
        })
        .map(|mut revisions| {
            sort_oldest_first(&mut revisions);
            revisions
        })
}

/// Why a chunked read stopped.
#[derive(Debug)]
pub(crate) enum PagedError {
    Api(kube::Error),
    Decode(CommandError),
}

/// Reads a list chunk by chunk (`fetch(None)` first, then `fetch(Some(continue))` until the
/// server sends no token), decoding each chunk with `decode` before asking for the next, so
/// no more than one chunk's objects are held at once. A 410 on a continued chunk means the
/// consistent version expired: everything read is dropped and the list starts again, at most
/// [`EXPIRED_RESTARTS`] times. Continuing with the inconsistent token the 410 offers could
/// miss or repeat a revision, and a rollback target must come from one consistent history.
pub(crate) async fn read_pages<T, F, Fut>(
    mut fetch: F,
    mut decode: impl FnMut(Vec<Secret>) -> Result<Vec<T>, CommandError>,
) -> Result<Vec<T>, PagedError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<ObjectList<Secret>, kube::Error>>,
{
    let mut restarts = 0;
    'list: loop {
        let mut decoded = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let continued = token.is_some();
            let page = match fetch(token.take()).await {
                Ok(page) => page,
                Err(kube::Error::Api(status))
                    if continued && status.code == 410 && restarts < EXPIRED_RESTARTS =>
                {
                    restarts += 1;
                    continue 'list;
                }
                Err(error) => return Err(PagedError::Api(error)),
            };
            decoded.extend(decode(page.items).map_err(PagedError::Decode)?);
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(decoded),
            }
        }
    }
}

/// Decodes the release Secrets belonging to `releases`, oldest first. Pure.
pub fn decode_secrets(
    secrets: Vec<Secret>,
    releases: &[String],
) -> Result<Vec<Revision>, CommandError> {
    let mut revisions = Vec::new();
    for secret in secrets {
        let Some(name) = secret.metadata.name.as_deref() else {
            continue;
        };
        let Some((release, _)) = parse_secret_name(name) else {
            continue;
        };
        if !releases.iter().any(|r| r == release) {
            continue;
        }
        let payload = secret
            .data
            .as_ref()
            .and_then(|data| data.get("release"))
            .ok_or_else(|| DecodeError::MissingData {
                secret: name.to_owned(),
            })
            .map_err(|e| CommandError::new(ExitStatus::Usage, e))?;
        let revision = decode_release(name, &payload.0).map_err(|e| {
            CommandError::new(ExitStatus::Usage, e)
                .hint("the Secret was not written by Helm 3 or later; inspect it with kubectl")
        })?;
        revisions.push(revision);
    }
    sort_oldest_first(&mut revisions);
    Ok(revisions)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write as _;

    /// Encodes a release JSON the way Helm's secret driver does: gzip, then base64.
    pub(crate) fn encode_like_helm(json: &serde_json::Value) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json.to_string().as_bytes()).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(gz.finish().unwrap())
            .into_bytes()
    }

    pub(crate) fn release_json(
        name: &str,
        version: u32,
        status: &str,
        tag: &str,
    ) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "namespace": "default",
            "version": version,
            "info": {
                "first_deployed": "2026-11-23T09:00:00Z",
                "last_deployed": format!("2026-11-23T10:{version:02}:00Z"),
                "deleted": "",
                "description": if version == 1 { "Install complete".to_owned() } else { "Upgrade complete".to_owned() },
                "status": status,
            },
            "chart": {
                "metadata": {"name": "webhook-worker", "version": "0.1.0", "appVersion": "1.0.0"},
                "values": {"image": {"repository": "127.0.0.1:5000/problemsolver-webhook-worker", "tag": "chart-default"}},
            },
            "config": {"image": {"tag": tag}, "env": {"NOT_SHOWN": "s3cr3t-config-value"}},
            "manifest": format!("---\napiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: worker\n          image: \"127.0.0.1:5000/problemsolver-webhook-worker:{tag}\"\n"),
        })
    }

    #[test]
    fn decodes_a_release_encoded_like_helm() {
        let payload = encode_like_helm(&release_json(
            "problemsolver-webhook",
            3,
            "deployed",
            "1.4.2",
        ));
        let revision =
            decode_release("sh.helm.release.v1.problemsolver-webhook.v3", &payload).unwrap();
        assert_eq!(
            revision,
            Revision {
                release: "problemsolver-webhook".into(),
                revision: 3,
                status: ReleaseStatus::Deployed,
                chart: "webhook-worker-0.1.0".into(),
                app_version: "1.0.0".into(),
                image_tag: "1.4.2".into(),
                updated: "2026-11-23T10:03:00Z".into(),
                description: "Upgrade complete".into(),
            }
        );
        let json = serde_json::to_string(&revision).unwrap();
        assert!(!json.contains("s3cr3t-config-value"));
    }

    /// Payloads written by the real Helm v4 engine (the sandbox's helm CLI): `upgrade --install`
    /// of charts/poller with image tag 1.4.2, then again with 1.4.3; the Secrets' `release` values.
    #[test]
    fn decodes_release_secrets_written_by_the_real_helm_engine() {
        let first = decode_release(
            "sh.helm.release.v1.fixture-release.v1",
            include_bytes!("fixtures/fixture-release.v1.release"),
        )
        .unwrap();
        let second = decode_release(
            "sh.helm.release.v1.fixture-release.v2",
            include_bytes!("fixtures/fixture-release.v2.release"),
        )
        .unwrap();
        let summary = |r: &Revision| {
            (
                r.release.clone(),
                r.revision,
                r.status.clone(),
                r.chart.clone(),
                r.app_version.clone(),
                r.image_tag.clone(),
            )
        };
        assert_eq!(
            summary(&first),
            (
                "fixture-release".into(),
                1,
                ReleaseStatus::Superseded,
                "poller-0.1.0".into(),
                "0.1.0".into(),
                "1.4.2".into()
            )
        );
        assert_eq!(
            summary(&second),
            (
                "fixture-release".into(),
                2,
                ReleaseStatus::Deployed,
                "poller-0.1.0".into(),
                "0.1.0".into(),
                "1.4.3".into()
            )
        );
        assert_eq!(second.description, "Upgrade complete");
        assert!(
            second.updated.starts_with("2026-11-23T11:00:43"),
            "{}",
            second.updated
        );
    }

    #[test]
    fn pending_and_unknown_statuses_survive() {
        let payload = encode_like_helm(&release_json("r", 4, "pending-upgrade", "x"));
        let revision = decode_release("s", &payload).unwrap();
        assert!(revision.status.is_pending());
        let payload = encode_like_helm(&release_json("r", 5, "brand-new-state", "x"));
        assert_eq!(
            decode_release("s", &payload).unwrap().status.as_str(),
            "brand-new-state"
        );
    }

    #[test]
    fn corrupt_payloads_name_the_secret_and_the_layer() {
        let error = decode_release("sh.helm.release.v1.r.v1", b"%%%").unwrap_err();
        assert_eq!(
            error.to_string(),
            "release Secret `sh.helm.release.v1.r.v1`: the payload is not base64"
        );
        let not_gzip = base64::engine::general_purpose::STANDARD.encode([0x1f, 0x8b, 1, 2, 3]);
        assert!(matches!(
            decode_release("s", not_gzip.as_bytes()),
            Err(DecodeError::Gzip { .. })
        ));
        let not_json = base64::engine::general_purpose::STANDARD.encode("{}");
        assert!(matches!(
            decode_release("s", not_json.as_bytes()),
            Err(DecodeError::Json { .. })
        ));
    }

    #[test]
    fn image_tags_are_read_from_references() {
        assert_eq!(tag_of("127.0.0.1:5000/app:1.2"), "1.2");
        assert_eq!(tag_of("reg:5000/team/app:v2@sha256:abc"), "v2");
        assert_eq!(tag_of("127.0.0.1:5000/app"), "latest");
        assert_eq!(tag_of("app:v1@sha256:abc"), "v1");
        assert_eq!(tag_of("app@sha256:abc"), "sha256:abc");
    }

    #[test]
    fn the_tag_falls_back_to_values_without_a_manifest() {
        let mut json = release_json("r", 1, "deployed", "from-config");
        json["manifest"] = serde_json::Value::String(String::new());
        assert_eq!(
            decode_release("s", &encode_like_helm(&json))
                .unwrap()
                .image_tag,
            "from-config"
        );
        json["config"] = serde_json::json!({});
        assert_eq!(
            decode_release("s", &encode_like_helm(&json))
                .unwrap()
                .image_tag,
            "chart-default"
        );
    }

    #[test]
    fn secret_names_round_trip() {
        assert_eq!(
            parse_secret_name(&secret_name("problemsolver-webhook", 12)),
            Some(("problemsolver-webhook", 12))
        );
        assert_eq!(parse_secret_name("sh.helm.release.v1.a.vb"), None);
        assert_eq!(parse_secret_name("other"), None);
    }

    /// One scripted answer: the Secrets' names and the continue token, or an error code.
    type Answer = Result<(Vec<&'static str>, Option<&'static str>), u16>;

    /// A scripted server for [`read_pages`]: each answer in turn, every token asked with.
    struct Pages {
        answers: std::collections::VecDeque<Answer>,
        asked: Vec<Option<String>>,
    }

    fn secret(name: &str) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.to_owned());
        secret
    }

    async fn read(answers: Vec<Answer>) -> (Result<Vec<String>, String>, Vec<Option<String>>) {
        let pages = std::cell::RefCell::new(Pages {
            answers: answers.into(),
            asked: Vec::new(),
        });
        let fetch = |token: Option<String>| {
            let mut pages = pages.borrow_mut();
            pages.asked.push(token);
            let answer = pages.answers.pop_front().expect("no more answers scripted");
            async move {
                match answer {
                    Ok((names, next)) => Ok(ObjectList {
                        types: Default::default(),
                        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta {
                            continue_: next.map(str::to_owned),
                            ..Default::default()
                        },
                        items: names.into_iter().map(secret).collect(),
                    }),
                    Err(code) => Err(kube::Error::Api(Box::new(
                        kube::core::Status::failure("gone", "Expired").with_code(code),
                    ))),
                }
            }
        };
        let decode = |secrets: Vec<Secret>| -> Result<Vec<String>, CommandError> {
            Ok(secrets
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect())
        };
        let result = read_pages(fetch, decode)
            .await
            .map_err(|error| match error {
                PagedError::Api(error) => error.to_string(),
                PagedError::Decode(error) => format!("{error:?}"),
            });
        (result, pages.into_inner().asked)
    }

    #[tokio::test]
    async fn lists_are_read_chunk_by_chunk_until_no_token() {
        let (result, asked) = read(vec![
            Ok((vec!["a", "b"], Some("t1"))),
            Ok((vec!["c", "d"], Some("t2"))),
            Ok((vec!["e"], None)),
        ])
        .await;
        assert_eq!(result.unwrap(), ["a", "b", "c", "d", "e"]);
        assert_eq!(asked, [None, Some("t1".into()), Some("t2".into())]);
    }

    #[tokio::test]
    async fn an_expired_token_starts_the_list_again_from_its_first_chunk() {
        let (result, asked) = read(vec![
            Ok((vec!["a"], Some("t1"))),
            Err(410),
            Ok((vec!["a"], Some("u1"))),
            Ok((vec!["b"], None)),
        ])
        .await;
        assert_eq!(result.unwrap(), ["a", "b"], "nothing read twice");
        assert_eq!(asked, [None, Some("t1".into()), None, Some("u1".into())]);
    }

    #[tokio::test]
    async fn a_list_that_keeps_expiring_gives_up_with_the_410() {
        let mut answers = Vec::new();
        for _ in 0..=EXPIRED_RESTARTS {
            answers.push(Ok((vec!["a"], Some("t"))));
            answers.push(Err(410));
        }
        let (result, asked) = read(answers).await;
        assert!(result.unwrap_err().contains("gone"));
        assert_eq!(asked.len(), 2 * (EXPIRED_RESTARTS as usize + 1));
    }

    #[tokio::test]
    async fn errors_of_a_first_chunk_are_not_retried() {
        let (result, asked) = read(vec![Err(410)]).await;
        assert!(result.is_err());
        assert_eq!(asked, [None]);
    }
}
