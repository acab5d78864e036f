use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;
use crate::output::Format;

#[test]
fn on_remembers_the_count_and_off_restores_it_exactly() {
    let (after, patch) = decide(Switch::On, 3, None).unwrap();
    assert_eq!(after, 0);
    let patch = patch.unwrap();
    assert_eq!(patch["metadata"]["annotations"][REPLICAS_ANNOTATION], "3");
    assert_eq!(patch["spec"]["replicas"], 0);

    let (after, patch) = decide(Switch::Off, 0, Some("3")).unwrap();
    assert_eq!(after, 3);
    let patch = patch.unwrap();
    assert!(patch["metadata"]["annotations"][REPLICAS_ANNOTATION].is_null());
    assert_eq!(patch["spec"]["replicas"], 3);
}

#[test]
fn both_directions_are_idempotent() {
    // A second `on` must not overwrite the remembered count with 0.
    assert_eq!(decide(Switch::On, 0, Some("3")).unwrap(), (0, None));
    assert_eq!(decide(Switch::Off, 2, None).unwrap(), (2, None));
}

#[test]
fn a_component_already_at_zero_is_restored_to_zero() {
    let (_, patch) = decide(Switch::On, 0, None).unwrap();
    assert_eq!(
        patch.unwrap()["metadata"]["annotations"][REPLICAS_ANNOTATION],
        "0"
    );
}

#[test]
fn a_corrupt_annotation_is_refused() {
    assert!(
        decide(Switch::Off, 0, Some("three"))
            .unwrap_err()
            .contains("not a replica count")
    );
}

/// Deployments in memory: (replicas, remembered); every call logged.
#[derive(Default)]
struct Fake {
    objects: RefCell<BTreeMap<String, (i32, Option<String>)>>,
    refuse_scale: Option<&'static str>,
    calls: RefCell<Vec<String>>,
}

impl Fake {
    fn with(objects: &[(&str, i32, Option<&str>)]) -> Self {
        Self {
            objects: RefCell::new(
                objects
                    .iter()
                    .map(|(name, replicas, remembered)| {
                        (
                            (*name).to_owned(),
                            (*replicas, remembered.map(str::to_owned)),
                        )
                    })
                    .collect(),
            ),
            ..Self::default()
        }
    }
}

impl Deployments for Fake {
    async fn read(&self, deployment: &str) -> Result<Option<(i32, Option<String>)>, ClusterError> {
        Ok(self.objects.borrow().get(deployment).cloned())
    }

    async fn scale(&self, deployment: &str, patch: &serde_json::Value) -> Result<(), ClusterError> {
        self.calls.borrow_mut().push(format!("scale {deployment}"));
        if self.refuse_scale == Some(deployment) {
            return Err(ClusterError::Api {
                action: format!("patching Deployment `{deployment}`"),
                error: kube::Error::Api(Box::new(
                    kube::core::Status::failure("unavailable", "ServiceUnavailable").with_code(503),
                )),
            });
        }
        let mut objects = self.objects.borrow_mut();
        let entry = objects.get_mut(deployment).unwrap();
        entry.0 = i32::try_from(patch["spec"]["replicas"].as_i64().unwrap()).unwrap();
        match &patch["metadata"]["annotations"][REPLICAS_ANNOTATION] {
            serde_json::Value::String(count) => entry.1 = Some(count.clone()),
            serde_json::Value::Null if patch["metadata"].is_object() => entry.1 = None,
            _ => {}
        }
        Ok(())
    }

    async fn hand_back(&self, deployment: &str) -> Result<(), ClusterError> {
        self.calls
            .borrow_mut()
            .push(format!("hand back {deployment}"));
        Ok(())
    }

    async fn audit(&self, switch: Switch, change: &Change, outcome: &str) {
        let note = audit_note(switch, change, outcome);
        self.calls.borrow_mut().push(format!(
            "audit {} {} {} -> {} {}",
            note.action, note.target, note.from_state, note.to_state, note.outcome
        ));
    }
}

fn target(deployment: &str, optional: bool) -> Target {
    Target {
        component: "webhook".into(),
        deployment: deployment.into(),
        optional,
    }
}

#[tokio::test]
async fn a_missing_canary_is_skipped_and_a_missing_stable_deployment_refused() {
    let fake = Fake::with(&[("web", 2, None)]);
    let changes = plan(
        &fake,
        Switch::On,
        &[target("web", false), target("web-canary", true)],
    )
    .await
    .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].replicas_before, changes[0].replicas_after),
        (2, 0)
    );
    let error = plan(&fake, Switch::On, &[target("gone", false)])
        .await
        .unwrap_err();
    assert_eq!(error.status(), crate::error::ExitStatus::Usage);
    assert!(
        format!("{:#}", error.error()).contains("`gone` of component `webhook` does not exist")
    );
}

#[tokio::test]
async fn off_restores_then_hands_back_and_audits_each_deployment() {
    let fake = Fake::with(&[("web", 0, Some("3")), ("web-canary", 1, None)]);
    let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
    let changes = plan(
        &fake,
        Switch::Off,
        &[target("web", false), target("web-canary", true)],
    )
    .await
    .unwrap();
    assert!(apply(&fake, Switch::Off, &changes, &output).await.is_none());
    assert_eq!(
        *fake.calls.borrow(),
        [
            "scale web",
            "hand back web",
            "audit kill-switch off web replicas 0 -> replicas 3 succeeded",
        ]
    );
    assert_eq!(fake.objects.borrow()["web"], (3, None));
}

#[tokio::test]
async fn a_failed_write_is_audited_as_failed_and_the_others_still_run() {
    let mut fake = Fake::with(&[("a", 2, None), ("b", 1, None)]);
    fake.refuse_scale = Some("a");
    let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
    let changes = plan(&fake, Switch::On, &[target("a", false), target("b", false)])
        .await
        .unwrap();
    let failure = apply(&fake, Switch::On, &changes, &output).await.unwrap();
    assert!(
        failure.to_string().contains("patching Deployment `a`"),
        "{failure}"
    );
    assert_eq!(
        *fake.calls.borrow(),
        [
            "scale a",
            "audit kill-switch on a replicas 2 -> replicas 0 failed",
            "scale b",
            "audit kill-switch on b replicas 1 -> replicas 0 succeeded",
        ]
    );
    // `on` keeps the replicas: nothing is handed back to Helm.
    assert_eq!(fake.objects.borrow()["b"], (0, Some("1".into())));
}

#[tokio::test(start_paused = true)]
async fn what_an_overridden_holder_scaled_up_is_put_back_to_zero() {
    let fake = Fake::with(&[("a", 2, Some("2")), ("b", 0, Some("1")), ("c", 4, None)]);
    let (output, _, _) = Output::buffered(Format::Table, Style::PLAIN);
    settle_after_override(
        &fake,
        &[target("a", false), target("b", false), target("c", false)],
        &output,
    )
    .await
    .unwrap();
    assert_eq!(*fake.calls.borrow(), ["scale a"]);
    assert_eq!(fake.objects.borrow()["a"], (0, Some("2".into())));
}
