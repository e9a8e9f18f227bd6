//! Switchboard configuration: TOML text in, validated types out.
//!
//! # Layout
//! - [`raw`]: the wire form, `serde` structs that mirror the file with
//!   `deny_unknown_fields`, so a misspelt key is an error with its line.
//! - [`model`]: the validated form every other crate takes. Constructors
//!   receive these by value; nothing downstream re-parses strings.
//! - [`interpolate`]: `${env:NAME}`, `${file:PATH}` and `${self}` substitution.
//! - [`load`]: where the text comes from (flag, `./switchboard.toml`, the
//!   embedded default) and environment overrides.
//!
//! # Invariants
//! - No network or process IO; only reads the config file and `${file:}` secrets.
//! - Secrets are [`Secret`]s: their `Debug`/`Display` never show the value.

mod cache;
mod error;
mod interpolate;
mod load;
pub mod model;
mod raw;
mod security;

pub use error::ConfigError;
pub use load::{load, parse, ConfigSource, Overrides, EMBEDDED_DEFAULT};
pub use model::*;
