//! Container logs for the API server's `pods/{name}/log`: the Docker output of a pod's current
//! container instance, or of the previous one with `previous`, stdout and stderr merged in time
//! order as the real kubelet returns them.

use std::process::Stdio;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use psctl_sandbox_apiserver::{LogOptions, PodBackend, PodBackendError, PodLogs};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::docker::{
    Docker, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NAMESPACE, LABEL_NODE, LABEL_POD, LABEL_SANDBOX,
    logs_args, merge_logs,
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

    /// The Docker container holding the logs of `container` (the only one when `None`) of pod
    /// `namespace/pod`, or of its previous instance.
    async fn instance(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
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
        Ok(id.clone())
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
        let id = self.instance(namespace, pod, container, previous).await?;
        let (stdout, stderr) = self.docker.logs(&id, tail_lines, None).await?;
        Ok(merge_logs(&stdout, &stderr, tail_lines, false))
    }

    async fn backend_logs(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        options: LogOptions,
    ) -> Result<PodLogs, LogsError> {
        let id = self
            .instance(namespace, pod, container, options.previous)
            .await?;
        if options.follow {
            return follow(&id, &options).map(PodLogs::Stream);
        }
        let (stdout, stderr) = self
            .docker
            .logs(&id, options.tail_lines, options.since_seconds)
            .await?;
        let mut text = merge_logs(&stdout, &stderr, options.tail_lines, options.timestamps);
        if let Some(limit) = options
            .limit_bytes
            .and_then(|limit| usize::try_from(limit).ok())
            && text.len() > limit
        {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Ok(PodLogs::Complete(text))
    }
}

/// Streams `docker logs --follow`, stdout and stderr interleaved as they arrive.
fn follow(
    id: &str,
    options: &LogOptions,
) -> Result<futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>, LogsError> {
    let args = logs_args(id, options.tail_lines, options.since_seconds, true);
    let mut child = Command::new("docker")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| super::docker::DockerError::Spawn {
            command: "logs".to_owned(),
            source,
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let timestamps = options.timestamps;
    let read = |reader: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
        futures::stream::unfold(reader, move |reader| async move {
            let mut reader = reader?;
            let mut buffer = vec![0u8; 8192];
            match reader.read(&mut buffer).await {
                Ok(0) => None,
                Ok(read) => {
                    buffer.truncate(read);
                    Some((Ok(buffer), Some(reader)))
                }
                Err(error) => Some((Err(error), None)),
            }
        })
    };
    let out =
        read(stdout.map(|pipe| Box::new(pipe) as Box<dyn tokio::io::AsyncRead + Send + Unpin>));
    let err =
        read(stderr.map(|pipe| Box::new(pipe) as Box<dyn tokio::io::AsyncRead + Send + Unpin>));
    let stream = futures::stream::select(out, err).map(move |chunk| {
        chunk.map(|bytes| {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let text = if timestamps {
                text
            } else {
                strip_timestamps(&text)
            };
            Bytes::from(text)
        })
    });
    // The child lives as long as the stream: dropping the stream kills `docker logs`.
    let stream = stream.chain(futures::stream::once(async move {
        let _ = child.wait().await;
        Ok(Bytes::new())
    }));
    Ok(stream
        .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(bytes) if bytes.is_empty())))
        .boxed())
}

/// Drops Docker's timestamp prefix from each line of a chunk (chunks of `docker logs` output
/// end on line boundaries in practice; a partial line keeps its prefix handling per line).
fn strip_timestamps(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.split_once(' ') {
            Some((stamp, rest)) if stamp.len() >= 20 && stamp.ends_with('Z') => rest,
            _ => line,
        })
        .collect()
}

impl PodBackend for DockerLogs {
    fn logs<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        container: Option<&'a str>,
        options: LogOptions,
    ) -> BoxFuture<'a, Result<PodLogs, PodBackendError>> {
        Box::pin(async move {
            self.backend_logs(namespace, pod, container, options)
                .await
                .map_err(|error| match error {
                    LogsError::NotFound(message) => PodBackendError::BadRequest(message),
                    LogsError::Docker(error) => PodBackendError::Internal(error.to_string()),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_stripped_per_line() {
        let chunk =
            "2026-11-23T10:00:01.000000001Z one\n2026-11-23T10:00:02.000000000Z two words\n";
        assert_eq!(strip_timestamps(chunk), "one\ntwo words\n");
        assert_eq!(strip_timestamps("plain line\n"), "plain line\n");
    }
}
