//! Integration tests of switchboard-auth against in-process servers on
//! loopback: a JWKS endpoint and an authorization server.

#![allow(clippy::unwrap_used)] // test helpers; a panic is the failure report

mod jwt;
mod server;
mod upstream;
