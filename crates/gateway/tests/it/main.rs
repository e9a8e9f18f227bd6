#![allow(unreachable_pub, clippy::unwrap_used)]
//! In-process integration tests: the gateway on a loopback port in front of
//! real upstream processes (the testkit's fake upstream).

mod harness;

mod cache;
mod chaos;
mod errors;
mod federation;
mod fuzz_input;
mod fuzz_regressions;
mod headers;
mod modern_upstream;
mod observability;
mod pool;
mod relay;
mod security;
mod tls;
mod transport;
mod validation;
