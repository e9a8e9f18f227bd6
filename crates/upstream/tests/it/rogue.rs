//! Streamable HTTP upstreams that misbehave or use the rarer paths, served by
//! a small in-test server.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use switchboard_config::{HttpConfig, TransportConfig};
use switchboard_upstream::{CallError, CallOptions};

use crate::support::*;

#[derive(Default)]
struct Rogue {
    /// The request id whose response waits for a resuming GET.
    parked: parking_lot::Mutex<Option<Value>>,
    /// The `Last-Event-ID` the resuming GET carried.
    resumed_from: parking_lot::Mutex<Option<String>>,
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header("mcp-session-id", "rogue-session")
        .body(body.into())
        .unwrap()
}

async fn on_post(st: Arc<Rogue>, body: String) -> Response {
    let msg: Value = serde_json::from_str(&body).unwrap();
    let id = msg["id"].clone();
    match msg["method"].as_str().unwrap_or("") {
        "initialize" => reply(
            StatusCode::OK,
            "application/json",
            json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "rogue"}}}).to_string(),
        ),
        "tools/call" => match msg["params"]["name"].as_str().unwrap_or("") {
            "html500" => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/html",
                "<html><body>Internal Server Error</body></html>",
            ),
            "resume" => {
                // A priming event with an id, then the stream closes early.
                *st.parked.lock() = Some(id);
                reply(StatusCode::OK, "text/event-stream", "id: ev-1\nretry: 10\ndata: \n\n")
            }
            _ => reply(StatusCode::BAD_REQUEST, "text/plain", "unknown tool"),
        },
        _ => reply(StatusCode::ACCEPTED, "text/plain", ""),
    }
}

async fn on_get(st: Arc<Rogue>, headers: HeaderMap) -> Response {
    let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) else {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "");
    };
    *st.resumed_from.lock() = Some(last.to_owned());
    let Some(id) = st.parked.lock().take() else {
        return reply(StatusCode::NOT_FOUND, "text/plain", "");
    };
    let response = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "resumed"}]}});
    reply(
        StatusCode::OK,
        "text/event-stream",
        format!("id: ev-2\ndata: {response}\n\n"),
    )
}

async fn serve() -> (String, Arc<Rogue>) {
    let st = Arc::new(Rogue::default());
    let (p, g) = (st.clone(), st.clone());
    let app = Router::new().route(
        "/mcp",
        post(move |body: String| on_post(p.clone(), body))
            .get(move |headers: HeaderMap| on_get(g.clone(), headers)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/mcp"), st)
}

fn rogue(url: String) -> switchboard_config::UpstreamConfig {
    config(
        "rogue",
        TransportConfig::StreamableHttp(HttpConfig {
            url,
            headers: vec![],
            oauth: None,
        }),
    )
}

#[tokio::test]
async fn http_a_500_with_html_is_a_protocol_error_quoting_status_and_body() {
    let (url, _st) = serve().await;
    let (up, _events) = started(rogue(url)).await;
    let err = call_text(&up, "html500", json!({}), CallOptions::default())
        .await
        .unwrap_err();
    let CallError::Protocol { detail, .. } = &err else {
        panic!("expected Protocol, got {err:?}")
    };
    assert!(detail.contains("500"), "{detail}");
    assert!(detail.contains("Internal Server Error"), "{detail}");
    up.shutdown().await;
}

#[tokio::test]
async fn http_a_stream_that_ends_early_is_resumed_with_last_event_id() {
    let (url, st) = serve().await;
    let (up, _events) = started(rogue(url)).await;
    let text = call_text(&up, "resume", json!({}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(text, "resumed");
    assert_eq!(st.resumed_from.lock().as_deref(), Some("ev-1"));
    up.shutdown().await;
}
