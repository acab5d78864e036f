//! End-to-end test of psctl against a registry that demands credentials: Debian's
//! `docker-registry` (distribution v2) with htpasswd (Basic) authentication, started by the test
//! on a loopback port of its own, and Docker's credential file written the way `docker login`
//! writes it, found through `DOCKER_CONFIG` by psctl and by the `docker push` psctl runs.
//!
//! `psctl build` refuses to build without credentials (exit 2) and pushes with them; `psctl
//! deploy`'s preflight reads the tag with them: present → the deploy proceeds; missing → exit 1,
//! nothing changed; wrong credentials → a warning ("not verified") and the deploy proceeds, the
//! cluster pulling with its own identity. No output ever shows the password.
//!
//! Needs the sandbox (for the cluster and the runtime base image) and `docker-registry` on PATH
//! (`/usr/bin/docker-registry`, the package the sandbox uses); fails, never skips, without them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use psctl::registry::{Credentials, Registry, RegistryError};
use rand::Rng as _;
use serde_json::json;

use support::Sandbox;
use support::sandbox::RuntimeSecret;

const USER: &str = "psctl-ci";

/// A distribution registry with htpasswd auth on a free loopback port; stopped on drop.
struct AuthRegistry {
    child: Child,
    dir: tempfile::TempDir,
    address: String,
    password: String,
}

impl AuthRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let password: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        // Distribution accepts bcrypt entries only.
        let hash = bcrypt::hash(&password, 5).unwrap();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).unwrap();
        let config = dir.path().join("config.yml");
        let settings = json!({
            "version": "0.1",
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": dir.path().join("data")}},
            "http": {"addr": address, "secret": format!("{:x}", rand::rng().random::<u128>())},
            "auth": {"htpasswd": {"realm": "psctl-e2e", "path": htpasswd}},
        });
        std::fs::write(&config, settings.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run docker-registry (Debian package `docker-registry`)");
        let registry = Self {
            child,
            dir,
            address,
            password,
        };
        registry.wait_until_it_challenges();
        registry
    }

    /// `/v2/` answers 401 with a Basic challenge once the registry is up.
    fn wait_until_it_challenges(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/v2/", self.address);
        loop {
            let answer = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-D", "-", &url])
                .output()
                .expect("run curl");
            let head = String::from_utf8_lossy(&answer.stdout).to_lowercase();
            if head.starts_with("http/1.1 401") {
                assert!(
                    head.contains("www-authenticate: basic realm=\"psctl-e2e\""),
                    "{head}"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not come up: {}",
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A Docker configuration directory whose `config.json` holds `password` for this registry,
    /// as `docker login` writes it (no credential store configured).
    fn docker_config(&self, name: &str, password: &str) -> PathBuf {
        use base64::Engine as _;
        let dir = self.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        let config = json!({"auths": {self.address.clone(): {"auth": auth}}});
        write_private(&dir.join("config.json"), &config.to_string());
        dir
    }

    fn credentials(&self) -> Credentials {
        Credentials::Basic {
            username: USER.to_owned(),
            password: self.password.clone().into(),
            source: "the test".to_owned(),
        }
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
}

fn json_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn build_and_deploy_read_an_authenticated_registry_with_docker_credentials() {
    let registry = AuthRegistry::start();
    let sandbox = Sandbox::builder("registry-auth")
        .runtime_secret(RuntimeSecret::Sandbox)
        .start()
        .await;
    let address = registry.address.clone();
    let config = sandbox.sandbox_config("registry-auth", |environment| {
        environment["registry"] = json!(address);
    });
    let good = registry.docker_config("good", &registry.password);
    let wrong = registry.docker_config("wrong", "not-the-password");
    let nobody = registry.dir.path().join("nobody");
    std::fs::create_dir(&nobody).unwrap();
    let binaries = support::images::prebuilt_binaries();
    let prebuilt = binaries.display().to_string();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tag = format!("auth-{}-{nanos}", std::process::id());
    let mut printed = String::new();
    let mut psctl = |docker_config: &Path, args: &[&str]| {
        let (code, stdout, stderr) = sandbox
            .command(&config, args)
            .env("DOCKER_CONFIG", docker_config)
            .arg("--yes")
            .run()
            .parts();
        printed.push_str(&stdout);
        printed.push_str(&stderr);
        (code, stdout, stderr)
    };

    // The registry really demands credentials: an anonymous read is refused.
    let anonymous = Registry::with_credentials(&registry.address, Credentials::Anonymous).unwrap();
    assert!(
        matches!(
            anonymous.manifest("problemsolver-poller", &tag).await,
            Err(RegistryError::Unauthorized { status: 401, .. })
        ),
        "an anonymous read must be refused"
    );

    // Without credentials, build stops before building anything: it could not check the tag.
    let build = [
        "build",
        "--prebuilt",
        &prebuilt,
        "--tag",
        &tag,
        "-o",
        "json",
    ];
    let (code, stdout, stderr) = psctl(&nobody, &build);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("docker login {}", registry.address)),
        "{stderr}"
    );
    assert!(!stderr.contains("build problemsolver"), "{stderr}");

    // With them, both images are pushed, and the registry serves the digests psctl printed.
    let (code, stdout, stderr) = psctl(&good, &build);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report = json_of(&stdout);
    let authenticated =
        Registry::with_credentials(&registry.address, registry.credentials()).unwrap();
    for built in report["images"].as_array().unwrap() {
        assert_eq!(built["push"], "pushed", "{report}");
        let image = built["reference"]
            .as_str()
            .unwrap()
            .trim_start_matches(&format!("{}/", registry.address))
            .trim_end_matches(&format!(":{tag}"))
            .to_owned();
        let remote = authenticated
            .manifest(&image, &tag)
            .await
            .unwrap()
            .expect("the pushed tag is in the registry");
        assert_eq!(built["digest"], remote.digest.as_str());
        assert!(remote.matches_image_id(built["image_id"].as_str().unwrap()));
    }

    // Deploy of a tag the registry does not have: exit 1 before anything changes.
    let deploy = |tag: &str| {
        [
            "deploy",
            "--component",
            "webhook",
            "--tag",
            tag,
            "--timeout",
            "120s",
            "-o",
            "json",
        ]
        .map(str::to_owned)
    };
    let missing = deploy("no-such-tag");
    let missing = missing.each_ref().map(String::as_str);
    let (code, stdout, stderr) = psctl(&good, &missing);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}/problemsolver-webhook-worker:no-such-tag does not exist",
            registry.address
        )),
        "{stderr}"
    );

    // The built tag, read with the credentials: found, and the deploy proceeds.
    let found = deploy(&tag);
    let found = found.each_ref().map(String::as_str);
    let (code, stdout, stderr) = psctl(&good, &found);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}/problemsolver-webhook-worker:{tag} exists",
            registry.address
        )),
        "{stderr}"
    );
    assert_eq!(json_of(&stdout)["components"][0]["result"], "deployed");

    // Wrong credentials: the registry refuses them; not verified, a warning, and the deploy
    // goes on (the cluster pulls with its own pull secret).
    let (code, stdout, stderr) = psctl(&wrong, &found);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("not verified"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/config.json", wrong.display())),
        "the warning names where the refused credential came from: {stderr}"
    );
    assert!(!stderr.contains(" exists"), "{stderr}");

    assert!(
        !printed.contains(&registry.password) && !printed.contains("not-the-password"),
        "a password reached psctl's output"
    );
}
