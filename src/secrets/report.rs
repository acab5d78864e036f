//! What `psctl secrets apply` and `psctl secrets check` print: key names, changes, length
//! classes and keyed fingerprints, never a value; and the audit note of an apply. Pure.

use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;

use super::{APPLIED_AT_ANNOTATION, Change, Diff, KeyDiff, KeyStatus};
use crate::audit::note::AuditNote;
use crate::output::{Render, Style, table};
use crate::settings::Environment;

/// What `apply` prints: the diff by key name, never a value.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub environment: String,
    pub namespace: String,
    pub secret: String,
    pub dry_run: bool,
    /// `created`, `updated`, `unchanged`, or `would create` / `would update` under --dry-run.
    pub action: String,
    /// The whole Secret's fingerprint after the change (what `deploy` puts on the pod template).
    pub fingerprint: String,
    /// The fingerprints were made with a throwaway key (dry run, no key stored yet).
    pub ephemeral_fingerprint_key: bool,
    pub keys: Vec<KeyDiff>,
}

impl Render for ApplyReport {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = format!(
            "Secret `{}` in `{}` ({}): {}, fingerprint {}\n",
            self.secret, self.namespace, self.environment, self.action, self.fingerprint
        );
        text.push_str(&table::render(
            &["KEY", "REQUIRED", "CHANGE", "LENGTH", "FINGERPRINT"],
            self.keys.iter().map(|k| {
                let fingerprint = match (&k.old_fingerprint, &k.new_fingerprint) {
                    (Some(old), Some(new)) if old != new => format!("{old} -> {new}"),
                    (_, Some(new)) => new.clone(),
                    (Some(old), None) => format!("{old} -> -"),
                    (None, None) => "-".to_owned(),
                };
                [
                    k.key.clone(),
                    if k.required { "yes" } else { "no" }.to_owned(),
                    k.change.name().to_owned(),
                    k.length.unwrap_or("-").to_owned(),
                    fingerprint,
                ]
            }),
        ));
        text
    }
}

/// What an apply does, as its report says: `created`, `updated`, `unchanged`, or `would
/// create` / `would update` under `--dry-run`. Pure.
pub fn apply_action(exists: bool, changes: bool, dry_run: bool) -> &'static str {
    match (exists, changes, dry_run) {
        (true, false, _) => "unchanged",
        (false, _, true) => "would create",
        (true, _, true) => "would update",
        (false, _, false) => "created",
        (true, _, false) => "updated",
    }
}

/// The audit record of an apply: fingerprints and key names, never a value.
pub fn apply_note(
    environment: &Environment,
    old_fingerprint: Option<String>,
    report: &ApplyReport,
    diff: &Diff,
    outcome: &str,
) -> AuditNote {
    AuditNote {
        action: "secrets apply".to_owned(),
        target: report.secret.clone(),
        from_state: old_fingerprint
            .map_or_else(|| "absent".to_owned(), |f| format!("fingerprint {f}")),
        to_state: format!("fingerprint {}", report.fingerprint),
        outcome: outcome.to_owned(),
        details: serde_json::json!({
            "namespace": environment.namespace,
            "added": diff.names(Change::Added),
            "changed": diff.names(Change::Changed),
            "removed": diff.names(Change::Removed),
        }),
    }
}

/// Keys named with why they cannot be used, for messages.
pub fn describe_unusable(keys: &[KeyStatus]) -> String {
    keys.iter()
        .map(|k| format!("{} ({})", k.key, k.state.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `check` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub environment: String,
    pub namespace: String,
    pub secret: String,
    pub exists: bool,
    /// When the Secret last changed (RFC 3339), and how that was learnt.
    pub last_changed: Option<String>,
    /// `psctl.io/applied-at`, `managedFields`, or `creationTimestamp`.
    pub last_changed_source: Option<String>,
    pub last_changed_by: Option<String>,
    pub fingerprint: Option<String>,
    pub keys: Vec<KeyStatus>,
}

impl Render for CheckReport {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = if self.exists {
            format!(
                "Secret `{}` in `{}` ({}): last changed {}{}{}\n",
                self.secret,
                self.namespace,
                self.environment,
                self.last_changed.as_deref().unwrap_or("at an unknown time"),
                self.last_changed_source
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default(),
                self.last_changed_by
                    .as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default(),
            )
        } else {
            format!(
                "Secret `{}` does not exist in `{}` ({})\n",
                self.secret, self.namespace, self.environment
            )
        };
        text.push_str(&table::render(
            &[
                "KEY",
                "REQUIRED",
                "STATE",
                "READ BY",
                "LENGTH",
                "FINGERPRINT",
            ],
            self.keys.iter().map(|k| {
                [
                    k.key.clone(),
                    if k.required { "yes" } else { "no" }.to_owned(),
                    k.state.name().to_owned(),
                    k.read_by.unwrap_or("-").to_owned(),
                    k.length.unwrap_or("-").to_owned(),
                    k.fingerprint.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            }),
        ));
        text
    }
}

/// When the Secret last changed: psctl's own annotation, else the newest managedFields entry,
/// else its creation. Pure.
pub fn last_changed(secret: &Secret) -> Option<(String, String)> {
    let annotations = secret.metadata.annotations.as_ref();
    if let Some(at) = annotations.and_then(|a| a.get(APPLIED_AT_ANNOTATION)) {
        return Some((at.clone(), APPLIED_AT_ANNOTATION.to_owned()));
    }
    let newest = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .max();
    if let Some(time) = newest {
        return Some((time.to_string(), "managedFields".to_owned()));
    }
    secret
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| (t.0.to_string(), "creationTimestamp".to_owned()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_apply_table_shows_names_changes_and_fingerprints_only() {
        let report = ApplyReport {
            environment: "sandbox".into(),
            namespace: "default".into(),
            secret: "problemsolver-secrets".into(),
            dry_run: true,
            action: "would update".into(),
            fingerprint: "00112233aabbccdd".into(),
            ephemeral_fingerprint_key: false,
            keys: vec![KeyDiff {
                key: "BINANCE_API_KEY".into(),
                change: Change::Changed,
                required: true,
                length: Some("32-63"),
                old_fingerprint: Some("aaaaaaaaaaaa".into()),
                new_fingerprint: Some("bbbbbbbbbbbb".into()),
            }],
        };
        let text = report.render_table(&Style::PLAIN);
        assert!(text.starts_with("Secret `problemsolver-secrets` in `default` (sandbox): would update, fingerprint 00112233aabbccdd\n"), "{text}");
        assert!(text.contains("aaaaaaaaaaaa -> bbbbbbbbbbbb"), "{text}");
        assert!(text.contains("changed"), "{text}");
    }

    #[test]
    fn last_changed_prefers_psctls_annotation_then_managed_fields() {
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "managedFields": [{"manager": "kubectl", "operation": "Update", "time": "2026-02-01T00:00:00Z"},
                                           {"manager": "x", "operation": "Update", "time": "2026-03-01T00:00:00Z"}]},
        }))
        .unwrap();
        assert_eq!(
            last_changed(&secret),
            Some(("2026-03-01T00:00:00Z".into(), "managedFields".into()))
        );
        secret.metadata.annotations = Some(BTreeMap::from([(
            APPLIED_AT_ANNOTATION.to_owned(),
            "2026-04-01T00:00:00Z".to_owned(),
        )]));
        assert_eq!(last_changed(&secret).unwrap().1, APPLIED_AT_ANNOTATION);
        secret.metadata.annotations = None;
        secret.metadata.managed_fields = None;
        assert_eq!(last_changed(&secret).unwrap().1, "creationTimestamp");
    }
}
