//! Every response the HTTP face serves carries the security headers:
//! answers, refusals from every layer, health, metrics and event streams.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde_json::json;
use std::time::Duration;
use switchboard_gateway::Gateway;
use tower::ServiceExt;

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"0"}}}"#;

fn gateway(extra: &str) -> Gateway {
    let config = switchboard_config::parse(
        &format!("[server]\nmax_body_bytes = 512\n{extra}"),
        "headers.toml",
    )
    .unwrap();
    Gateway::start(config).unwrap()
}

async fn send(
    gw: &Gateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:8080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = gw
        .router()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    // The head is enough: a stream's body never ends, and is dropped here.
    (response.status(), response.headers().clone())
}

/// What the row is, method, path, request headers, body, expected status.
type Row<'a> = (
    &'a str,
    Method,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a str,
    StatusCode,
);

fn assert_secure(what: &str, h: &HeaderMap, tls: bool) {
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ] {
        assert_eq!(
            h.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{what}: {name} in {h:?}"
        );
    }
    assert_eq!(
        h.contains_key("strict-transport-security"),
        tls,
        "{what}: HSTS only over TLS, {h:?}"
    );
}

#[tokio::test]
async fn every_route_and_refusal_carries_the_security_headers() {
    let gw = gateway("response_mode = \"sse\"");
    let json = ("content-type", "application/json");
    let both = ("accept", "application/json, text/event-stream");
    // A session, for the rows that need one.
    let (status, h) = send(&gw, Method::POST, "/mcp", &[json, both], INIT).await;
    assert_eq!(status, StatusCode::OK);
    let sid = h["mcp-session-id"].to_str().unwrap().to_owned();
    let session = ("mcp-session-id", sid.as_str());
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string();
    let big = "x".repeat(1000);

    let table: &[Row] = &[
        (
            "initialize",
            Method::POST,
            "/mcp",
            &[json, both],
            INIT,
            StatusCode::OK,
        ),
        (
            "ping as SSE",
            Method::POST,
            "/mcp",
            &[json, both, session],
            &ping,
            StatusCode::OK,
        ),
        (
            "GET stream",
            Method::GET,
            "/mcp",
            &[("accept", "text/event-stream"), session],
            "",
            StatusCode::OK,
        ),
        (
            "no session",
            Method::POST,
            "/mcp",
            &[json, both],
            &ping,
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown session",
            Method::POST,
            "/mcp",
            &[json, both, ("mcp-session-id", "nope")],
            &ping,
            StatusCode::NOT_FOUND,
        ),
        (
            "not JSON",
            Method::POST,
            "/mcp",
            &[json, both],
            "{",
            StatusCode::BAD_REQUEST,
        ),
        (
            "too large",
            Method::POST,
            "/mcp",
            &[json, both],
            &big,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "wrong type",
            Method::POST,
            "/mcp",
            &[("content-type", "text/plain"), both],
            INIT,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "bad Origin",
            Method::POST,
            "/mcp",
            &[json, both, ("origin", "http://evil.example")],
            INIT,
            StatusCode::FORBIDDEN,
        ),
        (
            "method not allowed",
            Method::PUT,
            "/mcp",
            &[],
            "",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "unknown upstream",
            Method::POST,
            "/servers/nope/mcp",
            &[json, both],
            INIT,
            StatusCode::NOT_FOUND,
        ),
        ("legacy SSE", Method::GET, "/sse", &[], "", StatusCode::OK),
        (
            "legacy POST without session",
            Method::POST,
            "/messages",
            &[json],
            &ping,
            StatusCode::BAD_REQUEST,
        ),
        (
            "delete",
            Method::DELETE,
            "/mcp",
            &[session],
            "",
            StatusCode::OK,
        ),
        ("health", Method::GET, "/health", &[], "", StatusCode::OK),
        ("live", Method::GET, "/health/live", &[], "", StatusCode::OK),
        (
            "ready",
            Method::GET,
            "/health/ready",
            &[],
            "",
            StatusCode::OK,
        ),
        ("metrics", Method::GET, "/metrics", &[], "", StatusCode::OK),
        (
            "fallback",
            Method::GET,
            "/nowhere",
            &[],
            "",
            StatusCode::NOT_FOUND,
        ),
    ];
    for (what, method, path, headers, body, expect) in table {
        let (status, h) = send(&gw, method.clone(), path, headers, body).await;
        assert_eq!(status, *expect, "{what}");
        assert_secure(what, &h, false);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_metrics_token_refusal_carries_them_too() {
    let gw = gateway("metrics_token = \"s3cret\"");
    let (status, h) = send(&gw, Method::GET, "/metrics", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_secure("metrics 401", &h, false);
    tokio::time::timeout(Duration::from_secs(10), gw.shutdown())
        .await
        .unwrap();
}
