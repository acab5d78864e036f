//! What a build is made of: `psctl build`'s flags resolved, and the plan input assembled from
//! the environment, the flags, the work tree and the machine. Pure apart from the values passed
//! in.

use std::path::PathBuf;

use super::{Binaries, ImageInput, PlanInput, Scanner, Source};
use crate::error::CommandError;
use crate::settings::{BuildTool, Environment};

/// `psctl build`'s flags, resolved.
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
        None => super::immutable_tag(&source, settings.ci_build.as_deref()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitStatus;
    use crate::output::{Render as _, Style};
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
        let plan = super::super::plan(
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
}
