//! Authentication and authorization for Switchboard, as a library without
//! any HTTP server of its own: the gateway calls it from its middleware.
//!
//! # Layout
//!
//! - [`key`]: API keys (generation, hashing) and reading the bearer
//!   credential of a request.
//! - [`scope`]: the scope grammar and the one decision function,
//!   [`Scopes::allows`].
//! - [`identity`]: who is calling.
//! - [`jwt`]: JWT bearer verification, HMAC or JWKS-backed.
//! - [`prm`]: the resource-server side of MCP authorization (RFC 9728
//!   metadata, `WWW-Authenticate`).
//! - [`upstream`]: the gateway's own credentials towards upstreams: static
//!   headers, an OAuth client, or token exchange on behalf of the caller.
//!
//! # Invariants
//!
//! - A caller's token is never sent to an upstream: [`upstream`] only ever
//!   sends what the gateway holds or minted for that one upstream.
//! - Secrets (keys, tokens, client secrets) are [`Secret`]s: they never
//!   reach `Debug`, logs or error messages.
//! - Everything fetched (key sets, metadata, token answers) is read with a
//!   size bound and a timeout; every cache is bounded.
//! - Decisions fail closed: an unparseable negation, a URI that hides its
//!   path, an unknown key id all deny.

pub mod error;
mod fetch;
pub mod identity;
pub mod jwt;
pub mod key;
pub mod prm;
pub mod scope;
pub mod upstream;

pub use error::{AuthError, SettingsError, UpstreamAuthError};
pub use fetch::FetchLimits;
pub use identity::{Identity, IdentityKind};
pub use jwt::{JwtSettings, JwtVerifier};
pub use key::{
    api_key_display_prefix, api_key_matches, generate_api_key, hash_api_key, is_api_key,
    parse_bearer, Credential, NewApiKey, API_KEY_PREFIX,
};
pub use prm::{protected_resource_metadata, www_authenticate, PrmSettings};
pub use scope::{ScopeError, Scopes, Target};
pub use switchboard_config::Secret;
pub use upstream::{
    CallerToken, ClientAuthMethod, ClientCredentials, Grant, OAuthClientSettings, TokenEndpoint,
    TokenExchangeSettings, TokenTiming, UpstreamAuth, UpstreamCredential,
};
