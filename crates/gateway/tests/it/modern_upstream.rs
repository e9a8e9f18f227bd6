//! Upstreams that speak only the stateless revision (2026-07-28), behind
//! the gateway: the fixture with `--era modern`. The gateway learns the era
//! with `server/discover` (over stdio too, where no header can say it) and
//! calls such a server statelessly, for clients of either era.

use serde_json::{json, Value};

use crate::harness::{testkit_bin, Client, HttpUpstream, TestGateway};

const MODERN: &str = "2026-07-28";

/// A config entry for the conformance fixture over stdio, in `era`.
fn fixture_stdio(name: &str, era: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\nprefix = \"never\"\ncommand = [\"{}\", \"--transport\", \"stdio\", \"--era\", \"{era}\"]\n",
        testkit_bin("switchboard-fixture").display()
    )
}

/// Sends one stateless request to the gateway.
async fn stateless(gw: &TestGateway, id: i64, method: &str, params: Value) -> Value {
    stateless_at(&gw.url(), id, method, params).await
}

/// Sends one stateless request to `url`: `_meta` in the params and the
/// routing headers, no session.
async fn stateless_at(url: &str, id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "0"},
    });
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method);
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        req = req.header("mcp-name", name);
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let r = crate::harness::reply(req.body(body.to_string()).send().await.unwrap()).await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{method}: {}", r.raw);
    r.response().clone()
}

#[tokio::test]
async fn a_modern_only_stdio_upstream_serves_legacy_clients() {
    let gw = TestGateway::start(&fixture_stdio("modern", "modern")).await;
    let health = gw.health().await;
    let client = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let names = client.tool_names().await;
    assert!(
        names.iter().any(|n| n == "test_simple_text"),
        "{names:?} (health: {health})"
    );
    let r = client.tool(1, "test_simple_text", json!({})).await;
    assert_eq!(
        r.result()["content"][0]["text"],
        "This is a simple text response for testing.",
        "{}",
        r.raw
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_modern_only_stdio_upstream_serves_stateless_clients() {
    let gw = TestGateway::start(&fixture_stdio("modern", "modern")).await;
    let list = stateless(&gw, 1, "tools/list", json!({})).await;
    let tools = list["result"]["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tools.iter().any(|t| t["name"] == "test_simple_text"),
        "{list}"
    );
    let call = stateless(
        &gw,
        2,
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    assert_eq!(call["result"]["resultType"], "complete", "{call}");
    assert_eq!(
        call["result"]["content"][0]["text"], "This is a simple text response for testing.",
        "{call}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn legacy_and_dual_era_stdio_upstreams_keep_their_sessions() {
    // The `server/discover` probe must not cost a legacy server its
    // connection, and a dual-era server is driven in the legacy era.
    let config = format!(
        "{}{}",
        fixture_stdio("legacy", "legacy").replace("prefix = \"never\"", "prefix = \"always\""),
        fixture_stdio("dual", "dual").replace("prefix = \"never\"", "prefix = \"always\"")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let names = client.tool_names().await;
    for upstream in ["legacy", "dual"] {
        let tool = names
            .iter()
            .find(|n| n.starts_with(upstream) && n.ends_with("test_simple_text"))
            .unwrap_or_else(|| panic!("no {upstream} tool in {names:?}"));
        let r = client.tool(1, tool, json!({})).await;
        assert_eq!(
            r.result()["content"][0]["text"],
            "This is a simple text response for testing.",
            "{}",
            r.raw
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_modern_upstreams_list_change_reaches_legacy_clients() {
    let fixture = fixture_http("modern").await;
    let gw = TestGateway::start(&format!(
        "[[upstreams]]\nname = \"modern\"\nprefix = \"never\"\nurl = \"{}\"\n",
        fixture.url
    ))
    .await;
    let client = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    assert!(!client
        .tool_names()
        .await
        .iter()
        .any(|n| n == "test_added_1"));
    let mut stream = client.listen().await;
    // The change is made at the fixture directly, by a stateless client of
    // its own: the gateway can only learn of it on its listen stream.
    let added = stateless_at(
        &fixture.url,
        1,
        "tools/call",
        json!({"name": "test_add_tool", "arguments": {}}),
    )
    .await;
    assert_eq!(
        added["result"]["content"][0]["text"], "test_added_1",
        "{added}"
    );
    let heard = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(m) = stream.recv().await {
            if m["method"] == "notifications/tools/list_changed" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(heard, Ok(true), "no tools/list_changed reached the client");
    let names = client.tool_names().await;
    assert!(names.iter().any(|n| n == "test_added_1"), "{names:?}");
    let r = client.tool(2, "test_added_1", json!({})).await;
    assert_eq!(
        r.result()["content"][0]["text"],
        "added tool 1",
        "{}",
        r.raw
    );
    gw.stop().await;
}

/// The fixture over Streamable HTTP in `era`, on a free loopback port.
async fn fixture_http(era: &str) -> HttpUpstream {
    HttpUpstream::spawn("switchboard-fixture", &["--era", era]).await
}
