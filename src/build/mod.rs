//! Building the service images, as a plan: the immutable tag, the argv of every step (cargo,
//! `docker build`, scan, `docker push`) and the decision whether a tag may be pushed.
//!
//! This file, `input.rs` (flags and environment into the plan input) and `report.rs` (what is
//! printed) are pure; `execute.rs` runs the plan. No step ever carries a secret: the build
//! context is a directory holding one staged binary, nothing else, and `docker push`
//! authenticates with Docker's own credentials.

pub mod execute;
pub mod input;
pub mod report;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::registry::RemoteManifest;
use crate::settings::BuildTool;

/// One program invocation, kept as argv (never a shell string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub program: String,
    pub args: Vec<String>,
}

impl Step {
    fn new(program: &str, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            program: program.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The command line for humans, every word shell-quoted.
    pub fn display(&self) -> String {
        crate::process::command_line(&self.program, self.args.iter().map(String::as_str))
    }
}

/// The state of the git work tree the images are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Full commit SHA of `HEAD`.
    pub revision: String,
    /// Commit time of `HEAD` (RFC 3339), used as the image's `created` so that the same commit
    /// and binaries give the same image.
    pub committed_at: String,
    /// SHA-256 of `git diff HEAD --binary` when tracked files differ from `HEAD`.
    pub dirty_diff: Option<String>,
}

/// `<sha12>[-dirty-<diff8>][-<ci-build>]`: one tag per content. A dirty tree gets the hash of
/// its diff, so a different edit can never reuse (and be refused as overwriting) a tag.
pub fn immutable_tag(source: &Source, ci_build: Option<&str>) -> String {
    let mut tag: String = source.revision.chars().take(12).collect();
    if let Some(diff) = &source.dirty_diff {
        tag.push_str("-dirty-");
        tag.extend(diff.chars().take(8));
    }
    if let Some(build) = ci_build {
        tag.push('-');
        tag.push_str(build);
    }
    tag
}

/// Where the service binaries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binaries {
    /// `cargo build --release --locked -p …`; binaries land in `<target_dir>/release`.
    Cargo { target_dir: PathBuf },
    /// Already built, in this directory.
    Prebuilt(PathBuf),
}

/// A vulnerability scanner found on PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scanner {
    Trivy,
    Grype,
}

impl Scanner {
    pub fn name(self) -> &'static str {
        match self {
            Self::Trivy => "trivy",
            Self::Grype => "grype",
        }
    }

    /// The scan of a local image; exits non-zero on HIGH or CRITICAL findings.
    pub fn step(self, reference: &str) -> Step {
        match self {
            Self::Trivy => Step::new(
                "trivy",
                [
                    "image",
                    "--quiet",
                    "--no-progress",
                    "--exit-code",
                    "1",
                    "--severity",
                    "HIGH,CRITICAL",
                    reference,
                ],
            ),
            Self::Grype => Step::new(
                "grype",
                [
                    &format!("docker:{reference}"),
                    "--fail-on",
                    "high",
                    "--quiet",
                ],
            ),
        }
    }
}

/// The first scanner `on_path` says exists (trivy before grype).
pub fn detect_scanner(on_path: impl Fn(&str) -> bool) -> Option<Scanner> {
    [Scanner::Trivy, Scanner::Grype]
        .into_iter()
        .find(|s| on_path(s.name()))
}

/// What to build for one component.
#[derive(Debug, Clone)]
pub struct ImageInput {
    pub component: String,
    pub image: String,
    pub binary: String,
}

/// Everything the plan is made of.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub environment: String,
    /// `127.0.0.1:5000` or `ghcr.io/acme`.
    pub registry: String,
    pub images: Vec<ImageInput>,
    pub tag: String,
    pub source: Source,
    pub tool: BuildTool,
    pub dockerfile: PathBuf,
    pub runtime_base: Option<String>,
    pub binaries: Binaries,
    /// Parent of the per-image build contexts.
    pub staging: PathBuf,
    pub scanner: Option<Scanner>,
}

/// One image of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub component: String,
    pub image: String,
    /// `<registry>/<image>:<tag>`.
    pub reference: String,
    /// The binary copied into the build context.
    pub binary: PathBuf,
    /// The build context: a directory holding only the staged binary.
    pub context: PathBuf,
    /// Where the build writes the image ID.
    pub image_id_file: PathBuf,
    pub build: Step,
    pub scan: Option<Step>,
    pub push: Step,
    /// Drops the local tag again when the registry refuses it, so no local tag names content
    /// the registry's tag does not hold.
    pub untag: Step,
}

/// The plan of `psctl build`: what `--dry-run` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BuildPlan {
    pub environment: String,
    pub registry: String,
    pub tag: String,
    pub revision: String,
    pub dirty: bool,
    pub tool: BuildTool,
    pub runtime_base: Option<String>,
    /// `None` when prebuilt binaries are used.
    pub cargo: Option<Step>,
    /// `None` when no scanner is on PATH (reported as skipped).
    pub scanner: Option<Scanner>,
    pub images: Vec<ImagePlan>,
}

/// Builds the plan. Pure.
pub fn plan(input: &PlanInput) -> BuildPlan {
    let binary_dir = match &input.binaries {
        Binaries::Cargo { target_dir } => target_dir.join("release"),
        Binaries::Prebuilt(dir) => dir.clone(),
    };
    let cargo = match &input.binaries {
        Binaries::Cargo { .. } => {
            let mut args = vec!["build", "--release", "--locked"];
            for image in &input.images {
                args.push("-p");
                args.push(&image.binary);
            }
            Some(Step::new("cargo", args))
        }
        Binaries::Prebuilt(_) => None,
    };
    let repository = input.registry.trim_end_matches('/');
    let images = input
        .images
        .iter()
        .map(|image| {
            let reference = format!("{repository}/{}:{}", image.image, input.tag);
            let context = input.staging.join(&image.image);
            let image_id_file = input.staging.join(format!("{}.iid", image.image));
            ImagePlan {
                component: image.component.clone(),
                image: image.image.clone(),
                binary: binary_dir.join(&image.binary),
                build: build_step(input, &image.binary, &reference, &context, &image_id_file),
                scan: input.scanner.map(|s| s.step(&reference)),
                push: push_step(input.tool, &input.registry, &reference),
                untag: match input.tool {
                    BuildTool::Podman => Step::new("podman", ["untag", reference.as_str()]),
                    BuildTool::Docker | BuildTool::Buildx => {
                        Step::new("docker", ["rmi", "--no-prune", reference.as_str()])
                    }
                },
                reference,
                context,
                image_id_file,
            }
        })
        .collect();
    BuildPlan {
        environment: input.environment.clone(),
        registry: input.registry.clone(),
        tag: input.tag.clone(),
        revision: input.source.revision.clone(),
        dirty: input.source.dirty_diff.is_some(),
        tool: input.tool,
        runtime_base: input.runtime_base.clone(),
        cargo,
        scanner: input.scanner,
        images,
    }
}

fn build_step(
    input: &PlanInput,
    binary: &str,
    reference: &str,
    context: &Path,
    image_id_file: &Path,
) -> Step {
    let (program, mut args) = match input.tool {
        BuildTool::Docker => ("docker", vec!["build".to_owned()]),
        BuildTool::Buildx => (
            "docker",
            vec!["buildx".to_owned(), "build".to_owned(), "--load".to_owned()],
        ),
        BuildTool::Podman => ("podman", vec!["build".to_owned()]),
    };
    let mut arg = |name: &str, value: String| {
        args.push(name.to_owned());
        args.push(value);
    };
    arg("--file", input.dockerfile.display().to_string());
    if let Some(base) = &input.runtime_base {
        arg("--build-arg", format!("RUNTIME_BASE={base}"));
    }
    arg("--build-arg", format!("BINARY={binary}"));
    arg("--build-arg", "BINARY_DIR=.".to_owned());
    arg("--build-arg", format!("REVISION={}", input.source.revision));
    arg("--build-arg", format!("VERSION={}", input.tag));
    arg(
        "--build-arg",
        format!("CREATED={}", input.source.committed_at),
    );
    arg("--iidfile", image_id_file.display().to_string());
    arg("--tag", reference.to_owned());
    args.push(context.display().to_string());
    Step {
        program: program.to_owned(),
        args,
    }
}

fn push_step(tool: BuildTool, registry: &str, reference: &str) -> Step {
    match tool {
        BuildTool::Docker | BuildTool::Buildx => Step::new("docker", ["push", reference]),
        BuildTool::Podman => {
            let plain_http = crate::registry::RegistryAddress::parse(registry).plain_http();
            let mut args = vec!["push"];
            if plain_http {
                args.push("--tls-verify=false");
            }
            args.push(reference);
            Step::new("podman", args)
        }
    }
}

/// What to do with a freshly built image given what its tag points at in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushDecision {
    /// The tag is free: push.
    Push,
    /// The tag already holds exactly this image: nothing to push.
    AlreadyPresent { digest: String },
    /// The tag holds another image: refuse, tags are immutable.
    Refuse { remote: String },
}

/// Decides from the local image ID and the registry's manifest for the tag. Pure.
pub fn decide(image_id: &str, remote: Option<&RemoteManifest>) -> PushDecision {
    match remote {
        None => PushDecision::Push,
        Some(remote) if remote.matches_image_id(image_id) => PushDecision::AlreadyPresent {
            digest: remote.digest.clone(),
        },
        Some(remote) => PushDecision::Refuse {
            remote: remote
                .config_digest
                .clone()
                .unwrap_or_else(|| remote.digest.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dirty: bool) -> Source {
        Source {
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            committed_at: "2026-01-02T03:04:05+00:00".into(),
            dirty_diff: dirty.then(|| "feedc0de12345678".into()),
        }
    }

    fn input(tool: BuildTool, binaries: Binaries) -> PlanInput {
        PlanInput {
            environment: "sandbox".into(),
            registry: "127.0.0.1:5000".into(),
            images: vec![
                ImageInput {
                    component: "poller".into(),
                    image: "problemsolver-poller".into(),
                    binary: "problemsolver-poller".into(),
                },
                ImageInput {
                    component: "webhook".into(),
                    image: "problemsolver-webhook-worker".into(),
                    binary: "problemsolver-webhook-worker".into(),
                },
            ],
            tag: immutable_tag(&source(false), None),
            source: source(false),
            tool,
            dockerfile: "Dockerfile".into(),
            runtime_base: Some("127.0.0.1:5000/psctl-base:bookworm".into()),
            binaries,
            staging: "/tmp/stage".into(),
            scanner: None,
        }
    }

    #[test]
    fn tags_are_the_short_sha_with_dirty_and_ci_suffixes() {
        assert_eq!(immutable_tag(&source(false), None), "0123456789ab");
        assert_eq!(
            immutable_tag(&source(false), Some("417")),
            "0123456789ab-417"
        );
        assert_eq!(
            immutable_tag(&source(true), Some("417")),
            "0123456789ab-dirty-feedc0de-417"
        );
        assert!(crate::registry::check_tag("0123456789ab-dirty-feedc0de-417").is_ok());
    }

    #[test]
    fn the_docker_plan_builds_from_cargo_with_labels_and_an_isolated_context() {
        let plan = plan(&input(
            BuildTool::Docker,
            Binaries::Cargo {
                target_dir: "/t".into(),
            },
        ));
        assert_eq!(
            plan.cargo.as_ref().unwrap().display(),
            "cargo build --release --locked -p problemsolver-poller -p problemsolver-webhook-worker"
        );
        let poller = &plan.images[0];
        assert_eq!(
            poller.reference,
            "127.0.0.1:5000/problemsolver-poller:0123456789ab"
        );
        assert_eq!(
            poller.binary,
            PathBuf::from("/t/release/problemsolver-poller")
        );
        assert_eq!(
            poller.build.display(),
            "docker build --file Dockerfile \
             --build-arg RUNTIME_BASE=127.0.0.1:5000/psctl-base:bookworm \
             --build-arg BINARY=problemsolver-poller --build-arg BINARY_DIR=. \
             --build-arg REVISION=0123456789abcdef0123456789abcdef01234567 \
             --build-arg VERSION=0123456789ab --build-arg CREATED=2026-01-02T03:04:05+00:00 \
             --iidfile /tmp/stage/problemsolver-poller.iid \
             --tag 127.0.0.1:5000/problemsolver-poller:0123456789ab /tmp/stage/problemsolver-poller"
        );
        assert_eq!(
            poller.push.display(),
            "docker push 127.0.0.1:5000/problemsolver-poller:0123456789ab"
        );
        assert!(poller.scan.is_none());
        assert_eq!(
            poller.untag.display(),
            "docker rmi --no-prune 127.0.0.1:5000/problemsolver-poller:0123456789ab"
        );
    }

    #[test]
    fn buildx_loads_and_podman_pushes_to_a_loopback_registry_over_http() {
        let mut buildx = input(BuildTool::Buildx, Binaries::Prebuilt("/bin".into()));
        buildx.runtime_base = None;
        let plan_buildx = plan(&buildx);
        assert!(plan_buildx.cargo.is_none());
        assert_eq!(
            plan_buildx.images[1].binary,
            PathBuf::from("/bin/problemsolver-webhook-worker")
        );
        let build = plan_buildx.images[1].build.display();
        assert!(
            build.starts_with("docker buildx build --load --file Dockerfile --build-arg BINARY="),
            "{build}"
        );
        let podman = plan(&input(BuildTool::Podman, Binaries::Prebuilt("/bin".into())));
        assert!(
            podman.images[0]
                .build
                .display()
                .starts_with("podman build ")
        );
        assert_eq!(
            podman.images[0].push.display(),
            "podman push --tls-verify=false 127.0.0.1:5000/problemsolver-poller:0123456789ab"
        );
    }

    #[test]
    fn a_scanner_on_path_is_planned_for_every_image() {
        assert_eq!(detect_scanner(|p| p == "grype"), Some(Scanner::Grype));
        assert_eq!(detect_scanner(|_| true), Some(Scanner::Trivy));
        assert_eq!(detect_scanner(|_| false), None);
        let mut with_scan = input(BuildTool::Docker, Binaries::Prebuilt("/b".into()));
        with_scan.scanner = Some(Scanner::Trivy);
        let plan = plan(&with_scan);
        assert_eq!(
            plan.images[0].scan.as_ref().unwrap().display(),
            "trivy image --quiet --no-progress --exit-code 1 --severity HIGH,CRITICAL \
             127.0.0.1:5000/problemsolver-poller:0123456789ab"
        );
    }

    #[test]
    fn a_tag_is_pushed_when_free_skipped_when_identical_and_refused_otherwise() {
        let remote = RemoteManifest {
            digest: "sha256:manifest".into(),
            config_digest: Some("sha256:config".into()),
            media_type: String::new(),
        };
        assert_eq!(decide("sha256:config", None), PushDecision::Push);
        assert_eq!(
            decide("sha256:config", Some(&remote)),
            PushDecision::AlreadyPresent {
                digest: "sha256:manifest".into()
            }
        );
        assert_eq!(
            decide("sha256:other", Some(&remote)),
            PushDecision::Refuse {
                remote: "sha256:config".into()
            }
        );
    }

    #[test]
    fn display_quotes_arguments_with_spaces() {
        let step = Step::new("docker", ["build", "a b", "it's"]);
        assert_eq!(step.display(), r"docker build 'a b' 'it'\''s'");
    }
}
