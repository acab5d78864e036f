//! Probe bookkeeping and execution. The tracker is a pure state machine (consecutive successes
//! and failures against the thresholds, timed by initialDelaySeconds and periodSeconds); `run`
//! performs one HTTP GET, TCP connect or exec against the container.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::docker::Docker;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// readinessProbe.
    Readiness,
    /// livenessProbe.
    Liveness,
    /// startupProbe.
    Startup,
}

impl ProbeKind {
    /// The word kubelet messages use (`Readiness probe failed: …`).
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// Whether this probe runs for a container whose startup probe has (or has not) succeeded,
    /// as the kubelet's prober worker decides: until the container has started only the startup
    /// probe runs; afterwards every probe but it.
    pub fn runs(self, started: bool) -> bool {
        (self == ProbeKind::Startup) != started
    }
}

/// A change of a probe's overall result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// No change.
    None,
    /// Reached successThreshold.
    Succeeded,
    /// Reached failureThreshold.
    Failed,
}

/// Consecutive-result tracking for one probe of one container instance.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    /// Which probe.
    pub kind: ProbeKind,
    /// The probe spec.
    pub probe: Probe,
    initial_delay: Duration,
    period: Duration,
    success_threshold: i32,
    failure_threshold: i32,
    successes: i32,
    failures: i32,
    /// Current overall result: readiness and startup start failed, liveness starts passed.
    pub passing: bool,
    next_due: Option<Instant>,
}

impl ProbeTracker {
    /// A tracker for a container instance that started at `started`.
    pub fn new(kind: ProbeKind, probe: Probe, started: Instant) -> Self {
        let seconds = |value: Option<i32>, default: i32| {
            Duration::from_secs(u64::try_from(value.unwrap_or(default).max(0)).unwrap_or(0))
        };
        let initial_delay = seconds(probe.initial_delay_seconds, 0);
        let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
        Self {
            kind,
            initial_delay,
            period,
            success_threshold: probe.success_threshold.unwrap_or(1).max(1),
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1),
            successes: 0,
            failures: 0,
            passing: kind == ProbeKind::Liveness,
            next_due: Some(started + initial_delay),
            probe,
        }
    }

    /// Whether a probe should run now.
    pub fn due(&self, now: Instant) -> bool {
        self.next_due.is_some_and(|due| now >= due)
    }

    /// The configured initial delay.
    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// Records a result taken at `now` and schedules the next run.
    pub fn record(&mut self, ok: bool, now: Instant) -> Transition {
        self.next_due = Some(now + self.period);
        if ok {
            self.failures = 0;
            self.successes += 1;
            if !self.passing && self.successes >= self.success_threshold {
                self.passing = true;
                return Transition::Succeeded;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.passing && self.failures >= self.failure_threshold {
                self.passing = false;
                return Transition::Failed;
            }
            // Readiness and startup start "failed" without having transitioned; the first
            // time they reach the threshold still counts as a failure worth reporting.
            if !self.passing && self.failures == self.failure_threshold {
                return Transition::Failed;
            }
        }
        Transition::None
    }
}

/// Resolves a probe's port (number or container port name).
pub fn resolve_port(port: &IntOrString, container: &Container) -> Option<i32> {
    match port {
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|port| port.name.as_deref() == Some(name.as_str()))
            .map(|port| port.container_port),
    }
}

/// Runs a probe once. Returns Ok on success, Err(message) with the kubelet-style failure text.
pub async fn run(
    probe: &Probe,
    container: &Container,
    ip: Option<&str>,
    container_id: &str,
    docker: &Docker,
    http: &reqwest::Client,
) -> Result<(), String> {
    let timeout =
        Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    if let Some(get) = &probe.http_get {
        let port = resolve_port(&get.port, container)
            .ok_or_else(|| format!("port {:?} is not a container port", get.port))?;
        let host = get.host.as_deref().or(ip).ok_or("pod has no IP yet")?;
        let scheme = get.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let path = get.path.as_deref().unwrap_or("/");
        let url = format!("{scheme}://{host}:{port}{path}");
        let mut request = http.get(&url).timeout(timeout);
        for header in get.http_headers.iter().flatten() {
            request = request.header(&header.name, &header.value);
        }
        return match request.send().await {
            Ok(response) if (200..400).contains(&response.status().as_u16()) => Ok(()),
            Ok(response) => Err(format!(
                "HTTP probe failed with statuscode: {}",
                response.status().as_u16()
            )),
            Err(error) if error.is_timeout() => Err(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
            Err(error) => Err(format!("Get \"{url}\": {}", root_cause(&error))),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container)
            .ok_or_else(|| format!("port {:?} is not a container port", tcp.port))?;
        let host = tcp
            .host
            .as_deref()
            .or(ip)
            .ok_or("pod has no IP yet")?
            .to_owned();
        let address = format!("{host}:{port}");
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("dial tcp {address}: {error}")),
            Err(_) => Err(format!("dial tcp {address}: i/o timeout")),
        };
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match docker.exec(container_id, &command, timeout).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("command {command:?} exited non-zero")),
            Err(error) => Err(error.to_string()),
        };
    }
    Err("the sandbox kubelet supports httpGet, tcpSocket and exec probes only".to_owned())
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    fn probe(initial: i32, period: i32, success: i32, failure: i32) -> Probe {
        Probe {
            initial_delay_seconds: Some(initial),
            period_seconds: Some(period),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    #[test]
    fn readiness_waits_for_the_initial_delay_and_needs_success_threshold() {
        let start = Instant::now();
        let mut tracker = ProbeTracker::new(ProbeKind::Readiness, probe(5, 2, 2, 3), start);
        assert!(!tracker.passing);
        assert!(!tracker.due(start + Duration::from_secs(4)));
        assert!(tracker.due(start + Duration::from_secs(5)));
        let t = start + Duration::from_secs(5);
        assert_eq!(tracker.record(true, t), Transition::None);
        assert!(!tracker.due(t + Duration::from_secs(1)));
        assert_eq!(
            tracker.record(true, t + Duration::from_secs(2)),
            Transition::Succeeded
        );
        assert!(tracker.passing);
        assert_eq!(
            tracker.record(false, t + Duration::from_secs(4)),
            Transition::None
        );
        assert_eq!(
            tracker.record(false, t + Duration::from_secs(6)),
            Transition::None
        );
        assert_eq!(
            tracker.record(false, t + Duration::from_secs(8)),
            Transition::Failed
        );
        assert!(!tracker.passing);
    }

    #[test]
    fn liveness_starts_passing_and_fails_after_threshold_consecutive_failures() {
        let start = Instant::now();
        let mut tracker = ProbeTracker::new(ProbeKind::Liveness, probe(0, 1, 1, 2), start);
        assert!(tracker.passing);
        assert_eq!(tracker.record(false, start), Transition::None);
        assert_eq!(
            tracker.record(true, start),
            Transition::None,
            "a success resets the failure count"
        );
        assert_eq!(tracker.record(false, start), Transition::None);
        assert_eq!(tracker.record(false, start), Transition::Failed);
    }

    #[test]
    fn startup_starts_failed_and_fails_after_threshold_times_period() {
        let start = Instant::now();
        let mut tracker = ProbeTracker::new(ProbeKind::Startup, probe(0, 2, 1, 3), start);
        assert!(!tracker.passing);
        let mut now = start;
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            assert!(tracker.due(now));
            outcomes.push(tracker.record(false, now));
            now += Duration::from_secs(2);
        }
        assert_eq!(
            outcomes,
            [Transition::None, Transition::None, Transition::Failed],
            "killed after failureThreshold (3) failures, periodSeconds (2) apart"
        );
        let mut tracker = ProbeTracker::new(ProbeKind::Startup, probe(0, 2, 1, 3), start);
        assert_eq!(tracker.record(false, start), Transition::None);
        assert_eq!(tracker.record(true, start), Transition::Succeeded);
        assert!(tracker.passing);
    }

    #[test]
    fn only_the_startup_probe_runs_until_the_container_has_started() {
        assert!(ProbeKind::Startup.runs(false));
        assert!(!ProbeKind::Liveness.runs(false));
        assert!(!ProbeKind::Readiness.runs(false));
        assert!(!ProbeKind::Startup.runs(true));
        assert!(ProbeKind::Liveness.runs(true));
        assert!(ProbeKind::Readiness.runs(true));
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let container = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".to_owned()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".to_owned()), &container),
            Some(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(9), &container), Some(9));
        assert_eq!(
            resolve_port(&IntOrString::String("nope".to_owned()), &container),
            None
        );
    }
}
