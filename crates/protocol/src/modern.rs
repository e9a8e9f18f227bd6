//! The stateless revision (2026-07-28): per-request `_meta`, routing headers,
//! result envelopes and cache hints.
//!
//! A modern request carries everything a server needs in itself: the
//! revision, the client's capabilities and identity in
//! `params._meta`, and copies of the method and target name in HTTP headers
//! (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) so intermediaries can route
//! without reading the body. A server that reads the body must check that the
//! copies agree with it, or a proxy and the server could disagree about what
//! is being called. Everything here is pure, so the rules are table-tested.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::{code, ErrorObject};
use crate::jsonrpc::{params_object, to_raw};
use crate::version::LEGACY_VERSIONS;
use serde_json::value::RawValue;

/// Stateless-era revisions, oldest first.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

/// The newest stateless revision.
pub const LATEST_MODERN: &str = "2026-07-28";

/// `_meta` key naming the revision of one request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key with the client's capabilities for one request.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key with the client's name and version (optional).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key with the log level a request opts in to (no key, no logs).
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key on the notifications of a `subscriptions/listen` stream.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// `_meta` key with the server's identity on a `server/discover` result.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// `MCP-Protocol-Version` header.
pub const HEADER_VERSION: &str = "mcp-protocol-version";
/// `Mcp-Method` header: a copy of the body's `method`.
pub const HEADER_METHOD: &str = "mcp-method";
/// `Mcp-Name` header: a copy of `params.name` / `params.uri` / `params.taskId`.
pub const HEADER_NAME: &str = "mcp-name";
/// Prefix of the headers that copy `x-mcp-header` annotated tool arguments.
pub const HEADER_PARAM_PREFIX: &str = "mcp-param-";

/// Whether `version` is a stateless-era revision the gateway speaks.
pub fn is_modern(version: &str) -> bool {
    MODERN_VERSIONS.contains(&version)
}

/// Every revision the gateway speaks, oldest first: the `supported` list of
/// `-32022` errors and of `server/discover`.
pub fn all_versions() -> Vec<&'static str> {
    LEGACY_VERSIONS
        .iter()
        .chain(MODERN_VERSIONS)
        .copied()
        .collect()
}

/// Methods of the legacy era that the stateless revision removed; a modern
/// request for them is answered as an unknown method (HTTP 404, `-32601`).
pub const REMOVED_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
    "tasks/list",
    "tasks/result",
];

/// Methods whose complete results must carry `ttlMs` and `cacheScope`.
pub fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// Methods that may answer with an `InputRequiredResult`.
pub fn allows_input_required(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// The `params` field an `Mcp-Name` header copies, for methods that have one.
pub fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

// === errors ===

/// `-32022`: the revision is not one the gateway speaks; `data` lists those it does.
pub fn unsupported_version(requested: &str) -> ErrorObject {
    let supported = all_versions();
    ErrorObject::new(
        code::UNSUPPORTED_PROTOCOL_VERSION,
        format!(
            "unsupported protocol version {requested:?}; supported: {}",
            supported.join(", ")
        ),
    )
    .with_data(json!({ "supported": supported, "requested": requested }))
}

/// `-32020`: a routing header is missing, malformed or disagrees with the body.
pub fn header_mismatch(detail: impl std::fmt::Display) -> ErrorObject {
    ErrorObject::new(code::HEADER_MISMATCH, format!("header mismatch: {detail}"))
}

/// `-32021`: the request needs a client capability the client did not declare.
pub fn missing_capability(capability: &str, why: &str) -> ErrorObject {
    ErrorObject::new(
        code::MISSING_CLIENT_CAPABILITY,
        format!("missing client capability {capability:?}: {why}"),
    )
    .with_data(json!({ "requiredCapabilities": { capability: {} } }))
}

// === _meta ===

/// What a stateless request says about its client, read from `params._meta`.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMeta {
    /// The revision, already checked to be a supported modern one.
    pub protocol_version: &'static str,
    pub client_capabilities: Value,
    pub client_info: Option<Value>,
    /// Present only when the request opts in to log messages.
    pub log_level: Option<String>,
}

impl RequestMeta {
    /// Whether the client declared `capability` (`sampling`, `elicitation`, `roots`).
    pub fn has_capability(&self, capability: &str) -> bool {
        self.client_capabilities
            .get(capability)
            .is_some_and(|c| !c.is_null())
    }
}

/// Reads and validates the `_meta` of a stateless request: `-32602` when a
/// required key is missing or mistyped, `-32022` for an unknown revision.
pub fn parse_meta(params: Option<&RawValue>) -> Result<RequestMeta, ErrorObject> {
    let p = params_object(params)?;
    let meta = p.get("_meta").and_then(Value::as_object).ok_or_else(|| {
        ErrorObject::invalid_params(format!(
            "stateless requests need params._meta with {META_PROTOCOL_VERSION:?} and {META_CLIENT_CAPABILITIES:?}"
        ))
    })?;
    let version = meta
        .get(META_PROTOCOL_VERSION)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ErrorObject::invalid_params(format!("missing _meta {META_PROTOCOL_VERSION:?}"))
        })?;
    let capabilities = meta
        .get(META_CLIENT_CAPABILITIES)
        .filter(|c| c.is_object())
        .cloned()
        .ok_or_else(|| {
            ErrorObject::invalid_params(format!(
                "missing _meta {META_CLIENT_CAPABILITIES:?} (an object)"
            ))
        })?;
    let protocol_version = MODERN_VERSIONS
        .iter()
        .find(|v| **v == version)
        .copied()
        .ok_or_else(|| unsupported_version(version))?;
    Ok(RequestMeta {
        protocol_version,
        client_capabilities: capabilities,
        client_info: meta.get(META_CLIENT_INFO).cloned(),
        log_level: meta
            .get(META_LOG_LEVEL)
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

// === headers ===

/// Decodes a routing header value: `=?base64?…?=` carries any UTF-8; a plain
/// value must be printable ASCII, and surrounding whitespace is not part of it
/// (HTTP strips it).
pub fn decode_header_value(raw: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "value is not ASCII".to_owned())?;
    let text = text.trim_matches([' ', '\t']);
    if let Some(inner) = text
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .map_err(|e| format!("bad base64 value: {e}"))?;
        return String::from_utf8(bytes).map_err(|_| "base64 value is not UTF-8".to_owned());
    }
    if let Some(c) = text.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "character {c:?} is not allowed; use the =?base64?…?= form"
        ));
    }
    Ok(text.to_owned())
}

/// Whether a header value stands for the body value `body`: strings compare
/// exactly, numbers numerically (`1.0` = `1`), booleans as `true`/`false`.
pub fn header_matches(header: &str, body: &Value) -> bool {
    match body {
        Value::String(s) => header == s,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => match (header.parse::<f64>(), n.as_f64()) {
            (Ok(h), Some(b)) => h == b,
            _ => false,
        },
        _ => false,
    }
}

/// Checks the routing headers of a stateless request against its body.
///
/// `header` looks a header up by lower-case name. `tool_schema` is the
/// `inputSchema` of the called tool, when the request is a `tools/call` of a
/// known tool: its `x-mcp-header` annotations name the `Mcp-Param-*` headers.
pub fn check_headers<'a>(
    header: impl Fn(&str) -> Option<&'a [u8]>,
    method: &str,
    params: &Map<String, Value>,
    meta_version: Option<&str>,
    tool_schema: Option<&Value>,
) -> Result<(), ErrorObject> {
    let version = header(HEADER_VERSION)
        .ok_or_else(|| header_mismatch("missing MCP-Protocol-Version header"))?;
    if let Some(meta) = meta_version {
        if version != meta.as_bytes() {
            return Err(header_mismatch(format!(
                "MCP-Protocol-Version header {:?} differs from _meta {META_PROTOCOL_VERSION:?} {meta:?}",
                String::from_utf8_lossy(version)
            )));
        }
    }
    let m = header(HEADER_METHOD).ok_or_else(|| header_mismatch("missing Mcp-Method header"))?;
    let m = decode_header_value(m).map_err(|e| header_mismatch(format!("Mcp-Method: {e}")))?;
    if m != method {
        return Err(header_mismatch(format!(
            "Mcp-Method header {m:?} differs from the body's method {method:?}"
        )));
    }
    if let Some(field) = name_field(method) {
        let raw = header(HEADER_NAME)
            .ok_or_else(|| header_mismatch(format!("missing Mcp-Name header for {method}")))?;
        let name =
            decode_header_value(raw).map_err(|e| header_mismatch(format!("Mcp-Name: {e}")))?;
        let body = params
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name != body {
            return Err(header_mismatch(format!(
                "Mcp-Name header {name:?} differs from params.{field} {body:?}"
            )));
        }
    }
    if let Some(schema) = tool_schema {
        check_param_headers(&header, params, schema)?;
    }
    Ok(())
}

/// The `x-mcp-header` annotations of a tool's `inputSchema`: (property,
/// header name) pairs, for the `Mcp-Param-{Name}` headers a call must carry.
pub fn x_mcp_headers(schema: &Value) -> Vec<(String, String)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .filter_map(|(prop, def)| {
                    let name = def.get("x-mcp-header")?.as_str()?;
                    Some((prop.clone(), name.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The text an `Mcp-Param-*` header carries for an argument: strings as they
/// are, numbers and booleans in JSON form; `None` for null and structures,
/// which are never mirrored.
pub fn param_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks `Mcp-Param-{Name}` for each argument annotated with `x-mcp-header`:
/// a present, non-null argument needs a header that stands for it.
fn check_param_headers<'a>(
    header: &impl Fn(&str) -> Option<&'a [u8]>,
    params: &Map<String, Value>,
    schema: &Value,
) -> Result<(), ErrorObject> {
    let args = params.get("arguments").and_then(Value::as_object);
    for (prop, name) in x_mcp_headers(schema) {
        let key = format!("{HEADER_PARAM_PREFIX}{}", name.to_ascii_lowercase());
        let value = args.and_then(|a| a.get(&prop)).filter(|v| !v.is_null());
        match (header(&key), value) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(header_mismatch(format!(
                    "missing Mcp-Param-{name} header for argument {prop:?}"
                )))
            }
            (Some(_), None) => {
                return Err(header_mismatch(format!(
                    "Mcp-Param-{name} header sent but argument {prop:?} is absent"
                )))
            }
            (Some(raw), Some(v)) => {
                let h = decode_header_value(raw)
                    .map_err(|e| header_mismatch(format!("Mcp-Param-{name}: {e}")))?;
                if !header_matches(&h, v) {
                    return Err(header_mismatch(format!(
                        "Mcp-Param-{name} header {h:?} differs from argument {prop:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

// === results ===

/// Who may reuse a cached result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Any client may be served the result.
    Public,
    /// Only the authorization context that asked.
    Private,
}

impl CacheScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Public => "public",
            CacheScope::Private => "private",
        }
    }
}

/// `ttlMs` + `cacheScope` of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHint {
    pub ttl_ms: u64,
    pub scope: CacheScope,
}

impl CacheHint {
    /// Answers that say nothing may be reused: what a gateway must claim when
    /// it knows nothing better.
    pub const NONE: CacheHint = CacheHint {
        ttl_ms: 0,
        scope: CacheScope::Private,
    };

    /// The hint of a result built from two parts: it lives no longer than
    /// either, and is private if either is.
    #[must_use]
    pub fn combine(self, other: CacheHint) -> CacheHint {
        CacheHint {
            ttl_ms: self.ttl_ms.min(other.ttl_ms),
            scope: if self.scope == CacheScope::Private || other.scope == CacheScope::Private {
                CacheScope::Private
            } else {
                CacheScope::Public
            },
        }
    }

    /// Reads the hint a modern upstream put on a result, if it put one.
    pub fn from_result(result: &Map<String, Value>) -> Option<CacheHint> {
        let ttl_ms = result.get("ttlMs")?.as_u64()?;
        let scope = match result.get("cacheScope")?.as_str()? {
            "public" => CacheScope::Public,
            _ => CacheScope::Private,
        };
        Some(CacheHint { ttl_ms, scope })
    }
}

/// Returns `result` as a modern client must see it: `resultType` set
/// (`complete` unless the upstream said otherwise) and, for cacheable methods,
/// `ttlMs`/`cacheScope` from `hint` where the result has none.
pub fn annotate_result(method: &str, result: &RawValue, hint: CacheHint) -> Box<RawValue> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(result.get()) else {
        return result.to_owned();
    };
    if !map.contains_key("resultType") {
        map.insert("resultType".into(), Value::from("complete"));
    }
    let complete = map.get("resultType").and_then(Value::as_str) == Some("complete");
    if complete && is_cacheable(method) {
        let hint = CacheHint::from_result(&map).map_or(hint, |own| own.combine(hint));
        map.insert("ttlMs".into(), Value::from(hint.ttl_ms));
        map.insert("cacheScope".into(), Value::from(hint.scope.as_str()));
    }
    to_raw(&map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: Value) -> Box<RawValue> {
        to_raw(&v)
    }

    fn meta(version: &str) -> Value {
        json!({"_meta": {META_PROTOCOL_VERSION: version, META_CLIENT_CAPABILITIES: {"sampling": {}}}})
    }

    #[test]
    fn meta_with_version_and_capabilities_parses() {
        let m = parse_meta(Some(&raw(meta("2026-07-28")))).unwrap();
        assert_eq!(m.protocol_version, "2026-07-28");
        assert!(m.has_capability("sampling"));
        assert!(!m.has_capability("elicitation"));
        assert_eq!(m.client_info, None);
    }

    #[test]
    fn meta_problems_map_to_their_codes() {
        let cases = [
            (json!({}), code::INVALID_PARAMS),
            (json!({"_meta": {}}), code::INVALID_PARAMS),
            (
                json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}),
                code::INVALID_PARAMS,
            ),
            (
                json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: "x"}}),
                code::INVALID_PARAMS,
            ),
            (meta("2099-01-01"), code::UNSUPPORTED_PROTOCOL_VERSION),
            (meta("2025-11-25"), code::UNSUPPORTED_PROTOCOL_VERSION),
        ];
        for (params, want) in cases {
            let e = parse_meta(Some(&raw(params.clone()))).unwrap_err();
            assert_eq!(e.code, want, "{params}");
        }
    }

    #[test]
    fn unsupported_version_lists_every_supported_one() {
        let e = unsupported_version("1999-01-01");
        let data = e.data.unwrap();
        assert_eq!(data["requested"], "1999-01-01");
        let supported: Vec<&str> = data["supported"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(supported.contains(&"2025-11-25") && supported.contains(&"2026-07-28"));
    }

    #[test]
    fn header_values_decode_plain_and_base64() {
        let cases: &[(&[u8], Result<&str, ()>)] = &[
            (b"get_weather", Ok("get_weather")),
            (b"  padded  ", Ok("padded")),
            (b"has space", Ok("has space")),
            (b"=?base64?5pel5pys?=", Ok("日本")),
            (b"=?base64?IGxlYWQ=?=", Ok(" lead")),
            (b"=?base64?!!!?=", Err(())),
            (b"tab\tinside", Err(())),
            (b"\xff", Err(())),
        ];
        for (input, want) in cases {
            let got = decode_header_value(input);
            match want {
                Ok(s) => assert_eq!(got.as_deref(), Ok(*s), "{input:?}"),
                Err(()) => assert!(got.is_err(), "{input:?} decoded as {got:?}"),
            }
        }
    }

    #[test]
    fn header_values_compare_by_type() {
        let cases = [
            ("42", json!(42), true),
            ("42.0", json!(42), true),
            ("4.2e1", json!(42), true),
            ("43", json!(42), false),
            ("true", json!(true), true),
            ("True", json!(true), false),
            ("us-west", json!("us-west"), true),
            ("us-west", json!("us-east"), false),
            ("1", json!("01"), false),
            ("x", json!({"a": 1}), false),
        ];
        for (h, body, want) in cases {
            assert_eq!(header_matches(h, &body), want, "{h} vs {body}");
        }
    }

    fn check(
        headers: &[(&str, &str)],
        method: &str,
        params: Value,
        schema: Option<Value>,
    ) -> Result<(), i32> {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
        };
        let Value::Object(p) = params else {
            panic!("params must be an object")
        };
        check_headers(lookup, method, &p, Some("2026-07-28"), schema.as_ref()).map_err(|e| e.code)
    }

    #[test]
    fn routing_headers_must_agree_with_the_body() {
        let v = ("MCP-Protocol-Version", "2026-07-28");
        let call = json!({"name": "echo", "arguments": {}});
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, Value, Result<(), i32>);
        let cases: Vec<Case> = vec![
            (
                vec![v, ("Mcp-Method", "tools/list")],
                "tools/list",
                json!({}),
                Ok(()),
            ),
            (
                vec![("Mcp-Method", "tools/list")],
                "tools/list",
                json!({}),
                Err(code::HEADER_MISMATCH),
            ),
            (
                vec![
                    ("MCP-Protocol-Version", "2025-11-25"),
                    ("Mcp-Method", "tools/list"),
                ],
                "tools/list",
                json!({}),
                Err(code::HEADER_MISMATCH),
            ),
            (vec![v], "tools/list", json!({}), Err(code::HEADER_MISMATCH)),
            (
                vec![v, ("Mcp-Method", "tools/call")],
                "tools/list",
                json!({}),
                Err(code::HEADER_MISMATCH),
            ),
            (
                vec![v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")],
                "tools/call",
                call.clone(),
                Ok(()),
            ),
            (
                vec![v, ("Mcp-Method", "tools/call")],
                "tools/call",
                call.clone(),
                Err(code::HEADER_MISMATCH),
            ),
            (
                vec![v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "other")],
                "tools/call",
                call.clone(),
                Err(code::HEADER_MISMATCH),
            ),
            (
                vec![
                    v,
                    ("Mcp-Method", "tools/call"),
                    ("Mcp-Name", "=?base64?ZWNobw==?="),
                ],
                "tools/call",
                call,
                Ok(()),
            ),
            (
                vec![
                    v,
                    ("Mcp-Method", "resources/read"),
                    ("Mcp-Name", "test://a"),
                ],
                "resources/read",
                json!({"uri": "test://a"}),
                Ok(()),
            ),
            (
                vec![
                    v,
                    ("Mcp-Method", "resources/read"),
                    ("Mcp-Name", "test://b"),
                ],
                "resources/read",
                json!({"uri": "test://a"}),
                Err(code::HEADER_MISMATCH),
            ),
        ];
        for (headers, method, params, want) in cases {
            assert_eq!(
                check(&headers, method, params, None),
                want,
                "{headers:?} {method}"
            );
        }
    }

    #[test]
    fn param_headers_follow_x_mcp_header_annotations() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "priority": {"type": "integer", "x-mcp-header": "Priority"},
            "query": {"type": "string"},
        }});
        let base = [
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "t"),
        ];
        let args = |a: Value| json!({"name": "t", "arguments": a});
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut h = base.to_vec();
            h.extend_from_slice(extra);
            h
        };
        let cases = [
            (
                with(&[("Mcp-Param-Region", "eu"), ("Mcp-Param-Priority", "3")]),
                args(json!({"region": "eu", "priority": 3, "query": "q"})),
                Ok(()),
            ),
            (
                with(&[("mcp-param-region", "eu"), ("Mcp-Param-Priority", "3.0")]),
                args(json!({"region": "eu", "priority": 3})),
                Ok(()),
            ),
            (
                with(&[("Mcp-Param-Region", "eu")]),
                args(json!({"region": "eu", "priority": 3})),
                Err(code::HEADER_MISMATCH),
            ),
            (
                with(&[("Mcp-Param-Region", "us"), ("Mcp-Param-Priority", "3")]),
                args(json!({"region": "eu", "priority": 3})),
                Err(code::HEADER_MISMATCH),
            ),
            (
                with(&[("Mcp-Param-Region", "=?base64?w6l1?=")]),
                args(json!({"region": "éu", "priority": null})),
                Ok(()),
            ),
            (
                with(&[("Mcp-Param-Region", "eu"), ("Mcp-Param-Priority", "3")]),
                args(json!({"region": "eu"})),
                Err(code::HEADER_MISMATCH),
            ),
            (with(&[]), args(json!({"query": "q"})), Ok(())),
        ];
        for (headers, params, want) in cases {
            assert_eq!(
                check(&headers, "tools/call", params.clone(), Some(schema.clone())),
                want,
                "{headers:?} {params}"
            );
        }
    }

    #[test]
    fn annotations_and_header_texts() {
        let schema = json!({"properties": {"a": {"x-mcp-header": "A"}, "b": {"type": "string"}}});
        assert_eq!(
            x_mcp_headers(&schema),
            vec![("a".to_owned(), "A".to_owned())]
        );
        assert!(x_mcp_headers(&json!({})).is_empty());
        assert_eq!(param_text(&json!(3)).as_deref(), Some("3"));
        assert_eq!(param_text(&json!(false)).as_deref(), Some("false"));
        assert_eq!(param_text(&json!("x")).as_deref(), Some("x"));
        assert_eq!(param_text(&json!(null)), None);
        assert_eq!(param_text(&json!([1])), None);
    }

    #[test]
    fn results_get_a_result_type_and_cache_hints_where_required() {
        let r = annotate_result("tools/list", &raw(json!({"tools": []})), CacheHint::NONE);
        let v: Value = serde_json::from_str(r.get()).unwrap();
        assert_eq!(
            v,
            json!({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"})
        );

        let r = annotate_result("tools/call", &raw(json!({"content": []})), CacheHint::NONE);
        let v: Value = serde_json::from_str(r.get()).unwrap();
        assert_eq!(v, json!({"content": [], "resultType": "complete"}));

        let pending = json!({"resultType": "input_required", "inputRequests": {}});
        let r = annotate_result("resources/read", &raw(pending.clone()), CacheHint::NONE);
        assert_eq!(serde_json::from_str::<Value>(r.get()).unwrap(), pending);
    }

    #[test]
    fn an_upstream_hint_is_narrowed_by_the_gateways() {
        let upstream = json!({"contents": [], "ttlMs": 60000, "cacheScope": "public"});
        let gw = CacheHint {
            ttl_ms: 5000,
            scope: CacheScope::Public,
        };
        let r = annotate_result("resources/read", &raw(upstream), gw);
        let v: Value = serde_json::from_str(r.get()).unwrap();
        assert_eq!(
            (v["ttlMs"].as_u64(), v["cacheScope"].as_str()),
            (Some(5000), Some("public"))
        );
        let private = CacheHint {
            ttl_ms: 1,
            scope: CacheScope::Private,
        };
        assert_eq!(gw.combine(private), private);
    }
}
