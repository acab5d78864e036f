//! `psctl secrets apply` and `psctl secrets check`: the runtime Secret, written from an env
//! file or psctl's own environment and inspected, without any value reaching a command line,
//! the terminal, a log or the audit trail (`crate::secrets`).
//!
//! Values are registered with the output redactor the moment they are read (the input and the
//! Secret already in the cluster), as a second line of defence behind printing names only.

use anyhow::Context as _;

use super::support;
use crate::cli::{SecretsApplyArgs, SecretsArgs, SecretsCheckArgs, SecretsCommand};
use crate::cluster;
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::lock;
use crate::output::{CheckState, Output};
use crate::secrets::cluster::{random_key, read_fingerprint_key, read_secret, secret_data, write};
use crate::secrets::input::{Input, read_input};
use crate::secrets::report::{self, ApplyReport, CheckReport, describe_unusable, last_changed};
use crate::secrets::{
    self, APPLIED_BY_ANNOTATION, Change, FINGERPRINT_KEY_SECRET, KeyState, KeyStatus,
};
use crate::settings::GlobalSettings;

pub async fn run(args: SecretsArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    match args.command {
        SecretsCommand::Apply(args) => apply(args, global, output).await,
        SecretsCommand::Check(args) => check(args, global, output).await,
    }
}

async fn apply(args: SecretsApplyArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let SecretsApplyArgs {
        from_env_file,
        from_env,
        prune,
    } = args;
    let input = match from_env_file {
        Some(path) => Input::File(path),
        None => Input::Environment(from_env),
    };
    let entries = read_input(&input, |key| std::env::var(key).ok(), output)?;
    let environment = global.environment()?;
    let client = cluster::connect(&environment).await?;
    let name = environment.secret.name.clone();
    let existing = read_secret(&client, &environment).await?;
    let current = existing.as_ref().map(secret_data).unwrap_or_default();
    for value in current.values() {
        output.redactor().register_bytes(value);
    }
    let stored_key = read_fingerprint_key(&client, &environment).await?;
    let (key, ephemeral) = match &stored_key {
        Some(key) => (key.clone(), false),
        None => (
            random_key().context("generating the fingerprint key")?,
            true,
        ),
    };
    let required = &environment.secret.required_keys;
    let diff = secrets::diff(&current, &entries, required, prune, &key);
    let unusable = secrets::unusable_required(&diff.desired, required);
    let report = ApplyReport {
        environment: environment.name.clone(),
        namespace: environment.namespace.clone(),
        secret: name.clone(),
        dry_run: global.dry_run,
        action: report::apply_action(existing.is_some(), diff.changes_anything(), global.dry_run)
            .to_owned(),
        fingerprint: secrets::secret_fingerprint(&key, &diff.desired),
        ephemeral_fingerprint_key: ephemeral && global.dry_run,
        keys: diff.keys.clone(),
    };
    if !unusable.is_empty() {
        output.data(&report).context("writing the diff")?;
        return Err(CommandError::usage(anyhow::anyhow!(
            "Secret `{name}` would lack required keys or hold them empty: {}; nothing was written",
            describe_unusable(&unusable)
        ))
        .hint(format!(
            "add them to the input; the required keys are `environments.{}.secret.required_keys`: {}",
            environment.name,
            required.join(", ")
        )));
    }
    if global.dry_run || !diff.changes_anything() {
        if report.ephemeral_fingerprint_key {
            output.info("fingerprints are from a throwaway key: the first real apply stores the key they will be made with");
        }
        output.data(&report).context("writing the diff")?;
        if !global.dry_run {
            output.info(format!(
                "Secret `{name}` already holds these values; nothing to do"
            ));
        }
        return Ok(ExitStatus::Success);
    }
    support::confirm(
        global,
        &format!(
            "write Secret `{name}` in `{}` ({} added, {} changed, {} removed)?",
            environment.namespace,
            diff.names(Change::Added).len(),
            diff.names(Change::Changed).len(),
            diff.names(Change::Removed).len()
        ),
    )?;
    let audit = support::open_audit_of_target(global, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    let me = lock::holder_identity("secrets apply");
    let held = support::take_lock(
        &client,
        &environment,
        "secrets apply",
        audit.as_ref(),
        output,
    )
    .await?;
    let written = write(
        &client,
        &environment,
        existing.as_ref(),
        &diff.desired,
        stored_key.is_none().then_some(key.as_slice()),
        &me,
    )
    .await;
    let old_fingerprint = existing
        .as_ref()
        .map(|_| secrets::secret_fingerprint(&key, &current));
    support::audit(
        audit.as_ref(),
        output,
        &environment,
        report::apply_note(
            &environment,
            old_fingerprint,
            &report,
            &diff,
            crate::audit::outcome::of(&written),
        ),
    )
    .await;
    if let Err(error) = held.release().await {
        output.warn(format!(
            "the deploy lock was not released cleanly: {error}; it expires in {}s",
            lock::LEASE_SECONDS
        ));
    }
    written?;
    output.data(&report).context("writing the diff")?;
    output.check(CheckState::Ok, &format!("Secret {name}"), &report.action);
    output.info(format!(
        "running pods still have the old values: `psctl deploy --env {}` rolls them (the pod template carries the Secret's fingerprint)",
        environment.name
    ));
    Ok(ExitStatus::Success)
}

async fn check(args: SecretsCheckArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let SecretsCheckArgs {} = args;
    let environment = global.environment()?;
    let client = cluster::connect(&environment).await?;
    let name = environment.secret.name.clone();
    let secret = read_secret(&client, &environment).await?;
    let data = secret.as_ref().map(secret_data).unwrap_or_default();
    for value in data.values() {
        output.redactor().register_bytes(value);
    }
    let key = read_fingerprint_key(&client, &environment).await?;
    let required = &environment.secret.required_keys;
    let changed = secret.as_ref().and_then(last_changed);
    let report = CheckReport {
        environment: environment.name.clone(),
        namespace: environment.namespace.clone(),
        secret: name.clone(),
        exists: secret.is_some(),
        last_changed: changed.as_ref().map(|(at, _)| at.clone()),
        last_changed_source: changed.map(|(_, source)| source),
        last_changed_by: secret
            .as_ref()
            .and_then(|s| s.metadata.annotations.as_ref())
            .and_then(|a| a.get(APPLIED_BY_ANNOTATION))
            .cloned(),
        fingerprint: match (&key, &secret) {
            (Some(key), Some(_)) => Some(secrets::secret_fingerprint(key, &data)),
            _ => None,
        },
        keys: secrets::check(&data, required, key.as_deref()),
    };
    output.data(&report).context("writing the check")?;
    let unusable: Vec<KeyStatus> = report
        .keys
        .iter()
        .filter(|k| k.required && k.state != KeyState::Present)
        .cloned()
        .collect();
    if secret.is_none() {
        return Err(CommandError::verification(anyhow::anyhow!(
            "Secret `{name}` does not exist in `{}`",
            environment.namespace
        ))
        .hint(format!(
            "create it with `psctl secrets apply --env {} --from-env-file FILE`",
            environment.name
        )));
    }
    if !unusable.is_empty() {
        return Err(CommandError::verification(anyhow::anyhow!(
            "Secret `{name}`: {}",
            describe_unusable(&unusable)
        ))
        .hint(format!(
            "set them with `psctl secrets apply --env {} --from-env-file FILE` (the pods would fail with CreateContainerConfigError)",
            environment.name
        )));
    }
    if key.is_none() {
        output.info(format!(
            "no fingerprints: Secret `{FINGERPRINT_KEY_SECRET}` does not exist yet (`psctl secrets apply` creates it)"
        ));
    }
    Ok(ExitStatus::Success)
}
