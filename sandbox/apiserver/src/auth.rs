//! Authentication: who sent a request. Bearer tokens only, as kube-apiserver with
//! `--anonymous-auth` limited to the health endpoints: the sandbox administrator's static token
//! (user `sandbox-admin` in `system:masters`, what `psctl-sandbox env` hands out) and ServiceAccount
//! tokens issued through the TokenRequest subresource (`serviceaccounts/{name}/token`).
//!
//! Tokens are secrets: nothing here logs or formats one, and [`UserInfo`] never holds one.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use http::HeaderMap;
use serde_json::{Value, json};

use crate::status::ApiError;

/// The sandbox administrator's user name.
pub const ADMIN_USER: &str = "sandbox-admin";
/// The group every request of it bypasses authorization with, as on a real cluster.
pub const MASTERS_GROUP: &str = "system:masters";
/// Every authenticated identity belongs to it.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The anonymous identity's group.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The paths an unauthenticated request may reach (as the AuthenticationConfiguration
/// `anonymous.conditions` of a hardened cluster): everything else answers 401.
pub const ANONYMOUS_PATHS: [&str; 4] = ["/healthz", "/livez", "/readyz", "/version"];

/// Default lifetime of a requested token, and the shortest one the real server accepts.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The audience tokens are issued for when the request names none.
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// A pod-bound token requested for exactly this long (what a kubelet asks for its projected
/// volume) is valid for [`EXTENDED_EXPIRATION_SECONDS`] while the answer still says this
/// (`--service-account-extend-token-expiration`, on by default), so a kubelet that is late to
/// rotate breaks nothing.
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// One year: the extended lifetime.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 24 * 365 * 60 * 60;

/// The identity of a request, as authorization sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// `sandbox-admin`, `system:serviceaccount:NS:NAME` or `system:anonymous`.
    pub name: String,
    /// UID of the ServiceAccount (empty for the others).
    pub uid: String,
    /// Groups, `system:authenticated` included for every authenticated identity.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The sandbox administrator.
    pub fn admin() -> Self {
        Self {
            name: ADMIN_USER.to_owned(),
            uid: String::new(),
            groups: vec![MASTERS_GROUP.to_owned(), AUTHENTICATED_GROUP.to_owned()],
        }
    }

    /// The identity of a request without credentials, on the paths that allow one.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".to_owned(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.to_owned()],
        }
    }

    /// A ServiceAccount's identity.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            name: service_account_user(namespace, name),
            uid: uid.to_owned(),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED_GROUP.to_owned(),
            ],
        }
    }

    /// Whether the identity is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|member| member == group)
    }

    /// The `status.userInfo` of a SelfSubjectReview.
    pub fn to_json(&self) -> Value {
        let mut info = json!({ "username": self.name, "groups": self.groups });
        if !self.uid.is_empty() {
            info["uid"] = json!(self.uid);
        }
        info
    }
}

/// `system:serviceaccount:NS:NAME`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// A token issued through TokenRequest: bound to one ServiceAccount object (by UID, so it dies
/// with it), and to a pod when the request named one, until it expires.
#[derive(Debug, Clone)]
struct BoundToken {
    namespace: String,
    name: String,
    uid: String,
    pod: Option<BoundPod>,
    expires: DateTime<Utc>,
}

/// The pod a token is bound to (`boundObjectRef` of kind Pod): the token dies with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    /// The pod's name (in the ServiceAccount's namespace).
    pub name: String,
    /// The pod's UID when the token was issued: a pod recreated under the name is another pod.
    pub uid: String,
}

/// The server's credentials: the administrator's token and the issued ServiceAccount tokens.
pub struct Authenticator {
    admin_token: String,
    issued: Mutex<HashMap<String, BoundToken>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Authenticator")
            .field("admin_token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// What a credential resolved to, before the ServiceAccount it names is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// No `Authorization` header.
    None,
    /// The administrator.
    Admin,
    /// An issued token of this ServiceAccount (namespace, name, UID it was bound to).
    ServiceAccount {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// UID of the object the token was issued for.
        uid: String,
        /// The pod the token is bound to, if any.
        pod: Option<BoundPod>,
    },
}

/// A random token: 32 bytes from two v4 UUIDs, hex.
pub fn random_token() -> String {
    let mut token = String::with_capacity(64);
    for _ in 0..2 {
        token.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    token
}

/// Compares without stopping at the first difference, so timing says nothing about a token.
fn same_secret(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

impl Authenticator {
    /// An authenticator accepting `admin_token` for the administrator.
    pub fn new(admin_token: String) -> Self {
        Self {
            admin_token,
            issued: Mutex::new(HashMap::new()),
        }
    }

    fn issued(&self) -> std::sync::MutexGuard<'_, HashMap<String, BoundToken>> {
        self.issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves the request's bearer token. A header that is present but not a known, unexpired
    /// bearer token is a 401, as the real server answers.
    pub fn credential(&self, headers: &HeaderMap) -> Result<Credential, ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(Credential::None);
        };
        let text = value.to_str().map_err(|_| ApiError::unauthorized())?;
        let (scheme, token) = text.split_once(' ').ok_or_else(ApiError::unauthorized)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ApiError::unauthorized());
        }
        if same_secret(token, &self.admin_token) {
            return Ok(Credential::Admin);
        }
        let mut issued = self.issued();
        let now = Utc::now();
        issued.retain(|_, bound| bound.expires > now);
        let bound = issued.get(token).ok_or_else(ApiError::unauthorized)?;
        Ok(Credential::ServiceAccount {
            namespace: bound.namespace.clone(),
            name: bound.name.clone(),
            uid: bound.uid.clone(),
            pod: bound.pod.clone(),
        })
    }

    /// Issues a token for the ServiceAccount `namespace/name` (object UID `uid`), bound to `pod`
    /// when the request's `boundObjectRef` named one (the caller checked it), answering the
    /// TokenRequest `request` with its status filled in.
    pub fn issue(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        pod: Option<BoundPod>,
        request: &Value,
    ) -> Result<Value, ApiError> {
        let seconds = match request.pointer("/spec/expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
            Some(value) => value.as_i64().ok_or_else(|| {
                ApiError::bad_request("spec.expirationSeconds must be an integer")
            })?,
        };
        if seconds < MIN_EXPIRATION_SECONDS {
            return Err(ApiError::invalid(
                "TokenRequest",
                "authentication.k8s.io",
                name,
                "spec.expirationSeconds",
                "Invalid value: may not specify a duration less than 10 minutes",
            ));
        }
        if seconds > 1 << 32 {
            return Err(ApiError::invalid(
                "TokenRequest",
                "authentication.k8s.io",
                name,
                "spec.expirationSeconds",
                "Invalid value: may not specify a duration larger than 2^32 seconds",
            ));
        }
        let audiences = request
            .pointer("/spec/audiences")
            .and_then(Value::as_array)
            .filter(|list| !list.is_empty())
            .cloned()
            .unwrap_or_else(|| vec![json!(DEFAULT_AUDIENCE)]);
        let now = Utc::now();
        let extended = pod.is_some()
            && seconds == WARN_ONLY_EXPIRATION_SECONDS
            && audiences
                .iter()
                .all(|audience| audience.as_str() == Some(DEFAULT_AUDIENCE));
        let valid_for = if extended {
            EXTENDED_EXPIRATION_SECONDS
        } else {
            seconds
        };
        let expires = now + Duration::seconds(seconds);
        let token = random_token();
        self.issued().insert(
            token.clone(),
            BoundToken {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: uid.to_owned(),
                pod,
                expires: now + Duration::seconds(valid_for),
            },
        );
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            },
            "spec": {
                "audiences": audiences,
                "expirationSeconds": seconds,
                "boundObjectRef": request.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null),
            },
            "status": {
                "token": token,
                "expirationTimestamp": expires.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
        headers
    }

    #[test]
    fn admin_token_and_issued_tokens_resolve_and_others_are_401() {
        let authenticator = Authenticator::new("admin-secret".to_owned());
        assert_eq!(
            authenticator.credential(&HeaderMap::new()),
            Ok(Credential::None)
        );
        assert_eq!(
            authenticator.credential(&bearer("admin-secret")),
            Ok(Credential::Admin)
        );
        let wrong = authenticator
            .credential(&bearer("admin-secreT"))
            .expect_err("wrong token");
        assert_eq!((wrong.code, wrong.reason), (401, "Unauthorized"));
        let mut basic = HeaderMap::new();
        basic.insert(
            http::header::AUTHORIZATION,
            "Basic YTpi".parse().expect("header"),
        );
        assert_eq!(
            authenticator.credential(&basic).map_err(|error| error.code),
            Err(401)
        );

        let answer = authenticator
            .issue("team", "deployer", "uid-1", None, &json!({ "spec": {} }))
            .expect("issued");
        assert_eq!(answer["kind"], "TokenRequest");
        assert_eq!(answer["spec"]["expirationSeconds"], 3600);
        assert_eq!(answer["spec"]["audiences"], json!([DEFAULT_AUDIENCE]));
        let token = answer["status"]["token"].as_str().expect("token");
        assert_eq!(
            authenticator.credential(&bearer(token)),
            Ok(Credential::ServiceAccount {
                namespace: "team".to_owned(),
                name: "deployer".to_owned(),
                uid: "uid-1".to_owned(),
                pod: None,
            })
        );
    }

    #[test]
    fn short_expirations_are_refused_like_the_real_server() {
        let authenticator = Authenticator::new(random_token());
        let error = authenticator
            .issue(
                "team",
                "deployer",
                "uid",
                None,
                &json!({ "spec": { "expirationSeconds": 60 } }),
            )
            .expect_err("too short");
        assert_eq!(error.code, 422);
        assert!(error.message.contains("less than 10 minutes"));
    }

    #[test]
    fn a_kubelet_request_for_a_pod_is_extended_but_reported_as_asked() {
        let authenticator = Authenticator::new(random_token());
        let pod = BoundPod {
            name: "job-x".to_owned(),
            uid: "pod-uid".to_owned(),
        };
        let request = json!({ "spec": { "expirationSeconds": 3607,
            "boundObjectRef": { "apiVersion": "v1", "kind": "Pod", "name": "job-x", "uid": "pod-uid" } } });
        let answer = authenticator
            .issue("team", "ci", "sa-uid", Some(pod.clone()), &request)
            .expect("issued");
        assert_eq!(answer["spec"]["expirationSeconds"], 3607);
        assert_eq!(answer["spec"]["boundObjectRef"]["name"], "job-x");
        let reported = DateTime::parse_from_rfc3339(
            answer["status"]["expirationTimestamp"]
                .as_str()
                .expect("timestamp"),
        )
        .expect("RFC 3339");
        let in_an_hour = (reported.with_timezone(&Utc) - Utc::now()).num_seconds();
        assert!((3590..=3607).contains(&in_an_hour), "{in_an_hour}");
        let token = answer["status"]["token"].as_str().expect("token");
        let kept = authenticator.issued().get(token).expect("kept").expires;
        assert!((kept - Utc::now()).num_days() >= 364);
        assert_eq!(
            authenticator.credential(&bearer(token)),
            Ok(Credential::ServiceAccount {
                namespace: "team".to_owned(),
                name: "ci".to_owned(),
                uid: "sa-uid".to_owned(),
                pod: Some(pod),
            })
        );
        // Not bound to a pod, or another lifetime: valid exactly as long as it says.
        let unbound = authenticator
            .issue("team", "ci", "sa-uid", None, &request)
            .expect("issued");
        let token = unbound["status"]["token"].as_str().expect("token");
        let kept = authenticator.issued().get(token).expect("kept").expires;
        assert!((kept - Utc::now()).num_seconds() <= 3607);
    }

    #[test]
    fn service_account_identity_has_the_real_groups() {
        let user = UserInfo::service_account("team", "deployer", "u");
        assert_eq!(user.name, "system:serviceaccount:team:deployer");
        assert_eq!(
            user.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:team",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn debug_output_hides_the_admin_token() {
        let text = format!("{:?}", Authenticator::new("super-secret".to_owned()));
        assert!(!text.contains("super-secret"), "{text}");
    }
}
