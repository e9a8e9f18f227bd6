"""Sanity checks of the test harness itself, without the gateway.

If these fail, the environment (scripts/deps.sh, the testkit binaries) is
broken and the gateway tests' failures say nothing about the gateway.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from conftest import (
    everything_stdio_command,
    start_everything_http,
    start_fake_upstream_http,
    start_fixture_http,
    time_stdio_command,
)
from mcp_client import http_session, run_async, stdio_session, text_of
from support import describe, run


def _listening_addrs(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) with a LISTEN socket on ``port``."""
    addrs = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            ip_hex, port_hex = cols[1].split(":")
            if cols[3] == "0A" and int(port_hex, 16) == port:
                addrs.add(ip_hex)
    return addrs


@pytest.fixture
def everything_port(env, procs) -> int:
    return start_everything_http(procs, env)


def test_everything_http_listens_on_loopback_only(everything_port):
    addrs = _listening_addrs(everything_port)
    assert addrs == {"0100007F"}, f"server-everything listens on {addrs} (want 127.0.0.1 only)"


def test_sdk_session_with_everything_http(everything_port):
    async def go():
        async with http_session(f"http://127.0.0.1:{everything_port}/mcp") as s:
            names = {t.name for t in (await s.list_tools()).tools}
            res = await s.call_tool("echo", {"message": "direct"})
            return names, res

    names, res = run_async(go)
    assert {"echo", "trigger-long-running-operation"} <= names, sorted(names)
    assert text_of(res) == "Echo: direct"


def test_sdk_session_with_everything_stdio(env):
    cmd = everything_stdio_command(env)

    async def go():
        async with stdio_session(cmd[0], cmd[1:]) as s:
            return {p.name for p in (await s.list_prompts()).prompts}

    assert "simple-prompt" in run_async(go)


def test_sdk_session_with_time_stdio(env):
    cmd = time_stdio_command(env)

    async def go():
        async with stdio_session(cmd[0], cmd[1:]) as s:
            names = {t.name for t in (await s.list_tools()).tools}
            res = await s.call_tool("get_current_time", {"timezone": "UTC"})
            return names, res

    names, res = run_async(go)
    assert {"get_current_time", "convert_time"} <= names, sorted(names)
    assert json.loads(text_of(res))["timezone"] == "UTC"


def test_fixture_stdio(fixture_bin):
    async def go():
        async with stdio_session(str(fixture_bin), ["--transport", "stdio"]) as s:
            names = {t.name for t in (await s.list_tools()).tools}
            res = await s.call_tool("test_simple_text", {})
            return names, res

    names, res = run_async(go)
    assert "test_simple_text" in names
    assert text_of(res) == "This is a simple text response for testing."


def test_fixture_http_listens_on_loopback_only(fixture_bin, procs):
    url = start_fixture_http(procs, fixture_bin)
    port = int(url.split(":")[2].split("/")[0])
    assert _listening_addrs(port) == {"0100007F"}


def test_fake_upstream_stdio_and_http(fake_upstream_bin, procs):
    url = start_fake_upstream_http(procs, fake_upstream_bin)

    async def go():
        async with stdio_session(str(fake_upstream_bin), ["--transport", "stdio"]) as s:
            stdio_names = {t.name for t in (await s.list_tools()).tools}
        async with http_session(url) as s:
            http_names = {t.name for t in (await s.list_tools()).tools}
        return stdio_names, http_names

    stdio_names, http_names = run_async(go)
    expected = {"echo", "add", "slow", "fail", "crash", "big", "sample", "elicit", "add_tool", "log", "touch"}
    assert expected <= stdio_names, sorted(stdio_names)
    assert expected <= http_names, sorted(http_names)


def test_inspector_cli_direct(env, everything_port):
    home = Path(tempfile.mkdtemp(prefix="inspector-home-"))
    cp = run(
        [env.node, env.inspector_js, "--cli", f"http://127.0.0.1:{everything_port}/mcp", "--transport", "http",
         "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=hello", "--format", "json", "-q"],
        timeout=60,
        env={"HOME": str(home), "PATH": f"{env.node_bin_dir}:{os.environ.get('PATH', '')}"},
    )
    assert cp.returncode == 0, describe(cp)
    assert json.loads(cp.stdout)["result"]["content"] == [{"type": "text", "text": "Echo: hello"}]


def test_sdk_cancellation_reaches_fake_upstream(fake_upstream_bin):
    """The SDK sends notifications/cancelled when a call's scope is cancelled,
    and the fake upstream counts it: the basis of the gateway's cancellation test."""
    import anyio

    async def go():
        started = anyio.Event()

        async def on_progress(progress, total, message):
            started.set()

        async with stdio_session(str(fake_upstream_bin), ["--transport", "stdio"]) as s:
            async with anyio.create_task_group() as tg:

                async def slow():
                    await s.call_tool("slow", {"ms": 600_000}, progress_callback=on_progress)

                tg.start_soon(slow)
                with anyio.fail_after(30):
                    await started.wait()
                tg.cancel_scope.cancel()
            with anyio.fail_after(30):
                while True:
                    count = text_of(await s.call_tool("cancelled_count", {}))
                    if count == "1":
                        return count
                    await anyio.sleep(0.1)

    assert run_async(go) == "1"
