#!/usr/bin/env bash
# Loopback PostgreSQL and Redis for the test suite (idempotent).
#
#   eval "$(scripts/services.sh start)"   start (or find running) and export the URLs
#   scripts/services.sh stop              stop both
#   scripts/services.sh status            exit 0 when both answer
#   scripts/services.sh env               print the exports only
#
# What runs:
#   PostgreSQL (Debian package `postgresql`)  127.0.0.1:$SWITCHBOARD_PG_PORT (55432), trust auth,
#     no Unix socket, cluster in $SWITCHBOARD_SERVICES_DIR/pg, or in
#     /var/tmp/switchboard-services/pg when running as root (the server runs as
#     user `postgres` via runuser, and that user cannot enter /root)
#   Redis (Debian package `redis-server`)     127.0.0.1:$SWITCHBOARD_REDIS_PORT (56379), no persistence
#
# Exports printed on stdout (logs go to stderr):
#   SWITCHBOARD_TEST_POSTGRES_URL   postgres://postgres@127.0.0.1:55432/postgres
#   SWITCHBOARD_TEST_REDIS_URL      redis://127.0.0.1:56379
#
# Both servers outlive the command that started them (they are shared by every
# test run on the machine); `stop` ends them. The apt packages are installed by
# scripts/deps.sh.
set -euo pipefail

DIR="${SWITCHBOARD_SERVICES_DIR:-$HOME/.cache/switchboard-services}"
PG_PORT="${SWITCHBOARD_PG_PORT:-55432}"
REDIS_PORT="${SWITCHBOARD_REDIS_PORT:-56379}"
mkdir -p "$DIR"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) == 0 ]]; then
  PG_DATA="${SWITCHBOARD_PG_DATA:-/var/tmp/switchboard-services/pg}"
  as_pg() { runuser -u postgres -- "$@"; }
else
  PG_DATA="${SWITCHBOARD_PG_DATA:-$DIR/pg}"
  as_pg() { "$@"; }
fi

PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [[ -n "$d" && -x "$d/pg_ctl" ]] || die "PostgreSQL is not installed; run scripts/deps.sh (Debian package postgresql)"
  echo "$d"
}

pg_up() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U postgres 2>/dev/null; }

redis_up() {
  command -v redis-cli >/dev/null 2>&1 || return 1
  [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

start_pg() {
  local bin; bin="$(pg_bin)"
  if pg_up; then log "postgres already running on 127.0.0.1:$PG_PORT"; return 0; fi
  if [[ ! -s "$PG_DATA/PG_VERSION" ]]; then
    log "initdb $PG_DATA"
    mkdir -p "$PG_DATA"
    rm -rf "${PG_DATA:?}"/*
    [[ $(id -u) == 0 ]] && chown -R postgres: "$(dirname "$PG_DATA")"
    chmod 700 "$PG_DATA"
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/pg-initdb.log" 2>&1 \
      || { cat "$DIR/pg-initdb.log" >&2; die "initdb failed"; }
  fi
  local pglog="$PG_DATA/server.log"
  log "starting postgres on 127.0.0.1:$PG_PORT"
  # -w waits until it accepts connections; the marker of scripts/test.sh is
  # dropped so its cleanup leaves the shared server alone.
  ( unset SWITCHBOARD_E2E_RUN
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$pglog" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='' -c fsync=off -c max_connections=300" start >&2 9>&-
  ) || { tail -20 "$pglog" >&2 || true; die "postgres did not start (log: $pglog)"; }
}

stop_pg() {
  [[ -s "$PG_DATA/PG_VERSION" ]] || return 0
  as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w stop >&2 2>/dev/null || true
}

start_redis() {
  if redis_up; then log "redis already running on 127.0.0.1:$REDIS_PORT"; return 0; fi
  command -v redis-server >/dev/null 2>&1 || die "redis-server is not installed; run scripts/deps.sh (Debian package redis-server)"
  mkdir -p "$DIR/redis"
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  ( unset SWITCHBOARD_E2E_RUN; exec redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --daemonize yes --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" --dir "$DIR/redis" >&2 9>&- )
  local i
  for i in $(seq 1 100); do redis_up && return 0; sleep 0.1; done
  die "redis did not answer within 10s (log: $DIR/redis.log)"
}

stop_redis() {
  if redis_up; then redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; fi
}

print_env() {
  echo "export SWITCHBOARD_TEST_POSTGRES_URL=$PG_URL"
  echo "export SWITCHBOARD_TEST_REDIS_URL=$REDIS_URL"
}

case "${1:-start}" in
  start)
    # one start at a time on this machine
    exec 9>"$DIR/.lock"
    flock 9
    start_pg
    start_redis
    print_env | tee "$DIR/env.sh"
    ;;
  stop)
    exec 9>"$DIR/.lock"
    flock 9
    stop_pg
    stop_redis
    log "stopped"
    ;;
  status)
    pg_up && redis_up
    ;;
  env)
    print_env
    ;;
  *)
    die "usage: $0 start|stop|status|env"
    ;;
esac
