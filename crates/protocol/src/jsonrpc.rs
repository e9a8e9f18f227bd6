//! JSON-RPC 2.0 messages with raw payloads.
//!
//! A message is classified (request, notification, response) from its
//! envelope alone; `params` and `result` stay raw JSON. Encoding writes the
//! envelope by hand around the raw payload, so relaying a result costs one
//! copy of its bytes and no parse of its contents.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

use crate::error::ErrorObject;

/// A JSON-RPC request id: a string or an integer, never null.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    String(String),
}

impl RequestId {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Number(n) => n.as_i64().map(RequestId::Number),
            Value::String(s) => Some(RequestId::String(s)),
            _ => None,
        }
    }

    /// Appends the id as JSON.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            RequestId::Number(n) => {
                out.extend_from_slice(itoa_i64(*n).as_bytes());
            }
            RequestId::String(s) => write_json_str(out, s),
        }
    }

    /// Returns the id as a JSON value (for `notifications/cancelled` and the like).
    pub fn to_value(&self) -> Value {
        match self {
            RequestId::Number(n) => Value::from(*n),
            RequestId::String(s) => Value::from(s.as_str()),
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{s:?}"),
        }
    }
}

fn itoa_i64(n: i64) -> String {
    n.to_string()
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A request: it expects exactly one response with the same id.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: RequestId,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

/// A notification: no id, no response.
#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

/// A response to a request, success or error.
#[derive(Debug, Clone)]
pub struct Response {
    pub id: RequestId,
    pub payload: ResponsePayload,
}

#[derive(Debug, Clone)]
pub enum ResponsePayload {
    Result(Box<RawValue>),
    Error(ErrorObject),
}

/// Any JSON-RPC message.
#[derive(Debug, Clone)]
pub enum Message {
    Request(Request),
    Notification(Notification),
    Response(Response),
}

/// Why bytes are not a usable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all; answered with `-32700` and a null id.
    #[error("parse error: {0}")]
    Parse(String),
    /// JSON, but not a valid JSON-RPC message; answered with `-32600`, echoing
    /// the id when one could be read.
    #[error("invalid request: {reason}")]
    Invalid {
        id: Option<RequestId>,
        reason: String,
    },
}

impl DecodeError {
    /// The id to answer with, when the message had a usable one.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            DecodeError::Parse(_) => None,
            DecodeError::Invalid { id, .. } => id.as_ref(),
        }
    }

    pub fn to_error_object(&self) -> ErrorObject {
        match self {
            DecodeError::Parse(detail) => ErrorObject::parse_error(detail),
            DecodeError::Invalid { reason, .. } => ErrorObject::invalid_request(reason),
        }
    }
}

/// A decoded HTTP body or line: one message or a batch.
#[derive(Debug)]
pub enum Decoded {
    Single(Message),
    Batch(Vec<Result<Message, DecodeError>>),
}

/// Deserialises a field that is present (even when `null`) as `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    jsonrpc: Option<String>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<Box<RawValue>>,
}

/// Decodes a body that may be a single message or a batch array.
///
/// Whether a batch is *allowed* depends on the negotiated protocol version and
/// is the caller's decision.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'[') {
        let items: Vec<Box<RawValue>> =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Parse(e.to_string()))?;
        if items.is_empty() {
            return Err(DecodeError::Invalid {
                id: None,
                reason: "empty batch".into(),
            });
        }
        Ok(Decoded::Batch(
            items
                .iter()
                .map(|raw| decode_message(raw.get().as_bytes()))
                .collect(),
        ))
    } else {
        decode_message(bytes).map(Decoded::Single)
    }
}

/// Decodes exactly one message.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let env: Envelope = match serde_json::from_slice(bytes) {
        Ok(env) => env,
        Err(e) if e.is_data() => {
            return Err(DecodeError::Invalid {
                id: None,
                reason: e.to_string(),
            })
        }
        Err(e) => return Err(DecodeError::Parse(e.to_string())),
    };
    classify(env)
}

fn classify(env: Envelope) -> Result<Message, DecodeError> {
    let id = match env.id {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => match RequestId::from_value(v) {
            Some(id) => Some(Some(id)),
            None => {
                return Err(DecodeError::Invalid {
                    id: None,
                    reason: "id must be a string or an integer".into(),
                })
            }
        },
    };
    let known_id = id.clone().flatten();
    let invalid = |reason: &str| DecodeError::Invalid {
        id: known_id.clone(),
        reason: reason.into(),
    };
    if env.jsonrpc.as_deref() != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    if let Some(params) = &env.params {
        if !matches!(params.get().as_bytes().first(), Some(b'{') | Some(b'[')) {
            return Err(invalid("\"params\" must be an object"));
        }
    }
    if let Some(method) = env.method {
        if env.result.is_some() || env.error.is_some() {
            return Err(invalid(
                "a message cannot have both \"method\" and \"result\"/\"error\"",
            ));
        }
        return match id {
            None => Ok(Message::Notification(Notification {
                method,
                params: env.params,
            })),
            Some(None) => Err(invalid("request id must not be null")),
            Some(Some(id)) => Ok(Message::Request(Request {
                id,
                method,
                params: env.params,
            })),
        };
    }
    let id = match id {
        Some(Some(id)) => id,
        _ => return Err(invalid("message has no \"method\" and no usable \"id\"")),
    };
    let payload = match (env.result, env.error) {
        (Some(result), None) => ResponsePayload::Result(result),
        (None, Some(error)) => match serde_json::from_str::<ErrorObject>(error.get()) {
            Ok(error) => ResponsePayload::Error(error),
            Err(e) => return Err(invalid(&format!("malformed \"error\": {e}"))),
        },
        (Some(_), Some(_)) => return Err(invalid("response has both \"result\" and \"error\"")),
        (None, None) => {
            return Err(invalid(
                "message has no \"method\", \"result\" or \"error\"",
            ))
        }
    };
    Ok(Message::Response(Response { id, payload }))
}

// === encoding ===

const PREFIX: &[u8] = br#"{"jsonrpc":"2.0""#;

/// Encodes a request.
pub fn encode_request(id: &RequestId, method: &str, params: Option<&RawValue>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + params.map_or(0, |p| p.get().len()));
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(br#","id":"#);
    id.write_json(&mut out);
    out.extend_from_slice(br#","method":"#);
    write_json_str(&mut out, method);
    if let Some(params) = params {
        out.extend_from_slice(br#","params":"#);
        out.extend_from_slice(params.get().as_bytes());
    }
    out.push(b'}');
    out
}

/// Encodes a notification.
pub fn encode_notification(method: &str, params: Option<&RawValue>) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + params.map_or(0, |p| p.get().len()));
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(br#","method":"#);
    write_json_str(&mut out, method);
    if let Some(params) = params {
        out.extend_from_slice(br#","params":"#);
        out.extend_from_slice(params.get().as_bytes());
    }
    out.push(b'}');
    out
}

/// Encodes a success response around a raw result.
pub fn encode_result(id: &RequestId, result: &RawValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + result.get().len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(br#","id":"#);
    id.write_json(&mut out);
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(result.get().as_bytes());
    out.push(b'}');
    out
}

/// Encodes an error response; `id` is `None` only when the request's id could
/// not be read (parse errors), and is then written as `null`.
pub fn encode_error(id: Option<&RequestId>, error: &ErrorObject) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + error.message.len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(br#","id":"#);
    match id {
        Some(id) => id.write_json(&mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","error":"#);
    // An ErrorObject is plain data; serialising it into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, error);
    out.push(b'}');
    out
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        match &self.payload {
            ResponsePayload::Result(result) => encode_result(&self.id, result),
            ResponsePayload::Error(error) => encode_error(Some(&self.id), error),
        }
    }
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => encode_request(&r.id, &r.method, r.params.as_deref()),
            Message::Notification(n) => encode_notification(&n.method, n.params.as_deref()),
            Message::Response(r) => r.encode(),
        }
    }
}

/// Parses raw params as a JSON object; absent params become an empty object.
pub fn params_object(params: Option<&RawValue>) -> Result<Map<String, Value>, ErrorObject> {
    match params {
        None => Ok(Map::new()),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| ErrorObject::invalid_params(format!("params must be an object: {e}"))),
    }
}

/// Turns a JSON value into raw JSON.
pub fn to_raw(value: &impl Serialize) -> Box<RawValue> {
    // Values built by the gateway always serialise; fall back to `{}` rather
    // than panic if that ever changes.
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| empty_object())
}

/// Returns `{}` as raw JSON.
pub fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable_raw())
}

#[allow(clippy::unwrap_used)]
fn unreachable_raw() -> Box<RawValue> {
    // "null" is valid JSON; this cannot fail.
    RawValue::from_string("null".to_owned()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Result<Message, DecodeError> {
        decode_message(s.as_bytes())
    }

    #[test]
    fn a_request_keeps_its_params_byte_for_byte() {
        let raw = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"vendor.io/k":[1,2]},"zz":1.50}}"#;
        let Ok(Message::Request(r)) = dec(raw) else {
            panic!("not a request")
        };
        assert_eq!(r.id, RequestId::Number(7));
        assert_eq!(
            r.params.unwrap().get(),
            r#"{"name":"x","_meta":{"vendor.io/k":[1,2]},"zz":1.50}"#
        );
    }

    #[test]
    fn classification_follows_the_envelope() {
        assert!(matches!(
            dec(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification(_))
        ));
        assert!(matches!(
            dec(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Message::Response(Response {
                payload: ResponsePayload::Result(_),
                ..
            }))
        ));
        assert!(matches!(
            dec(r#"{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"m"}}"#),
            Ok(Message::Response(Response {
                payload: ResponsePayload::Error(_),
                ..
            }))
        ));
    }

    #[test]
    fn malformed_messages_get_the_right_error_and_keep_their_id() {
        let cases: &[(&str, Option<RequestId>, i32)] = &[
            ("{", None, crate::code::PARSE_ERROR),
            ("", None, crate::code::PARSE_ERROR),
            ("[]", None, crate::code::INVALID_REQUEST),
            ("42", None, crate::code::INVALID_REQUEST),
            (
                r#"{"id":1,"method":"ping"}"#,
                Some(RequestId::Number(1)),
                crate::code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#,
                Some(RequestId::String("x".into())),
                crate::code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                None,
                crate::code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
                None,
                crate::code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"ping","params":3}"#,
                Some(RequestId::Number(2)),
                crate::code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3}"#,
                Some(RequestId::Number(3)),
                crate::code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"method":7}"#,
                None,
                crate::code::INVALID_REQUEST,
            ),
        ];
        for (input, id, code) in cases {
            let err = match decode(input.as_bytes()) {
                Err(e) => e,
                Ok(Decoded::Single(m)) => panic!("{input} decoded as {m:?}"),
                Ok(Decoded::Batch(b)) => b.into_iter().next().unwrap().unwrap_err(),
            };
            assert_eq!(err.id(), id.as_ref(), "id for {input}");
            assert_eq!(err.to_error_object().code, *code, "code for {input}");
        }
    }

    #[test]
    fn a_batch_decodes_each_element_on_its_own() {
        let Ok(Decoded::Batch(items)) = decode(
            br#" [{"jsonrpc":"2.0","id":1,"method":"ping"}, 5, {"jsonrpc":"2.0","method":"n"}]"#,
        ) else {
            panic!("not a batch")
        };
        assert!(matches!(items[0], Ok(Message::Request(_))));
        assert!(items[1].is_err());
        assert!(matches!(items[2], Ok(Message::Notification(_))));
    }

    #[test]
    fn encoding_round_trips() {
        let params = RawValue::from_string(r#"{"a":"é\n"}"#.into()).unwrap();
        for id in [RequestId::Number(-3), RequestId::String("q\"uote".into())] {
            let bytes = encode_request(&id, "m/x", Some(&params));
            let Ok(Message::Request(r)) = decode_message(&bytes) else {
                panic!()
            };
            assert_eq!(r.id, id);
            assert_eq!(r.params.unwrap().get(), params.get());
            let bytes = encode_error(Some(&id), &ErrorObject::method_not_found("m/x"));
            let Ok(Message::Response(r)) = decode_message(&bytes) else {
                panic!()
            };
            assert_eq!(r.id, id);
        }
        let bytes = encode_error(None, &ErrorObject::parse_error("x"));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["id"], Value::Null);
    }
}
