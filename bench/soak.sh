#!/usr/bin/env bash
# The soak benchmark: the release gateway in front of the echo upstream over
# HTTP, driven at a steady rate for 10 minutes (by default) while its RSS is
# sampled every 10 s. Loopback only; every process it starts is stopped on exit.
#   bench/soak.sh                       # 600 s at 500 calls/s
#   bench/soak.sh --duration-secs 120   # extra arguments go to `switchboard-bench soak`
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/switchboard-target}"
CARGO_TARGET_DIR="$target" cargo build --release \
  -p switchboard -p switchboard-testkit -p switchboard-bench \
  --bin switchboard --bin switchboard-fake-upstream --bin switchboard-bench
bin="$target/release"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port="$(free_port)"; gw_port="$(free_port)"
"$bin/switchboard-fake-upstream" --transport http --listen "127.0.0.1:$up_port" >"$work/upstream.log" 2>&1 &
pids+=($!)
cat >"$work/gw.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
[[upstreams]]
name = "echo"
url = "http://127.0.0.1:$up_port/mcp"
prefix = "never"
TOML
"$bin/switchboard" serve --config "$work/gw.toml" --log warn >"$work/gateway.log" 2>&1 &
gw_pid=$!; pids+=("$gw_pid")
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$gw_port/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
"$bin/switchboard-bench" soak --url "http://127.0.0.1:$gw_port/mcp" --pid "$gw_pid" "$@"
