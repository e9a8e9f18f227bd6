//! A minimal MCP client over Streamable HTTP, for `tools --url` and `call`.
//! It speaks to a running gateway the way any MCP client would.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    next_id: i64,
}

const PROTOCOL: &str = "2025-06-18";

impl Client {
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let mut c = Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()?,
            url: url.to_owned(),
            session: None,
            next_id: 1,
        };
        c.request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": { "name": "switchboard-cli", "version": env!("CARGO_PKG_VERSION") }
            }),
        )
        .await
        .with_context(|| format!("cannot initialize an MCP session at {url}"))?;
        c.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(c)
    }

    async fn post(&mut self, body: Value) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .body(serde_json::to_vec(&body)?);
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        if let Some(s) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.session = Some(s.to_owned());
        }
        Ok(resp)
    }

    /// Sends a request and returns its result, or the JSON-RPC error as an error.
    pub(crate) async fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let resp = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        let status = resp.status();
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = resp.text().await?;
        let message = if sse {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .find(|m| m.get("id") == Some(&json!(id)))
                .ok_or_else(|| anyhow!("the event stream ended without a response"))?
        } else {
            serde_json::from_str::<Value>(&text).with_context(|| {
                format!(
                    "HTTP {status}: not a JSON-RPC response: {}",
                    text.chars().take(200).collect::<String>()
                )
            })?
        };
        if let Some(e) = message.get("error") {
            bail!(
                "{} (code {})",
                e.get("message").and_then(Value::as_str).unwrap_or("error"),
                e.get("code").unwrap_or(&Value::Null)
            );
        }
        message
            .get("result")
            .cloned()
            .ok_or_else(|| anyhow!("response has no result"))
    }

    pub(crate) async fn close(mut self) {
        if let Some(s) = self.session.take() {
            let _ = self
                .http
                .delete(&self.url)
                .header("mcp-session-id", s)
                .send()
                .await;
        }
    }
}
