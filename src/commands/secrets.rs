//! `psctl secrets apply` and `psctl secrets check`: the runtime Secret, written from an env
//! file or psctl's own environment and inspected, without any value reaching a command line,
//! the terminal, a log or the audit trail.
//!
//! Values are registered with the output redactor the moment they are read (the input and the
//! Secret already in the cluster), as a second line of defence behind printing names only.

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;

use super::support::{self, AuditNote};
use crate::cli::{SecretsApplyArgs, SecretsArgs, SecretsCheckArgs, SecretsCommand};
use crate::cluster::{self, ClusterError};
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::lock;
use crate::output::{CheckState, Output, Render, Style, table};
use crate::secrets::{
    self, APPLIED_AT_ANNOTATION, APPLIED_BY_ANNOTATION, Change, Entry, FINGERPRINT_KEY_FIELD,
    FINGERPRINT_KEY_SECRET, KeyDiff, KeyState, KeyStatus,
};
use crate::settings::{Environment, GlobalSettings};

pub async fn run(args: SecretsArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    match args.command {
        SecretsCommand::Apply(args) => apply(args, global, output).await,
        SecretsCommand::Check(args) => check(args, global, output).await,
    }
}

// ---- apply ----

/// Where the values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(std::path::PathBuf),
    Environment(Vec<String>),
}

/// Reads the input and registers every value with the redactor. Errors name the file, the line
/// and the key, never a value.
pub fn read_input(
    input: &Input,
    lookup: impl Fn(&str) -> Option<String>,
    output: &Output,
) -> Result<Vec<Entry>, CommandError> {
    let entries = match input {
        Input::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                CommandError::usage(
                    anyhow::Error::new(error)
                        .context(format!("cannot read env file `{}`", path.display())),
                )
            })?;
            secrets::parse_env_file(&text).map_err(|error| {
                CommandError::usage(anyhow::anyhow!("{}: {error}", path.display()))
                    .hint("each line is `KEY=VALUE`; quote values with spaces or `#`; see docs/secrets.md")
            })?
        }
        Input::Environment(keys) => {
            let mut entries = Vec::new();
            let mut unset = Vec::new();
            for key in keys {
                if !secrets::valid_key(key) {
                    return Err(CommandError::usage(anyhow::anyhow!(
                        "--from-env `{key}` is not a valid Secret key"
                    ))
                    .hint("give key NAMES after --from-env; the values are read from psctl's environment"));
                }
                match lookup(key) {
                    Some(value) => entries.push(Entry {
                        key: key.clone(),
                        value: SecretString::from(value),
                        line: 0,
                    }),
                    None => unset.push(key.clone()),
                }
            }
            if !unset.is_empty() {
                return Err(CommandError::usage(anyhow::anyhow!(
                    "--from-env: {} not set in psctl's environment",
                    unset.join(", ")
                ))
                .hint(
                    "export them first (e.g. from your password manager), without echoing them",
                ));
            }
            entries
        }
    };
    for entry in &entries {
        output.redactor().register(entry.value.expose_secret());
    }
    if entries.is_empty() {
        return Err(CommandError::usage(anyhow::anyhow!(
            "the input has no `KEY=VALUE` entries; nothing to apply"
        )));
    }
    Ok(entries)
}

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
    let api: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
    let name = environment.secret.name.clone();
    let existing = api
        .get_opt(&name)
        .await
        .map_err(ClusterError::api(format!("reading Secret `{name}`")))?;
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
    let mut report = ApplyReport {
        environment: environment.name.clone(),
        namespace: environment.namespace.clone(),
        secret: name.clone(),
        dry_run: global.dry_run,
        action: String::new(),
        fingerprint: secrets::secret_fingerprint(&key, &diff.desired),
        ephemeral_fingerprint_key: ephemeral && global.dry_run,
        keys: diff.keys.clone(),
    };
    report.action = match (existing.is_some(), diff.changes_anything(), global.dry_run) {
        (_, false, _) if existing.is_some() => "unchanged",
        (false, _, true) => "would create",
        (true, _, true) => "would update",
        (false, _, false) => "created",
        (true, _, false) => "updated",
    }
    .to_owned();
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
    let audit = super::audit::sink(global, output).await?;
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
    let outcome = if written.is_ok() {
        "succeeded"
    } else {
        "failed"
    };
    let old_fingerprint = existing
        .as_ref()
        .map(|_| secrets::secret_fingerprint(&key, &current));
    support::audit(
        audit.as_ref(),
        output,
        &environment,
        AuditNote {
            action: "secrets apply".to_owned(),
            target: name.clone(),
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
        },
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

fn describe_unusable(keys: &[KeyStatus]) -> String {
    keys.iter()
        .map(|k| format!("{} ({})", k.key, k.state.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates or updates the Secret (guarded by its resourceVersion), and stores the fingerprint
/// key when there was none.
async fn write(
    client: &kube::Client,
    environment: &Environment,
    existing: Option<&Secret>,
    desired: &BTreeMap<String, Vec<u8>>,
    new_key: Option<&[u8]>,
    me: &str,
) -> Result<(), CommandError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
    if let Some(key) = new_key {
        let object: Secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(FINGERPRINT_KEY_SECRET.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "psctl".to_owned(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(
                FINGERPRINT_KEY_FIELD.to_owned(),
                ByteString(key.to_vec()),
            )])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            // Another apply stored one first: the fingerprints printed used ours, harmless.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                return Err(ClusterError::api(format!(
                    "creating Secret `{FINGERPRINT_KEY_SECRET}`"
                ))(error)
                .into());
            }
        }
    }
    let name = &environment.secret.name;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let annotations = BTreeMap::from([
        (APPLIED_AT_ANNOTATION.to_owned(), now),
        (APPLIED_BY_ANNOTATION.to_owned(), me.to_owned()),
    ]);
    let data: BTreeMap<String, ByteString> = desired
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone())))
        .collect();
    match existing {
        None => {
            let object = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    annotations: Some(annotations),
                    ..Default::default()
                },
                type_: Some("Opaque".to_owned()),
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &object)
                .await
                .map_err(ClusterError::api(format!("creating Secret `{name}`")))?;
        }
        Some(existing) => {
            // Keys to drop are sent as null; the resourceVersion makes the write fail rather
            // than clobber a change made since the diff was shown.
            let mut patch_data = serde_json::Map::new();
            for key in existing.data.iter().flatten().map(|(k, _)| k) {
                if !desired.contains_key(key) {
                    patch_data.insert(key.clone(), serde_json::Value::Null);
                }
            }
            for (key, value) in &data {
                patch_data.insert(
                    key.clone(),
                    serde_json::to_value(value).context("encoding the Secret")?,
                );
            }
            let patch = serde_json::json!({
                "metadata": {
                    "annotations": annotations,
                    "resourceVersion": existing.metadata.resource_version,
                },
                "data": patch_data,
            });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|error| {
                    let conflict = matches!(&error, kube::Error::Api(s) if s.code == 409);
                    let error: CommandError =
                        ClusterError::api(format!("updating Secret `{name}`"))(error).into();
                    if conflict {
                        error.hint("the Secret changed while psctl was working; run the command again to see the new diff")
                    } else {
                        error
                    }
                })?;
        }
    }
    Ok(())
}

pub use crate::secrets::cluster::{current_fingerprint, read_fingerprint_key, secret_data};

/// 32 bytes from the kernel's CSPRNG.
fn random_key() -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(key)
}

// ---- check ----

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

async fn check(args: SecretsCheckArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let SecretsCheckArgs {} = args;
    let environment = global.environment()?;
    let client = cluster::connect(&environment).await?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
    let name = environment.secret.name.clone();
    let secret = api
        .get_opt(&name)
        .await
        .map_err(ClusterError::api(format!("reading Secret `{name}`")))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;

    #[test]
    fn from_env_reads_named_keys_and_registers_their_values() {
        let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
        let input = Input::Environment(vec!["A_KEY".into(), "B_KEY".into()]);
        let entries = read_input(
            &input,
            |k| Some(format!("value-of-{k}-0123456789")),
            &output,
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            output.redactor().scrub("x value-of-A_KEY-0123456789 y"),
            "x [REDACTED] y"
        );
        let error = read_input(&input, |_| None, &output).unwrap_err();
        assert!(format!("{:#}", error.error()).contains("A_KEY, B_KEY not set"));
        let error =
            read_input(&Input::Environment(vec!["a=b".into()]), |_| None, &output).unwrap_err();
        assert!(format!("{:#}", error.error()).contains("not a valid Secret key"));
    }

    #[test]
    fn an_env_file_error_names_the_file_and_line_only() {
        let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.env");
        std::fs::write(&path, "OK=1\nthis-is-a-leaked-value\n").unwrap();
        let error = read_input(&Input::File(path.clone()), |_| None, &output).unwrap_err();
        let message = format!("{:#}", error.error());
        assert!(
            message.ends_with("runtime.env: line 2: expected `KEY=VALUE`; the line has no `=`"),
            "{message}"
        );
        assert!(!message.contains("leaked"));
    }

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
