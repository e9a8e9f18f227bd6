//! MCP wire protocol: JSON-RPC 2.0 messages, error codes and protocol versions.
//!
//! # Layout
//! - [`jsonrpc`]: message types that keep every payload (`params`, `result`) as raw
//!   JSON, so the gateway relays fields it does not know (`_meta`, vendor
//!   extensions, new schema keywords) byte for byte and never pays for a typed
//!   decode it does not need.
//! - [`error`]: JSON-RPC error objects and the codes the gateway uses.
//! - [`version`]: the protocol revisions and their negotiation.
//! - [`modern`]: the stateless revision's per-request `_meta`, routing-header
//!   checks, result envelopes and cache hints.
//!
//! # Invariants
//! - No IO: this crate only turns bytes into messages and back.
//! - Decoding never panics on any input; every malformed message maps to a
//!   JSON-RPC error the caller can answer with.

pub mod error;
pub mod jsonrpc;
pub mod modern;
pub mod version;

pub use error::{code, ErrorObject};
pub use jsonrpc::{
    decode, decode_message, empty_object, encode_error, encode_notification, encode_request,
    encode_result, params_object, to_raw, DecodeError, Decoded, Message, Notification, Request,
    RequestId, Response, ResponsePayload,
};
pub use serde_json::value::RawValue;
