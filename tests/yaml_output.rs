//! `-o yaml` prints the same document as `-o json`, for commands that need no cluster: the
//! deploy and canary plans under `--dry-run` and the permissions `psctl rbac` prints. A value
//! that YAML would read as another type (a version like `1.10`, the word `true`) stays a string.

use std::process::Command;

fn psctl(args: &[&str], config: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_psctl"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env_remove("PSCTL_ENV")
        .env_remove("PSCTL_OUTPUT")
        .env("PSCTL_CONFIG", config)
        .env("NO_COLOR", "1")
        .output()
        .expect("run psctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    String::from_utf8(output.stdout).expect("UTF-8 on stdout")
}

#[test]
fn yaml_and_json_carry_the_same_document() {
    let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        config.path(),
        "environments:
  e:
    kube_context: nowhere
    registry: 127.0.0.1:5000
    components:
      webhook:
        release: problemsolver-webhook
        chart: charts/webhook-worker
        image: problemsolver-webhook-worker
        deployment: problemsolver-webhook
        selector: app=problemsolver-webhook
        canary:
          deployment: problemsolver-webhook-canary
",
    )
    .unwrap();
    let commands: [&[&str]; 3] = [
        &["deploy", "--dry-run", "--tag", "1.10"],
        &[
            "canary",
            "start",
            "--dry-run",
            "--component",
            "webhook",
            "--tag",
            "true",
        ],
        &["rbac", "--subject", "User:alice"],
    ];
    for command in commands {
        let json_text = psctl(&[command, &["-o", "json"][..]].concat(), config.path());
        let yaml_text = psctl(&[command, &["-o", "yaml"][..]].concat(), config.path());
        assert_ne!(json_text, yaml_text, "{command:?} printed JSON for -o yaml");
        let json: serde_json::Value = serde_json::from_str(&json_text).unwrap();
        let yaml: serde_json::Value = psctl::yaml::from_str(&yaml_text)
            .unwrap_or_else(|error| panic!("{command:?}: not YAML ({error}):\n{yaml_text}"));
        assert_eq!(yaml, json, "{command:?}");
    }
    let plan = psctl(
        &["deploy", "--dry-run", "--tag", "1.10", "-o", "yaml"],
        config.path(),
    );
    assert!(
        plan.contains("127.0.0.1:5000/problemsolver-webhook-worker:1.10"),
        "{plan}"
    );
}
