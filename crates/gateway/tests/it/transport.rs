use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn a_2025_03_26_batch_gets_an_array_of_responses() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-03-26", json!({})).await;
    let r = c
        .post(&json!([
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/whatever"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "a__echo", "arguments": {"text": "b"}}},
            {"jsonrpc": "1.0", "id": 3, "method": "ping"}
        ]))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.messages.len(), 3, "{}", r.raw);
    let by_id = |id: i64| {
        r.messages
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no {id}"))
    };
    assert_eq!(by_id(1)["result"], json!({}));
    assert_eq!(by_id(2)["result"]["content"][0]["text"], "b");
    assert_eq!(by_id(3)["error"]["code"], -32600);
    gw.stop().await;
}

#[tokio::test]
async fn version_negotiation_answers_each_legacy_revision_with_itself() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    for v in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let c = Client::new(&gw.url());
        let r = c.call(0, "initialize", json!({"protocolVersion": v, "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}})).await;
        assert_eq!(r.result()["protocolVersion"], v);
    }
    let c = Client::new(&gw.url());
    let r = c.call(0, "initialize", json!({"protocolVersion": "2099-01-01", "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}})).await;
    assert_eq!(r.result()["protocolVersion"], "2025-11-25");
    gw.stop().await;
}

#[tokio::test]
async fn delete_ends_a_session_and_later_requests_get_404() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let del = c
        .http
        .delete(gw.url())
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let r = c.call(1, "ping", json!({})).await;
    assert_eq!(r.status, 404);
    gw.stop().await;
}

#[tokio::test]
async fn a_lost_sse_response_can_be_resumed_with_last_event_id() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c
        .call(
            1,
            "tools/call",
            json!({"name": "a__slow", "arguments": {"ms": 350}, "_meta": {"progressToken": 1}}),
        )
        .await;
    assert!(r.event_ids.len() >= 2, "{}", r.raw);
    let resumed = c
        .http
        .get(gw.url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .header("last-event-id", &r.event_ids[0])
        .send()
        .await
        .unwrap();
    let replay = reply(resumed).await;
    assert_eq!(
        replay.event_ids,
        r.event_ids[1..].to_vec(),
        "replay must hold exactly the events after the named one"
    );
    assert_eq!(replay.response()["id"], 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_legacy_sse_client_gets_the_endpoint_then_responses_on_the_stream() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/sse", gw.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut endpoint = None;
    let mut messages: Vec<Value> = vec![];
    let mut sent = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline && !messages.iter().any(|m| m["id"] == 2) {
        let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(20), body.next()).await
        else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.starts_with("event: endpoint") {
                endpoint = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .map(str::to_owned);
            } else {
                messages.extend(parse_sse(&event).0);
            }
        }
        if let (Some(ep), false) = (&endpoint, sent) {
            sent = true;
            let post = |body: Value| {
                http.post(format!("{}{ep}", gw.base))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
            };
            let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "old", "version": "0"}}});
            assert_eq!(post(init).await.unwrap().status(), 202);
            assert_eq!(
                post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                    .await
                    .unwrap()
                    .status(),
                202
            );
            let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "a__echo", "arguments": {"text": "old school"}}});
            assert_eq!(post(call).await.unwrap().status(), 202);
        }
    }
    assert!(endpoint.unwrap().starts_with("/messages?sessionId="));
    assert_eq!(
        messages.iter().find(|m| m["id"] == 1).unwrap()["result"]["protocolVersion"],
        "2024-11-05"
    );
    assert_eq!(
        messages.iter().find(|m| m["id"] == 2).unwrap()["result"]["content"][0]["text"],
        "old school"
    );
    gw.stop().await;
}

#[tokio::test]
async fn stdio_mode_serves_one_session_over_a_pipe() {
    let config = switchboard_config::parse(&fake_stdio("a", ""), "test.toml").unwrap();
    let gateway = switchboard_gateway::Gateway::start(config).expect("gateway starts");
    gateway.settle(Duration::from_secs(30)).await;
    let (client_end, server_end) = tokio::io::duplex(1 << 16);
    let (server_read, server_write) = tokio::io::split(server_end);
    let served = tokio::spawn(gateway.serve_stdio(server_read, server_write));
    let (read, mut write) = tokio::io::split(client_end);
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let lines = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pipe", "version": "0"}}}).to_string(),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        "this is not json".to_owned(),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "a__echo", "arguments": {"text": "piped"}}}).to_string(),
    ];
    for l in &lines {
        write.write_all(format!("{l}\n").as_bytes()).await.unwrap();
    }
    let mut reader = tokio::io::BufReader::new(read).lines();
    let mut got = vec![];
    while got.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(20), reader.next_line())
            .await
            .expect("no answer")
            .unwrap()
            .unwrap();
        got.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert!(got
        .iter()
        .any(|m| m["id"] == 1 && m["result"]["protocolVersion"] == "2025-06-18"));
    assert!(got
        .iter()
        .any(|m| m["id"].is_null() && m["error"]["code"] == -32700));
    assert!(got
        .iter()
        .any(|m| m["id"] == 2 && m["result"]["content"][0]["text"] == "piped"));
    write.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("stdio mode did not end with its input")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_crashed_stdio_upstream_is_restarted_and_serves_again() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c.tool(1, "a__crash", json!({})).await;
    assert!(r.response().get("error").is_some(), "{}", r.raw);
    let back = eventually(1500, || {
        let c = c.clone();
        async move {
            let r = c.tool(2, "a__echo", json!({"text": "back"})).await;
            r.response()
                .get("result")
                .is_some_and(|x| x["content"][0]["text"] == "back")
        }
    })
    .await;
    assert!(back, "upstream never came back after its crash");
    gw.stop().await;
}

#[tokio::test]
async fn sse_response_mode_streams_every_answer_with_a_priming_event() {
    let gw =
        TestGateway::start(&(fake_stdio("a", "") + "[server]\nresponse_mode = \"sse\"\n")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c.tool(1, "a__echo", json!({"text": "streamed"})).await;
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(
        r.raw.starts_with("id: ") && r.raw.contains("retry: "),
        "no priming event: {}",
        r.raw
    );
    assert_eq!(r.result()["content"][0]["text"], "streamed");
    let old = Client::connect(&gw.url(), "2025-06-18", json!({})).await;
    let r = old.tool(2, "a__echo", json!({"text": "x"})).await;
    assert!(
        !r.raw.contains("retry: "),
        "no priming before 2025-11-25: {}",
        r.raw
    );
    gw.stop().await;
}
