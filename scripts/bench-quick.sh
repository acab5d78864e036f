#!/usr/bin/env bash
# The benchmarks in CI: compiles every benchmark of the workspace in the test profile (so it
# shares the tests' build instead of a separate optimized one), then runs the ones that need no
# sandbox, database or Redis in their quick mode (`cargo test --bench NAME`: without cargo bench's
# `--bench` argument each does fewer runs or smaller sizes) and fails when one of them does not
# print its figure line (`name=value`). With the sandbox's environment loaded (PSCTL_CONFIG, as
# scripts/test.sh does), deploy_failfast runs its quick mode too: one crash on start and one
# image pull failure, about a minute and a half; and deploy_scaling: deploys of 1 and 2 small
# components, one run each, about a minute. The figures themselves are not judged: CI machines
# are too noisy for timed assertions.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --workspace --benches --no-run

status=0
# run BENCH FIGURE...: runs benches/BENCH.rs quickly and checks a `FIGURE=value` line for each FIGURE.
run() {
    local bench=$1
    shift
    local output
    if ! output=$(cargo test --locked -q -p psctl --bench "$bench" 2>&1); then
        printf '%s\n' "$output" >&2
        echo "benches/$bench.rs: failed" >&2
        status=1
        return
    fi
    printf '%s\n' "$output" >&2
    for figure in "$@"; do
        if ! grep -Eq "^${figure}=[^ ]" <<<"$output"; then
            echo "benches/$bench.rs: no \`$figure=\` line" >&2
            status=1
        fi
    done
}

run help_startup psctl_help_startup_ms
run history_decode history_decode_revisions_per_second
run canary false_abort_rate threshold_false_abort_rate healthy_paused_rate threshold_healthy_paused_rate \
    detect_5x_rate threshold_detect_5x_rate detect_latency_2x_rate threshold_detect_latency_2x_rate
run scaling scaling_history_requests scaling_status_requests scaling_smoke_cluster_requests
if [[ -n "${PSCTL_CONFIG:-}" ]]; then
    run deploy_failfast crash_on_start_verdict_s crash_on_start_previous_serving_s \
        image_pull_verdict_s image_pull_previous_serving_s
    # `deploy components=N requests=R (...) wall_s=W` per size, then the growth.
    run deploy_scaling "deploy components" scaling_deploy_requests
else
    echo "benches/deploy_failfast.rs, benches/deploy_scaling.rs: compiled; not run (no sandbox environment: PSCTL_CONFIG is unset)" >&2
fi
exit "$status"
