use super::*;

fn step(number: usize, command: &[&str]) -> PlannedStep {
    PlannedStep {
        number,
        name: format!("step-{number}"),
        kind: "x",
        command: command.iter().map(|w| (*w).to_owned()).collect(),
        message: None,
        on_failure: OnFailure::Stop,
        line: None,
    }
}

#[test]
fn only_a_run_reviving_components_before_switching_off_meets_the_kill_switch() {
    let restore = [
        step(1, &[]),
        step(2, &["kill-switch", "off", "--component", "poller"]),
        step(3, &["deploy", "--tag", "v1"]),
    ];
    assert!(reviving_step(&restore).is_none());
    let release = [
        step(1, &["build", "--tag", "v1"]),
        step(2, &["deploy", "--tag", "v1"]),
    ];
    assert_eq!(reviving_step(&release).map(|s| s.number), Some(2));
    let stop = [step(1, &["kill-switch", "on"]), step(2, &["status"])];
    assert!(reviving_step(&stop).is_none());
}

fn base(revision: u32, tag: &str) -> Baseline {
    Baseline {
        revision,
        chart: "webhook-worker-0.1.0".into(),
        image_tag: tag.into(),
    }
}

#[test]
fn a_changed_release_returns_to_its_baseline_revision() {
    assert_eq!(
        rollback_action(Some(&base(3, "v1")), Some(&base(4, "v2"))),
        RollbackAction::To(3)
    );
}

#[test]
fn an_unchanged_or_already_restored_release_is_left_alone() {
    assert_eq!(
        rollback_action(Some(&base(3, "v1")), Some(&base(3, "v1"))),
        RollbackAction::Nothing
    );
    // deploy's automatic rollback produced revision 5 with the baseline's content.
    assert_eq!(
        rollback_action(Some(&base(3, "v1")), Some(&base(5, "v1"))),
        RollbackAction::Nothing
    );
    assert_eq!(rollback_action(None, None), RollbackAction::Nothing);
}

#[test]
fn a_first_install_cannot_be_rolled_back() {
    assert_eq!(
        rollback_action(None, Some(&base(1, "v2"))),
        RollbackAction::CannotUndoFirstInstall
    );
}

#[test]
fn state_names_are_valid_object_names() {
    assert_eq!(state_name("release"), "psctl-run-release");
    assert_eq!(state_name("Emergency Stop!"), "psctl-run-emergency-stop");
    assert!(state_name(&"x".repeat(100)).len() <= 63);
}

#[test]
fn the_report_ends_with_a_summary_and_the_resume_hint() {
    let step = |number: usize, result: &str| StepRecord {
        number,
        name: format!("s{number}"),
        kind: "status".into(),
        command: "psctl status --env sandbox".into(),
        result: result.into(),
        exit_code: if result == "failed" { 1 } else { 0 },
        duration_s: 1.25,
        error: if result == "failed" {
            "smoke failed".into()
        } else {
            String::new()
        },
        data: None,
    };
    let report = RunReport {
        playbook: "release".into(),
        environment: "sandbox".into(),
        result: "failed".into(),
        steps: vec![
            step(1, "skipped"),
            step(2, "passed"),
            step(3, "failed"),
            step(4, "not-run"),
        ],
        rollbacks: vec!["poller to revision 3".into()],
        resume: Some("psctl run playbooks/release.yaml --env sandbox --from 3".into()),
    };
    let text = report.render_table(&Style::PLAIN);
    assert!(
        text.contains("passed 1, failed 1, skipped 1, not run 1"),
        "{text}"
    );
    assert!(text.contains("Rolled back: poller to revision 3"), "{text}");
    assert!(text.ends_with("--from 3\n"), "{text}");
    assert!(text.contains("smoke failed"), "{text}");
}

fn environment() -> Environment {
    let text = "environments:\n  sandbox:\n    kube_context: psctl-sandbox\n    namespace: apps\n";
    crate::settings::file::parse(std::path::Path::new("psctl.yaml"), text)
        .unwrap()
        .environments["sandbox"]
        .clone()
}

fn plan_of(steps: Vec<PlannedStep>) -> Plan {
    Plan {
        playbook: "release".into(),
        file: "playbooks/release.yaml".into(),
        description: String::new(),
        environment: "sandbox".into(),
        vars: BTreeMap::new(),
        steps,
    }
}

fn state_of(plan: &Plan, baseline: BTreeMap<String, Option<Baseline>>) -> RunState {
    RunState {
        playbook: plan.playbook.clone(),
        file: plan.file.clone(),
        baseline,
        steps: plan
            .steps
            .iter()
            .map(|s| StepRecord {
                number: s.number,
                name: s.name.clone(),
                kind: s.kind.to_owned(),
                command: s.display_command(&plan.environment),
                result: "not-run".into(),
                exit_code: 0,
                duration_s: 0.0,
                error: String::new(),
                data: None,
            })
            .collect(),
        status: "running".into(),
        ..RunState::default()
    }
}

/// Steps exit with the status scripted for their number (success when unscripted); every call
/// is logged.
#[derive(Default)]
struct Fake {
    exits: BTreeMap<usize, ExitStatus>,
    now: BTreeMap<String, Option<Baseline>>,
    lost_after: Option<usize>,
    calls: std::cell::RefCell<Vec<String>>,
}

impl RunBackend for Fake {
    fn fence(&self) -> Result<(), Lost> {
        let steps_run = self
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("step"))
            .count();
        match self.lost_after {
            Some(n) if steps_run >= n => Err(Lost::TakenBy {
                holder: "ci@runner pid 9 (kill-switch)".into(),
            }),
            _ => Ok(()),
        }
    }

    async fn run_step(&self, step: &PlannedStep) -> (CommandResult, Option<serde_json::Value>) {
        self.calls
            .borrow_mut()
            .push(format!("step {}", step.number));
        let status = self
            .exits
            .get(&step.number)
            .copied()
            .unwrap_or(ExitStatus::Success);
        (Ok(status), None)
    }

    async fn save(&self, state: &RunState) -> Result<(), String> {
        let results: Vec<&str> = state.steps.iter().map(|s| s.result.as_str()).collect();
        self.calls
            .borrow_mut()
            .push(format!("save {}", results.join(",")));
        Ok(())
    }

    async fn current(&self) -> Result<BTreeMap<String, Option<Baseline>>, String> {
        Ok(self.now.clone())
    }

    async fn rollback(&self, component: &str, revision: u32) -> CommandResult {
        self.calls
            .borrow_mut()
            .push(format!("rollback {component} {revision}"));
        Ok(ExitStatus::Success)
    }
}

fn failing_step(number: usize, on_failure: OnFailure) -> PlannedStep {
    PlannedStep {
        on_failure,
        ..step(number, &["smoke"])
    }
}

#[tokio::test]
async fn a_stopping_failure_records_the_step_and_runs_nothing_after_it() {
    let plan = plan_of(vec![
        step(1, &["status"]),
        failing_step(2, OnFailure::Stop),
        step(3, &["status"]),
    ]);
    let fake = Fake {
        exits: [(2, ExitStatus::VerificationFailed)].into(),
        ..Fake::default()
    };
    let mut state = state_of(&plan, BTreeMap::new());
    let (output, _, _) = Output::buffered(crate::output::Format::Table, Style::PLAIN);
    let finish = execute(&fake, &plan, &environment(), &mut state, 0, &output).await;
    assert!(matches!(finish, Finish::Stopped { step: 2, .. }));
    assert_eq!(
        *fake.calls.borrow(),
        [
            "step 1",
            "save passed,not-run,not-run",
            "step 2",
            "save passed,failed,not-run",
        ]
    );
    assert_eq!(state.steps[1].exit_code, 1);
    let conclusion = conclude(finish, &plan, "sandbox");
    assert_eq!(conclusion.state, "failed");
    assert_eq!(
        conclusion.failure.as_ref().unwrap().0,
        "psctl run playbooks/release.yaml --env sandbox --from 2 (after fixing step 2)"
    );
    assert_eq!(
        result(conclusion).unwrap_err().status(),
        ExitStatus::VerificationFailed
    );
}

#[tokio::test]
async fn a_continued_failure_completes_with_failures() {
    let plan = plan_of(vec![
        failing_step(1, OnFailure::Continue),
        step(2, &["status"]),
    ]);
    let fake = Fake {
        exits: [(1, ExitStatus::VerificationFailed)].into(),
        ..Fake::default()
    };
    let mut state = state_of(&plan, BTreeMap::new());
    let (output, _, _) = Output::buffered(crate::output::Format::Table, Style::PLAIN);
    let finish = execute(&fake, &plan, &environment(), &mut state, 0, &output).await;
    let conclusion = conclude(finish, &plan, "sandbox");
    assert_eq!(
        (conclusion.status, conclusion.state),
        (ExitStatus::VerificationFailed, "completed-with-failures")
    );
    assert_eq!(result(conclusion).unwrap(), ExitStatus::VerificationFailed);
}

#[tokio::test]
async fn a_rollback_failure_returns_changed_components_newest_first() {
    let plan = plan_of(vec![
        step(1, &["deploy"]),
        failing_step(2, OnFailure::Rollback),
    ]);
    let before = BTreeMap::from([
        ("poller".to_owned(), Some(base(3, "v1"))),
        ("webhook".to_owned(), Some(base(7, "v1"))),
    ]);
    let fake = Fake {
        exits: [(2, ExitStatus::VerificationFailed)].into(),
        now: BTreeMap::from([
            ("poller".to_owned(), Some(base(4, "v2"))),
            ("webhook".to_owned(), Some(base(8, "v2"))),
        ]),
        ..Fake::default()
    };
    let mut state = state_of(&plan, before);
    let (output, _, _) = Output::buffered(crate::output::Format::Table, Style::PLAIN);
    let finish = execute(&fake, &plan, &environment(), &mut state, 0, &output).await;
    assert_eq!(
        fake.calls.borrow()[4..],
        ["rollback webhook 7", "rollback poller 3"]
    );
    let conclusion = conclude(finish, &plan, "sandbox");
    assert_eq!(conclusion.state, "rolled-back");
    assert_eq!(
        conclusion.rollbacks,
        ["webhook to revision 7", "poller to revision 3"]
    );
}

#[tokio::test]
async fn a_run_that_lost_the_lease_stops_and_rolls_nothing_back() {
    let plan = plan_of(vec![
        failing_step(1, OnFailure::Rollback),
        step(2, &["status"]),
    ]);
    let fake = Fake {
        exits: [(1, ExitStatus::VerificationFailed)].into(),
        lost_after: Some(1),
        ..Fake::default()
    };
    let mut state = state_of(&plan, BTreeMap::new());
    let (output, _, _) = Output::buffered(crate::output::Format::Table, Style::PLAIN);
    let finish = execute(&fake, &plan, &environment(), &mut state, 0, &output).await;
    assert!(matches!(finish, Finish::Stopped { step: 1, .. }));
    assert!(
        !fake
            .calls
            .borrow()
            .iter()
            .any(|c| c.starts_with("rollback"))
    );
}

#[test]
fn the_baseline_is_each_components_deployed_revision() {
    use crate::helm::revision::tests::rev;
    use crate::helm::storage::ReleaseStatus::{Deployed, Failed};
    let history: Vec<Revision> = [rev(2, Deployed), rev(3, Failed)]
        .into_iter()
        .map(|r| Revision {
            release: "problemsolver-webhook".into(),
            ..r
        })
        .collect();
    let baseline = baseline_of(&environment(), &history);
    assert_eq!(baseline["webhook"].as_ref().map(|b| b.revision), Some(2));
    assert_eq!(baseline["poller"], None);
}
