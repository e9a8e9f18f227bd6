//! The `http` fuzz target's input format and driver, shared with the replay
//! test (`fuzz_regressions.rs`): a saved crash input runs the same way with
//! or without the fuzzer.
//!
//! An input is a loose HTTP request, readable and editable by hand:
//!
//! ```text
//! POST /mcp
//! content-type: application/json
//! mcp-session-id: {session}
//!
//! {"jsonrpc":"2.0","id":1,"method":"tools/list"}
//! ```
//!
//! The first line is the method and the path, then `name: value` header
//! lines up to an empty line, then the body. `{session}` (Streamable HTTP)
//! and `{legacy}` (HTTP+SSE) in the path or a header value become the ids of
//! sessions opened for this input, so the fuzzer reaches the code behind a
//! session without having to guess a random id.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use http_body_util::{BodyExt, Limited};
use switchboard_gateway::Gateway;
use tower::ServiceExt;

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{"sampling":{},"roots":{"listChanged":true}},"clientInfo":{"name":"fuzz","version":"0"}}}"#;
/// Responses are read up to this; the gateway's own answers are far smaller.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// A gateway without upstreams and its router.
pub struct Driver {
    /// Shut down by the replay test; the fuzz target keeps it for good.
    #[allow(dead_code)]
    pub gateway: Gateway,
    router: Router,
}

struct Input {
    method: Method,
    path: String,
    headers: Vec<(HeaderName, String)>,
    body: Vec<u8>,
}

fn parse(data: &[u8]) -> Option<Input> {
    let split = |d: &'_ [u8]| -> (Vec<u8>, Vec<u8>) {
        match d.iter().position(|&b| b == b'\n') {
            Some(i) => (d[..i].to_vec(), d[i + 1..].to_vec()),
            None => (d.to_vec(), Vec::new()),
        }
    };
    let (first, mut rest) = split(data);
    let first = String::from_utf8(first).ok()?;
    let (method, path) = first.trim_end_matches('\r').split_once(' ')?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let mut headers = Vec::new();
    loop {
        if rest.is_empty() {
            break;
        }
        let (line, tail) = split(&rest);
        rest = tail;
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches('\r')
            .to_owned();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                headers.push((name, value.trim().to_owned()));
            }
        }
    }
    Some(Input {
        method,
        path: path.to_owned(),
        headers,
        body: rest,
    })
}

impl Driver {
    /// Starts the gateway; call inside a tokio runtime.
    pub fn new() -> Self {
        let config = switchboard_config::parse(
            "[server]\nmax_body_bytes = 65536\nmax_sessions = 64\n",
            "fuzz.toml",
        )
        .expect("the fuzz config is valid");
        let gateway = Gateway::start(config).expect("a gateway without upstreams starts");
        let router = gateway.router();
        Self { gateway, router }
    }

    async fn send(&self, request: Request<Body>) -> axum::response::Response {
        match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    async fn open_session(&self) -> Option<String> {
        let r = self
            .send(
                Request::post("/mcp")
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .body(Body::from(INIT))
                    .ok()?,
            )
            .await;
        let id = r.headers().get("mcp-session-id")?.to_str().ok()?.to_owned();
        let _ = self
            .send(
                Request::post("/mcp")
                    .header("content-type", "application/json")
                    .header("mcp-session-id", &id)
                    .body(Body::from(
                        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                    ))
                    .ok()?,
            )
            .await;
        Some(id)
    }

    /// Opens a legacy session; the session lives as long as the stream.
    async fn open_legacy(&self) -> Option<(String, Body)> {
        let r = self
            .send(Request::get("/sse").body(Body::empty()).ok()?)
            .await;
        let mut body = r.into_body();
        let frame = body.frame().await?.ok()?.into_data().ok()?;
        let text = String::from_utf8_lossy(&frame);
        let id = text.split("sessionId=").nth(1)?.lines().next()?.to_owned();
        Some((id, body))
    }

    /// Runs one input; panics when the gateway breaks an invariant.
    pub async fn run(&self, data: &[u8]) {
        let Some(input) = parse(data) else {
            return;
        };
        let session = self.open_session().await.unwrap_or_default();
        let legacy = self.open_legacy().await;
        let legacy_id = legacy.as_ref().map(|l| l.0.clone()).unwrap_or_default();
        let fill = |s: &str| {
            s.replace("{session}", &session)
                .replace("{legacy}", &legacy_id)
        };
        let mut request = Request::builder()
            .method(input.method)
            .uri(fill(&input.path));
        for (name, value) in &input.headers {
            if let Ok(v) = HeaderValue::from_str(&fill(value)) {
                request = request.header(name, v);
            }
        }
        // An unusable path or header is the client's problem, not a finding.
        let Ok(request) = request.body(Body::from(input.body)) else {
            return;
        };
        let response = self.send(request).await;
        let status = response.status();
        let headers = response.headers().clone();
        assert!(
            status != StatusCode::INTERNAL_SERVER_ERROR,
            "500 for {:?}",
            String::from_utf8_lossy(data)
        );
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "a response without the security headers"
        );
        let json = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        // Event streams are left unread: a stream may stay open for good.
        if json {
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            assert!(
                body.is_empty() || serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
                "a JSON response that is not JSON: {:?}",
                String::from_utf8_lossy(&body)
            );
        }
        if !session.is_empty() {
            let _ = self
                .send(
                    Request::delete("/mcp")
                        .header("mcp-session-id", &session)
                        .body(Body::empty())
                        .unwrap_or_default(),
                )
                .await;
        }
        // Dropping the legacy stream ends that session.
        drop(legacy);
    }
}
