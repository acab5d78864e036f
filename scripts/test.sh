#!/usr/bin/env bash
# Runs every test of the repository on this machine, installing and starting what they need
# (PostgreSQL, Redis, Prometheus, the registry, the Helm engine, kubectl). This is the README's test
# command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/psctl/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*" >&2; }

step "bootstrap (packages)"
scripts/bootstrap.sh

step "postgres"
eval "$(scripts/postgres.sh start)"

step "redis"
eval "$(scripts/redis.sh start)"

step "sandbox"
# The fidelity and end-to-end tests run against a sandbox: bring it up (idempotent) and export
# its environment (KUBECONFIG, PSCTL_CONFIG, DATABASE_URL, HELM, KUBECTL, ...).
cargo build --locked -p psctl-sandbox
"$CARGO_TARGET_DIR/debug/psctl-sandbox" up --no-bootstrap >/dev/null
eval "$("$CARGO_TARGET_DIR/debug/psctl-sandbox" env)"
"$CARGO_TARGET_DIR/debug/psctl-sandbox" status >&2

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cluster tools (kubectl, Helm engine library, helm CLI: scripts/fetch-tools.sh)"
scripts/fetch-tools.sh

step "tests"
# Everything but the fault matrix, which injects sandbox-wide faults and so runs alone after.
status=0
cargo nextest run --workspace --locked --no-fail-fast --failure-output final -E 'not binary(faults)' || status=$?

step "fault matrix (tests/faults.rs: one line per case, then fault_matrix cases=N survived=N)"
cargo nextest run -p psctl --test faults --locked --no-capture || status=$?

step "benchmarks (scripts/bench-quick.sh: every benchmark compiles; the cheap ones print their figures)"
scripts/bench-quick.sh || status=$?
exit "$status"
