"""Interop: the gateway federating third-party MCP servers, driven by
third-party clients.

Upstreams (one gateway for the whole module):
  everything   server-everything over stdio (node .../dist/index.js stdio)
  remote       a second server-everything over Streamable HTTP (loopback preload)
  time         mcp-server-time over stdio (python -m mcp_server_time, from the venv)
  legacy       a third server-everything over the legacy HTTP+SSE transport

Clients: the official Python SDK (Streamable HTTP and legacy SSE) and the
Inspector CLI.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import anyio
import pytest
from conftest import (
    Gateway,
    everything_stdio_command,
    start_everything_http,
    start_gateway,
    time_stdio_command,
    wait_for_tools,
)
from mcp_client import http_session, run_async, sse_session, text_of
from support import describe, run

pytestmark = pytest.mark.interop

LONG_OP = "trigger-long-running-operation"  # server-everything 2026.8.31


@pytest.fixture(scope="module")
def remote_port(env, module_procs) -> int:
    return start_everything_http(module_procs, env)


@pytest.fixture(scope="module")
def legacy_port(env, module_procs) -> int:
    return start_everything_http(module_procs, env, mode="sse")


@pytest.fixture(scope="module")
def gw(env, module_procs, remote_port, legacy_port, tmp_path_factory) -> Gateway:
    sb = env.switchboard
    if not sb.exists():
        pytest.fail(f"missing {sb}: build it: cargo build --workspace --bins", pytrace=False)
    upstreams = [
        {"name": "everything", "command": everything_stdio_command(env)},
        {"name": "remote", "url": f"http://127.0.0.1:{remote_port}/mcp"},
        {"name": "time", "command": time_stdio_command(env)},
        {"name": "legacy", "url": f"http://127.0.0.1:{legacy_port}/sse", "transport": "sse"},
    ]
    gw = start_gateway(module_procs, sb, tmp_path_factory.mktemp("interop"), upstreams)
    # The stdio upstreams must connect (bounded wait; fails with what is missing).
    wait_for_tools(gw.mcp_url, ["everything__echo", "time__get_current_time"], proc=gw.proc)
    # The HTTP upstream too, but if it does not, only the tests that use it fail.
    try:
        wait_for_tools(gw.mcp_url, ["remote__echo", "legacy__echo"], proc=gw.proc)
    except AssertionError as e:
        print(f"remote upstream not connected: {e}")
    return gw


# ---------------------------------------------------------------------------
# Python SDK through the gateway


def test_tools_are_federated_with_prefixes(gw):
    async def go():
        async with http_session(gw.mcp_url) as s:
            return {t.name for t in (await s.list_tools()).tools}

    names = run_async(go)
    for expected in ("time__get_current_time", "time__convert_time", "everything__echo", f"everything__{LONG_OP}", "remote__echo"):
        assert expected in names, f"{expected} missing from {sorted(names)}"
    assert "echo" not in names, "prefix = 'always' (default) must not expose bare names"


def test_call_time_and_echo_tools(gw):
    async def go():
        async with http_session(gw.mcp_url) as s:
            t = await s.call_tool("time__get_current_time", {"timezone": "UTC"})
            e1 = await s.call_tool("everything__echo", {"message": "via stdio"})
            e2 = await s.call_tool("remote__echo", {"message": "via http"})
            return t, e1, e2

    t, e1, e2 = run_async(go)
    assert not t.is_error, text_of(t)
    payload = json.loads(text_of(t))
    assert payload["timezone"] == "UTC" and "datetime" in payload, payload
    assert not e1.is_error and text_of(e1) == "Echo: via stdio"
    assert not e2.is_error and text_of(e2) == "Echo: via http"


def test_resources_list_and_read(gw):
    async def go():
        async with http_session(gw.mcp_url) as s:
            listed = (await s.list_resources()).resources
            assert listed, "no resources through the gateway"
            pick = next((r for r in listed if "architecture.md" in str(r.uri)), listed[0])
            read = await s.read_resource(pick.uri)
            return listed, pick, read

    listed, pick, read = run_async(go)
    assert read.contents, f"empty contents for {pick.uri}"
    first = read.contents[0]
    body = getattr(first, "text", None) or getattr(first, "blob", None)
    assert body, f"resource {pick.uri} read back without text/blob: {first!r}"


def test_prompts_list_and_get(gw):
    async def go():
        async with http_session(gw.mcp_url) as s:
            names = {p.name for p in (await s.list_prompts()).prompts}
            got = await s.get_prompt("everything__simple-prompt")
            args = await s.get_prompt("everything__args-prompt", {"city": "Paris", "state": "TX"})
            return names, got, args

    names, got, args = run_async(go)
    assert "everything__simple-prompt" in names, sorted(names)
    assert got.messages and "simple prompt" in got.messages[0].content.text
    assert any("Paris" in getattr(m.content, "text", "") for m in args.messages), args


def test_call_with_progress(gw):
    async def go():
        seen: list[tuple[float, float | None]] = []

        async def on_progress(progress, total, message):
            seen.append((progress, total))

        async with http_session(gw.mcp_url) as s:
            res = await s.call_tool(
                f"everything__{LONG_OP}", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
            )
        return res, seen

    res, seen = run_async(go)
    assert not res.is_error, text_of(res)
    assert "completed" in text_of(res)
    assert [p for p, _ in seen] == [1.0, 2.0, 3.0], f"progress notifications seen: {seen}"
    assert all(t == 3.0 for _, t in seen)


def test_cancel_slow_call(gw):
    """Cancel a long call once it has reported progress; the session stays usable."""

    async def go():
        started = anyio.Event()
        outcome: dict[str, object] = {}

        async def on_progress(progress, total, message):
            started.set()

        async with http_session(gw.mcp_url) as s:
            async with anyio.create_task_group() as tg:

                async def slow():
                    try:
                        outcome["result"] = await s.call_tool(
                            f"everything__{LONG_OP}", {"duration": 300, "steps": 300},
                            progress_callback=on_progress,
                        )
                    except anyio.get_cancelled_exc_class():
                        outcome["cancelled"] = True
                        raise

                tg.start_soon(slow)
                with anyio.fail_after(30):
                    await started.wait()
                tg.cancel_scope.cancel()
            assert outcome.get("cancelled") and "result" not in outcome, outcome
            # the same session keeps working after the cancellation
            await s.send_ping()
            after = await s.call_tool("everything__echo", {"message": "after cancel"})
            return after

    after = run_async(go)
    assert text_of(after) == "Echo: after cancel"


def test_single_upstream_endpoint(gw):
    async def go():
        async with http_session(gw.server_url("time")) as s:
            return {t.name for t in (await s.list_tools()).tools}

    names = run_async(go)
    assert any(n.endswith("get_current_time") for n in names), names
    assert not any("echo" in n for n in names), f"/servers/time/mcp leaks other upstreams: {names}"


# ---------------------------------------------------------------------------
# Inspector CLI through the gateway


def _inspector(env, *args: str, timeout: float = 60):
    home = Path(tempfile.mkdtemp(prefix="inspector-home-"))  # it keeps state under ~/.mcp-inspector
    return run(
        [env.node, env.inspector_js, "--cli", *args, "--format", "json", "-q"],
        timeout=timeout,
        env={"HOME": str(home), "PATH": f"{env.node_bin_dir}:{os.environ.get('PATH', '')}"},
    )


def test_inspector_cli_lists_tools(env, gw):
    cp = _inspector(env, gw.mcp_url, "--transport", "http", "--method", "tools/list")
    assert cp.returncode == 0, describe(cp)
    names = {t["name"] for t in json.loads(cp.stdout)["result"]["tools"]}
    assert {"everything__echo", "time__get_current_time", "remote__echo"} <= names, sorted(names)


def test_inspector_cli_calls_tool(env, gw):
    cp = _inspector(
        env, gw.mcp_url, "--transport", "http", "--method", "tools/call",
        "--tool-name", "everything__echo", "--tool-arg", "message=hello",
    )
    assert cp.returncode == 0, describe(cp)
    content = json.loads(cp.stdout)["result"]["content"]
    assert content == [{"type": "text", "text": "Echo: hello"}], content


def test_inspector_cli_legacy_sse(env, gw):
    cp = _inspector(
        env, f"{gw.base}/sse", "--transport", "sse", "--method", "tools/call",
        "--tool-name", "everything__echo", "--tool-arg", "message=via-sse",
    )
    assert cp.returncode == 0, describe(cp)
    content = json.loads(cp.stdout)["result"]["content"]
    assert content == [{"type": "text", "text": "Echo: via-sse"}], content


# ---------------------------------------------------------------------------
# cancellation reaches the upstream (observable with the testkit fake upstream)


def test_cancellation_is_forwarded_upstream(env, fake_upstream_bin, gateway_factory):
    gw_fake = gateway_factory(
        [{"name": "fake", "command": [str(fake_upstream_bin), "--transport", "stdio"]}], name="gateway-fake"
    )
    wait_for_tools(gw_fake.mcp_url, ["fake__slow", "fake__cancelled_count"], proc=gw_fake.proc)

    async def go():
        started = anyio.Event()

        async def on_progress(progress, total, message):
            started.set()

        async with http_session(gw_fake.mcp_url) as s:
            async with anyio.create_task_group() as tg:

                async def slow():
                    await s.call_tool("fake__slow", {"ms": 600_000}, progress_callback=on_progress)

                tg.start_soon(slow)
                with anyio.fail_after(30):
                    await started.wait()
                tg.cancel_scope.cancel()
            # bounded poll: the upstream records the cancellation asynchronously
            with anyio.fail_after(30):
                while True:
                    count = text_of(await s.call_tool("fake__cancelled_count", {}))
                    if count == "1":
                        return count
                    await anyio.sleep(0.1)

    assert run_async(go) == "1"


# ---------------------------------------------------------------------------
# legacy HTTP+SSE on both sides


def test_legacy_sse_upstream_is_federated_and_callable(gw):
    async def go():
        async with http_session(gw.mcp_url) as s:
            names = {t.name for t in (await s.list_tools()).tools}
            assert "legacy__echo" in names, sorted(names)
            r = await s.call_tool("legacy__echo", {"message": "through sse upstream"})
            assert not r.is_error, r
            return text_of(r)

    assert run_async(go) == "Echo: through sse upstream"


def test_python_sdk_over_the_gateways_legacy_sse_endpoint(gw):
    async def go():
        async with sse_session(f"{gw.base}/sse") as s:
            names = {t.name for t in (await s.list_tools()).tools}
            assert {"everything__echo", "time__get_current_time"} <= names, sorted(names)
            r = await s.call_tool("everything__echo", {"message": "old client"})
            assert not r.is_error, r
            return text_of(r)

    assert run_async(go) == "Echo: old client"
