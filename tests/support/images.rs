//! Images on the sandbox registry: the real services built from this workspace, a service
//! image that crashes at once, one that serves for a while before it crashes, and a small HTTP
//! service of no team in particular (the benchmarks' configurable component). Tags come from
//! the binaries' content, so parallel tests and re-runs share one image and never rebuild what
//! the registry already holds.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{ROOT, profile_dir};

/// The two service binaries, as `cargo build` names them.
pub const SERVICE_BINARIES: [&str; 2] = ["problemsolver-poller", "problemsolver-webhook-worker"];

/// A directory holding both service binaries, for `psctl build --prebuilt`: the release build
/// takes minutes, so `$CARGO_TARGET_DIR/release` when both are there (quickstart builds them),
/// else the debug ones, built here if missing.
pub fn prebuilt_binaries() -> PathBuf {
    let debug = profile_dir();
    let release = debug
        .parent()
        .expect("the profile directory is inside the target directory")
        .join("release");
    if SERVICE_BINARIES.iter().all(|b| release.join(b).is_file()) {
        return release;
    }
    let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args([
            "build",
            "-p",
            SERVICE_BINARIES[0],
            "-p",
            SERVICE_BINARIES[1],
        ])
        .current_dir(ROOT)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the service binaries failed");
    debug
}

pub(crate) fn run(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Holds an exclusive lock, shared by every test process of this target directory, while `f`
/// checks, builds and pushes images: the registry answers concurrent pushes of the same blobs
/// with `digest invalid` / `blob unknown`.
fn exclusively<T>(f: impl FnOnce() -> T) -> T {
    let path = profile_dir().join("e2e-images.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    let result = f();
    drop(file);
    result
}

/// Builds and pushes `reference` unless the registry has it: the single-file Rust program
/// `source`, compiled by the host's rustc, at `/usr/local/bin/<name>` on `from`, as the
/// entrypoint.
fn program_image(reference: &str, from: &str, name: &str, source: &str) {
    exclusively(|| {
        if present(reference) {
            return;
        }
        let context = tempfile::tempdir().unwrap();
        let file = format!("{name}.rs");
        std::fs::write(context.path().join(&file), source).unwrap();
        run(
            Command::new("rustc")
                .args(["--edition", "2021", "-C", "opt-level=2", "-o"])
                .arg(context.path().join(name))
                .arg(context.path().join(&file)),
            &format!("rustc of {file}"),
        );
        std::fs::write(
            context.path().join("Dockerfile"),
            format!(
                "FROM {from}\nCOPY {name} /usr/local/bin/{name}\nENTRYPOINT [\"/usr/local/bin/{name}\"]\n"
            ),
        )
        .unwrap();
        docker_build_and_push(context.path(), reference, &[]);
    });
}

fn present(reference: &str) -> bool {
    Command::new("docker")
        .args(["manifest", "inspect", "--insecure", reference])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Wraps `binary` (bytes) as `dist/<name>` in an image on the sandbox base image and pushes it
/// as `reference`.
fn build_and_push(registry: &str, name: &str, binary: &[u8], reference: &str) {
    let context = tempfile::tempdir().unwrap();
    std::fs::create_dir(context.path().join("dist")).unwrap();
    let target = context.path().join("dist").join(name);
    std::fs::write(&target, binary).unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::copy(
        Path::new(ROOT).join("Dockerfile"),
        context.path().join("Dockerfile"),
    )
    .unwrap();
    docker_build_and_push(
        context.path(),
        reference,
        &[
            format!("RUNTIME_BASE={registry}/psctl-base:bookworm"),
            format!("BINARY={name}"),
        ],
    );
}

/// `docker build -q` of `context` as `reference` (each of `build_args` a `--build-arg`), then
/// `docker push` of it.
fn docker_build_and_push(context: &Path, reference: &str, build_args: &[String]) {
    let mut build = Command::new("docker");
    build.args(["build", "-q"]);
    for arg in build_args {
        build.args(["--build-arg", arg]);
    }
    build.args(["-t", reference]).arg(context);
    run(&mut build, &format!("docker build of {reference}"));
    run(
        Command::new("docker").args(["push", "-q", reference]),
        &format!("docker push of {reference}"),
    );
}

/// Builds both service binaries (debug, into this test build's target directory), wraps each
/// in an image on the sandbox base image and pushes it to the sandbox registry. Returns the
/// tag, `e2e-<content hash>`.
pub fn service_images(registry: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target = profile_dir();
    let target_root = target
        .parent()
        .expect("the profile directory is inside the target directory");
    run(
        Command::new(&cargo)
            .current_dir(ROOT)
            .env("CARGO_TARGET_DIR", target_root)
            .args(["build", "--quiet"])
            .args(SERVICE_BINARIES.iter().flat_map(|b| ["-p", *b])),
        "cargo build of the services",
    );
    let binaries: Vec<Vec<u8>> = SERVICE_BINARIES
        .iter()
        .map(|binary| std::fs::read(target.join(binary)).expect("built binary"))
        .collect();
    let mut hash = Sha256::new();
    for binary in &binaries {
        hash.update(binary);
    }
    let tag = format!("e2e-{}", &hex::encode(hash.finalize())[..12]);
    exclusively(|| {
        for (name, binary) in SERVICE_BINARIES.iter().zip(&binaries) {
            let reference = format!("{registry}/{name}:{tag}");
            if !present(&reference) {
                build_and_push(registry, name, binary, &reference);
            }
        }
    });
    tag
}

/// Builds `<registry>/<image>:crashes-<hash>`: the sandbox base image with `/bin/false` as the
/// service binary, so every container exits 1 at once and the pod crash-loops. Returns the tag.
pub fn crashing_image(registry: &str, image: &str) -> String {
    let binary = std::fs::read("/bin/false").expect("/bin/false exists on the host");
    let tag = format!("crashes-{}", &hex::encode(Sha256::digest(&binary))[..12]);
    let reference = format!("{registry}/{image}:{tag}");
    exclusively(|| {
        if !present(&reference) {
            build_and_push(registry, "crashing-service", &binary, &reference);
        }
    });
    tag
}

/// The entrypoint of [`crashes_after_image`]: runs the real service with the container's
/// environment, forwards SIGTERM and SIGINT to it (so the kubelet stops the pod as quickly as
/// the service alone), and after `SECONDS` kills it and exits 1. Standard library only: built
/// with `rustc`.
const SUPERVISOR: &str = r#"
use std::process::{exit, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
}
static CHILD: AtomicI32 = AtomicI32::new(0);
extern "C" fn forward(sig: i32) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        unsafe { kill(pid, sig); }
    }
}

fn main() {
    let after = Duration::from_secs(SECONDS);
    let mut child = Command::new("/usr/local/bin/service").spawn().expect("start the service");
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    unsafe {
        signal(15, forward as usize);
        signal(2, forward as usize);
    }
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the service") {
            exit(status.code().unwrap_or(1));
        }
        if started.elapsed() >= after {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("supervisor: the service ran {}s; exiting 1", after.as_secs());
            exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
"#;

/// Builds `<registry>/<image>:crashes-after-<seconds>s-<hash>`: the service image `base_tag`
/// (the real service, which becomes Ready and serves) under a supervisor that kills it and
/// exits 1 after `seconds`, so every container serves first and then crash-loops. Returns the
/// tag.
pub fn crashes_after_image(registry: &str, image: &str, base_tag: &str, seconds: u64) -> String {
    let source = SUPERVISOR.replace("SECONDS", &seconds.to_string());
    let hash = hex::encode(Sha256::digest(format!("{source}{image}{base_tag}")));
    let tag = format!("crashes-after-{seconds}s-{}", &hash[..12]);
    let reference = format!("{registry}/{image}:{tag}");
    program_image(
        &reference,
        &format!("{registry}/{image}:{base_tag}"),
        "supervisor",
        &source,
    );
    tag
}

/// Pushes `image:from` again as `image:to` (same content, another tag).
pub fn retag(registry: &str, image: &str, from: &str, to: &str) {
    let source = format!("{registry}/{image}:{from}");
    let target = format!("{registry}/{image}:{to}");
    for args in [
        vec!["pull", "-q", source.as_str()],
        vec!["tag", source.as_str(), target.as_str()],
        vec!["push", "-q", target.as_str()],
    ] {
        run(
            Command::new("docker").args(&args),
            &format!("docker {args:?}"),
        );
    }
}

/// The repository of [`small_service_image`].
pub const SMALL_SERVICE_IMAGE: &str = "psctl-small-service";

/// The entrypoint of [`small_service_image`]: an HTTP server on `$PORT` (8080) answering
/// `/ready` and `/metrics` (a Prometheus text exposition: `small_service_up`,
/// `small_service_start_time_seconds`), 404 otherwise; it exits at SIGTERM or SIGINT, as a
/// service should when the kubelet stops it. Standard library only: built with `rustc`.
const SMALL_SERVICE: &str = r##"
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn _exit(status: i32) -> !;
}
extern "C" fn stop(_: i32) {
    unsafe { _exit(0) }
}

fn answer(mut stream: TcpStream, started: u64) {
    let Ok(reading) = stream.try_clone() else { return };
    let mut reader = BufReader::new(reading);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let (status, kind, body) = match path {
        "/ready" => ("200 OK", "text/plain", "ready\n".to_owned()),
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            format!(
                "# HELP small_service_up 1 while the service runs.\n# TYPE small_service_up gauge\nsmall_service_up 1\n\
                 # HELP small_service_start_time_seconds When the process started, in seconds since the epoch.\n\
                 # TYPE small_service_start_time_seconds gauge\nsmall_service_start_time_seconds {started}\n"
            ),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn main() {
    unsafe {
        signal(15, stop as usize);
        signal(2, stop as usize);
    }
    let port: u16 = std::env::var("PORT")
        .unwrap_or_else(|_| "8080".to_owned())
        .parse()
        .expect("PORT is a port number");
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("listen on PORT");
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || answer(stream, started));
    }
}
"##;

/// Builds `<registry>/psctl-small-service:small-<hash>`: [`SMALL_SERVICE`] on the sandbox base
/// image, the workload of `benches/charts/small-service` (a component any team could configure).
/// Returns the tag.
pub fn small_service_image(registry: &str) -> String {
    let hash = hex::encode(Sha256::digest(SMALL_SERVICE));
    let tag = format!("small-{}", &hash[..12]);
    let reference = format!("{registry}/{SMALL_SERVICE_IMAGE}:{tag}");
    program_image(
        &reference,
        &format!("{registry}/psctl-base:bookworm"),
        "service",
        SMALL_SERVICE,
    );
    tag
}
