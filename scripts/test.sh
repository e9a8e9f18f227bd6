#!/usr/bin/env bash
# Switchboard's test command (CI runs it through .ci/run).
#
#   ./scripts/test.sh                 everything: deps, fmt, clippy, build, nextest, e2e
#   ./scripts/test.sh -k interop      extra arguments go to pytest
#
# Environment:
#   CARGO_TARGET_DIR        default ~/.cache/switchboard-target (kept between runs)
#   SWITCHBOARD_DEPS_DIR    default ~/.cache/switchboard-deps   (see scripts/deps.sh)
#   SWITCHBOARD_PROFILE     debug (default) or release: which build the e2e tests use
#   SWITCHBOARD_SKIP        comma list of steps to skip: fmt,clippy,nextest,e2e,fuzz (local use)
#   SWITCHBOARD_FUZZ_SECONDS  how long each cargo-fuzz target runs (default 30)
#
# Only loopback and the package registries are used. Every process the tests
# start is recorded and killed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchboard-target}"
mkdir -p "$CARGO_TARGET_DIR"
CARGO_TARGET_DIR="$(cd "$CARGO_TARGET_DIR" && pwd)"
export SWITCHBOARD_DEPS_DIR="${SWITCHBOARD_DEPS_DIR:-$HOME/.cache/switchboard-deps}"
PROFILE="${SWITCHBOARD_PROFILE:-debug}"
SKIP=",${SWITCHBOARD_SKIP:-},"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

# Results of this run (logs, conformance checks.json, junit) in a fresh
# directory; the last few runs are kept, `latest` points at this one.
RESULTS_BASE="$(dirname "$CARGO_TARGET_DIR")/switchboard-results"
RUN_ID="$(date +%Y%m%d-%H%M%S)-$$"
RESULTS="$RESULTS_BASE/run-$RUN_ID"
mkdir -p "$RESULTS"
ln -sfn "run-$RUN_ID" "$RESULTS_BASE/latest"
# shellcheck disable=SC2012
ls -1dt "$RESULTS_BASE"/run-* 2>/dev/null | tail -n +6 | xargs -r rm -rf
export SWITCHBOARD_RESULTS_DIR="$RESULTS"
# Gateways started by the tests keep their store (keys, pins, audit) here,
# never in the user's own data directory.
export XDG_DATA_HOME="$RESULTS/data"
export E2E_PIDFILE="$RESULTS/e2e.pids"
: > "$E2E_PIDFILE"
# Every process started from here on inherits this marker; cleanup reaps any
# that are still alive (including grandchildren that left their group).
export SWITCHBOARD_E2E_RUN="$RUN_ID"

# ---------------------------------------------------------------- cleanup
# pids of live processes carrying this run's marker (never this shell)
marked_pids() {
  local f pid
  for f in $(grep -lzsx "SWITCHBOARD_E2E_RUN=$RUN_ID" /proc/[0-9]*/environ 2>/dev/null); do
    pid="${f#/proc/}"; pid="${pid%/environ}"
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] || echo "$pid"
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid left=()
  # every process group the e2e tests started (they use their own sessions)
  if [[ -s "$E2E_PIDFILE" ]]; then
    while read -r pid; do
      [[ "$pid" =~ ^[0-9]+$ ]] || continue
      [[ -e /proc/$pid ]] && left+=("$pid")
      kill -KILL -- "-$pid" 2>/dev/null || true
    done < "$E2E_PIDFILE"
  fi
  # anything else started by this run that is still alive
  for pid in $(marked_pids); do
    [[ -e /proc/$pid ]] || continue
    left+=("$pid:$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)")
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ ${#left[@]} -gt 0 ]]; then
    echo "test.sh: reaped ${#left[@]} leftover process(es): ${left[*]}" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- steps
declare -a STEP_NAMES=() STEP_RESULTS=() STEP_TIMES=()
FAILED=0
T_START=$SECONDS

banner() { printf '\n==================== %s ====================\n' "$*"; }

# step NAME CMD...: run, record ok/FAIL and duration; never aborts the script
step() {
  local name="$1"; shift
  if [[ "$SKIP" == *",$name,"* ]]; then
    STEP_NAMES+=("$name"); STEP_RESULTS+=("skipped (SWITCHBOARD_SKIP)"); STEP_TIMES+=(0)
    return 0
  fi
  banner "$name"
  local t0=$SECONDS rc=0 pid
  # in the background + wait, so that INT/TERM run the cleanup at once
  "$@" </dev/null &
  pid=$!
  wait "$pid" || rc=$?
  STEP_NAMES+=("$name"); STEP_TIMES+=($((SECONDS - t0)))
  if [[ $rc -eq 0 ]]; then
    STEP_RESULTS+=("ok")
  else
    STEP_RESULTS+=("FAIL (exit $rc)"); FAILED=1
  fi
  return $rc
}

not_run() { # NAME REASON
  STEP_NAMES+=("$1"); STEP_RESULTS+=("not run: $2"); STEP_TIMES+=(0); FAILED=1
}

run_pytest() {
  # shellcheck disable=SC1091
  source "$SWITCHBOARD_DEPS_DIR/env.sh"
  local bindir="$CARGO_TARGET_DIR/$PROFILE"
  SWITCHBOARD_BIN="$bindir/switchboard" \
  FIXTURE_BIN="$bindir/switchboard-fixture" \
  FAKE_UPSTREAM_BIN="$bindir/switchboard-fake-upstream" \
    "$E2E_VENV/bin/python" -m pytest tests/e2e -v --durations=15 \
      --junitxml="$RESULTS/e2e-junit.xml" "$@"
}

# Loopback PostgreSQL and Redis (scripts/services.sh); the store tests fail,
# never skip, without them. They outlive this run; `scripts/services.sh stop`.
start_services() {
  local exports
  exports="$(./scripts/services.sh start)" || return 1
  eval "$exports"
  export SWITCHBOARD_TEST_POSTGRES_URL SWITCHBOARD_TEST_REDIS_URL
}

run_nextest() {
  start_services || echo "test.sh: scripts/services.sh start failed; the PostgreSQL tests will fail" >&2
  cargo nextest run --workspace --no-fail-fast --no-tests=warn 2>&1 | tee "$RESULTS/nextest.log"
}

# "tests: N passed, M failed" over nextest + pytest (what actually ran)
test_counts() {
  local np=0 nf=0 pp=0 pf=0 line
  if [[ -f "$RESULTS/nextest.log" ]]; then
    line="$(grep -E '^ *Summary .* tests? run:' "$RESULTS/nextest.log" | tail -1 || true)"
    [[ "$line" =~ ([0-9]+)\ passed ]] && np="${BASH_REMATCH[1]}"
    [[ "$line" =~ ([0-9]+)\ failed ]] && nf=$((nf + BASH_REMATCH[1]))
    [[ "$line" =~ ([0-9]+)\ timed\ out ]] && nf=$((nf + BASH_REMATCH[1]))
  fi
  if [[ -f "$RESULTS/e2e-junit.xml" ]]; then
    read -r pp pf < <("$SWITCHBOARD_DEPS_DIR/venv/bin/python" - "$RESULTS/e2e-junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
k = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - k, f)
PY
    ) || true
  fi
  pp=${pp:-0}; pf=${pf:-0}
  echo "  nextest: ${np} ok / ${nf} not ok; e2e (pytest): ${pp} ok / ${pf} not ok"
  TESTS_PASSED=$((np + pp)); TESTS_FAILED=$((nf + pf))
}

# Each cargo-fuzz target for SWITCHBOARD_FUZZ_SECONDS, on the stable
# toolchain: with `--sanitizer none` cargo-fuzz passes rustc only stable flags
# (sancov through -Cpasses/-Cllvm-args) and no sanitizer runtime is needed.
# Safe Rust loses little without ASan; panics, hangs and OOMs are what we catch.
# A crash, a hang (>10 s) or an out-of-memory input fails the step and is
# written to fuzz/regressions/<target>/, which the protocol and gateway tests
# replay: commit it with the fix. The working corpus is kept beside the target
# dir, so coverage accumulates across runs; fuzz/corpus/ holds the seeds, and
# the saved crash inputs are run first of all.
run_fuzz() {
  local secs="${SWITCHBOARD_FUZZ_SECONDS:-30}" t rc=0
  local flags=(-O --sanitizer none --codegen-units 16 --target-dir "$CARGO_TARGET_DIR/fuzz")
  export PATH="$SWITCHBOARD_DEPS_DIR/cargo-fuzz/bin:$PATH"
  (cd fuzz && cargo fuzz build "${flags[@]}") || return 1
  for t in jsonrpc http; do
    local work="$CARGO_TARGET_DIR/fuzz-corpus/$t"
    mkdir -p "$work" "fuzz/regressions/$t"
    echo "fuzz: $t for ${secs}s"
    (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" "regressions/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="regressions/$t/") > "$RESULTS/fuzz-$t.log" 2>&1 || rc=1
    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|Done|==[0-9]+== ERROR|SUMMARY)|panicked|Test unit written' \
      "$RESULTS/fuzz-$t.log" || true
    [[ $rc == 0 ]] || tail -n 40 "$RESULTS/fuzz-$t.log"
  done
  return $rc
}

build_bins() {
  if [[ "$PROFILE" == release ]]; then
    cargo build --workspace --bins --release
  else
    cargo build --workspace --bins
  fi
}

deps_ok=0; build_ok=0
step deps ./scripts/deps.sh && deps_ok=1
step fmt cargo fmt --all -- --check || true
step clippy cargo clippy --workspace --all-targets -- -D warnings || true
step build build_bins && build_ok=1
step nextest run_nextest || true
step fuzz run_fuzz || true
if [[ "$SKIP" == *",e2e,"* ]]; then
  step e2e true
elif [[ $deps_ok == 1 && $build_ok == 1 ]]; then
  step e2e run_pytest "$@" || true
else
  not_run e2e "needs deps and build"
fi

# ---------------------------------------------------------------- summary
banner "summary"
if [[ -s "$RESULTS/conformance-summary.txt" ]]; then
  echo "conformance pass counts:"
  sed 's/^/  /' "$RESULTS/conformance-summary.txt"
  echo "  (results: $RESULTS/conformance)"
fi
for i in "${!STEP_NAMES[@]}"; do
  printf '  %-8s %-34s %5ss\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}" "${STEP_TIMES[$i]}"
done
printf '  total    %-34s %5ss\n' "" "$((SECONDS - T_START))"
TESTS_PASSED=0; TESTS_FAILED=0
test_counts
if [[ $FAILED -ne 0 ]]; then
  echo "test.sh: FAILED"
else
  echo "test.sh: all steps ok"
fi
echo "tests: ${TESTS_PASSED} passed, ${TESTS_FAILED} failed"
exit "$FAILED"
