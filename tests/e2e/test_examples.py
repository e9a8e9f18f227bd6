"""Every examples/*.toml passes `switchboard check --config FILE`.

Nothing is skipped: an example that cannot be checked here fails. The test
provides what an example may need:

  * binaries on PATH: switchboard, switchboard-fixture,
    switchboard-fake-upstream, node (22), mcp-server-everything, python and
    mcp-server-time (the e2e venv);
  * every `${env:NAME}` the file references, set to a dummy value;
  * for every `url = "http://127.0.0.1:PORT/..."` upstream, a server on that
    loopback port: the testkit fake upstream (Streamable HTTP at /mcp), or
    server-everything in `sse` mode for `transport = "sse"` (at /sse).
    An example pointing at a non-loopback host fails without being contacted.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import Env, _require
from support import REPO, ProcessManager, describe, run, tcp_open, wait_until

EXAMPLES = sorted((REPO / "examples").glob("*.toml"))
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def test_examples_exist():
    assert EXAMPLES, f"no example configs in {REPO / 'examples'}"


@pytest.fixture(scope="module")
def example_path(env, tmp_path_factory) -> str:
    """PATH with every binary an example may name."""
    bindir = tmp_path_factory.mktemp("example-bin")
    links = {
        "switchboard": env.switchboard,
        "switchboard-fixture": env.fixture,
        "switchboard-fake-upstream": env.fake_upstream,
        "mcp-server-everything": env.deps / "mcp-tools" / "node_modules" / ".bin" / "mcp-server-everything",
    }
    for name, target in links.items():
        if Path(target).exists():
            (bindir / name).symlink_to(target)
    venv_bin = env.venv_python.parent
    return os.pathsep.join([str(bindir), str(env.node_bin_dir), str(venv_bin), os.environ.get("PATH", "")])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _serve_url_upstreams(doc: dict, env: Env, pm: ProcessManager, example: Path) -> None:
    for up in doc.get("upstreams", []):
        url = up.get("url")
        if not url:
            continue
        parts = urlsplit(url)
        where = f"{example.name}: upstream {up.get('name')!r} url {url!r}"
        if parts.hostname not in LOOPBACK:
            pytest.fail(f"{where}: not a loopback address; examples must be checkable offline", pytrace=False)
        port = parts.port or 80
        if not _port_free(port):
            pytest.fail(f"{where}: port {port} is already in use on this machine", pytrace=False)
        if up.get("transport") == "sse":
            assert parts.path.rstrip("/") == "/sse", f"{where}: the test serves legacy SSE only at /sse"
            argv = [env.node, "--require", env.preload, _require(env.everything_js, "run scripts/deps.sh"), "sse"]
            proc = pm.start(f"example-sse-{port}", argv, env={"PORT": str(port)})
        else:
            assert parts.path.rstrip("/") == "/mcp", f"{where}: the test serves Streamable HTTP only at /mcp"
            argv = [env.fake_upstream, "--transport", "http", "--listen", f"127.0.0.1:{port}"]
            proc = pm.start(f"example-http-{port}", argv)
        wait_until(lambda: tcp_open("127.0.0.1", port), timeout=60, what=f"{where} server", abort=proc.exited_msg)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_check(example, env, procs, switchboard_bin, fixture_bin, fake_upstream_bin, example_path):
    text = example.read_text()
    doc = tomllib.loads(text)
    _serve_url_upstreams(doc, env, procs, example)
    dummy_env = {name: f"e2e-dummy-{name.lower()}" for name in ENV_REF.findall(text)}
    cp = run(
        [switchboard_bin, "check", "--config", example],
        timeout=90,
        cwd=REPO,
        env={"PATH": example_path, **dummy_env},
    )
    assert cp.returncode == 0, describe(cp)
