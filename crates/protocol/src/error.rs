//! JSON-RPC error objects.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Error codes used on the wire.
///
/// The `-32000..=-32099` range is reserved for implementation-defined server
/// errors; the gateway's own codes live there and are documented in the README
/// so clients can tell a gateway failure from an upstream's own error.
pub mod code {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
    /// An upstream did not answer within its timeout (same value as the
    /// TypeScript SDK's `RequestTimeout`, which clients already recognise).
    pub const REQUEST_TIMEOUT: i32 = -32001;
    /// MCP legacy-era "resource not found".
    pub const RESOURCE_NOT_FOUND: i32 = -32002;
    /// The upstream owning the target is not connected.
    pub const UPSTREAM_UNAVAILABLE: i32 = -32010;
    /// A message exceeded a configured size limit.
    pub const MESSAGE_TOO_LARGE: i32 = -32011;
    /// The request was cancelled or the gateway is shutting down.
    pub const REQUEST_CANCELLED: i32 = -32012;
    /// A gateway-side limit (sessions, pending requests) is exhausted.
    pub const OVERLOADED: i32 = -32013;
    /// The client sent more requests than its rate limit allows.
    pub const RATE_LIMITED: i32 = -32014;
    /// 2026-07-28: a routing header (`MCP-Protocol-Version`, `Mcp-Method`,
    /// `Mcp-Name`, `Mcp-Param-*`) is missing or disagrees with the body.
    pub const HEADER_MISMATCH: i32 = -32020;
    /// 2026-07-28: the request needs a client capability it did not declare.
    pub const MISSING_CLIENT_CAPABILITY: i32 = -32021;
    /// 2026-07-28: the requested revision is not supported; `data.supported` lists those that are.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i32 = -32022;
}

/// A JSON-RPC error object: `{code, message, data?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: i32,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    #[must_use]
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn parse_error(detail: impl std::fmt::Display) -> Self {
        Self::new(code::PARSE_ERROR, format!("parse error: {detail}"))
    }

    pub fn invalid_request(detail: impl std::fmt::Display) -> Self {
        Self::new(code::INVALID_REQUEST, format!("invalid request: {detail}"))
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            code::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        )
    }

    pub fn invalid_params(detail: impl std::fmt::Display) -> Self {
        Self::new(code::INVALID_PARAMS, format!("invalid params: {detail}"))
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(code::INTERNAL_ERROR, format!("internal error: {detail}"))
    }
}

impl std::fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for ErrorObject {}
