//! Fault injection for testing clients' error handling: `POST /_sandbox/faults` with
//! `{"path_regex": "...", "method": "GET", "status": 503, "delay_ms": 200, "count": 3}` makes
//! matching requests wait and/or fail; `GET` lists the active faults, `DELETE` clears them.

use std::sync::Mutex;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::status::ApiError;

/// A fault as posted by a test.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultSpec {
    /// Regular expression matched against the request path (without query).
    pub path_regex: String,
    /// Only this HTTP method, if set (case-insensitive).
    #[serde(default)]
    pub method: Option<String>,
    /// Answer with this HTTP status (a `metav1.Status` body) instead of serving the request.
    #[serde(default)]
    pub status: Option<u16>,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Apply to this many requests, then expire; unlimited when absent.
    #[serde(default)]
    pub count: Option<u64>,
}

struct Fault {
    spec: FaultSpec,
    regex: Regex,
    remaining: Option<u64>,
}

/// What to do to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// Delay first.
    pub delay: Option<Duration>,
    /// Then fail with this error, if any.
    pub error: Option<ApiError>,
}

/// The active faults.
#[derive(Default)]
pub struct Faults {
    active: Mutex<Vec<Fault>>,
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        // Each mutation is a single push/retain; a poisoned lock still holds a consistent list.
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a fault; a bad regex or a status outside 100..=599 is a 400.
    pub fn add(&self, spec: FaultSpec) -> Result<(), ApiError> {
        let regex = Regex::new(&spec.path_regex).map_err(|error| {
            ApiError::bad_request(format!("invalid path_regex {:?}: {error}", spec.path_regex))
        })?;
        if let Some(status) = spec.status
            && !(100..=599).contains(&status)
        {
            return Err(ApiError::bad_request(format!(
                "invalid status {status}: use an HTTP status code between 100 and 599"
            )));
        }
        let remaining = spec.count;
        self.lock().push(Fault {
            spec,
            regex,
            remaining,
        });
        Ok(())
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The active faults with their remaining counts.
    pub fn list(&self) -> Vec<FaultSpec> {
        self.lock()
            .iter()
            .map(|fault| FaultSpec {
                count: fault.remaining,
                ..fault.spec.clone()
            })
            .collect()
    }

    /// The injection for a request, consuming one use of the first matching fault.
    pub fn check(&self, method: &str, path: &str) -> Option<Injection> {
        let mut active = self.lock();
        let index = active.iter().position(|fault| {
            fault.regex.is_match(path)
                && fault
                    .spec
                    .method
                    .as_deref()
                    .is_none_or(|wanted| wanted.eq_ignore_ascii_case(method))
                && fault.remaining != Some(0)
        })?;
        let fault = &mut active[index];
        if let Some(remaining) = fault.remaining.as_mut() {
            *remaining -= 1;
        }
        let injection = Injection {
            delay: fault.spec.delay_ms.map(Duration::from_millis),
            error: fault.spec.status.map(|code| ApiError {
                code,
                reason: reason_for(code),
                message: format!("injected fault: {method} {path} answered {code}"),
                details: None,
                list_continue: None,
            }),
        };
        if fault.remaining == Some(0) {
            active.remove(index);
        }
        Some(injection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_match_method_and_path_and_expire_after_count() {
        let faults = Faults::default();
        faults
            .add(FaultSpec {
                path_regex: "/deployments".to_owned(),
                method: Some("get".to_owned()),
                status: Some(503),
                delay_ms: None,
                count: Some(1),
            })
            .expect("valid");
        assert!(
            faults
                .check("PATCH", "/apis/apps/v1/namespaces/default/deployments/web")
                .is_none()
        );
        let injection = faults
            .check("GET", "/apis/apps/v1/namespaces/default/deployments/web")
            .expect("matches");
        assert_eq!(
            injection.error.map(|error| (error.code, error.reason)),
            Some((503, "ServiceUnavailable"))
        );
        assert!(
            faults
                .check("GET", "/apis/apps/v1/namespaces/default/deployments/web")
                .is_none()
        );
        assert!(faults.list().is_empty());
    }

    #[test]
    fn bad_regex_is_rejected() {
        let error = Faults::default()
            .add(FaultSpec {
                path_regex: "(".to_owned(),
                method: None,
                status: None,
                delay_ms: Some(5),
                count: None,
            })
            .expect_err("invalid");
        assert_eq!(error.code, 400);
    }
}
