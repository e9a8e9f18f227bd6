//! The JSON-RPC decoder on arbitrary bytes: no panic, and every message it
//! accepts survives a re-encode (see `check.rs` for the invariants).
#![no_main]

#[path = "../../crates/protocol/tests/fuzz/check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
