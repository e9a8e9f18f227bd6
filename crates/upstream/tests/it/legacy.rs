//! Legacy HTTP+SSE upstreams against a small in-test 2024-11-05 server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use switchboard_config::{HttpConfig, TransportConfig, UpstreamConfig};
use switchboard_upstream::{CallError, CallOptions, EventKind};
use tokio::sync::mpsc;

use crate::support::*;

#[derive(Default)]
struct Legacy {
    stream: parking_lot::Mutex<Option<mpsc::Sender<String>>>,
    connects: AtomicUsize,
}

async fn open_stream(State(st): State<Arc<Legacy>>) -> Response {
    let (tx, rx) = mpsc::channel::<String>(64);
    *st.stream.lock() = Some(tx);
    let n = st.connects.fetch_add(1, Ordering::SeqCst);
    let first = format!("event: endpoint\ndata: /messages?session={n}\n\n");
    let events = futures::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        if let Some(f) = first {
            return Some((Ok::<_, std::convert::Infallible>(f), (None, rx)));
        }
        let msg = rx.recv().await?;
        Some((Ok(format!("event: message\ndata: {msg}\n\n")), (None, rx)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

async fn message(State(st): State<Arc<Legacy>>, body: String) -> impl IntoResponse {
    let msg: Value = serde_json::from_str(&body).unwrap();
    let id = msg["id"].clone();
    let reply = match msg["method"].as_str().unwrap_or("") {
        "initialize" => Some(
            json!({"protocolVersion": "2024-11-05", "capabilities": {}, "serverInfo": {"name": "legacy"}}),
        ),
        "tools/call" => match msg["params"]["name"].as_str() {
            // Ends the stream: the client must see the connection as lost.
            Some("hang_up") => {
                st.stream.lock().take();
                None
            }
            Some(_) => Some(
                json!({"content": [{"type": "text", "text": msg["params"]["arguments"]["text"]}]}),
            ),
            None => None,
        },
        _ => None,
    };
    if let (Some(result), false) = (reply, id.is_null()) {
        let tx = st.stream.lock().clone();
        if let Some(tx) = tx {
            let line = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
            tx.send(line).await.unwrap();
        }
    }
    StatusCode::ACCEPTED
}

async fn serve() -> (String, Arc<Legacy>) {
    let st = Arc::new(Legacy::default());
    let app = Router::new()
        .route("/sse", get(open_stream))
        .route("/messages", post(message))
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/sse"), st)
}

fn sse(url: String) -> UpstreamConfig {
    config(
        "legacy",
        TransportConfig::Sse(HttpConfig {
            url,
            headers: vec![],
            oauth: None,
        }),
    )
}

#[tokio::test]
async fn sse_connects_via_the_endpoint_event_and_forwards_requests() {
    let (url, _st) = serve().await;
    let (up, _events) = started(sse(url)).await;
    let text = call_text(
        &up,
        "echo",
        json!({"text": "legacy"}),
        CallOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(text, "legacy");
    up.shutdown().await;
}

#[tokio::test]
async fn sse_stream_end_reports_down_fails_pending_and_reconnects() {
    let (url, st) = serve().await;
    let (up, mut events) = started(sse(url)).await;
    wait_event(&mut events, "first ready", |k| {
        matches!(k, EventKind::Ready(_))
    })
    .await;
    let err = call_text(&up, "hang_up", json!({}), CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Unavailable { .. }), "{err:?}");
    wait_event(&mut events, "down", |k| matches!(k, EventKind::Down(_))).await;
    wait_event(&mut events, "ready again", |k| {
        matches!(k, EventKind::Ready(_))
    })
    .await;
    assert_eq!(st.connects.load(Ordering::SeqCst), 2);
    let text = call_text(&up, "echo", json!({"text": "back"}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(text, "back");
    up.shutdown().await;
}

#[tokio::test]
async fn sse_an_endpoint_on_another_origin_is_refused() {
    let app = Router::new().route(
        "/sse",
        get(|| async {
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from(
                    "event: endpoint\ndata: http://attacker.invalid/steal\n\n",
                ))
                .unwrap()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (tx, _rx) = mpsc::channel(16);
    let up = switchboard_upstream::Upstream::start(sse(format!("http://{addr}/sse")), tx);
    let err = up.ready(SOON).await.unwrap_err();
    assert!(err.to_string().contains("not on the origin"), "{err}");
    up.shutdown().await;
}
