#!/usr/bin/env bash
# Builds the gateway, the echo upstream, the conformance fixture (the stateless 2026-07-28
# upstream) and the bench in release mode, then runs the whole direct-vs-gateway suite on loopback and writes the results into BENCHMARKS.md (between the
# bench markers; text outside them is kept). Extra arguments go to `suite`, e.g.
#   bench/run.sh --duration-secs 20
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/switchboard-target}"

CARGO_TARGET_DIR="$target" cargo build --release \
  -p switchboard -p switchboard-testkit -p switchboard-bench \
  --bin switchboard --bin switchboard-fake-upstream --bin switchboard-fixture \
  --bin switchboard-bench

exec "$target/release/switchboard-bench" suite \
  --gateway-bin "$target/release/switchboard" \
  --upstream-bin "$target/release/switchboard-fake-upstream" \
  --fixture-bin "$target/release/switchboard-fixture" \
  --out BENCHMARKS.md \
  "$@"
