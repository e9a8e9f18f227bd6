use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn progress_reaches_the_caller_with_its_own_token_on_an_sse_response() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c
        .call(7, "tools/call", json!({"name": "a__slow", "arguments": {"ms": 450}, "_meta": {"progressToken": "tok-7"}}))
        .await;
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let progress: Vec<&Value> = r
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert!(!progress.is_empty(), "no progress relayed: {}", r.raw);
    assert!(progress
        .iter()
        .all(|p| p["params"]["progressToken"] == "tok-7"));
    assert!(r.result().get("content").is_some());
    gw.stop().await;
}

#[tokio::test]
async fn a_call_without_related_messages_is_answered_with_plain_json() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c.tool(1, "a__echo", json!({"text": "x"})).await;
    assert_eq!(r.headers["content-type"], "application/json");
    gw.stop().await;
}

#[tokio::test]
async fn cancellation_from_the_client_reaches_the_upstream() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { c.tool(41, "a__slow", json!({"ms": 20000})).await })
    };
    // Give the call time to reach the upstream, then cancel it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c
        .post(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41, "reason": "user"}}))
        .await;
    assert_eq!(r.status, 202);
    let answered = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("cancelled call still hangs")
        .unwrap();
    assert_eq!(answered.error_code(), -32012);
    let seen = eventually(250, || {
        let c = c.clone();
        async move {
            let r = c.tool(2, "a__cancelled_count", json!({})).await;
            r.result()["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.trim() != "0")
        }
    })
    .await;
    assert!(seen, "upstream never saw notifications/cancelled");
    gw.stop().await;
}

#[tokio::test]
async fn sampling_from_an_upstream_is_relayed_to_the_calling_client_and_back() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({"sampling": {}})).await;
    let resp = c
        .builder(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "a__sample", "arguments": {"prompt": "2+2?"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut answered = false;
    let mut final_text = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while final_text.is_none() && tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(20), body.next()).await
        else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for m in parse_sse(&event).0 {
                if m["method"] == "sampling/createMessage" {
                    assert!(m["params"]["messages"].to_string().contains("2+2?"), "{m}");
                    let answer = json!({"jsonrpc": "2.0", "id": m["id"], "result": {
                        "role": "assistant", "content": {"type": "text", "text": "four"}, "model": "test-model"}});
                    assert_eq!(c.post(&answer).await.status, 202);
                    answered = true;
                } else if m["id"] == 5 {
                    final_text = Some(m["result"].to_string());
                }
            }
        }
    }
    assert!(answered, "no sampling request reached the client");
    assert!(final_text.expect("no final response").contains("four"));
    gw.stop().await;
}

#[tokio::test]
async fn a_server_request_for_an_undeclared_capability_fails_without_reaching_the_client() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c.tool(5, "a__elicit", json!({"message": "name?"})).await;
    assert!(
        !r.messages
            .iter()
            .any(|m| m["method"] == "elicitation/create"),
        "{}",
        r.raw
    );
    let text = r.response().to_string();
    assert!(text.contains("isError") || text.contains("error"), "{text}");
    gw.stop().await;
}

#[tokio::test]
async fn list_changed_from_an_upstream_reaches_open_sessions_and_the_new_tool_appears() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let mut events = c.listen().await;
    c.tool(1, "a__add_tool", json!({"name": "fresh"}))
        .await
        .result();
    let note = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.recv().await {
                Some(m) if m["method"] == "notifications/tools/list_changed" => return m,
                Some(_) => continue,
                None => panic!("GET stream ended"),
            }
        }
    })
    .await
    .expect("no list_changed on the GET stream");
    assert!(note.get("id").is_none());
    assert!(c.tool_names().await.contains(&"a__fresh".to_owned()));
    gw.stop().await;
}

#[tokio::test]
async fn resource_updates_reach_subscribed_sessions_only() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let sub = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let other = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    sub.call(1, "resources/subscribe", json!({"uri": "fake://static"}))
        .await
        .result();
    let mut sub_events = sub.listen().await;
    let mut other_events = other.listen().await;
    other
        .tool(2, "a__touch", json!({"uri": "fake://static"}))
        .await
        .result();
    let got = tokio::time::timeout(Duration::from_secs(10), sub_events.recv())
        .await
        .expect("no update")
        .unwrap();
    assert_eq!(got["method"], "notifications/resources/updated");
    assert_eq!(got["params"]["uri"], "fake://static");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other_events.recv())
            .await
            .is_err(),
        "unsubscribed session got the update"
    );
    gw.stop().await;
}

#[tokio::test]
async fn log_messages_during_a_call_follow_the_session_level() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c
        .tool(
            1,
            "a__log",
            json!({"level": "info", "message": "hello log"}),
        )
        .await;
    assert!(
        r.messages
            .iter()
            .any(|m| m["method"] == "notifications/message"),
        "{}",
        r.raw
    );
    c.call(2, "logging/setLevel", json!({"level": "error"}))
        .await
        .result();
    let r = c
        .tool(3, "a__log", json!({"level": "info", "message": "quiet"}))
        .await;
    assert!(
        !r.messages
            .iter()
            .any(|m| m["method"] == "notifications/message"),
        "{}",
        r.raw
    );
    gw.stop().await;
}
