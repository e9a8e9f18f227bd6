//! A gateway served on a loopback port, real fake upstreams from the
//! testkit, and a small raw MCP client that shows every message on the wire.

use futures::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use switchboard_gateway::Gateway;

/// Path of a testkit binary; `cargo test --workspace` builds them next to
/// the test executable's directory.
pub fn testkit_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p switchboard-testkit` first",
        path.display()
    );
    path
}

/// A config entry for a fake stdio upstream.
pub fn fake_stdio(name: &str, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\ncommand = [\"{}\", \"--transport\", \"stdio\", \"--name\", \"{name}\"]\n{extra}\n",
        testkit_bin("switchboard-fake-upstream").display()
    )
}

/// A fake upstream serving Streamable HTTP on a free loopback port; killed on drop.
pub struct HttpUpstream {
    pub url: String,
    child: std::process::Child,
}

impl HttpUpstream {
    pub async fn start(name: &str) -> Self {
        Self::spawn("switchboard-fake-upstream", &["--name", name]).await
    }

    /// A testkit server binary over Streamable HTTP, with `extra` arguments.
    pub async fn spawn(bin: &str, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(testkit_bin(bin))
            .args(["--transport", "http", "--listen", &listen])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(&listen).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            url: format!("http://{listen}/mcp"),
            child,
        }
    }

    pub fn config(&self, name: &str) -> String {
        format!("[[upstreams]]\nname = \"{name}\"\nurl = \"{}\"\n", self.url)
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct TestGateway {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestGateway {
    pub async fn start(toml: &str) -> Self {
        Self::start_with(toml, switchboard_gateway::Services::default()).await
    }

    /// Starts with a store and an audit writer.
    pub async fn start_with(toml: &str, services: switchboard_gateway::Services) -> Self {
        let mut config = switchboard_config::parse(toml, "test.toml").expect("valid test config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.server.listen = listener.local_addr().unwrap();
        let base = format!("http://{}", config.server.listen);
        let gateway = Gateway::start_with(config, services).expect("gateway starts");
        gateway.settle(Duration::from_secs(30)).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(gateway.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            base,
            stop: Some(tx),
            served: Some(served),
        }
    }

    pub fn url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// `GET /health`, parsed.
    pub async fn health(&self) -> Value {
        let text = reqwest::get(format!("{}/health", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// `GET /metrics` (no token), as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.served.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), h).await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Everything one POST produced.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Every JSON-RPC message in the body (one for JSON, several for SSE).
    pub messages: Vec<Value>,
    /// SSE event ids, in order (empty for JSON).
    pub event_ids: Vec<String>,
    pub raw: String,
}

impl Reply {
    /// The response message (the one with a `result` or `error`).
    pub fn response(&self) -> &Value {
        self.messages
            .iter()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| panic!("no response in {:?}", self.raw))
    }

    pub fn result(&self) -> &Value {
        let r = self.response();
        r.get("result")
            .unwrap_or_else(|| panic!("error instead of result: {r}"))
    }

    pub fn error_code(&self) -> i64 {
        self.response()["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not an error: {}", self.raw))
    }
}

pub fn parse_sse(text: &str) -> (Vec<Value>, Vec<String>) {
    let mut messages = vec![];
    let mut ids = vec![];
    for event in text.split("\n\n") {
        let mut data = String::new();
        for line in event.lines() {
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if let Some(id) = line.strip_prefix("id:") {
                ids.push(id.trim().to_owned());
            }
        }
        if let Ok(v) = serde_json::from_str(&data) {
            messages.push(v);
        }
    }
    (messages, ids)
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    pub version: String,
    /// Sent as `Authorization: Bearer ...` when set.
    pub bearer: Option<String>,
}

impl Client {
    pub fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            session: None,
            version: "2025-11-25".into(),
            bearer: None,
        }
    }

    /// Opens a session presenting `bearer`.
    pub async fn connect_as(url: &str, bearer: &str) -> Self {
        let mut c = Self::new(url);
        c.bearer = Some(bearer.to_owned());
        c.open("2025-11-25", json!({})).await;
        c
    }

    /// Opens a session with the given client capabilities.
    pub async fn connect(url: &str, version: &str, capabilities: Value) -> Self {
        let mut c = Self::new(url);
        c.open(version, capabilities).await;
        c
    }

    async fn open(&mut self, version: &str, capabilities: Value) {
        let c = self;
        c.version = version.into();
        let r = c
            .post(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": capabilities,
                "clientInfo": {"name": "it", "version": "0"}}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "initialize: {}", r.raw);
        c.session = Some(r.headers["mcp-session-id"].to_str().unwrap().to_owned());
        let r = c
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }

    pub fn builder(&self, body: String) -> reqwest::RequestBuilder {
        let mut b = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(t) = &self.bearer {
            b = b.bearer_auth(t);
        }
        if let Some(s) = &self.session {
            b = b
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", &self.version);
        }
        b
    }

    pub async fn post(&self, body: &Value) -> Reply {
        reply(self.builder(body.to_string()).send().await.unwrap()).await
    }

    pub async fn call(&self, id: i64, method: &str, params: Value) -> Reply {
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    pub async fn tool(&self, id: i64, name: &str, args: Value) -> Reply {
        self.call(id, "tools/call", json!({"name": name, "arguments": args}))
            .await
    }

    pub async fn tool_names(&self) -> Vec<String> {
        let r = self.call(900, "tools/list", json!({})).await;
        r.result()["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Opens the GET stream and returns a receiver of its messages.
    pub async fn listen(&self) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
        let resp = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", self.session.as_deref().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    for m in parse_sse(&event).0 {
                        if tx.send(m).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        rx
    }
}

pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let raw = resp.text().await.unwrap();
    let sse = headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let (messages, event_ids) = if sse {
        parse_sse(&raw)
    } else {
        (
            serde_json::from_str::<Value>(&raw)
                .map(|v| match v {
                    Value::Array(items) => items,
                    other => vec![other],
                })
                .unwrap_or_default(),
            vec![],
        )
    };
    Reply {
        status,
        headers,
        messages,
        event_ids,
        raw,
    }
}

/// Polls `check` until it holds or `tries` run out (20 ms apart).
pub async fn eventually<F, Fut>(tries: usize, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
