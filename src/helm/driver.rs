//! The Helm driver: every Helm invocation is first a plain [`HelmCommand`] value (program, argv,
//! values) that `--dry-run` prints and tests inspect; [`HelmCommand::run`] executes it.
//!
//! Every value psctl hands Helm (the image, psctl.yaml's chart values, the canary switches, the
//! Secret fingerprint annotation) travels in one values file, written 0600 in a private
//! temporary directory and removed after the run; never `--set`/`--set-string`, whose syntax
//! (`,` separates assignments, `=` and `.` structure them) a value could otherwise smuggle
//! extra assignments through. The file is JSON, which Helm reads as YAML: every string stays a
//! quoted string (a tag `on` or `1_000` is not turned into a boolean or a number), and tags are
//! checked against the OCI grammar before they are written.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Classify, ExitStatus};
use crate::process::{self, Child, ProcessError};
use crate::settings::Environment;

/// Chart values as psctl hands them to Helm.
pub type Values = serde_json::Map<String, Value>;

/// Where and as whom Helm talks to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HelmTarget {
    pub program: PathBuf,
    pub namespace: String,
    pub kube_context: String,
    pub kubeconfig: Option<PathBuf>,
    /// psctl itself uses the pod's ServiceAccount (no kubeconfig anywhere): Helm is given no
    /// context or kubeconfig, so client-go falls back to the same in-cluster configuration.
    #[serde(skip)]
    pub in_cluster: bool,
}

/// One Helm invocation as data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HelmCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Written to a 0600 file whose path replaces [`VALUES_PLACEHOLDER`] in `args`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Values>,
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
    pub values: &'a crate::yaml::Mapping,
    pub description: &'a str,
}

/// psctl.yaml's (or a `--values` file's) chart values in the form Helm is given.
pub fn chart_values(values: &crate::yaml::Mapping) -> Result<Values, HelmError> {
    match serde_json::to_value(values).map_err(HelmError::Values)? {
        Value::Object(map) => Ok(map),
        _ => Ok(Values::new()),
    }
}

/// `image.repository` / `image.tag` (each only when given); the tag is checked first.
pub fn image_values(repository: Option<&str>, tag: Option<&str>) -> Result<Values, HelmError> {
    let mut values = Values::new();
    if let Some(repository) = repository {
        set(&mut values, &["image", "repository"], repository.into());
    }
    if let Some(tag) = tag {
        crate::registry::check_tag(tag).map_err(HelmError::InvalidTag)?;
        set(&mut values, &["image", "tag"], tag.into());
    }
    Ok(values)
}

/// Sets `value` at the nested `path`, creating (or replacing non-map) intermediate maps.
pub fn set(values: &mut Values, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = values;
    for key in parents {
        let entry = current
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Values::new()));
        if !entry.is_object() {
            *entry = Value::Object(Values::new());
        }
        let Value::Object(map) = entry else {
            unreachable!("just made an object")
        };
        current = map;
    }
    current.insert((*last).to_owned(), value);
}

/// Deep-merges `overlay` into `base`: maps merge key by key, anything else is replaced.
pub fn merge(base: &mut Values, overlay: Values) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming)) => merge(existing, incoming),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl HelmTarget {
    fn connection_args(&self) -> Vec<String> {
        let mut args = vec!["--namespace".to_owned(), self.namespace.clone()];
        if self.in_cluster {
            return args;
        }
        args.push("--kube-context".to_owned());
        args.push(self.kube_context.clone());
        if let Some(kubeconfig) = &self.kubeconfig {
            args.push("--kubeconfig".to_owned());
            args.push(kubeconfig.display().to_string());
        }
        args
    }

    /// `helm upgrade --install` without `--wait`: psctl tracks the rollout itself. psctl's own
    /// values (the image) are merged over psctl.yaml's, as `--set` used to take precedence.
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
        let mut command = HelmCommand {
            program: self.program.clone(),
            args,
            values: None,
        };
        command.add_values(chart_values(spec.values)?);
        command.add_values(image_values(
            spec.image_repository.as_deref(),
            spec.image_tag,
        )?);
        Ok(command)
    }

    /// `helm template RELEASE CHART` with `values` (the chart rendered locally, nothing applied).
    pub fn template(&self, release: &str, chart: &Path, values: Values) -> HelmCommand {
        let mut command = HelmCommand {
            program: self.program.clone(),
            args: vec![
                "template".to_owned(),
                release.to_owned(),
                chart.display().to_string(),
            ],
            values: None,
        };
        command.add_values(values);
        command
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
            values: None,
        }
    }

    /// `helm uninstall RELEASE` (the only undo of a failed first install).
    pub fn uninstall(&self, release: &str) -> HelmCommand {
        let mut args = vec!["uninstall".to_owned(), release.to_owned()];
        args.extend(self.connection_args());
        HelmCommand {
            program: self.program.clone(),
            args,
            values: None,
        }
    }
}

impl HelmCommand {
    /// Merges `overlay` into the values (added later wins); the first non-empty values add
    /// `--values <values-file>` to the argv.
    pub fn add_values(&mut self, overlay: Values) {
        if overlay.is_empty() {
            return;
        }
        match &mut self.values {
            Some(values) => merge(values, overlay),
            None => {
                self.args
                    .extend(["--values".to_owned(), VALUES_PLACEHOLDER.to_owned()]);
                self.values = Some(overlay);
            }
        }
    }

    /// The values file's content exactly as written (JSON, which Helm reads as YAML).
    pub fn values_file(&self) -> Option<String> {
        self.values.as_ref().map(|values| {
            let mut text = serde_json::to_string_pretty(values)
                .unwrap_or_else(|_| unreachable!("a JSON map always serialises"));
            text.push('\n');
            text
        })
    }

    /// The argv as a shell-like line, for plans and logs (values file shown as a placeholder).
    pub fn display(&self) -> String {
        std::iter::once(process::quote(&self.program.to_string_lossy()))
            .chain(self.args.iter().map(|arg| match arg.as_str() {
                VALUES_PLACEHOLDER => arg.clone(),
                _ => process::quote(arg),
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs Helm, returning its stdout; failures carry Helm's stderr.
    pub async fn run(&self) -> Result<String, HelmError> {
        let values_file = match self.values_file() {
            Some(content) => Some(PrivateFile::write(&content)?),
            None => None,
        };
        let args: Vec<String> = self
            .args
            .iter()
            .map(|arg| match (&values_file, arg.as_str()) {
                (Some(file), VALUES_PLACEHOLDER) => file.path.display().to_string(),
                _ => arg.clone(),
            })
            .collect();
        let result = Child::new(&self.program).args(args).run().await;
        drop(values_file);
        match result {
            Ok(ran) => Ok(ran.stdout),
            Err(ProcessError::Exit { code, stderr, .. }) => Err(HelmError::Failed {
                command: self.display(),
                status: code,
                stderr: stderr.trim().to_owned(),
            }),
            Err(ProcessError::Spawn { program, source }) => {
                Err(HelmError::Spawn { program, source })
            }
            Err(error @ ProcessError::TimedOut { .. }) => Err(HelmError::Spawn {
                program: self.program.clone(),
                source: std::io::Error::other(error.to_string()),
            }),
        }
    }
}

/// A values file readable by this user only, in a directory of its own; both are removed when
/// this is dropped.
struct PrivateFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivateFile {
    fn write(content: &str) -> Result<Self, HelmError> {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        // The directory is 0700 and the file 0600 (never wider, whatever the umask); the file
        // must not exist yet.
        let dir = tempfile::Builder::new()
            .prefix("psctl-helm-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(HelmError::TempFile)?;
        let path = dir.path().join("values.json");
        // Helm splits `--values` at commas: a path holding one would name other files.
        if path.to_string_lossy().contains(',') {
            return Err(HelmError::TempFile(std::io::Error::other(format!(
                "the temporary directory `{}` contains a comma, which Helm would split; set TMPDIR elsewhere",
                dir.path().display()
            ))));
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(HelmError::TempFile)?;
        file.write_all(content.as_bytes())
            .map_err(HelmError::TempFile)?;
        file.flush().map_err(HelmError::TempFile)?;
        Ok(Self { path, _dir: dir })
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
    #[error("cannot hand the chart values to Helm (keys must be strings)")]
    Values(#[source] serde_json::Error),
    #[error("{0}")]
    InvalidTag(String),
}

impl Classify for HelmError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Spawn { .. } | Self::TempFile(_) | Self::Values(_) | Self::InvalidTag(_) => {
                ExitStatus::Usage
            }
            Self::Failed { .. } => ExitStatus::VerificationFailed,
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Spawn { .. } => {
                vec!["set `helm:` in psctl.yaml, or `$HELM`, or put `helm` on PATH".to_owned()]
            }
            Self::Failed { stderr, .. } if refused_as_immutable(stderr) => vec![
                "the chart changes a field Kubernetes fixes when the object is created (a workload's `spec.selector`, a StatefulSet's spec, a Job's template, a Secret's type, a Service's cluster IP): keep the old value in the chart or its values; to change it, delete the object and deploy again in a maintenance window (psctl never deletes it for you)".to_owned(),
            ],
            _ => Vec::new(),
        }
    }
}

/// Whether Helm's error is the API server refusing to change an immutable field, in the words
/// kube-apiserver's validation uses.
fn refused_as_immutable(stderr: &str) -> bool {
    stderr.contains(": field is immutable")
        || stderr.contains(": may not change once set")
        || (stderr.contains("updates to statefulset spec for fields other than")
            && stderr.contains("are forbidden"))
}

/// How Helm reaches the environment's cluster.
pub fn helm_target(environment: &Environment) -> HelmTarget {
    HelmTarget {
        program: resolve_program(environment.helm.as_deref()),
        namespace: environment.namespace.clone(),
        kube_context: environment.kube_context.clone(),
        kubeconfig: environment.kubeconfig.clone(),
        in_cluster: crate::cluster::source(environment) == crate::cluster::Source::InCluster,
    }
}

/// A chart path from psctl.yaml: relative paths are looked up next to the configuration file
/// first, then in the working directory.
pub fn resolve_chart(config: &Path, chart: &Path) -> PathBuf {
    if chart.is_absolute() {
        return chart.to_path_buf();
    }
    match config.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if dir.join(chart).exists() => dir.join(chart),
        _ => chart.to_path_buf(),
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
            in_cluster: false,
        }
    }

    #[test]
    fn upgrade_argv_is_pinned_to_context_and_namespace_and_never_waits() {
        let values: crate::yaml::Mapping =
            crate::yaml::from_str("replicaCount: 2\nenv: {RUST_LOG: info}").unwrap();
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
             --description 'psctl deploy 1.4.2' --values <values-file>"
        );
        assert!(
            !command
                .args
                .iter()
                .any(|a| a.starts_with("--wait") || a == "--atomic" || a.starts_with("--set"))
        );
        assert_eq!(
            command.values_file().unwrap(),
            r#"{
  "env": {
    "RUST_LOG": "info"
  },
  "image": {
    "repository": "127.0.0.1:5000/problemsolver-webhook-worker",
    "tag": "1.4.2"
  },
  "replicaCount": 2
}
"#
        );
    }

    #[test]
    fn the_chosen_image_wins_over_psctl_yaml_values() {
        let values: crate::yaml::Mapping =
            crate::yaml::from_str("image: {tag: old, pullPolicy: Always}").unwrap();
        let command = target()
            .upgrade_install(&UpgradeSpec {
                release: "r",
                chart: Path::new("c"),
                image_repository: None,
                image_tag: Some("new"),
                values: &values,
                description: "d",
            })
            .unwrap();
        assert_eq!(
            command.values.unwrap()["image"],
            serde_json::json!({"tag": "new", "pullPolicy": "Always"})
        );
    }

    #[test]
    fn an_injected_tag_never_reaches_helm() {
        // Helm would have read `--set-string image.tag=v1,image.repository=evil/x` as two values.
        let error = target()
            .upgrade_install(&UpgradeSpec {
                release: "r",
                chart: Path::new("c"),
                image_repository: Some("registry/good".into()),
                image_tag: Some("v1,image.repository=evil/x"),
                values: &crate::yaml::Mapping::new(),
                description: "d",
            })
            .unwrap_err();
        assert!(matches!(error, HelmError::InvalidTag(_)), "{error}");
        assert_eq!(error.exit_status(), ExitStatus::Usage);
    }

    #[test]
    fn strings_stay_strings_in_the_values_file() {
        // YAML 1.1 (Helm's reader) would take a plain `on` for a boolean and `1_000` for 1000.
        let command = target()
            .upgrade_install(&UpgradeSpec {
                release: "r",
                chart: Path::new("c"),
                image_repository: None,
                image_tag: Some("on"),
                values: &crate::yaml::from_str("env: {FLAG: 'yes', N: '1_000'}").unwrap(),
                description: "d",
            })
            .unwrap();
        let file = command.values_file().unwrap();
        assert!(file.contains(r#""tag": "on""#), "{file}");
        assert!(file.contains(r#""FLAG": "yes""#), "{file}");
        assert!(file.contains(r#""N": "1_000""#), "{file}");
        let reread: crate::yaml::Value = crate::yaml::from_str(&file).unwrap();
        assert_eq!(reread["image"]["tag"], crate::yaml::Value::from("on"));
    }

    #[test]
    fn without_values_there_is_no_values_file() {
        let command = target()
            .upgrade_install(&UpgradeSpec {
                release: "r",
                chart: Path::new("c"),
                image_repository: None,
                image_tag: None,
                values: &crate::yaml::Mapping::new(),
                description: "d",
            })
            .unwrap();
        assert!(command.values.is_none());
        assert!(!command.args.contains(&"--values".to_owned()));
    }

    #[test]
    fn values_added_later_merge_into_the_one_values_file() {
        let mut command =
            target().template("r", Path::new("c"), image_values(None, Some("t")).unwrap());
        let mut annotation = Values::new();
        set(
            &mut annotation,
            &["podAnnotations", "psctl.io/x"],
            "f".into(),
        );
        command.add_values(annotation);
        command.add_values(Values::new());
        assert_eq!(
            command.args.iter().filter(|a| *a == "--values").count(),
            1,
            "{:?}",
            command.args
        );
        assert_eq!(
            Value::Object(command.values.unwrap()),
            serde_json::json!({"image": {"tag": "t"}, "podAnnotations": {"psctl.io/x": "f"}})
        );
    }

    #[test]
    fn set_replaces_a_scalar_in_the_way_with_a_map() {
        let mut values = Values::new();
        values.insert("image".into(), "flat".into());
        set(&mut values, &["image", "tag"], "t".into());
        assert_eq!(
            Value::Object(values),
            serde_json::json!({"image": {"tag": "t"}})
        );
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

    #[test]
    fn an_immutable_field_refusal_gets_its_hint_and_other_failures_none() {
        let failed = |stderr: &str| HelmError::Failed {
            command: "helm upgrade".to_owned(),
            status: Some(1),
            stderr: stderr.to_owned(),
        };
        let selector = failed(
            "Error: UPGRADE FAILED: cannot patch \"web\" with kind Deployment: Deployment.apps \"web\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
        );
        assert!(selector.hints()[0].contains("spec.selector"));
        assert_eq!(selector.exit_status(), ExitStatus::VerificationFailed);
        let statefulset = failed(
            "StatefulSet.apps \"db\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        );
        assert_eq!(statefulset.hints().len(), 1);
        let service = failed(
            "Service \"api\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"None\"}: may not change once set",
        );
        assert_eq!(service.hints().len(), 1);
        assert!(
            failed("Error: UPGRADE FAILED: context deadline exceeded")
                .hints()
                .is_empty()
        );
    }

    #[test]
    fn in_cluster_helm_gets_no_context_so_it_uses_the_service_account_too() {
        let in_pod = HelmTarget {
            kubeconfig: None,
            in_cluster: true,
            ..target()
        };
        assert_eq!(
            in_pod.rollback("problemsolver-poller", 3).display(),
            "/opt/helm rollback problemsolver-poller 3 --namespace default"
        );
    }

    #[tokio::test]
    async fn the_values_file_is_private_and_removed_after_the_run() {
        // `sh -c` stands in for Helm: it reports the modes of the file it was given and of its
        // directory, then the file's content and path.
        let mut values = Values::new();
        values.insert("key".into(), "value".into());
        let command = HelmCommand {
            program: PathBuf::from("sh"),
            args: vec![
                "-c".into(),
                "stat -c %a \"$0\" \"$(dirname \"$0\")\" && tr -d ' \\n' < \"$0\" && echo && echo \"$0\"".into(),
                VALUES_PLACEHOLDER.into(),
            ],
            values: Some(values),
        };
        let out = command.run().await.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..3], ["600", "700", r#"{"key":"value"}"#], "{out}");
        let path = Path::new(lines[3]);
        assert!(!path.exists());
        assert!(!path.parent().unwrap().exists());
    }

    #[tokio::test]
    async fn a_failing_helm_reports_its_stderr() {
        let command = HelmCommand {
            program: PathBuf::from("sh"),
            args: vec![
                "-c".into(),
                "echo 'UPGRADE FAILED: another operation is in progress' >&2; exit 1".into(),
            ],
            values: None,
        };
        let error = command.run().await.unwrap_err().to_string();
        assert!(
            error.ends_with("failed (exit 1): UPGRADE FAILED: another operation is in progress"),
            "{error}"
        );
    }
}
