#!/usr/bin/env bash
# The whole procedure against the local sandbox, start to finish, on a fresh machine:
#   sandbox up → runtime Secret → build and push → first install → the release playbook
#   (build, secrets check, backup, migrate, deploy, smoke, canary 10→30→60→100 %, smoke)
#   → two broken releases caught and rolled back → history → rollback --to-rev → emergency
#   stop playbook → kill switch off.
# Every step is a psctl (or psctl-sandbox) command; what each printed is left on screen.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/psctl/target}"
bin="$CARGO_TARGET_DIR/release"
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
expect_exit() { # expect_exit CODE COMMAND...: run it, require that exit code
  local want="$1"; shift
  set +e; "$@"; local code=$?; set -e
  if [ "$code" -ne "$want" ]; then
    echo "quickstart: expected exit $want from: $*, got $code" >&2
    exit 1
  fi
  echo "quickstart: exit $code, as expected" >&2
}

step "1/10 install what is missing and build psctl, the sandbox and both services (release)"
scripts/bootstrap.sh
cargo build --release --locked -p psctl -p psctl-sandbox -p problemsolver-poller -p problemsolver-webhook-worker

step "2/10 bring the sandbox up (idempotent) and load its environment"
"$bin/psctl-sandbox" up
eval "$("$bin/psctl-sandbox" env)"
psctl() { "$bin/psctl" "$@"; }
state_dir="${PSCTL_SANDBOX_DIR:-$HOME/.cache/psctl/sandbox}"

step "3/10 the runtime Secret from an env file (values never on the command line or screen)"
psctl secrets apply --from-env-file "$state_dir/secrets/runtime.env" --yes
psctl secrets check

# Two immutable tags from this commit: the release "running today" and the one to ship.
stamp="$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)-$(date -u +%Y%m%d%H%M%S)"
current="$stamp-1"
next="$stamp-2"

step "4/10 build and push the images of today's release ($current), then install it"
psctl build --prebuilt "$bin" --tag "$current"
psctl deploy --yes --tag "$current"
psctl status

step "5/10 merchant traffic for the canary to judge (synthetic webhook events, 20 per second)"
# The worker's deliveries are the canary's evidence; without traffic every gate stays
# inconclusive and the run would pause for a human, as it should.
(
  while sleep 1; do
    psql -q "$DATABASE_URL" -c "INSERT INTO webhook_queue (merchant_id, event_type, payload, max_attempts)
      SELECT m.id, 'quickstart.traffic', jsonb_build_object('n', g, 'at', now()), 3
        FROM (SELECT id FROM merchants ORDER BY created_at LIMIT 1) m, generate_series(1, 20) g" \
      >/dev/null 2>&1 || true
  done
) &
traffic=$!
trap 'kill $traffic 2>/dev/null || true' EXIT

step "6/10 the release playbook: $next, with the canary's bake shortened to 30s per step"
psctl run playbooks/release.yaml --dry-run --var tag="$next" --var bake=30s --var prebuilt="$bin"
psctl run playbooks/release.yaml --yes --var tag="$next" --var bake=30s --var prebuilt="$bin"
kill "$traffic" 2>/dev/null || true

step "7/10 two broken releases, each caught and rolled back"
# (a) A tag that was never pushed: preflight refuses before anything changes.
# (b) An image whose program exits at once: the rollout watch sees CrashLoopBackOff within
#     seconds, prints the pod, reason and events, and rolls back to the recorded revision.
rm -rf dist && mkdir -p dist && cp /bin/false dist/crashing-service
docker build -q --build-arg RUNTIME_BASE="$PSCTL_REGISTRY/psctl-base:bookworm" \
  --build-arg BINARY=crashing-service -t "$PSCTL_REGISTRY/problemsolver-webhook-worker:crashes-$stamp" . >/dev/null
docker push -q "$PSCTL_REGISTRY/problemsolver-webhook-worker:crashes-$stamp" >/dev/null
expect_exit 1 psctl deploy --yes --component webhook --tag does-not-exist
expect_exit 1 psctl deploy --yes --component webhook --tag "crashes-$stamp"

step "8/10 history of the webhook release"
psctl history webhook

step "9/10 roll the webhook back to its first revision explicitly"
psctl rollback webhook --to-rev 1 --yes

step "10/10 the emergency-stop playbook (poller to zero, evidence), then the kill switch off"
psctl run playbooks/emergency-stop.yaml --yes
psctl kill-switch off --yes
psctl status

printf '\nquickstart: done. The sandbox is still up: eval "$(%s env)" to use it, %s down to stop it.\n' \
  "$bin/psctl-sandbox" "$bin/psctl-sandbox" >&2
