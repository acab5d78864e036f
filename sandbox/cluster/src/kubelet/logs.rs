//! Container logs for the API server's `pods/{name}/log`: the Docker output of a pod's current
//! container instance, or of the previous one with `previous`, stdout and stderr merged in time
//! order as the real kubelet returns them.

use super::docker::{
    Docker, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NAMESPACE, LABEL_NODE, LABEL_POD, LABEL_SANDBOX,
    merge_logs,
};

/// Why logs could not be read; the messages mirror the real API server's.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// No container instance matches.
    #[error("{0}")]
    NotFound(String),
    /// Docker failed.
    #[error(transparent)]
    Docker(#[from] super::docker::DockerError),
}

/// Reads pod logs from Docker. With a node name set, only that node's containers are considered.
#[derive(Debug, Clone, Default)]
pub struct DockerLogs {
    docker: Docker,
    node: Option<String>,
}

impl DockerLogs {
    /// Logs of containers created by any sandbox kubelet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Logs of containers created by the kubelet of `node` only.
    pub fn for_node(node: &str) -> Self {
        Self {
            docker: Docker::default(),
            node: Some(node.to_owned()),
        }
    }

    /// The log text of `container` (the only one when `None`) of pod `namespace/pod`: the last
    /// `tail_lines` lines, of the previous instance when `previous`.
    pub async fn pod_logs(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        tail_lines: Option<i64>,
        previous: bool,
    ) -> Result<String, LogsError> {
        let mut filters = vec![
            (LABEL_SANDBOX, "1"),
            (LABEL_NAMESPACE, namespace),
            (LABEL_POD, pod),
        ];
        if let Some(node) = &self.node {
            filters.push((LABEL_NODE, node.as_str()));
        }
        if let Some(container) = container {
            filters.push((LABEL_CONTAINER, container));
        }
        let found = self.docker.list(&filters).await?;
        let mut names: Vec<&String> = found
            .iter()
            .filter_map(|(_, labels)| labels.get(LABEL_CONTAINER))
            .collect();
        names.sort();
        names.dedup();
        if container.is_none() && names.len() > 1 {
            let list = names
                .iter()
                .map(|name| name.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            return Err(LogsError::NotFound(format!(
                "a container name must be specified for pod {pod}, choose one of: [{list}]"
            )));
        }
        let mut instances: Vec<(u32, &String)> = found
            .iter()
            .filter_map(|(id, labels)| Some((labels.get(LABEL_ATTEMPT)?.parse().ok()?, id)))
            .collect();
        instances.sort();
        // `previous` is the last terminated instance: the one before the running one, or the
        // latest itself while the container waits to restart (CrashLoopBackOff).
        let latest_running = match instances.last() {
            Some((_, id)) => self
                .docker
                .inspect(id, "")
                .await
                .map(|info| info.running)
                .unwrap_or(false),
            None => false,
        };
        let wanted = if previous && latest_running {
            instances.len().checked_sub(2).map(|index| instances[index])
        } else {
            instances.last().copied()
        };
        let container_name = container
            .map(str::to_owned)
            .or_else(|| names.first().map(|name| (*name).clone()))
            .unwrap_or_default();
        let Some((_, id)) = wanted else {
            return Err(LogsError::NotFound(if previous {
                format!(
                    "previous terminated container \"{container_name}\" in pod \"{pod}\" not found"
                )
            } else {
                format!(
                    "container \"{container_name}\" in pod \"{pod}\" is waiting to start: no container instance yet"
                )
            }));
        };
        let (stdout, stderr) = self.docker.logs(id, tail_lines).await?;
        Ok(merge_logs(&stdout, &stderr, tail_lines))
    }
}
