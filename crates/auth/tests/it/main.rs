//! Integration tests of switchboard-auth against in-process servers on
//! loopback: a JWKS endpoint and an authorization server.

mod jwt;
mod server;
