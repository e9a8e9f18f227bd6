//! Just enough of MCP over Streamable HTTP to open sessions and judge calls, in both eras: the
//! session-based 2025-06-18 rules, and stateless 2026-07-28 requests.
//!
//! Rules followed (mcp-protocol.md §1.1): every POST accepts both `application/json` and
//! `text/event-stream`; `initialize` yields an optional `Mcp-Session-Id` that is echoed on every
//! later request together with `MCP-Protocol-Version`; `notifications/initialized` is answered
//! 202; a request's response is either one JSON object or an SSE stream whose events carry
//! JSON-RPC messages, the response being the one whose `id` matches.
//!
//! Stateless (2026-07-28) requests skip `initialize`: each carries the revision, the client's
//! capabilities and info in `params._meta`, and the routing headers `MCP-Protocol-Version`,
//! `Mcp-Method` and `Mcp-Name` that intermediaries route on without reading the body.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::http::{Conn, Endpoint};
use crate::sse::SseParser;

/// The protocol version the bench asks for: the newest session-based ("legacy era") revision
/// that requires `MCP-Protocol-Version` on every request.
pub(crate) const PROTOCOL_VERSION: &str = "2025-06-18";

/// The stateless revision, sent in `_meta` and `MCP-Protocol-Version` by stateless clients.
pub(crate) const STATELESS_VERSION: &str = "2026-07-28";

const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
const ACCEPT_BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
const TOOLS_CALL: HeaderValue = HeaderValue::from_static("tools/call");

/// How long to wait for the rest of an SSE stream after the response was found. Servers SHOULD
/// close the stream after the response; one that does not costs a reconnect, not a failed call.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Which protocol era the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Era {
    /// `initialize`, `Mcp-Session-Id`, 2025-06-18.
    Legacy,
    /// No `initialize`: every request says 2026-07-28 on its own.
    Stateless,
}

/// What a call sends and what counts as its correct answer.
#[derive(Debug, Clone)]
pub(crate) struct CallSpec {
    /// The tool name as a JSON string literal, ready to splice into bodies.
    tool_json: String,
    /// The tool name as the `Mcp-Name` routing header of stateless requests.
    tool_header: HeaderValue,
    expect: Expect,
}

/// The text a correct `tools/call` result carries as its first content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The `text` argument sent (`hello-<id>`), so a swapped response is caught.
    Echo,
    /// A fixed text, for tools that return one whatever they are sent.
    Text(String),
}

impl CallSpec {
    /// Calls `tool` and expects `expect` back.
    pub(crate) fn new(tool: &str, expect: Expect) -> Result<Self> {
        Ok(Self {
            tool_json: serde_json::to_string(tool)?,
            tool_header: HeaderValue::from_str(tool)
                .with_context(|| format!("tool name {tool:?} cannot be sent as Mcp-Name"))?,
            expect,
        })
    }

    /// Builds the `tools/call` request with id `id` in `session`'s era; returns it with the
    /// `text` argument it sends.
    pub(crate) fn request(
        &self,
        endpoint: &Endpoint,
        session: &Session,
        id: u64,
    ) -> (Request<Full<Bytes>>, String) {
        let text = format!("hello-{id}");
        let req = if session.stateless {
            let mut req = session.post(endpoint, stateless_call_body(id, &self.tool_json, &text));
            let headers = req.headers_mut();
            headers.insert(MCP_METHOD, TOOLS_CALL);
            headers.insert(MCP_NAME, self.tool_header.clone());
            req
        } else {
            session.post(endpoint, call_body(id, &self.tool_json, &text))
        };
        (req, text)
    }

    /// Checks that `message` is the correct answer to a call that sent `sent`.
    pub(crate) fn check(&self, message: &[u8], sent: &str) -> Result<(), Failure> {
        match &self.expect {
            Expect::Echo => check_echo(message, sent),
            Expect::Text(text) => check_echo(message, text),
        }
    }
}

/// An open MCP session: the headers every request after `initialize` must carry.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// `None` for servers that run without sessions (they send no `Mcp-Session-Id`).
    id: Option<HeaderValue>,
    /// The version the server negotiated, which may differ from the one asked for.
    version: HeaderValue,
    /// A 2026-07-28 "session": no id, every request self-describing.
    stateless: bool,
}

impl Session {
    /// The stand-in for a session in the stateless era: nothing to open or close.
    pub(crate) fn stateless() -> Self {
        Self {
            id: None,
            version: HeaderValue::from_static(STATELESS_VERSION),
            stateless: true,
        }
    }

    /// Builds a POST of `body` carrying this session's headers.
    pub(crate) fn post(&self, endpoint: &Endpoint, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = endpoint.request(Method::POST, body);
        let headers = req.headers_mut();
        headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(header::ACCEPT, ACCEPT_BOTH);
        headers.insert(PROTOCOL_VERSION_HEADER, self.version.clone());
        if let Some(id) = &self.id {
            headers.insert(SESSION_ID, id.clone());
        }
        req
    }
}

/// Why a call did not count as a success; the report shows a count per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Connect, write or read failed (connection refused, reset, closed mid-body).
    Transport,
    /// No complete response within the per-call timeout.
    Timeout,
    /// A status other than 200 for a request.
    HttpStatus(u16),
    /// A 200 whose body holds no parsable JSON-RPC response with our id.
    Protocol,
    /// A JSON-RPC `error`, or a tool result flagged `isError`.
    RpcError,
    /// A result whose `content[0].text` is not the text sent.
    Mismatch,
}

/// The JSON-RPC response found in a reply body.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The matching JSON-RPC message, as bytes (a whole JSON body or one SSE event's data).
    pub(crate) message: Bytes,
    /// Whether the body was read to its end, so the connection can carry the next request.
    pub(crate) reusable: bool,
}

/// The fields of a JSON-RPC message the bench looks at; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

impl Envelope<'_> {
    /// Whether this is the response (not a request or notification) to request `id`.
    fn answers(&self, id: &str) -> bool {
        self.id.is_some_and(|raw| raw.get() == id)
            && (self.result.is_some() || self.error.is_some())
    }
}

#[derive(Deserialize)]
struct CallToolResult<'a> {
    #[serde(borrow, default)]
    content: Vec<Content<'a>>,
    #[serde(rename = "isError", default)]
    is_error: bool,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InitializeResult<'a> {
    #[serde(rename = "protocolVersion", borrow)]
    protocol_version: Cow<'a, str>,
}

/// Reads a request's response body and returns the JSON-RPC response whose id is `id` (the id
/// as it appears in JSON, e.g. `7`).
pub(crate) async fn read_reply(resp: Response<Incoming>, id: &str) -> Result<Reply, Failure> {
    let status = resp.status();
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        // Read the error body so that a quick error does not leave half a response on the wire;
        // the worker replaces the connection after any non-200 anyway.
        drain(&mut body).await;
        return Err(Failure::HttpStatus(status.as_u16()));
    }
    if !is_sse {
        let bytes = body
            .collect()
            .await
            .map_err(|_| Failure::Transport)?
            .to_bytes();
        let envelope: Envelope<'_> =
            serde_json::from_slice(&bytes).map_err(|_| Failure::Protocol)?;
        if !envelope.answers(id) {
            return Err(Failure::Protocol);
        }
        return Ok(Reply {
            message: bytes,
            reusable: true,
        });
    }

    let mut parser = SseParser::default();
    let mut found: Option<Bytes> = None;
    let mut pick = |data: &[u8]| {
        let hit = serde_json::from_slice::<Envelope<'_>>(data).is_ok_and(|e| e.answers(id));
        if hit {
            found = Some(Bytes::copy_from_slice(data));
        }
        hit
    };
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    if parser.push(chunk, &mut pick) {
                        break;
                    }
                }
            }
            Some(Err(_)) => return Err(Failure::Transport),
            None => {
                parser.finish(&mut pick);
                break;
            }
        }
    }
    let Some(message) = found else {
        return Err(Failure::Protocol);
    };
    let reusable = body.is_end_stream() || drain(&mut body).await;
    Ok(Reply { message, reusable })
}

/// Reads the rest of a body for a short while; returns whether it ended (connection reusable).
async fn drain(body: &mut Incoming) -> bool {
    let rest = async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                return false;
            }
        }
        true
    };
    let ended = tokio::time::timeout(DRAIN_GRACE, rest)
        .await
        .unwrap_or(false);
    ended || body.is_end_stream()
}

/// Checks that `message` is a successful `tools/call` result echoing `expected`.
pub(crate) fn check_echo(message: &[u8], expected: &str) -> Result<(), Failure> {
    let envelope: Envelope<'_> = serde_json::from_slice(message).map_err(|_| Failure::Protocol)?;
    let result = match (envelope.result, envelope.error) {
        (Some(result), None) => result,
        _ => return Err(Failure::RpcError),
    };
    let result: CallToolResult<'_> =
        serde_json::from_str(result.get()).map_err(|_| Failure::Protocol)?;
    if result.is_error {
        return Err(Failure::RpcError);
    }
    match result.content.first().and_then(|c| c.text.as_deref()) {
        Some(text) if text == expected => Ok(()),
        _ => Err(Failure::Mismatch),
    }
}

/// Builds the body of a `tools/call` request; `tool` is already a JSON string literal.
pub(crate) fn call_body(id: u64, tool_json: &str, text: &str) -> Bytes {
    // `text` is `hello-<n>`: no character needs escaping, so formatting beats a serializer.
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":{tool_json},"arguments":{{"text":"{text}"}}}}}}"#
    ))
}

/// Builds the body of a stateless (2026-07-28) `tools/call`: the same call, with the revision,
/// capabilities and client info in `params._meta`.
pub(crate) fn stateless_call_body(id: u64, tool_json: &str, text: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":{tool_json},"arguments":{{"text":"{text}"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{STATELESS_VERSION}","io.modelcontextprotocol/clientCapabilities":{{}},"io.modelcontextprotocol/clientInfo":{{"name":"switchboard-bench","version":"{}"}}}}}}}}"#,
        env!("CARGO_PKG_VERSION")
    ))
}

/// Opens a session in `era`: for the legacy era `initialize`, then `notifications/initialized`;
/// for the stateless era nothing goes on the wire.
pub(crate) async fn open(conn: &mut Conn, endpoint: &Endpoint, era: Era) -> Result<Session> {
    match era {
        Era::Legacy => initialize(conn, endpoint).await,
        Era::Stateless => Ok(Session::stateless()),
    }
}

/// Opens a session: `initialize`, then `notifications/initialized`.
pub(crate) async fn initialize(conn: &mut Conn, endpoint: &Endpoint) -> Result<Session> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"switchboard-bench","version":"{}"}}}}}}"#,
        env!("CARGO_PKG_VERSION")
    );
    let mut req = endpoint.request(Method::POST, Bytes::from(body));
    let headers = req.headers_mut();
    headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
    headers.insert(header::ACCEPT, ACCEPT_BOTH);
    let resp = conn.send(req).await.context("initialize")?;
    let session_id = resp.headers().get(SESSION_ID).cloned();
    let reply = read_reply(resp, "0")
        .await
        .map_err(|f| anyhow::anyhow!("initialize at {} failed: {f:?}", endpoint.url()))?;
    let envelope: Envelope<'_> = serde_json::from_slice(&reply.message)?;
    let Some(result) = envelope.result else {
        bail!(
            "initialize at {} returned an error: {}",
            endpoint.url(),
            envelope.error.map_or("", |e| e.get())
        );
    };
    let init: InitializeResult<'_> =
        serde_json::from_str(result.get()).context("initialize result has no protocolVersion")?;
    let session = Session {
        id: session_id,
        version: HeaderValue::from_str(&init.protocol_version)?,
        stateless: false,
    };
    if !reply.reusable {
        *conn = Conn::open(endpoint).await?;
    }

    let notification =
        Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let resp = conn
        .send(session.post(endpoint, notification))
        .await
        .context("notifications/initialized")?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if !status.is_success() {
        bail!(
            "notifications/initialized at {} answered {status}",
            endpoint.url()
        );
    }
    Ok(session)
}

/// Ends a session with `DELETE`, best effort: servers may answer 405, and the bench only does
/// this so that sessions from one run do not pile up in the server during the next.
pub(crate) async fn close(conn: &mut Conn, endpoint: &Endpoint, session: &Session) {
    let Some(id) = &session.id else { return };
    let mut req = endpoint.request(Method::DELETE, Bytes::new());
    req.headers_mut().insert(SESSION_ID, id.clone());
    req.headers_mut()
        .insert(PROTOCOL_VERSION_HEADER, session.version.clone());
    if let Ok(resp) = conn.send(req).await {
        let _ = resp.into_body().collect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_result_is_accepted() {
        let msg = br#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"hello-3"}],"isError":false}}"#;
        assert_eq!(check_echo(msg, "hello-3"), Ok(()));
        assert_eq!(check_echo(msg, "hello-4"), Err(Failure::Mismatch));
    }

    #[test]
    fn errors_are_rejected() {
        let rpc = br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"no"}}"#;
        assert_eq!(check_echo(rpc, "x"), Err(Failure::RpcError));
        let tool = br#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"x"}],"isError":true}}"#;
        assert_eq!(check_echo(tool, "x"), Err(Failure::RpcError));
        let empty = br#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#;
        assert_eq!(check_echo(empty, "x"), Err(Failure::Mismatch));
    }

    #[test]
    fn only_the_response_with_our_id_answers() {
        let parse = |s: &'static str| serde_json::from_str::<Envelope<'static>>(s).unwrap();
        assert!(parse(r#"{"id":7,"result":{}}"#).answers("7"));
        assert!(!parse(r#"{"id":"7","result":{}}"#).answers("7"));
        assert!(!parse(r#"{"id":7,"method":"ping"}"#).answers("7"));
        assert!(!parse(r#"{"method":"notifications/progress"}"#).answers("7"));
    }

    #[test]
    fn call_body_is_valid_json() {
        let body = call_body(42, r#""echo""#, "hello-42");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["params"]["arguments"]["text"], "hello-42");
        assert_eq!(v["params"]["name"], "echo");
        assert_eq!(v["id"], 42);
    }

    #[tokio::test]
    async fn stateless_calls_carry_meta_and_routing_headers() {
        let endpoint = Endpoint::resolve("http://127.0.0.1:9/mcp").await.unwrap();
        let spec = CallSpec::new("echo", Expect::Echo).unwrap();
        let (req, text) = spec.request(&endpoint, &Session::stateless(), 5);
        assert_eq!(text, "hello-5");
        let h = req.headers();
        assert_eq!(h["mcp-protocol-version"], STATELESS_VERSION);
        assert_eq!(h["mcp-method"], "tools/call");
        assert_eq!(h["mcp-name"], "echo");
        assert!(h.get("mcp-session-id").is_none());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let meta = &v["params"]["_meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            STATELESS_VERSION
        );
        assert!(meta["io.modelcontextprotocol/clientCapabilities"].is_object());
        assert_eq!(
            meta["io.modelcontextprotocol/clientInfo"]["name"],
            "switchboard-bench"
        );
        assert_eq!(v["params"]["arguments"]["text"], "hello-5");
    }

    #[tokio::test]
    async fn legacy_calls_carry_no_routing_headers() {
        let endpoint = Endpoint::resolve("http://127.0.0.1:9/mcp").await.unwrap();
        let session = Session {
            id: Some(HeaderValue::from_static("s1")),
            version: HeaderValue::from_static(PROTOCOL_VERSION),
            stateless: false,
        };
        let spec = CallSpec::new("echo", Expect::Echo).unwrap();
        let (req, _) = spec.request(&endpoint, &session, 5);
        let h = req.headers();
        assert_eq!(h["mcp-session-id"], "s1");
        assert!(h.get("mcp-method").is_none() && h.get("mcp-name").is_none());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["params"].get("_meta").is_none());
    }

    #[test]
    fn fixed_text_calls_accept_only_that_text() {
        let spec = CallSpec::new("t", Expect::Text("fixed".to_owned())).unwrap();
        let ok = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","content":[{"type":"text","text":"fixed"}]}}"#;
        assert_eq!(spec.check(ok, "hello-1"), Ok(()));
        let echo =
            br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello-1"}]}}"#;
        assert_eq!(spec.check(echo, "hello-1"), Err(Failure::Mismatch));
    }

    #[tokio::test]
    async fn bearer_goes_on_every_request() {
        let endpoint = Endpoint::resolve("http://127.0.0.1:9/mcp")
            .await
            .unwrap()
            .with_bearer("sb_k")
            .unwrap();
        let req = Session::stateless().post(&endpoint, Bytes::new());
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer sb_k");
        let plain = Endpoint::resolve("http://127.0.0.1:9/mcp").await.unwrap();
        assert!(plain
            .request(Method::GET, Bytes::new())
            .headers()
            .get(header::AUTHORIZATION)
            .is_none());
    }
}
