#!/usr/bin/env bash
# Starts (or reuses) a private PostgreSQL cluster for tests and the sandbox, owned by the
# `postgres` system user, listening on 127.0.0.1 (and on the Docker bridge gateway when one
# exists, so sandbox containers reach it). Prints `export` lines; touches no other cluster.
#
# The test cluster trades durability for speed (fsync, synchronous_commit and full_page_writes
# off). Benchmarks that must reflect production use a second cluster, `*-durable`, with its own
# port and data directory and every durability setting on (the production settings); it listens
# on 127.0.0.1 only.
#
#   scripts/postgres.sh start|stop|status|env                          test cluster, port 55432
#   scripts/postgres.sh start-durable|stop-durable|status-durable|env-durable   port 55442
set -euo pipefail

STATE_DIR="${PSCTL_STATE_DIR:-$HOME/.cache/psctl}"
# The data directory lives outside $HOME: the postgres user cannot enter /root.
PGDATA_DIR="${PSCTL_PG_DATA:-/var/lib/psctl/postgres}"
PGPORT="${PSCTL_PG_PORT:-55432}"
DURABLE_DATA_DIR="${PSCTL_PG_DURABLE_DATA:-/var/lib/psctl/postgres-durable}"
DURABLE_PORT="${PSCTL_PG_DURABLE_PORT:-55442}"
PGUSER_NAME=postgres

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] || { echo "postgres.sh: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 3; }
  echo "$dir"
}

as_pg() { runuser -u "$PGUSER_NAME" -- "$@"; }

listen_addresses() {
  local gw
  gw=$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}' 2>/dev/null || true)
  if [ -n "$gw" ]; then echo "127.0.0.1,$gw"; else echo "127.0.0.1"; fi
}

url() { echo "postgres://postgres@127.0.0.1:$PGPORT/postgres"; }
durable_url() { echo "postgres://postgres@127.0.0.1:$DURABLE_PORT/postgres"; }

start() {
  local bin; bin=$(pg_bin)
  mkdir -p "$(dirname "$PGDATA_DIR")"
  if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
    install -d -o "$PGUSER_NAME" -g "$PGUSER_NAME" -m 0700 "$PGDATA_DIR"
    as_pg "$bin/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
    cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
port = $PGPORT
unix_socket_directories = '$PGDATA_DIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
CONF
    # Containers on the Docker bridge reach the cluster through the gateway address.
    echo "host all all 172.16.0.0/12 trust" >>"$PGDATA_DIR/pg_hba.conf"
  fi
  if as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
    return 0
  fi
  as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=$(listen_addresses)" start >/dev/null
}

stop() {
  local bin; bin=$(pg_bin)
  if [ -s "$PGDATA_DIR/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null
  fi
}

# The durable cluster: production durability, so commit latency includes a real WAL flush.
start_durable() {
  local bin; bin=$(pg_bin)
  mkdir -p "$(dirname "$DURABLE_DATA_DIR")"
  if [ ! -s "$DURABLE_DATA_DIR/PG_VERSION" ]; then
    install -d -o "$PGUSER_NAME" -g "$PGUSER_NAME" -m 0700 "$DURABLE_DATA_DIR"
    as_pg "$bin/initdb" -D "$DURABLE_DATA_DIR" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
    cat >>"$DURABLE_DATA_DIR/postgresql.conf" <<CONF
port = $DURABLE_PORT
unix_socket_directories = '$DURABLE_DATA_DIR'
listen_addresses = '127.0.0.1'
max_connections = 100
shared_buffers = 256MB
# Production durability, stated explicitly (these are also PostgreSQL's defaults).
fsync = on
synchronous_commit = on
full_page_writes = on
CONF
  fi
  if ! as_pg "$bin/pg_ctl" -D "$DURABLE_DATA_DIR" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$DURABLE_DATA_DIR" -l "$DURABLE_DATA_DIR/server.log" -w -t 60 start >/dev/null
  fi
  # Refuse a data directory whose settings were changed since: a non-durable "durable" cluster
  # would make every figure measured on it meaningless.
  local settings
  settings=$(as_pg "$bin/psql" -h "$DURABLE_DATA_DIR" -p "$DURABLE_PORT" -U postgres -d postgres -AtX \
    -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
        WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')")
  if [ "$settings" != "fsync=on full_page_writes=on synchronous_commit=on" ]; then
    echo "postgres.sh: the durable cluster in $DURABLE_DATA_DIR runs with $settings; every one must be on." >&2
    echo "postgres.sh: fix $DURABLE_DATA_DIR/postgresql.conf and postgresql.auto.conf (ALTER SYSTEM RESET <name>), or remove the directory after stop-durable, and start again" >&2
    exit 4
  fi
}

stop_durable() {
  local bin; bin=$(pg_bin)
  if [ -s "$DURABLE_DATA_DIR/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$DURABLE_DATA_DIR" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$DURABLE_DATA_DIR" -m fast -w stop >/dev/null
  fi
}

case "${1:-}" in
  start) start; echo "export PSCTL_TEST_DATABASE_URL=$(url)" ;;
  stop) stop ;;
  status) as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA_DIR" status ;;
  env) echo "export PSCTL_TEST_DATABASE_URL=$(url)" ;;
  start-durable) start_durable; echo "export PSCTL_BENCH_DATABASE_URL=$(durable_url)" ;;
  stop-durable) stop_durable ;;
  status-durable) as_pg "$(pg_bin)/pg_ctl" -D "$DURABLE_DATA_DIR" status ;;
  env-durable) echo "export PSCTL_BENCH_DATABASE_URL=$(durable_url)" ;;
  *) echo "usage: scripts/postgres.sh start|stop|status|env|start-durable|stop-durable|status-durable|env-durable" >&2; exit 2 ;;
esac
