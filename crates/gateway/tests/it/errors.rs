//! Bad input: each malformed request gets exactly the error the table says,
//! and the session goes on working afterwards.

use serde_json::json;

use crate::harness::*;

struct Case {
    name: &'static str,
    content_type: &'static str,
    accept: &'static str,
    extra: &'static [(&'static str, &'static str)],
    with_session: bool,
    body: String,
    status: u16,
    /// JSON-RPC error code in the body, when the body is JSON-RPC.
    code: Option<i64>,
    /// Words the error message must contain.
    says: &'static str,
}

fn case(
    name: &'static str,
    body: impl Into<String>,
    status: u16,
    code: Option<i64>,
    says: &'static str,
) -> Case {
    Case {
        name,
        content_type: "application/json",
        accept: "application/json, text/event-stream",
        extra: &[],
        with_session: true,
        body: body.into(),
        status,
        code,
        says,
    }
}

#[tokio::test]
async fn malformed_requests_get_the_exact_error_and_the_session_survives() {
    let gw = TestGateway::start(
        &(fake_stdio("a", "resources = { deny = [\"nowhere://*\"] }")
            + "[server]\nmax_body_bytes = 2048\n"),
    )
    .await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let rpc = |id: i64, method: &str, params: serde_json::Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
    };
    let cases = vec![
        Case {
            content_type: "text/plain",
            ..case(
                "wrong content type",
                rpc(1, "ping", json!({})),
                415,
                Some(-32600),
                "Content-Type must be application/json",
            )
        },
        Case {
            accept: "text/html",
            ..case(
                "unacceptable accept",
                rpc(1, "ping", json!({})),
                406,
                Some(-32600),
                "Accept must include",
            )
        },
        case(
            "body over the limit",
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}",
                "a".repeat(4000)
            ),
            413,
            Some(-32600),
            "2048-byte limit",
        ),
        case(
            "not json",
            "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ",
            400,
            Some(-32700),
            "parse error",
        ),
        case(
            "not json-rpc 2.0",
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            400,
            Some(-32600),
            "\"jsonrpc\" must be \"2.0\"",
        ),
        case(
            "null id",
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            400,
            Some(-32600),
            "must not be null",
        ),
        case(
            "params not an object",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
            400,
            Some(-32600),
            "\"params\" must be an object",
        ),
        Case {
            with_session: false,
            ..case(
                "missing session",
                rpc(1, "ping", json!({})),
                400,
                Some(-32600),
                "missing Mcp-Session-Id",
            )
        },
        Case {
            extra: &[("mcp-session-id", "not-a-session")],
            with_session: false,
            ..case(
                "unknown session",
                rpc(1, "ping", json!({})),
                404,
                Some(-32600),
                "session not found",
            )
        },
        Case {
            extra: &[("mcp-protocol-version", "1999-01-01")],
            ..case(
                "unsupported protocol version",
                rpc(1, "ping", json!({})),
                400,
                Some(-32600),
                "unsupported MCP-Protocol-Version",
            )
        },
        case(
            "batch outside 2025-03-26",
            format!("[{}]", rpc(1, "ping", json!({}))),
            400,
            Some(-32600),
            "batches are part of protocol revision 2025-03-26",
        ),
        case(
            "unknown method",
            rpc(1, "tools/destroy", json!({})),
            200,
            Some(-32601),
            "method not found: tools/destroy",
        ),
        case(
            "unknown tool",
            rpc(1, "tools/call", json!({"name": "a__nope"})),
            200,
            Some(-32602),
            "unknown tool: a__nope",
        ),
        case(
            "tool without name",
            rpc(1, "tools/call", json!({"arguments": {}})),
            200,
            Some(-32602),
            "missing \"name\"",
        ),
        case(
            "unknown prompt",
            rpc(1, "prompts/get", json!({"name": "zzz"})),
            200,
            Some(-32602),
            "unknown prompt: zzz",
        ),
        case(
            "resource the filter denies",
            rpc(1, "resources/read", json!({"uri": "nowhere://x"})),
            200,
            Some(-32002),
            "resource not found: nowhere://x",
        ),
        case(
            "invalid cursor",
            rpc(1, "tools/list", json!({"cursor": "abc"})),
            200,
            Some(-32602),
            "invalid cursor",
        ),
        case(
            "bad log level",
            rpc(1, "logging/setLevel", json!({"level": "loud"})),
            200,
            Some(-32602),
            "unknown log level",
        ),
        case(
            "second initialize",
            rpc(1, "initialize", json!({"capabilities": {}})),
            200,
            Some(-32602),
            "protocolVersion",
        ),
        Case {
            extra: &[("origin", "http://evil.example.com")],
            ..case(
                "foreign origin",
                rpc(1, "ping", json!({})),
                403,
                Some(-32600),
                "Origin",
            )
        },
        Case {
            extra: &[("host", "evil.example.com")],
            ..case(
                "foreign host",
                rpc(1, "ping", json!({})),
                403,
                Some(-32600),
                "Host",
            )
        },
    ];
    for case in &cases {
        let mut b = c
            .http
            .post(gw.url())
            .header("content-type", case.content_type)
            .header("accept", case.accept)
            .body(case.body.clone());
        if case.with_session {
            b = b.header("mcp-session-id", c.session.as_deref().unwrap());
        }
        for (k, v) in case.extra {
            b = b.header(*k, *v);
        }
        let r = reply(b.send().await.unwrap()).await;
        assert_eq!(r.status.as_u16(), case.status, "{}: {}", case.name, r.raw);
        if let Some(code) = case.code {
            assert_eq!(r.error_code(), code, "{}: {}", case.name, r.raw);
            let message = r.response()["error"]["message"]
                .as_str()
                .unwrap_or_default();
            assert!(
                message.contains(case.says),
                "{}: {message:?} should say {:?}",
                case.name,
                case.says
            );
        }
    }
    // Nothing above broke the session.
    assert_eq!(
        c.tool(99, "a__echo", json!({"text": "still here"}))
            .await
            .result()["content"][0]["text"],
        "still here"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_error_names_the_upstream_and_passes_its_error_through() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c.tool(1, "a__fail", json!({})).await;
    assert_eq!(r.error_code(), -32603);
    assert!(r.raw.contains("fake failure"), "{}", r.raw);
    let r = c.tool(2, "a__tool_error", json!({})).await;
    assert_eq!(r.result()["isError"], true);
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_result_over_its_limit_is_cut_off_with_a_clear_error() {
    let gw = TestGateway::start(&fake_stdio("a", "max_response_bytes = 4096")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c.tool(1, "a__big", json!({"bytes": 100000})).await;
    assert_eq!(r.error_code(), -32011, "{}", r.raw);
    assert!(
        r.raw.contains("\\\"a\\\"") || r.raw.contains("\"a\"") || r.raw.contains("upstream"),
        "{}",
        r.raw
    );
    assert_eq!(
        c.tool(2, "a__echo", json!({"text": "after"}))
            .await
            .result()["content"][0]["text"],
        "after"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after_and_a_json_rpc_error() {
    let gw = TestGateway::start(
        &(fake_stdio("a", "")
            + "[server]\nrate_limit_per_minute = 3\nrate_limit_loopback = true\n"),
    )
    .await;
    // initialize and notifications/initialized take two of the three tokens.
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    assert_eq!(c.call(1, "ping", json!({})).await.status, 200);
    let r = c.call(2, "ping", json!({})).await;
    assert_eq!(r.status, 429, "{}", r.raw);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.error_code(), -32014);
    assert!(
        r.raw.contains("rate limit of 3 requests per minute"),
        "{}",
        r.raw
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"rejected_requests_total{reason="rate_limited"} 1"#),
        "{m}"
    );
    gw.stop().await;
}
