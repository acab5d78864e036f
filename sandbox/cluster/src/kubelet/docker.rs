//! The Docker engine as the kubelet sees it, through the `docker` CLI. Argument lists are built by
//! pure functions (tested without Docker); secret values never appear in an argv: environment
//! goes through a 0600 `--env-file` that is removed once the container exists.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use tokio::process::Command;

/// Label present on every container the sandbox kubelet creates.
pub const LABEL_SANDBOX: &str = "psctl.sandbox";
/// Label naming the kubelet node that owns the container.
pub const LABEL_NODE: &str = "psctl.sandbox.node";
/// Label carrying the pod's namespace.
pub const LABEL_NAMESPACE: &str = "psctl.sandbox.namespace";
/// Label carrying the pod's name.
pub const LABEL_POD: &str = "psctl.sandbox.pod";
/// Label carrying the pod's UID.
pub const LABEL_UID: &str = "psctl.sandbox.pod-uid";
/// Label carrying the container's name in the pod spec.
pub const LABEL_CONTAINER: &str = "psctl.sandbox.container";
/// Label carrying the instance number (0 for the first start, restartCount for later ones).
pub const LABEL_ATTEMPT: &str = "psctl.sandbox.attempt";

/// A Docker CLI failure.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The `docker` binary could not be run at all.
    #[error("could not run `docker {command}`: {source}; is Docker installed and on PATH?")]
    Spawn {
        /// The subcommand.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Docker ran and failed.
    #[error("`docker {command}` failed: {message}")]
    Failed {
        /// The subcommand.
        command: String,
        /// Docker's stderr, trimmed.
        message: String,
    },
    /// Docker took longer than allowed.
    #[error("`docker {command}` did not finish within {seconds} s")]
    Timeout {
        /// The subcommand.
        command: String,
        /// The limit.
        seconds: u64,
    },
    /// Docker's output was not what it documents.
    #[error("unexpected output from `docker {command}`: {message}")]
    Parse {
        /// The subcommand.
        command: String,
        /// What was wrong.
        message: String,
    },
    /// Writing the env file failed.
    #[error("could not write the container env file: {0}")]
    EnvFile(std::io::Error),
}

impl DockerError {
    /// Whether Docker said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Failed { message, .. } if message.contains("No such"))
    }
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerLaunch {
    /// Docker container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Network to attach to, or `container:<id>` to share another container's network.
    pub network: String,
    /// Hostname (the pod name), only when not sharing a network.
    pub hostname: Option<String>,
    /// Docker labels.
    pub labels: BTreeMap<String, String>,
    /// Kubernetes `command` (replaces the image ENTRYPOINT).
    pub command: Vec<String>,
    /// Kubernetes `args` (replace the image CMD).
    pub args: Vec<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit in cores.
    pub cpus: Option<f64>,
    /// `runAsUser` / `runAsGroup`.
    pub user: Option<(i64, Option<i64>)>,
    /// `readOnlyRootFilesystem`.
    pub read_only: bool,
    /// emptyDir volumes as tmpfs mounts: (mount path, size limit in bytes).
    pub tmpfs: Vec<(String, Option<u64>)>,
    /// Host directories bind-mounted: (host path, container path, read-only).
    pub binds: Vec<(String, String, bool)>,
    /// Capabilities to drop (`ALL` included).
    pub cap_drop: Vec<String>,
    /// Capabilities to add.
    pub cap_add: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
}

/// The `docker create` argv for a launch, with the env file path if any.
pub fn create_args(launch: &ContainerLaunch, env_file: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "create".to_owned(),
        "--name".to_owned(),
        launch.name.clone(),
    ];
    for (key, value) in &launch.labels {
        args.push("--label".to_owned());
        args.push(format!("{key}={value}"));
    }
    args.push("--network".to_owned());
    args.push(launch.network.clone());
    if let Some(hostname) = &launch.hostname {
        args.push("--hostname".to_owned());
        args.push(hostname.clone());
    }
    if let Some(path) = env_file {
        args.push("--env-file".to_owned());
        args.push(path.to_owned());
    }
    if let Some(dir) = &launch.working_dir {
        args.push("--workdir".to_owned());
        args.push(dir.clone());
    }
    if let Some(bytes) = launch.memory_bytes {
        // Swap equal to memory: the limit is a hard one and exceeding it is an OOM kill.
        args.extend([
            "--memory".to_owned(),
            bytes.to_string(),
            "--memory-swap".to_owned(),
            bytes.to_string(),
        ]);
    }
    if let Some(cpus) = launch.cpus {
        args.push("--cpus".to_owned());
        args.push(format!("{cpus:.3}"));
    }
    if let Some((user, group)) = launch.user {
        args.push("--user".to_owned());
        args.push(match group {
            Some(group) => format!("{user}:{group}"),
            None => user.to_string(),
        });
    }
    if launch.read_only {
        args.push("--read-only".to_owned());
    }
    for (path, size) in &launch.tmpfs {
        // Docker copies the mode of an existing directory at the mount point over `mode=`, so
        // the mount is also owned by the container's user, as an emptyDir is writable by it.
        let mut options = format!("{path}:rw,mode=1777");
        if let Some((user, group)) = launch.user {
            options.push_str(&format!(",uid={user}"));
            if let Some(group) = group {
                options.push_str(&format!(",gid={group}"));
            }
        }
        if let Some(bytes) = size {
            options.push_str(&format!(",size={bytes}"));
        }
        args.push("--tmpfs".to_owned());
        args.push(options);
    }
    for (source, target, read_only) in &launch.binds {
        args.push("--mount".to_owned());
        let mut mount = format!("type=bind,source={source},target={target}");
        if *read_only {
            mount.push_str(",readonly");
        }
        args.push(mount);
    }
    for capability in &launch.cap_drop {
        args.push("--cap-drop".to_owned());
        args.push(capability.clone());
    }
    for capability in &launch.cap_add {
        args.push("--cap-add".to_owned());
        args.push(capability.clone());
    }
    if launch.no_new_privileges {
        args.push("--security-opt".to_owned());
        args.push("no-new-privileges".to_owned());
    }
    let mut trailing = Vec::new();
    if let Some((entrypoint, rest)) = launch.command.split_first() {
        args.push("--entrypoint".to_owned());
        args.push(entrypoint.clone());
        trailing.extend(rest.iter().cloned());
    }
    trailing.extend(launch.args.iter().cloned());
    args.push(launch.image.clone());
    args.extend(trailing);
    args
}

/// Parses a Kubernetes quantity (`128Mi`, `1G`, `500m`, `0.5`, `1e3`) into a number of units.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let suffixes: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0f64.powi(4)),
        ("Pi", 1024.0f64.powi(5)),
        ("Ei", 1024.0f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|value| value * factor);
        }
    }
    text.parse::<f64>().ok()
}

/// What `docker inspect` says about a container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    /// Full container ID.
    pub id: String,
    /// Whether it is running.
    pub running: bool,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Whether the kernel OOM-killed it.
    pub oom_killed: bool,
    /// Docker's error text for a failed start.
    pub error: String,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Image ID (`sha256:…`).
    pub image_id: String,
    /// IP on the given network, when attached.
    pub ip: Option<String>,
    /// The container's labels.
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    running: bool,
    #[serde(rename = "OOMKilled")]
    oom_killed: bool,
    exit_code: i32,
    #[serde(default)]
    error: String,
    started_at: String,
    finished_at: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectNetwork {
    #[serde(rename = "IPAddress", default)]
    ip_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectNetworkSettings {
    #[serde(default)]
    networks: BTreeMap<String, InspectNetwork>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    state: InspectState,
    image: String,
    network_settings: InspectNetworkSettings,
    config: InspectConfig,
}

fn docker_time(text: &str) -> Option<Timestamp> {
    // Docker reports the zero time for "never".
    if text.starts_with("0001-") {
        return None;
    }
    text.parse().ok()
}

/// Parses one element of `docker inspect` output.
pub fn parse_inspect(json: &str, network: &str) -> Result<ContainerInfo, String> {
    let mut items: Vec<Inspect> = serde_json::from_str(json).map_err(|error| error.to_string())?;
    let item = items
        .pop()
        .ok_or_else(|| "empty inspect result".to_owned())?;
    let ip = item
        .network_settings
        .networks
        .get(network)
        .or_else(|| item.network_settings.networks.values().next())
        .map(|network| network.ip_address.clone())
        .filter(|ip| !ip.is_empty());
    Ok(ContainerInfo {
        id: item.id,
        running: item.state.running,
        exit_code: item.state.exit_code,
        oom_killed: item.state.oom_killed,
        error: item.state.error,
        started_at: docker_time(&item.state.started_at),
        finished_at: docker_time(&item.state.finished_at),
        image_id: item.image,
        ip,
        labels: item.config.labels.unwrap_or_default(),
    })
}

/// A handle on the Docker CLI.
#[derive(Debug, Clone)]
pub struct Docker {
    binary: String,
}

impl Default for Docker {
    fn default() -> Self {
        Self {
            binary: "docker".to_owned(),
        }
    }
}

impl Docker {
    /// Runs `docker <args>` and returns stdout, failing on a non-zero exit.
    pub async fn run(&self, args: &[String], timeout: Duration) -> Result<String, DockerError> {
        let command = args.first().cloned().unwrap_or_default();
        let child = Command::new(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(timeout, child).await {
            Ok(result) => result.map_err(|source| DockerError::Spawn {
                command: command.clone(),
                source,
            })?,
            Err(_) => {
                return Err(DockerError::Timeout {
                    command,
                    seconds: timeout.as_secs(),
                });
            }
        };
        if !output.status.success() {
            return Err(DockerError::Failed {
                command,
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn quick(&self, args: &[&str]) -> Result<String, DockerError> {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        self.run(&args, Duration::from_secs(60)).await
    }

    /// Whether the image exists locally.
    pub async fn image_present(&self, image: &str) -> Result<bool, DockerError> {
        match self
            .quick(&["image", "inspect", "--format", "{{.Id}}", image])
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if error.is_not_found() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Pulls an image.
    pub async fn pull(&self, image: &str, timeout: Duration) -> Result<(), DockerError> {
        self.run(
            &["pull".to_owned(), "--quiet".to_owned(), image.to_owned()],
            timeout,
        )
        .await
        .map(drop)
    }

    /// Creates and starts a container; the environment is written to a private file for the
    /// duration of `docker create` only.
    pub async fn create_and_start(
        &self,
        launch: &ContainerLaunch,
        env: &[(String, String)],
    ) -> Result<String, DockerError> {
        let env_file = if env.is_empty() {
            None
        } else {
            // tempfile creates the file with mode 0600.
            let mut file = tempfile::NamedTempFile::new().map_err(DockerError::EnvFile)?;
            for (key, value) in env {
                writeln!(file, "{key}={value}").map_err(DockerError::EnvFile)?;
            }
            file.flush().map_err(DockerError::EnvFile)?;
            Some(file)
        };
        let path = env_file
            .as_ref()
            .map(|file| file.path().to_string_lossy().into_owned());
        let args = create_args(launch, path.as_deref());
        let id = self
            .run(&args, Duration::from_secs(60))
            .await?
            .trim()
            .to_owned();
        drop(env_file);
        self.quick(&["start", &id]).await?;
        Ok(id)
    }

    /// Inspects a container.
    pub async fn inspect(&self, id: &str, network: &str) -> Result<ContainerInfo, DockerError> {
        let output = self.quick(&["container", "inspect", id]).await?;
        parse_inspect(&output, network).map_err(|message| DockerError::Parse {
            command: "container inspect".to_owned(),
            message,
        })
    }

    /// Stops a container, giving it `grace` to exit after SIGTERM.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        let seconds = grace.as_secs().to_string();
        let args = vec!["stop".to_owned(), "-t".to_owned(), seconds, id.to_owned()];
        match self.run(&args, grace + Duration::from_secs(30)).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Removes a container (forcefully), ignoring one that is already gone.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        match self.quick(&["rm", "-f", id]).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// IDs and labels of containers carrying every given label.
    pub async fn list(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, DockerError> {
        let mut args = vec!["ps".to_owned(), "-a".to_owned(), "--no-trunc".to_owned()];
        for (key, value) in labels {
            args.push("--filter".to_owned());
            args.push(format!("label={key}={value}"));
        }
        args.push("--format".to_owned());
        args.push("{{.ID}}\t{{.Labels}}".to_owned());
        let output = self.run(&args, Duration::from_secs(60)).await?;
        Ok(output
            .lines()
            .filter_map(|line| {
                let (id, labels) = line.split_once('\t')?;
                let labels = labels
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .collect();
                Some((id.to_owned(), labels))
            })
            .collect())
    }

    /// Creates the network if it does not exist. Docker does not make creation atomic: two
    /// processes creating the same name at once get two networks and every later use of the
    /// name is ambiguous, so duplicates are removed, keeping the lowest ID (every process picks
    /// the same one).
    pub async fn ensure_network(&self, network: &str) -> Result<(), DockerError> {
        let exact = format!("name=^{network}$");
        let ids = |output: String| -> Vec<String> {
            let mut ids: Vec<String> = output
                .lines()
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect();
            ids.sort();
            ids
        };
        let mut existing = ids(self
            .quick(&["network", "ls", "--no-trunc", "-q", "--filter", &exact])
            .await?);
        if existing.is_empty() {
            self.quick(&["network", "create", network]).await?;
            existing = ids(self
                .quick(&["network", "ls", "--no-trunc", "-q", "--filter", &exact])
                .await?);
        }
        for duplicate in existing.iter().skip(1) {
            if let Err(error) = self.quick(&["network", "rm", duplicate]).await {
                tracing::warn!(%error, network, "could not remove a duplicate Docker network");
            }
        }
        Ok(())
    }

    /// The network's gateway address (the host as containers see it).
    pub async fn network_gateway(&self, network: &str) -> Result<String, DockerError> {
        let output = self
            .quick(&[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
                network,
            ])
            .await?;
        output
            .split_whitespace()
            .next()
            .map(str::to_owned)
            .ok_or_else(|| DockerError::Parse {
                command: "network inspect".to_owned(),
                message: format!("network `{network}` has no gateway"),
            })
    }

    /// Runs a command in a running container; Ok(true) when it exits 0.
    pub async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<bool, DockerError> {
        let mut args = vec!["exec".to_owned(), id.to_owned()];
        args.extend(command.iter().cloned());
        match self.run(&args, timeout).await {
            Ok(_) => Ok(true),
            Err(DockerError::Failed { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// `docker logs` with timestamps, both streams.
    pub async fn logs(
        &self,
        id: &str,
        tail: Option<i64>,
        since_seconds: Option<i64>,
    ) -> Result<(String, String), DockerError> {
        let args = logs_args(id, tail, since_seconds, false);
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(&self.binary)
                .args(&args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| DockerError::Timeout {
            command: "logs".to_owned(),
            seconds: 60,
        })?
        .map_err(|source| DockerError::Spawn {
            command: "logs".to_owned(),
            source,
        })?;
        if !output.status.success() {
            return Err(DockerError::Failed {
                command: "logs".to_owned(),
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok((
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }
}

/// The `docker logs` argv (always with timestamps, which order merged streams).
pub fn logs_args(
    id: &str,
    tail: Option<i64>,
    since_seconds: Option<i64>,
    follow: bool,
) -> Vec<String> {
    let mut args = vec!["logs".to_owned(), "--timestamps".to_owned()];
    if follow {
        args.push("--follow".to_owned());
    }
    if let Some(tail) = tail {
        args.push("--tail".to_owned());
        args.push(tail.max(0).to_string());
    }
    if let Some(since) = since_seconds {
        args.push("--since".to_owned());
        args.push(format!("{}s", since.max(0)));
    }
    args.push(id.to_owned());
    args
}

/// Merges timestamped stdout and stderr lines back into one stream in time order (Docker's
/// RFC 3339 nano prefixes sort lexically), keeping the last `tail` lines, with or without the
/// timestamps.
pub fn merge_logs(stdout: &str, stderr: &str, tail: Option<i64>, timestamps: bool) -> String {
    let mut lines: Vec<(&str, &str)> = stdout
        .lines()
        .chain(stderr.lines())
        .map(|line| line.split_once(' ').unwrap_or((line, "")))
        .collect();
    lines.sort_by(|a, b| a.0.cmp(b.0));
    let skip = match tail {
        Some(tail) => lines
            .len()
            .saturating_sub(usize::try_from(tail.max(0)).unwrap_or(0)),
        None => 0,
    };
    let mut text = String::new();
    for (stamp, line) in lines.into_iter().skip(skip) {
        if timestamps {
            text.push_str(stamp);
            text.push(' ');
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_args_map_command_args_limits_and_security() {
        let launch = ContainerLaunch {
            name: "psctl_default_web_1".to_owned(),
            image: "127.0.0.1:5000/web:1".to_owned(),
            network: "psctl-sandbox".to_owned(),
            hostname: Some("web".to_owned()),
            labels: [("psctl.sandbox".to_owned(), "1".to_owned())].into(),
            command: vec!["/bin/server".to_owned(), "--serve".to_owned()],
            args: vec!["--port=80".to_owned()],
            working_dir: None,
            memory_bytes: Some(64 * 1024 * 1024),
            cpus: Some(0.5),
            user: Some((1000, None)),
            read_only: true,
            tmpfs: vec![("/tmp".to_owned(), Some(64 * 1024 * 1024))],
            binds: vec![("/var/lib/k/v".to_owned(), "/var/run/s".to_owned(), true)],
            cap_drop: vec!["ALL".to_owned()],
            cap_add: Vec::new(),
            no_new_privileges: true,
        };
        let args = create_args(&launch, Some("/tmp/env"));
        let joined = args.join(" ");
        assert_eq!(
            joined,
            "create --name psctl_default_web_1 --label psctl.sandbox=1 --network psctl-sandbox --hostname web \
             --env-file /tmp/env --memory 67108864 --memory-swap 67108864 --cpus 0.500 --user 1000 --read-only \
             --tmpfs /tmp:rw,mode=1777,uid=1000,size=67108864 --mount type=bind,source=/var/lib/k/v,target=/var/run/s,readonly \
             --cap-drop ALL --security-opt no-new-privileges \
             --entrypoint /bin/server 127.0.0.1:5000/web:1 --serve --port=80"
        );
        // Only args: the image's entrypoint stays.
        let launch = ContainerLaunch {
            command: Vec::new(),
            args: vec!["sleep".to_owned(), "1".to_owned()],
            memory_bytes: None,
            cpus: None,
            user: None,
            read_only: false,
            tmpfs: Vec::new(),
            binds: Vec::new(),
            cap_drop: Vec::new(),
            no_new_privileges: false,
            hostname: None,
            labels: BTreeMap::new(),
            ..launch
        };
        assert_eq!(
            create_args(&launch, None).join(" "),
            "create --name psctl_default_web_1 --network psctl-sandbox 127.0.0.1:5000/web:1 sleep 1"
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("128Mi"), Some(134_217_728.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("lots"), None);
    }

    #[test]
    fn inspect_output_parses() {
        let json = r#"[{"Id":"abc","Image":"sha256:def","State":{"Status":"exited","Running":false,"OOMKilled":true,
            "ExitCode":137,"Error":"","StartedAt":"2026-11-23T10:00:00.5Z","FinishedAt":"2026-11-23T10:00:02Z"},
            "NetworkSettings":{"Networks":{"psctl-sandbox":{"IPAddress":"172.20.0.3"}}},"Config":{"Labels":{"a":"b"}}}]"#;
        let info = parse_inspect(json, "psctl-sandbox").expect("parses");
        assert!(!info.running && info.oom_killed);
        assert_eq!(
            (info.exit_code, info.ip.as_deref(), info.image_id.as_str()),
            (137, Some("172.20.0.3"), "sha256:def")
        );
        assert!(info.started_at.is_some() && info.finished_at.is_some());
        let never = json.replace("2026-11-23T10:00:02Z", "0001-01-01T00:00:00Z");
        assert_eq!(
            parse_inspect(&never, "psctl-sandbox")
                .expect("parses")
                .finished_at,
            None
        );
    }

    #[test]
    fn logs_merge_by_timestamp_and_tail() {
        let stdout = "2026-11-23T10:00:01.000000001Z one\n2026-11-23T10:00:03.000000000Z three\n";
        let stderr = "2026-11-23T10:00:02.000000000Z two\n";
        assert_eq!(merge_logs(stdout, stderr, None, false), "one\ntwo\nthree\n");
        assert_eq!(merge_logs(stdout, stderr, Some(2), false), "two\nthree\n");
        assert_eq!(
            merge_logs(stdout, stderr, Some(1), true),
            "2026-11-23T10:00:03.000000000Z three\n"
        );
        assert_eq!(
            logs_args("abc", Some(5), Some(60), true).join(" "),
            "logs --timestamps --follow --tail 5 --since 60s abc"
        );
    }
}
