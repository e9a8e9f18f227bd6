//! Streamable HTTP upstreams against `switchboard-fake-upstream --transport http`.

use std::time::Duration;

use serde_json::json;
use switchboard_config::{HttpConfig, TransportConfig, UpstreamConfig};
use switchboard_upstream::{CallError, CallOptions, EventKind, Status};
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn http(name: &str, url: String) -> UpstreamConfig {
    config(
        name,
        TransportConfig::StreamableHttp(HttpConfig {
            url,
            headers: vec![],
            oauth: None,
        }),
    )
}

#[tokio::test]
async fn http_handshake_and_requests_work_over_sse_responses() {
    let server = FakeHttp::start(&["--name", "fake-h"]).await;
    let (up, _events) = started(http("h", server.url())).await;
    let Status::Ready(info) = up.status() else {
        panic!("not ready")
    };
    assert_eq!(info.server_info["name"], "fake-h");
    let text = call_text(
        &up,
        "echo",
        json!({"text": "over http"}),
        CallOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(text, "over http");
    let tools = up.list_all("tools/list", "tools").await.unwrap();
    assert!(tools.iter().any(|t| t["name"] == "echo"));
    up.shutdown().await;
}

#[tokio::test]
async fn http_json_responses_work_too() {
    let server = FakeHttp::start(&["--json-response"]).await;
    let (up, _events) = started(http("h", server.url())).await;
    let text = call_text(&up, "echo", json!({"text": "json"}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(text, "json");
    up.shutdown().await;
}

#[tokio::test]
async fn http_related_messages_on_the_post_stream_go_to_the_request_context() {
    let server = FakeHttp::start(&[]).await;
    let (up, _events) = started(http("h", server.url())).await;
    let ctx = Recorder::answering(sampling_answer("sampled"));
    let params = json!({"name": "slow", "arguments": {"ms": 400}, "_meta": {"progressToken": 7}});
    up.request("tools/call", Some(raw(params)), with_context(ctx.clone()))
        .await
        .unwrap();
    assert!(
        ctx.methods().iter().any(|m| m == "notifications/progress"),
        "{:?}",
        ctx.methods()
    );
    let text = call_text(&up, "sample", json!({}), with_context(ctx.clone()))
        .await
        .unwrap();
    assert_eq!(text, "sampled");
    assert_eq!(
        *ctx.requests.lock(),
        vec!["sampling/createMessage".to_owned()]
    );
    up.shutdown().await;
}

#[tokio::test]
async fn http_cancel_returns_cancelled_and_tells_the_upstream() {
    let server = FakeHttp::start(&[]).await;
    let (up, _events) = started(http("h", server.url())).await;
    let cancel = CancellationToken::new();
    let options = CallOptions {
        cancel: cancel.clone(),
        ..Default::default()
    };
    let call = tokio::spawn({
        let up = up.clone();
        async move { call_text(&up, "slow", json!({"ms": 30_000}), options).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, CallError::Cancelled { .. }), "{err:?}");
    wait_cancelled_count(&up, 1).await;
    up.shutdown().await;
}

#[tokio::test]
async fn http_list_changed_arrives_on_the_events_channel() {
    let server = FakeHttp::start(&[]).await;
    let (up, mut events) = started(http("h", server.url())).await;
    call_text(
        &up,
        "add_tool",
        json!({"name": "fresh"}),
        CallOptions::default(),
    )
    .await
    .unwrap();
    wait_event(&mut events, "list_changed", |k| {
        matches!(k, EventKind::Notification(n) if n.method == "notifications/tools/list_changed")
    })
    .await;
    up.shutdown().await;
}

#[tokio::test]
async fn http_an_oversized_response_fails_with_too_large() {
    let server = FakeHttp::start(&[]).await;
    let mut cfg = http("h", server.url());
    cfg.max_response_bytes = 64 * 1024;
    let (up, _events) = started(cfg).await;
    let err = call_text(
        &up,
        "big",
        json!({"bytes": 500_000}),
        CallOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::TooLarge { .. }), "{err:?}");
    let text = call_text(&up, "echo", json!({"text": "ok"}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(text, "ok");
    up.shutdown().await;
}

#[tokio::test]
async fn http_a_forgotten_session_is_reinitialised_transparently() {
    let mut server = FakeHttp::start(&[]).await;
    let (up, mut events) = started(http("h", server.url())).await;
    wait_event(&mut events, "first ready", |k| {
        matches!(k, EventKind::Ready(_))
    })
    .await;
    server.restart().await;
    let text = call_text(
        &up,
        "echo",
        json!({"text": "again"}),
        CallOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(text, "again");
    wait_event(&mut events, "ready after re-initialisation", |k| {
        matches!(k, EventKind::Ready(_))
    })
    .await;
    up.shutdown().await;
}

#[tokio::test]
async fn http_an_unreachable_server_is_down_with_the_cause() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let up = switchboard_upstream::Upstream::start(
        http("h", format!("http://127.0.0.1:{port}/mcp")),
        tx,
    );
    let err = up.ready(SOON).await.unwrap_err();
    assert!(matches!(err, CallError::Unavailable { .. }), "{err:?}");
    up.shutdown().await;
}
