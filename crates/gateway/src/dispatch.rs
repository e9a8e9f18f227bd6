//! Method handling, independent of the transport a message came on.
//!
//! Every transport (Streamable HTTP, legacy SSE, stdio) decodes messages and
//! hands them here with the stream that related messages must go to. This is
//! the one place that knows what each MCP method means to the gateway.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use switchboard_protocol::code;
use switchboard_protocol::{
    encode_error, encode_notification, encode_result, params_object, to_raw, version, ErrorObject,
    Message, Notification, RawValue, Request, ResponsePayload,
};
use switchboard_telemetry::{CacheName, McpMethod, McpStatus, RejectReason, ToolCallStatus};
use tracing::Instrument;

use crate::cache;
use crate::govern::{self, ListKind};
use crate::validate;
use switchboard_auth::Target as Grant;
use switchboard_upstream::{CallOptions, RequestContext};

use crate::catalog::RouteId;
use crate::outbound::Outbound;
use crate::session::{log_level_index, Init, Session, LOG_LEVELS};
use crate::state::Shared;

/// Handles one message that is not a request: a client's answer to a
/// server→client request, or a notification.
pub(crate) fn handle_other(shared: &Shared, session: &Session, message: Message) {
    let _ = shared;
    match message {
        Message::Response(r) => {
            let reply = match r.payload {
                ResponsePayload::Result(v) => Ok(v),
                ResponsePayload::Error(e) => Err(e),
            };
            if !session.answer(&r.id, reply) {
                tracing::debug!(session = %session.id, id = %r.id, "answer to no pending request");
            }
        }
        Message::Notification(n) => match n.method.as_str() {
            "notifications/cancelled" => {
                let id = params_object(n.params.as_deref())
                    .ok()
                    .and_then(|p| p.get("requestId").cloned())
                    .and_then(|v| serde_json::from_value(v).ok());
                if let Some(id) = id {
                    session.cancel(&id);
                }
            }
            "notifications/initialized" | "notifications/roots/list_changed" => {}
            other => {
                tracing::debug!(session = %session.id, method = other, "ignoring client notification")
            }
        },
        Message::Request(_) => {}
    }
}

/// Handles a request and returns the encoded response.
///
/// `sink` is where messages related to this request go (progress, logs,
/// server→client requests): the request's own SSE stream on Streamable HTTP,
/// the session's stream elsewhere.
pub(crate) async fn handle_request(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    request: Request,
    sink: &Arc<Outbound>,
) -> Vec<u8> {
    session.touch();
    let id = request.id.clone();
    let method = request.method.clone();
    // One span per downstream request; arguments are never recorded.
    let span = if switchboard_telemetry::exporting_traces() {
        tracing::info_span!(
            "mcp.request",
            otel.kind = "internal",
            mcp.method = %method,
            mcp.session = %session.id,
            mcp.request_id = %id,
            otel.status_code = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    let audited = govern::Audited::begin(&method, request.params.as_deref());
    let cancel = session.begin(&id);
    let outcome = async {
        tokio::select! {
            r = route(shared, session, request, sink, cancel.clone()) => r,
            _ = cancel.cancelled() => Err(ErrorObject::new(switchboard_protocol::code::REQUEST_CANCELLED, "request cancelled")),
        }
    }
    .instrument(span.clone())
    .await;
    if outcome.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    session.end(&id);
    if let Some(a) = audited {
        a.finish(shared, session, &outcome);
    }
    let status = if outcome.is_ok() {
        McpStatus::Ok
    } else {
        McpStatus::Error
    };
    shared
        .metrics
        .record_mcp_request(McpMethod::from_name(&method), status);
    match outcome {
        Ok(result) => encode_result(&id, &result),
        Err(error) => encode_error(Some(&id), &error),
    }
}

type Outcome = Result<Box<RawValue>, ErrorObject>;

/// How long a request that needs the catalog waits at start-up for upstreams
/// to be discovered, before it is served from what is there.
const STARTUP_GRACE: Duration = Duration::from_secs(10);

fn needs_catalog(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "tools/call"
            | "prompts/list"
            | "prompts/get"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "resources/subscribe"
            | "completion/complete"
    )
}

async fn route(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    request: Request,
    sink: &Arc<Outbound>,
    cancel: tokio_util::sync::CancellationToken,
) -> Outcome {
    if needs_catalog(&request.method) && !shared.is_settled() {
        shared.wait_settled(STARTUP_GRACE).await;
    }
    let catalog = shared.catalog(session.route);
    match request.method.as_str() {
        "initialize" => initialize(shared, session, request.params.as_deref()),
        "ping" => Ok(switchboard_protocol::empty_object()),
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
            let kind = match request.method.as_str() {
                "tools/list" => ListKind::Tools,
                "prompts/list" => ListKind::Prompts,
                "resources/list" => ListKind::Resources,
                _ => ListKind::Templates,
            };
            let visible = govern::visible_list(shared, &catalog, session.identity(), kind);
            list(request.params.as_deref(), &visible)
        }
        "logging/setLevel" => {
            let p = params_object(request.params.as_deref())?;
            let level = p.get("level").and_then(Value::as_str).unwrap_or_default();
            let idx = log_level_index(level).ok_or_else(|| {
                ErrorObject::invalid_params(format!(
                    "unknown log level {level:?}; use one of {}",
                    LOG_LEVELS.join(", ")
                ))
            })?;
            session.set_log_level(idx);
            Ok(switchboard_protocol::empty_object())
        }
        "tools/call" | "prompts/get" => {
            let is_tool = request.method == "tools/call";
            let mut p = params_object(request.params.as_deref())?;
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ErrorObject::invalid_params("missing \"name\""))?;
            let target = if is_tool {
                catalog.tool(name)
            } else {
                catalog.prompt(name)
            }
            .ok_or_else(|| {
                let what = if is_tool { "tool" } else { "prompt" };
                ErrorObject::invalid_params(format!("unknown {what}: {name}"))
            })?
            .clone();
            let upstream_name = shared.upstreams[target.upstream].name();
            let grant = if is_tool {
                Grant::tool(upstream_name, &target.name)
            } else {
                Grant::prompt(upstream_name, &target.name)
            };
            govern::authorize(shared, session, grant, name)?;
            if let Some(identity) = session.identity().filter(|_| is_tool) {
                if let Err((rule, wait)) = shared.tool_limits.check(&identity.principal(), name) {
                    shared
                        .metrics
                        .record_rejected_request(RejectReason::ToolRateLimited);
                    return Err(ErrorObject::new(
                        code::RATE_LIMITED,
                        format!(
                            "tool {name} is limited by rule {rule:?}; retry in {}s",
                            wait.as_secs().max(1)
                        ),
                    )
                    .with_data(json!({ "retryAfterMs": wait.as_millis() as u64 })));
                }
            }
            if target.held {
                return Err(ErrorObject::invalid_params(format!(
                    "tool {name} is held: its definition changed since it was pinned; \
                     an operator must review the change and approve it \
                     (`switchboard tools approve {name}` or POST /admin/pins/approve)"
                ))
                .with_data(json!({ "tool": name, "reason": "definition_changed" })));
            }
            if is_tool {
                let empty = Value::Object(Map::new());
                let args = p.get("arguments").unwrap_or(&empty);
                let verdict = validate::check_shape(args)
                    .and_then(|()| target.check.as_ref().map_or(Ok(()), |c| c.check(args)));
                if let Err(problem) = verdict {
                    // A tool error, not a protocol error: the model can read it
                    // and correct its call (MCP 2025-11-25 guidance).
                    shared
                        .metrics
                        .record_rejected_request(RejectReason::Invalid);
                    shared.metrics.record_tool_call(
                        shared.upstreams[target.upstream].name(),
                        &target.name,
                        ToolCallStatus::Rejected,
                        Duration::ZERO,
                    );
                    return Ok(to_raw(&json!({
                        "content": [{"type": "text", "text": format!("invalid arguments for tool {name}: {problem}")}],
                        "isError": true,
                    })));
                }
            }
            p.insert("name".into(), Value::String(target.name.to_string()));
            let started = tokio::time::Instant::now();
            let upstream_cfg = shared.upstreams[target.upstream].config();
            let key = match &upstream_cfg.cache {
                Some(c) if is_tool && target.read_only && c.tools.permits(&target.name) => {
                    cache::tool_key(&upstream_cfg.name, &target.name, p.get("arguments"))
                        .map(|k| (k, c.ttl))
                }
                _ => None,
            };
            let call = forward(
                shared,
                session,
                sink,
                target.upstream,
                &request.method,
                p,
                cancel,
                target.safe,
            );
            let outcome = cached(shared, key, CacheName::ToolResult, call).await;
            if is_tool {
                shared.metrics.record_tool_call(
                    shared.upstreams[target.upstream].name(),
                    &target.name,
                    tool_status(&outcome),
                    started.elapsed(),
                );
            }
            outcome
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let p = params_object(request.params.as_deref())?;
            let uri = p
                .get("uri")
                .and_then(Value::as_str)
                .ok_or_else(|| ErrorObject::invalid_params("missing \"uri\""))?
                .to_owned();
            // The filter applies to every URI, also those routed by a template
            // or by being the only resource upstream, not just listed ones.
            let permitted = |u: &usize| shared.upstreams[*u].config().resources.permits(&uri);
            let upstream = catalog.resource(&uri).filter(permitted).ok_or_else(|| {
                ErrorObject::new(
                    switchboard_protocol::code::RESOURCE_NOT_FOUND,
                    format!("resource not found: {uri}"),
                )
                .with_data(json!({ "uri": uri }))
            })?;
            govern::authorize(
                shared,
                session,
                Grant::resource(shared.upstreams[upstream].name(), &uri),
                &uri,
            )?;
            match request.method.as_str() {
                "resources/read" => {
                    let cfg = shared.upstreams[upstream].config();
                    let key = cfg
                        .cache
                        .as_ref()
                        .filter(|c| c.resources)
                        .map(|c| (cache::resource_key(&cfg.name, &uri), c.ttl));
                    let call = forward(
                        shared,
                        session,
                        sink,
                        upstream,
                        "resources/read",
                        p,
                        cancel,
                        true,
                    );
                    cached(shared, key, CacheName::ResourceRead, call).await
                }
                "resources/subscribe" => {
                    shared
                        .subscribe(session, upstream, &uri, request.params)
                        .await
                }
                _ => {
                    shared.unsubscribe(session, upstream, &uri).await;
                    Ok(switchboard_protocol::empty_object())
                }
            }
        }
        "completion/complete" => {
            let mut p = params_object(request.params.as_deref())?;
            let reference = p
                .get("ref")
                .and_then(Value::as_object)
                .ok_or_else(|| ErrorObject::invalid_params("missing \"ref\""))?;
            let (upstream, rename) = match reference.get("type").and_then(Value::as_str) {
                Some("ref/prompt") => {
                    let name = reference
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let t = catalog.prompt(name).ok_or_else(|| {
                        ErrorObject::invalid_params(format!("unknown prompt: {name}"))
                    })?;
                    govern::authorize(
                        shared,
                        session,
                        Grant::prompt(shared.upstreams[t.upstream].name(), &t.name),
                        name,
                    )?;
                    (t.upstream, Some(t.name.to_string()))
                }
                Some("ref/resource") => {
                    let uri = reference
                        .get("uri")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let u = catalog
                        .resource(uri)
                        .filter(|u| shared.upstreams[*u].config().resources.permits(uri))
                        .ok_or_else(|| {
                            ErrorObject::invalid_params(format!(
                                "no upstream serves resource {uri}"
                            ))
                        })?;
                    (u, None)
                }
                other => {
                    return Err(ErrorObject::invalid_params(format!(
                        "ref.type must be \"ref/prompt\" or \"ref/resource\", not {other:?}"
                    )))
                }
            };
            if let (Some(name), Some(Value::Object(r))) = (rename, p.get_mut("ref")) {
                r.insert("name".into(), Value::String(name));
            }
            forward(
                shared,
                session,
                sink,
                upstream,
                "completion/complete",
                p,
                cancel,
                true,
            )
            .await
        }
        other => Err(ErrorObject::method_not_found(other)),
    }
}

/// Serves `call` through the response cache when `key` is set: a fresh entry
/// answers at once; a miss calls and stores a successful answer; when the
/// upstream is unavailable (down, or its breaker open), the last good answer
/// is served marked stale in `_meta`.
async fn cached(
    shared: &Shared,
    key: Option<(String, Duration)>,
    which: CacheName,
    call: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    let Some((key, ttl)) = key else {
        return call.await;
    };
    let entry = shared.cache.get(&key).await;
    if let Some(e) = entry.as_ref().filter(|e| e.is_fresh()) {
        shared.metrics.record_cache_hit(which);
        return Ok(e.value.as_ref().to_owned());
    }
    shared.metrics.record_cache_miss(which);
    match call.await {
        Ok(result) => {
            if !result.get().contains("\"isError\":true") {
                shared
                    .cache
                    .put(key, cache::Cached::new(&result, ttl))
                    .await;
            }
            Ok(result)
        }
        Err(e) if e.code == code::UPSTREAM_UNAVAILABLE => match entry {
            Some(stale) => Ok(cache::mark_stale(&stale.value, stale.age(), &e.message)),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// How a tool call ended, for `mcp_tool_calls_total`. A result with
/// `isError: true` is the tool reporting failure, so it counts as an error.
fn tool_status(outcome: &Outcome) -> ToolCallStatus {
    match outcome {
        Ok(result) if result.get().contains("\"isError\":true") => ToolCallStatus::Error,
        Ok(_) => ToolCallStatus::Success,
        Err(e) => match e.code {
            code::REQUEST_TIMEOUT => ToolCallStatus::Timeout,
            code::REQUEST_CANCELLED => ToolCallStatus::Cancelled,
            code::UPSTREAM_UNAVAILABLE => ToolCallStatus::Unavailable,
            code::OVERLOADED => ToolCallStatus::Rejected,
            _ => ToolCallStatus::Error,
        },
    }
}

/// Serves a list from the catalog snapshot: one page, no cursor.
fn list(params: Option<&RawValue>, result: &RawValue) -> Outcome {
    let p = params_object(params)?;
    if let Some(cursor) = p.get("cursor") {
        if !cursor.is_null() {
            return Err(ErrorObject::invalid_params(
                "invalid cursor: this list has a single page, so no cursor is valid",
            ));
        }
    }
    Ok(result.to_owned())
}

fn initialize(shared: &Shared, session: &Session, params: Option<&RawValue>) -> Outcome {
    let p = params_object(params)?;
    let requested = p
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| ErrorObject::invalid_params("initialize needs \"protocolVersion\""))?;
    let negotiated = version::negotiate(requested);
    let client_info = p.get("clientInfo").cloned().unwrap_or_else(|| json!({}));
    tracing::info!(
        session = %session.id,
        client = client_info.get("name").and_then(serde_json::Value::as_str).unwrap_or("unknown"),
        requested,
        negotiated,
        "session initialized"
    );
    let info = |k: &str| {
        client_info
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect::<String>()
    };
    session.set_client(&info("name"), &info("version"));
    session.initialize(Init {
        protocol_version: negotiated,
        capabilities: p.get("capabilities").cloned().unwrap_or_else(|| json!({})),
    })?;
    let instructions = match session.route {
        RouteId::Server(i) => shared.offer(i).instructions.clone(),
        RouteId::Federated => None,
    };
    let mut result = json!({
        "protocolVersion": negotiated,
        "capabilities": {
            "tools": { "listChanged": true },
            "prompts": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "logging": {},
            "completions": {},
        },
        "serverInfo": { "name": "switchboard", "title": "Switchboard MCP gateway", "version": env!("CARGO_PKG_VERSION") },
    });
    if let Some(text) = instructions {
        result["instructions"] = Value::String(text);
    }
    Ok(to_raw(&result))
}

/// Sends a request to its upstream with a context that relays related
/// messages back to this request's stream.
#[allow(clippy::too_many_arguments)]
async fn forward(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    sink: &Arc<Outbound>,
    upstream: usize,
    method: &str,
    mut params: Map<String, Value>,
    cancel: tokio_util::sync::CancellationToken,
    safe: bool,
) -> Outcome {
    let downstream_token = match params.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(meta) => match meta.get("progressToken").cloned() {
            Some(token) => {
                meta.insert("progressToken".into(), Value::from(shared.progress_token()));
                Some(token)
            }
            None => None,
        },
        None => None,
    };
    let protection = &shared.protection[upstream];
    let upstream = &shared.upstreams[upstream];
    let context = Arc::new(Relay {
        session: session.clone(),
        sink: sink.clone(),
        progress_token: downstream_token,
        timeout: upstream.config().timeout,
    });
    let timeout = match (method, params.get("name").and_then(Value::as_str)) {
        ("tools/call", Some(tool)) if !upstream.config().tool_timeouts.is_empty() => {
            Some(upstream.config().timeout_for_tool(tool))
        }
        _ => None,
    };
    let options = CallOptions {
        context: Some(context.clone()),
        cancel,
        timeout,
        // A per_session upstream serves this session from its own process;
        // a stateless (2026-07-28) request has no session to keep one for,
        // so the upstream's template process serves it.
        session: (!session.is_stateless()).then(|| session.id.clone()),
    };
    // Prompt names and URIs are not tools: only tools/call carries mcp.tool.
    let tool = match method {
        "tools/call" => params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        _ => "",
    }
    .to_owned();
    let span = if switchboard_telemetry::exporting_traces() {
        tracing::info_span!(
            "mcp.upstream_call",
            otel.kind = "client",
            upstream = upstream.name(),
            mcp.method = method,
            mcp.tool = %tool,
        )
    } else {
        tracing::Span::none()
    };
    let stateless = session.is_stateless();
    let context: Arc<dyn RequestContext> = context;
    async move {
        // A stateless upstream's `InputRequiredResult` is answered here for
        // legacy clients (bounded rounds); stateless clients get it as is.
        let mut rounds = 0;
        loop {
            let result = protection
                .call(
                    &shared.metrics,
                    upstream,
                    method,
                    to_raw(&params),
                    options.clone(),
                    safe,
                )
                .await?;
            if stateless {
                return Ok(result);
            }
            match crate::modern::fulfil_round(&*context, &result, &mut params, &mut rounds).await? {
                Some(()) => continue,
                None => return Ok(result),
            }
        }
    }
    .instrument(span)
    .await
}

/// Relays what an upstream says about one forwarded request back to the
/// client that made it.
#[derive(Debug)]
struct Relay {
    session: Arc<Session>,
    sink: Arc<Outbound>,
    /// The client's own progress token; upstream saw a gateway token instead.
    progress_token: Option<Value>,
    timeout: Duration,
}

#[async_trait]
impl RequestContext for Relay {
    fn notify(&self, n: Notification) {
        match n.method.as_str() {
            "notifications/progress" => {
                let Some(token) = &self.progress_token else {
                    return;
                };
                let Ok(mut p) = params_object(n.params.as_deref()) else {
                    return;
                };
                p.insert("progressToken".into(), token.clone());
                self.sink
                    .push(encode_notification(&n.method, Some(&to_raw(&p))));
            }
            "notifications/message" => {
                let level = params_object(n.params.as_deref())
                    .ok()
                    .and_then(|p| p.get("level").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default();
                if self.session.wants_log(&level) {
                    self.sink
                        .push(encode_notification(&n.method, n.params.as_deref()));
                }
            }
            _ => self.sink.push(Bytes::from(encode_notification(
                &n.method,
                n.params.as_deref(),
            ))),
        }
    }

    async fn request(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<Box<RawValue>, ErrorObject> {
        let capability = match method {
            "sampling/createMessage" => "sampling",
            "elicitation/create" => "elicitation",
            "roots/list" => "roots",
            "ping" => return Ok(switchboard_protocol::empty_object()),
            other => return Err(ErrorObject::method_not_found(other)),
        };
        if !self.session.has_capability(capability) {
            return Err(ErrorObject::method_not_found(method).with_data(json!({
                "reason": format!("the client did not declare the {capability} capability")
            })));
        }
        self.session
            .ask_client(&self.sink, method, params.as_deref(), self.timeout)
            .await
    }
}
