//! The Helm driver: every Helm invocation is first a plain [`HelmCommand`] value (program, argv,
//! values file content) that `--dry-run` prints and tests inspect; [`HelmCommand::run`] executes it.
//!
//! Values travel in a 0600 temporary file, never on the command line; only the non-secret
//! `image.repository`/`image.tag` use `--set`, so the plan shows what is being deployed.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;

use crate::error::{Classify, ExitStatus};

/// Where and as whom Helm talks to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HelmTarget {
    pub program: PathBuf,
    pub namespace: String,
    pub kube_context: String,
    pub kubeconfig: Option<PathBuf>,
}

/// One Helm invocation as data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HelmCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// YAML written to a 0600 file whose path replaces [`VALUES_PLACEHOLDER`] in `args`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values_yaml: Option<String>,
}

/// Stands for the temporary values file in a planned argv.
pub const VALUES_PLACEHOLDER: &str = "<values-file>";

/// What to install or upgrade.
#[derive(Debug, Clone, PartialEq)]
pub struct UpgradeSpec<'a> {
    pub release: &'a str,
    pub chart: &'a Path,
    /// Full repository, e.g. `127.0.0.1:5000/problemsolver-poller`.
    pub image_repository: Option<String>,
    pub image_tag: Option<&'a str>,
    /// Extra non-secret chart values from psctl.yaml.
    pub values: &'a serde_yaml::Mapping,
    pub description: &'a str,
}

impl HelmTarget {
    fn connection_args(&self) -> Vec<String> {
        let mut args = vec![
            "--namespace".to_owned(),
            self.namespace.clone(),
            "--kube-context".to_owned(),
            self.kube_context.clone(),
        ];
        if let Some(kubeconfig) = &self.kubeconfig {
            args.push("--kubeconfig".to_owned());
            args.push(kubeconfig.display().to_string());
        }
        args
    }

    /// `helm upgrade --install` without `--wait`: psctl tracks the rollout itself.
    pub fn upgrade_install(&self, spec: &UpgradeSpec<'_>) -> Result<HelmCommand, HelmError> {
        let mut args = vec![
            "upgrade".to_owned(),
            "--install".to_owned(),
            spec.release.to_owned(),
            spec.chart.display().to_string(),
        ];
        args.extend(self.connection_args());
        args.extend(["--max-history".to_owned(), "20".to_owned()]);
        args.extend(["--description".to_owned(), spec.description.to_owned()]);
        let values_yaml = if spec.values.is_empty() {
            None
        } else {
            args.extend(["--values".to_owned(), VALUES_PLACEHOLDER.to_owned()]);
            Some(serde_yaml::to_string(spec.values).map_err(HelmError::Values)?)
        };
        if let Some(repository) = &spec.image_repository {
            args.extend([
                "--set-string".to_owned(),
                format!("image.repository={repository}"),
            ]);
        }
        if let Some(tag) = spec.image_tag {
            args.extend(["--set-string".to_owned(), format!("image.tag={tag}")]);
        }
        Ok(HelmCommand {
            program: self.program.clone(),
            args,
            values_yaml,
        })
    }

    /// `helm rollback RELEASE REVISION`.
    pub fn rollback(&self, release: &str, revision: u32) -> HelmCommand {
        let mut args = vec![
            "rollback".to_owned(),
            release.to_owned(),
            revision.to_string(),
        ];
        args.extend(self.connection_args());
        HelmCommand {
            program: self.program.clone(),
            args,
            values_yaml: None,
        }
    }

    /// `helm uninstall RELEASE` (the only undo of a failed first install).
    pub fn uninstall(&self, release: &str) -> HelmCommand {
        let mut args = vec!["uninstall".to_owned(), release.to_owned()];
        args.extend(self.connection_args());
        HelmCommand {
            program: self.program.clone(),
            args,
            values_yaml: None,
        }
    }
}

impl HelmCommand {
    /// The argv as a shell-like line, for plans and logs (values file shown as a placeholder).
    pub fn display(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs Helm, returning its stdout; failures carry Helm's stderr.
    pub async fn run(&self) -> Result<String, HelmError> {
        let values_file = match &self.values_yaml {
            Some(yaml) => Some(write_private_file(yaml)?),
            None => None,
        };
        let args: Vec<String> = self
            .args
            .iter()
            .map(|arg| match (&values_file, arg.as_str()) {
                (Some(file), VALUES_PLACEHOLDER) => file.path().display().to_string(),
                _ => arg.clone(),
            })
            .collect();
        let child = tokio::process::Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| HelmError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        drop(values_file);
        let stdout = String::from_utf8_lossy(&child.stdout).into_owned();
        if child.status.success() {
            Ok(stdout)
        } else {
            Err(HelmError::Failed {
                command: self.display(),
                status: child.status.code(),
                stderr: String::from_utf8_lossy(&child.stderr).trim().to_owned(),
            })
        }
    }
}

fn write_private_file(content: &str) -> Result<tempfile::NamedTempFile, HelmError> {
    use std::io::Write as _;
    // NamedTempFile is created 0600 on Unix: only this user can read the values.
    let mut file = tempfile::Builder::new()
        .prefix("psctl-values-")
        .suffix(".yaml")
        .tempfile()
        .map_err(HelmError::TempFile)?;
    file.write_all(content.as_bytes())
        .map_err(HelmError::TempFile)?;
    file.flush().map_err(HelmError::TempFile)?;
    Ok(file)
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@<>".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error("cannot run Helm at `{}`", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed (exit {}): {stderr}", status.map_or_else(|| "signal".to_owned(), |c| c.to_string()))]
    Failed {
        command: String,
        status: Option<i32>,
        stderr: String,
    },
    #[error("cannot write the values file")]
    TempFile(#[source] std::io::Error),
    #[error("cannot serialise chart values")]
    Values(#[source] serde_yaml::Error),
}

impl Classify for HelmError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Spawn { .. } | Self::TempFile(_) | Self::Values(_) => ExitStatus::Usage,
            Self::Failed { .. } => ExitStatus::VerificationFailed,
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Spawn { .. } => {
                vec!["set `helm:` in psctl.yaml, or `$HELM`, or put `helm` on PATH".to_owned()]
            }
            _ => Vec::new(),
        }
    }
}

/// The Helm program: the environment's `helm`, else `$HELM`, else `helm` on PATH.
pub fn resolve_program(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("HELM")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("helm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> HelmTarget {
        HelmTarget {
            program: PathBuf::from("/opt/helm"),
            namespace: "default".into(),
            kube_context: "psctl-sandbox".into(),
            kubeconfig: Some(PathBuf::from("/state/kubeconfig")),
        }
    }

    #[test]
    fn upgrade_argv_is_pinned_to_context_and_namespace_and_never_waits() {
        let values: serde_yaml::Mapping =
            serde_yaml::from_str("replicaCount: 2\nenv: {RUST_LOG: info}").unwrap();
        let command = target()
            .upgrade_install(&UpgradeSpec {
                release: "problemsolver-webhook",
                chart: Path::new("charts/webhook-worker"),
                image_repository: Some("127.0.0.1:5000/problemsolver-webhook-worker".into()),
                image_tag: Some("1.4.2"),
                values: &values,
                description: "psctl deploy 1.4.2",
            })
            .unwrap();
        assert_eq!(
            command.display(),
            "/opt/helm upgrade --install problemsolver-webhook charts/webhook-worker --namespace default \
             --kube-context psctl-sandbox --kubeconfig /state/kubeconfig --max-history 20 \
             --description 'psctl deploy 1.4.2' --values <values-file> \
             --set-string image.repository=127.0.0.1:5000/problemsolver-webhook-worker --set-string image.tag=1.4.2"
        );
        assert!(
            !command
                .args
                .iter()
                .any(|a| a.starts_with("--wait") || a == "--atomic")
        );
        assert_eq!(
            command.values_yaml.as_deref(),
            Some("replicaCount: 2\nenv:\n  RUST_LOG: info\n")
        );
    }

    #[test]
    fn without_values_there_is_no_values_file() {
        let command = target()
            .upgrade_install(&UpgradeSpec {
                release: "r",
                chart: Path::new("c"),
                image_repository: None,
                image_tag: None,
                values: &serde_yaml::Mapping::new(),
                description: "d",
            })
            .unwrap();
        assert!(command.values_yaml.is_none());
        assert!(!command.args.contains(&"--values".to_owned()));
    }

    #[test]
    fn rollback_and_uninstall_argv() {
        assert_eq!(
            target().rollback("problemsolver-poller", 3).display(),
            "/opt/helm rollback problemsolver-poller 3 --namespace default --kube-context psctl-sandbox --kubeconfig /state/kubeconfig"
        );
        assert_eq!(
            target().uninstall("r").args[..2],
            ["uninstall".to_owned(), "r".to_owned()]
        );
    }

    #[tokio::test]
    async fn the_values_file_is_private_and_removed_after_the_run() {
        // `sh -c` stands in for Helm: it reports the mode of the file it was given, then its content.
        let command = HelmCommand {
            program: PathBuf::from("sh"),
            args: vec![
                "-c".into(),
                "stat -c %a \"$0\" && cat \"$0\" && echo \"$0\"".into(),
                VALUES_PLACEHOLDER.into(),
            ],
            values_yaml: Some("secretish: value\n".into()),
        };
        let out = command.run().await.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..2], ["600", "secretish: value"]);
        assert!(!Path::new(lines[2]).exists());
    }

    #[tokio::test]
    async fn a_failing_helm_reports_its_stderr() {
        let command = HelmCommand {
            program: PathBuf::from("sh"),
            args: vec![
                "-c".into(),
                "echo 'UPGRADE FAILED: another operation is in progress' >&2; exit 1".into(),
            ],
            values_yaml: None,
        };
        let error = command.run().await.unwrap_err().to_string();
        assert!(
            error.ends_with("failed (exit 1): UPGRADE FAILED: another operation is in progress"),
            "{error}"
        );
    }
}
