#!/usr/bin/env bash
# The whole procedure against the local sandbox, start to finish, on a fresh machine:
#   sandbox up → build and push both images → deploy → status → a broken release caught and
#   rolled back automatically → history → rollback --to-rev → kill switch on/off.
# Every step is a psctl (or psctl-sandbox) command; what each printed is left on screen.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/psctl/target}"
bin="$CARGO_TARGET_DIR/release"
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "1/9 install what is missing and build psctl, the sandbox and both services (release)"
scripts/bootstrap.sh
cargo build --release --locked -p psctl -p psctl-sandbox -p problemsolver-poller -p problemsolver-webhook-worker

step "2/9 bring the sandbox up (idempotent) and load its environment"
"$bin/psctl-sandbox" up
eval "$("$bin/psctl-sandbox" env)"
psctl() { "$bin/psctl" "$@"; }

step "3/9 build both images on the sandbox base and push them to the sandbox registry"
tag="$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)-$(date +%s)"
rm -rf dist && mkdir -p dist
cp "$bin/problemsolver-poller" "$bin/problemsolver-webhook-worker" dist/
for image in problemsolver-poller problemsolver-webhook-worker; do
  docker build -q --build-arg RUNTIME_BASE="$PSCTL_REGISTRY/psctl-base:bookworm" \
    --build-arg BINARY="$image" --build-arg VERSION="$tag" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    -t "$PSCTL_REGISTRY/$image:$tag" . >/dev/null
  docker push -q "$PSCTL_REGISTRY/$image:$tag" >/dev/null
  echo "pushed $PSCTL_REGISTRY/$image:$tag" >&2
done

step "4/9 deploy both components (preflight, helm upgrade, watched rollout)"
psctl deploy --yes --tag "$tag"

step "5/9 status"
psctl status

step "6/9 two broken releases, each caught and rolled back"
# (a) A tag that was never pushed: preflight refuses before anything changes.
# (b) An image whose program exits at once: the rollout watch sees CrashLoopBackOff within
#     seconds, prints the pod, reason and events, and rolls back to the recorded revision.
cp /bin/false dist/crashing-service
docker build -q --build-arg RUNTIME_BASE="$PSCTL_REGISTRY/psctl-base:bookworm" \
  --build-arg BINARY=crashing-service -t "$PSCTL_REGISTRY/problemsolver-webhook-worker:crashes-$tag" . >/dev/null
docker push -q "$PSCTL_REGISTRY/problemsolver-webhook-worker:crashes-$tag" >/dev/null
for broken in does-not-exist "crashes-$tag"; do
  set +e
  psctl deploy --yes --component webhook --tag "$broken"
  code=$?
  set -e
  if [ "$code" -ne 1 ]; then
    echo "quickstart: expected the broken deploy of tag $broken to exit 1, got $code" >&2
    exit 1
  fi
  echo "broken deploy ($broken) exited 1: caught, nothing left broken" >&2
done

step "7/9 history of the webhook release"
psctl history webhook

step "8/9 roll the webhook back to its first revision explicitly"
psctl rollback webhook --to-rev 1 --yes

step "9/9 emergency stop and recovery: kill switch on, then off"
psctl kill-switch on --yes
psctl kill-switch off --yes
psctl status

printf '\nquickstart: done. The sandbox is still up: eval "$(%s env)" to use it, %s down to stop it.\n' \
  "$bin/psctl-sandbox" "$bin/psctl-sandbox" >&2
