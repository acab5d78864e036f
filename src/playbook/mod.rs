//! Playbooks: a documented procedure (release, rollback, emergency stop, restore) as a reviewed
//! YAML file of typed steps, each of which is one psctl command.
//!
//! ```yaml
//! name: release
//! description: Build, check, back up, migrate, deploy, smoke, canary.
//! vars:
//!   tag: ${git_sha}
//! steps:
//!   - build: {tag: "${tag}"}
//!   - deploy: {components: [poller], tag: "${tag}", on_failure: rollback}
//!   - approval: {message: "Dashboards green?"}
//! ```
//!
//! Loading is pure: [`parse`] checks the shape (unknown keys and step types are errors with
//! the line they are on), [`Playbook::plan`] validates the steps against an environment and
//! turns each into the argv of the psctl command it runs. The plan is a value: `--dry-run`
//! prints it, tests compare it, and `psctl run` executes it (`run.rs`: the run's record, report
//! and loop).
//!
//! Variables: `${name}` anywhere in the file is replaced before parsing by, in order of
//! precedence, `--var name=value`, the playbook's `vars:` (whose values may use the built-ins),
//! or a built-in: `env` (the environment's name) and `git_sha` (the short commit of the working
//! directory). Values are restricted to characters that cannot change the YAML's structure.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::settings::Environment;

/// A problem with a playbook file, pointing at the line to fix.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("cannot read playbook `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        line: Option<usize>,
        message: String,
    },
}

impl crate::error::Classify for PlaybookError {
    fn exit_status(&self) -> crate::error::ExitStatus {
        crate::error::ExitStatus::Usage
    }

    fn hints(&self) -> Vec<String> {
        vec!["the playbook format and every step type are documented in docs/playbooks.md".into()]
    }
}

/// What the run does when a step fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop the run; `psctl run --from N` resumes it after the fix.
    #[default]
    Stop,
    /// Roll every component this run changed back to the revision it had when the run began,
    /// then stop.
    Rollback,
    /// Record the failure and go on with the next step (the run still exits non-zero).
    Continue,
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Stop => "stop",
            OnFailure::Rollback => "rollback",
            OnFailure::Continue => "continue",
        })
    }
}

/// Declares a step's parameter struct with the two fields every step shares.
macro_rules! step_params {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Shown in progress lines and the plan (default: the step type).
            #[serde(default)]
            pub name: Option<String>,
            /// What to do when the step fails (default: stop).
            #[serde(default)]
            pub on_failure: Option<OnFailure>,
            $($(#[$fmeta])* #[serde(default)] pub $field: $ty,)*
        }
    };
}

step_params!(
    /// `psctl build`: build and push the images.
    BuildParams {
        components: Vec<String>,
        tag: Option<String>,
        /// Directory of already built service binaries (skips the cargo build).
        prebuilt: Option<String>,
    }
);
step_params!(
    /// `psctl secrets check`: every required key present and non-empty.
    SecretsCheckParams {}
);
step_params!(
    /// `psctl db backup`.
    DbBackupParams { dir: Option<String> }
);
step_params!(
    /// `psctl db migrate` (takes its own verified backup first).
    DbMigrateParams {
        backup_dir: Option<String>,
    }
);
step_params!(
    /// `psctl db verify`.
    DbVerifyParams {}
);
step_params!(
    /// `psctl db restore` into a new database.
    DbRestoreParams {
        backup: Option<String>,
        into: Option<String>,
    }
);
step_params!(
    /// `psctl deploy`.
    DeployParams {
        components: Vec<String>,
        tag: Option<String>,
        timeout: Option<String>,
    }
);
step_params!(
    /// `psctl smoke`.
    SmokeParams {
        only: Vec<String>,
        components: Vec<String>,
        /// Keep retrying failing checks this long (pods and targets converge after a rollout).
        wait: Option<String>,
        force: bool,
    }
);
step_params!(
    /// `psctl canary start`: phased promotion, ending promoted or aborted.
    CanaryParams {
        component: Option<String>,
        tag: Option<String>,
        steps: Vec<u8>,
        bake: Option<String>,
    }
);
step_params!(
    /// A human confirms before the run goes on (`--yes` approves non-interactively).
    ApprovalParams { message: Option<String> }
);
step_params!(
    /// `psctl kill-switch on|off`.
    KillSwitchParams {
        state: Option<String>,
        components: Vec<String>,
    }
);
step_params!(
    /// `psctl rollback`.
    RollbackParams {
        component: Option<String>,
        to_rev: Option<u32>,
        undo: bool,
    }
);
step_params!(
    /// `psctl evidence`: logs, events, Helm history, checkpoint and recent system events.
    EvidenceParams {
        dir: Option<String>,
        since: Option<String>,
    }
);
step_params!(
    /// `psctl status`.
    StatusParams {}
);

/// One step as written in the file: its type is the single key of the list item.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Build(BuildParams),
    SecretsCheck(SecretsCheckParams),
    DbBackup(DbBackupParams),
    DbMigrate(DbMigrateParams),
    DbVerify(DbVerifyParams),
    DbRestore(DbRestoreParams),
    Deploy(DeployParams),
    Smoke(SmokeParams),
    Canary(CanaryParams),
    Approval(ApprovalParams),
    KillSwitch(KillSwitchParams),
    Rollback(RollbackParams),
    Evidence(EvidenceParams),
    Status(StatusParams),
}

impl Action {
    /// The step `kind` with default parameters (validation of required ones comes later).
    pub fn with_defaults(kind: &str) -> Option<Action> {
        Some(match kind {
            "build" => Action::Build(Default::default()),
            "secrets-check" => Action::SecretsCheck(Default::default()),
            "db-backup" => Action::DbBackup(Default::default()),
            "db-migrate" => Action::DbMigrate(Default::default()),
            "db-verify" => Action::DbVerify(Default::default()),
            "db-restore" => Action::DbRestore(Default::default()),
            "deploy" => Action::Deploy(Default::default()),
            "smoke" => Action::Smoke(Default::default()),
            "canary" => Action::Canary(Default::default()),
            "approval" => Action::Approval(Default::default()),
            "kill-switch" => Action::KillSwitch(Default::default()),
            "rollback" => Action::Rollback(Default::default()),
            "evidence" => Action::Evidence(Default::default()),
            "status" => Action::Status(Default::default()),
            _ => return None,
        })
    }

    /// The step type as written in YAML.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Build(_) => "build",
            Action::SecretsCheck(_) => "secrets-check",
            Action::DbBackup(_) => "db-backup",
            Action::DbMigrate(_) => "db-migrate",
            Action::DbVerify(_) => "db-verify",
            Action::DbRestore(_) => "db-restore",
            Action::Deploy(_) => "deploy",
            Action::Smoke(_) => "smoke",
            Action::Canary(_) => "canary",
            Action::Approval(_) => "approval",
            Action::KillSwitch(_) => "kill-switch",
            Action::Rollback(_) => "rollback",
            Action::Evidence(_) => "evidence",
            Action::Status(_) => "status",
        }
    }

    fn common(&self) -> (Option<&String>, Option<OnFailure>) {
        macro_rules! common {
            ($($variant:ident),*) => {
                match self { $(Action::$variant(p) => (p.name.as_ref(), p.on_failure),)* }
            };
        }
        common!(
            Build,
            SecretsCheck,
            DbBackup,
            DbMigrate,
            DbVerify,
            DbRestore,
            Deploy,
            Smoke,
            Canary,
            Approval,
            KillSwitch,
            Rollback,
            Evidence,
            Status
        )
    }
}

/// Every step type, as written in YAML.
pub const STEP_TYPES: &[&str] = &[
    "build",
    "secrets-check",
    "db-backup",
    "db-migrate",
    "db-verify",
    "db-restore",
    "deploy",
    "smoke",
    "canary",
    "approval",
    "kill-switch",
    "rollback",
    "evidence",
    "status",
];

/// A step is a mapping with exactly one key, its type: `- deploy: {components: [poller]}`.
/// Read straight from the YAML map (not through a buffered enum) so that errors inside the
/// parameters keep their line numbers.
impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepVisitor;

        impl<'de> serde::de::Visitor<'de> for StepVisitor {
            type Value = Action;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a step: a mapping with one key, the step type, e.g. `deploy: {}`")
            }

            /// `- status` alone: a step with every parameter at its default.
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Action, E> {
                Action::with_defaults(value).ok_or_else(|| E::unknown_variant(value, STEP_TYPES))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Action, A::Error> {
                use serde::de::Error as _;
                let Some(kind) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "an empty step: write its type, e.g. `status: {}`",
                    ));
                };
                let action = match kind.as_str() {
                    "build" => Action::Build(map.next_value()?),
                    "secrets-check" => Action::SecretsCheck(map.next_value()?),
                    "db-backup" => Action::DbBackup(map.next_value()?),
                    "db-migrate" => Action::DbMigrate(map.next_value()?),
                    "db-verify" => Action::DbVerify(map.next_value()?),
                    "db-restore" => Action::DbRestore(map.next_value()?),
                    "deploy" => Action::Deploy(map.next_value()?),
                    "smoke" => Action::Smoke(map.next_value()?),
                    "canary" => Action::Canary(map.next_value()?),
                    "approval" => Action::Approval(map.next_value()?),
                    "kill-switch" => Action::KillSwitch(map.next_value()?),
                    "rollback" => Action::Rollback(map.next_value()?),
                    "evidence" => Action::Evidence(map.next_value()?),
                    "status" => Action::Status(map.next_value()?),
                    other => return Err(A::Error::unknown_variant(other, STEP_TYPES)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "a step has exactly one type, but `{extra}` follows `{kind}`; \
                         put `name` and `on_failure` inside the step's parameters"
                    )));
                }
                Ok(action)
            }
        }

        deserializer.deserialize_any(StepVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    #[allow(dead_code)] // read by the variable pass before substitution
    vars: IndexMap<String, String>,
    steps: Vec<Action>,
}

/// A parsed playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub file: String,
    pub name: String,
    pub description: String,
    pub steps: Vec<ParsedStep>,
    /// The variables after resolution, for the plan's header.
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedStep {
    pub action: Action,
    /// 1-based line of the step's list item, when it could be located.
    pub line: Option<usize>,
}

/// What the run needs to know about its surroundings to resolve variables.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub environment: String,
    /// `--var name=value`, in command-line order.
    pub overrides: Vec<(String, String)>,
    /// Computes `${git_sha}` when a playbook uses it.
    pub git_sha: Option<fn() -> Result<String, String>>,
}

/// Reads and parses a playbook file.
pub fn load(path: &Path, context: &Context) -> Result<Playbook, PlaybookError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlaybookError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&path.display().to_string(), &text, context)
}

/// Parses playbook text: variables, then the typed shape.
pub fn parse(file: &str, text: &str, context: &Context) -> Result<Playbook, PlaybookError> {
    let invalid = |line: Option<usize>, message: String| PlaybookError::Invalid {
        file: file.to_owned(),
        line,
        message,
    };
    let vars = resolve_vars(text, context).map_err(|(line, message)| invalid(line, message))?;
    let substituted = substitute(text, &vars).map_err(|(line, message)| invalid(line, message))?;
    let deserializer = crate::yaml::Deserializer::from_str(&substituted);
    let raw: RawPlaybook = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let line = inner.location().map(|l| l.line());
        let mut message = inner.to_string();
        // The YAML library appends " at line L column C"; the line is already in front.
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        let message = match message.split_once(": ") {
            Some((head, tail)) if !head.contains(' ') => tail.to_owned(),
            _ => message,
        };
        let message = if path == "." || path.is_empty() {
            message
        } else {
            format!("{}: {message}", friendly_path(&path))
        };
        invalid(line, message)
    })?;
    if raw.steps.is_empty() {
        return Err(invalid(
            None,
            "`steps` is empty: a playbook needs at least one step".into(),
        ));
    }
    let lines = step_lines(&substituted);
    let steps = raw
        .steps
        .into_iter()
        .enumerate()
        .map(|(index, action)| ParsedStep {
            action,
            line: lines.get(index).copied(),
        })
        .collect();
    Ok(Playbook {
        file: file.to_owned(),
        name: raw.name,
        description: raw.description,
        steps,
        vars,
    })
}

/// `steps[2].deploy.tgs` reads better as `step 3 (deploy): tgs`.
fn friendly_path(path: &str) -> String {
    let Some(rest) = path.strip_prefix("steps[") else {
        return path.to_owned();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return path.to_owned();
    };
    let Ok(index) = index.parse::<usize>() else {
        return path.to_owned();
    };
    let tail = tail.trim_start_matches('.');
    if tail.is_empty() {
        format!("step {}", index + 1)
    } else {
        format!("step {} ({tail})", index + 1)
    }
}

/// Values may hold only characters that cannot alter the YAML they are pasted into.
fn valid_value(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:/@+-,=".contains(c))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Resolves the variable set: built-ins, then the file's `vars:`, then `--var` overrides.
fn resolve_vars(
    text: &str,
    context: &Context,
) -> Result<BTreeMap<String, String>, (Option<usize>, String)> {
    #[derive(Deserialize)]
    struct VarsOnly {
        #[serde(default)]
        vars: IndexMap<String, crate::yaml::Value>,
    }
    // Read `vars:` leniently (the rest of the file is checked after substitution). `${x}` is
    // not valid YAML everywhere (inside a flow mapping `{` opens a mapping), so this pass
    // sees each reference as a plain placeholder word and turns them back inside `vars:`.
    let masked = mask_references(text);
    let declared = match crate::yaml::from_str::<crate::yaml::Value>(&masked) {
        Ok(crate::yaml::Value::Mapping(map)) => {
            let vars_value = map.get("vars").cloned().unwrap_or(crate::yaml::Value::Null);
            if vars_value.is_null() {
                IndexMap::new()
            } else {
                crate::yaml::from_value::<VarsOnly>(crate::yaml::Value::Mapping(
                    [(crate::yaml::Value::from("vars"), vars_value)]
                        .into_iter()
                        .collect(),
                ))
                .map_err(|e| (None, format!("vars: {e}")))?
                .vars
            }
        }
        Ok(_) => {
            return Err((
                Some(1),
                "a playbook is a mapping with `name` and `steps`".into(),
            ));
        }
        Err(error) => {
            let line = error.location().map(|l| l.line());
            let mut message = error.to_string();
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            return Err((line, format!("not valid YAML: {message}")));
        }
    };

    let mut builtins = BTreeMap::new();
    builtins.insert("env".to_owned(), context.environment.clone());
    let uses_git_sha = text.contains("${git_sha}");
    if uses_git_sha {
        let compute = context
            .git_sha
            .ok_or((None, "`${git_sha}` is not available here".to_owned()))?;
        let sha = compute().map_err(|e| {
            (
                None,
                format!("`${{git_sha}}`: {e}; pass `--var` for the variable that uses it"),
            )
        })?;
        builtins.insert("git_sha".to_owned(), sha);
    }

    let mut vars = BTreeMap::new();
    for (name, value) in &declared {
        if !valid_name(name) {
            return Err((
                None,
                format!("vars: `{name}` is not a valid name (lowercase letters, digits, _)"),
            ));
        }
        let value = match value {
            crate::yaml::Value::String(s) => unmask_references(s),
            crate::yaml::Value::Number(n) => n.to_string(),
            crate::yaml::Value::Bool(b) => b.to_string(),
            _ => {
                return Err((
                    None,
                    format!("vars: `{name}` must be a string, number or boolean"),
                ));
            }
        };
        let value = substitute(&value, &builtins).map_err(|(_, m)| (None, format!("vars: {m}")))?;
        vars.insert(name.clone(), value);
    }
    for (name, value) in builtins {
        vars.entry(name).or_insert(value);
    }
    for (name, value) in &context.overrides {
        if !valid_name(name) {
            return Err((
                None,
                format!("--var {name}=…: not a valid name (lowercase letters, digits, _)"),
            ));
        }
        vars.insert(name.clone(), value.clone());
    }
    for (name, value) in &vars {
        if !valid_value(value) {
            return Err((
                None,
                format!(
                    "variable `{name}` = {value:?}: only letters, digits and . _ : / @ + - , = are allowed"
                ),
            ));
        }
    }
    Ok(vars)
}

const MASK_START: &str = "psctl-var-";
const MASK_END: &str = "-end";

/// `${name}` → `psctl-var-name-end` (names hold no `-`, so the mapping is reversible).
fn mask_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) if valid_name(&after[..end]) => {
                out.push_str(MASK_START);
                out.push_str(&after[..end]);
                out.push_str(MASK_END);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn unmask_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(MASK_START) {
        out.push_str(&rest[..start]);
        let after = &rest[start + MASK_START.len()..];
        match after.find(MASK_END) {
            Some(end) if valid_name(&after[..end]) => {
                out.push_str("${");
                out.push_str(&after[..end]);
                out.push('}');
                rest = &after[end + MASK_END.len()..];
            }
            _ => {
                out.push_str(MASK_START);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces every `${name}`; an unknown name is an error naming its line.
fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, (Option<usize>, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let line = text[..consumed + start].matches('\n').count() + 1;
        let Some(end) = after.find('}') else {
            return Err((Some(line), "`${` without a closing `}`".into()));
        };
        let name = &after[..end];
        let Some(value) = vars.get(name) else {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            return Err((
                Some(line),
                format!(
                    "unknown variable `${{{name}}}` (known: {}); declare it under `vars:` or pass `--var {name}=…`",
                    known.join(", ")
                ),
            ));
        };
        out.push_str(value);
        let advance = start + 2 + end + 1;
        consumed += advance;
        rest = &rest[advance..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The 1-based line of each item of the top-level `steps:` list (block style). Best effort:
/// a flow-style list yields no lines and errors then name the step by number only.
fn step_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut in_steps = false;
    let mut item_indent: Option<usize> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent == 0 {
            in_steps = trimmed.starts_with("steps:") && trimmed.trim_end() == "steps:";
            item_indent = None;
            continue;
        }
        if !in_steps || !trimmed.starts_with('-') {
            continue;
        }
        match item_indent {
            None => {
                item_indent = Some(indent);
                lines.push(index + 1);
            }
            Some(expected) if expected == indent => lines.push(index + 1),
            Some(_) => {}
        }
    }
    // A top-level `- ` list (indent 0) is not inside `steps:` in valid YAML for our schema.
    lines
}

/// One step of a plan: what it runs, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStep {
    pub number: usize,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The psctl arguments after the program name and the global flags; empty for `approval`.
    pub command: Vec<String>,
    /// For `approval`: the question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub on_failure: OnFailure,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl PlannedStep {
    /// The command line a person would type for this step, for plans and resume hints.
    pub fn display_command(&self, environment: &str) -> String {
        if self.command.is_empty() {
            return format!("(ask: {})", self.message.as_deref().unwrap_or("continue?"));
        }
        let mut words = vec!["psctl".to_owned()];
        words.extend(self.command.iter().map(|w| crate::process::quote(w)));
        words.push(format!("--env {}", crate::process::quote(environment)));
        words.join(" ")
    }
}

/// The whole plan of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub playbook: String,
    pub file: String,
    pub description: String,
    pub environment: String,
    pub vars: BTreeMap<String, String>,
    pub steps: Vec<PlannedStep>,
}

impl Playbook {
    /// Validates every step against `environment` and resolves it to a command.
    pub fn plan(&self, environment: &Environment) -> Result<Plan, PlaybookError> {
        let mut steps = Vec::with_capacity(self.steps.len());
        let mut names = BTreeMap::new();
        for (index, step) in self.steps.iter().enumerate() {
            let number = index + 1;
            let invalid = |message: String| PlaybookError::Invalid {
                file: self.file.clone(),
                line: step.line,
                message: format!("step {number} ({}): {message}", step.action.kind()),
            };
            let (name, on_failure) = step.action.common();
            let name = name
                .cloned()
                .unwrap_or_else(|| step.action.kind().to_owned());
            if let Some(previous) = names.insert(name.clone(), number) {
                return Err(invalid(format!(
                    "the name {name:?} is already used by step {previous}; names identify steps for `--from`"
                )));
            }
            let on_failure = on_failure.unwrap_or_default();
            let (command, message) = command_of(&step.action, environment).map_err(&invalid)?;
            steps.push(PlannedStep {
                number,
                name,
                kind: step.action.kind(),
                command,
                message,
                on_failure,
                line: step.line,
            });
        }
        Ok(Plan {
            playbook: self.name.clone(),
            file: self.file.clone(),
            description: self.description.clone(),
            environment: environment.name.clone(),
            vars: self.vars.clone(),
            steps,
        })
    }
}

impl Plan {
    /// The 0-based index of the step `--from` names (a number or a step name).
    pub fn find(&self, from: &str) -> Result<usize, String> {
        if let Ok(number) = from.parse::<usize>() {
            return if (1..=self.steps.len()).contains(&number) {
                Ok(number - 1)
            } else {
                Err(format!(
                    "--from {number}: the playbook has steps 1 to {}",
                    self.steps.len()
                ))
            };
        }
        self.steps
            .iter()
            .position(|s| s.name == from)
            .ok_or_else(|| {
                let names: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "--from {from:?}: no step has that name (steps: {})",
                    names.join(", ")
                )
            })
    }
}

fn known_components(environment: &Environment, names: &[String]) -> Result<(), String> {
    for name in names {
        environment.component(name).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn push_all(argv: &mut Vec<String>, flag: &str, values: &[String]) {
    for value in values {
        argv.push(flag.to_owned());
        argv.push(value.clone());
    }
}

fn push_opt(argv: &mut Vec<String>, flag: &str, value: Option<&String>) {
    if let Some(value) = value {
        argv.push(flag.to_owned());
        argv.push(value.clone());
    }
}

/// A step's `tag` must be a valid image tag whatever variables made it.
fn check_tag(value: Option<&String>) -> Result<(), String> {
    match value {
        Some(tag) => crate::registry::check_tag(tag).map_err(|e| format!("`tag`: {e}")),
        None => Ok(()),
    }
}

fn check_duration(what: &str, value: Option<&String>) -> Result<(), String> {
    if let Some(value) = value {
        crate::settings::parse_duration(value).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

/// The psctl argv of one step (after the program name), or the approval question.
fn command_of(
    action: &Action,
    environment: &Environment,
) -> Result<(Vec<String>, Option<String>), String> {
    let words = |list: &[&str]| list.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let argv = match action {
        Action::Build(p) => {
            known_components(environment, &p.components)?;
            check_tag(p.tag.as_ref())?;
            let mut argv = words(&["build"]);
            push_all(&mut argv, "--component", &p.components);
            push_opt(&mut argv, "--tag", p.tag.as_ref());
            push_opt(&mut argv, "--prebuilt", p.prebuilt.as_ref());
            argv
        }
        Action::SecretsCheck(_) => words(&["secrets", "check"]),
        Action::DbBackup(p) => {
            let mut argv = words(&["db", "backup"]);
            push_opt(&mut argv, "--dir", p.dir.as_ref());
            argv
        }
        Action::DbMigrate(p) => {
            let mut argv = words(&["db", "migrate"]);
            push_opt(&mut argv, "--backup-dir", p.backup_dir.as_ref());
            argv
        }
        Action::DbVerify(_) => words(&["db", "verify"]),
        Action::DbRestore(p) => {
            let backup = p
                .backup
                .as_ref()
                .ok_or("`backup` (the dump file) is required")?;
            let into = p
                .into
                .as_ref()
                .ok_or("`into` (the new database) is required")?;
            let mut argv = words(&["db", "restore"]);
            push_opt(&mut argv, "--backup", Some(backup));
            push_opt(&mut argv, "--into", Some(into));
            argv
        }
        Action::Deploy(p) => {
            known_components(environment, &p.components)?;
            check_duration("timeout", p.timeout.as_ref())?;
            check_tag(p.tag.as_ref())?;
            let mut argv = words(&["deploy"]);
            push_all(&mut argv, "--component", &p.components);
            push_opt(&mut argv, "--tag", p.tag.as_ref());
            push_opt(&mut argv, "--timeout", p.timeout.as_ref());
            argv
        }
        Action::Smoke(p) => {
            const CATEGORIES: [&str; 5] = [
                "cluster",
                "metrics",
                "monitoring",
                "functional",
                "integrity",
            ];
            let mut argv = words(&["smoke"]);
            for category in &p.only {
                if !CATEGORIES.contains(&category.as_str()) {
                    return Err(format!(
                        "`only`: unknown category {category:?} (one of: {})",
                        CATEGORIES.join(", ")
                    ));
                }
            }
            if !p.only.is_empty() {
                argv.push("--only".to_owned());
                argv.extend(p.only.iter().cloned());
            }
            known_components(environment, &p.components)?;
            push_all(&mut argv, "--component", &p.components);
            check_duration("wait", p.wait.as_ref())?;
            push_opt(&mut argv, "--wait", p.wait.as_ref());
            if p.force {
                argv.push("--force".to_owned());
            }
            argv
        }
        Action::Canary(p) => {
            let component = p.component.as_ref().ok_or("`component` is required")?;
            let resolved = environment
                .component(component)
                .map_err(|e| e.to_string())?;
            if resolved.canary.is_none() {
                return Err(format!(
                    "component `{component}` has no `canary:` section in the environment `{}`",
                    environment.name
                ));
            }
            let tag = p.tag.as_ref().ok_or("`tag` is required")?;
            check_tag(Some(tag))?;
            check_duration("bake", p.bake.as_ref())?;
            if let Some(bad) = p.steps.iter().find(|w| **w == 0 || **w > 100) {
                return Err(format!("`steps`: {bad} is not a percentage in 1..=100"));
            }
            if !p.steps.is_empty() && !p.steps.windows(2).all(|w| w[0] < w[1]) {
                return Err("`steps` must increase, e.g. [10, 30, 60, 100]".into());
            }
            let mut argv = words(&["canary", "start", "--component"]);
            argv.push(component.clone());
            push_opt(&mut argv, "--tag", Some(tag));
            if !p.steps.is_empty() {
                argv.push("--steps".to_owned());
                argv.push(
                    p.steps
                        .iter()
                        .map(u8::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            push_opt(&mut argv, "--bake", p.bake.as_ref());
            argv
        }
        Action::Approval(p) => {
            let message = p
                .message
                .clone()
                .unwrap_or_else(|| "continue with the next step?".to_owned());
            return Ok((Vec::new(), Some(message)));
        }
        Action::KillSwitch(p) => {
            let state = p
                .state
                .as_deref()
                .ok_or("`state` (on or off) is required")?;
            if !matches!(state, "on" | "off") {
                return Err(format!("`state`: {state:?} is neither `on` nor `off`"));
            }
            known_components(environment, &p.components)?;
            let mut argv = words(&["kill-switch", state]);
            push_all(&mut argv, "--component", &p.components);
            argv
        }
        Action::Rollback(p) => {
            if let Some(component) = &p.component {
                environment
                    .component(component)
                    .map_err(|e| e.to_string())?;
            }
            if p.undo && p.to_rev.is_some() {
                return Err("`undo` and `to_rev` exclude each other".into());
            }
            let mut argv = words(&["rollback"]);
            if let Some(component) = &p.component {
                argv.push(component.clone());
            }
            push_opt(
                &mut argv,
                "--to-rev",
                p.to_rev.map(|r| r.to_string()).as_ref(),
            );
            if p.undo {
                argv.push("--undo".to_owned());
            }
            argv
        }
        Action::Evidence(p) => {
            check_duration("since", p.since.as_ref())?;
            let mut argv = words(&["evidence"]);
            push_opt(&mut argv, "--dir", p.dir.as_ref());
            push_opt(&mut argv, "--since", p.since.as_ref());
            argv
        }
        Action::Status(_) => words(&["status"]),
    };
    Ok((argv, None))
}

pub mod run;

#[cfg(test)]
mod tests;
