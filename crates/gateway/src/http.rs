//! The HTTP face: Streamable HTTP (`/mcp`, `/servers/<name>/mcp`), the legacy
//! HTTP+SSE pair (`/sse` + `/messages`), and health endpoints.
//!
//! A request's response starts as soon as its first message exists: when that
//! message is the final response, the client gets plain JSON; when progress,
//! logs or a server→client request come first, the response becomes an SSE
//! stream. Clients pay for SSE only when there is something to stream.

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next as MwNext};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::join_all;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchboard_config::ResponseMode;
use switchboard_protocol::{decode, encode_error, version, Decoded, ErrorObject, Message};
use switchboard_telemetry::{Endpoint, RejectReason};
use tracing::Instrument;

use crate::catalog::RouteId;
use crate::dispatch;
use crate::origin;
use crate::outbound::{event_id, parse_event_id, priming_id, Next, Outbound};
use crate::session::{Session, Transport};
use crate::state::Shared;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";
/// Messages one request's stream may hold (progress floods drop the oldest).
const REQUEST_STREAM_CAPACITY: usize = 256;
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Reconnection delay suggested to clients in the priming event.
const SSE_RETRY_MS: u64 = 1000;

type App = Arc<Shared>;

pub(crate) fn router(shared: App) -> Router {
    let mcp = Router::new()
        .route(
            "/mcp",
            post(post_federated)
                .get(get_federated)
                .delete(delete_federated),
        )
        .route(
            "/servers/{name}/mcp",
            post(post_server).get(get_server).delete(delete_server),
        )
        .route("/sse", get(sse_federated))
        .route("/messages", post(messages_federated))
        .route("/servers/{name}/sse", get(sse_server))
        .route("/servers/{name}/messages", post(messages_server))
        // Layers run bottom-up: the guard (Host, Origin, per-IP limit)
        // before authentication.
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            crate::authn::authenticate,
        ))
        .route_layer(middleware::from_fn_with_state(shared.clone(), guard));
    let admin = crate::admin::router(shared.clone())
        .route_layer(middleware::from_fn_with_state(shared.clone(), guard));
    Router::new()
        .merge(mcp)
        .merge(admin)
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(protected_resource),
        )
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error_response(
                StatusCode::NOT_FOUND,
                RejectReason::Invalid,
                ErrorObject::invalid_request("no such endpoint; MCP is served at /mcp"),
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

/// RFC 9728 protected-resource metadata: where MCP clients learn which
/// authorization server issues tokens for this gateway.
async fn protected_resource(State(shared): State<App>, headers: HeaderMap) -> Response {
    let body = shared.auth.metadata(&headers);
    let mut r = json_response(StatusCode::OK, body.to_string().into_bytes());
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("max-age=300"),
    );
    r
}

/// Counts and times every HTTP request, and refusals by reason. The endpoint
/// label is a route template, never the raw path.
async fn observe(State(shared): State<App>, request: HttpRequest, next: MwNext) -> Response {
    let started = tokio::time::Instant::now();
    let method = request.method().clone();
    let endpoint = Endpoint::from_path(request.uri().path());
    let response = next.run(request).await;
    if let Some(reason) = response.extensions().get::<RejectReason>() {
        shared.metrics.record_rejected_request(*reason);
    }
    // For SSE this is the time to the response head, not the stream's life.
    shared
        .metrics
        .record_http_request(&method, endpoint, response.status(), started.elapsed());
    response
}

// === errors ===

/// A request refused at the HTTP level. MCP clients read the body of 4xx
/// answers as JSON-RPC, so every refusal says what is wrong in that form.
struct Refusal {
    status: StatusCode,
    reason: RejectReason,
    body: Vec<u8>,
}

impl Refusal {
    fn new(status: StatusCode, reason: RejectReason, error: ErrorObject) -> Self {
        Self {
            status,
            reason,
            body: encode_error(None, &error),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = json_response(self.status, self.body);
        // Read by the `observe` middleware, which counts refusals by reason.
        response.extensions_mut().insert(self.reason);
        response
    }
}

pub(crate) fn error_response(
    status: StatusCode,
    reason: RejectReason,
    error: ErrorObject,
) -> Response {
    Refusal::new(status, reason, error).into_response()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

// === guard ===

/// Refuses requests whose `Host` or `Origin` could come from a DNS
/// rebinding attack (403), before any MCP handling.
async fn guard(State(shared): State<App>, request: HttpRequest, next: MwNext) -> Response {
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !origin::host_allowed(&shared.server, host) {
            return error_response(
                StatusCode::FORBIDDEN,
                RejectReason::BadHost,
                ErrorObject::invalid_request(format!(
                    "Host {host:?} is not allowed; add it to server.allowed_hosts to serve it"
                )),
            );
        }
    }
    if let Some(o) = headers.get(header::ORIGIN) {
        let o = o.to_str().unwrap_or("");
        if !origin::origin_allowed(&shared.server, o) {
            return error_response(
                StatusCode::FORBIDDEN,
                RejectReason::BadOrigin,
                ErrorObject::invalid_request(format!(
                    "Origin {o:?} is not allowed; add it to server.allowed_origins to serve it"
                )),
            );
        }
    }
    if let (Some(limiter), Some(ConnectInfo(peer))) = (
        &shared.limiter,
        request
            .extensions()
            .get::<ConnectInfo<std::net::SocketAddr>>(),
    ) {
        if let Err(wait) = limiter.check(peer.ip()) {
            let secs = wait.as_secs().max(1);
            let mut r = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                RejectReason::RateLimited,
                ErrorObject::new(
                    switchboard_protocol::code::RATE_LIMITED,
                    format!(
                        "rate limit of {} requests per minute exceeded; retry in {secs}s",
                        shared.server.rate_limit_per_minute
                    ),
                )
                .with_data(json!({ "retryAfterSecs": secs })),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    next.run(request).await
}

// === routes ===

fn server_route(shared: &Shared, name: &str) -> Result<RouteId, Refusal> {
    shared.route_by_name(name).ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            RejectReason::Invalid,
            ErrorObject::invalid_request(format!("no upstream named {name:?}")),
        )
    })
}

async fn post_federated(State(s): State<App>, headers: HeaderMap, body: Body) -> Response {
    post_mcp(s, RouteId::Federated, headers, body).await
}
async fn get_federated(State(s): State<App>, headers: HeaderMap) -> Response {
    get_mcp(s, RouteId::Federated, headers)
}
async fn delete_federated(State(s): State<App>, headers: HeaderMap) -> Response {
    delete_mcp(s, RouteId::Federated, headers).await
}
async fn post_server(
    State(s): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match server_route(&s, &name) {
        Ok(route) => post_mcp(s, route, headers, body).await,
        Err(r) => r.into_response(),
    }
}
async fn get_server(
    State(s): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match server_route(&s, &name) {
        Ok(route) => get_mcp(s, route, headers),
        Err(r) => r.into_response(),
    }
}
async fn delete_server(
    State(s): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match server_route(&s, &name) {
        Ok(route) => delete_mcp(s, route, headers).await,
        Err(r) => r.into_response(),
    }
}

// === Streamable HTTP ===

struct Accepts {
    json: bool,
    sse: bool,
}

fn accepts(headers: &HeaderMap) -> Accepts {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Accepts {
            json: true,
            sse: true,
        };
    };
    let any = accept.contains("*/*");
    Accepts {
        json: any || accept.contains("application/json") || accept.contains("application/*"),
        sse: any || accept.contains("text/event-stream") || accept.contains("text/*"),
    }
}

fn is_json_content(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a body, refusing it as soon as it passes `limit`.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            RejectReason::BodyTooLarge,
            ErrorObject::invalid_request(format!(
                "request body exceeds the {limit}-byte limit (server.max_body_bytes)"
            )),
        )),
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            RejectReason::Invalid,
            ErrorObject::invalid_request(format!("could not read the request body: {e}")),
        )),
    }
}

/// Checks `Content-Type` and reads the body; shared by both POST endpoints.
async fn read_message_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Refusal> {
    if !is_json_content(headers) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RejectReason::Invalid,
            ErrorObject::invalid_request("Content-Type must be application/json"),
        ));
    }
    read_body(body, shared.server.max_body_bytes).await
}

fn decode_body(bytes: &[u8]) -> Result<Decoded, Refusal> {
    decode(bytes).map_err(|e| Refusal {
        status: StatusCode::BAD_REQUEST,
        reason: RejectReason::Invalid,
        body: encode_error(e.id(), &e.to_error_object()),
    })
}

/// Finds the session a request names, with the spec's status codes.
fn session_for(
    shared: &Shared,
    route: RouteId,
    headers: &HeaderMap,
) -> Result<Arc<Session>, Refusal> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            RejectReason::MissingSession,
            ErrorObject::invalid_request("missing Mcp-Session-Id header; send initialize first"),
        ));
    };
    match shared.sessions.get(id) {
        Some(s) if s.route == route && s.transport == Transport::StreamableHttp => Ok(s),
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            RejectReason::UnknownSession,
            ErrorObject::invalid_request(
                "session not found: it ended or expired; send initialize to start a new one",
            ),
        )),
    }
}

fn check_version_header(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.get(VERSION_HEADER) {
        None => Ok(()),
        Some(v) => match v.to_str().ok().and_then(version::supported) {
            Some(_) => Ok(()),
            None => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                RejectReason::UnsupportedVersion,
                ErrorObject::invalid_request(format!(
                    "unsupported MCP-Protocol-Version {:?}; supported: {}",
                    String::from_utf8_lossy(v.as_bytes()),
                    version::LEGACY_VERSIONS.join(", ")
                )),
            )),
        },
    }
}

async fn post_mcp(shared: App, route: RouteId, headers: HeaderMap, body: Body) -> Response {
    let accept = accepts(&headers);
    if !accept.json && !accept.sse {
        return error_response(
            StatusCode::NOT_ACCEPTABLE,
            RejectReason::Invalid,
            ErrorObject::invalid_request(
                "Accept must include application/json and text/event-stream",
            ),
        );
    }
    let bytes = match read_message_body(&shared, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let decoded = match decode_body(&bytes) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    // Legacy and stateless clients share this endpoint; the era is decided
    // per request.
    if crate::modern::is_modern_post(&headers, &decoded) {
        return crate::modern::post(shared, route, headers, decoded).await;
    }
    if let Err(r) = check_version_header(&headers) {
        return r.into_response();
    }
    if let Decoded::Single(Message::Request(r)) = &decoded {
        if r.method == "initialize" {
            let Decoded::Single(Message::Request(r)) = decoded else {
                unreachable!()
            };
            return initialize(shared, route, r).await;
        }
    }
    let session = match session_for(&shared, route, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    session.touch();
    match decoded {
        Decoded::Single(Message::Request(r)) => {
            let span = if switchboard_telemetry::exporting_traces() {
                tracing::info_span!("mcp.http", otel.kind = "server", http.method = "POST")
            } else {
                tracing::Span::none()
            };
            // A client's `traceparent` makes this request part of its trace.
            switchboard_telemetry::accept_remote_parent(&span, &headers);
            respond(shared, session, r, accept.sse, span).await
        }
        Decoded::Single(other) => {
            dispatch::handle_other(&shared, &session, other);
            StatusCode::ACCEPTED.into_response()
        }
        Decoded::Batch(items) => {
            if session.protocol_version() != version::BATCH_VERSION {
                return error_response(
                    StatusCode::BAD_REQUEST, RejectReason::Invalid,
                    ErrorObject::invalid_request(format!(
                        "JSON-RPC batches are part of protocol revision {} only; this session negotiated {}",
                        version::BATCH_VERSION,
                        session.protocol_version()
                    )),
                );
            }
            batch(shared, session, items).await
        }
    }
}

async fn initialize(
    shared: App,
    route: RouteId,
    request: switchboard_protocol::Request,
) -> Response {
    let session = Arc::new(Session::new(route, Transport::StreamableHttp));
    let body = dispatch::handle_request(&shared, &session, request, &session.standalone).await;
    if session.init().is_none() {
        return json_response(StatusCode::OK, body);
    }
    if let Err(e) = shared.add_session(session.clone()) {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            RejectReason::SessionLimit,
            e,
        );
    }
    let mut response = json_response(StatusCode::OK, body);
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    response
}

/// Runs one request and answers with JSON, or with SSE when related messages
/// come before the response.
async fn respond(
    shared: App,
    session: Arc<Session>,
    request: switchboard_protocol::Request,
    sse: bool,
    span: tracing::Span,
) -> Response {
    let stream = Arc::new(Outbound::new(REQUEST_STREAM_CAPACITY));
    {
        let (shared, session, stream) = (shared.clone(), session.clone(), stream.clone());
        // A task of its own: a legacy client's disconnect is not cancellation,
        // so the request runs to its end even if nobody reads the answer.
        shared.tasks.clone().spawn(
            async move {
                let body = dispatch::handle_request(&shared, &session, request, &stream).await;
                stream.finish(body);
            }
            .instrument(span),
        );
    }
    stream.wait_first().await;
    let stream_anyway = sse && shared.server.response_mode == ResponseMode::Sse;
    if let (Some(body), false) = (stream.single(), stream_anyway) {
        return json_response(StatusCode::OK, body.to_vec());
    }
    if !sse {
        // The client takes JSON only: skip related messages, send the response.
        let generation = stream.take_over();
        let mut cursor = 0;
        let mut last = None;
        while let Next::Event(e) = stream.next(&mut cursor, generation).await {
            last = Some(e.data);
        }
        return json_response(StatusCode::OK, last.map(|b| b.to_vec()).unwrap_or_default());
    }
    session.retain_stream(stream.clone());
    let generation = stream.take_over();
    let id = stream.id();
    let body = stream_body(stream, 0, generation, None, Format::Streamable);
    if !version::is_at_least(session.protocol_version(), "2025-11-25") {
        return sse_response(body);
    }
    // 2025-11-25: a priming event (an id, no data) lets a client resume the
    // stream even if it loses it before the first real message.
    let priming = format!("id: {}\nretry: {SSE_RETRY_MS}\ndata: \n\n", priming_id(id));
    sse_response(prepend(Bytes::from(priming), body))
}

async fn batch(
    shared: App,
    session: Arc<Session>,
    items: Vec<Result<Message, switchboard_protocol::DecodeError>>,
) -> Response {
    let mut replies = Vec::new();
    let mut requests = Vec::new();
    for item in items {
        match item {
            Err(e) => replies.push(encode_error(e.id(), &e.to_error_object())),
            Ok(Message::Request(r)) => requests.push(r),
            Ok(other) => dispatch::handle_other(&shared, &session, other),
        }
    }
    let sink = session.standalone.clone();
    replies.extend(
        join_all(
            requests
                .into_iter()
                .map(|r| dispatch::handle_request(&shared, &session, r, &sink)),
        )
        .await,
    );
    if replies.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    let mut body =
        Vec::with_capacity(replies.iter().map(Vec::len).sum::<usize>() + replies.len() + 2);
    body.push(b'[');
    for (i, r) in replies.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(r);
    }
    body.push(b']');
    json_response(StatusCode::OK, body)
}

fn get_mcp(shared: App, route: RouteId, headers: HeaderMap) -> Response {
    if let Some(refused) = crate::modern::refuse_stream(&headers) {
        return refused;
    }
    if !accepts(&headers).sse {
        return error_response(
            StatusCode::NOT_ACCEPTABLE,
            RejectReason::Invalid,
            ErrorObject::invalid_request(
                "GET opens an SSE stream: Accept must include text/event-stream",
            ),
        );
    }
    let session = match session_for(&shared, route, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    session.touch();
    let resume = headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_event_id)
        .and_then(|(stream, cursor)| session.stream(stream).map(|s| (s, cursor)));
    let (stream, cursor) = match resume {
        Some(found) => found,
        None => {
            let cursor = session.standalone.undelivered();
            (session.standalone.clone(), cursor)
        }
    };
    let generation = stream.take_over();
    let attached = Attached::new(session);
    sse_response(stream_body(
        stream,
        cursor,
        generation,
        Some(attached),
        Format::Streamable,
    ))
}

async fn delete_mcp(shared: App, route: RouteId, headers: HeaderMap) -> Response {
    if let Some(refused) = crate::modern::refuse_stream(&headers) {
        return refused;
    }
    match session_for(&shared, route, &headers) {
        Ok(session) => {
            shared.end_session(&session.id).await;
            StatusCode::OK.into_response()
        }
        Err(r) => r.into_response(),
    }
}

// === SSE bodies ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `id:` + `data:` per message (Streamable HTTP).
    Streamable,
    /// `event: message` + `data:` per message (the 2024-11-05 transport).
    Legacy,
}

/// Marks a session as having a reader, so the idle reaper leaves it alone;
/// for legacy SSE the stream *is* the session, so it ends with it.
struct Attached {
    session: Arc<Session>,
    end_with: Option<App>,
}

impl Attached {
    fn new(session: Arc<Session>) -> Self {
        session.attached.fetch_add(1, Ordering::Relaxed);
        Self {
            session,
            end_with: None,
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.session.attached.fetch_sub(1, Ordering::Relaxed);
        self.session.touch();
        if let Some(shared) = self.end_with.take() {
            let id = self.session.id.clone();
            let tasks = shared.tasks.clone();
            tasks.spawn(async move {
                shared.end_session(&id).await;
            });
        }
    }
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Writes one SSE frame. JSON never holds a raw newline inside a string, so
/// newlines (from pretty-printed upstream payloads) become spaces and every
/// message fits one `data:` line.
fn frame(format: Format, stream: u64, seq: u64, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 40);
    match format {
        Format::Streamable => {
            b.put_slice(b"id: ");
            b.put_slice(event_id(stream, seq).as_bytes());
            b.put_slice(b"\n");
        }
        Format::Legacy => b.put_slice(b"event: message\n"),
    }
    b.put_slice(b"data: ");
    for &c in data {
        b.put_u8(if c == b'\n' || c == b'\r' { b' ' } else { c });
    }
    b.put_slice(b"\n\n");
    b.freeze()
}

/// A body that sends `first`, then everything `rest` sends.
fn prepend(first: Bytes, rest: Body) -> Body {
    use futures::StreamExt;
    let first = futures::stream::once(async move { Ok::<Bytes, axum::Error>(first) });
    Body::from_stream(first.chain(rest.into_data_stream()))
}

fn stream_body(
    stream: Arc<Outbound>,
    cursor: u64,
    generation: u64,
    attached: Option<Attached>,
    format: Format,
) -> Body {
    let keep_alive = attached.is_some();
    let state = (stream, cursor, attached);
    let s = futures::stream::unfold(state, move |(stream, mut cursor, attached)| async move {
        let next = if keep_alive {
            match tokio::time::timeout(KEEP_ALIVE, stream.next(&mut cursor, generation)).await {
                Ok(n) => n,
                Err(_) => {
                    return Some((
                        Ok::<Bytes, std::convert::Infallible>(Bytes::from_static(
                            b": keep-alive\n\n",
                        )),
                        (stream, cursor, attached),
                    ))
                }
            }
        } else {
            stream.next(&mut cursor, generation).await
        };
        match next {
            Next::Event(e) => {
                let f = frame(format, stream.id(), e.seq, &e.data);
                Some((Ok(f), (stream, cursor, attached)))
            }
            Next::End | Next::Superseded => None,
        }
    });
    Body::from_stream(s)
}

// === legacy HTTP+SSE (2024-11-05) ===

async fn sse_federated(State(s): State<App>) -> Response {
    sse_connect(s, RouteId::Federated, "/messages".into())
}
async fn sse_server(State(s): State<App>, Path(name): Path<String>) -> Response {
    match server_route(&s, &name) {
        Ok(route) => sse_connect(s, route, format!("/servers/{name}/messages")),
        Err(r) => r.into_response(),
    }
}

/// Opens a legacy session: the stream's first event names the POST endpoint.
fn sse_connect(shared: App, route: RouteId, messages_path: String) -> Response {
    let session = Arc::new(Session::new(route, Transport::Sse));
    if let Err(e) = shared.add_session(session.clone()) {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            RejectReason::SessionLimit,
            e,
        );
    }
    let endpoint = Bytes::from(format!(
        "event: endpoint\ndata: {messages_path}?sessionId={}\n\n",
        session.id
    ));
    let stream = session.standalone.clone();
    let generation = stream.take_over();
    let mut attached = Attached::new(session);
    attached.end_with = Some(shared);
    let rest = stream_body(stream, 0, generation, Some(attached), Format::Legacy);
    sse_response(prepend(endpoint, rest))
}

#[derive(Deserialize)]
struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

async fn messages_federated(
    State(s): State<App>,
    q: Query<SessionQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    sse_message(s, RouteId::Federated, q.0, headers, body).await
}
async fn messages_server(
    State(s): State<App>,
    Path(name): Path<String>,
    q: Query<SessionQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match server_route(&s, &name) {
        Ok(route) => sse_message(s, route, q.0, headers, body).await,
        Err(r) => r.into_response(),
    }
}

/// A message from a legacy client: accepted with 202; answers travel on the
/// session's SSE stream.
async fn sse_message(
    shared: App,
    route: RouteId,
    q: SessionQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(id) = q.session_id else {
        return error_response(
            StatusCode::BAD_REQUEST,
            RejectReason::MissingSession,
            ErrorObject::invalid_request("missing sessionId query parameter"),
        );
    };
    let session = match shared.sessions.get(&id) {
        Some(s) if s.route == route && s.transport == Transport::Sse => s,
        _ => {
            return error_response(
                StatusCode::NOT_FOUND,
                RejectReason::UnknownSession,
                ErrorObject::invalid_request(
                    "session not found; open a new one with GET on the sse endpoint",
                ),
            )
        }
    };
    let bytes = match read_message_body(&shared, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    session.touch();
    match decode(&bytes) {
        Err(e) => session
            .standalone
            .push(encode_error(e.id(), &e.to_error_object())),
        Ok(Decoded::Batch(_)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                RejectReason::Invalid,
                ErrorObject::invalid_request(
                    "JSON-RPC batches are not part of the HTTP+SSE transport",
                ),
            )
        }
        Ok(Decoded::Single(Message::Request(r))) => {
            let sink = session.standalone.clone();
            shared.tasks.clone().spawn(async move {
                let body = dispatch::handle_request(&shared, &session, r, &sink).await;
                sink.push(body);
            });
        }
        Ok(Decoded::Single(other)) => dispatch::handle_other(&shared, &session, other),
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}

// === metrics and health ===

async fn metrics(State(shared): State<App>, headers: HeaderMap) -> Response {
    let expected = shared.server.metrics_token.as_ref().map(|t| t.expose());
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !switchboard_telemetry::check_bearer(expected, given) {
        let mut r = error_response(
            StatusCode::UNAUTHORIZED,
            RejectReason::Unauthorized,
            ErrorObject::invalid_request("/metrics needs Authorization: Bearer <METRICS_TOKEN>"),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    shared.refresh_gauges();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, switchboard_telemetry::CONTENT_TYPE)],
        shared.metrics.render(),
    )
        .into_response()
}

/// 200 once start-up discovery is over (every upstream discovered or
/// failed), 503 before: a load balancer then waits for a full catalog.
async fn ready(State(shared): State<App>) -> Response {
    if let Some(store) = &shared.store {
        let ping = tokio::time::timeout(std::time::Duration::from_secs(2), store.ping()).await;
        if !matches!(ping, Ok(Ok(()))) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the store does not answer (keys and pins cannot be checked)",
            )
                .into_response();
        }
    }
    if shared.is_settled() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: upstreams are still being discovered",
        )
            .into_response()
    }
}

async fn health(State(shared): State<App>) -> Response {
    let (_, score) = shared.health_scores();
    let upstreams: Vec<_> = shared
        .report()
        .into_iter()
        .map(|r| {
            let (status, error) = (r.status.name(), r.status.error());
            json!({
                "name": r.name,
                "transport": r.transport,
                "status": status,
                "error": error,
                "breaker": r.breaker,
                "health_score": r.health_score,
                "restarts": r.restarts,
                "session_processes": r.session_processes,
                "pings": {
                    "ok": r.pings.pings_ok,
                    "failed": r.pings.pings_failed,
                    "last_ms": r.pings.last_ping.map(|d| d.as_secs_f64() * 1000.0),
                },
                "latency_ms": r.latency_ms.map(|(n, p50, p95, p99)| json!({"samples": n, "p50": p50, "p95": p95, "p99": p99})),
                "tools": r.tools,
                "prompts": r.prompts,
                "resources": r.resources,
            })
        })
        .collect();
    let up = upstreams.iter().filter(|u| u["status"] == "up").count();
    let status = if up == upstreams.len() {
        "ok"
    } else {
        "degraded"
    };
    let body = json!({
        "status": status,
        "health_score": score,
        "sessions": shared.sessions.len(),
        "upstreams": upstreams,
    });
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}
