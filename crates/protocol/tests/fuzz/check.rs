//! What the `jsonrpc` fuzz target asserts about one input, shared with the
//! replay test (`tests/fuzz_regressions.rs`) so a saved crash input is
//! checked the same way with or without the fuzzer.

use switchboard_protocol::{
    decode, decode_message, encode_error, Decoded, Message, ResponsePayload,
};

/// Decodes `data`; panics when decoding panics or breaks an invariant:
/// a refusal always encodes to a JSON error, and every decoded message
/// re-encodes to bytes that decode to the same message.
pub(crate) fn check(data: &[u8]) {
    match decode(data) {
        Ok(Decoded::Single(m)) => round_trip(&m),
        Ok(Decoded::Batch(items)) => {
            assert!(!items.is_empty(), "an empty batch was accepted");
            for item in &items {
                match item {
                    Ok(m) => round_trip(m),
                    Err(e) => answerable(e),
                }
            }
        }
        Err(e) => answerable(&e),
    }
}

fn answerable(e: &switchboard_protocol::DecodeError) {
    let bytes = encode_error(e.id(), &e.to_error_object());
    if let Err(err) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        panic!(
            "the error answer is not JSON ({err}): {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

fn round_trip(m: &Message) {
    let bytes = m.encode();
    let again = decode_message(&bytes).unwrap_or_else(|e| {
        panic!(
            "a decoded message re-encodes to bytes that do not decode ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    let raw = |p: &Option<Box<serde_json::value::RawValue>>| p.as_ref().map(|r| r.get().to_owned());
    match (m, &again) {
        (Message::Request(a), Message::Request(b)) => {
            assert_eq!(a.id, b.id);
            assert_eq!(a.method, b.method);
            assert_eq!(raw(&a.params), raw(&b.params));
        }
        (Message::Notification(a), Message::Notification(b)) => {
            assert_eq!(a.method, b.method);
            assert_eq!(raw(&a.params), raw(&b.params));
        }
        (Message::Response(a), Message::Response(b)) => {
            assert_eq!(a.id, b.id);
            match (&a.payload, &b.payload) {
                (ResponsePayload::Result(x), ResponsePayload::Result(y)) => {
                    assert_eq!(x.get(), y.get())
                }
                (ResponsePayload::Error(x), ResponsePayload::Error(y)) => assert_eq!(x, y),
                (x, y) => panic!("payload kind changed: {x:?} became {y:?}"),
            }
        }
        (a, b) => panic!("message kind changed: {a:?} became {b:?}"),
    }
}
