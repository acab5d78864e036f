//! Records the git commit for `--version` (see services/core/build/git_commit.rs).

include!("../core/build/git_commit.rs");

fn main() {
    emit_git_commit();
}
