//! Kubernetes Events for what psctl changes: every audited action (deploy, rollback, canary
//! step, promotion and abort, kill switch, secrets apply, lock takeover) also appears in
//! `kubectl get events` and `kubectl describe` of the object it changed, written with kube-rs's
//! [`Recorder`] as `events.k8s.io/v1` Events from reporting controller `psctl`.
//!
//! [`publishing`] wraps the command's audit sink: each entry is recorded first (the audit row id
//! goes into the Event's note), then published. What an entry becomes ([`plan`]) and which
//! object it is about ([`regarding_for`]) are pure. An Event that cannot be written is warned
//! about once and never fails the command: the action already happened, and the audit trail is
//! the record that counts. No I/O here other than the API server; no secret enters a note (audit
//! entries are masked, and the note goes through the output redactor).

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::audit::{AuditEntry, AuditError, AuditSink, Receipt, outcome};
use crate::output::Output;
use crate::settings::Environment;

/// The Events' `reportingController`.
pub const REPORTING_CONTROLLER: &str = "psctl";

/// The real API server refuses notes longer than this (characters).
const NOTE_LIMIT: usize = 1024;

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    /// `apps/v1`, `v1`, `coordination.k8s.io/v1`.
    pub api_version: String,
    /// `Deployment`, `Secret`, `Lease`.
    pub kind: String,
    /// Object name.
    pub name: String,
    /// The environment's namespace.
    pub namespace: String,
}

impl Regarding {
    fn new(api_version: &str, kind: &str, name: &str, namespace: &str) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// The reference, with the object's uid when known (`kubectl describe` matches on it).
    pub fn object_reference(&self, uid: Option<String>) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid,
            ..ObjectReference::default()
        }
    }
}

/// The object an audit entry changed: a release or a Deployment name → the component's
/// Deployment, the runtime Secret, the deploy Lease. `None` for targets that are no object of
/// the environment (those get no Event).
pub fn regarding_for(entry: &AuditEntry, environment: &Environment) -> Option<Regarding> {
    let namespace = environment.namespace.as_str();
    let target = entry.target.as_str();
    if entry.action == "lock-takeover" || target == crate::lock::LEASE_NAME {
        return Some(Regarding::new(
            "coordination.k8s.io/v1",
            "Lease",
            target,
            namespace,
        ));
    }
    if entry.action.starts_with("secrets") || target == environment.secret.name {
        return Some(Regarding::new("v1", "Secret", target, namespace));
    }
    environment
        .components
        .iter()
        .find(|component| component.release == target || component.deployment == target)
        .map(|component| Regarding::new("apps/v1", "Deployment", &component.deployment, namespace))
}

/// What an Event says, before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Normal for a success, Warning for a failure, an abort, a rollback or a takeover.
    pub warning: bool,
    /// PascalCase, e.g. `Deployed`, `RolledBack`, `CanaryAborted`, `KillSwitchOn`.
    pub reason: String,
    /// PascalCase action taken, e.g. `Deploy`, `Rollback`, `Canary`, `KillSwitch`.
    pub action: String,
    /// Who, what, from → to, outcome and the audit row.
    pub note: String,
}

fn pascal(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The reason, type and action of an audit entry. Pure.
fn classify(entry: &AuditEntry) -> (bool, String, String) {
    let succeeded = entry.outcome == outcome::SUCCEEDED;
    let action = entry.action.as_str();
    let first_word = action.split([' ', '(']).next().unwrap_or(action);
    match (first_word, entry.outcome.as_str()) {
        ("deploy", outcome::SUCCEEDED) => (false, "Deployed".into(), "Deploy".into()),
        ("deploy", outcome::ROLLED_BACK) => (true, "RolledBack".into(), "Deploy".into()),
        ("deploy", "uninstalled") => (true, "Uninstalled".into(), "Deploy".into()),
        ("deploy", "rollback_failed") => (true, "RollbackFailed".into(), "Deploy".into()),
        ("deploy", _) => (true, "DeployFailed".into(), "Deploy".into()),
        ("rollback", outcome::SUCCEEDED) => (true, "RolledBack".into(), "Rollback".into()),
        ("rollback", "unverified") => (true, "RollbackUnverified".into(), "Rollback".into()),
        ("rollback", _) => (true, "RollbackFailed".into(), "Rollback".into()),
        ("uninstall", outcome::SUCCEEDED) => (true, "Uninstalled".into(), "Uninstall".into()),
        ("uninstall", _) => (true, "UninstallFailed".into(), "Uninstall".into()),
        ("canary", outcome::SUCCEEDED) => (false, "CanaryPromoted".into(), "Canary".into()),
        ("canary", "aborted") => (true, "CanaryAborted".into(), "Canary".into()),
        ("canary", "paused") => (false, "CanaryStepped".into(), "Canary".into()),
        ("canary", "failed") => (true, "CanaryRollbackFailed".into(), "Canary".into()),
        ("kill-switch", _) => {
            let state = action.rsplit(' ').next().unwrap_or_default();
            let reason = format!("KillSwitch{}", pascal(state));
            if succeeded {
                (false, reason, "KillSwitch".into())
            } else {
                (true, format!("{reason}Failed"), "KillSwitch".into())
            }
        }
        ("secrets", outcome::SUCCEEDED) => (false, "SecretsApplied".into(), "SecretsApply".into()),
        ("secrets", _) => (true, "SecretsApplyFailed".into(), "SecretsApply".into()),
        // The previous holder died or went silent in the middle of a change.
        ("lock-takeover", _) => (true, "LockTakenOver".into(), "LockTakeover".into()),
        (_, outcome) => {
            let failed = !succeeded;
            let mut reason = pascal(action);
            if failed {
                reason.push_str(&pascal(outcome));
            }
            (failed, reason, pascal(action))
        }
    }
}

fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The Event for an audit entry and what the sink did with it. Pure.
pub fn plan(entry: &AuditEntry, receipt: Option<&Receipt>) -> Planned {
    let (warning, reason, action) = classify(entry);
    let audit = match receipt.and_then(|receipt| receipt.id) {
        Some(id) => format!("audit #{id}"),
        None => "audit record not written".to_owned(),
    };
    let transition = match (entry.from_state.is_empty(), entry.to_state.is_empty()) {
        (true, true) => String::new(),
        _ => format!(": {} -> {}", entry.from_state, entry.to_state),
    };
    let note = format!(
        "{} by {}{transition} ({}; {audit})",
        entry.action, entry.os_user, entry.outcome
    );
    Planned {
        warning,
        reason: truncate(&reason, 128),
        action: truncate(&action, 128),
        note: truncate(&note, NOTE_LIMIT),
    }
}

/// Sends Events for one environment's namespace; warns once when it cannot.
pub struct Publisher {
    client: kube::Client,
    recorder: Recorder,
    environment: Environment,
    output: Output,
    warned: AtomicBool,
}

impl Publisher {
    pub fn new(client: &kube::Client, environment: &Environment, output: &Output) -> Self {
        Self {
            client: client.clone(),
            // Instance: this host's name (kube-rs falls back to the controller name).
            recorder: Recorder::new(client.clone(), Reporter::from(REPORTING_CONTROLLER)),
            environment: environment.clone(),
            output: output.clone(),
            warned: AtomicBool::new(false),
        }
    }

    /// The uid of the object, if it exists and can be read (best effort: an Event without it is
    /// still listed, only `kubectl describe` matches on it).
    async fn uid_of(&self, regarding: &Regarding) -> Option<String> {
        let (group, version) = regarding
            .api_version
            .split_once('/')
            .unwrap_or(("", regarding.api_version.as_str()));
        let resource =
            ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &regarding.kind));
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &regarding.namespace, &resource);
        api.get_opt(&regarding.name)
            .await
            .ok()
            .flatten()
            .and_then(|object| object.metadata.uid)
    }

    /// Publishes the Event of `entry`, if it is about an object of the environment.
    pub async fn publish(&self, entry: &AuditEntry, receipt: Option<&Receipt>) {
        let Some(regarding) = regarding_for(entry, &self.environment) else {
            return;
        };
        let planned = plan(entry, receipt);
        let uid = self.uid_of(&regarding).await;
        let event = Event {
            type_: if planned.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: planned.reason,
            note: Some(self.output.redactor().scrub(&planned.note).into_owned()),
            action: planned.action,
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &regarding.object_reference(uid))
            .await
            && !self.warned.swap(true, Ordering::SeqCst)
        {
            self.output
                .warn(unwritten(&error, &self.environment.namespace));
        }
    }
}

/// The one warning for Events that could not be written.
fn unwritten(error: &kube::Error, namespace: &str) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "Kubernetes Events are not written: this identity cannot `create events.k8s.io/events` in namespace `{namespace}` (the audit trail is unaffected; `psctl rbac` prints the Role that grants it)"
        ),
        other => {
            format!("a Kubernetes Event was not written: {other} (the audit trail is unaffected)")
        }
    }
}

/// An audit sink that records to `inner`, then publishes the entry's Event.
pub struct EventingAudit {
    inner: Box<dyn AuditSink>,
    publisher: Publisher,
}

impl AuditSink for EventingAudit {
    fn record<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<Receipt, AuditError>> {
        Box::pin(async move {
            let result = self.inner.record(entry).await;
            self.publisher.publish(entry, result.as_ref().ok()).await;
            result
        })
    }
}

/// `sink`, also publishing a Kubernetes Event for every entry about an object of `environment`.
pub fn publishing(
    sink: Box<dyn AuditSink>,
    client: &kube::Client,
    environment: &Environment,
    output: &Output,
) -> Box<dyn AuditSink> {
    Box::new(EventingAudit {
        inner: sink,
        publisher: Publisher::new(client, environment, output),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn environment() -> Environment {
        let text = "environments:\n  prod:\n    kube_context: prod\n    namespace: payments\n";
        crate::settings::file::parse(Path::new("psctl.yaml"), text)
            .unwrap()
            .environments["prod"]
            .clone()
    }

    fn entry(action: &str, target: &str, outcome: &str) -> AuditEntry {
        AuditEntry::new(action, target)
            .transition("revision 4", "revision 5")
            .outcome(outcome)
    }

    #[test]
    fn each_target_maps_to_the_object_it_changed() {
        let environment = environment();
        let deployment = |name: &str| Regarding::new("apps/v1", "Deployment", name, "payments");
        // A release names its component's Deployment.
        assert_eq!(
            regarding_for(
                &entry("deploy", "problemsolver-webhook", "succeeded"),
                &environment
            ),
            Some(deployment("problemsolver-webhook"))
        );
        assert_eq!(
            regarding_for(
                &entry("rollback (helm)", "problemsolver-poller", "succeeded"),
                &environment
            ),
            Some(deployment("problemsolver-poller"))
        );
        // The kill switch names the Deployment itself.
        assert_eq!(
            regarding_for(
                &entry("kill-switch on", "problemsolver-poller", "succeeded"),
                &environment
            ),
            Some(deployment("problemsolver-poller"))
        );
        assert_eq!(
            regarding_for(
                &entry("secrets apply", "problemsolver-secrets", "succeeded"),
                &environment
            ),
            Some(Regarding::new(
                "v1",
                "Secret",
                "problemsolver-secrets",
                "payments"
            ))
        );
        assert_eq!(
            regarding_for(
                &entry("lock-takeover", "psctl-deploy", "succeeded"),
                &environment
            ),
            Some(Regarding::new(
                "coordination.k8s.io/v1",
                "Lease",
                "psctl-deploy",
                "payments"
            ))
        );
        assert_eq!(
            regarding_for(
                &entry("db.restore", "payments_copy", "succeeded"),
                &environment
            ),
            None
        );
    }

    #[test]
    fn a_release_whose_deployment_has_another_name_maps_to_the_deployment() {
        let mut environment = environment();
        environment.components[0].release = "poller-release".into();
        environment.components[0].deployment = "poller-pods".into();
        let regarding = regarding_for(
            &entry("deploy", "poller-release", "succeeded"),
            &environment,
        )
        .unwrap();
        assert_eq!(regarding.name, "poller-pods");
        let reference = regarding.object_reference(Some("u-1".into()));
        assert_eq!(reference.kind.as_deref(), Some("Deployment"));
        assert_eq!(reference.api_version.as_deref(), Some("apps/v1"));
        assert_eq!(reference.namespace.as_deref(), Some("payments"));
        assert_eq!(reference.uid.as_deref(), Some("u-1"));
    }

    fn reason_and_type(action: &str, outcome: &str) -> (String, &'static str) {
        let planned = plan(&entry(action, "problemsolver-webhook", outcome), None);
        (
            planned.reason,
            if planned.warning { "Warning" } else { "Normal" },
        )
    }

    #[test]
    fn successes_are_normal_and_failures_aborts_and_rollbacks_are_warnings() {
        let cases = [
            ("deploy", "succeeded", "Deployed", "Normal"),
            ("deploy", "failed", "DeployFailed", "Warning"),
            ("deploy", "rolled_back", "RolledBack", "Warning"),
            ("deploy", "uninstalled", "Uninstalled", "Warning"),
            ("deploy", "rollback_failed", "RollbackFailed", "Warning"),
            ("rollback (helm)", "succeeded", "RolledBack", "Warning"),
            ("rollback (undo)", "failed", "RollbackFailed", "Warning"),
            (
                "rollback (helm)",
                "unverified",
                "RollbackUnverified",
                "Warning",
            ),
            ("uninstall", "succeeded", "Uninstalled", "Warning"),
            ("uninstall", "failed", "UninstallFailed", "Warning"),
            ("canary", "succeeded", "CanaryPromoted", "Normal"),
            ("canary", "aborted", "CanaryAborted", "Warning"),
            ("canary", "paused", "CanaryStepped", "Normal"),
            ("canary", "failed", "CanaryRollbackFailed", "Warning"),
            ("kill-switch on", "succeeded", "KillSwitchOn", "Normal"),
            ("kill-switch off", "succeeded", "KillSwitchOff", "Normal"),
            ("kill-switch on", "failed", "KillSwitchOnFailed", "Warning"),
            ("secrets apply", "succeeded", "SecretsApplied", "Normal"),
            ("secrets apply", "failed", "SecretsApplyFailed", "Warning"),
            ("lock-takeover", "succeeded", "LockTakenOver", "Warning"),
            ("playbook step", "refused", "PlaybookStepRefused", "Warning"),
        ];
        for (action, outcome, reason, kind) in cases {
            assert_eq!(
                reason_and_type(action, outcome),
                (reason.to_owned(), kind),
                "{action} {outcome}"
            );
        }
    }

    #[test]
    fn the_note_names_the_operator_the_transition_and_the_audit_row() {
        let recorded = Receipt {
            id: Some(42),
            hash: None,
        };
        let planned = plan(
            &entry("deploy", "problemsolver-webhook", "succeeded"),
            Some(&recorded),
        );
        assert_eq!(planned.action, "Deploy");
        assert_eq!(
            planned.note,
            format!(
                "deploy by {}: revision 4 -> revision 5 (succeeded; audit #42)",
                crate::lock::identity()
            )
        );
        let unrecorded = plan(&entry("deploy", "x", "succeeded"), None);
        assert!(
            unrecorded
                .note
                .ends_with("(succeeded; audit record not written)"),
            "{}",
            unrecorded.note
        );
    }

    #[test]
    fn notes_stay_within_what_the_api_server_accepts() {
        let long = AuditEntry::new("deploy", "x").transition("a".repeat(2000), "b");
        let planned = plan(&long, None);
        assert_eq!(planned.note.chars().count(), NOTE_LIMIT);
        assert!(planned.note.ends_with('…'));
    }

    #[test]
    fn a_refused_write_names_the_missing_permission() {
        let status = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
        let text = unwritten(&kube::Error::Api(status.boxed()), "payments");
        assert!(
            text.contains("cannot `create events.k8s.io/events` in namespace `payments`"),
            "{text}"
        );
    }
}
