//! The postmortem skeleton `psctl evidence` writes next to the evidence (`postmortem.md`): the
//! rollback runbook's "Postmortem & audit" sections, with what psctl already knows filled in —
//! a timeline merged from the audit trail and the namespace's Kubernetes events, the psctl
//! commands that changed something (from the audit trail), and links to every evidence file —
//! and the rest left as prompts for the people writing it. Pure: it renders what it is given.
//!
//! Nothing secret reaches it: audit rows carry no secret values (their `details` are not
//! rendered anyway), events are the cluster's, and the caller writes the text through the
//! redactor.

use chrono::{DateTime, Utc};

use crate::audit::AuditRow;

/// A Kubernetes event line, at unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    pub at: i64,
    /// `Warning Deployment/problemsolver-webhook RolledBack: …`.
    pub text: String,
}

/// One evidence file, or an item that could not be collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceLink {
    pub item: String,
    /// Relative to the evidence directory; empty when skipped.
    pub file: String,
    pub collected: bool,
    pub detail: String,
}

/// What the skeleton is rendered from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub environment: &'a str,
    pub namespace: &'a str,
    /// RFC 3339.
    pub collected_at: &'a str,
    /// The window covered, as given to `--since` (e.g. `1h`).
    pub since: &'a str,
    /// Oldest first. `None`: the audit trail could not be read.
    pub audit: Option<&'a [AuditRow]>,
    /// Oldest first. `None`: the cluster could not be read.
    pub events: Option<&'a [EventLine]>,
    pub evidence: &'a [EvidenceLink],
}

/// At most this many Kubernetes events go into the timeline (the newest); `events.txt` has all.
pub const TIMELINE_EVENTS: usize = 200;

/// The sections, in order; tests and readers can rely on these headings.
pub const SECTIONS: [&str; 8] = [
    "## Summary",
    "## Timeline",
    "## Commands run",
    "## Root cause",
    "## Affected merchants and invoices",
    "## Data integrity proof",
    "## Remediation and policy changes",
    "## Evidence",
];

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// Keeps a table cell on one line and its pipes literal.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

fn transition(row: &AuditRow) -> String {
    if row.from_state.is_empty() && row.to_state.is_empty() {
        String::new()
    } else {
        format!("{} → {}", row.from_state, row.to_state)
    }
}

/// Renders `postmortem.md`. Pure.
pub fn render(inputs: &Inputs<'_>) -> String {
    let mut text = format!(
        "# Postmortem: {} — {}\n\n\
         Skeleton written by `psctl evidence` at {} for environment `{}` (namespace `{}`), covering the last {}. \
         The timeline, the commands and the evidence links are filled in from the audit trail and the cluster; \
         every other section is for the people writing the review.\n\n",
        inputs.environment,
        inputs.collected_at,
        inputs.collected_at,
        inputs.environment,
        inputs.namespace,
        inputs.since,
    );

    text.push_str(SECTIONS[0]);
    text.push_str(
        "\n\n- What happened, in two sentences:\n- Impact (merchants, deposits, webhooks delayed or lost):\n- Detected by, and when:\n- Resolved by, and when:\n\n",
    );

    text.push_str(SECTIONS[1]);
    text.push_str("\n\n");
    let mut entries: Vec<(i64, String)> = Vec::new();
    if let Some(rows) = inputs.audit {
        for row in rows {
            let change = transition(row);
            entries.push((
                row.at.timestamp(),
                format!(
                    "{} — psctl `{}` on `{}`{}: {} (by {}, audit #{})",
                    time(row.at),
                    row.action,
                    row.target,
                    if change.is_empty() {
                        String::new()
                    } else {
                        format!(" ({change})")
                    },
                    row.outcome,
                    row.os_user,
                    row.id
                ),
            ));
        }
    }
    let mut omitted = 0;
    if let Some(events) = inputs.events {
        omitted = events.len().saturating_sub(TIMELINE_EVENTS);
        for event in &events[omitted..] {
            let at = DateTime::<Utc>::from_timestamp(event.at, 0)
                .map_or_else(|| event.at.to_string(), time);
            entries.push((event.at, format!("{at} — event {}", event.text)));
        }
    }
    // Stable: at the same second an audit row comes before the events it caused.
    entries.sort_by_key(|(at, _)| *at);
    if entries.is_empty() {
        text.push_str("- (nothing recorded in the window)\n");
    }
    for (_, line) in &entries {
        text.push_str(&format!("- {}\n", line.replace('\n', " ")));
    }
    if omitted > 0 {
        text.push_str(&format!(
            "- ({omitted} older events omitted: see [events.txt](events.txt))\n"
        ));
    }
    match (inputs.audit, inputs.events) {
        (None, _) => text.push_str(
            "\nThe audit trail could not be read: add psctl's actions from `psctl audit` by hand.\n",
        ),
        (_, None) => text.push_str(
            "\nThe cluster could not be read: add its events (`kubectl get events`) by hand.\n",
        ),
        _ => {}
    }
    text.push_str(
        "\nAdd what psctl cannot know: alerts fired, pages, decisions and who made them.\n\n",
    );

    text.push_str(SECTIONS[2]);
    text.push_str("\n\n");
    match inputs.audit {
        Some(rows) if !rows.is_empty() => {
            text.push_str("| # | at | who | command | target | change | outcome |\n");
            text.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
            for row in rows {
                text.push_str(&format!(
                    "| {} | {} | {} | `psctl {}` | {} | {} | {} |\n",
                    row.id,
                    time(row.at),
                    cell(&row.os_user),
                    cell(&row.action),
                    cell(&row.target),
                    cell(&transition(row)),
                    cell(&row.outcome)
                ));
            }
            text.push_str("\nFull rows, with their hash chain: `psctl audit --env ");
            text.push_str(inputs.environment);
            text.push_str("`.\n\n");
        }
        Some(_) => text.push_str("No psctl command changed anything in the window.\n\n"),
        None => text.push_str("Unknown: the audit trail could not be read.\n\n"),
    }

    text.push_str(SECTIONS[3]);
    text.push_str(
        "\n\n- Trigger:\n- Why it was not caught earlier (tests, canary gates, alerts):\n\n",
    );
    text.push_str(SECTIONS[4]);
    text.push_str(
        "\n\n- Merchant IDs:\n- Invoice IDs:\n- Deposits (txid) late, duplicated or quarantined:\n\n",
    );
    text.push_str(SECTIONS[5]);
    text.push_str("\n\nReconciled totals before and after (`psctl db verify --env ");
    text.push_str(inputs.environment);
    text.push_str(
        " -o json`; compare `totals`), and the ledger's append-only check (`psctl smoke --only integrity`):\n\n",
    );
    text.push_str(SECTIONS[6]);
    text.push_str(
        "\n\n- Fixes:\n- Policy changes (gates, alerts, runbooks):\n- Legal or compliance notification required? (yes/no, by whom)\n\n",
    );

    text.push_str(SECTIONS[7]);
    text.push_str("\n\n");
    for link in inputs.evidence {
        if link.collected {
            text.push_str(&format!(
                "- [{}]({}) — {}\n",
                link.item,
                link.file,
                link.detail.replace('\n', " ")
            ));
        } else {
            text.push_str(&format!(
                "- {}: not collected ({})\n",
                link.item,
                link.detail.replace('\n', " ")
            ));
        }
    }
    text.push_str("- [index.json](index.json) — every item and why any was skipped\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, at: i64, action: &str) -> AuditRow {
        AuditRow {
            id,
            at: DateTime::<Utc>::from_timestamp(at, 0).unwrap(),
            os_user: "ops@vm pid 7".to_owned(),
            kube_identity: String::new(),
            environment: "prod".to_owned(),
            action: action.to_owned(),
            target: "problemsolver-webhook".to_owned(),
            from_state: "revision 3".to_owned(),
            to_state: "revision 2".to_owned(),
            outcome: "succeeded".to_owned(),
            details: serde_json::json!({}),
            prev_hash: None,
            hash: String::new(),
        }
    }

    #[test]
    fn the_timeline_merges_audit_rows_and_events_in_time_order_and_caps_events() {
        let rows = [row(1, 1_000, "rollback (helm)")];
        let events: Vec<EventLine> = (0..(TIMELINE_EVENTS as i64 + 5))
            .map(|n| EventLine {
                at: 900 + n,
                text: format!("Normal Pod/p-{n} Started: started"),
            })
            .collect();
        let text = render(&Inputs {
            environment: "prod",
            namespace: "payments",
            collected_at: "2026-12-07T14:00:00Z",
            since: "1h",
            audit: Some(&rows),
            events: Some(&events),
            evidence: &[],
        });
        let timeline: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "## Timeline")
            .take_while(|l| *l != "## Commands run")
            .filter(|l| l.starts_with("- "))
            .collect();
        // The oldest five events are left out; the audit row sits between the events by time.
        assert!(timeline[0].contains("Pod/p-5 "), "{}", timeline[0]);
        let rollback = timeline
            .iter()
            .position(|l| l.contains("psctl `rollback (helm)`"))
            .unwrap();
        assert!(timeline[rollback - 1].contains("Pod/p-99 "), "{timeline:?}");
        assert!(
            timeline[rollback + 1].contains("Pod/p-100 "),
            "{timeline:?}"
        );
        assert!(text.contains("(5 older events omitted: see [events.txt](events.txt))"));
    }

    #[test]
    fn unreadable_sources_are_said_not_silently_empty() {
        let text = render(&Inputs {
            environment: "prod",
            namespace: "payments",
            collected_at: "2026-12-07T14:00:00Z",
            since: "1h",
            audit: None,
            events: None,
            evidence: &[EvidenceLink {
                item: "cluster".to_owned(),
                file: String::new(),
                collected: false,
                detail: "unreachable".to_owned(),
            }],
        });
        assert!(text.contains("The audit trail could not be read"));
        assert!(text.contains("Unknown: the audit trail could not be read."));
        assert!(text.contains("- cluster: not collected (unreachable)"));
        for section in SECTIONS {
            assert!(text.contains(&format!("\n{section}\n")), "{section}");
        }
    }
}
