//! `psctl build`: build the service binaries (cargo, release) and one image per component, tag
//! them immutably, scan them when a scanner is on PATH, refuse to overwrite a tag that holds
//! other content, push, and print the digests.
//!
//! Resolve → plan (`crate::build`, printed by `--dry-run`) → preflight (Docker daemon,
//! registry) → execute. Every image is built, scanned and checked against the registry before
//! the first push, so a refusal leaves the registry untouched.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::support;
use crate::build::{
    self, Binaries, BuildPlan, ImageInput, ImagePlan, PlanInput, PushDecision, Scanner, Source,
    Step,
};
use crate::cli::BuildArgs;
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::output::{CheckState, Output, Render, Style, table};
use crate::process::{self, Child, ProcessError};
use crate::registry::Registry;
use crate::settings::{BuildTool, Environment, GlobalSettings};

/// `build` arguments, resolved.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    pub components: Vec<String>,
    pub tag: Option<String>,
    pub ci_build: Option<String>,
    pub prebuilt: Option<PathBuf>,
    pub runtime_base: Option<String>,
    pub tool: Option<BuildTool>,
    pub allow_dirty: bool,
}

impl BuildSettings {
    pub fn resolve(args: BuildArgs) -> Self {
        let BuildArgs {
            components,
            tag,
            ci_build,
            prebuilt,
            runtime_base,
            tool,
            allow_dirty,
        } = args;
        Self {
            components,
            tag,
            ci_build: ci_build.filter(|b| !b.is_empty()),
            prebuilt,
            runtime_base,
            tool,
            allow_dirty,
        }
    }
}

impl Render for BuildPlan {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = format!(
            "build plan for `{}`: tag {} (revision {}{}), registry {}, tool {}, runtime base {}\n",
            self.environment,
            self.tag,
            self.revision,
            if self.dirty { ", dirty work tree" } else { "" },
            self.registry,
            self.tool.name(),
            self.runtime_base
                .as_deref()
                .unwrap_or("the Dockerfile's default"),
        );
        match &self.cargo {
            Some(cargo) => text.push_str(&format!("  {}\n", cargo.display())),
            None => text.push_str("  prebuilt binaries: no cargo build\n"),
        }
        for image in &self.images {
            text.push_str(&format!(
                "  stage {} -> {}/\n  {}\n",
                image.binary.display(),
                image.context.display(),
                image.build.display()
            ));
            match &image.scan {
                Some(scan) => text.push_str(&format!("  {}\n", scan.display())),
                None => text.push_str("  scan: skipped (no trivy or grype on PATH)\n"),
            }
            text.push_str(&format!(
                "  refuse if {} exists with other content, else {}\n",
                image.reference,
                image.push.display()
            ));
        }
        text
    }
}

/// One image's result.
#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub component: String,
    /// `<registry>/<image>:<tag>`.
    pub reference: String,
    /// The local image ID (the image configuration digest).
    pub image_id: String,
    /// The manifest digest in the registry.
    pub digest: Option<String>,
    /// `<registry>/<image>@<digest>`: what to pull or deploy to pin this exact image.
    pub pinned: Option<String>,
    /// `pushed`, `already_present`, `refused`, `not_pushed`.
    pub push: String,
    /// `passed`, `findings`, `error`, or `skipped: …`.
    pub scan: String,
}

/// The `-o json` result of a build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub environment: String,
    pub tag: String,
    pub revision: String,
    pub images: Vec<ImageResult>,
}

impl Render for BuildReport {
    fn render_table(&self, _style: &Style) -> String {
        table::render(
            &["COMPONENT", "IMAGE", "DIGEST", "PUSH", "SCAN"],
            self.images.iter().map(|i| {
                [
                    i.component.clone(),
                    i.reference.clone(),
                    i.digest.clone().unwrap_or_else(|| "-".to_owned()),
                    i.push.replace('_', " "),
                    i.scan.clone(),
                ]
            }),
        )
    }
}

/// Assembles the plan input from the environment, flags and the work tree. Pure apart from the
/// values passed in.
pub fn plan_input(
    environment: &Environment,
    settings: &BuildSettings,
    source: Source,
    context: PlanContext,
) -> Result<PlanInput, CommandError> {
    let registry = environment.registry.clone().ok_or_else(|| {
        CommandError::usage(anyhow::anyhow!(
            "environment `{}` has no `registry`; psctl build pushes to it",
            environment.name
        ))
        .hint(format!(
            "set `environments.{}.registry` in psctl.yaml, e.g. `registry: 127.0.0.1:5000`",
            environment.name
        ))
    })?;
    let registry = registry
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    if environment.production && source.dirty_diff.is_some() && !settings.allow_dirty {
        return Err(CommandError::usage(anyhow::anyhow!(
            "the work tree has uncommitted changes; images for production environment `{}` are built from commits only",
            environment.name
        ))
        .hint("commit (or drop) the changes, or pass `--allow-dirty` to build a `-dirty-` tag anyway"));
    }
    let tag = match &settings.tag {
        Some(tag) => tag.clone(),
        None => build::immutable_tag(&source, settings.ci_build.as_deref()),
    };
    crate::registry::check_tag(&tag).map_err(|message| {
        CommandError::usage(anyhow::anyhow!(message))
            .hint("fix --tag or --ci-build (PSCTL_CI_BUILD)")
    })?;
    let images = environment
        .select(&settings.components)?
        .into_iter()
        .map(|c| ImageInput {
            component: c.name.clone(),
            image: c.image.clone(),
            binary: c.binary.clone(),
        })
        .collect();
    let binaries = match &settings.prebuilt {
        Some(dir) => Binaries::Prebuilt(dir.clone()),
        None => Binaries::Cargo {
            target_dir: context.target_dir,
        },
    };
    Ok(PlanInput {
        environment: environment.name.clone(),
        registry,
        images,
        tag,
        source,
        tool: settings.tool.unwrap_or(environment.build.tool),
        dockerfile: context.dockerfile,
        runtime_base: settings
            .runtime_base
            .clone()
            .or_else(|| environment.build.runtime_base.clone()),
        binaries,
        staging: context.staging,
        scanner: context.scanner,
    })
}

/// What the plan takes from the machine rather than the configuration.
#[derive(Debug, Clone)]
pub struct PlanContext {
    /// `$CARGO_TARGET_DIR`, else `target`.
    pub target_dir: PathBuf,
    pub dockerfile: PathBuf,
    pub staging: PathBuf,
    pub scanner: Option<Scanner>,
}

pub async fn run(args: BuildArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let settings = BuildSettings::resolve(args);
    let environment = global.environment()?;
    let source = read_source(settings.tag.is_some()).await?;
    let staging = if global.dry_run {
        None
    } else {
        Some(
            tempfile::Builder::new()
                .prefix("psctl-build-")
                .tempdir()
                .context("creating the staging directory")?,
        )
    };
    let context = PlanContext {
        target_dir: std::env::var_os("CARGO_TARGET_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from("target"), PathBuf::from),
        dockerfile: support::resolve_chart(&global.config, &environment.build.dockerfile),
        staging: staging
            .as_ref()
            .map_or_else(|| PathBuf::from("$STAGING"), |d| d.path().to_path_buf()),
        scanner: build::detect_scanner(on_path),
    };
    let input = plan_input(&environment, &settings, source, context)?;
    if input.source.dirty_diff.is_some() && settings.tag.is_none() {
        output.warn(format!(
            "the work tree has uncommitted changes: the tag is {} (commit for a clean tag)",
            input.tag
        ));
    }
    let plan = build::plan(&input);
    if global.dry_run {
        output.data(&plan).context("writing the plan")?;
        return Ok(ExitStatus::Success);
    }
    let registry = Registry::new(&plan.registry)?;
    preflight(&plan, &input, &registry, output).await?;

    if let Some(cargo) = &plan.cargo {
        let spinner = output.spinner(format!("building the binaries: {}", cargo.display()));
        let result = run_step(cargo).await;
        spinner.finish();
        result.map_err(|failure| failure.into_error("cargo build", ExitStatus::Usage))?;
        output.check(CheckState::Ok, "cargo build", "release binaries built");
    }

    let mut results = Vec::new();
    let mut scan_findings = Vec::new();
    for image in &plan.images {
        let (image_id, scan) = build_one(image, output).await?;
        if scan == "findings" {
            scan_findings.push(image.reference.clone());
        }
        results.push(ImageResult {
            component: image.component.clone(),
            reference: image.reference.clone(),
            image_id,
            digest: None,
            pinned: None,
            push: "not_pushed".to_owned(),
            scan,
        });
    }
    let mut report = BuildReport {
        environment: plan.environment.clone(),
        tag: plan.tag.clone(),
        revision: plan.revision.clone(),
        images: results,
    };
    if !scan_findings.is_empty() {
        output.data(&report).context("writing the build report")?;
        return Err(CommandError::verification(anyhow::anyhow!(
            "the scanner found HIGH or CRITICAL vulnerabilities in {}; nothing was pushed",
            scan_findings.join(", ")
        ))
        .hint("the scanner's findings are printed above; rebuild on a patched runtime base"));
    }

    // Every tag is checked before the first push: a refusal leaves the registry as it was.
    let mut decisions = Vec::new();
    let mut refused = Vec::new();
    for (image, result) in plan.images.iter().zip(&mut report.images) {
        let remote = registry.manifest(&image.image, &plan.tag).await?;
        let decision = build::decide(&result.image_id, remote.as_ref());
        match &decision {
            PushDecision::Push => {}
            PushDecision::AlreadyPresent { digest } => {
                output.check(
                    CheckState::Ok,
                    &format!("tag {}", image.reference),
                    "already present with this exact image; not pushed again",
                );
                result.digest = Some(digest.clone());
                result.push = "already_present".to_owned();
            }
            PushDecision::Refuse { remote } => {
                output.check(
                    CheckState::Fail,
                    &format!("tag {}", image.reference),
                    &format!(
                        "already holds another image (config {remote}, local {})",
                        result.image_id
                    ),
                );
                result.push = "refused".to_owned();
                refused.push(image.reference.clone());
                if let Err(failure) = run_step(&image.untag).await {
                    output.warn(format!(
                        "the local tag {} still names the refused image: {}",
                        image.reference,
                        failure.summary()
                    ));
                }
            }
        }
        decisions.push(decision);
    }
    if !refused.is_empty() {
        output.data(&report).context("writing the build report")?;
        return Err(CommandError::usage(anyhow::anyhow!(
            "refusing to overwrite {}: tags are immutable and the registry holds different content under them; nothing was pushed",
            refused.join(", ")
        ))
        .hint("build from a new commit (the tag follows the git SHA), or give a new `--tag` / `--ci-build`"));
    }

    for ((image, result), decision) in plan.images.iter().zip(&mut report.images).zip(&decisions) {
        if *decision == PushDecision::Push {
            let spinner = output.spinner(format!("pushing {}", image.reference));
            let pushed = run_step(&image.push).await;
            spinner.finish();
            pushed.map_err(|failure| {
                failure
                    .into_error(
                        &format!("push of {}", image.reference),
                        ExitStatus::Unreachable,
                    )
                    .hint(format!(
                        "is the registry {} up and writable?",
                        plan.registry
                    ))
            })?;
            let remote = registry
                .manifest(&image.image, &plan.tag)
                .await?
                .filter(|m| m.matches_image_id(&result.image_id))
                .ok_or_else(|| {
                    CommandError::verification(anyhow::anyhow!(
                        "after pushing, {} does not hold the image just built ({}); something else wrote the tag",
                        image.reference,
                        result.image_id
                    ))
                })?;
            output.check(
                CheckState::Ok,
                &format!("push {}", image.reference),
                &remote.digest,
            );
            result.digest = Some(remote.digest);
            result.push = "pushed".to_owned();
        }
        result.pinned = result.digest.as_ref().map(|digest| {
            format!(
                "{}/{}@{digest}",
                plan.registry.trim_end_matches('/'),
                image.image
            )
        });
    }
    output.data(&report).context("writing the build report")?;
    output.info(format!(
        "deploy it with `psctl deploy --env {} --tag {}`",
        plan.environment, plan.tag
    ));
    Ok(ExitStatus::Success)
}

/// The Docker daemon (or Podman) answers, the registry answers, and a staged binary exists for
/// every image when prebuilt binaries are used.
async fn preflight(
    plan: &BuildPlan,
    input: &PlanInput,
    registry: &Registry,
    output: &Output,
) -> Result<(), CommandError> {
    let (program, args): (&str, &[&str]) = match plan.tool {
        BuildTool::Docker | BuildTool::Buildx => {
            ("docker", &["version", "--format", "{{.Server.Version}}"])
        }
        BuildTool::Podman => ("podman", &["version", "--format", "{{.Server.Version}}"]),
    };
    let probe = Step {
        program: program.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    };
    match run_step(&probe).await {
        Ok(version) => output.check(
            CheckState::Ok,
            program,
            &format!("daemon {} answers", version.trim()),
        ),
        Err(failure) => {
            output.check(CheckState::Fail, program, "the daemon does not answer");
            return Err(failure
                .into_error(&format!("`{program} version`"), ExitStatus::Unreachable)
                .hint(format!(
                    "is the {program} daemon running and may this user use it?"
                )));
        }
    }
    match registry.ping().await {
        Ok(()) => output.check(
            CheckState::Ok,
            "registry",
            &format!("{} answers", plan.registry),
        ),
        Err(error) => {
            output.check(CheckState::Fail, "registry", &error.to_string());
            return Err(error.into());
        }
    }
    if !input.dockerfile.is_file() {
        return Err(CommandError::usage(anyhow::anyhow!(
            "the Dockerfile `{}` does not exist",
            input.dockerfile.display()
        ))
        .hint("run psctl from the repository root, or set `build.dockerfile` in psctl.yaml"));
    }
    if let Binaries::Prebuilt(dir) = &input.binaries {
        for image in &plan.images {
            if !image.binary.is_file() {
                return Err(CommandError::usage(anyhow::anyhow!(
                    "--prebuilt {}: `{}` is missing",
                    dir.display(),
                    image.binary.display()
                ))
                .hint("build it with `cargo build --release -p <binary>`, or drop --prebuilt to let psctl build"));
            }
        }
    }
    Ok(())
}

/// Stages, builds and scans one image; returns its image ID and the scan result.
async fn build_one(image: &ImagePlan, output: &Output) -> Result<(String, String), CommandError> {
    stage(&image.binary, &image.context).map_err(|error| {
        CommandError::usage(error.context(format!(
            "staging `{}` for {}",
            image.binary.display(),
            image.reference
        )))
        .hint("build the binaries first (`cargo build --release`), or check --prebuilt")
    })?;
    output.detail(format!("  {}", image.build.display()));
    let spinner = output.spinner(format!("building {}", image.reference));
    let built = run_step(&image.build).await;
    spinner.finish();
    built.map_err(|failure| {
        let status = if failure.daemon_unreachable() {
            ExitStatus::Unreachable
        } else {
            ExitStatus::Usage
        };
        failure.into_error(&format!("building {}", image.reference), status)
    })?;
    let image_id = std::fs::read_to_string(&image.image_id_file)
        .with_context(|| {
            format!(
                "reading the image ID from {}",
                image.image_id_file.display()
            )
        })?
        .trim()
        .to_owned();
    output.check(
        CheckState::Ok,
        &format!("build {}", image.reference),
        &image_id,
    );
    let scan = match &image.scan {
        None => {
            output.check(
                CheckState::Skip,
                &format!("scan {}", image.reference),
                "no scanner on PATH (install trivy or grype)",
            );
            "skipped: no scanner on PATH".to_owned()
        }
        Some(scan) => match run_step(scan).await {
            Ok(_) => {
                output.check(
                    CheckState::Ok,
                    &format!("scan {}", image.reference),
                    "no HIGH or CRITICAL findings",
                );
                "passed".to_owned()
            }
            Err(StepFailure::Exit {
                code: Some(1),
                stdout,
                stderr,
                ..
            }) => {
                output.check(
                    CheckState::Fail,
                    &format!("scan {}", image.reference),
                    "HIGH or CRITICAL findings",
                );
                for line in stdout.lines().chain(stderr.lines()).take(200) {
                    output.info(format!("    {line}"));
                }
                "findings".to_owned()
            }
            Err(failure) => {
                output.check(
                    CheckState::Warn,
                    &format!("scan {}", image.reference),
                    &format!(
                        "the scanner did not run to a verdict: {}",
                        failure.summary()
                    ),
                );
                "error".to_owned()
            }
        },
    };
    Ok((image_id, scan))
}

/// Copies the binary alone into a fresh build context.
fn stage(binary: &Path, context: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(context).with_context(|| format!("creating {}", context.display()))?;
    let name = binary
        .file_name()
        .with_context(|| format!("`{}` has no file name", binary.display()))?;
    std::fs::copy(binary, context.join(name))
        .with_context(|| format!("copying `{}`", binary.display()))?;
    Ok(())
}

/// Why a step did not succeed: the one child-process failure.
type StepFailure = ProcessError;

/// What `build` reads from a failed step.
trait StepFailureExt {
    fn daemon_unreachable(&self) -> bool;
    fn summary(&self) -> String;
    fn into_error(self, what: &str, status: ExitStatus) -> CommandError;
}

impl StepFailureExt for StepFailure {
    fn daemon_unreachable(&self) -> bool {
        matches!(self, Self::Exit { stderr, .. } if stderr.contains("Cannot connect to the Docker daemon")
            || stderr.contains("Is the docker daemon running"))
    }

    fn summary(&self) -> String {
        match self {
            Self::Spawn { program, source } => {
                format!("cannot run `{}`: {source}", program.display())
            }
            Self::Exit { code, stderr, .. } => {
                let last = stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                match code {
                    Some(code) => format!("exit {code}: {last}"),
                    None => format!("killed by a signal: {last}"),
                }
            }
            Self::TimedOut { .. } => self.to_string(),
        }
    }

    fn into_error(self, what: &str, status: ExitStatus) -> CommandError {
        match self {
            Self::Spawn { program, source } => CommandError::usage(
                anyhow::Error::new(source)
                    .context(format!("{what}: cannot run `{}`", program.display())),
            )
            .hint(format!("install `{}` or put it on PATH", program.display())),
            Self::Exit {
                command,
                code,
                stdout,
                stderr,
            } => CommandError::new(
                status,
                anyhow::anyhow!(
                    "{what} failed ({}): `{command}`\n  {}",
                    process::describe_exit(code),
                    process::tail(&stderr, &stdout, 15)
                ),
            ),
            timed_out @ Self::TimedOut { .. } => CommandError::new(
                status,
                anyhow::Error::new(timed_out).context(what.to_owned()),
            ),
        }
    }
}

/// Runs one step, capturing its output (returned on success: stdout).
async fn run_step(step: &Step) -> Result<String, StepFailure> {
    Child::new(&step.program)
        .args(step.args.iter().cloned())
        .run()
        .await
        .map(|ran| ran.stdout)
}

/// True when `program` is an executable file in a PATH directory.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The commit the images are built from. Without git (or outside a repository) only an
/// explicit `--tag` can name the images.
async fn read_source(tag_given: bool) -> Result<Source, CommandError> {
    let git = |args: &[&str]| Step {
        program: "git".to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    };
    let revision = match run_step(&git(&["rev-parse", "HEAD"])).await {
        Ok(sha) => sha.trim().to_owned(),
        Err(failure) if tag_given => {
            tracing::debug!("no git revision: {}", failure.summary());
            return Ok(Source {
                revision: "unknown".to_owned(),
                committed_at: String::new(),
                dirty_diff: None,
            });
        }
        Err(failure) => {
            return Err(CommandError::usage(anyhow::anyhow!(
                "cannot read the git revision the tag is made of: {}",
                failure.summary()
            ))
            .hint("run psctl build inside the repository, or give the tag with `--tag`"));
        }
    };
    let committed_at = run_step(&git(&["log", "-1", "--format=%cI", "HEAD"]))
        .await
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();
    let status = run_step(&git(&["status", "--porcelain", "--untracked-files=no"]))
        .await
        .map_err(|failure| {
            CommandError::usage(anyhow::anyhow!(
                "cannot read the work tree state: {}",
                failure.summary()
            ))
        })?;
    let dirty_diff = if status.trim().is_empty() {
        None
    } else {
        let diff = run_step(&git(&["diff", "HEAD", "--binary"]))
            .await
            .map_err(|failure| {
                CommandError::usage(anyhow::anyhow!(
                    "cannot read the work tree's changes: {}",
                    failure.summary()
                ))
            })?;
        use sha2::Digest as _;
        Some(hex::encode(sha2::Sha256::digest(diff.as_bytes())))
    };
    Ok(Source {
        revision,
        committed_at,
        dirty_diff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn environment(production: bool) -> Environment {
        let text = format!(
            "environments:\n  e:\n    kube_context: c\n    registry: 127.0.0.1:5000\n    production: {production}\n    \
             build: {{runtime_base: 127.0.0.1:5000/psctl-base:bookworm}}\n"
        );
        crate::settings::file::parse(Path::new("psctl.yaml"), &text)
            .unwrap()
            .environments["e"]
            .clone()
    }

    fn settings() -> BuildSettings {
        BuildSettings {
            components: vec![],
            tag: None,
            ci_build: None,
            prebuilt: None,
            runtime_base: None,
            tool: None,
            allow_dirty: false,
        }
    }

    fn source(dirty: bool) -> Source {
        Source {
            revision: "abcdef0123456789abcdef0123456789abcdef01".into(),
            committed_at: "2026-01-01T00:00:00+00:00".into(),
            dirty_diff: dirty.then(|| "0011223344556677".into()),
        }
    }

    fn context() -> PlanContext {
        PlanContext {
            target_dir: "/target".into(),
            dockerfile: "Dockerfile".into(),
            staging: "/stage".into(),
            scanner: None,
        }
    }

    #[test]
    fn the_environment_supplies_registry_base_and_components() {
        let input = plan_input(&environment(false), &settings(), source(false), context()).unwrap();
        assert_eq!(input.tag, "abcdef012345");
        assert_eq!(
            input.runtime_base.as_deref(),
            Some("127.0.0.1:5000/psctl-base:bookworm")
        );
        assert_eq!(input.images.len(), 2);
        assert_eq!(
            input.binaries,
            Binaries::Cargo {
                target_dir: "/target".into()
            }
        );
        let mut flags = settings();
        flags.runtime_base = Some("gcr.io/distroless/cc-debian12:nonroot".into());
        flags.components = vec!["webhook".into()];
        flags.ci_build = Some("88".into());
        flags.prebuilt = Some("/bins".into());
        let input = plan_input(&environment(false), &flags, source(false), context()).unwrap();
        assert_eq!(input.tag, "abcdef012345-88");
        assert_eq!(
            input.runtime_base.as_deref(),
            Some("gcr.io/distroless/cc-debian12:nonroot")
        );
        assert_eq!(input.images[0].binary, "problemsolver-webhook-worker");
        assert_eq!(input.binaries, Binaries::Prebuilt("/bins".into()));
    }

    #[test]
    fn a_dirty_tree_is_tagged_dirty_and_refused_for_production() {
        let input = plan_input(&environment(false), &settings(), source(true), context()).unwrap();
        assert_eq!(input.tag, "abcdef012345-dirty-00112233");
        let error =
            plan_input(&environment(true), &settings(), source(true), context()).unwrap_err();
        assert_eq!(error.status(), ExitStatus::Usage);
        assert!(error.hints()[0].contains("--allow-dirty"));
        let mut allowed = settings();
        allowed.allow_dirty = true;
        assert!(plan_input(&environment(true), &allowed, source(true), context()).is_ok());
    }

    #[test]
    fn an_invalid_tag_or_a_missing_registry_is_a_usage_error() {
        let mut flags = settings();
        flags.tag = Some("bad tag".into());
        let error = plan_input(&environment(false), &flags, source(false), context()).unwrap_err();
        assert!(format!("{:#}", error.error()).contains("not a valid image tag"));
        let mut no_registry = environment(false);
        no_registry.registry = None;
        let error = plan_input(&no_registry, &settings(), source(false), context()).unwrap_err();
        assert!(error.hints()[0].contains("environments.e.registry"));
    }

    #[test]
    fn the_dry_run_table_shows_every_step() {
        let plan = build::plan(
            &plan_input(&environment(false), &settings(), source(false), context()).unwrap(),
        );
        let text = plan.render_table(&Style::PLAIN);
        assert!(
            text.starts_with("build plan for `e`: tag abcdef012345"),
            "{text}"
        );
        assert!(
            text.contains("cargo build --release --locked -p problemsolver-poller"),
            "{text}"
        );
        assert!(
            text.contains("docker push 127.0.0.1:5000/problemsolver-webhook-worker:abcdef012345"),
            "{text}"
        );
        assert!(text.contains("scan: skipped"), "{text}");
    }

    #[test]
    fn a_failed_step_reports_the_command_and_the_last_lines() {
        let failure = StepFailure::Exit {
            command: "docker build x".into(),
            code: Some(1),
            stdout: String::new(),
            stderr: "step 1\nCannot connect to the Docker daemon at unix:///var/run/docker.sock\n"
                .into(),
        };
        assert!(failure.daemon_unreachable());
        let error = failure.into_error("building x", ExitStatus::Unreachable);
        assert_eq!(error.status(), ExitStatus::Unreachable);
        assert!(
            format!("{:#}", error.error()).contains("building x failed (exit 1): `docker build x`")
        );
    }
}
