"""The stateless MCP revision (2026-07-28) on the gateway's /mcp, beside legacy clients.

The gateway runs with the fake upstream (a legacy-era server over stdio)
behind it. Requests are sent raw with urllib, because the point is the wire:
routing headers, `_meta`, status codes, `resultType`, and the translation of
an upstream's server-to-client request (sampling, elicitation, roots) into an
`InputRequiredResult` whose retry resumes the parked upstream call.
"""

from __future__ import annotations

import base64
import itertools
import json

import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest
from conftest import start_gateway, wait_for_tools


VERSION = "2026-07-28"
CAPS_ALL = {"sampling": {}, "elicitation": {"form": {}}, "roots": {}}
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def gw(module_procs, switchboard_bin, fake_upstream_bin, tmp_path_factory):
    g = start_gateway(
        module_procs,
        switchboard_bin,
        tmp_path_factory.mktemp("modern"),
        [{"name": "fake", "command": [str(fake_upstream_bin)], "prefix": "never"}],
    )
    wait_for_tools(g.mcp_url, ["echo", "sample"], proc=g.proc)
    return g


@dataclass
class Resp:
    status_code: int
    headers: dict = field(default_factory=dict)
    text: str = ""

    def json(self):
        return json.loads(self.text)


def http(method: str, url: str, *, body: dict | None = None, headers: dict | None = None, timeout: float = 30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback only)
            return Resp(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode())
    except urllib.error.HTTPError as e:
        return Resp(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())


def body_of(r: Resp) -> dict:
    """The JSON-RPC message of a response, JSON or the last SSE `data:`."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        msgs = [json.loads(l[5:]) for l in r.text.splitlines() if l.startswith("data:") and l[5:].strip()]
        finals = [m for m in msgs if "result" in m or "error" in m]
        assert finals, f"no final message in SSE body: {r.text!r}"
        return finals[-1]
    return r.json()


def call(url: str, method: str, params: dict | None = None, *, caps=None, headers=None, name=None):
    params = dict(params or {})
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": CAPS_ALL if caps is None else caps,
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
        **params.get("_meta", {}),
    }
    h = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": method,
    }
    target = name if name is not None else params.get("name", params.get("uri"))
    if target is not None and method in ("tools/call", "prompts/get", "resources/read"):
        h["Mcp-Name"] = target
    h.update(headers or {})
    msg = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
    r = http("POST", url, body=msg, headers=h)
    return r, body_of(r)


def test_discover_names_both_eras_and_the_gateway(gw):
    r, b = call(gw.mcp_url, "server/discover")
    assert r.status_code == 200 and "mcp-session-id" not in r.headers
    res = b["result"]
    assert {"2025-11-25", VERSION} <= set(res["supportedVersions"])
    assert res["resultType"] == "complete" and res["ttlMs"] >= 0 and res["cacheScope"] in ("public", "private")
    assert res["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "switchboard"


def test_stateless_call_reaches_a_legacy_upstream(gw):
    r, b = call(gw.mcp_url, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    assert r.status_code == 200, b
    assert b["result"]["resultType"] == "complete"
    assert b["result"]["content"][0]["text"] == "hi"


def test_lists_carry_cache_hints(gw):
    for m in ("tools/list", "prompts/list", "resources/list", "resources/templates/list"):
        _, b = call(gw.mcp_url, m)
        assert {"resultType", "ttlMs", "cacheScope"} <= set(b["result"]), m


@pytest.mark.parametrize(
    "headers, code",
    [
        ({"Mcp-Name": "other"}, -32020),
        ({"Mcp-Name": "=?base64?" + base64.b64encode(b"other").decode() + "?="}, -32020),
        ({"Mcp-Method": "tools/list"}, -32020),
        ({"MCP-Protocol-Version": "2099-01-01"}, -32020),
    ],
)
def test_header_body_mismatch_is_400_32020(gw, headers, code):
    r, b = call(gw.mcp_url, "tools/call", {"name": "echo", "arguments": {"text": "x"}}, headers=headers)
    assert r.status_code == 400 and b["error"]["code"] == code, b
    assert b["id"] is not None


def test_base64_mcp_name_that_matches_is_accepted(gw):
    encoded = "=?base64?" + base64.b64encode(b"echo").decode() + "?="
    r, b = call(gw.mcp_url, "tools/call", {"name": "echo", "arguments": {"text": "x"}}, name=encoded)
    assert r.status_code == 200 and b["result"]["content"][0]["text"] == "x"


def test_unsupported_version_lists_the_supported_ones(gw):
    r, b = call(
        gw.mcp_url, "tools/list",
        {"_meta": {"io.modelcontextprotocol/protocolVersion": "2099-01-01"}},
        headers={"MCP-Protocol-Version": "2099-01-01"},
    )
    assert r.status_code == 400 and b["error"]["code"] == -32022
    assert VERSION in b["error"]["data"]["supported"]


def test_removed_methods_are_404(gw):
    for m in ("initialize", "ping", "logging/setLevel", "resources/subscribe"):
        r, b = call(gw.mcp_url, m)
        assert r.status_code == 404 and b["error"]["code"] == -32601, m


def test_get_and_delete_are_405_for_modern_clients_only(gw):
    h = {"MCP-Protocol-Version": VERSION, "Accept": "text/event-stream"}
    assert http("GET", gw.mcp_url, headers=h).status_code == 405
    assert http("DELETE", gw.mcp_url, headers=h).status_code == 405
    # A legacy GET without a session is still told to initialize, not 405.
    assert http("GET", gw.mcp_url, headers={"Accept": "text/event-stream"}).status_code == 400


def test_a_legacy_client_shares_the_url(gw):
    from mcp_client import http_session, run_async

    async def go():
        async with http_session(gw.mcp_url) as s:
            return (await s.call_tool("echo", {"text": "legacy"})).content[0].text

    assert run_async(go, timeout=30) == "legacy"


# --- MRTR: modern client -> legacy upstream -------------------------------

ANSWERS = {
    "sample": ("sampling/createMessage", {"role": "assistant", "content": {"type": "text", "text": "forty-two"}, "model": "m", "stopReason": "endTurn"}),
    "elicit": ("elicitation/create", {"action": "accept", "content": {"answer": "yes"}}),
    "roots": ("roots/list", {"roots": [{"uri": "file:///tmp", "name": "tmp"}]}),
}


def ask(gw, tool, caps=None):
    r, b = call(gw.mcp_url, "tools/call", {"name": tool, "arguments": {}}, caps=caps)
    assert r.status_code == 200, b
    res = b["result"]
    assert res["resultType"] == "input_required", res
    return res


@pytest.mark.parametrize("tool", sorted(ANSWERS))
def test_upstream_request_becomes_input_required_and_the_retry_resumes_it(gw, tool):
    method, answer = ANSWERS[tool]
    res = ask(gw, tool)
    [(key, req)] = res["inputRequests"].items()
    assert req["method"] == method
    r, b = call(
        gw.mcp_url, "tools/call",
        {"name": tool, "arguments": {}, "inputResponses": {key: answer}, "requestState": res["requestState"]},
    )
    assert r.status_code == 200, b
    final = b["result"]
    assert final["resultType"] == "complete"
    text = final["content"][0]["text"]
    needle = {"sample": "forty-two", "elicit": "yes", "roots": "file:///tmp"}[tool]
    assert needle in text, final


def test_missing_client_capability_is_400_32021(gw):
    r, b = call(gw.mcp_url, "tools/call", {"name": "sample", "arguments": {}}, caps={"elicitation": {}})
    assert r.status_code == 400 and b["error"]["code"] == -32021, b
    assert "sampling" in b["error"]["data"]["requiredCapabilities"]


def retry(gw, tool, state, responses=None):
    return call(
        gw.mcp_url, "tools/call",
        {"name": tool, "arguments": {}, "inputResponses": responses or {}, "requestState": state},
    )


def test_forged_request_state_is_refused(gw):
    res = ask(gw, "sample")
    raw = bytearray(base64.urlsafe_b64decode(res["requestState"] + "=" * (-len(res["requestState"]) % 4)))
    raw[len(raw) // 2] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for state in (forged, "bm90IGEgc3RhdGU", ""):
        r, b = retry(gw, "sample", state)
        assert r.status_code == 400 and b["error"]["code"] == -32602, b
        assert "requestState" in b["error"]["message"]


def test_replayed_request_state_is_refused(gw):
    method, answer = ANSWERS["sample"]
    res = ask(gw, "sample")
    [key] = res["inputRequests"]
    r, b = retry(gw, "sample", res["requestState"], {key: answer})
    assert b["result"]["resultType"] == "complete"
    r, b = retry(gw, "sample", res["requestState"], {key: answer})
    assert r.status_code == 400 and "already used" in b["error"]["message"], b


def test_request_state_is_bound_to_its_request(gw):
    res = ask(gw, "sample")
    r, b = retry(gw, "roots", res["requestState"])
    assert r.status_code == 400 and "different request" in b["error"]["message"], b


def test_many_parked_calls_leave_the_gateway_serving(gw):
    states = [ask(gw, "sample")["requestState"] for _ in range(40)]
    assert len(set(states)) == 40
    r, b = call(gw.mcp_url, "tools/call", {"name": "echo", "arguments": {"text": "still here"}})
    assert b["result"]["content"][0]["text"] == "still here"


# --- subscriptions/listen ----------------------------------------------------


def test_listen_acknowledges_and_relays_tool_list_changes(gw):
    msg = {
        "jsonrpc": "2.0", "id": 777, "method": "subscriptions/listen",
        "params": {
            "notifications": {"toolsListChanged": True},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "MCP-Protocol-Version": VERSION, "Mcp-Method": "subscriptions/listen"}
    req = urllib.request.Request(gw.mcp_url, data=json.dumps(msg).encode(), method="POST", headers=h)
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback only)
        assert r.status == 200
        lines = (raw.decode().rstrip("\r\n") for raw in iter(r.readline, b""))
        frames = (json.loads(l[5:]) for l in lines if l.startswith("data:"))
        ack = next(frames)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"] == {"toolsListChanged": True}
        _, b = call(gw.mcp_url, "tools/call", {"name": "add_tool", "arguments": {"name": "added_by_listen_test"}})
        assert b["result"]["resultType"] == "complete"
        n = next(frames)
        assert n["method"] == "notifications/tools/list_changed"
        assert n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 777


# --- a stateless upstream (fixture --era modern) behind the gateway ----------


@pytest.fixture(scope="module")
def gw_modern(module_procs, switchboard_bin, fixture_bin, tmp_path_factory):
    from conftest import start_http_server

    _, port = start_http_server(
        module_procs,
        "fixture-modern",
        lambda p: [fixture_bin, "--transport", "http", "--listen", f"127.0.0.1:{p}", "--era", "modern"],
        env={"RUST_LOG": "info"},
    )
    g = start_gateway(
        module_procs,
        switchboard_bin,
        tmp_path_factory.mktemp("modern-upstream"),
        [{"name": "fixture", "url": f"http://127.0.0.1:{port}/mcp", "prefix": "never"}],
        name="gateway-modern-upstream",
    )
    wait_for_tools(g.mcp_url, ["test_input_required_result_multi_round"], proc=g.proc)
    return g


def test_modern_client_goes_through_a_modern_upstreams_rounds(gw_modern):
    """modern -> modern: the InputRequiredResult passes through, the upstream's
    requestState wrapped in the gateway's sealed one, over three rounds."""
    tool = "test_input_required_result_multi_round"
    answers = {"step1": {"action": "accept", "content": {"name": "Alice"}},
               "step2": {"action": "accept", "content": {"color": "blue"}}}
    _, b = call(gw_modern.mcp_url, "tools/call", {"name": tool, "arguments": {}})
    res = b["result"]
    for _ in range(3):
        if res["resultType"] != "input_required":
            break
        [key] = res["inputRequests"]
        _, b = call(gw_modern.mcp_url, "tools/call", {
            "name": tool, "arguments": {}, "inputResponses": {key: answers[key]},
            "requestState": res["requestState"],
        })
        res = b["result"]
    assert res["resultType"] == "complete", res
    assert res["content"][0]["text"] == "Alice likes blue"


def test_a_modern_upstreams_state_cannot_be_tampered_with_through_the_gateway(gw_modern):
    _, b = call(gw_modern.mcp_url, "tools/call", {"name": "test_input_required_result_tampered_state", "arguments": {}})
    state = b["result"]["requestState"]
    r, b = call(gw_modern.mcp_url, "tools/call", {
        "name": "test_input_required_result_tampered_state", "arguments": {},
        "inputResponses": {"confirm": {"action": "accept", "content": {"ok": True}}},
        "requestState": state[:-2] + ("AA" if not state.endswith("AA") else "BB"),
    })
    assert r.status_code == 400 and b["error"]["code"] == -32602, b


def test_a_modern_upstreams_question_needs_the_clients_capability(gw_modern):
    r, b = call(gw_modern.mcp_url, "tools/call",
                {"name": "test_input_required_result_elicitation", "arguments": {}}, caps={})
    assert r.status_code == 400 and b["error"]["code"] == -32021, b


def test_legacy_sdk_client_answers_a_modern_upstreams_input_requests(gw_modern):
    """legacy client -> modern upstream: each inputRequest reaches the Python
    SDK client as a legacy sampling / elicitation request on its stream, and
    the answers go back upstream as inputResponses."""
    import anyio
    from mcp import types
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp_client import REQUEST_TIMEOUT, run_async, text_of

    async def on_elicit(context, params):
        return types.ElicitResult(action="accept", content={"name": "Alice"})

    async def on_sample(context, params):
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="Paris"), model="m",
        )

    async def go():
        async with streamable_http_client(gw_modern.mcp_url) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT,
                                     elicitation_callback=on_elicit, sampling_callback=on_sample) as s:
                with anyio.fail_after(REQUEST_TIMEOUT):
                    await s.initialize()
                e = await s.call_tool("test_input_required_result_elicitation", {})
                p = await s.call_tool("test_input_required_result_sampling", {})
                return text_of(e), text_of(p)

    elicited, sampled = run_async(go, timeout=60)
    assert elicited == "Hello, Alice!"
    assert sampled == "Paris"


def test_closing_a_stateless_response_stream_cancels_the_call(gw):
    """On the 2026-07-28 wire, disconnect is cancellation: the gateway cancels
    the upstream call (the fake upstream counts the cancellations it saw)."""
    import time

    def cancelled() -> int:
        _, b = call(gw.mcp_url, "tools/call", {"name": "cancelled_count", "arguments": {}})
        return int(b["result"]["content"][0]["text"])

    before = cancelled()
    msg = {
        "jsonrpc": "2.0", "id": 9001, "method": "tools/call",
        "params": {
            "name": "slow", "arguments": {"ms": 20000},
            "_meta": {
                "progressToken": "p1",
                "io.modelcontextprotocol/protocolVersion": VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "MCP-Protocol-Version": VERSION, "Mcp-Method": "tools/call", "Mcp-Name": "slow"}
    req = urllib.request.Request(gw.mcp_url, data=json.dumps(msg).encode(), method="POST", headers=h)
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback only)
        assert r.headers["content-type"].startswith("text/event-stream")
        first = next(l for l in iter(r.readline, b"") if l.startswith(b"data:"))
        assert json.loads(first[5:])["method"] == "notifications/progress"
    # The stream is closed; the cancellation reaches the upstream soon after.
    for _ in range(50):
        if cancelled() > before:
            break
        time.sleep(0.1)
    assert cancelled() > before, "closing the stream did not cancel the upstream call"
