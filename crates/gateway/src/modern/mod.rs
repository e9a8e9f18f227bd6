//! The stateless face (MCP 2026-07-28) on the same `/mcp` endpoint.
//!
//! A modern request carries its own `_meta` (revision, client capabilities,
//! log level); it is checked here (routing headers against the body, `-32020`,
//! `-32022`, 404 for removed methods), turned into a short-lived [`Session`],
//! and run through the same `dispatch` as legacy traffic. What comes back is
//! translated on the way out:
//!
//! * every result gets `resultType`, lists and reads get cache hints;
//! * an upstream's server→client request in the middle of a call (sampling,
//!   elicitation, roots) becomes an `InputRequiredResult`: the call stays
//!   parked (bounded in number and time) and the client's retry, carrying the
//!   sealed `requestState` and its `inputResponses`, resumes it — or `-32021`
//!   when the client did not declare the capability;
//! * closing a response stream cancels the request.
//!
//! `subscriptions/listen` lives in [`listen`]; `requestState` sealing in [`seal`].

mod listen;
mod park;
pub(crate) mod seal;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::SystemTime;
use switchboard_protocol::modern::{
    self as wire, annotate_result, CacheHint, CacheScope, RequestMeta, META_PROTOCOL_VERSION,
};
use switchboard_protocol::{
    code, decode_message, encode_error, encode_result, to_raw, Decoded, ErrorObject, Message,
    RawValue, Request, RequestId, ResponsePayload,
};
use switchboard_telemetry::RejectReason;

use crate::catalog::RouteId;
use crate::dispatch;
use crate::outbound::{Next, Outbound};
use crate::session::{log_level_index, Session};
use crate::state::Shared;

pub(crate) use park::Parked;

/// Messages one request's stream may hold (progress floods drop the oldest).
const REQUEST_STREAM_CAPACITY: usize = 256;

/// Methods a stateless client may call.
const METHODS: &[&str] = &[
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "completion/complete",
    "subscriptions/listen",
];

/// The gateway's capabilities to a stateless client (subscriptions are
/// served through `subscriptions/listen`).
fn capabilities() -> Value {
    json!({
        "tools": { "listChanged": true },
        "prompts": { "listChanged": true },
        "resources": { "subscribe": true, "listChanged": true },
        "completions": {},
        "logging": {},
    })
}

// === era detection ===

/// Whether a POST is a stateless (2026-07-28) request, by the spec's
/// back-compat rules: no session, and either an `MCP-Protocol-Version` that is
/// not a legacy revision, or a body that names its revision in `_meta` or
/// calls `server/discover`. Everything else stays on the legacy path, so old
/// and new clients share one URL.
pub(crate) fn is_modern_post(headers: &HeaderMap, decoded: &Decoded) -> bool {
    if headers.contains_key("mcp-session-id") {
        return false;
    }
    if let Some(v) = headers.get(wire::HEADER_VERSION) {
        let legacy = v
            .to_str()
            .ok()
            .and_then(switchboard_protocol::version::supported)
            .is_some();
        if !legacy {
            return true;
        }
    }
    match decoded {
        Decoded::Single(Message::Request(r)) => {
            r.method == "server/discover"
                || r.params
                    .as_deref()
                    .is_some_and(|p| p.get().contains(META_PROTOCOL_VERSION))
        }
        _ => false,
    }
}

/// GET and DELETE are not part of the stateless revision: a client that
/// names a modern revision gets 405 (the legacy GET stream stays for others).
pub(crate) fn refuse_stream(headers: &HeaderMap) -> Option<Response> {
    let v = headers.get(wire::HEADER_VERSION)?.to_str().ok()?;
    if !wire::is_modern(v) || headers.contains_key("mcp-session-id") {
        return None;
    }
    let mut r = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        &ErrorObject::new(
            code::METHOD_NOT_FOUND,
            "the 2026-07-28 revision has no GET stream or DELETE; use POST (subscriptions/listen for notifications)",
        ),
    );
    r.headers_mut()
        .insert(header::ALLOW, axum::http::HeaderValue::from_static("POST"));
    Some(r)
}

// === responses ===

fn reply(status: StatusCode, id: Option<&RequestId>, error: &ErrorObject) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        encode_error(id, error),
    )
        .into_response();
    if status.is_client_error() {
        r.extensions_mut().insert(RejectReason::Invalid);
    }
    r
}

/// The HTTP status of a final JSON-RPC error on the stateless wire.
fn status_of(error: &ErrorObject) -> StatusCode {
    match error.code {
        code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        code::HEADER_MISMATCH
        | code::MISSING_CLIENT_CAPABILITY
        | code::UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

fn json_body(status: StatusCode, body: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One SSE frame; stateless streams carry no event ids (nothing resumes).
fn frame(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 8);
    b.put_slice(b"data: ");
    for &c in data {
        b.put_u8(if c == b'\n' || c == b'\r' { b' ' } else { c });
    }
    b.put_slice(b"\n\n");
    b.freeze()
}

fn sse(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

// === the request ===

/// What the handler knows about one stateless request.
struct Call {
    shared: Arc<Shared>,
    id: RequestId,
    method: String,
    /// `params.name` / `params.uri`: what a `requestState` is bound to.
    target: String,
    meta: RequestMeta,
    hint: CacheHint,
}

/// Serves a stateless POST whose era [`is_modern_post`] decided.
pub(crate) async fn post(
    shared: Arc<Shared>,
    route: RouteId,
    headers: HeaderMap,
    decoded: Decoded,
) -> Response {
    let request = match decoded {
        Decoded::Single(Message::Request(r)) => r,
        // Stateless clients send no responses; notifications need no answer.
        Decoded::Single(_) => return StatusCode::ACCEPTED.into_response(),
        Decoded::Batch(_) => {
            return reply(
                StatusCode::BAD_REQUEST,
                None,
                &ErrorObject::invalid_request("JSON-RPC batches are not part of 2026-07-28"),
            )
        }
    };
    let id = request.id.clone();
    let params = match switchboard_protocol::params_object(request.params.as_deref()) {
        Ok(p) => p,
        Err(e) => return reply(StatusCode::BAD_REQUEST, Some(&id), &e),
    };
    let header_version = headers.get(wire::HEADER_VERSION).map(|v| v.as_bytes());
    let Some(header_version) = header_version else {
        return reply(
            StatusCode::BAD_REQUEST,
            Some(&id),
            &wire::header_mismatch("missing MCP-Protocol-Version header"),
        );
    };
    let meta_version = params
        .get("_meta")
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str);
    if let Some(mv) = meta_version {
        if mv.as_bytes() != header_version {
            return reply(
                StatusCode::BAD_REQUEST,
                Some(&id),
                &wire::header_mismatch(format!(
                    "MCP-Protocol-Version header {:?} differs from _meta {META_PROTOCOL_VERSION:?} {mv:?}",
                    String::from_utf8_lossy(header_version)
                )),
            );
        }
    }
    let meta = match wire::parse_meta(request.params.as_deref()) {
        Ok(m) => m,
        Err(e) => return reply(StatusCode::BAD_REQUEST, Some(&id), &e),
    };
    let method = request.method.as_str();
    if !METHODS.contains(&method) {
        return reply(
            StatusCode::NOT_FOUND,
            Some(&id),
            &ErrorObject::method_not_found(method),
        );
    }
    let lookup = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let header_schema = (method == "tools/call")
        .then(|| params.get("name").and_then(Value::as_str))
        .flatten()
        .and_then(|name| {
            shared
                .catalog(route)
                .tool(name)
                .and_then(|t| t.header_schema.clone())
        });
    if let Err(e) = wire::check_headers(
        lookup,
        method,
        &params,
        meta_version,
        header_schema.as_deref(),
    ) {
        return reply(StatusCode::BAD_REQUEST, Some(&id), &e);
    }
    let target = wire::name_field(method)
        .and_then(|f| params.get(f))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let hint = cache_hint(&shared, route, method, &target);
    let call = Call {
        shared,
        id,
        method: request.method.clone(),
        target,
        meta,
        hint,
    };
    match method {
        "server/discover" => discover(&call, route),
        "subscriptions/listen" => listen::listen(call, route, params).await,
        _ if wire::allows_input_required(method)
            && params.get("requestState").is_some_and(|s| !s.is_null()) =>
        {
            resume(call, route, params).await
        }
        _ => start(call, route, params).await,
    }
}

/// `server/discover`: what `initialize` said in the legacy era, as a result.
fn discover(call: &Call, route: RouteId) -> Response {
    let mut result = json!({
        "supportedVersions": wire::all_versions(),
        "capabilities": capabilities(),
        "_meta": {
            wire::META_SERVER_INFO: {
                "name": "switchboard",
                "title": "Switchboard MCP gateway",
                "version": env!("CARGO_PKG_VERSION"),
            }
        },
    });
    if let RouteId::Server(i) = route {
        if let Some(text) = call.shared.offer(i).instructions.clone() {
            result["instructions"] = Value::String(text);
        }
    }
    let result = annotate_result("server/discover", &to_raw(&result), call.hint);
    json_body(StatusCode::OK, encode_result(&call.id, &result).into())
}

/// Cache hints from the gateway's own policy: a resource read that the
/// gateway caches may be reused as long as the gateway would; everything else
/// (the federated lists change whenever an upstream's do) is not reused.
/// Always `private`: the gateway cannot vouch that upstream answers are the
/// same for every caller.
fn cache_hint(shared: &Shared, route: RouteId, method: &str, target: &str) -> CacheHint {
    if method != "resources/read" {
        return CacheHint::NONE;
    }
    let catalog = shared.catalog(route);
    let ttl = catalog
        .resource(target)
        .and_then(|u| shared.upstreams[u].config().cache.as_ref())
        .filter(|c| c.resources)
        .map_or(0, |c| u64::try_from(c.ttl.as_millis()).unwrap_or(u64::MAX));
    CacheHint {
        ttl_ms: ttl,
        scope: CacheScope::Private,
    }
}

/// Removes what only the stateless wire understands before the request goes
/// to an upstream through dispatch.
fn legacy_params(mut params: Map<String, Value>) -> Map<String, Value> {
    // `requestState` is always the gateway's own (sealed); `inputResponses`
    // stay, since a stateless upstream may take answers without any state
    // (a legacy upstream ignores the field).
    params.remove("requestState");
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        // The client's capabilities stay: a stateless upstream then asks only
        // for what the client can answer (legacy upstreams ignore the key).
        meta.retain(|k, _| {
            !k.starts_with("io.modelcontextprotocol/") || k == wire::META_CLIENT_CAPABILITIES
        });
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
    params
}

/// Runs a fresh request through dispatch and answers it.
async fn start(call: Call, route: RouteId, params: Map<String, Value>) -> Response {
    run(call, route, legacy_params(params)).await
}

/// Runs `params` (already rewritten for upstreams) through dispatch.
async fn run(call: Call, route: RouteId, params: Map<String, Value>) -> Response {
    // The gateway accepts every server→client request of a stateless call
    // and decides at the edge (`InputRequiredResult` or `-32021`), where it
    // can still answer the client.
    let session = Arc::new(Session::stateless(
        route,
        call.meta.protocol_version,
        json!({ "sampling": {}, "elicitation": {}, "roots": {} }),
        call.meta.log_level.as_deref().and_then(log_level_index),
    ));
    let stream = Arc::new(Outbound::new(REQUEST_STREAM_CAPACITY));
    let request = Request {
        id: call.id.clone(),
        method: call.method.clone(),
        params: Some(to_raw(&params)),
    };
    {
        let (shared, session, stream) = (call.shared.clone(), session.clone(), stream.clone());
        call.shared.tasks.spawn(async move {
            let body = dispatch::handle_request(&shared, &session, request, &stream).await;
            stream.finish(body);
        });
    }
    answer(call, session, stream, 0).await
}

/// Retries a parked call with the client's `inputResponses`.
async fn resume(call: Call, route: RouteId, params: Map<String, Value>) -> Response {
    let sealed = params
        .get("requestState")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let modern = &call.shared.modern;
    let state = match modern
        .sealer
        .open(sealed, SystemTime::now(), &call.method, &call.target)
    {
        Ok(s) => s,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                Some(&call.id),
                &ErrorObject::invalid_params(e.to_string()),
            )
        }
    };
    if let Some(inner) = state.upstream {
        // A stateless upstream's own state: any replica can continue it.
        let mut p = legacy_params(params.clone());
        if !inner.is_empty() {
            p.insert("requestState".into(), Value::String(inner));
        }
        return run(call, route, p).await;
    }
    if state.replica != modern.replica {
        return reply(
            StatusCode::BAD_REQUEST,
            Some(&call.id),
            &ErrorObject::invalid_params(
                "requestState names a call parked on another gateway replica; send the original request again",
            ),
        );
    }
    let Some(parked) = modern.parked.take(state.call) else {
        return reply(
            StatusCode::BAD_REQUEST,
            Some(&call.id),
            &ErrorObject::invalid_params(
                "requestState was already used or its call has ended; send the original request again",
            ),
        );
    };
    let responses = params
        .get("inputResponses")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (key, client_id) in &parked.asked {
        match responses.get(key) {
            Some(v) => {
                parked.session.answer(client_id, Ok(to_raw(v)));
            }
            None => {
                parked.session.answer(
                    client_id,
                    Err(ErrorObject::invalid_params(format!(
                        "the client sent no inputResponses[{key:?}]"
                    ))),
                );
            }
        }
    }
    answer(call, parked.session, parked.stream, parked.cursor).await
}

/// What one message of the request's stream means for the client.
enum Step {
    /// A notification related to the request (progress, an opted-in log).
    Notify(Bytes),
    /// The final answer, with the HTTP status it needs as plain JSON.
    Done(StatusCode, Bytes),
}

/// Reads the request's stream from `cursor` and answers: plain JSON when the
/// final answer is the first thing there, SSE otherwise.
async fn answer(call: Call, session: Arc<Session>, stream: Arc<Outbound>, cursor: u64) -> Response {
    let generation = stream.take_over();
    let mut cursor = cursor;
    let call = Arc::new(call);
    let first = match stream.next(&mut cursor, generation).await {
        Next::Event(e) => step(&call, &session, &stream, cursor, &e.data),
        Next::End | Next::Superseded => {
            return reply(
                StatusCode::OK,
                Some(&call.id),
                &ErrorObject::internal("the request ended without an answer"),
            )
        }
    };
    let first = match first {
        Step::Done(status, body) => return json_body(status, body),
        Step::Notify(b) => b,
    };
    let guard = CancelOnDrop {
        session: session.clone(),
        armed: true,
    };
    let state = (Some(first), stream, cursor, guard, false);
    let body = futures::stream::unfold(
        state,
        move |(pending, stream, mut cursor, mut guard, done)| {
            let call = call.clone();
            async move {
                if let Some(b) = pending {
                    return Some((
                        Ok::<Bytes, std::convert::Infallible>(frame(&b)),
                        (None, stream, cursor, guard, false),
                    ));
                }
                if done {
                    return None;
                }
                match stream.next(&mut cursor, generation).await {
                    Next::Event(e) => match step(&call, &guard.session, &stream, cursor, &e.data) {
                        Step::Notify(b) => {
                            Some((Ok(frame(&b)), (None, stream, cursor, guard, false)))
                        }
                        Step::Done(_, b) => {
                            guard.disarm();
                            Some((Ok(frame(&b)), (None, stream, cursor, guard, true)))
                        }
                    },
                    Next::End | Next::Superseded => {
                        guard.disarm();
                        None
                    }
                }
            }
        },
    );
    sse(Body::from_stream(body))
}

/// Cancels the request when its response stream is dropped before the end:
/// on the stateless wire, a closed stream is cancellation.
struct CancelOnDrop {
    session: Arc<Session>,
    armed: bool,
}

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.session.close();
        }
    }
}

/// Translates one message of the request's stream.
fn step(
    call: &Call,
    session: &Arc<Session>,
    stream: &Arc<Outbound>,
    cursor: u64,
    data: &Bytes,
) -> Step {
    match decode_message(data) {
        Ok(Message::Notification(_)) => Step::Notify(data.clone()),
        Ok(Message::Response(r)) => match r.payload {
            ResponsePayload::Result(result) => {
                if result.get().contains("\"input_required\"") {
                    if let Some(step) = pass_through(call, session, &result) {
                        return step;
                    }
                }
                let result = annotate_result(&call.method, &result, call.hint);
                Step::Done(StatusCode::OK, encode_result(&call.id, &result).into())
            }
            ResponsePayload::Error(mut e) => {
                if e.code == code::RESOURCE_NOT_FOUND {
                    // 2026-07-28 reports an unknown resource as invalid params.
                    e.code = code::INVALID_PARAMS;
                }
                Step::Done(status_of(&e), encode_error(Some(&call.id), &e).into())
            }
        },
        Ok(Message::Request(asked)) => input_required(call, session, stream, cursor, asked),
        Err(_) => Step::Done(
            StatusCode::OK,
            encode_error(
                Some(&call.id),
                &ErrorObject::internal("unreadable message from the request"),
            )
            .into(),
        ),
    }
}

/// An upstream asked the client something mid-call: park the call and hand
/// the question to the client as an `InputRequiredResult`.
fn input_required(
    call: &Call,
    session: &Arc<Session>,
    stream: &Arc<Outbound>,
    cursor: u64,
    asked: Request,
) -> Step {
    let capability = match asked.method.as_str() {
        "sampling/createMessage" => "sampling",
        "elicitation/create" => "elicitation",
        "roots/list" => "roots",
        _ => "",
    };
    let refuse = |e: ErrorObject| {
        session.close();
        Step::Done(status_of(&e), encode_error(Some(&call.id), &e).into())
    };
    if !wire::allows_input_required(&call.method) {
        return refuse(ErrorObject::internal(format!(
            "the upstream asked for {} during {}, which cannot take client input",
            asked.method, call.method
        )));
    }
    if capability.is_empty() || !call.meta.has_capability(capability) {
        return refuse(wire::missing_capability(
            if capability.is_empty() {
                &asked.method
            } else {
                capability
            },
            &format!(
                "the upstream asked for {} to complete this request",
                asked.method
            ),
        ));
    }
    let modern = &call.shared.modern;
    let key = format!("r{}", asked.id);
    let parked = park::ParkedCall {
        session: session.clone(),
        stream: stream.clone(),
        cursor,
        asked: vec![(key.clone(), asked.id.clone())],
    };
    let handle = match modern.parked.park(&call.shared, parked) {
        Ok(h) => h,
        Err(e) => return refuse(e),
    };
    let now = SystemTime::now();
    let state = seal::state(
        handle,
        modern.replica,
        seal::expiry(now, park::PARK_TTL),
        &call.method,
        &call.target,
    );
    let params: Value = asked
        .params
        .as_deref()
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_else(|| json!({}));
    let mut input = Map::new();
    input.insert(key, json!({ "method": asked.method, "params": params }));
    let result = json!({
        "resultType": "input_required",
        "inputRequests": input,
        "requestState": modern.sealer.seal(&state),
    });
    Step::Done(
        StatusCode::OK,
        encode_result(&call.id, &to_raw(&result)).into(),
    )
}

/// A stateless upstream answered with an `InputRequiredResult`: hand it on,
/// its `requestState` wrapped in the gateway's sealed one (so the retry comes
/// back to the gateway, and any replica can forward it), or `-32021` when it
/// asks for something the client did not declare. `None` when the result is
/// not really an `InputRequiredResult`.
fn pass_through(call: &Call, session: &Arc<Session>, result: &RawValue) -> Option<Step> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(result.get()) else {
        return None;
    };
    if map.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let refuse = |e: ErrorObject| {
        session.close();
        Some(Step::Done(
            status_of(&e),
            encode_error(Some(&call.id), &e).into(),
        ))
    };
    if !wire::allows_input_required(&call.method) {
        return refuse(ErrorObject::internal(format!(
            "the upstream asked for client input during {}, which cannot take it",
            call.method
        )));
    }
    let asked: Vec<String> = map
        .get("inputRequests")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(|r| r.get("method").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for method in asked {
        let capability = match method.as_str() {
            "sampling/createMessage" => "sampling",
            "elicitation/create" => "elicitation",
            "roots/list" => "roots",
            _ => continue,
        };
        if !call.meta.has_capability(capability) {
            return refuse(wire::missing_capability(
                capability,
                &format!("the upstream asked for {method} to complete this request"),
            ));
        }
    }
    let inner = map
        .get("requestState")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let modern = &call.shared.modern;
    let mut state = seal::state(
        0,
        modern.replica,
        seal::expiry(SystemTime::now(), park::PARK_TTL),
        &call.method,
        &call.target,
    );
    state.upstream = Some(inner);
    map.insert(
        "requestState".into(),
        Value::String(modern.sealer.seal(&state)),
    );
    Some(Step::Done(
        StatusCode::OK,
        encode_result(&call.id, &to_raw(&map)).into(),
    ))
}

/// Rounds of `InputRequiredResult` a legacy client's call may go through.
const MAX_INPUT_ROUNDS: u32 = 10;

/// For a legacy client: when a stateless upstream answered with an
/// `InputRequiredResult`, asks the client each question as the legacy
/// server→client request it is (on the originating stream, through the
/// relay), and rewrites `params` for the retry. `Ok(None)` when `result` is
/// final.
pub(crate) async fn fulfil_round(
    relay: &dyn switchboard_upstream::RequestContext,
    result: &RawValue,
    params: &mut Map<String, Value>,
    rounds: &mut u32,
) -> Result<Option<()>, ErrorObject> {
    if !result.get().contains("\"input_required\"") {
        return Ok(None);
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(result.get()) else {
        return Ok(None);
    };
    if map.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return Ok(None);
    }
    *rounds += 1;
    if *rounds > MAX_INPUT_ROUNDS {
        return Err(ErrorObject::internal(format!(
            "the upstream asked for client input more than {MAX_INPUT_ROUNDS} times for one call"
        )));
    }
    let mut responses = Map::new();
    if let Some(requests) = map.get("inputRequests").and_then(Value::as_object) {
        for (key, request) in requests {
            let method = request
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let asked = request.get("params").map(to_raw);
            let answer = relay.request(method, asked).await?;
            let answer: Value = serde_json::from_str(answer.get()).unwrap_or(Value::Null);
            responses.insert(key.clone(), answer);
        }
    }
    params.insert("inputResponses".into(), Value::Object(responses));
    match map.get("requestState") {
        Some(state) => params.insert("requestState".into(), state.clone()),
        None => params.remove("requestState"),
    };
    Ok(Some(()))
}

/// The stateless face's own state, held by `Shared`.
#[derive(Debug)]
pub(crate) struct Modern {
    pub(crate) sealer: seal::Sealer,
    pub(crate) parked: Parked,
    /// Random per process: a `requestState` names the replica that parked
    /// its call, so another replica can refuse it clearly.
    pub(crate) replica: u64,
}

impl Modern {
    /// `key` seals `requestState`; without one a random key is used and
    /// states only work on this replica.
    pub(crate) fn new(key: Option<&[u8]>) -> Self {
        let sealer = match key {
            Some(k) => seal::Sealer::new(k),
            None => seal::Sealer::random(),
        };
        Self {
            sealer,
            parked: Parked::default(),
            replica: rand::random(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use switchboard_protocol::decode;

    fn post_of(headers: &[(&'static str, &'static str)], body: &str) -> bool {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        is_modern_post(&h, &decode(body.as_bytes()).unwrap())
    }

    #[test]
    fn the_era_of_a_post_follows_the_back_compat_rules() {
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let modern_list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let discover = r#"{"jsonrpc":"2.0","id":1,"method":"server/discover"}"#;
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#;
        type Headers = &'static [(&'static str, &'static str)];
        let cases: &[(Headers, &str, bool)] = &[
            (&[], list, false),
            (&[("mcp-protocol-version", "2025-11-25")], list, false),
            (&[("mcp-protocol-version", "2026-07-28")], list, true),
            // An unknown revision is answered by the stateless path with -32022.
            (&[("mcp-protocol-version", "2099-01-01")], list, true),
            (&[], modern_list, true),
            (&[], discover, true),
            (&[], init, false),
            (&[("mcp-protocol-version", "2026-07-28")], init, true),
            // A session id means a legacy session, whatever else is sent.
            (
                &[
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-session-id", "abc"),
                ],
                modern_list,
                false,
            ),
        ];
        for (headers, body, want) in cases {
            assert_eq!(post_of(headers, body), *want, "{headers:?} {body}");
        }
    }

    #[test]
    fn get_and_delete_are_refused_only_to_modern_clients() {
        let mut h = HeaderMap::new();
        assert!(refuse_stream(&h).is_none());
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2025-11-25"),
        );
        assert!(refuse_stream(&h).is_none());
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2026-07-28"),
        );
        let r = refuse_stream(&h).unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn stateless_only_fields_do_not_reach_legacy_upstreams() {
        let p = json!({
            "name": "t",
            "requestState": "x",
            "inputResponses": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "progressToken": 3},
        });
        let Value::Object(p) = p else { unreachable!() };
        let out = Value::Object(legacy_params(p));
        assert_eq!(
            out,
            json!({"name": "t", "inputResponses": {}, "_meta": {"progressToken": 3}})
        );
        let p = json!({"_meta": {"io.modelcontextprotocol/clientCapabilities": {}}});
        let Value::Object(p) = p else { unreachable!() };
        assert_eq!(Value::Object(legacy_params(p.clone())), Value::Object(p));
    }

    #[test]
    fn errors_get_the_stateless_http_statuses() {
        assert_eq!(
            status_of(&ErrorObject::method_not_found("x")),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of(&wire::header_mismatch("x")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&wire::missing_capability("sampling", "x")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&wire::unsupported_version("x")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_of(&ErrorObject::invalid_params("x")), StatusCode::OK);
    }
}
