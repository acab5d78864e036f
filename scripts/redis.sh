#!/usr/bin/env bash
# Starts (or reuses) a private Redis server for tests and benchmarks (Debian's `redis-server`),
# listening on 127.0.0.1 only, without persistence. Prints `export` lines; touches no other
# Redis (Debian's packaged service is left stopped).
#
#   scripts/redis.sh start|stop|status|env          port 56379 (PSCTL_REDIS_PORT)
set -euo pipefail

STATE_DIR="${PSCTL_STATE_DIR:-$HOME/.cache/psctl}"
DATA_DIR="${PSCTL_REDIS_DATA:-$STATE_DIR/redis}"
PORT="${PSCTL_REDIS_PORT:-56379}"

url() { echo "redis://127.0.0.1:$PORT/0"; }

cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }

running() { cli ping 2>/dev/null | grep -qx PONG; }

start() {
  command -v redis-server >/dev/null 2>&1 || {
    echo "redis.sh: redis-server not found (apt-get install redis-server, or scripts/bootstrap.sh)" >&2
    exit 3
  }
  running && return 0
  mkdir -p "$DATA_DIR"
  # Tests create their own keys under unique prefixes; nothing here needs to survive a restart.
  redis-server --port "$PORT" --bind 127.0.0.1 --protected-mode yes --daemonize yes \
    --dir "$DATA_DIR" --pidfile "$DATA_DIR/redis.pid" --logfile "$DATA_DIR/redis.log" \
    --save '' --appendonly no >/dev/null
  for _ in $(seq 1 50); do
    running && return 0
    sleep 0.1
  done
  echo "redis.sh: redis-server did not answer on port $PORT; see $DATA_DIR/redis.log" >&2
  exit 3
}

stop() {
  if running; then
    cli shutdown nosave >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  start) start; echo "export PSCTL_TEST_REDIS_URL=$(url)" ;;
  stop) stop ;;
  status) if running; then echo "redis on port $PORT is running"; else echo "redis on port $PORT is not running"; exit 3; fi ;;
  env) echo "export PSCTL_TEST_REDIS_URL=$(url)" ;;
  *) echo "usage: scripts/redis.sh start|stop|status|env" >&2; exit 2 ;;
esac
