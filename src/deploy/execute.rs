//! Runs a deploy plan: each component upgraded, its rollout tracked and verified, in plan
//! order; on the first failure every component this run changed is undone, newest first
//! (`outcome::rollback_order`), unless `--no-rollback`. The loop is written over
//! [`DeployBackend`], so the order and the exit-1-versus-4 decision are tested with a scripted
//! fake; [`KubeDeploy`] is the one backend over Helm and the cluster.

use std::future::Future;
use std::time::Duration;

use super::outcome::{ComponentResult, ComponentState, DeployReport, Failure, Undo, Verdict};
use super::plan::{DeployPlan, PlanStep};
use crate::audit::AuditSink;
use crate::audit::note::{self, AuditNote};
use crate::helm::driver::HelmTarget;
use crate::lock::{LeaseGuard, Lost};
use crate::output::{CheckState, Output};
use crate::rollout::report::{outcome_summary, report_outcome};
use crate::rollout::track::{self, Outcome, Target};
use crate::settings::Environment;
use crate::smoke;

/// The edges of a deploy. Errors are one-line explanations.
pub trait DeployBackend {
    /// `helm upgrade --install` of the step.
    fn upgrade(&self, step: &PlanStep) -> impl Future<Output = Result<(), String>>;
    /// Watches the step's rollout to its verdict.
    fn track(&self, step: &PlanStep) -> impl Future<Output = Result<Outcome, String>>;
    /// The post-rollout checks of the step's component.
    fn verify(&self, step: &PlanStep) -> impl Future<Output = Result<(), String>>;
    /// Undoes the step (Helm rollback and its rollout tracked, or uninstall).
    fn undo(&self, step: &PlanStep, undo: Undo) -> impl Future<Output = Result<(), String>>;
    /// Records one component's result in the audit trail.
    fn audit(&self, result: &ComponentResult, outcome: &str) -> impl Future<Output = ()>;
    /// Whether this process still holds the deploy Lease: checked before each step and
    /// before undoing anything (a long wait inside a step is raced with the loss by the
    /// backend itself).
    fn fence(&self) -> Result<(), Lost>;
}

/// What a run of the plan produced.
#[derive(Debug)]
pub struct Executed {
    pub report: DeployReport,
    pub verdict: Verdict,
}

/// Runs `plan`; `previous[i]` is step i's rollback target (`None`: a first install).
pub async fn execute(
    backend: &impl DeployBackend,
    plan: &DeployPlan,
    previous: &[Option<u32>],
    rollback: bool,
) -> Executed {
    let mut results: Vec<ComponentResult> = plan
        .steps
        .iter()
        .zip(previous)
        .map(|(step, previous)| ComponentResult {
            component: step.component.clone(),
            release: step.release.clone(),
            previous_revision: *previous,
            result: ComponentState::NotStarted,
            rollout: None,
        })
        .collect();
    let mut failure = None;
    let mut fenced = None;
    for (index, step) in plan.steps.iter().enumerate() {
        if let Err(lost) = backend.fence() {
            fenced = Some(lost);
            break;
        }
        results[index].result = ComponentState::Failed;
        if let Err(problem) = run_step(backend, step, &mut results[index]).await {
            failure = Some(problem);
            break;
        }
        results[index].result = ComponentState::Deployed;
    }
    // A step that failed because the Lease was lost mid-wait is not this run's to undo.
    if let Some(lost) = fenced.or_else(|| backend.fence().err()) {
        let verdict = Verdict::Fenced { lost };
        for result in results.iter().filter(|r| r.result.changed()) {
            backend.audit(result, verdict.audit_outcome()).await;
        }
        return Executed {
            report: DeployReport {
                environment: plan.environment.clone(),
                components: results,
            },
            verdict,
        };
    }

    let mut problems = Vec::new();
    if failure.is_some() && rollback {
        for (index, undo) in super::outcome::rollback_order(&results) {
            let step = &plan.steps[index];
            results[index].result = match backend.undo(step, undo).await {
                Ok(()) => undo.done(),
                Err(problem) => {
                    problems.push(format!("{}: {problem}", step.component));
                    ComponentState::RollbackFailed
                }
            };
            let state = results[index].result;
            backend.audit(&results[index], state.as_str()).await;
        }
    }
    let verdict = Verdict::decide(failure, rollback, problems);
    if !matches!(
        verdict,
        Verdict::Undone { .. } | Verdict::RollbackFailed { .. }
    ) {
        for result in results.iter().filter(|r| r.result.changed()) {
            backend.audit(result, verdict.audit_outcome()).await;
        }
    }
    Executed {
        report: DeployReport {
            environment: plan.environment.clone(),
            components: results,
        },
        verdict,
    }
}

async fn run_step(
    backend: &impl DeployBackend,
    step: &PlanStep,
    result: &mut ComponentResult,
) -> Result<(), Failure> {
    backend
        .upgrade(step)
        .await
        .map_err(|error| Failure::Upgrade {
            release: step.release.clone(),
            error,
        })?;
    let outcome = backend
        .track(step)
        .await
        .map_err(|error| Failure::Tracking {
            deployment: step.deployment.clone(),
            error,
        })?;
    let complete = outcome.is_complete();
    let summary = outcome_summary(&outcome);
    result.rollout = Some(outcome);
    if !complete {
        return Err(Failure::Rollout {
            deployment: step.deployment.clone(),
            summary,
        });
    }
    backend
        .verify(step)
        .await
        .map_err(|problem| Failure::Verification {
            component: step.component.clone(),
            problem,
        })
}

/// The deploy's edges over Helm and the cluster.
pub struct KubeDeploy<'a> {
    pub client: &'a kube::Client,
    pub environment: &'a Environment,
    pub helm: &'a HelmTarget,
    pub timeout: Duration,
    /// How long the new pods are watched after a rollout is complete (not after a rollback).
    pub hold: Duration,
    pub audit: &'a dyn AuditSink,
    pub output: &'a Output,
    /// The deploy Lease's fencing token.
    pub lease: &'a LeaseGuard,
}

impl KubeDeploy<'_> {
    /// Watches the step's Deployment to its verdict and prints it as `<what> <deployment>`.
    async fn tracked(
        &self,
        step: &PlanStep,
        what: &str,
        hold: Duration,
    ) -> Result<Outcome, String> {
        let target = Target {
            namespace: self.environment.namespace.clone(),
            deployment: step.deployment.clone(),
            selector: step.selector.clone(),
        };
        let tracked = tokio::select! {
            tracked = track::track_and_hold(
                self.client,
                &target,
                self.timeout,
                hold,
                self.output,
            ) => tracked,
            lost = self.lease.lost() => return Err(lost.to_string()),
        };
        let outcome = tracked.map_err(|error| error.to_string())?;
        report_outcome(
            self.output,
            &format!("{what} {}", step.deployment),
            &outcome,
        );
        Ok(outcome)
    }
}

impl DeployBackend for KubeDeploy<'_> {
    async fn upgrade(&self, step: &PlanStep) -> Result<(), String> {
        self.output
            .info(format!("deploying {} ({})", step.component, step.image));
        self.output.detail(format!("  {}", step.helm));
        step.command.run().await.map(|_| ()).map_err(|error| {
            self.output.check(
                CheckState::Fail,
                &format!("helm upgrade {}", step.release),
                &error.to_string(),
            );
            for hint in crate::error::Classify::hints(&error) {
                self.output.info(format!("  hint: {hint}"));
            }
            error.to_string()
        })
    }

    async fn track(&self, step: &PlanStep) -> Result<Outcome, String> {
        self.tracked(step, "rollout", self.hold).await
    }

    async fn verify(&self, step: &PlanStep) -> Result<(), String> {
        let Some(component) = self
            .environment
            .components
            .iter()
            .find(|c| c.name == step.component)
        else {
            return Ok(());
        };
        verify_component(self.client, self.environment, component, self.output).await
    }

    async fn undo(&self, step: &PlanStep, undo: Undo) -> Result<(), String> {
        let command = match undo {
            Undo::To(revision) => self.helm.rollback(&step.release, revision),
            Undo::Uninstall => self.helm.uninstall(&step.release),
        };
        self.output.info(format!(
            "rolling back {}: {}",
            step.component,
            command.display()
        ));
        command.run().await.map_err(|e| e.to_string())?;
        if undo == Undo::Uninstall {
            self.output.check(
                CheckState::Ok,
                &format!("uninstall {}", step.release),
                "the failed first install was removed",
            );
            return Ok(());
        }
        let outcome = self.tracked(step, "rollback", Duration::ZERO).await?;
        if outcome.is_complete() {
            Ok(())
        } else {
            Err(outcome_summary(&outcome))
        }
    }

    async fn audit(&self, result: &ComponentResult, outcome: &str) {
        note::record(
            self.audit,
            self.output,
            self.environment,
            audit_note(result, outcome),
        )
        .await;
    }

    fn fence(&self) -> Result<(), Lost> {
        self.lease.check()
    }
}

fn audit_note(result: &ComponentResult, outcome: &str) -> AuditNote {
    AuditNote {
        action: "deploy".to_owned(),
        target: result.release.clone(),
        from_state: result
            .previous_revision
            .map_or_else(|| "absent".to_owned(), |r| format!("revision {r}")),
        to_state: result.result.to_string(),
        outcome: outcome.to_owned(),
        details: serde_json::json!({ "component": result.component }),
    }
}

/// Post-rollout verification: the smoke suite's `cluster` and `metrics` categories for the
/// component (pods Ready and not restarting, the metrics endpoint valid with every required
/// name, the poller's freshness). Failing checks are retried for [`smoke::AFTER_CHANGE_WAIT`]; a
/// failure that remains is a failed rollout (the caller rolls back). The functional check is
/// not part of a deploy: run `psctl smoke` afterwards (see docs/smoke.md).
pub async fn verify_component(
    client: &kube::Client,
    environment: &Environment,
    component: &crate::settings::Component,
    output: &Output,
) -> Result<(), String> {
    let report = smoke::after_change(client, environment, &component.name)
        .await
        .map_err(|error| error.to_string())?;
    report.print_checks(output);
    if report.passed() {
        Ok(())
    } else {
        Err(format!(
            "post-deploy smoke failed: {}",
            report.failure_summary()
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::deploy::plan::{DeploySettings, plan};
    use crate::error::ExitStatus;
    use crate::rollout::diagnosis::{Diagnosis, FailureReason, Progress};

    /// What the fake does for one component; every call is recorded.
    #[derive(Default, Clone)]
    struct Script {
        upgrade: Option<&'static str>,
        track: Option<&'static str>,
        rollout_fails: bool,
        verify: Option<&'static str>,
        undo: Option<&'static str>,
        /// Another operator takes the Lease over while this component's rollout is watched.
        lease_taken: bool,
    }

    #[derive(Default)]
    struct Fake {
        scripts: BTreeMap<String, Script>,
        calls: RefCell<Vec<String>>,
        lost: RefCell<Option<Lost>>,
    }

    impl Fake {
        fn script(&self, step: &PlanStep) -> Script {
            self.scripts
                .get(&step.component)
                .cloned()
                .unwrap_or_default()
        }
        fn call(&self, what: String) {
            self.calls.borrow_mut().push(what);
        }
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    fn fail(problem: Option<&'static str>) -> Result<(), String> {
        problem.map_or(Ok(()), |p| Err(p.to_owned()))
    }

    impl DeployBackend for Fake {
        async fn upgrade(&self, step: &PlanStep) -> Result<(), String> {
            self.call(format!("upgrade {}", step.component));
            fail(self.script(step).upgrade)
        }
        async fn track(&self, step: &PlanStep) -> Result<Outcome, String> {
            self.call(format!("track {}", step.component));
            let script = self.script(step);
            if script.lease_taken {
                let lost = Lost::TakenBy {
                    holder: "bob@laptop pid 7 (kill-switch)".into(),
                };
                *self.lost.borrow_mut() = Some(lost.clone());
                return Err(lost.to_string());
            }
            fail(script.track)?;
            Ok(if script.rollout_fails {
                Outcome::Failed {
                    diagnosis: Diagnosis {
                        reason: FailureReason::ImagePull,
                        detail: "ImagePullBackOff".into(),
                        pod: None,
                        container: None,
                        message: String::new(),
                        events: Vec::new(),
                    },
                    logs: Vec::new(),
                    seconds: 3.0,
                }
            } else {
                Outcome::Complete {
                    progress: Progress {
                        desired: 1,
                        updated: 1,
                        ready: 1,
                        available: 1,
                        old: 0,
                        message: "1/1 ready".into(),
                    },
                    seconds: 2.0,
                }
            })
        }
        async fn verify(&self, step: &PlanStep) -> Result<(), String> {
            self.call(format!("verify {}", step.component));
            fail(self.script(step).verify)
        }
        async fn undo(&self, step: &PlanStep, undo: Undo) -> Result<(), String> {
            self.call(format!("undo {} {undo:?}", step.component));
            fail(self.script(step).undo)
        }
        async fn audit(&self, result: &ComponentResult, outcome: &str) {
            self.call(format!(
                "audit {} {} {outcome}",
                result.component, result.result
            ));
        }
        fn fence(&self) -> Result<(), Lost> {
            self.lost.borrow().clone().map_or(Ok(()), Err)
        }
    }

    fn deploy_plan() -> DeployPlan {
        let text = "environments:\n  sandbox:\n    kube_context: psctl-sandbox\n    registry: 127.0.0.1:5000\n";
        let environment = crate::settings::file::parse(Path::new("psctl.yaml"), text)
            .unwrap()
            .environments["sandbox"]
            .clone();
        let helm = HelmTarget {
            program: PathBuf::from("helm"),
            namespace: "default".into(),
            kube_context: "psctl-sandbox".into(),
            kubeconfig: None,
            in_cluster: false,
        };
        let settings = DeploySettings {
            components: Vec::new(),
            tag: Some("1.4.2".into()),
            timeout: Duration::from_secs(300),
            hold: None,
            rollback: true,
        };
        plan(
            &environment,
            &settings,
            &helm,
            Path::new("psctl.yaml"),
            &BTreeMap::new(),
        )
        .unwrap()
    }

    fn states(executed: &Executed) -> Vec<ComponentState> {
        executed
            .report
            .components
            .iter()
            .map(|c| c.result)
            .collect()
    }

    async fn run(fake: &Fake, rollback: bool) -> Executed {
        execute(fake, &deploy_plan(), &[Some(3), None], rollback).await
    }

    #[tokio::test]
    async fn every_component_deploys_in_order_and_is_audited_as_succeeded() {
        let fake = Fake::default();
        let executed = run(&fake, true).await;
        assert_eq!(executed.verdict, Verdict::Deployed);
        assert_eq!(executed.verdict.exit_status(), ExitStatus::Success);
        assert_eq!(
            fake.calls(),
            [
                "upgrade poller",
                "track poller",
                "verify poller",
                "upgrade webhook",
                "track webhook",
                "verify webhook",
                "audit poller deployed succeeded",
                "audit webhook deployed succeeded",
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_rollout_undoes_every_change_newest_first_and_exits_one() {
        let mut fake = Fake::default();
        fake.scripts.insert(
            "webhook".into(),
            Script {
                rollout_fails: true,
                ..Script::default()
            },
        );
        let executed = run(&fake, true).await;
        assert_eq!(
            executed.verdict.exit_status(),
            ExitStatus::VerificationFailed
        );
        assert_eq!(
            states(&executed),
            [ComponentState::RolledBack, ComponentState::Uninstalled]
        );
        let calls = fake.calls();
        assert_eq!(
            calls[calls.len() - 4..],
            [
                "undo webhook Uninstall",
                "audit webhook uninstalled uninstalled",
                "undo poller To(3)",
                "audit poller rolled_back rolled_back",
            ]
        );
        let error = executed.verdict.error(&executed.report).unwrap();
        let message = format!("{:#}", error.error());
        assert!(
            message.starts_with("the rollout of `problemsolver-webhook` failed: ImagePullBackOff"),
            "{message}"
        );
        assert!(
            message.ends_with("failed first installs uninstalled"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_failed_undo_is_exit_four_and_the_rest_is_still_undone() {
        let mut fake = Fake::default();
        fake.scripts.insert(
            "webhook".into(),
            Script {
                verify: Some("metrics endpoint down"),
                ..Script::default()
            },
        );
        fake.scripts.insert(
            "poller".into(),
            Script {
                undo: Some("helm rollback timed out"),
                ..Script::default()
            },
        );
        let executed = run(&fake, true).await;
        assert_eq!(executed.verdict.exit_status(), ExitStatus::RollbackFailed);
        assert_eq!(
            states(&executed),
            [ComponentState::RollbackFailed, ComponentState::Uninstalled]
        );
        let Verdict::RollbackFailed { failure, problems } = &executed.verdict else {
            panic!("{:?}", executed.verdict);
        };
        assert_eq!(
            failure.to_string(),
            "`webhook` rolled out but failed verification: metrics endpoint down"
        );
        assert_eq!(problems, &["poller: helm rollback timed out"]);
        let error = executed.verdict.error(&executed.report).unwrap();
        assert!(error.hints().iter().any(|h| h.contains("--to-rev 3")));
    }

    #[tokio::test]
    async fn a_failure_stops_the_run_and_unreached_components_are_not_touched() {
        let mut fake = Fake::default();
        fake.scripts.insert(
            "poller".into(),
            Script {
                upgrade: Some("another operation is in progress"),
                ..Script::default()
            },
        );
        let executed = run(&fake, true).await;
        assert_eq!(
            states(&executed),
            [ComponentState::RolledBack, ComponentState::NotStarted]
        );
        assert!(!fake.calls().iter().any(|c| c.contains("webhook")));
        assert_eq!(
            executed.verdict.exit_status(),
            ExitStatus::VerificationFailed
        );
    }

    #[tokio::test]
    async fn without_rollback_the_change_is_left_in_place_and_audited_as_failed() {
        let mut fake = Fake::default();
        fake.scripts.insert(
            "webhook".into(),
            Script {
                track: Some("watch closed"),
                ..Script::default()
            },
        );
        let executed = run(&fake, false).await;
        assert!(matches!(executed.verdict, Verdict::LeftInPlace { .. }));
        assert_eq!(
            executed.verdict.exit_status(),
            ExitStatus::VerificationFailed
        );
        assert_eq!(
            states(&executed),
            [ComponentState::Deployed, ComponentState::Failed]
        );
        let calls = fake.calls();
        assert!(!calls.iter().any(|c| c.starts_with("undo")), "{calls:?}");
        assert_eq!(
            calls[calls.len() - 2..],
            [
                "audit poller deployed failed",
                "audit webhook failed failed"
            ]
        );
        let error = executed.verdict.error(&executed.report).unwrap();
        assert!(format!("{:#}", error.error()).contains(
            "tracking the rollout of `problemsolver-webhook` failed: watch closed; left in place (--no-rollback)"
        ));
    }

    #[tokio::test]
    async fn a_lease_lost_mid_rollout_stops_without_undoing_and_leaves_the_rest() {
        let mut fake = Fake::default();
        fake.scripts.insert(
            "webhook".into(),
            Script {
                lease_taken: true,
                ..Script::default()
            },
        );
        let executed = run(&fake, true).await;
        let Verdict::Fenced { lost } = &executed.verdict else {
            panic!("{:?}", executed.verdict);
        };
        assert!(matches!(lost, Lost::TakenBy { .. }), "{lost:?}");
        // Exit 2: another operation owns the environment now.
        assert_eq!(executed.verdict.exit_status(), ExitStatus::Usage);
        let calls = fake.calls();
        // Nothing is undone and no later component is started by a process that lost the Lease.
        assert!(!calls.iter().any(|c| c.starts_with("undo")), "{calls:?}");
        assert!(
            calls.iter().any(|c| c.ends_with(" stopped")),
            "the changed component is audited as stopped: {calls:?}"
        );
        let error = executed.verdict.error(&executed.report).expect("an error");
        let message = format!("{:#}", error.error());
        assert!(message.contains("taken over"), "{message}");
        assert_eq!(error.status(), ExitStatus::Usage);
    }
}
