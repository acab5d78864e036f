//! API errors as the real server reports them: a `metav1.Status` body with the HTTP code, the
//! machine-readable `reason` clients switch on, `details` naming the object, and a message shaped
//! like the real one (`deployments.apps "web" not found`).

use serde_json::{Value, json};

/// One failed request, rendered as a `metav1.Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code, also the Status `code`.
    pub code: u16,
    /// Status `reason` (NotFound, AlreadyExists, Conflict, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Status `details`: name, group, kind (the resource plural, as the real server does).
    pub details: Option<Value>,
    /// `metadata.continue` of the Status: the token an expired list may continue with.
    pub list_continue: Option<String>,
}

/// The qualified resource name used in messages: `deployments.apps`, or `pods` for the core group.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(group: &str, resource: &str, name: &str) -> Value {
    let mut details = json!({ "name": name, "kind": resource });
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    details
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            list_continue: None,
        }
    }

    /// 404 for a named object.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self {
            details: Some(details(group, resource, name)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", qualified(group, resource)),
            )
        }
    }

    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 on create of an existing name.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self {
            details: Some(details(group, resource, name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified(group, resource)),
            )
        }
    }

    /// 409 on an update carrying a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        Self {
            details: Some(details(group, resource, name)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    qualified(group, resource)
                ),
            )
        }
    }

    /// 422 for an object with one or more invalid fields, each `(field, reason, message)`
    /// (`FieldValueInvalid`, `FieldValueForbidden`...), shaped like kube-apiserver's: one cause
    /// reads `<Kind>[.<group>] "<name>" is invalid: <field>: <message>`, more are listed in
    /// brackets, and every one is a `StatusCause` in `details`.
    pub fn invalid_causes(
        kind: &str,
        group: &str,
        name: &str,
        causes: &[(&str, &str, &str)],
    ) -> Self {
        let listed: Vec<String> = causes
            .iter()
            .map(|(field, _, message)| format!("{field}: {message}"))
            .collect();
        let summary = if listed.len() == 1 {
            listed[0].clone()
        } else {
            format!("[{}]", listed.join(", "))
        };
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let mut details = json!({
            "name": name,
            "kind": kind,
            "causes": causes.iter().map(|(field, reason, message)| json!({
                "reason": reason,
                "message": message,
                "field": field,
            })).collect::<Vec<_>>(),
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self {
            details: Some(details),
            ..Self::new(
                422,
                "Invalid",
                format!("{qualified} \"{name}\" is invalid: {summary}"),
            )
        }
    }

    /// 422 for an object that fails validation.
    pub fn invalid(kind: &str, group: &str, name: &str, field: &str, problem: &str) -> Self {
        let mut details = json!({
            "name": name,
            "kind": kind,
            "causes": [{ "reason": "FieldValueInvalid", "message": problem, "field": field }],
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        let qualifier = if group.is_empty() {
            String::new()
        } else {
            format!(".{group}")
        };
        Self {
            details: Some(details),
            ..Self::new(
                422,
                "Invalid",
                format!("{kind}{qualifier} \"{name}\" is invalid: {field}: {problem}"),
            )
        }
    }

    /// 401 for a request without valid credentials (the real body: message and reason both
    /// `Unauthorized`).
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 from the authorizer. `resource` is the qualified resource without its subresource
    /// (`leases.coordination.k8s.io`), empty for a non-resource path; `name` the object's, if the
    /// request names one; `because` the sentence saying who cannot do what.
    pub fn forbidden(group: &str, resource: &str, name: &str, because: &str) -> Self {
        let message = if resource.is_empty() {
            format!("forbidden: {because}")
        } else if name.is_empty() {
            format!("{} is forbidden: {because}", qualified(group, resource))
        } else {
            format!(
                "{} \"{name}\" is forbidden: {because}",
                qualified(group, resource)
            )
        };
        let mut details = json!({ "kind": resource });
        if !name.is_empty() {
            details["name"] = json!(name);
        }
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self {
            details: (!resource.is_empty()).then_some(details),
            ..Self::new(403, "Forbidden", message)
        }
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 415 for a body or patch type the server does not accept.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf; got {content_type}"
            ),
        )
    }

    /// 410 for a watch starting before the retained history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 410 for a continue token whose snapshot was compacted.
    pub fn resource_expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 500 for failures of the server itself or of the pod backend.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 500 with reason `""` (`StatusReasonUnknown`): how kube-apiserver answers an error that
    /// is not a `metav1.Status` of its own, its message the error's text.
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    /// 503 when a backend (pod proxy target) cannot be reached.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        if let Some(token) = &self.list_continue {
            status["metadata"]["continue"] = Value::String(token.clone());
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} ({}): {}",
            self.code, self.reason, self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// The `Status` a successful delete of a whole object returns when the object is gone.
pub fn success_status(group: &str, resource: &str, name: &str, uid: &str) -> Value {
    let mut details = details(group, resource, name);
    details["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_the_real_message_and_shape() {
        let status = ApiError::not_found("apps", "deployments", "web").to_status();
        assert_eq!(status["message"], "deployments.apps \"web\" not found");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["details"]["group"], "apps");
        assert_eq!(status["details"]["kind"], "deployments");
        let core = ApiError::not_found("", "pods", "p").to_status();
        assert_eq!(core["message"], "pods \"p\" not found");
        assert!(core["details"].get("group").is_none());
    }

    #[test]
    fn invalid_names_kind_and_field() {
        let error = ApiError::invalid(
            "Deployment",
            "apps",
            "web",
            "spec.selector",
            "Required value",
        );
        assert_eq!(error.code, 422);
        assert_eq!(
            error.message,
            "Deployment.apps \"web\" is invalid: spec.selector: Required value"
        );
        let core = ApiError::invalid("Pod", "", "p", "spec.containers", "Required value");
        assert_eq!(
            core.message,
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
    }
}
