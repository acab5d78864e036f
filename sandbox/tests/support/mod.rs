//! Shared harness of the sandbox fidelity tests: they run against a sandbox that is up
//! (`scripts/test.sh` runs `psctl-sandbox up` first), each test in its own namespace, with the
//! real kubectl and Helm executables of that sandbox. A missing sandbox is a failure with the
//! command that fixes it, never a skip.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The sandbox under test.
pub struct Sandbox {
    pub state: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    pub api_url: String,
    pub registry: String,
}

fn state_dir() -> PathBuf {
    match std::env::var_os("PSCTL_SANDBOX_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/psctl/sandbox"),
    }
}

/// The running sandbox; panics with instructions when there is none.
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let state = state_dir();
        let settings_path = state.join("sandbox.json");
        let text = std::fs::read_to_string(&settings_path).unwrap_or_else(|_| {
            panic!(
                "no sandbox at `{}`: run `cargo run -p psctl-sandbox -- up` (scripts/test.sh does) or set PSCTL_SANDBOX_DIR",
                state.display()
            )
        });
        let settings: serde_json::Value = serde_json::from_str(&text).expect("sandbox.json parses");
        let api_url = format!("http://127.0.0.1:{}", settings["api_port"]);
        let registry = format!("127.0.0.1:{}", settings["registry_port"]);
        let version = Command::new("curl").args(["-sf", "--max-time", "5", &format!("{api_url}/version")]).output().expect("curl runs");
        assert!(
            version.status.success(),
            "the sandbox API server at {api_url} does not answer: run `psctl-sandbox up` (status: `psctl-sandbox status`)"
        );
        let sandbox = Sandbox {
            kubeconfig: state.join("kubeconfig"),
            kubectl: state.join("bin/kubectl"),
            helm: state.join("bin/helm"),
            state,
            api_url,
            registry,
        };
        assert!(sandbox.kubectl.is_file(), "kubectl missing at {}: run scripts/fetch-tools.sh", sandbox.kubectl.display());
        assert!(sandbox.helm.is_file(), "helm missing at {}: run scripts/fetch-tools.sh", sandbox.helm.display());
        sandbox
    })
}

/// The result of a command, with its output as text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(self, what: &str) -> String {
        assert_eq!(
            self.code, 0,
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self.stdout
    }
}

impl Sandbox {
    pub fn kubectl(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--context=psctl-sandbox")
                .args(args)
                .output()
                .expect("kubectl runs"),
        )
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write as _;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--context=psctl-sandbox")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write manifest");
        Run::from(child.wait_with_output().expect("kubectl ends"))
    }

    pub fn helm(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new(&self.helm)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--kube-context=psctl-sandbox")
                .args(args)
                .output()
                .expect("helm runs"),
        )
    }

    /// A fresh namespace for one test (deleted by the returned guard).
    pub fn namespace(&self, test: &str) -> Namespace<'_> {
        let name = format!("t-{test}-{}", std::process::id());
        let _ = self.kubectl(&["delete", "namespace", &name, "--wait=false"]);
        // `apply` sends JSON; kubectl's typed `create` commands (protobuf) have their own test.
        self.kubectl_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"),
        )
        .ok("create namespace");
        Namespace {
            sandbox: self,
            name,
        }
    }

    /// A kube-rs client for the sandbox, authenticating as its administrator (the token `up`
    /// generated; a sandbox started by an older build has none and needs none).
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.api_url.parse().expect("API URL parses"));
        if let Ok(token) = std::fs::read_to_string(self.state.join("secrets/api-admin-token")) {
            config.auth_info.token = Some(token.trim().to_owned().into());
        }
        kube::Client::try_from(config).expect("client builds")
    }

    /// A small image holding a static busybox on the sandbox base image, pushed to the sandbox
    /// registry as `<registry>/psctl-sandbox-test/busybox:<tag>`; built once per test binary.
    pub fn busybox_image(&self, tag: &str) -> String {
        self.busybox_image_with("busybox", tag, &[])
    }

    /// [`Self::busybox_image`] with more files, each `(host path, absolute path in the image)`,
    /// pushed as `<registry>/psctl-sandbox-test/<name>:<tag>`; built once per test binary.
    pub fn busybox_image_with(&self, name: &str, tag: &str, files: &[(&Path, &str)]) -> String {
        static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let image = format!("{}/psctl-sandbox-test/{name}:{tag}", self.registry);
        let mut built = BUILT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if built.contains(&image) {
            return image;
        }
        let context = tempfile::tempdir().expect("temp dir");
        std::fs::copy("/bin/busybox", context.path().join("busybox"))
            .expect("busybox is installed (Debian package busybox)");
        let mut copies = String::new();
        for (index, (host, inside)) in files.iter().enumerate() {
            let staged = format!("file-{index}");
            std::fs::copy(host, context.path().join(&staged))
                .unwrap_or_else(|e| panic!("copy {} into the image: {e}", host.display()));
            copies.push_str(&format!("COPY {staged} {inside}\n"));
        }
        std::fs::write(
            context.path().join("Dockerfile"),
            format!(
                "FROM {}/psctl-base:bookworm\nCOPY busybox /bin/busybox\n{copies}USER 0\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nUSER 65532\nLABEL tag={tag}\n",
                self.registry
            ),
        )
        .expect("write Dockerfile");
        run_ok(
            "docker",
            &[
                "build",
                "-q",
                "-t",
                &image,
                &context.path().display().to_string(),
            ],
        );
        run_ok("docker", &["push", "-q", &image]);
        built.push(image.clone());
        image
    }
}

/// Runs a host command that must succeed.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program} runs: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A test namespace, deleted on drop.
pub struct Namespace<'a> {
    pub sandbox: &'a Sandbox,
    pub name: String,
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = self
            .sandbox
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

impl Namespace<'_> {
    pub fn kubectl(&self, args: &[&str]) -> Run {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.sandbox.kubectl(&all)
    }

    pub fn apply(&self, manifest: &str) -> String {
        let mut args = vec!["-n", self.name.as_str()];
        args.extend_from_slice(&["apply", "-f", "-"]);
        self.sandbox
            .kubectl_stdin(&args, manifest)
            .ok("kubectl apply")
    }

    /// `kubectl get … -o json` as a value.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        let text = self.kubectl(&all).ok("kubectl get");
        serde_json::from_str(&text).expect("kubectl prints JSON")
    }
}

/// Polls `check` every 500 ms until it returns Some or `timeout` passes (then panics with the
/// last observation).
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => panic!(
                "{what}: not reached within {}s; last: {last}",
                timeout.as_secs()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The repository's test fixtures.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}
