//! The repository's `Dockerfile` builds a runnable image from a host-built Rust binary on a
//! locally made base (no image can be pulled here). The binary under test is this crate's
//! `helm` (any glibc-linked Rust binary exercises the same Dockerfile); the base is a
//! throwaway `docker import` of the host's own C runtime. Needs Docker; fails, never skips,
//! when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("docker cannot run ({error}): install Docker"))
}

fn run(command: &mut Command) {
    let output = command.output().expect("command runs");
    assert!(output.status.success(), "{command:?}: {output:?}");
}

/// Removes the test's images whatever the outcome.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

/// A base image holding only the dynamic loader, libc, libm, libgcc_s and a passwd entry
/// for uid 65532: the same contents as a distroless cc base.
fn make_base(dir: &Path, tag: &str) {
    let root = dir.join("rootfs");
    for sub in ["lib/x86_64-linux-gnu", "lib64", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for lib in ["libc.so.6", "libm.so.6", "libgcc_s.so.1"] {
        std::fs::copy(
            Path::new("/lib/x86_64-linux-gnu").join(lib),
            root.join("lib/x86_64-linux-gnu").join(lib),
        )
        .unwrap_or_else(|error| panic!("host library {lib}: {error}"));
    }
    std::fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        root.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .unwrap();
    let tarball = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg("."));
    let output = docker(&["import", tarball.to_str().unwrap(), tag]);
    assert!(output.status.success(), "docker import: {output:?}");
}

#[test]
fn dockerfile_builds_a_runnable_non_root_image() {
    let unique = format!("{}-{}", std::process::id(), chrono_free_nanos());
    let base = format!("psctl-test-base:{unique}");
    let image = format!("psctl-test-service:{unique}");
    let _cleanup = Images(vec![image.clone(), base.clone()]);
    let dir = tempfile::tempdir().unwrap();
    make_base(dir.path(), &base);

    let context = dir.path().join("context");
    std::fs::create_dir_all(context.join("dist")).unwrap();
    std::fs::create_dir_all(context.join("src")).unwrap();
    std::fs::copy(repo().join("Dockerfile"), context.join("Dockerfile")).unwrap();
    std::fs::copy(repo().join(".dockerignore"), context.join(".dockerignore")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_helm"),
        context.join("dist/service-under-test"),
    )
    .unwrap();
    // Outside dist/: must not reach the image.
    std::fs::write(context.join("src/.env"), "NOT_IN_IMAGE=1\n").unwrap();
    let context = context.to_str().unwrap();

    let build = docker(&[
        "build",
        "-q",
        "--build-arg",
        &format!("RUNTIME_BASE={base}"),
        "--build-arg",
        "BINARY=service-under-test",
        "--build-arg",
        "REVISION=0123abcd",
        "--build-arg",
        "VERSION=1.2.3",
        "-t",
        &image,
        context,
    ]);
    assert!(build.status.success(), "docker build: {build:?}");

    let help = docker(&["run", "--rm", "--read-only", &image, "--help"]);
    assert!(help.status.success(), "the binary does not run: {help:?}");
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage"));

    let inspect = docker(&["image", "inspect", &image]);
    let details: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let config = &details[0]["Config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/service"])
    );
    assert!(config["Healthcheck"].is_null(), "no HEALTHCHECK: {config}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.revision"], "0123abcd");
    assert_eq!(labels["org.opencontainers.image.version"], "1.2.3");
    assert_eq!(
        labels["org.opencontainers.image.title"],
        "service-under-test"
    );
    assert!(labels["org.opencontainers.image.source"].is_string());

    let export = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "id=$(docker create {image}) && docker export $id | tar -t; docker rm $id >/dev/null"
        ))
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&export.stdout);
    assert!(files.contains("usr/local/bin/service"), "{files}");
    assert!(
        !files.contains(".env"),
        "context leaked into the image: {files}"
    );
}

#[test]
fn dockerfile_refuses_to_build_without_a_binary() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("dist")).unwrap();
    std::fs::copy(repo().join("Dockerfile"), dir.path().join("Dockerfile")).unwrap();
    std::fs::copy(
        repo().join(".dockerignore"),
        dir.path().join(".dockerignore"),
    )
    .unwrap();
    // `scratch` needs no pull; the build must stop at the COPY of the unnamed binary.
    std::fs::write(dir.path().join("dist/placeholder"), "x").unwrap();
    let build = docker(&[
        "build",
        "--build-arg",
        "RUNTIME_BASE=scratch",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!build.status.success());
    let stderr = String::from_utf8_lossy(&build.stderr);
    let stdout = String::from_utf8_lossy(&build.stdout);
    assert!(
        stderr.contains("BINARY-build-arg-is-required")
            || stdout.contains("BINARY-build-arg-is-required"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// A per-run suffix without adding a time crate: nanoseconds since the epoch.
fn chrono_free_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
