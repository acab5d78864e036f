//! Runs a build plan: the Docker daemon (or Podman) and the registry are checked, the binaries
//! built, every image built, scanned and checked against the registry before the first push
//! (so a refusal leaves the registry untouched), then pushed and read back by digest.
//!
//! Every program runs through `process`; every registry read through `registry`.

use std::path::Path;

use anyhow::Context as _;

use super::report::{BuildReport, ImageResult};
use super::{Binaries, BuildPlan, ImagePlan, PlanInput, PushDecision, Source, Step};
use crate::error::{CommandError, ExitStatus};
use crate::output::{CheckState, Output};
use crate::process::{self, Child, ProcessError};
use crate::registry::Registry;
use crate::settings::BuildTool;

/// What an executed plan leaves: the report, and the refusal when the scanner found
/// vulnerabilities or a tag holds other content (nothing was pushed then).
#[derive(Debug)]
pub struct Executed {
    pub report: BuildReport,
    pub refusal: Option<CommandError>,
}

/// Checks, builds, scans, decides and pushes every image of `plan`.
pub async fn execute(
    plan: &BuildPlan,
    input: &PlanInput,
    output: &Output,
) -> Result<Executed, CommandError> {
    let registry = Registry::new(&plan.registry)?.guard(output.redactor());
    preflight(plan, input, &registry, output).await?;

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
        let refusal = CommandError::verification(anyhow::anyhow!(
            "the scanner found HIGH or CRITICAL vulnerabilities in {}; nothing was pushed",
            scan_findings.join(", ")
        ))
        .hint("the scanner's findings are printed above; rebuild on a patched runtime base");
        return Ok(Executed {
            report,
            refusal: Some(refusal),
        });
    }

    // Every tag is checked before the first push: a refusal leaves the registry as it was.
    let mut decisions = Vec::new();
    let mut refused = Vec::new();
    for (image, result) in plan.images.iter().zip(&mut report.images) {
        let remote = registry.manifest(&image.image, &plan.tag).await?;
        let decision = super::decide(&result.image_id, remote.as_ref());
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
        let refusal = CommandError::usage(anyhow::anyhow!(
            "refusing to overwrite {}: tags are immutable and the registry holds different content under them; nothing was pushed",
            refused.join(", ")
        ))
        .hint("build from a new commit (the tag follows the git SHA), or give a new `--tag` / `--ci-build`");
        return Ok(Executed {
            report,
            refusal: Some(refusal),
        });
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
    Ok(Executed {
        report,
        refusal: None,
    })
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
    // The tag of the first image: the registry answers, and accepts psctl's identity, before
    // anything is built.
    let probe = plan
        .images
        .first()
        .map(|image| registry.manifest(&image.image, &plan.tag));
    let answered = match probe {
        Some(probe) => probe.await.map(drop),
        None => Ok(()),
    };
    match answered {
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
pub async fn run_step(step: &Step) -> Result<String, StepFailure> {
    Child::new(&step.program)
        .args(step.args.iter().cloned())
        .run()
        .await
        .map(|ran| ran.stdout)
}

/// True when `program` is an executable file in a PATH directory.
pub fn on_path(program: &str) -> bool {
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
pub async fn read_source(tag_given: bool) -> Result<Source, CommandError> {
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
