//! Bundled demo upstreams, so `switchboard serve` federates something real
//! on a fresh machine with no other set-up. Each is a small but complete MCP
//! server over stdio (initialize, tools, resources, prompts, ping).

use anyhow::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::SystemTime;
use switchboard_protocol::{
    decode_message, encode_error, encode_result, params_object, to_raw, ErrorObject, Message,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::cli::DemoKind;

pub(crate) async fn run(kind: DemoKind) -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    while let Some(line) = lines.next_line().await? {
        let Ok(Message::Request(req)) = decode_message(line.as_bytes()) else {
            continue;
        };
        let params = params_object(req.params.as_deref()).unwrap_or_default();
        let reply = match kind {
            DemoKind::Clock => clock(&req.method, &params),
            DemoKind::Notes => notes_server(&req.method, &params, &mut notes),
        };
        let bytes = match reply {
            Ok(v) => encode_result(&req.id, &to_raw(&v)),
            Err(e) => encode_error(Some(&req.id), &e),
        };
        out.write_all(&bytes).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
    Ok(())
}

fn initialize(params: &serde_json::Map<String, Value>, name: &str, caps: Value) -> Value {
    let requested = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    json!({
        "protocolVersion": switchboard_protocol::version::negotiate(requested),
        "capabilities": caps,
        "serverInfo": { "name": name, "version": env!("CARGO_PKG_VERSION") },
    })
}

fn text(s: impl Into<String>) -> Value {
    json!({ "content": [{ "type": "text", "text": s.into() }] })
}

fn clock(method: &str, p: &serde_json::Map<String, Value>) -> Result<Value, ErrorObject> {
    match method {
        "initialize" => Ok(initialize(
            p,
            "switchboard-demo-clock",
            json!({ "tools": {} }),
        )),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": [
            { "name": "now", "description": "Current UTC time in RFC 3339 form.",
              "inputSchema": { "type": "object", "properties": {} },
              "annotations": { "readOnlyHint": true } },
            { "name": "unix_time", "description": "Seconds since the Unix epoch.",
              "inputSchema": { "type": "object", "properties": {} },
              "annotations": { "readOnlyHint": true } },
        ]})),
        "tools/call" => {
            let now = SystemTime::now();
            match p.get("name").and_then(Value::as_str) {
                Some("now") => Ok(text(humantime::format_rfc3339_seconds(now).to_string())),
                Some("unix_time") => {
                    let secs = now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    Ok(text(secs.to_string()))
                }
                other => Err(ErrorObject::invalid_params(format!(
                    "unknown tool: {}",
                    other.unwrap_or("")
                ))),
            }
        }
        other => Err(ErrorObject::method_not_found(other)),
    }
}

fn notes_server(
    method: &str,
    p: &serde_json::Map<String, Value>,
    notes: &mut BTreeMap<String, String>,
) -> Result<Value, ErrorObject> {
    let arg = |args: &Value, k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    match method {
        "initialize" => Ok(initialize(
            p,
            "switchboard-demo-notes",
            json!({ "tools": {}, "resources": {}, "prompts": {} }),
        )),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": [
            { "name": "add_note", "description": "Store a note under a title.",
              "inputSchema": { "type": "object", "required": ["title", "text"],
                "properties": { "title": { "type": "string" }, "text": { "type": "string" } } } },
            { "name": "list_notes", "description": "Titles of all notes.",
              "inputSchema": { "type": "object", "properties": {} },
              "annotations": { "readOnlyHint": true } },
        ]})),
        "tools/call" => {
            let args = p.get("arguments").cloned().unwrap_or(Value::Null);
            match p.get("name").and_then(Value::as_str) {
                Some("add_note") => {
                    let (Some(title), Some(body)) = (arg(&args, "title"), arg(&args, "text"))
                    else {
                        return Ok(
                            json!({ "isError": true, "content": [{ "type": "text", "text": "add_note needs string arguments \"title\" and \"text\"" }] }),
                        );
                    };
                    if notes.len() >= 1000 && !notes.contains_key(&title) {
                        return Ok(
                            json!({ "isError": true, "content": [{ "type": "text", "text": "the demo keeps at most 1000 notes" }] }),
                        );
                    }
                    notes.insert(title.clone(), body);
                    Ok(text(format!("saved note {title:?}")))
                }
                Some("list_notes") => {
                    Ok(text(notes.keys().cloned().collect::<Vec<_>>().join("\n")))
                }
                other => Err(ErrorObject::invalid_params(format!(
                    "unknown tool: {}",
                    other.unwrap_or("")
                ))),
            }
        }
        "resources/list" => Ok(json!({ "resources": notes.keys().map(|t| json!({
            "uri": format!("notes://{t}"), "name": t, "mimeType": "text/plain" })).collect::<Vec<_>>() })),
        "resources/templates/list" => Ok(json!({ "resourceTemplates": [
            { "uriTemplate": "notes://{title}", "name": "note", "mimeType": "text/plain" }] })),
        "resources/read" => {
            let uri = p.get("uri").and_then(Value::as_str).unwrap_or("");
            let title = uri.strip_prefix("notes://").unwrap_or("");
            match notes.get(title) {
                Some(body) => Ok(
                    json!({ "contents": [{ "uri": uri, "mimeType": "text/plain", "text": body }] }),
                ),
                None => Err(ErrorObject::new(
                    switchboard_protocol::code::RESOURCE_NOT_FOUND,
                    format!("no note at {uri}"),
                )),
            }
        }
        "prompts/list" => Ok(json!({ "prompts": [{ "name": "summarize_notes",
            "description": "Ask the model to summarise every note.", "arguments": [] }] })),
        "prompts/get" => {
            let all: Vec<String> = notes.iter().map(|(t, b)| format!("# {t}\n{b}")).collect();
            Ok(
                json!({ "messages": [{ "role": "user", "content": { "type": "text",
                "text": format!("Summarise these notes:\n\n{}", all.join("\n\n")) } }] }),
            )
        }
        other => Err(ErrorObject::method_not_found(other)),
    }
}
