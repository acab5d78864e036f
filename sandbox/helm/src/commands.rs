//! One function per command: turn parsed flags into engine calls and print Helm's output.
//! Data goes to stdout, warnings to stderr; any failure becomes an error for `main`.

use crate::cli::{
    ApplyArgs, Cli, Command, GetCommand, GlobalArgs, LintArgs, OutputFormat, ValuesArgs,
};
use crate::engine::{Connection, Engine, EngineError, ReleaseOptions};
use crate::release;
use crate::{duration, rollback, storage, values};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};
use std::io::Write;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let Cli { global, command } = cli;
    let engine = Engine::load_default()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match command {
        Command::Version(args) => version(&engine, args.short, &mut out),
        Command::Lint(args) => lint(&engine, &global, &args, &mut out),
        Command::Template(args) => {
            let (release, chart) = match args.names.as_slice() {
                [chart] => ("release-name", chart.as_str()),
                [release, chart] => (release.as_str(), chart.as_str()),
                _ => bail!("template needs [NAME] CHART"),
            };
            let user_values = collect_values(&args.values)?;
            let manifest = render(
                &engine,
                &global,
                release,
                chart,
                user_values,
                args.version.as_deref(),
            )?;
            write!(out, "{manifest}")?;
            Ok(())
        }
        Command::Upgrade(args) => {
            let connection = connect(&engine, &global)?;
            let user_values = collect_values(&args.values)?;
            let mut options = release_options(&args.apply)?;
            options.install = Some(args.install);
            options.max_history = Some(args.max_history);
            options.cleanup_on_fail = Some(args.cleanup_on_fail);
            options.reset_values = Some(args.reset_values);
            options.reuse_values = Some(args.reuse_values);
            let existing = match connection.status(&args.release) {
                Ok(answer) => Some(answer),
                Err(EngineError::ReleaseNotFound(_)) => None,
                Err(error) => return Err(error.into()),
            };
            let exists = existing.is_some();
            options.server_side_apply = match &existing {
                // `upgrade --install` of an absent release installs: server-side unless "false".
                None => install_server_side(args.apply.server_side.as_deref(), true)?,
                Some(answer) => {
                    upgrade_server_side(args.apply.server_side.as_deref(), &apply_method(answer))?
                }
            }
            .to_string();
            if !exists && !args.install {
                bail!(
                    "UPGRADE FAILED: \"{}\" has no deployed releases",
                    args.release
                );
            }
            if !exists && args.apply.output == OutputFormat::Table {
                writeln!(
                    out,
                    "Release \"{}\" does not exist. Installing it now.",
                    args.release
                )?;
            }
            let answer = connection.upgrade(
                &args.release,
                &args.chart,
                &Value::Object(user_values),
                args.apply.version.as_deref(),
                &options,
            );
            // Helm's own prefixes, which scripts and psctl's diagnostics match on.
            let answer = answer.with_context(|| {
                if exists {
                    "UPGRADE FAILED"
                } else {
                    "INSTALLATION FAILED"
                }
            })?;
            let mut release = release::parse_one(&answer).context("reading the engine's answer")?;
            apply_description(&global, &mut release, args.apply.description.as_deref())?;
            if exists && args.apply.output == OutputFormat::Table {
                writeln!(
                    out,
                    "Release \"{}\" has been upgraded. Happy Helming!",
                    args.release
                )?;
            }
            release::write_status(&mut out, &release, args.apply.output)?;
            Ok(())
        }
        Command::Install(args) => {
            let connection = connect(&engine, &global)?;
            let user_values = collect_values(&args.values)?;
            let mut options = release_options(&args.apply)?;
            options.server_side_apply =
                install_server_side(args.apply.server_side.as_deref(), false)?.to_string();
            let answer = connection
                .install(
                    &args.release,
                    &args.chart,
                    &Value::Object(user_values),
                    args.apply.version.as_deref(),
                    &options,
                )
                .context("INSTALLATION FAILED")?;
            let mut release = release::parse_one(&answer).context("reading the engine's answer")?;
            apply_description(&global, &mut release, args.apply.description.as_deref())?;
            release::write_status(&mut out, &release, args.apply.output)?;
            Ok(())
        }
        Command::History(args) => {
            let connection = connect(&engine, &global)?;
            let answer = connection.history(&args.release).map_err(not_found)?;
            let releases = release::parse_many(&answer).context("reading the engine's answer")?;
            if releases.is_empty() {
                bail!("release: not found");
            }
            release::write_history(&mut out, &releases, args.max, args.output)?;
            Ok(())
        }
        Command::Rollback(args) => {
            let connection = connect(&engine, &global)?;
            let timeout = duration::parse_seconds(&args.timeout)?;
            let answer = connection.history(&args.release).map_err(not_found)?;
            let releases = release::parse_many(&answer).context("reading the engine's answer")?;
            let current = releases.iter().map(|r| r.revision).max().unwrap_or(0);
            if current == 0 {
                bail!("release: not found");
            }
            let target = match args.revision {
                Some(0) | None if current <= 1 => bail!("release has no previous version"),
                Some(0) | None => current - 1,
                Some(revision) => u64::from(revision),
            };
            if !releases.iter().any(|r| r.revision == target) {
                bail!("release has no {target} version");
            }
            let recorded = storage::read_revision(&storage_target(&global), &args.release, target)?;
            let chart = tempfile::tempdir().context("creating a directory for the chart")?;
            rollback::write_chart(&recorded, chart.path())?;
            let chart_path = chart
                .path()
                .to_str()
                .context("the temporary directory path is not UTF-8")?;
            let values = match recorded.get("config") {
                Some(Value::Object(map)) => Value::Object(map.clone()),
                _ => Value::Object(Map::new()),
            };
            let options = ReleaseOptions {
                install: Some(false),
                wait: args.wait.is_some(),
                timeout_seconds: timeout,
                max_history: Some(args.history_max),
                // Helm's rollback follows the apply method of the revision it returns to.
                server_side_apply: upgrade_server_side(
                    args.server_side.as_deref(),
                    recorded
                        .get("apply_method")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                )?
                .to_string(),
                force_conflicts: args.force_conflicts,
                disable_openapi_validation: true,
                // Exactly the recorded values, not merged with the current ones.
                reset_values: Some(true),
                cleanup_on_fail: Some(args.cleanup_on_fail),
                ..ReleaseOptions::default()
            };
            let answer = connection
                .upgrade(&args.release, chart_path, &values, None, &options)
                .context("rollback failed")?;
            let rolled = release::parse_one(&answer).context("reading the engine's answer")?;
            storage::set_description(
                &storage_target(&global),
                &args.release,
                rolled.revision,
                &format!("Rollback to {target}"),
            )?;
            writeln!(out, "Rollback was a success! Happy Helming!")?;
            Ok(())
        }
        Command::Status(args) => {
            let release = revision_of(&engine, &global, &args.release, args.revision)?;
            release::write_status(&mut out, &release, args.output)?;
            Ok(())
        }
        Command::Uninstall(args) => {
            let connection = connect(&engine, &global)?;
            let timeout = duration::parse_seconds(&args.timeout)?;
            for name in &args.releases {
                match connection.uninstall(name, args.wait.is_some(), timeout) {
                    Ok(_) => writeln!(out, "release \"{name}\" uninstalled")?,
                    Err(EngineError::ReleaseNotFound(_)) if args.ignore_not_found => {}
                    Err(error) => return Err(not_found(error).into()),
                }
            }
            Ok(())
        }
        Command::List(args) => {
            let query = release::ListQuery::from_args(&args)?;
            let releases = if args.all_namespaces {
                // Helm's `--all-namespaces` is its storage driver without a namespace: every
                // release Secret in the cluster, the latest revision of each release kept.
                let target = storage::Target {
                    namespace: "",
                    ..storage_target(&global)
                };
                let mut latest: std::collections::BTreeMap<(String, String), release::Release> =
                    std::collections::BTreeMap::new();
                for record in storage::list_records(&target)? {
                    let found = release::Release::from_json(record);
                    let key = (found.namespace.clone(), found.name.clone());
                    if latest
                        .get(&key)
                        .is_none_or(|seen| seen.revision < found.revision)
                    {
                        latest.insert(key, found);
                    }
                }
                latest.into_values().collect()
            } else {
                let namespace = global.namespace.as_deref().unwrap_or("default");
                let connection = connect_in(&engine, &global, namespace)?;
                // The engine filters by state only as the default or `--all`; any other state
                // flag is applied here, to the latest revision of every release.
                let answer = connection.list(args.all || query.states.is_some())?;
                release::parse_many(&answer).context("reading the engine's answer")?
            };
            let listed = query.select(releases);
            release::write_list(
                &mut out,
                &listed,
                release::ListStyle {
                    short: args.short,
                    headers: !args.no_headers,
                },
                args.output,
            )?;
            Ok(())
        }
        Command::Get(GetCommand::Values(args)) => {
            let value: Value = match args.revision {
                // An earlier revision is read from the release storage, as Helm's
                // `GetValues` action reads it; `--all` coalesces it over the chart's values.
                Some(revision) => {
                    let recorded = stored_revision(&global, &args.release, revision)?;
                    release::revision_values(&recorded, args.all)
                }
                None => {
                    let connection = connect(&engine, &global)?;
                    let answer = connection
                        .get_values(&args.release, args.all)
                        .map_err(not_found)?;
                    if answer.trim().is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&answer).context("reading the engine's answer")?
                    }
                }
            };
            match args.output {
                OutputFormat::Json => writeln!(out, "{value}")?,
                _ => {
                    if args.output == OutputFormat::Table {
                        writeln!(
                            out,
                            "{}",
                            if args.all {
                                "COMPUTED VALUES:"
                            } else {
                                "USER-SUPPLIED VALUES:"
                            }
                        )?;
                    }
                    let text = match value {
                        Value::Null => "null\n".to_string(),
                        other => crate::yaml::to_string(&other)?,
                    };
                    write!(out, "{text}")?;
                }
            }
            Ok(())
        }
        Command::Get(GetCommand::Manifest(args)) => {
            let release = revision_of(&engine, &global, &args.release, args.revision)?;
            write!(out, "{}", release.manifest)?;
            Ok(())
        }
        Command::Get(GetCommand::Notes(args)) => {
            let release = revision_of(&engine, &global, &args.release, args.revision)?;
            if !release.notes.is_empty() {
                writeln!(out, "NOTES:\n{}", release.notes)?;
            }
            Ok(())
        }
        Command::Get(GetCommand::Hooks(args)) => {
            let release = revision_of(&engine, &global, &args.release, args.revision)?;
            release::write_hooks(&mut out, &release.raw)?;
            Ok(())
        }
    }
}

/// Renders `chart` as `release` (see `render`): the real engine installs it against an
/// in-process endpoint that keeps nothing.
fn render(
    engine: &Engine,
    global: &GlobalArgs,
    release: &str,
    chart: &str,
    user_values: Map<String, Value>,
    version: Option<&str>,
) -> Result<String> {
    let endpoint =
        crate::render::RenderEndpoint::start().context("starting the render endpoint")?;
    let kubeconfig = endpoint
        .kubeconfig()
        .to_str()
        .context("the temporary directory path is not UTF-8")?
        .to_owned();
    let connection = engine.connect(
        global.namespace.as_deref().unwrap_or("default"),
        Some(&kubeconfig),
        None,
    )?;
    let options = ReleaseOptions {
        timeout_seconds: 60,
        server_side_apply: "false".to_string(),
        disable_openapi_validation: true,
        ..ReleaseOptions::default()
    };
    let answer = connection.install(
        release,
        chart,
        &Value::Object(user_values),
        version,
        &options,
    )?;
    let value: Value = serde_json::from_str(&answer).context("reading the engine's answer")?;
    Ok(crate::render::manifest_of(&value))
}

/// Helm's wording for a missing release, whatever the engine said.
fn not_found(error: EngineError) -> EngineError {
    match error {
        EngineError::ReleaseNotFound(_) => {
            EngineError::ReleaseNotFound("release: not found".into())
        }
        other => other,
    }
}

/// The latest revision of `name` (from the engine) or the one asked for (from the storage).
fn revision_of(
    engine: &Engine,
    global: &GlobalArgs,
    name: &str,
    revision: Option<u64>,
) -> Result<release::Release> {
    match revision {
        Some(revision) => Ok(release::Release::from_json(stored_revision(
            global, name, revision,
        )?)),
        None => {
            let connection = connect(engine, global)?;
            let answer = connection.status(name).map_err(not_found)?;
            Ok(release::parse_one(&answer).context("reading the engine's answer")?)
        }
    }
}

/// One stored revision; a missing one is Helm's `release: not found`.
fn stored_revision(global: &GlobalArgs, name: &str, revision: u64) -> Result<Value> {
    storage::read_revision(&storage_target(global), name, revision).map_err(|error| {
        if format!("{error:#}").contains("not found") {
            anyhow::anyhow!("release: not found")
        } else {
            error
        }
    })
}

fn connect<'engine>(engine: &'engine Engine, global: &GlobalArgs) -> Result<Connection<'engine>> {
    connect_in(
        engine,
        global,
        global.namespace.as_deref().unwrap_or("default"),
    )
}

fn connect_in<'engine>(
    engine: &'engine Engine,
    global: &GlobalArgs,
    namespace: &str,
) -> Result<Connection<'engine>> {
    let kubeconfig = global
        .kubeconfig
        .as_ref()
        .map(|path| {
            path.to_str()
                .map(str::to_owned)
                .with_context(|| format!("kubeconfig path `{}` is not UTF-8", path.display()))
        })
        .transpose()?;
    if let Some(path) = &kubeconfig
        && !std::path::Path::new(path).exists()
    {
        bail!("kubeconfig `{path}` does not exist");
    }
    Ok(engine.connect(
        namespace,
        kubeconfig.as_deref(),
        global.kube_context.as_deref(),
    )?)
}

/// `-f` files in order, then `--set`, then `--set-string` (Helm's precedence).
pub fn collect_values(args: &ValuesArgs) -> Result<Map<String, Value>> {
    let mut merged = Map::new();
    for file in &args.values {
        values::merge(&mut merged, values::read_file(file)?);
    }
    for expression in &args.set {
        values::apply_set(&mut merged, expression, values::Typing::Typed)?;
    }
    for expression in &args.set_string {
        values::apply_set(&mut merged, expression, values::Typing::Strings)?;
    }
    Ok(merged)
}

/// `--server-side` of a new install: a boolean defaulting to true (Helm 4's `install`); an
/// `upgrade --install` of an absent release installs server-side unless told "false".
pub fn install_server_side(flag: Option<&str>, from_upgrade: bool) -> Result<&'static str> {
    match flag {
        None | Some("true") => Ok("true"),
        Some("false") => Ok("false"),
        Some("auto") if from_upgrade => Ok("true"),
        Some(other) => bail!(
            "invalid argument \"{other}\" for \"--server-side\" flag: strconv.ParseBool: parsing \"{other}\": invalid syntax"
        ),
    }
}

/// `--server-side` of an upgrade or rollback: "auto" (the default) follows the apply method
/// recorded in the release (`ssa` or `csa`), as Helm 4's `getUpgradeServerSideValue` does.
pub fn upgrade_server_side(flag: Option<&str>, recorded_method: &str) -> Result<&'static str> {
    match flag {
        None | Some("auto") if recorded_method == "ssa" => Ok("true"),
        None | Some("auto") | Some("false") => Ok("false"),
        Some("true") => Ok("true"),
        Some(other) => bail!("invalid/unknown release server-side apply method: {other}"),
    }
}

/// The `apply_method` of a release as the engine returns it (empty for releases made before
/// Helm 4, which applied client-side).
fn apply_method(answer: &str) -> String {
    serde_json::from_str::<Value>(answer)
        .ok()
        .and_then(|release| {
            release
                .get("apply_method")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// The engine options for install/upgrade flags shared by both.
pub fn release_options(apply: &ApplyArgs) -> Result<ReleaseOptions> {
    let server_side = match apply.server_side.as_deref() {
        None | Some("auto") => "auto",
        Some("true") => "true",
        Some("false") => "false",
        Some(other) => bail!("invalid/unknown release server-side apply method: {other}"),
    };
    if apply.force_conflicts && server_side == "false" {
        bail!(
            "--force-conflicts only applies with server-side apply (--server-side=false was given)"
        );
    }
    Ok(ReleaseOptions {
        install: None,
        create_namespace: apply.create_namespace,
        wait: apply.wait.is_some(),
        timeout_seconds: duration::parse_seconds(&apply.timeout)?,
        wait_for_jobs: apply.wait_for_jobs,
        max_history: None,
        server_side_apply: server_side.to_string(),
        force_conflicts: apply.force_conflicts,
        // Helm's CLI does not validate against OpenAPI by default either.
        disable_openapi_validation: true,
        skip_schema_validation: apply.skip_schema_validation,
        rollback_on_failure: apply.atomic || apply.rollback_on_failure,
        take_ownership: apply.take_ownership,
        cleanup_on_fail: None,
        reset_values: None,
        reuse_values: None,
    })
}

fn storage_target(global: &GlobalArgs) -> storage::Target<'_> {
    storage::Target {
        kubeconfig: global.kubeconfig.as_deref(),
        context: global.kube_context.as_deref(),
        namespace: global.namespace.as_deref().unwrap_or("default"),
    }
}

/// `--description`: the engine has no such option, so the stored revision is edited after the
/// engine wrote it, and the printed summary shows it.
fn apply_description(
    global: &GlobalArgs,
    release: &mut release::Release,
    description: Option<&str>,
) -> Result<()> {
    if let Some(description) = description {
        storage::set_description(
            &storage_target(global),
            &release.name,
            release.revision,
            description,
        )
        .context("setting the release description")?;
        release.description = description.to_owned();
        if let Some(info) = release.raw.get_mut("info").and_then(Value::as_object_mut) {
            info.insert("description".into(), Value::String(description.to_owned()));
        }
    }
    Ok(())
}

/// The Helm version compiled into the engine, read from the Go build information embedded in
/// the library (`dep\thelm.sh/helm/v4\tv4.x.y`).
fn embedded_helm_version() -> Option<String> {
    let path = crate::engine::locate_library()
        .into_iter()
        .find(|p| p.exists())?;
    let bytes = std::fs::read(path).ok()?;
    let marker = b"helm.sh/helm/v4\tv";
    let at = bytes.windows(marker.len()).position(|w| w == marker)?;
    let start = at + marker.len() - 1;
    let end = bytes[start..]
        .iter()
        .position(|b| b.is_ascii_whitespace())?
        + start;
    String::from_utf8(bytes[start..end].to_vec()).ok()
}

fn version(engine: &Engine, short: bool, out: &mut dyn Write) -> Result<()> {
    let helm = embedded_helm_version().unwrap_or_else(|| "v4".to_string());
    if short {
        writeln!(out, "{helm}")?;
    } else {
        writeln!(
            out,
            "version.BuildInfo{{Version:\"{helm}\", Engine:\"{}\", GitTreeState:\"clean\"}}",
            engine.version()
        )?;
    }
    Ok(())
}

/// Lint severities as the engine numbers them (Helm's `support.Severity`).
fn severity_name(severity: i64) -> &'static str {
    match severity {
        1 => "INFO",
        2 => "WARNING",
        3 => "ERROR",
        _ => "UNKNOWN",
    }
}

fn lint(engine: &Engine, global: &GlobalArgs, args: &LintArgs, out: &mut dyn Write) -> Result<()> {
    // Lint needs no cluster, but the engine wants a configuration handle; an unreachable or
    // absent kubeconfig is fine because nothing is sent.
    let connection = engine.connect(
        global.namespace.as_deref().unwrap_or("default"),
        None,
        global.kube_context.as_deref(),
    )?;
    let mut failed = 0usize;
    for chart in &args.charts {
        writeln!(out, "==> Linting {chart}")?;
        let report = match connection.lint(chart) {
            Ok(text) => text,
            Err(error) => {
                writeln!(
                    out,
                    "Error unable to check Chart.yaml file in chart: {error}"
                )?;
                failed += 1;
                continue;
            }
        };
        let (lines, chart_failed) = lint_report(&report, args.strict)?;
        for line in lines {
            writeln!(out, "{line}")?;
        }
        if chart_failed {
            failed += 1;
            if let Err(error) = render(engine, global, "release-name", chart, Map::new(), None) {
                writeln!(out, "[ERROR] {error:#}")?;
            }
        }
        writeln!(out)?;
    }
    let total = args.charts.len();
    let summary = format!("{total} chart(s) linted, {failed} chart(s) failed");
    if failed > 0 {
        bail!("{summary}");
    }
    writeln!(out, "{summary}")?;
    Ok(())
}

/// Turns the engine's lint JSON into Helm's `[SEVERITY] path: message` lines and whether the
/// chart failed (any error, or any warning under `--strict`).
pub fn lint_report(report: &str, strict: bool) -> Result<(Vec<String>, bool)> {
    let value: Value = serde_json::from_str(report).context("reading the engine's lint report")?;
    let mut lines = Vec::new();
    let mut failed = false;
    for message in value
        .get("Messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let severity = message.get("Severity").and_then(Value::as_i64).unwrap_or(0);
        let path = message.get("Path").and_then(Value::as_str).unwrap_or("");
        // The engine serialises Go errors as `{}`; a string message is used when present.
        let text = match message.get("Err") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) if !o.is_empty() => Value::Object(o.clone()).to_string(),
            _ => "(the engine does not report the message text)".to_string(),
        };
        lines.push(format!("[{}] {path}: {text}", severity_name(severity)));
        if severity >= 3 || (strict && severity == 2) {
            failed = true;
        }
    }
    for error in value
        .get("Errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        failed = true;
        // Empty objects repeat a message already listed (the engine loses Go error texts).
        match error {
            Value::String(s) => lines.push(format!("[ERROR] {s}")),
            Value::Object(o) if o.is_empty() => {}
            other => lines.push(format!("[ERROR] {other}")),
        }
    }
    Ok((lines, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_info_passes_error_fails_strict_fails_on_warning() {
        let info = r#"{"TotalChartsLinted":1,"Messages":[{"Severity":1,"Path":"Chart.yaml","Err":{}}],"Errors":null}"#;
        let (lines, failed) = lint_report(info, false).unwrap();
        assert!(!failed);
        assert!(lines[0].starts_with("[INFO] Chart.yaml: "));
        let warning = r#"{"Messages":[{"Severity":2,"Path":"values.yaml","Err":"x"}]}"#;
        assert!(!lint_report(warning, false).unwrap().1);
        assert!(lint_report(warning, true).unwrap().1);
        let error = r#"{"Messages":[{"Severity":3,"Path":"templates/","Err":"bad"}]}"#;
        let (lines, failed) = lint_report(error, false).unwrap();
        assert!(failed);
        assert_eq!(lines, vec!["[ERROR] templates/: bad"]);
        let errors = r#"{"Messages":[],"Errors":["boom"]}"#;
        assert!(lint_report(errors, false).unwrap().1);
    }

    #[test]
    fn atomic_maps_to_rollback_on_failure_and_timeout_to_seconds() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "helm",
            "upgrade",
            "r",
            "c",
            "--atomic",
            "--wait",
            "--timeout",
            "2m",
        ])
        .unwrap();
        let Command::Upgrade(upgrade) = cli.command else {
            panic!("not an upgrade");
        };
        let options = release_options(&upgrade.apply).unwrap();
        assert!(options.rollback_on_failure && options.wait);
        assert_eq!(options.timeout_seconds, 120);
        assert_eq!(options.server_side_apply, "auto");
        let json = serde_json::to_value(&options).unwrap();
        assert!(json.get("install").is_none(), "install is upgrade-only");
    }

    #[test]
    fn server_side_defaults_follow_helm_4() {
        assert_eq!(install_server_side(None, false).unwrap(), "true");
        assert_eq!(install_server_side(Some("false"), false).unwrap(), "false");
        assert!(install_server_side(Some("auto"), false).is_err());
        assert_eq!(install_server_side(Some("auto"), true).unwrap(), "true");
        assert_eq!(upgrade_server_side(None, "ssa").unwrap(), "true");
        assert_eq!(upgrade_server_side(None, "csa").unwrap(), "false");
        assert_eq!(upgrade_server_side(None, "").unwrap(), "false");
        assert_eq!(upgrade_server_side(Some("true"), "csa").unwrap(), "true");
        assert_eq!(upgrade_server_side(Some("false"), "ssa").unwrap(), "false");
        assert!(upgrade_server_side(Some("yes"), "ssa").is_err());
        assert_eq!(apply_method(r#"{"name":"r","apply_method":"ssa"}"#), "ssa");
    }

    #[test]
    fn values_precedence_files_then_set_then_set_string() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v.yaml");
        std::fs::write(
            &file,
            "image:\n  tag: file\n  repository: r\nreplicaCount: 1\n",
        )
        .unwrap();
        let args = ValuesArgs {
            values: vec![file],
            set: vec!["image.tag=set,replicaCount=3".into()],
            set_string: vec!["image.tag=42".into()],
        };
        let merged = collect_values(&args).unwrap();
        assert_eq!(
            Value::Object(merged),
            serde_json::json!({"image": {"tag": "42", "repository": "r"}, "replicaCount": 3})
        );
    }
}
