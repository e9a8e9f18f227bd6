//! Upstreams of the stateless revision (2026-07-28).
//!
//! Era detection follows the spec's back-compat rule for HTTP clients: probe
//! with `server/discover`; a `DiscoverResult` naming 2026-07-28 means the
//! server speaks it, anything else falls back to `initialize`. A server that
//! speaks both eras is driven in the legacy era: there its tools can still
//! make server→client requests (sampling, elicitation, roots), which the
//! gateway relays to clients of either era, while a stateless call of the same
//! tool could not. Only modern-only servers are called statelessly.
//!
//! stdio servers are probed the same way, before `initialize` (see
//! `supervisor::probe_stdio`), and the same rule decides.
//!
//! A stateless call carries the revision, the client's capabilities and
//! identity in `params._meta`, and over HTTP the routing headers
//! (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) that the server checks
//! against the body; stdio has no headers, `_meta` alone says it all.

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use switchboard_protocol::modern::{
    self as wire, LATEST_MODERN, META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_PROTOCOL_VERSION,
    META_SERVER_INFO,
};
use switchboard_protocol::to_raw;

use crate::{ServerInfo, CLIENT_NAME, CLIENT_VERSION};

/// The capabilities the gateway declares upstream: everything it can relay
/// to its own clients or translate for them.
fn capabilities() -> Value {
    json!({ "sampling": {}, "elicitation": {}, "roots": {} })
}

/// Params of a stateless request: `params` with the per-request `_meta`
/// added (the caller's own `_meta` keys, such as `progressToken`, kept).
pub(crate) fn with_meta(params: Option<&RawValue>) -> Box<RawValue> {
    let mut p: Map<String, Value> = params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let meta = p
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = meta {
        m.insert(META_PROTOCOL_VERSION.into(), Value::from(LATEST_MODERN));
        // A stateless client's own capabilities, when the gateway forwards
        // them; else everything the gateway can relay.
        m.entry(META_CLIENT_CAPABILITIES)
            .or_insert_with(capabilities);
        m.insert(
            META_CLIENT_INFO.into(),
            json!({ "name": CLIENT_NAME, "version": CLIENT_VERSION }),
        );
    }
    to_raw(&p)
}

/// Encodes a routing header value: plain when it is printable ASCII without
/// surrounding spaces, else the `=?base64?…?=` form.
pub(crate) fn header_value(text: &str) -> Option<HeaderValue> {
    let plain = !text.is_empty()
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.starts_with("=?");
    if plain {
        HeaderValue::from_str(text).ok()
    } else {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        HeaderValue::from_str(&format!("=?base64?{encoded}?=")).ok()
    }
}

/// A request rewritten for a stateless upstream: the method (`ping` became
/// `server/discover`, which the revision keeps as its liveness probe), the
/// params with `_meta`, and the routing headers.
pub(crate) struct Prepared {
    pub(crate) method: String,
    pub(crate) params: Box<RawValue>,
    pub(crate) headers: HeaderMap,
}

/// Tools of one upstream whose arguments must be mirrored in `Mcp-Param-*`
/// headers, learned from its `tools/list` pages: tool → (property, header).
#[derive(Debug, Default)]
pub(crate) struct ParamHeaders {
    tools: std::collections::HashMap<String, Vec<(String, String)>>,
}

/// Annotated tools remembered per upstream at most.
const MAX_ANNOTATED_TOOLS: usize = 10_000;

impl ParamHeaders {
    /// Reads the `x-mcp-header` annotations of a `tools/list` page.
    pub(crate) fn learn(&mut self, result: &RawValue) {
        let Ok(v) = serde_json::from_str::<Value>(result.get()) else {
            return;
        };
        for tool in v
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(name), Some(schema)) = (
                tool.get("name").and_then(Value::as_str),
                tool.get("inputSchema"),
            ) else {
                continue;
            };
            let pairs = wire::x_mcp_headers(schema);
            if pairs.is_empty() {
                self.tools.remove(name);
            } else if self.tools.len() < MAX_ANNOTATED_TOOLS || self.tools.contains_key(name) {
                self.tools.insert(name.to_owned(), pairs);
            }
        }
    }

    pub(crate) fn get(&self, tool: &str) -> Option<&[(String, String)]> {
        self.tools.get(tool).map(Vec::as_slice)
    }
}

/// The method a stateless upstream is sent in place of `method`: `ping`
/// became `server/discover`, which the revision keeps as its liveness probe.
pub(crate) fn stateless_method(method: &str) -> &str {
    if method == "ping" {
        "server/discover"
    } else {
        method
    }
}

pub(crate) fn prepare(method: &str, params: Option<&RawValue>) -> Prepared {
    prepare_with(method, params, &ParamHeaders::default())
}

/// [`prepare`], adding the `Mcp-Param-*` headers of annotated tools.
pub(crate) fn prepare_with(
    method: &str,
    params: Option<&RawValue>,
    annotated: &ParamHeaders,
) -> Prepared {
    let method = stateless_method(method);
    let params = with_meta(params);
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static(wire::HEADER_VERSION),
        HeaderValue::from_static(LATEST_MODERN),
    );
    if let Some(v) = header_value(method) {
        headers.insert(HeaderName::from_static(wire::HEADER_METHOD), v);
    }
    if let Some(field) = wire::name_field(method) {
        let body = serde_json::from_str::<Value>(params.get()).unwrap_or(Value::Null);
        let name = body.get(field).and_then(Value::as_str);
        if let Some(v) = name.and_then(header_value) {
            headers.insert(HeaderName::from_static(wire::HEADER_NAME), v);
        }
        let pairs = (method == "tools/call")
            .then_some(name)
            .flatten()
            .and_then(|n| annotated.get(n));
        for (prop, header) in pairs.into_iter().flatten() {
            let text = body
                .get("arguments")
                .and_then(|a| a.get(prop))
                .and_then(wire::param_text);
            let key = format!(
                "{}{}",
                wire::HEADER_PARAM_PREFIX,
                header.to_ascii_lowercase()
            );
            if let (Some(text), Ok(key)) = (text, HeaderName::try_from(key)) {
                if let Some(v) = header_value(&text) {
                    headers.insert(key, v);
                }
            }
        }
    }
    Prepared {
        method: method.to_owned(),
        params,
        headers,
    }
}

/// Refuses, before sending, the legacy methods the stateless revision
/// removed; the message says what replaces them.
pub(crate) fn removed(method: &str) -> Option<switchboard_protocol::ErrorObject> {
    let instead = match method {
        "resources/subscribe" | "resources/unsubscribe" => {
            "resource updates come through subscriptions/listen, where the gateway opts in to list changes only"
        }
        "logging/setLevel" => "stateless requests carry their log level in _meta",
        _ => return None,
    };
    Some(switchboard_protocol::ErrorObject::method_not_found(method).with_data(json!({
        "reason": format!("the upstream speaks only 2026-07-28, which removed {method}: {instead}")
    })))
}

/// The list changes a server's capabilities say it announces, as they
/// are named in a `subscriptions/listen` filter and in the notifications
/// that follow: (filter key, notification method).
const LIST_CHANGES: [(&str, &str, &str); 3] = [
    (
        "tools",
        "toolsListChanged",
        "notifications/tools/list_changed",
    ),
    (
        "prompts",
        "promptsListChanged",
        "notifications/prompts/list_changed",
    ),
    (
        "resources",
        "resourcesListChanged",
        "notifications/resources/list_changed",
    ),
];

/// The `subscriptions/listen` params the gateway opens on a stateless
/// upstream: every list change the server's capabilities announce (the
/// gateway re-discovers its catalog on each). `None` when it announces none,
/// so no stream is held open for nothing.
pub(crate) fn listen_params(capabilities: &Value) -> Option<Box<RawValue>> {
    let mut filter = Map::new();
    for (capability, key, _) in LIST_CHANGES {
        let announced = capabilities
            .get(capability)
            .and_then(|c| c.get("listChanged"))
            .and_then(Value::as_bool)
            == Some(true);
        if announced {
            filter.insert(key.into(), Value::Bool(true));
        }
    }
    (!filter.is_empty()).then(|| to_raw(&json!({ "notifications": filter })))
}

/// The list-change notifications a `subscriptions/listen` params value
/// opted in to: what may have been missed while the stream was down.
pub(crate) fn listened_changes(params: &RawValue) -> Vec<&'static str> {
    let v: Value = serde_json::from_str(params.get()).unwrap_or(Value::Null);
    LIST_CHANGES
        .iter()
        .filter(|(_, key, _)| v["notifications"][key] == Value::Bool(true))
        .map(|(_, _, method)| *method)
        .collect()
}

/// The acknowledgement that opens a `subscriptions/listen` stream; it
/// concerns the stream, not the gateway's clients.
pub(crate) const LISTEN_ACK: &str = "notifications/subscriptions/acknowledged";

/// What a `server/discover` answer says about the server's era.
#[derive(Debug)]
pub(crate) enum Discovered {
    /// Speaks only the stateless revision: call it statelessly.
    Modern(ServerInfo),
    /// Speaks 2026-07-28 and a legacy revision: drive it in the legacy era.
    Dual,
    /// Not a discover result we can use: fall back to `initialize`.
    Legacy,
}

/// Reads a `server/discover` result.
pub(crate) fn parse_discover(result: &RawValue) -> Discovered {
    let Ok(v) = serde_json::from_str::<Value>(result.get()) else {
        return Discovered::Legacy;
    };
    let versions: Vec<&str> = v
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !versions.contains(&LATEST_MODERN) {
        return Discovered::Legacy;
    }
    if versions
        .iter()
        .any(|v| switchboard_protocol::version::supported(v).is_some())
    {
        return Discovered::Dual;
    }
    Discovered::Modern(ServerInfo {
        protocol_version: LATEST_MODERN.to_owned(),
        capabilities: v.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        server_info: v
            .pointer(&format!("/_meta/{}", META_SERVER_INFO.replace('/', "~1")))
            .or_else(|| v.get("serverInfo"))
            .cloned()
            .unwrap_or_else(|| json!({})),
        instructions: v
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: Value) -> Box<RawValue> {
        to_raw(&v)
    }

    #[test]
    fn stateless_params_carry_meta_and_keep_the_callers() {
        let p = with_meta(Some(&raw(
            json!({"name": "t", "_meta": {"progressToken": 7}}),
        )));
        let v: Value = serde_json::from_str(p.get()).unwrap();
        assert_eq!(v["_meta"]["progressToken"], 7);
        assert_eq!(v["_meta"][META_PROTOCOL_VERSION], LATEST_MODERN);
        assert!(v["_meta"][META_CLIENT_CAPABILITIES]["sampling"].is_object());
        assert_eq!(v["name"], "t");
    }

    #[test]
    fn routing_headers_copy_the_body_and_encode_what_is_not_plain() {
        let p = prepare("tools/call", Some(&raw(json!({"name": "日本"}))));
        assert_eq!(p.headers["mcp-method"], "tools/call");
        let name = p.headers["mcp-name"].to_str().unwrap();
        assert_eq!(
            switchboard_protocol::modern::decode_header_value(name.as_bytes()).as_deref(),
            Ok("日本")
        );
        let p = prepare("resources/read", Some(&raw(json!({"uri": "test://a"}))));
        assert_eq!(p.headers["mcp-name"], "test://a");
        assert!(removed("resources/subscribe").is_some());
        assert!(removed("tools/call").is_none());
        let p = prepare("ping", None);
        assert_eq!(p.method, "server/discover");
        assert!(p.headers.get("mcp-name").is_none());
    }

    #[test]
    fn annotated_arguments_are_mirrored_in_param_headers() {
        let mut known = ParamHeaders::default();
        known.learn(&raw(json!({"tools": [
            {"name": "t", "inputSchema": {"properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "n": {"type": "integer", "x-mcp-header": "N"},
                "q": {"type": "string"},
            }}},
            {"name": "plain", "inputSchema": {"properties": {"q": {"type": "string"}}}},
        ]})));
        let p = prepare_with(
            "tools/call",
            Some(&raw(
                json!({"name": "t", "arguments": {"region": " eu", "n": 3, "q": "x"}}),
            )),
            &known,
        );
        assert_eq!(p.headers["mcp-param-n"], "3");
        let region = p.headers["mcp-param-region"].to_str().unwrap();
        assert_eq!(
            switchboard_protocol::modern::decode_header_value(region.as_bytes()).as_deref(),
            Ok(" eu")
        );
        assert!(p.headers.get("mcp-param-q").is_none());
        let p = prepare_with("tools/call", Some(&raw(json!({"name": "plain"}))), &known);
        assert!(!p
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("mcp-param-")));
    }

    #[test]
    fn the_listen_filter_asks_for_the_announced_list_changes_only() {
        let caps = json!({"tools": {"listChanged": true}, "prompts": {}, "resources": {"listChanged": false}});
        let params = listen_params(&caps).unwrap();
        let v: Value = serde_json::from_str(params.get()).unwrap();
        assert_eq!(v, json!({"notifications": {"toolsListChanged": true}}));
        assert_eq!(
            listened_changes(&params),
            ["notifications/tools/list_changed"]
        );
        assert!(listen_params(&json!({"tools": {}})).is_none());
    }

    #[test]
    fn discover_results_decide_the_era() {
        let modern = parse_discover(&raw(json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}},
            "_meta": {META_SERVER_INFO: {"name": "m"}},
        })));
        let Discovered::Modern(info) = modern else {
            panic!("{modern:?}")
        };
        assert_eq!(info.server_info["name"], "m");
        assert!(matches!(
            parse_discover(&raw(
                json!({"supportedVersions": ["2025-11-25", "2026-07-28"]})
            )),
            Discovered::Dual
        ));
        assert!(matches!(
            parse_discover(&raw(json!({"supportedVersions": ["2099-01-01"]}))),
            Discovered::Legacy
        ));
        assert!(matches!(
            parse_discover(&raw(json!([]))),
            Discovered::Legacy
        ));
    }
}
