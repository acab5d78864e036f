//! End-to-end test of `psctl build` against the sandbox (it fails, never skips, without it):
//! a dry run changes nothing; a real build pushes both images to the sandbox registry; they
//! pull by digest; the same build again is "already present"; other content under the same tag
//! is refused; and `psctl secrets apply` + `psctl deploy` run the built worker in the test's own
//! namespace.
//!
//! The release build of the services takes minutes, so the test reuses binaries already built
//! (`support::images::prebuilt_binaries`).

mod support;

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use support::Sandbox;
use support::sandbox::RuntimeSecret;

const BINARIES: [&str; 2] = support::images::SERVICE_BINARIES;

/// The sandbox's runtime Secret values, as `psctl-sandbox up` keeps them.
fn sandbox_runtime_env() -> PathBuf {
    let state = std::env::var_os("PSCTL_SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/psctl/sandbox")
        });
    let path = state.join("secrets/runtime.env");
    assert!(
        path.is_file(),
        "{} is missing; is the sandbox up?",
        path.display()
    );
    path
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The image result of `component` in a build report.
fn image<'a>(report: &'a serde_json::Value, component: &str) -> &'a serde_json::Value {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["component"] == component)
        .unwrap_or_else(|| panic!("no {component} in {report}"))
}

async fn remote_digest(registry: &str, image: &str, tag: &str) -> Option<String> {
    psctl::registry::Registry::new(registry)
        .unwrap()
        .manifest(image, tag)
        .await
        .expect("the sandbox registry answers")
        .map(|m| m.digest)
}

#[tokio::test]
async fn build_pushes_pulls_by_digest_refuses_overwrites_and_deploys() {
    let sandbox = Sandbox::builder("build")
        .runtime_secret(RuntimeSecret::Absent)
        .start()
        .await;
    // The sandbox's own environment (its build settings), in the test's namespace.
    let config = sandbox.sandbox_config("build", |_| {});
    let binaries = support::images::prebuilt_binaries();
    let prebuilt = binaries.display().to_string();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tag = format!("e2e-{}-{nanos}", std::process::id());

    // Dry run: the plan, nothing built or pushed.
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &["build", "--prebuilt", &prebuilt, "--tag", &tag, "--dry-run"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "docker push {}/problemsolver-webhook-worker:{tag}",
            sandbox.registry
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "--build-arg RUNTIME_BASE={}/psctl-base:bookworm",
            sandbox.registry
        )),
        "{stdout}"
    );
    for binary in BINARIES {
        assert_eq!(remote_digest(&sandbox.registry, binary, &tag).await, None);
    }

    // The real build: both pushed, digests printed and what the registry serves.
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "build",
            "--prebuilt",
            &prebuilt,
            "--tag",
            &tag,
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report = json(&stdout);
    for (component, binary) in [("poller", BINARIES[0]), ("webhook", BINARIES[1])] {
        let built = image(&report, component);
        assert_eq!(built["push"], "pushed", "{report}");
        let digest = built["digest"].as_str().unwrap().to_owned();
        assert_eq!(
            remote_digest(&sandbox.registry, binary, &tag).await,
            Some(digest.clone())
        );
        let pinned = format!("{}/{binary}@{digest}", sandbox.registry);
        assert_eq!(built["pinned"], pinned.as_str());
        let pulled = Command::new("docker")
            .args(["pull", "-q", &pinned])
            .output()
            .expect("run docker");
        assert!(
            pulled.status.success(),
            "docker pull {pinned}: {}",
            String::from_utf8_lossy(&pulled.stderr)
        );
        let labels = Command::new("docker")
            .args([
                "image",
                "inspect",
                "--format",
                "{{index .Config.Labels \"org.opencontainers.image.version\"}} {{.Config.User}}",
                &pinned,
            ])
            .output()
            .expect("run docker");
        assert_eq!(
            String::from_utf8_lossy(&labels.stdout).trim(),
            format!("{tag} 65532:65532")
        );
    }

    // The same build again: nothing pushed, the same digests.
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "build",
            "--prebuilt",
            &prebuilt,
            "--tag",
            &tag,
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let again = json(&stdout);
    assert_eq!(image(&again, "webhook")["push"], "already_present");
    assert_eq!(
        image(&again, "webhook")["digest"],
        image(&report, "webhook")["digest"]
    );

    // Other content under the same tag: refused, the registry untouched.
    let other = tempfile::tempdir().unwrap();
    for binary in BINARIES {
        std::fs::copy("/bin/true", other.path().join(binary)).unwrap();
    }
    let other_dir = other.path().display().to_string();
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "build",
            "--prebuilt",
            &other_dir,
            "--tag",
            &tag,
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(image(&json(&stdout), "poller")["push"], "refused");
    assert_eq!(
        remote_digest(&sandbox.registry, BINARIES[1], &tag)
            .await
            .as_deref(),
        image(&report, "webhook")["digest"].as_str()
    );

    // Ship it: the runtime Secret from the sandbox's env file, then deploy the built worker.
    let runtime_env = sandbox_runtime_env().display().to_string();
    let (code, _, stderr) = sandbox.psctl(
        &config,
        &["secrets", "apply", "--from-env-file", &runtime_env],
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = sandbox.psctl(
        &config,
        &[
            "deploy",
            "--component",
            "webhook",
            "--tag",
            &tag,
            "--timeout",
            "120s",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(json(&stdout)["components"][0]["result"], "deployed");
    let deployments: Api<Deployment> = Api::namespaced(sandbox.admin.clone(), &sandbox.namespace);
    let deployment = deployments.get("problemsolver-webhook").await.unwrap();
    let template = deployment.spec.unwrap().template;
    let container_image = template.spec.unwrap().containers[0].image.clone().unwrap();
    assert_eq!(
        container_image,
        format!("{}/problemsolver-webhook-worker:{tag}", sandbox.registry)
    );
    let (_, check, _) = sandbox.psctl(&config, &["secrets", "check", "-o", "json"]);
    let fingerprint = json(&check)["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(
        template
            .metadata
            .unwrap()
            .annotations
            .unwrap_or_default()
            .get("psctl.io/secret-fingerprint"),
        Some(&fingerprint),
        "the pod template carries the Secret's fingerprint"
    );
}
