// The build-script half of `--version` and `<service>_build_info`, shared by the build scripts of
// psctl, psctl-sandbox and both services (each `include!`s this file and calls
// `emit_git_commit()`). Sets `BUILD_GIT_COMMIT` for the crate being compiled to the short commit
// (12 hex digits): from the `BUILD_GIT_COMMIT` variable when the builder sets it, else from
// `git rev-parse --short=12 HEAD`, else `unknown` (no git, or a source tree without `.git`).

/// Emits `cargo:rustc-env=BUILD_GIT_COMMIT=…` and the rerun triggers that keep it current.
fn emit_git_commit() {
    println!("cargo:rerun-if-env-changed=BUILD_GIT_COMMIT");
    let commit = std::env::var("BUILD_GIT_COMMIT")
        .ok()
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
}

/// The short commit of HEAD, asking cargo to rerun when HEAD moves (a commit, a checkout).
fn git_head() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "--quiet", "HEAD"]) {
        watched.push(branch);
    }
    let root = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = root.join(path);
            // A missing file would make cargo rerun the script, and rebuild the crate, every time.
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(commit)
}

/// `git ARGS` in the crate's directory: trimmed stdout on success, `None` otherwise.
fn git(args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}
