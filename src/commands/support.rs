//! Pieces shared by the mutating commands (deploy, rollback, kill-switch): confirmation, the
//! Helm target of an environment, reporting a tracked rollout, and the audit hook.

use std::io::IsTerminal as _;

use crate::audit::AuditSink;
use crate::db::DatabaseUrl;
use crate::error::CommandError;
use crate::lock::{self, DeployLock, LockError, Takeover, TakeoverReason};
use crate::output::{CheckState, Output};
use crate::settings::{Environment, GlobalSettings};

/// Why a question cannot be put to the operator, or `None` when it can: `-q` hides it, and
/// without a terminal on stdin and stderr nobody would see it or answer it. Pure.
pub fn prompt_blocked(quiet: bool, stdin_tty: bool, stderr_tty: bool) -> Option<&'static str> {
    if quiet {
        Some("-q hides the question")
    } else if !stdin_tty {
        Some("stdin is not a terminal")
    } else if !stderr_tty {
        Some("stderr is not a terminal")
    } else {
        None
    }
}

/// Whether a question can be put to the operator now (see [`prompt_blocked`]).
pub fn can_prompt(global: &GlobalSettings) -> Result<(), &'static str> {
    match prompt_blocked(
        global.verbosity < 0,
        std::io::stdin().is_terminal(),
        std::io::stderr().is_terminal(),
    ) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// Asks `question` before a mutating action unless `--yes`. A question that cannot be shown
/// never blocks: it is refused (exit 2) with a hint to pass `--yes`.
pub fn confirm(global: &GlobalSettings, question: &str) -> Result<(), CommandError> {
    if global.yes {
        return Ok(());
    }
    if let Err(reason) = can_prompt(global) {
        return Err(CommandError::usage(anyhow::anyhow!(
            "refusing to proceed without confirmation ({reason}): {question}"
        ))
        .hint("pass `--yes` to confirm non-interactively"));
    }
    let answer = prompt(&format!("{question} [y/N] "))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CommandError::usage(anyhow::anyhow!(
            "cancelled: nothing was changed"
        )))
    }
}

/// Writes `text` straight to stderr (the caller checked [`can_prompt`]) and reads one line.
/// The text never carries a secret.
pub fn prompt(text: &str) -> Result<String, CommandError> {
    use std::io::{BufRead as _, Write as _};
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{text}");
    let _ = stderr.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        CommandError::usage(anyhow::Error::new(e).context("reading the confirmation"))
    })?;
    Ok(line)
}

/// Takes the deploy Lease for `operation`, reporting it as a check. A takeover from a dead or
/// silent holder is announced and written to the audit trail before anything else happens.
pub async fn take_lock(
    client: &kube::Client,
    environment: &Environment,
    operation: &str,
    audit_sink: &dyn AuditSink,
    output: &Output,
) -> Result<DeployLock, LockError> {
    let me = lock::holder_identity(operation);
    let waiting = |message: String| output.info(message);
    let held = DeployLock::acquire(client, &environment.namespace, &me, &waiting).await?;
    Ok(announce(held, environment, audit_sink, output).await)
}

/// The kill switch's way to the Lease: taken whoever holds it (see
/// [`DeployLock::acquire_override`]); the previous holder is announced and audited first.
pub async fn take_lock_override(
    client: &kube::Client,
    environment: &Environment,
    operation: &str,
    audit_sink: &dyn AuditSink,
    output: &Output,
) -> Result<DeployLock, LockError> {
    let me = lock::holder_identity(operation);
    let held = DeployLock::acquire_override(client, &environment.namespace, &me).await?;
    Ok(announce(held, environment, audit_sink, output).await)
}

/// Reports a Lease just taken as a check; a takeover is announced and written to the audit
/// trail before anything else happens.
async fn announce(
    held: DeployLock,
    environment: &Environment,
    audit_sink: &dyn AuditSink,
    output: &Output,
) -> DeployLock {
    output.check(
        CheckState::Ok,
        "deploy lock",
        &format!("Lease `{}` acquired", lock::LEASE_NAME),
    );
    if let Some(takeover) = &held.takeover {
        output.warn(takeover.describe());
        audit(audit_sink, output, environment, takeover_note(takeover)).await;
    }
    held
}

/// Refuses (exit 2) while the kill switch is on for any of `components`: every command that
/// could bring a stopped component back runs through here first.
pub async fn refuse_while_kill_switch_on(
    client: &kube::Client,
    environment: &Environment,
    components: &[&crate::settings::Component],
) -> Result<(), CommandError> {
    let engaged = crate::kill_switch::engaged(client, &environment.namespace, components).await?;
    if engaged.is_empty() {
        return Ok(());
    }
    Err(CommandError::usage(anyhow::anyhow!(
        "the kill switch is on in `{}` ({}); refusing to bring stopped components back",
        environment.name,
        engaged.join(", ")
    ))
    .hint("when it is safe, `psctl kill-switch off` restores the remembered replica counts; then run this command again"))
}

/// Checks the kill switch once the Lease is held (so it cannot be turned on in between): off
/// for every one of `components` gives the hold back; on releases it and refuses (exit 2).
pub async fn require_kill_switch_off(
    held: DeployLock,
    client: &kube::Client,
    environment: &Environment,
    components: &[&crate::settings::Component],
) -> Result<DeployLock, CommandError> {
    match refuse_while_kill_switch_on(client, environment, components).await {
        Ok(()) => Ok(held),
        Err(error) => {
            let _ = held.release().await;
            Err(error)
        }
    }
}

/// The audit record of a Lease takeover.
pub fn takeover_note(takeover: &Takeover) -> AuditNote {
    let reason = match takeover.reason {
        TakeoverReason::HolderDead => "holder_dead".to_owned(),
        TakeoverReason::Expired { .. } => "expired".to_owned(),
        TakeoverReason::Override => "kill_switch_override".to_owned(),
    };
    AuditNote {
        action: "lock-takeover".to_owned(),
        target: lock::LEASE_NAME.to_owned(),
        from_state: takeover.previous_holder.clone(),
        to_state: lock::identity(),
        outcome: crate::audit::outcome::SUCCEEDED.to_owned(),
        details: serde_json::json!({ "reason": reason, "detail": takeover.describe() }),
    }
}

pub use crate::helm::driver::{helm_target, resolve_chart};
pub use crate::rollout::report::{outcome_summary, report_outcome};

pub use crate::audit::note::{AuditNote, record as audit};

/// Opens the audit trail before anything changes: the Postgres sink, or (only under
/// `--allow-no-audit`) one that announces every unrecorded action. Database URL secrets are
/// registered with the redactor first.
pub async fn open_audit(
    global: &GlobalSettings,
    environment: &Environment,
    output: &Output,
) -> Result<Box<dyn AuditSink>, CommandError> {
    let url = match &global.database_url {
        Some(url) => Ok(url.clone()),
        None => DatabaseUrl::resolve(None, &environment.database_url_env, |name| {
            std::env::var(name).ok()
        })
        .map_err(|error| error.to_string()),
    };
    if let Ok(url) = &url {
        if let Some(password) = url.password() {
            output.redactor().register(&password);
        }
        output.redactor().register(url.expose());
    }
    match crate::audit::open(url, global.allow_no_audit, output).await {
        Ok(sink) => {
            output.check(CheckState::Ok, "audit trail", "opened");
            Ok(sink)
        }
        Err(error) => {
            output.check(CheckState::Fail, "audit trail", &error.to_string());
            Err(error.into())
        }
    }
}

/// The audit sink of a command that names its database the way `psctl db` does (the selected
/// environment's variable, or `--database-url`): when it cannot be used the command is refused
/// (exit 3) unless `--allow-no-audit` was given, in which case the gap is announced on stderr.
pub async fn open_audit_of_target(
    global: &GlobalSettings,
    output: &Output,
) -> Result<Box<dyn AuditSink>, CommandError> {
    let url = match crate::db::target::resolve_target(global, output) {
        Ok(target) => Ok(target.url),
        Err(error) => Err(format!("{:#}", error.error())),
    };
    Ok(crate::audit::open(url, global.allow_no_audit, output).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(yes: bool, verbosity: i8) -> GlobalSettings {
        GlobalSettings {
            config: std::path::PathBuf::from("psctl.yaml"),
            environment: None,
            context: None,
            namespace: None,
            format: crate::output::Format::Table,
            dry_run: false,
            yes,
            verbosity,
            database_url: None,
            allow_no_audit: false,
        }
    }

    #[test]
    fn a_question_nobody_can_see_or_answer_is_never_asked() {
        assert_eq!(prompt_blocked(false, true, true), None);
        assert_eq!(
            prompt_blocked(true, true, true),
            Some("-q hides the question")
        );
        assert_eq!(
            prompt_blocked(false, false, true),
            Some("stdin is not a terminal")
        );
        assert_eq!(
            prompt_blocked(false, true, false),
            Some("stderr is not a terminal")
        );
    }

    #[test]
    fn under_quiet_confirm_refuses_at_once_with_the_yes_hint() {
        // `-q` refuses whatever the terminals are, so this cannot block on stdin.
        let error = confirm(&global(false, -1), "deploy?").unwrap_err();
        assert_eq!(error.status(), crate::error::ExitStatus::Usage);
        assert!(
            format!("{:#}", error.error()).contains("(-q hides the question): deploy?"),
            "{:#}",
            error.error()
        );
        assert_eq!(error.hints(), ["pass `--yes` to confirm non-interactively"]);
        assert!(confirm(&global(true, -1), "deploy?").is_ok());
    }

    #[test]
    fn a_takeover_is_audited_with_both_holders() {
        let note = takeover_note(&Takeover {
            previous_holder: "ci@runner pid 9 (deploy)".into(),
            reason: TakeoverReason::HolderDead,
        });
        assert_eq!(note.action, "lock-takeover");
        assert_eq!(note.target, lock::LEASE_NAME);
        assert_eq!(note.from_state, "ci@runner pid 9 (deploy)");
        assert_eq!(note.to_state, lock::identity());
        assert_eq!(note.details["reason"], "holder_dead");
    }
}
