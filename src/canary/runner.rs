//! The canary run loop: for each step, set the weights, smoke the canary, then evaluate the
//! gates every interval until the step advances, pauses or aborts; after the last step,
//! promote. It is the controller for the length of the run, and it writes its state after every
//! change so another psctl can resume it.
//!
//! All I/O (cluster, Prometheus, Helm, clock) sits behind [`Backend`], so the whole loop runs in
//! tests on scripted figures and a fake clock. Weight 100 % is not baked: with no stable track
//! left there is nothing to compare against, so reaching it means promotion.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::canary::gate::{Observation, StepDecision, decide, evaluate};
use crate::canary::state::{CanaryRun, OperatorRequest, RunStatus, Split, WindowRecord};

/// What one Prometheus read produced: the figures, and why some are missing when they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub observation: Observation,
    pub note: Option<String>,
}

/// The edges of the run. Errors are one-line explanations: the loop records and prints them.
pub trait Backend {
    /// Unix seconds.
    fn now(&self) -> i64;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
    /// Waits `duration` between two evaluations of a bake, like `sleep`, while watching the
    /// canary pods all along: returns early with the reason as soon as one of them fails
    /// (crash loop, image pull, OOM; running unready is not a failure), so such a canary is
    /// aborted within one interval rather than judged on figures.
    fn bake_wait(
        &self,
        run: &CanaryRun,
        duration: Duration,
    ) -> impl Future<Output = Option<String>>;
    /// Scales the tracks to `split` (creating the canary track if needed) and waits until both
    /// are rolled out. An error means the canary cannot run: the loop aborts.
    fn set_weights(
        &self,
        run: &CanaryRun,
        split: Split,
    ) -> impl Future<Output = Result<String, String>>;
    /// The functional check of the canary pods at each step.
    fn smoke(&self, run: &CanaryRun) -> impl Future<Output = Result<String, String>>;
    /// Canary and stable figures since the step started (`elapsed` ago), and the canary's over
    /// the guardrail window.
    fn observe(&self, run: &CanaryRun, elapsed: Duration) -> impl Future<Output = Observed>;
    /// Persists the state. Returns an operator request another psctl stored since the last
    /// save (the stored copy's request is consumed).
    fn save(
        &self,
        run: &CanaryRun,
    ) -> impl Future<Output = Result<Option<OperatorRequest>, String>>;
    /// Stable to the new tag (Helm), then the canary track removed.
    fn promote(&self, run: &CanaryRun) -> impl Future<Output = Result<String, PromotionError>>;
    /// Canary to zero replicas (kept for investigation), stable restored to its full count and
    /// Helm revision.
    fn abort(&self, run: &CanaryRun) -> impl Future<Output = Result<String, String>>;
    /// A progress line for the operator.
    fn report(&self, line: &str);
    /// Why this process may no longer drive the run (the deploy Lease was lost: taken over,
    /// overridden by the kill switch, or not renewable), or `None` while it may. Checked before
    /// every change: a fenced run stops without touching the cluster or its state again.
    fn fenced(&self) -> Option<String>;
}

/// Why a promotion did not finish.
#[derive(Debug, Clone, PartialEq)]
pub enum PromotionError {
    /// Refused before anything changed (the API server would not take the promotion's first
    /// write): nothing to undo, so the run keeps its weights and waits for an operator.
    NotStarted(String),
    /// Failed once under way (Helm, the rollout): undone by an abort.
    Failed(String),
}

/// How a run ended (for this process).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "ending", rename_all = "kebab-case")]
pub enum Ending {
    Promoted,
    Aborted {
        reason: String,
    },
    Paused {
        reason: String,
    },
    /// The abort (or the undo of a failed promotion) itself failed: a human must act now.
    RollbackFailed {
        reason: String,
    },
    /// This process lost the deploy Lease and stopped at a safe point, leaving the cluster and
    /// the saved state to whoever holds the Lease now.
    Fenced {
        reason: String,
    },
    /// The promotion could not begin (the cluster refused its first write); nothing changed and
    /// the run is paused at its step for an operator to promote again or abort.
    Interrupted {
        reason: String,
    },
}

/// Drives `run` from its recorded position until it ends or pauses.
pub async fn drive<B: Backend>(backend: &B, run: &mut CanaryRun) -> Ending {
    let mut pending = run.request.take();
    loop {
        match run.status {
            RunStatus::Promoted => return Ending::Promoted,
            RunStatus::Aborted => {
                return Ending::Aborted {
                    reason: run.reason.clone().unwrap_or_default(),
                };
            }
            RunStatus::Paused => {
                return Ending::Paused {
                    reason: run.reason.clone().unwrap_or_default(),
                };
            }
            RunStatus::Running => {}
        }
        if let Some(reason) = backend.fenced() {
            return fenced(backend, run, reason);
        }
        if let Some(request) = pending.take() {
            match request {
                OperatorRequest::Abort { by, .. } => {
                    return abort(backend, run, format!("aborted by {by}")).await;
                }
                OperatorRequest::Promote { full: true, by, .. } => {
                    note(
                        backend,
                        run,
                        format!("{by} asked to promote now, skipping the remaining steps"),
                    );
                    return promote(backend, run).await;
                }
                OperatorRequest::Promote {
                    full: false, by, ..
                } => {
                    note(backend, run, format!("{by} ended {} early", run.position()));
                    if run.is_last_step() {
                        return promote(backend, run).await;
                    }
                    run.advance();
                }
            }
        }
        // The driver died during the promotion: Helm may already have moved stable to the new
        // tag, so there is no step left to bake; finish the promotion.
        if run.weight() >= 100 || run.promoting_since.is_some() {
            return promote(backend, run).await;
        }
        let Some(started) = run.step_started_at else {
            let split = run.split();
            backend.report(&format!(
                "{}: canary {} replica(s), stable {} (real weight {:.0}%)",
                run.position(),
                split.canary,
                split.stable,
                split.real_weight()
            ));
            match backend.set_weights(run, split).await {
                Ok(detail) => note(backend, run, detail),
                // Lost during the change: not the canary's fault, and not ours to undo.
                Err(_) if backend.fenced().is_some() => continue,
                Err(problem) => {
                    let reason =
                        format!("the canary could not run at {}: {problem}", run.position());
                    return abort(backend, run, reason).await;
                }
            }
            match backend.smoke(run).await {
                Ok(detail) => note(
                    backend,
                    run,
                    format!("smoke at {}: {detail}", run.position()),
                ),
                Err(_) if backend.fenced().is_some() => continue,
                Err(problem) => {
                    let reason = format!("smoke failed at {}: {problem}", run.position());
                    return abort(backend, run, reason).await;
                }
            }
            run.step_started_at = Some(backend.now());
            run.tally = Default::default();
            pending = save(backend, run).await;
            continue;
        };

        let failing = backend
            .bake_wait(run, Duration::from_secs(run.interval_secs.max(1)))
            .await;
        if backend.fenced().is_some() {
            continue;
        }
        if let Some(problem) = failing {
            let reason = format!("a canary pod failed at {}: {problem}", run.position());
            return abort(backend, run, reason).await;
        }
        // A request that arrived while sleeping goes first: an abort must not wait for figures.
        if let Some(request) = save(backend, run).await {
            pending = Some(request);
            continue;
        }
        let now = backend.now();
        let elapsed = Duration::from_secs(u64::try_from(now - started).unwrap_or(0));
        let observed = backend.observe(run, elapsed).await;
        let evaluation = evaluate(&run.policy, &observed.observation);
        let bake = Duration::from_secs(run.bake_secs);
        let decision = decide(&run.policy, &mut run.tally, &evaluation, elapsed, bake);
        let record = WindowRecord {
            step: run.step,
            weight: run.weight(),
            at: now,
            elapsed_secs: elapsed.as_secs(),
            observation: observed.observation,
            evaluation,
            decision: decision.clone(),
            note: observed.note,
        };
        backend.report(&describe_window(run, &record));
        run.record(record);
        match decision {
            StepDecision::Continue => {}
            StepDecision::Advance => {
                note(backend, run, format!("{} passed", run.position()));
                if run.is_last_step() {
                    return promote(backend, run).await;
                }
                run.advance();
            }
            StepDecision::Abort { reason } => return abort(backend, run, reason).await,
            StepDecision::Pause { reason } => {
                run.status = RunStatus::Paused;
                run.reason = Some(reason.clone());
                run.holder = None;
                note(
                    backend,
                    run,
                    format!("paused at {}: {reason}", run.position()),
                );
                pending = save(backend, run).await;
                if pending.is_none() {
                    return Ending::Paused { reason };
                }
                // Someone asked for an action while we were deciding: honour it.
                run.status = RunStatus::Running;
                continue;
            }
        }
        pending = save(backend, run).await;
    }
}

fn note<B: Backend>(backend: &B, run: &mut CanaryRun, message: String) {
    backend.report(&message);
    run.event(backend.now(), message);
}

/// Stops without another write: the new holder of the Lease owns the cluster and the state.
fn fenced<B: Backend>(backend: &B, run: &mut CanaryRun, reason: String) -> Ending {
    backend.report(&format!(
        "stopping at {}: {reason}; the cluster and the saved state are left as they are",
        run.position()
    ));
    Ending::Fenced { reason }
}

async fn save<B: Backend>(backend: &B, run: &mut CanaryRun) -> Option<OperatorRequest> {
    if backend.fenced().is_some() {
        // The state belongs to the new holder now.
        return None;
    }
    run.updated_at = backend.now();
    match backend.save(run).await {
        Ok(request) => request,
        Err(problem) => {
            backend.report(&format!(
                "warning: the canary state was not saved ({problem}); a resume would start from the last saved step"
            ));
            None
        }
    }
}

async fn abort<B: Backend>(backend: &B, run: &mut CanaryRun, reason: String) -> Ending {
    if let Some(lost) = backend.fenced() {
        // An abort scales stable back up: exactly what a kill switch must not see.
        return fenced(backend, run, lost);
    }
    backend.report(&format!("aborting at {}: {reason}", run.position()));
    // The abort undoes a promotion that reached Helm (stable back to its recorded revision).
    run.promoting_since = None;
    match backend.abort(run).await {
        Ok(detail) => {
            note(backend, run, detail);
            run.status = RunStatus::Aborted;
            run.reason = Some(reason.clone());
            run.holder = None;
            save(backend, run).await;
            Ending::Aborted { reason }
        }
        Err(problem) => {
            let reason = format!("{reason}; THE ABORT FAILED: {problem}");
            note(backend, run, reason.clone());
            // Not final: `canary abort` retries it.
            run.status = RunStatus::Paused;
            run.reason = Some(reason.clone());
            run.holder = None;
            save(backend, run).await;
            Ending::RollbackFailed { reason }
        }
    }
}

async fn promote<B: Backend>(backend: &B, run: &mut CanaryRun) -> Ending {
    if let Some(lost) = backend.fenced() {
        return fenced(backend, run, lost);
    }
    let resumed = run.promoting_since.is_some();
    if !resumed {
        // Recorded before Helm runs, so a resume after a crash from here on promotes again.
        run.promoting_since = Some(backend.now());
        note(backend, run, format!("promoting {} to stable", run.tag));
        save(backend, run).await;
    } else {
        note(
            backend,
            run,
            format!(
                "promoting {} to stable (again: the promotion had begun)",
                run.tag
            ),
        );
    }
    match backend.promote(run).await {
        Ok(detail) => {
            note(backend, run, detail);
            run.status = RunStatus::Promoted;
            run.promoting_since = None;
            run.reason = None;
            run.holder = None;
            save(backend, run).await;
            Ending::Promoted
        }
        Err(_) if backend.fenced().is_some() => {
            let lost = backend.fenced().unwrap_or_default();
            fenced(backend, run, lost)
        }
        Err(PromotionError::NotStarted(problem)) if !resumed => {
            // Nothing changed: aborting a canary the gates passed over an API hiccup would throw
            // the release away. It waits, paused at its weights, for `canary promote` again.
            let reason = format!("the promotion could not begin, nothing was changed: {problem}");
            run.promoting_since = None;
            run.status = RunStatus::Paused;
            run.reason = Some(reason.clone());
            run.holder = None;
            note(
                backend,
                run,
                format!("paused at {}: {reason}", run.position()),
            );
            save(backend, run).await;
            Ending::Interrupted { reason }
        }
        // A promotion resumed after a crash may already have moved stable: undo it.
        Err(PromotionError::NotStarted(problem) | PromotionError::Failed(problem)) => {
            abort(backend, run, format!("the promotion failed: {problem}")).await
        }
    }
}

/// The lines printed for one evaluation: the verdict, every gate with its figures, the decision.
pub fn describe_window(run: &CanaryRun, record: &WindowRecord) -> String {
    let evaluation = &record.evaluation;
    let verdict = serde_json::to_value(evaluation.verdict)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let decision = match &record.decision {
        StepDecision::Continue => "keep baking".to_owned(),
        StepDecision::Advance => "advance".to_owned(),
        StepDecision::Abort { reason } => format!("ABORT ({reason})"),
        StepDecision::Pause { reason } => format!("pause ({reason})"),
    };
    let mut text = format!(
        "step {}/{} ({}%) at {}s of {}s bake: {verdict} -> {decision}",
        record.step + 1,
        run.steps.len(),
        record.weight,
        record.elapsed_secs,
        run.bake_secs
    );
    for (name, outcome) in evaluation.gates() {
        text.push_str(&format!(
            "\n  {name:<10} {:<12} {}",
            outcome.name(),
            outcome.detail()
        ));
    }
    if let Some(note) = &record.note {
        text.push_str(&format!("\n  note: {note}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    use super::*;
    use crate::canary::gate::{GatePolicy, TrackFigures};
    use crate::canary::state::tests::sample_run;

    /// A scripted backend: a fake clock advanced by `sleep`, figures from a queue (the last one
    /// repeats), every call logged.
    #[derive(Default)]
    struct Script {
        clock: Cell<i64>,
        observations: RefCell<VecDeque<Observed>>,
        calls: RefCell<Vec<String>>,
        saved: RefCell<Vec<CanaryRun>>,
        /// Requests handed out by `save`, by save number.
        requests: RefCell<Vec<(usize, OperatorRequest)>>,
        fail_weights_at_step: Option<usize>,
        fail_promotion: bool,
        /// `promote` panics (a process killed while Helm upgrades stable).
        die_in_promotion: bool,
        /// `promote` is refused before it changes anything.
        refuse_promotion: bool,
        /// `sleep` panics after this many calls (a killed process).
        die_after_sleeps: Option<usize>,
        sleeps: Cell<usize>,
        /// The Lease is lost after this many sleeps.
        fenced_after_sleeps: Option<usize>,
        /// A canary pod starts crash-looping during this bake wait (1 = the first).
        crash_at_wait: Option<usize>,
        waits: Cell<usize>,
    }

    impl Script {
        fn with(observations: Vec<Observation>) -> Self {
            Self {
                clock: Cell::new(1_000),
                observations: RefCell::new(
                    observations
                        .into_iter()
                        .map(|observation| Observed {
                            observation,
                            note: None,
                        })
                        .collect(),
                ),
                ..Self::default()
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Backend for Script {
        fn now(&self) -> i64 {
            self.clock.get()
        }

        async fn sleep(&self, duration: Duration) {
            let sleeps = self.sleeps.get() + 1;
            self.sleeps.set(sleeps);
            if self.die_after_sleeps.is_some_and(|limit| sleeps > limit) {
                panic!("killed");
            }
            self.clock.set(self.clock.get() + duration.as_secs() as i64);
        }

        async fn bake_wait(&self, _run: &CanaryRun, duration: Duration) -> Option<String> {
            let waits = self.waits.get() + 1;
            self.waits.set(waits);
            if self.crash_at_wait == Some(waits) {
                // Seen a few seconds into the wait, long before its end.
                self.sleep(Duration::from_secs(3)).await;
                return Some(
                    "CrashLoopBackOff in pod canary-1 (container worker): last exit code 1".into(),
                );
            }
            self.sleep(duration).await;
            None
        }

        async fn set_weights(&self, run: &CanaryRun, split: Split) -> Result<String, String> {
            self.calls
                .borrow_mut()
                .push(format!("weights {} {}", split.canary, split.stable));
            if self.fail_weights_at_step == Some(run.step) {
                return Err("CrashLoopBackOff in pod canary-1".into());
            }
            Ok("weights set".into())
        }

        async fn smoke(&self, _run: &CanaryRun) -> Result<String, String> {
            self.calls.borrow_mut().push("smoke".into());
            Ok("canary pods ready".into())
        }

        async fn observe(&self, _run: &CanaryRun, _elapsed: Duration) -> Observed {
            let mut queue = self.observations.borrow_mut();
            if queue.len() > 1 {
                queue.pop_front().unwrap_or_default()
            } else {
                queue.front().cloned().unwrap_or_default()
            }
        }

        async fn save(&self, run: &CanaryRun) -> Result<Option<OperatorRequest>, String> {
            let number = self.saved.borrow().len();
            self.saved.borrow_mut().push(run.clone());
            let mut requests = self.requests.borrow_mut();
            Ok(requests
                .iter()
                .position(|(at, _)| *at <= number)
                .map(|index| requests.remove(index).1))
        }

        async fn promote(&self, _run: &CanaryRun) -> Result<String, PromotionError> {
            self.calls.borrow_mut().push("promote".into());
            if self.die_in_promotion {
                panic!("killed");
            }
            if self.refuse_promotion {
                Err(PromotionError::NotStarted(
                    "handing the replicas back to Helm: answered 500".into(),
                ))
            } else if self.fail_promotion {
                Err(PromotionError::Failed(
                    "rollout of problemsolver-webhook failed".into(),
                ))
            } else {
                Ok("promoted".into())
            }
        }

        async fn abort(&self, _run: &CanaryRun) -> Result<String, String> {
            self.calls.borrow_mut().push("abort".into());
            Ok("canary scaled to 0, stable restored".into())
        }

        fn report(&self, _line: &str) {}

        fn fenced(&self) -> Option<String> {
            self.fenced_after_sleeps
                .is_some_and(|limit| self.sleeps.get() >= limit)
                .then(|| "the deploy lock was taken over by `ops@vm pid 2 (kill-switch)`".into())
        }
    }

    /// A 10 % step's figures: the canary serves `n`, stable `9n`.
    fn figures(n: f64, canary_rate: f64, stable_rate: f64) -> Observation {
        let canary = TrackFigures::new(n, n * canary_rate, 80.0);
        Observation {
            canary,
            stable: TrackFigures::new(9.0 * n, 9.0 * n * stable_rate, 78.0),
            canary_guardrail: canary,
        }
    }

    fn short_run() -> CanaryRun {
        let mut run = sample_run();
        run.bake_secs = 60;
        run.interval_secs = 20;
        run
    }

    #[tokio::test]
    async fn a_healthy_canary_walks_every_step_and_is_promoted() {
        let script = Script::with(vec![figures(3000.0, 0.004, 0.004)]);
        let mut run = short_run();
        assert_eq!(drive(&script, &mut run).await, Ending::Promoted);
        assert_eq!(
            script.calls(),
            [
                "weights 1 9",
                "smoke",
                "weights 3 7",
                "smoke",
                "weights 6 4",
                "smoke",
                "promote"
            ]
        );
        assert_eq!(run.status, RunStatus::Promoted);
        // Three evaluations per 60 s step at 20 s intervals, three baked steps.
        assert_eq!(run.windows.len(), 9);
        assert!(
            run.windows
                .iter()
                .all(|w| w.evaluation.verdict == crate::canary::gate::Verdict::Pass)
        );
        let last_saved = script.saved.borrow().last().cloned().unwrap();
        assert_eq!(last_saved.status, RunStatus::Promoted);
    }

    #[tokio::test]
    async fn a_failing_canary_is_aborted_with_its_figures_recorded() {
        let script = Script::with(vec![figures(3000.0, 0.03, 0.004)]);
        let mut run = short_run();
        let ending = drive(&script, &mut run).await;
        let Ending::Aborted { reason } = ending else {
            panic!("expected an abort, got {ending:?}");
        };
        assert!(reason.contains("guardrail"), "{reason}");
        assert_eq!(script.calls(), ["weights 1 9", "smoke", "abort"]);
        assert_eq!(run.status, RunStatus::Aborted);
        let window = run.windows.last().unwrap();
        assert!(
            window
                .evaluation
                .error_rate
                .detail()
                .contains("canary 3.00% of 3000")
        );
        assert!(describe_window(&run, window).contains("ABORT"));
    }

    #[tokio::test]
    async fn one_bad_window_does_not_abort_but_two_in_a_row_do() {
        let good = figures(3000.0, 0.004, 0.004);
        let mut slow = good;
        slow.canary.p95_ms = Some(900.0);
        let script = Script::with(vec![good, slow, good, good, good, good, good, good, good]);
        let mut run = short_run();
        assert_eq!(drive(&script, &mut run).await, Ending::Promoted);

        let script = Script::with(vec![good, slow, slow, good]);
        let mut run = short_run();
        assert!(matches!(
            drive(&script, &mut run).await,
            Ending::Aborted { .. }
        ));
    }

    #[tokio::test]
    async fn an_absolute_error_target_aborts_a_canary_as_bad_as_stable() {
        // 0.8 % on both tracks: the comparison with stable passes and the 1 % guardrail holds.
        let both_bad = figures(3000.0, 0.008, 0.008);
        let script = Script::with(vec![both_bad]);
        let mut run = short_run();
        assert_eq!(drive(&script, &mut run).await, Ending::Promoted);
        assert!(
            run.windows
                .iter()
                .all(|w| w.evaluation.max_error_rate.is_none())
        );

        // With the runbook's target of 0.5 %, the same figures fail twice in a row: abort.
        let script = Script::with(vec![both_bad]);
        let mut run = short_run();
        run.policy.max_error_rate = Some(0.005);
        let Ending::Aborted { reason } = drive(&script, &mut run).await else {
            panic!("expected an abort");
        };
        assert!(
            reason.starts_with("2 failed evaluations in a row; last: max-error-rate: canary 0.80% of 3000, target at most 0.50%"),
            "{reason}"
        );
        assert_eq!(script.calls(), ["weights 1 9", "smoke", "abort"]);
        let window = run.windows.last().unwrap();
        assert_eq!(window.evaluation.error_rate.name(), "pass");
        assert!(describe_window(&run, window).contains("\n  max-error-rate fail"));

        // A canary under the target passes it and is promoted.
        let script = Script::with(vec![figures(3000.0, 0.001, 0.004)]);
        let mut run = short_run();
        run.policy.max_error_rate = Some(0.005);
        assert_eq!(drive(&script, &mut run).await, Ending::Promoted);
        assert!(run.windows.iter().all(|w| {
            w.evaluation
                .max_error_rate
                .as_ref()
                .is_some_and(|g| g.name() == "pass")
        }));
    }

    #[tokio::test]
    async fn on_latency_decides_what_a_p95_breach_does() {
        let mut slow = figures(3000.0, 0.004, 0.004);
        slow.canary.p95_ms = Some(900.0);

        // The default: a latency breach aborts like any failed gate.
        let script = Script::with(vec![slow]);
        let mut run = short_run();
        let Ending::Aborted { reason } = drive(&script, &mut run).await else {
            panic!("expected an abort");
        };
        assert!(reason.contains("latency: canary p95 900 ms"), "{reason}");

        // `pause`: the run stops for a human at the same point, the tracks untouched.
        let script = Script::with(vec![slow]);
        let mut run = short_run();
        run.policy.on_latency = crate::canary::gate::OnLatency::Pause;
        let Ending::Paused { reason } = drive(&script, &mut run).await else {
            panic!("expected a pause");
        };
        assert!(
            reason.starts_with("p95 latency failed 2 evaluations in a row (on_latency: pause"),
            "{reason}"
        );
        assert_eq!(
            script.calls(),
            ["weights 1 9", "smoke"],
            "neither abort nor promote"
        );
        assert_eq!(run.status, RunStatus::Paused);
        assert_eq!(run.windows.len(), 2);

        // `pause` concerns latency alone: with the error comparison failing too, it aborts.
        let mut slow_and_failing = figures(3000.0, 0.009, 0.002);
        slow_and_failing.canary.p95_ms = Some(900.0);
        let script = Script::with(vec![slow_and_failing]);
        let mut run = short_run();
        run.policy.on_latency = crate::canary::gate::OnLatency::Pause;
        let Ending::Aborted { reason } = drive(&script, &mut run).await else {
            panic!("expected an abort");
        };
        assert!(reason.contains("error-rate: canary 0.90%"), "{reason}");
    }

    #[tokio::test]
    async fn a_canary_pod_crash_looping_mid_bake_aborts_within_one_interval() {
        // Healthy figures throughout: only the pods say something is wrong.
        let script = Script {
            crash_at_wait: Some(2),
            ..Script::with(vec![figures(3000.0, 0.004, 0.004)])
        };
        let mut run = short_run();
        let Ending::Aborted { reason } = drive(&script, &mut run).await else {
            panic!("expected an abort");
        };
        assert_eq!(
            reason,
            "a canary pod failed at step 1/4 (10%): CrashLoopBackOff in pod canary-1 (container worker): last exit code 1"
        );
        assert_eq!(script.calls(), ["weights 1 9", "smoke", "abort"]);
        // One evaluation happened (after the first wait); the crash was acted on 3 s into the
        // second wait, before its 20 s were over and before any further evaluation.
        assert_eq!(run.windows.len(), 1);
        let started = run.step_started_at.unwrap();
        assert_eq!(script.now() - started, 20 + 3);
        assert_eq!(run.status, RunStatus::Aborted);
    }

    #[tokio::test]
    async fn missing_data_holds_then_pauses_without_touching_the_tracks() {
        let script = Script::with(vec![Observation::default()]);
        let mut run = short_run();
        let ending = drive(&script, &mut run).await;
        let Ending::Paused { reason } = ending else {
            panic!("expected a pause, got {ending:?}");
        };
        assert!(reason.contains("no usable data"), "{reason}");
        assert_eq!(
            script.calls(),
            ["weights 1 9", "smoke"],
            "neither abort nor promote"
        );
        assert_eq!(run.status, RunStatus::Paused);
        // The bake extends to 3 × 60 s while holding.
        assert_eq!(run.windows.len(), 9);
    }

    #[tokio::test]
    async fn a_canary_that_cannot_start_is_aborted() {
        let script = Script {
            fail_weights_at_step: Some(1),
            ..Script::with(vec![figures(3000.0, 0.004, 0.004)])
        };
        let mut run = short_run();
        let Ending::Aborted { reason } = drive(&script, &mut run).await else {
            panic!("expected an abort");
        };
        assert!(
            reason.contains("CrashLoopBackOff") && reason.contains("step 2/4"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_failed_promotion_is_undone_by_an_abort() {
        let script = Script {
            fail_promotion: true,
            ..Script::with(vec![figures(3000.0, 0.004, 0.004)])
        };
        let mut run = short_run();
        run.steps = vec![50, 100];
        let Ending::Aborted { reason } = drive(&script, &mut run).await else {
            panic!("expected an abort");
        };
        assert!(reason.starts_with("the promotion failed"), "{reason}");
        assert_eq!(script.calls(), ["weights 5 5", "smoke", "promote", "abort"]);
    }

    #[tokio::test]
    async fn a_promotion_refused_before_any_change_pauses_instead_of_aborting() {
        let script = Script {
            refuse_promotion: true,
            ..Script::with(vec![figures(3000.0, 0.004, 0.004)])
        };
        let mut run = short_run();
        run.steps = vec![50, 100];
        let ending = drive(&script, &mut run).await;
        assert!(
            matches!(&ending, Ending::Interrupted { reason } if reason.contains("500")),
            "{ending:?}"
        );
        assert_eq!(
            script.calls(),
            ["weights 5 5", "smoke", "promote"],
            "no abort"
        );
        let saved = script.saved.borrow().last().cloned().unwrap();
        assert_eq!(saved.status, RunStatus::Paused);
        assert_eq!(saved.promoting_since, None);
        assert_eq!(saved.holder, None);
        assert_eq!(saved.step, 1, "at the promotion, the tracks as they were");

        // `canary promote` later: straight to the promotion.
        let again = Script::with(vec![figures(3000.0, 0.004, 0.004)]);
        let mut run = saved;
        run.status = RunStatus::Running;
        run.request = Some(OperatorRequest::Promote {
            full: true,
            by: "oncall@desk".into(),
            at: 0,
        });
        assert_eq!(drive(&again, &mut run).await, Ending::Promoted);
        assert_eq!(again.calls(), ["promote"]);
    }

    #[tokio::test]
    async fn operator_requests_are_honoured_at_the_next_evaluation() {
        let script = Script::with(vec![figures(3000.0, 0.004, 0.004)]);
        script.requests.borrow_mut().push((
            2,
            OperatorRequest::Abort {
                by: "oncall@desk".into(),
                at: 0,
            },
        ));
        let mut run = short_run();
        assert_eq!(
            drive(&script, &mut run).await,
            Ending::Aborted {
                reason: "aborted by oncall@desk".into()
            }
        );

        let script = Script::with(vec![figures(3000.0, 0.004, 0.004)]);
        script.requests.borrow_mut().push((
            1,
            OperatorRequest::Promote {
                full: true,
                by: "oncall@desk".into(),
                at: 0,
            },
        ));
        let mut run = short_run();
        assert_eq!(drive(&script, &mut run).await, Ending::Promoted);
        assert_eq!(script.calls(), ["weights 1 9", "smoke", "promote"]);
    }

    #[tokio::test]
    async fn a_killed_run_resumes_from_its_recorded_step() {
        let script = Script {
            die_after_sleeps: Some(4),
            ..Script::with(vec![figures(3000.0, 0.004, 0.004)])
        };
        let mut run = short_run();
        let killed = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(drive(
            &script, &mut run,
        )))
        .await;
        assert!(killed.is_err(), "the run was killed mid-step");
        let saved = script.saved.borrow().last().cloned().unwrap();
        assert_eq!(saved.step, 1, "killed during step 2");
        assert_eq!(saved.status, RunStatus::Running);
        let step_started = saved.step_started_at;
        assert!(step_started.is_some());

        // A new process picks the saved state up: same step, same clock, no re-scaling.
        let resumed = Script::with(vec![figures(3000.0, 0.004, 0.004)]);
        resumed.clock.set(script.clock.get() + 5);
        let mut run = saved;
        assert_eq!(drive(&resumed, &mut run).await, Ending::Promoted);
        assert_eq!(resumed.calls(), ["weights 6 4", "smoke", "promote"]);
        assert_eq!(run.windows.iter().filter(|w| w.step == 1).count(), 3);
    }

    #[tokio::test]
    async fn a_run_killed_during_its_promotion_resumes_into_the_promotion() {
        let script = Script {
            die_in_promotion: true,
            ..Script::with(vec![figures(3000.0, 0.004, 0.004)])
        };
        let mut run = short_run();
        // A step list that does not end at 100: promoted after its last step's bake.
        run.steps = vec![50];
        let killed = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(drive(
            &script, &mut run,
        )))
        .await;
        assert!(killed.is_err(), "the run was killed while promoting");
        let saved = script.saved.borrow().last().cloned().unwrap();
        assert_eq!(saved.status, RunStatus::Running);
        assert!(saved.promoting_since.is_some(), "recorded before Helm ran");
        assert!(saved.step_started_at.is_some());

        // Stable may already run the new tag: no bake of the 50 % step again (these figures
        // would abort it), no re-scaling.
        let evaluated = saved.windows.len();
        let resumed = Script::with(vec![figures(3000.0, 0.2, 0.004)]);
        resumed.clock.set(script.clock.get() + 5);
        let mut run = saved;
        assert_eq!(drive(&resumed, &mut run).await, Ending::Promoted);
        assert_eq!(resumed.calls(), ["promote"]);
        assert_eq!(run.windows.len(), evaluated);
        let last = resumed.saved.borrow().last().cloned().unwrap();
        assert_eq!(last.status, RunStatus::Promoted);
        assert_eq!(last.promoting_since, None);

        // An abort asked for meanwhile still wins, and undoes the promotion.
        let resumed = Script::with(vec![figures(3000.0, 0.004, 0.004)]);
        let mut run = script.saved.borrow().last().cloned().unwrap();
        run.request = Some(OperatorRequest::Abort {
            by: "oncall@desk".into(),
            at: 0,
        });
        assert!(matches!(
            drive(&resumed, &mut run).await,
            Ending::Aborted { .. }
        ));
        assert_eq!(resumed.calls(), ["abort"]);
        assert_eq!(run.promoting_since, None);
    }

    #[tokio::test]
    async fn a_run_that_loses_the_lease_stops_without_another_change_or_save() {
        // Failing figures: a run that kept going would abort at its first evaluation, scaling
        // stable back up.
        let script = Script {
            fenced_after_sleeps: Some(1),
            ..Script::with(vec![figures(3000.0, 0.2, 0.004)])
        };
        let mut run = short_run();
        run.policy.consecutive_failures_to_abort = 1;
        let ending = drive(&script, &mut run).await;
        assert!(
            matches!(&ending, Ending::Fenced { reason } if reason.contains("kill-switch")),
            "{ending:?}"
        );
        assert_eq!(
            script.calls(),
            ["weights 1 9", "smoke"],
            "no abort, no promote"
        );
        let saved_last = script.saved.borrow().last().cloned().unwrap();
        assert_eq!(saved_last.status, RunStatus::Running);
        assert!(run.windows.is_empty(), "no evaluation after the loss");
        assert_eq!(run.status, RunStatus::Running);
    }

    #[test]
    fn the_window_description_names_every_gate_with_its_figures() {
        let mut run = short_run();
        run.policy = GatePolicy::default();
        let observation = figures(3000.0, 0.004, 0.004);
        let evaluation = evaluate(&run.policy, &observation);
        let record = WindowRecord {
            step: 0,
            weight: 10,
            at: 0,
            elapsed_secs: 40,
            observation,
            evaluation,
            decision: StepDecision::Continue,
            note: Some("p95 from 3 pods".into()),
        };
        let text = describe_window(&run, &record);
        assert!(
            text.starts_with("step 1/4 (10%) at 40s of 60s bake: pass -> keep baking"),
            "{text}"
        );
        assert!(
            text.contains("error-rate pass         canary 0.40% of 3000"),
            "{text}"
        );
        assert!(
            text.contains("latency    pass         canary p95 80 ms"),
            "{text}"
        );
        assert!(text.contains("guardrail  pass"), "{text}");
        assert!(text.ends_with("note: p95 from 3 pods"), "{text}");
    }
}
