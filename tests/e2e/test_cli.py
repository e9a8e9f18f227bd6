"""The `switchboard` command line: --version, check, tools, call, serve --stdio.

The conformance fixture (switchboard-fixture) is the upstream throughout: its
tool set is fixed by the conformance suite, so the expected output is known.
"""

from __future__ import annotations

import re

import anyio
import pytest
from conftest import start_fixture_http, wait_for_tools
from mcp_client import run_async, stdio_session, text_of
from support import describe, free_port, gateway_toml, run

CMD_TIMEOUT = 60


def fixture_upstream(fixture_bin) -> dict:
    return {"name": "fixture", "command": [str(fixture_bin), "--transport", "stdio"]}


def write_config(path, upstreams) -> str:
    path.write_text(gateway_toml(f"127.0.0.1:{free_port()}", upstreams))
    return str(path)


def test_version(switchboard_bin):
    cp = run([switchboard_bin, "--version"], timeout=CMD_TIMEOUT)
    assert cp.returncode == 0, describe(cp)
    assert re.search(r"switchboard\S*\s+\d+\.\d+\.\d+", cp.stdout), describe(cp)


def test_check_good_config_stdio(switchboard_bin, fixture_bin, tmp_path):
    cfg = write_config(tmp_path / "good.toml", [fixture_upstream(fixture_bin)])
    cp = run([switchboard_bin, "check", "--config", cfg], timeout=CMD_TIMEOUT)
    assert cp.returncode == 0, describe(cp)


def test_check_good_config_http(switchboard_bin, fixture_bin, procs, tmp_path):
    url = start_fixture_http(procs, fixture_bin)
    cfg = write_config(tmp_path / "good-http.toml", [{"name": "fixture", "url": url}])
    cp = run([switchboard_bin, "check", "--config", cfg], timeout=CMD_TIMEOUT)
    assert cp.returncode == 0, describe(cp)


def test_check_unreachable_upstream_fails(switchboard_bin, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    cfg = write_config(tmp_path / "dead.toml", [{"name": "dead", "url": dead}])
    cp = run([switchboard_bin, "check", "--config", cfg], timeout=CMD_TIMEOUT)
    assert cp.returncode != 0, describe(cp)
    assert "dead" in cp.stdout + cp.stderr, f"report should name the upstream\n{describe(cp)}"


@pytest.mark.parametrize(
    "bad_line, must_mention",
    [
        ('prefx = "never"', "prefx"),  # unknown field (typo)
        ('prefix = "sometimes"', "prefix"),  # bad enum value
        ("command = 42", "command"),  # wrong type
    ],
    ids=["unknown-field", "bad-value", "wrong-type"],
)
def test_check_bad_field_names_field_and_line(switchboard_bin, fixture_bin, tmp_path, bad_line, must_mention):
    good = gateway_toml(f"127.0.0.1:{free_port()}", [fixture_upstream(fixture_bin)]).rstrip("\n").split("\n")
    if bad_line.startswith("command"):
        good = [l for l in good if not l.startswith("command")]
    good.append(bad_line)
    line_no = len(good)  # 1-based line number of the bad line
    cfg = tmp_path / "bad.toml"
    cfg.write_text("\n".join(good) + "\n")
    cp = run([switchboard_bin, "check", "--config", cfg], timeout=CMD_TIMEOUT)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0, describe(cp)
    assert must_mention in out, f"error should name the field {must_mention!r}\n{describe(cp)}"
    assert re.search(rf"(line\s*{line_no}\b)|(:{line_no}:\d+)|(:{line_no}\b)", out), (
        f"error should name line {line_no}\n{describe(cp)}"
    )


@pytest.fixture
def running_gateway(gateway_factory, fixture_bin):
    gw = gateway_factory([fixture_upstream(fixture_bin)])
    wait_for_tools(gw.mcp_url, ["fixture__test_simple_text"], proc=gw.proc)
    return gw


def test_tools_from_config(switchboard_bin, fixture_bin, tmp_path):
    cfg = write_config(tmp_path / "tools.toml", [fixture_upstream(fixture_bin)])
    cp = run([switchboard_bin, "tools", "--config", cfg], timeout=CMD_TIMEOUT)
    assert cp.returncode == 0, describe(cp)
    assert "fixture__test_simple_text" in cp.stdout, describe(cp)


def test_tools_from_url(switchboard_bin, running_gateway):
    cp = run([switchboard_bin, "tools", "--url", running_gateway.mcp_url], timeout=CMD_TIMEOUT)
    assert cp.returncode == 0, describe(cp)
    assert "fixture__test_simple_text" in cp.stdout, describe(cp)
    assert "fixture__json_schema_2020_12_tool" in cp.stdout, describe(cp)


def test_call_tool(switchboard_bin, running_gateway):
    cp = run(
        [switchboard_bin, "call", "fixture__json_schema_2020_12_tool", "--args", '{"name": "cli"}',
         "--url", running_gateway.mcp_url],
        timeout=CMD_TIMEOUT,
    )
    assert cp.returncode == 0, describe(cp)
    assert "Hello, cli!" in cp.stdout, describe(cp)


def test_call_tool_without_args(switchboard_bin, running_gateway):
    cp = run(
        [switchboard_bin, "call", "fixture__test_simple_text", "--args", "{}", "--url", running_gateway.mcp_url],
        timeout=CMD_TIMEOUT,
    )
    assert cp.returncode == 0, describe(cp)
    assert "This is a simple text response for testing." in cp.stdout, describe(cp)


def test_serve_stdio_with_python_sdk(switchboard_bin, fixture_bin, tmp_path):
    cfg = write_config(tmp_path / "stdio.toml", [fixture_upstream(fixture_bin)])

    async def go():
        async with stdio_session(str(switchboard_bin), ["serve", "--stdio", "--config", cfg], cwd=str(tmp_path)) as s:
            # upstreams connect asynchronously: poll (bounded) until the tool is listed
            with anyio.fail_after(30):
                while True:
                    names = {t.name for t in (await s.list_tools()).tools}
                    if "fixture__test_simple_text" in names:
                        break
                    await anyio.sleep(0.1)
            simple = await s.call_tool("fixture__test_simple_text", {})
            hello = await s.call_tool("fixture__json_schema_2020_12_tool", {"name": "stdio"})
            prompts = {p.name for p in (await s.list_prompts()).prompts}
            return names, simple, hello, prompts

    names, simple, hello, prompts = run_async(go)
    assert "fixture__test_simple_text" in names, sorted(names)
    assert text_of(simple) == "This is a simple text response for testing."
    assert text_of(hello) == "Hello, stdio!"
    assert "fixture__test_simple_prompt" in prompts, sorted(prompts)
