//! Detached background processes the sandbox owns (daemon, registry, Prometheus): started with
//! their own process group, tracked by pid files in `<state>/run`, and stopped only by those pids.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::settings::Layout;

/// The pid recorded for `name`, if that process is still running the expected program.
pub fn running_pid(layout: &Layout, name: &str, program: &str) -> Option<u32> {
    let text = std::fs::read_to_string(layout.pid_file(name)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    // A recycled pid would belong to another program; compare the command line to be sure.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|byte| *byte == 0).next()?;
    let argv0 = String::from_utf8_lossy(argv0);
    let wanted = Path::new(program)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // A zombie (state Z) has exited already.
    let zombie = state
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    (argv0.ends_with(&wanted) && !zombie).then_some(pid)
}

/// Starts `program args` detached (new session, stdin closed, output appended to the log file)
/// and records its pid.
pub fn spawn_detached(
    layout: &Layout,
    name: &str,
    program: &Path,
    args: &[String],
) -> anyhow::Result<u32> {
    std::fs::create_dir_all(layout.run_dir())?;
    std::fs::create_dir_all(layout.log_dir())?;
    let log_path = layout.log_file(name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open `{}`", log_path.display()))?;
    let log_err = log.try_clone()?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start `{}` (is it installed?)", program.display()))?;
    let pid = child.id();
    std::fs::write(layout.pid_file(name), format!("{pid}\n"))?;
    // The child is reaped by init once this process exits; it is not waited for here.
    drop(child);
    Ok(pid)
}

/// Sends SIGTERM to the recorded process, waits up to `grace`, then SIGKILL. Returns whether
/// something was stopped.
pub fn stop(layout: &Layout, name: &str, program: &str, grace: Duration) -> anyhow::Result<bool> {
    let Some(pid) = running_pid(layout, name, program) else {
        let _ = std::fs::remove_file(layout.pid_file(name));
        return Ok(false);
    };
    signal(pid, "TERM")?;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if running_pid(layout, name, program).is_none() {
            let _ = std::fs::remove_file(layout.pid_file(name));
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(pid, "KILL")?;
    let _ = std::fs::remove_file(layout.pid_file(name));
    Ok(true)
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run `kill`")?;
    if !status.success() {
        tracing::debug!(
            pid,
            signal = name,
            "kill reported failure (process already gone?)"
        );
    }
    Ok(())
}

/// Identifies this program's build (size and modification time of its executable), so `up` can
/// tell that a running daemon is older than the binary asking.
pub fn build_stamp() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return String::new();
    };
    let Ok(metadata) = std::fs::metadata(&exe) else {
        return String::new();
    };
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |age| age.as_secs());
    format!("{}-{modified}", metadata.len())
}

/// Runs a command to completion, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{program}` (is it installed?)"))?;
    if !output.status.success() {
        anyhow::bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_process_is_tracked_and_stopped_by_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        let pid =
            spawn_detached(&layout, "sleeper", Path::new("sleep"), &["30".to_owned()]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(running_pid(&layout, "sleeper", "sleep"), Some(pid));
        // The same pid under another program name is not ours.
        assert_eq!(running_pid(&layout, "sleeper", "prometheus"), None);
        assert!(stop(&layout, "sleeper", "sleep", Duration::from_secs(5)).unwrap());
        assert_eq!(running_pid(&layout, "sleeper", "sleep"), None);
        assert!(!stop(&layout, "sleeper", "sleep", Duration::from_secs(1)).unwrap());
    }

    #[test]
    fn run_reports_the_failing_command() {
        let error = run("sh", &["-c", "echo boom >&2; exit 3"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("boom"), "{error}");
    }
}
