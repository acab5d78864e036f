use std::path::Path;

use super::*;

fn environment() -> Environment {
    let text = "environments:\n  sandbox:\n    kube_context: psctl-sandbox\n";
    crate::settings::file::parse(Path::new("psctl.yaml"), text)
        .unwrap()
        .environments["sandbox"]
        .clone()
}

fn context() -> Context {
    Context {
        environment: "sandbox".into(),
        overrides: Vec::new(),
        git_sha: Some(|| Ok("0123abcd".to_owned())),
    }
}

fn parse_ok(text: &str) -> Playbook {
    parse("p.yaml", text, &context()).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> String {
    parse("p.yaml", text, &context()).unwrap_err().to_string()
}

const RELEASE: &str = "\
name: release
description: the documented release
vars:
  tag: ${git_sha}
steps:
  - build: {tag: \"${tag}\"}
  - secrets-check: {}
  - db-backup: {}
  - db-migrate: {}
  - deploy:
      components: [poller]
      tag: ${tag}
      on_failure: rollback
  - smoke: {only: [cluster, metrics]}
  - approval: {message: \"Dashboards green?\"}
  - canary:
      component: webhook
      tag: ${tag}
      steps: [10, 30, 60, 100]
      bake: 2m
      on_failure: rollback
";

#[test]
fn every_step_becomes_the_psctl_command_it_runs() {
    let plan = parse_ok(RELEASE).plan(&environment()).unwrap();
    let commands: Vec<String> = plan
        .steps
        .iter()
        .map(|s| s.display_command("sandbox"))
        .collect();
    assert_eq!(
        commands,
        [
            "psctl build --tag 0123abcd --env sandbox",
            "psctl secrets check --env sandbox",
            "psctl db backup --env sandbox",
            "psctl db migrate --env sandbox",
            "psctl deploy --component poller --tag 0123abcd --env sandbox",
            "psctl smoke --only cluster metrics --env sandbox",
            "(ask: Dashboards green?)",
            "psctl canary start --component webhook --tag 0123abcd --steps 10,30,60,100 --bake 2m --env sandbox",
        ]
    );
    assert_eq!(plan.steps[4].on_failure, OnFailure::Rollback);
    assert_eq!(plan.steps[0].on_failure, OnFailure::Stop);
    assert_eq!(plan.steps[4].line, Some(10));
}

#[test]
fn the_plan_is_deterministic() {
    let first = serde_json::to_string(&parse_ok(RELEASE).plan(&environment()).unwrap()).unwrap();
    let second = serde_json::to_string(&parse_ok(RELEASE).plan(&environment()).unwrap()).unwrap();
    assert_eq!(first, second);
}

#[test]
fn an_unknown_step_type_names_its_line() {
    let text = "name: x\nsteps:\n  - deploy: {}\n  - deplyo: {}\n";
    let error = parse_err(text);
    assert!(error.starts_with("p.yaml:4:"), "{error}");
    assert!(error.contains("unknown variant `deplyo`"), "{error}");
}

#[test]
fn an_unknown_key_names_its_line_and_step() {
    let text =
        "name: x\nsteps:\n  - status: {}\n  - deploy:\n      components: [poller]\n      tgs: v1\n";
    let error = parse_err(text);
    assert!(error.starts_with("p.yaml:6:"), "{error}");
    assert!(error.contains("step 2 (deploy"), "{error}");
    assert!(error.contains("unknown field `tgs`"), "{error}");
}

#[test]
fn an_unknown_top_level_key_is_refused() {
    let error = parse_err("name: x\nstep:\n  - status: {}\n");
    assert!(error.contains("unknown field `step`"), "{error}");
}

#[test]
fn an_unknown_component_names_the_step_line() {
    let text = "name: x\nsteps:\n  - status: {}\n\n  - deploy: {components: [pollr]}\n";
    let error = parse_ok(text).plan(&environment()).unwrap_err().to_string();
    assert!(error.starts_with("p.yaml:5: step 2 (deploy)"), "{error}");
    assert!(error.contains("pollr"), "{error}");
}

#[test]
fn an_unknown_variable_names_its_line() {
    let error = parse_err("name: x\nsteps:\n  - deploy: {tag: \"${tga}\"}\n");
    assert!(error.starts_with("p.yaml:3:"), "{error}");
    assert!(error.contains("unknown variable `${tga}`"), "{error}");
}

#[test]
fn overrides_win_and_values_cannot_inject_yaml() {
    let mut ctx = context();
    ctx.overrides.push(("tag".into(), "v1.2.3".into()));
    let playbook = parse("p.yaml", RELEASE, &ctx).unwrap();
    assert_eq!(playbook.vars["tag"], "v1.2.3");

    let mut ctx = context();
    ctx.overrides
        .push(("tag".into(), "x}\n  - kill-switch: {state: on".into()));
    let error = parse("p.yaml", RELEASE, &ctx).unwrap_err().to_string();
    assert!(error.contains("only letters, digits"), "{error}");
}

#[test]
fn git_sha_is_computed_only_when_used() {
    let ctx = Context {
        environment: "sandbox".into(),
        overrides: Vec::new(),
        git_sha: Some(|| Err("not a git repository".to_owned())),
    };
    assert!(parse("p.yaml", "name: x\nsteps:\n  - status: {}\n", &ctx).is_ok());
    let error = parse("p.yaml", RELEASE, &ctx).unwrap_err().to_string();
    assert!(error.contains("not a git repository"), "{error}");
}

#[test]
fn duplicate_step_names_are_refused() {
    let text = "name: x\nsteps:\n  - smoke: {}\n  - smoke: {}\n";
    let error = parse_ok(text).plan(&environment()).unwrap_err().to_string();
    assert!(error.contains("already used by step 1"), "{error}");
}

#[test]
fn from_accepts_a_number_or_a_name() {
    let plan = parse_ok(RELEASE).plan(&environment()).unwrap();
    assert_eq!(plan.find("5"), Ok(4));
    assert_eq!(plan.find("canary"), Ok(7));
    assert!(plan.find("9").unwrap_err().contains("steps 1 to 8"));
    assert!(
        plan.find("deplyo")
            .unwrap_err()
            .contains("no step has that name")
    );
}

#[test]
fn step_parameters_are_validated() {
    let env = environment();
    let bad = |step: &str| {
        parse_ok(&format!("name: x\nsteps:\n  - {step}\n"))
            .plan(&env)
            .unwrap_err()
            .to_string()
    };
    assert!(bad("canary: {tag: v1}").contains("`component` is required"));
    assert!(bad("canary: {component: poller, tag: v1}").contains("no `canary:` section"));
    assert!(
        bad("canary: {component: webhook, tag: v1, steps: [30, 10]}").contains("must increase")
    );
    assert!(bad("canary: {component: webhook, tag: v1, steps: [0]}").contains("1..=100"));
    assert!(bad("kill-switch: {state: maybe}").contains("neither"));
    assert!(bad("smoke: {only: [vibes]}").contains("unknown category"));
    assert!(bad("deploy: {timeout: soon}").contains("timeout"));
    assert!(bad("db-restore: {into: x}").contains("`backup`"));
    assert!(bad("rollback: {undo: true, to_rev: 2}").contains("exclude"));
}

#[test]
fn a_bare_step_type_means_default_parameters() {
    let plan = parse_ok("name: x\nsteps:\n  - status\n  - smoke\n")
        .plan(&environment())
        .unwrap();
    assert_eq!(plan.steps[0].command, ["status"]);
    assert_eq!(plan.steps[1].command, ["smoke"]);
    let error = parse_err("name: x\nsteps:\n  - status\n  - statsu\n");
    assert!(error.starts_with("p.yaml:4:"), "{error}");
    assert!(error.contains("unknown variant `statsu`"), "{error}");
}

#[test]
fn an_empty_variable_leaves_an_optional_parameter_unset() {
    let text =
        "name: x\nvars:\n  rev: \"\"\nsteps:\n  - rollback: {component: webhook, to_rev: ${rev}}\n";
    let plan = parse_ok(text).plan(&environment()).unwrap();
    assert_eq!(plan.steps[0].command, ["rollback", "webhook"]);
    let mut ctx = context();
    ctx.overrides.push(("rev".into(), "3".into()));
    let plan = parse("p.yaml", text, &ctx)
        .unwrap()
        .plan(&environment())
        .unwrap();
    assert_eq!(
        plan.steps[0].command,
        ["rollback", "webhook", "--to-rev", "3"]
    );
}

#[test]
fn two_types_in_one_step_are_refused() {
    let error = parse_err("name: x\nsteps:\n  - deploy: {}\n    smoke: {}\n");
    assert!(error.contains("exactly one type"), "{error}");
}

#[test]
fn an_empty_playbook_is_refused() {
    assert!(parse_err("name: x\nsteps: []\n").contains("at least one step"));
}

#[test]
fn invalid_yaml_names_its_line() {
    let error = parse_err("name: x\nsteps:\n  - deploy: {components: [poller\n");
    assert!(error.contains("not valid YAML"), "{error}");
    assert!(error.starts_with("p.yaml:"), "{error}");
}

#[test]
fn shipped_playbooks_parse_and_plan_against_the_default_components() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut ctx = context();
        // restore.yaml needs the dump to restore from.
        ctx.overrides
            .push(("backup".into(), "/backups/x.dump".into()));
        let playbook = load(&path, &ctx).unwrap_or_else(|e| panic!("{e}"));
        playbook
            .plan(&environment())
            .unwrap_or_else(|e| panic!("{e}"));
        seen += 1;
    }
    assert!(
        seen >= 4,
        "expected the four shipped playbooks, found {seen}"
    );
}

#[test]
fn commands_parse_with_the_real_cli() {
    use clap::Parser as _;
    let plan = parse_ok(RELEASE).plan(&environment()).unwrap();
    for step in plan.steps.iter().filter(|s| !s.command.is_empty()) {
        let argv = std::iter::once("psctl".to_owned()).chain(step.command.iter().cloned());
        if let Err(error) = crate::cli::Cli::try_parse_from(argv) {
            panic!("step {} does not parse: {error}", step.number);
        }
    }
}

#[test]
fn a_tag_variable_cannot_reach_helm_syntax() {
    // `,` and `=` are allowed in variables, but a step's tag must be an image tag.
    let mut ctx = context();
    ctx.overrides
        .push(("tag".into(), "v1,image.repository=evil/x".into()));
    let playbook = parse("p.yaml", RELEASE, &ctx).unwrap();
    let error = playbook.plan(&environment()).unwrap_err();
    assert_eq!(
        crate::error::Classify::exit_status(&error),
        crate::error::ExitStatus::Usage
    );
    let error = error.to_string();
    assert!(error.contains("step 1 (build): `tag`:"), "{error}");
    assert!(error.contains("is not a valid image tag"), "{error}");

    for (step, text) in [
        ("deploy", "name: x\nsteps:\n  - deploy: {tag: \"a=b\"}\n"),
        (
            "canary",
            "name: x\nsteps:\n  - canary: {component: webhook, tag: \"a,b\"}\n",
        ),
    ] {
        let error = parse_ok(text).plan(&environment()).unwrap_err().to_string();
        assert!(
            error.contains(&format!("step 1 ({step}): `tag`:")),
            "{error}"
        );
    }
}
