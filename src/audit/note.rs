//! What a mutating command did, as one audit entry: the note a command fills in and the one
//! function that records it (a failed write is reported loudly, never turned into a failure of a
//! change that already happened).

use serde::Serialize;

use crate::audit::{AuditEntry, AuditSink};
use crate::output::Output;
use crate::settings::Environment;

/// What a mutating command did, for the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AuditNote {
    pub action: String,
    pub target: String,
    pub from_state: String,
    pub to_state: String,
    pub outcome: String,
    pub details: serde_json::Value,
}

/// Records one action. The action already happened, so a failed write is reported loudly
/// rather than turned into a failure of the command.
pub async fn record(
    sink: &dyn AuditSink,
    output: &Output,
    environment: &Environment,
    note: AuditNote,
) {
    let AuditNote {
        action,
        target,
        from_state,
        to_state,
        outcome,
        details,
    } = note;
    let entry = AuditEntry::new(action, target)
        .environment(environment.name.clone())
        .kube_identity(crate::cluster::context_label(environment))
        .transition(from_state, to_state)
        .outcome(outcome)
        .details(details);
    if let Err(error) = sink.record(&entry).await {
        output.warn(format!(
            "the audit record of `{} {}` was NOT written: {error}",
            entry.action, entry.target
        ));
    }
}
