//! `pool = "per_session"`: a process per downstream session, capped, reaped
//! when idle, ended with its session. Process counts are checked by the
//! `churn` test binary; these check behaviour by pid.

use serde_json::json;
use std::time::Duration;

use crate::harness::{eventually, testkit_bin, Client, TestGateway};

/// A fake stdio upstream entry; `FAKE_UPSTREAM_BIN` overrides the binary
/// built next to this test.
fn fake(name: &str, extra: &str) -> String {
    let bin = std::env::var_os("FAKE_UPSTREAM_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| testkit_bin("switchboard-fake-upstream"));
    format!(
        "[[upstreams]]\nname = \"{name}\"\ncommand = [\"{}\", \"--transport\", \"stdio\", \"--name\", \"{name}\"]\n{extra}\n",
        bin.display()
    )
}

fn text(r: &crate::harness::Reply) -> String {
    r.result()["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {}", r.raw))
        .to_owned()
}

/// Whether a process with this pid exists (zombies count: not reaped yet).
fn alive(pid: &str) -> bool {
    std::fs::metadata(format!("/proc/{pid}")).is_ok()
}

async fn delete(client: &Client) {
    let status = client
        .http
        .delete(&client.url)
        .header("mcp-session-id", client.session.as_deref().unwrap())
        .header("mcp-protocol-version", &client.version)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "DELETE answered {status}");
}

#[tokio::test]
async fn each_session_gets_its_own_process_and_state_while_shared_ones_share() {
    let toml = format!(
        "{}{}",
        fake("solo", "pool = \"per_session\""),
        fake("shared", "")
    );
    let gw = TestGateway::start(&toml).await;
    let a = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let b = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    // The catalog comes from the template before any session process runs.
    assert!(a
        .tool_names()
        .await
        .contains(&"solo__call_count".to_owned()));

    for n in 1..=3 {
        let r = a.tool(n, "solo__call_count", json!({})).await;
        assert_eq!(text(&r), n.to_string(), "a's own process counts a's calls");
    }
    let r = b.tool(1, "solo__call_count", json!({})).await;
    assert_eq!(text(&r), "1", "b's process has seen none of a's calls");
    let (pa, pb) = (
        text(&a.tool(5, "solo__pid", json!({})).await),
        text(&b.tool(5, "solo__pid", json!({})).await),
    );
    assert_ne!(pa, pb);
    let health = gw.health().await;
    assert_eq!(health["upstreams"][0]["session_processes"], 2, "{health}");
    assert_eq!(health["upstreams"][1]["session_processes"], 0, "{health}");
    let (sa, sb) = (
        text(&a.tool(6, "shared__pid", json!({})).await),
        text(&b.tool(6, "shared__pid", json!({})).await),
    );
    assert_eq!(
        sa, sb,
        "a shared upstream serves every session from one process"
    );
    assert!(![&pa, &pb].contains(&&sa));
    gw.stop().await;
    assert!(
        !alive(&pa) && !alive(&pb) && !alive(&sa),
        "shutdown ends all"
    );
}

#[tokio::test]
async fn sessions_past_max_instances_are_refused_as_overloaded_until_one_ends() {
    let gw = TestGateway::start(&fake(
        "solo",
        "pool = \"per_session\"\nmax_instances = 2\nretries = 0",
    ))
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(&gw.url(), "2025-11-25", json!({})).await);
    }
    text(&clients[0].tool(1, "solo__pid", json!({})).await);
    text(&clients[1].tool(1, "solo__pid", json!({})).await);
    let refused = clients[2].tool(1, "solo__pid", json!({})).await;
    assert_eq!(refused.error_code(), -32013, "{}", refused.raw);
    let message = refused.response()["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"solo\"") && message.contains("max_instances of 2"),
        "{message}"
    );
    assert_eq!(refused.response()["error"]["data"]["upstream"], "solo");

    delete(&clients[0]).await;
    let r = clients[2].tool(2, "solo__pid", json!({})).await;
    text(&r);
    gw.stop().await;
}

#[tokio::test]
async fn ending_a_session_stops_its_process() {
    let gw = TestGateway::start(&fake("solo", "pool = \"per_session\"")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let pid = text(&c.tool(1, "solo__pid", json!({})).await);
    assert!(alive(&pid));
    delete(&c).await;
    assert!(
        eventually(500, || async { !alive(&pid) }).await,
        "process {pid} outlived its session"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_session_process_is_reaped_and_replaced_on_the_next_call() {
    let gw = TestGateway::start(&fake(
        "solo",
        "pool = \"per_session\"\nidle_timeout = \"1s\"",
    ))
    .await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let first = text(&c.tool(1, "solo__pid", json!({})).await);
    assert!(
        eventually(1000, || async { !alive(&first) }).await,
        "idle process {first} was not reaped"
    );
    let second = text(&c.tool(2, "solo__pid", json!({})).await);
    assert_ne!(first, second);
    gw.stop().await;
}

#[tokio::test]
async fn a_session_process_notifies_its_own_session_only() {
    let gw = TestGateway::start(&fake("solo", "pool = \"per_session\"")).await;
    let a = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let b = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    for c in [&a, &b] {
        c.call(1, "resources/subscribe", json!({"uri": "fake://static"}))
            .await
            .result();
    }
    let mut a_events = a.listen().await;
    let mut b_events = b.listen().await;
    a.tool(2, "solo__touch", json!({"uri": "fake://static"}))
        .await
        .result();
    let got = tokio::time::timeout(Duration::from_secs(10), a_events.recv())
        .await
        .expect("no update for the session whose process sent it")
        .unwrap();
    assert_eq!(got["method"], "notifications/resources/updated");
    // b is subscribed too, but to its own process, which changed nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b_events.recv())
            .await
            .is_err(),
        "another session's process update reached b"
    );
    gw.stop().await;
}

#[tokio::test]
async fn stateless_requests_are_served_by_the_template_and_start_no_process() {
    let gw = TestGateway::start(&fake("solo", "pool = \"per_session\"")).await;
    let http = reqwest::Client::new();
    let mut pids = Vec::new();
    for id in 1..=2 {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "solo__pid", "arguments": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}});
        let resp = http
            .post(gw.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "solo__pid")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let r = crate::harness::reply(resp).await;
        pids.push(text(&r));
    }
    assert_eq!(pids[0], pids[1], "both served by the one template process");
    let health = gw.health().await;
    assert_eq!(health["upstreams"][0]["session_processes"], 0, "{health}");
    gw.stop().await;
}
