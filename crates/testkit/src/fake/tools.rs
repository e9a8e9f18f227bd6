//! Fake upstream tools: the fixed set, the `tool_N` echoes and the tools
//! registered at runtime.
//!
//! Every call first goes through the fault schedule (`--crash-after-calls`,
//! `--latency-ms`, `--fail-every`, in that order), then to its tool.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, CreateMessageRequestParams,
    ElicitRequestParams, ElicitationSchema, JsonObject, LoggingLevel,
    LoggingMessageNotificationParam, ProgressNotificationParam, ResourceUpdatedNotificationParam,
    SamplingMessage, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{json, Value};

use super::fault::{self, Fault};
use super::FakeUpstream;
use crate::schema::object;

/// Interval between `slow`'s progress notifications.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Largest `big` payload; a typo should not take the test machine's memory.
const BIG_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Most memory `alloc` takes: enough to cross any limit a test sets, not
/// enough to hurt a test machine when no limit applies.
const ALLOC_MAX_MIB: u64 = 1024;

/// Prefix of the `--tools N` echo tools.
const EXTRA_PREFIX: &str = "tool_";

/// Returns the fixed tools, then `tool_0..tool_{extra-1}`, then `added`.
pub(super) fn list(extra: usize, added: &[String]) -> Vec<Tool> {
    let empty = || object(json!({ "type": "object", "properties": {} }));
    let any_args = || object(json!({ "type": "object", "additionalProperties": true }));
    let mut tools = vec![
        Tool::new(
            "echo",
            "Returns its text argument unchanged",
            object(json!({
                "type": "object",
                "properties": { "text": { "type": "string" } },
                "required": ["text"]
            })),
        ),
        Tool::new(
            "add",
            "Adds two numbers; the sum is also in structuredContent",
            object(json!({
                "type": "object",
                "properties": { "a": { "type": "number" }, "b": { "type": "number" } },
                "required": ["a", "b"]
            })),
        )
        .with_raw_output_schema(object(json!({
            "type": "object",
            "properties": { "sum": { "type": "number" } },
            "required": ["sum"]
        }))),
        Tool::new(
            "slow",
            "Sleeps ms milliseconds with progress every 100 ms; stops when cancelled",
            object(json!({
                "type": "object",
                "properties": { "ms": { "type": "integer", "minimum": 0 } },
                "required": ["ms"]
            })),
        ),
        Tool::new(
            "cancelled_count",
            "Returns how many calls were cancelled so far in this process",
            empty(),
        ),
        Tool::new(
            "call_count",
            "Returns how many tool calls this process has received (read-only, so callers may cache it)",
            empty(),
        )
        .annotate(rmcp::model::ToolAnnotations::default().read_only(true)),
        Tool::new(
            "fail",
            "Fails with JSON-RPC error -32603 \"fake failure\"",
            empty(),
        ),
        Tool::new("tool_error", "Returns a result with isError: true", empty()),
        Tool::new("crash", "Exits the server process immediately", empty()),
        Tool::new(
            "big",
            "Returns a text of `bytes` 'x' characters",
            object(json!({
                "type": "object",
                "properties": { "bytes": { "type": "integer", "minimum": 0 } },
                "required": ["bytes"]
            })),
        ),
        Tool::new(
            "alloc",
            "Allocates and touches `mib` MiB, then frees it; under a memory limit too low for it the process aborts, as any Rust program whose allocation fails",
            object(json!({
                "type": "object",
                "properties": { "mib": { "type": "integer", "minimum": 0, "maximum": ALLOC_MAX_MIB } },
                "required": ["mib"]
            })),
        ),
        Tool::new("pid", "Returns the server process's pid", empty()),
        Tool::new(
            "traceparent",
            "Returns the W3C traceparent header of the HTTP request that carried this call (empty over stdio or without one)",
            empty(),
        ),
        Tool::new(
            "sample",
            "Asks the client for sampling/createMessage and returns the reply text",
            object(json!({
                "type": "object",
                "properties": { "prompt": { "type": "string" } }
            })),
        ),
        Tool::new(
            "elicit",
            "Asks the client for elicitation/create and returns the answer as JSON",
            object(json!({
                "type": "object",
                "properties": { "message": { "type": "string" } }
            })),
        ),
        Tool::new(
            "roots",
            "Calls roots/list on the client and returns the result as JSON",
            empty(),
        ),
        Tool::new(
            "add_tool",
            "Registers an echo tool called `name` and sends tools/list_changed",
            object(json!({
                "type": "object",
                "properties": { "name": { "type": "string" } },
                "required": ["name"]
            })),
        ),
        Tool::new(
            "redescribe",
            "Replaces the description of tool `name` and sends tools/list_changed (a definition change under a pinned name)",
            object(json!({
                "type": "object",
                "properties": { "name": { "type": "string" }, "description": { "type": "string" } },
                "required": ["name", "description"]
            })),
        ),
        Tool::new(
            "seen_authorization",
            "Returns the Authorization header of the HTTP request that carried this call (\"none\" without one or on stdio)",
            empty(),
        ),
        Tool::new(
            "log",
            "Sends notifications/message at `level`, then returns",
            object(json!({
                "type": "object",
                "properties": {
                    "level": {
                        "type": "string",
                        "enum": ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
                    },
                    "message": { "type": "string" }
                },
                "required": ["level", "message"]
            })),
        ),
        Tool::new(
            "touch",
            "Sends notifications/resources/updated for `uri`",
            object(json!({
                "type": "object",
                "properties": { "uri": { "type": "string" } },
                "required": ["uri"]
            })),
        ),
    ];
    tools.extend((0..extra).map(|i| {
        Tool::new(
            format!("{EXTRA_PREFIX}{i}"),
            "Echoes its arguments as JSON text",
            any_args(),
        )
    }));
    tools.extend(added.iter().map(|name| {
        Tool::new(
            name.clone(),
            "Added at runtime; echoes its arguments as JSON text",
            any_args(),
        )
    }));
    tools
}

/// Runs one tool call through the fault schedule and then the tool.
pub(super) async fn call(
    server: &FakeUpstream,
    request: CallToolRequestParams,
    cx: RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let shared = &server.shared;
    let config = &shared.config;
    let call = shared.calls.fetch_add(1, Ordering::Relaxed) + 1;
    let fault = fault::for_call(call, config.fail_every, config.crash_after_calls);
    if fault == Fault::Crash {
        tracing::warn!(call, "crashing as configured by --crash-after-calls");
        std::process::exit(1);
    }
    if !config.latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(config.latency) => {}
            _ = cx.ct.cancelled() => return Err(cancelled(server)),
        }
    }
    if fault == Fault::Fail {
        return Err(ErrorData::internal_error(
            format!("fake failure (call {call}, --fail-every)"),
            None,
        ));
    }

    let args = request.arguments.unwrap_or_default();
    match request.name.as_ref() {
        // The benchmark echo: no allocation beyond the reply itself.
        "echo" => {
            let text = required_str(&args, "text")?;
            Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
        }
        "add" => add(&args),
        "slow" => slow(server, &args, &cx).await,
        "cancelled_count" => Ok(text(shared.cancelled.load(Ordering::Relaxed).to_string())),
        "call_count" => Ok(text(shared.calls.load(Ordering::Relaxed).to_string())),
        "fail" => Err(ErrorData::internal_error("fake failure", None)),
        "tool_error" => Ok(CallToolResult::error(vec![ContentBlock::text(
            "fake tool error",
        )])),
        "crash" => {
            tracing::warn!("crashing on request of the crash tool");
            std::process::exit(1);
        }
        "big" => {
            let bytes = required_u64(&args, "bytes")?;
            if bytes > BIG_MAX_BYTES {
                return Err(ErrorData::invalid_params(
                    format!("bytes must be at most {BIG_MAX_BYTES}"),
                    None,
                ));
            }
            let len = usize::try_from(bytes)
                .map_err(|_| ErrorData::invalid_params("bytes does not fit in memory", None))?;
            Ok(text("x".repeat(len)))
        }
        "alloc" => {
            let mib = required_u64(&args, "mib")?;
            if mib > ALLOC_MAX_MIB {
                return Err(ErrorData::invalid_params(
                    format!("mib must be at most {ALLOC_MAX_MIB}"),
                    None,
                ));
            }
            let len = usize::try_from(mib << 20)
                .map_err(|_| ErrorData::invalid_params("mib does not fit in memory", None))?;
            // Non-zero bytes: every page is written, so the memory is real.
            let block = std::hint::black_box(vec![1u8; len]);
            Ok(text(format!("allocated {} MiB", block.len() >> 20)))
        }
        "pid" => Ok(text(std::process::id().to_string())),
        "traceparent" => Ok(text(
            cx.extensions
                .get::<axum::http::request::Parts>()
                .and_then(|parts| parts.headers.get("traceparent"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        )),
        "sample" => sample(&args, &cx).await,
        "elicit" => elicit(&args, &cx).await,
        "roots" => match cx.peer.list_roots().await {
            Ok(roots) => Ok(text(to_json(&roots)?)),
            Err(error) => Ok(tool_error(format!("roots/list failed: {error}"))),
        },
        "add_tool" => add_tool(server, &args, &cx).await,
        "redescribe" => {
            let name = required_str(&args, "name")?;
            let description = required_str(&args, "description")?;
            server
                .shared
                .descriptions
                .write()
                .map_err(|_| ErrorData::internal_error("server state lock poisoned", None))?
                .insert(name.to_owned(), description.to_owned());
            cx.peer
                .notify_tool_list_changed()
                .await
                .map_err(|e| ErrorData::internal_error(format!("cannot notify: {e}"), None))?;
            Ok(text(format!("redescribed {name}")))
        }
        "seen_authorization" => {
            let seen = cx
                .extensions
                .get::<http::request::Parts>()
                .and_then(|p| p.headers.get(http::header::AUTHORIZATION))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            Ok(text(seen))
        }
        "log" => log(server, &args, &cx).await,
        "touch" => {
            let uri = required_str(&args, "uri")?;
            cx.peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                .await
                .map_err(|e| ErrorData::internal_error(format!("cannot notify: {e}"), None))?;
            Ok(text(format!("touched {uri}")))
        }
        name if is_echo_tool(server, name)? => Ok(text(Value::Object(args).to_string())),
        other => Err(ErrorData::invalid_params(
            format!("unknown tool {other:?}"),
            None,
        )),
    }
}

/// Whether `name` is a `tool_N` echo or a tool added at runtime.
fn is_echo_tool(server: &FakeUpstream, name: &str) -> Result<bool, ErrorData> {
    let extra = name
        .strip_prefix(EXTRA_PREFIX)
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| n < server.shared.config.extra_tools);
    if extra {
        return Ok(true);
    }
    let added = server
        .shared
        .added_tools
        .read()
        .map_err(|_| ErrorData::internal_error("server state lock poisoned", None))?;
    Ok(added.iter().any(|added| added == name))
}

/// `add`: the sum as text and as `structuredContent {sum}`.
fn add(args: &JsonObject) -> Result<CallToolResult, ErrorData> {
    let number = |name: &str| {
        args.get(name)
            .and_then(Value::as_number)
            .cloned()
            .ok_or_else(|| ErrorData::invalid_params(format!("{name} must be a number"), None))
    };
    let (a, b) = (number("a")?, number("b")?);
    // Integers stay integers so `2 + 3` reads "5", not "5.0".
    let sum = match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => a.checked_add(b).map(Value::from),
        _ => None,
    }
    .or_else(|| {
        let float = a.as_f64().unwrap_or_default() + b.as_f64().unwrap_or_default();
        serde_json::Number::from_f64(float).map(Value::Number)
    })
    .ok_or_else(|| ErrorData::invalid_params("sum is not a finite number", None))?;
    let mut result = text(sum.to_string());
    result.structured_content = Some(json!({ "sum": sum }));
    Ok(result)
}

/// `slow`: sleeps, reporting progress, and gives up as soon as it is cancelled.
async fn slow(
    server: &FakeUpstream,
    args: &JsonObject,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let ms = required_u64(args, "ms")?;
    let token = cx.meta.get_progress_token();
    let total = Duration::from_millis(ms);
    let mut elapsed = Duration::ZERO;
    while elapsed < total {
        let step = PROGRESS_EVERY.min(total - elapsed);
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = cx.ct.cancelled() => return Err(cancelled(server)),
        }
        elapsed += step;
        if let Some(token) = &token {
            let note = ProgressNotificationParam::new(token.clone(), elapsed.as_millis() as f64)
                .with_total(ms as f64)
                .with_message(format!("slept {} of {ms} ms", elapsed.as_millis()));
            // Progress is best effort; a closed stream is noticed via cancellation.
            let _ = cx.peer.notify_progress(note).await;
        }
    }
    Ok(text(format!("slept {ms} ms")))
}

/// Records a cancellation and returns the error that ends the call.
///
/// The client never sees it (rmcp drops responses to cancelled requests);
/// it only stops the handler.
fn cancelled(server: &FakeUpstream) -> ErrorData {
    let count = server.shared.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(count, "tool call cancelled");
    ErrorData::internal_error("cancelled by client", None)
}

/// `sample`: one sampling round trip.
async fn sample(
    args: &JsonObject,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let prompt = args
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or("hello");
    let params = CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 64);
    match cx.peer.create_message(params).await {
        Ok(reply) => {
            let answer = reply
                .message
                .content
                .first()
                .and_then(|block| block.as_text())
                .map(|t| t.text.clone())
                .unwrap_or_default();
            Ok(text(answer))
        }
        Err(error) => Ok(tool_error(format!("sampling failed: {error}"))),
    }
}

/// `elicit`: one form elicitation asking for a single string `answer`.
async fn elicit(
    args: &JsonObject,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let message = args
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("Please answer");
    let requested_schema: ElicitationSchema = serde_json::from_value(json!({
        "type": "object",
        "properties": { "answer": { "type": "string", "description": "Your answer" } },
        "required": ["answer"]
    }))
    .map_err(|e| ErrorData::internal_error(format!("elicit schema is invalid: {e}"), None))?;
    let params = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: message.to_owned(),
        requested_schema,
    };
    match cx.peer.create_elicitation(params).await {
        Ok(answer) => Ok(text(to_json(&answer)?)),
        Err(error) => Ok(tool_error(format!("elicitation failed: {error}"))),
    }
}

/// `add_tool`: registers an echo tool and tells this session the list changed.
async fn add_tool(
    server: &FakeUpstream,
    args: &JsonObject,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let name = required_str(args, "name")?;
    if name.is_empty() {
        return Err(ErrorData::invalid_params("name must not be empty", None));
    }
    if server
        .all_tools()?
        .iter()
        .any(|tool| tool.name.as_ref() == name)
    {
        return Ok(tool_error(format!("tool {name:?} already exists")));
    }
    server
        .shared
        .added_tools
        .write()
        .map_err(|_| ErrorData::internal_error("server state lock poisoned", None))?
        .push(name.to_owned());
    cx.peer
        .notify_tool_list_changed()
        .await
        .map_err(|e| ErrorData::internal_error(format!("cannot notify: {e}"), None))?;
    Ok(text(format!("added {name}")))
}

/// `log`: one `notifications/message`, unless below the session's level.
async fn log(
    server: &FakeUpstream,
    args: &JsonObject,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let level: LoggingLevel = serde_json::from_value(Value::from(required_str(args, "level")?))
        .map_err(|_| ErrorData::invalid_params("level must be a syslog level name", None))?;
    let message = required_str(args, "message")?;
    if !server.session.log_threshold.allows(level) {
        return Ok(text("filtered by logging/setLevel"));
    }
    let note = LoggingMessageNotificationParam::new(level, Value::from(message))
        .with_logger(server.shared.config.name.clone());
    cx.peer
        .notify_logging_message(note)
        .await
        .map_err(|e| ErrorData::internal_error(format!("cannot notify: {e}"), None))?;
    Ok(text("logged"))
}

/// A successful result with one text block.
fn text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

/// A tool-level error result with one text block.
fn tool_error(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// Serialises a client reply for a text block.
fn to_json(value: &impl serde::Serialize) -> Result<String, ErrorData> {
    serde_json::to_string(value)
        .map_err(|e| ErrorData::internal_error(format!("cannot encode reply: {e}"), None))
}

fn required_str<'a>(args: &'a JsonObject, name: &str) -> Result<&'a str, ErrorData> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ErrorData::invalid_params(format!("{name} must be a string"), None))
}

fn required_u64(args: &JsonObject, name: &str) -> Result<u64, ErrorData> {
    args.get(name).and_then(Value::as_u64).ok_or_else(|| {
        ErrorData::invalid_params(format!("{name} must be a non-negative integer"), None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            _ => panic!("test args must be an object"),
        }
    }

    #[test]
    fn add_keeps_integers_integral() {
        let result = add(&args(json!({ "a": 2, "b": 3 }))).unwrap();
        assert_eq!(result.structured_content, Some(json!({ "sum": 5 })));
        assert_eq!(result.content[0].as_text().unwrap().text, "5");
        let result = add(&args(json!({ "a": 0.5, "b": 1 }))).unwrap();
        assert_eq!(result.structured_content, Some(json!({ "sum": 1.5 })));
    }

    #[test]
    fn add_rejects_non_numbers() {
        assert!(add(&args(json!({ "a": "2", "b": 3 }))).is_err());
    }

    #[test]
    fn list_appends_extra_then_added_tools() {
        let tools = list(2, &["late".to_owned()]);
        let names: Vec<_> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names[0], "echo");
        assert_eq!(&names[names.len() - 3..], ["tool_0", "tool_1", "late"]);
    }
}
