//! The gateway's own identity towards upstreams.
//!
//! MCP authorization forbids passing a client's token through to an
//! upstream (token passthrough makes the upstream trust a token that was
//! never meant for it, and hides who is really calling). So each upstream
//! gets one [`UpstreamAuth`], built from an [`UpstreamCredential`]:
//!
//! - `None`: nothing is added.
//! - `Static`: fixed headers from the config (an API key the upstream
//!   issued to the gateway).
//! - `OAuthClient`: the gateway is an OAuth client of the upstream's
//!   authorization server (client credentials, or a refresh token an
//!   operator provisioned), with RFC 9728/8414 discovery and RFC 8707
//!   `resource`; see [`oauth`].
//! - `TokenExchange`: the gateway exchanges the caller's (verified) token
//!   for one minted for this upstream (RFC 8693); see [`exchange`].
//!
//! Each `UpstreamAuth` holds its own tokens and caches, so a token minted
//! for one upstream is never sent to another by construction; the caller's
//! token only ever goes to the configured token endpoint.

pub mod exchange;
pub mod oauth;

use std::fmt;

use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use switchboard_config::Secret;
use url::Url;

use crate::error::{SettingsError, UpstreamAuthError};
use crate::fetch::{self, FetchError, FetchLimits};

pub use exchange::TokenExchangeSettings;
pub use oauth::{Grant, OAuthClientSettings, TokenEndpoint};

/// How the gateway authenticates to one upstream.
#[derive(Debug, Clone)]
pub enum UpstreamCredential {
    None,
    Static(Vec<(HeaderName, Secret)>),
    OAuthClient(OAuthClientSettings),
    TokenExchange(TokenExchangeSettings),
}

/// The gateway's OAuth client registration at an authorization server.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    /// `None` for a public client.
    pub client_secret: Option<Secret>,
    pub method: ClientAuthMethod,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuthMethod {
    /// HTTP Basic, which every server must support.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// The caller's own bearer token, already verified by the gateway. It is
/// only ever sent to a token-exchange endpoint, never to an upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct CallerToken {
    token: Secret,
    /// SHA-256 of the token: the cache key for tokens minted from it.
    digest: [u8; 32],
}

impl CallerToken {
    /// Wraps a caller's JWT access token after it verified.
    pub fn new(token: Secret) -> Self {
        let digest = Sha256::digest(token.expose().as_bytes()).into();
        Self { token, digest }
    }

    pub(crate) fn expose(&self) -> &str {
        self.token.expose()
    }

    pub(crate) fn digest(&self) -> [u8; 32] {
        self.digest
    }
}

impl fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerToken(***)")
    }
}

/// Adds the gateway's credential to requests for one upstream.
#[derive(Debug)]
pub struct UpstreamAuth {
    upstream: String,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    None,
    Static(HeaderMap),
    OAuth(oauth::TokenSource),
    Exchange(exchange::TokenExchanger),
}

impl UpstreamAuth {
    /// Builds the credential of `upstream` (its name, for messages).
    pub fn new(upstream: &str, credential: UpstreamCredential) -> Result<Self, SettingsError> {
        let inner = match credential {
            UpstreamCredential::None => Inner::None,
            UpstreamCredential::Static(headers) => {
                let mut map = HeaderMap::new();
                for (name, value) in headers {
                    let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
                        SettingsError::new(
                            "headers",
                            format!("the value of {name} is not a valid header value"),
                        )
                    })?;
                    v.set_sensitive(true);
                    map.append(name, v);
                }
                Inner::Static(map)
            }
            UpstreamCredential::OAuthClient(s) => {
                Inner::OAuth(oauth::TokenSource::new(upstream, s)?)
            }
            UpstreamCredential::TokenExchange(s) => {
                Inner::Exchange(exchange::TokenExchanger::new(upstream, s)?)
            }
        };
        Ok(Self {
            upstream: upstream.to_owned(),
            inner,
        })
    }

    /// Returns the `Authorization` value for a request to this upstream on
    /// behalf of `caller`, or `None` when this upstream needs none. Tokens
    /// come from a cache and are refreshed before they expire; concurrent
    /// callers share one refresh.
    pub async fn authorization_header(
        &self,
        caller: Option<&CallerToken>,
    ) -> Result<Option<HeaderValue>, UpstreamAuthError> {
        match &self.inner {
            Inner::None => Ok(None),
            Inner::Static(h) => Ok(h.get(AUTHORIZATION).cloned()),
            Inner::OAuth(s) => s.header().await.map(Some),
            Inner::Exchange(x) => x.header(caller).await.map(Some),
        }
    }

    /// Returns every header to add: the static ones, or `Authorization`.
    pub async fn headers(
        &self,
        caller: Option<&CallerToken>,
    ) -> Result<HeaderMap, UpstreamAuthError> {
        match &self.inner {
            Inner::Static(h) => Ok(h.clone()),
            _ => {
                let mut map = HeaderMap::new();
                if let Some(v) = self.authorization_header(caller).await? {
                    map.insert(AUTHORIZATION, v);
                }
                Ok(map)
            }
        }
    }

    /// Tells the source that the upstream refused `rejected` (HTTP 401), so
    /// the next request gets a fresh token. A value other than the current
    /// one is ignored: requests that raced with a refresh must not throw
    /// the new token away.
    pub async fn reject(&self, rejected: &HeaderValue, caller: Option<&CallerToken>) {
        match &self.inner {
            Inner::OAuth(s) => s.reject(rejected),
            Inner::Exchange(x) => x.reject(rejected, caller).await,
            Inner::None | Inner::Static(_) => {}
        }
    }

    /// Returns the refresh token in use, for an OAuth client with an
    /// operator-provisioned one: servers that rotate refresh tokens make the
    /// stored one stale, so the caller persists this after a refresh.
    pub async fn refresh_token(&self) -> Option<Secret> {
        match &self.inner {
            Inner::OAuth(s) => s.refresh_token().await,
            _ => None,
        }
    }

    /// The upstream this credential belongs to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }
}

// === token endpoint requests, shared by the OAuth client and exchange ===

/// Timing and size settings of token requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTiming {
    /// Refresh this long before expiry (at most half the token's lifetime,
    /// so a short-lived token is not refreshed on every request).
    pub refresh_before: std::time::Duration,
    /// Assumed lifetime when the server sends no `expires_in`.
    pub default_lifetime: std::time::Duration,
    /// After a failed request, wait this long before the next attempt.
    pub retry_after_failure: std::time::Duration,
    pub fetch: FetchLimits,
}

impl Default for TokenTiming {
    fn default() -> Self {
        Self {
            refresh_before: std::time::Duration::from_secs(60),
            default_lifetime: std::time::Duration::from_secs(300),
            retry_after_failure: std::time::Duration::from_secs(5),
            fetch: FetchLimits::default(),
        }
    }
}

/// A token endpoint answer we can use.
#[derive(Debug)]
pub(crate) struct Issued {
    pub(crate) header: HeaderValue,
    pub(crate) lifetime: std::time::Duration,
    pub(crate) refresh_token: Option<Secret>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

/// The longest access token accepted into a header.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// The longest lifetime believed: a server's "expires in ten years" must
/// not pin a token in memory that long.
const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Posts a token request (RFC 6749 §4.4, §6; RFC 8693 §2.1) and reads the
/// answer.
pub(crate) async fn token_request(
    client: &reqwest::Client,
    upstream: &str,
    endpoint: &Url,
    credentials: &ClientCredentials,
    mut form: Vec<(&'static str, String)>,
    timing: &TokenTiming,
) -> Result<Issued, UpstreamAuthError> {
    let mut request = client
        .post(endpoint.clone())
        .header(http::header::ACCEPT, "application/json");
    match (&credentials.client_secret, credentials.method) {
        (Some(secret), ClientAuthMethod::ClientSecretBasic) => {
            // RFC 6749 §2.3.1: both parts form-urlencoded before Base64.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&credentials.client_id), enc(secret.expose()));
            let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
            let mut v = HeaderValue::from_str(&format!("Basic {b64}")).map_err(|_| {
                UpstreamAuthError::InvalidHeaderValue {
                    upstream: upstream.to_owned(),
                }
            })?;
            v.set_sensitive(true);
            request = request.header(AUTHORIZATION, v);
        }
        (Some(secret), ClientAuthMethod::ClientSecretPost) => {
            form.push(("client_id", credentials.client_id.clone()));
            form.push(("client_secret", secret.expose().to_owned()));
        }
        (None, _) => form.push(("client_id", credentials.client_id.clone())),
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let request = request
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body);
    let bytes = match fetch::send(request, timing.fetch.max_bytes).await {
        Ok(b) => b,
        Err(FetchError::Status(status, body)) => {
            let oauth_error = serde_json::from_slice::<ErrorResponse>(&body)
                .ok()
                .map(|e| oauth_error_code(&e.error));
            return Err(UpstreamAuthError::Refused {
                upstream: upstream.to_owned(),
                url: endpoint.to_string(),
                status,
                oauth_error,
            });
        }
        Err(e @ FetchError::TooLarge(_)) => {
            return Err(UpstreamAuthError::BadResponse {
                upstream: upstream.to_owned(),
                url: endpoint.to_string(),
                reason: e.to_string(),
            })
        }
        Err(e) => {
            return Err(UpstreamAuthError::Unreachable {
                upstream: upstream.to_owned(),
                url: endpoint.to_string(),
                reason: e.to_string(),
            })
        }
    };
    let bad = |reason: &str| UpstreamAuthError::BadResponse {
        upstream: upstream.to_owned(),
        url: endpoint.to_string(),
        reason: reason.to_owned(),
    };
    let parsed: TokenResponse =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a token response"))?;
    if !parsed.token_type.eq_ignore_ascii_case("bearer") {
        return Err(bad("token_type is not bearer"));
    }
    if parsed.access_token.is_empty() || parsed.access_token.len() > MAX_TOKEN_LEN {
        return Err(bad("access_token is empty or too long"));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {}", parsed.access_token))
        .map_err(|_| bad("access_token is not a valid header value"))?;
    header.set_sensitive(true);
    let lifetime = match parsed.expires_in {
        None | Some(serde_json::Value::Null) => timing.default_lifetime,
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| bad("expires_in is not a non-negative integer"))?,
        // Some servers send it as a string.
        Some(serde_json::Value::String(s)) => s
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|_| bad("expires_in is not a non-negative integer"))?,
        Some(_) => return Err(bad("expires_in is not a number")),
    };
    Ok(Issued {
        header,
        lifetime: lifetime.min(MAX_LIFETIME),
        refresh_token: parsed
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    })
}

/// Keeps an RFC 6749 §5.2 error code to its allowed characters and a
/// bounded length: it ends up in logs.
fn oauth_error_code(s: &str) -> String {
    s.chars()
        .filter(|c| matches!(*c as u32, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        .take(64)
        .collect()
}

/// When to refresh a token of `lifetime`: `refresh_before` ahead of expiry,
/// but never earlier than half-way.
pub(crate) fn refresh_delay(
    lifetime: std::time::Duration,
    timing: &TokenTiming,
) -> std::time::Duration {
    lifetime.saturating_sub(timing.refresh_before.min(lifetime / 2))
}

pub(crate) fn check_endpoint(url: &Url, field: &'static str) -> Result<(), SettingsError> {
    fetch::require_secure(url, field)
}
