//! MCP servers that Switchboard's tests, conformance runs and benchmarks talk to.
//!
//! Two servers live here, each with a thin binary in `src/bin/`:
//!
//! * [`fixture::Fixture`] (`switchboard-fixture`) serves exactly the tools,
//!   resources and prompts that the official conformance suite
//!   (`@modelcontextprotocol/conformance` 0.1.16) calls by name. It is the
//!   upstream behind the gateway when the suite runs *through* the gateway, and
//!   the baseline when it runs against the fixture directly.
//! * [`fake::FakeUpstream`] (`switchboard-fake-upstream`) is a configurable,
//!   deliberately misbehaving upstream: latency, periodic failures, crashes,
//!   cancellation bookkeeping, pagination, server→client requests and runtime
//!   tool registration, so the gateway's failure paths can be exercised.
//!
//! # Layout
//!
//! * [`serve`] runs any `ServerHandler` over stdio or Streamable HTTP and owns
//!   the shutdown rules (SIGTERM/SIGINT, stdin EOF) shared by both binaries.
//! * [`error`] holds the crate's error type.
//! * `level` ranks `logging/setLevel` thresholds for both servers.
//!
//! # Invariants
//!
//! * HTTP servers bind loopback addresses only and reject non-loopback `Host`
//!   and `Origin` headers with 403: a test server is never reachable from, or
//!   usable by, another machine or a rebinding web page.
//! * Nothing but MCP is written to stdout; logs go to stderr.

pub mod error;
pub mod fake;
pub mod fixture;
mod level;
mod schema;
pub mod serve;

pub use error::TestkitError;
