//! Integration tests: the upstream client against real MCP servers.
//!
//! stdio and Streamable HTTP run against `switchboard-fake-upstream` (from
//! `crates/testkit`; set `FAKE_UPSTREAM_BIN` or build it into the same target
//! dir with `cargo build -p switchboard-testkit`). Legacy HTTP+SSE and
//! misbehaving HTTP servers are small in-test servers on loopback.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod health;
mod http;
mod legacy;
mod pool;
mod progress;
mod rogue;
mod stdio;
mod support;
