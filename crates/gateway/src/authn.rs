//! Who is calling: the bearer credential of every MCP and admin request is
//! turned into an [`Identity`] before anything else reads the request.
//!
//! - No credential: the anonymous identity where anonymous access is on,
//!   else 401 with `WWW-Authenticate` pointing at the protected-resource
//!   metadata (RFC 9728), so a standard MCP client can find the
//!   authorization server.
//! - An API key: looked up by its SHA-256 in the store. Lookups are cached
//!   briefly ([`KEY_CACHE_TTL`]) so a hot key costs no query per request;
//!   that is also the longest a revoked key keeps working on a replica.
//! - A JWT: verified against `[auth.jwt]` (signature, issuer, audience,
//!   expiry with leeway).
//!
//! A credential that is present but bad is refused even where anonymous
//! access is on: a client that sends a key expects to be that key.

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::{AuthError, Credential, Identity, Scopes};
use switchboard_config::{AuthConfig, ServerConfig};
use switchboard_protocol::ErrorObject;
use switchboard_telemetry::RejectReason;

use crate::state::Shared;

/// How long an API-key lookup (hit or miss) is reused.
pub(crate) const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
const KEY_CACHE_ENTRIES: u64 = 10_000;

/// Why the gateway refuses to start with the auth settings it was given.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(
        "server.listen {listen} is not a loopback address and [auth] does not say whether \
         anonymous callers are allowed: set `[auth] anonymous = false` to require API keys \
         (`switchboard keys create`) or JWTs (`[auth.jwt]`), or `anonymous = true` to serve \
         anyone who can reach the port"
    )]
    AnonymousOnPublicAddress { listen: SocketAddr },
    #[error("[auth] anonymous = false, but no credential is accepted: enable api_keys or configure [auth.jwt]")]
    NoCredentials,
    #[error("auth.anonymous_scopes: {0}")]
    AnonymousScopes(switchboard_auth::ScopeError),
    #[error("auth.jwt: {0}")]
    Jwt(String),
}

tokio::task_local! {
    /// The caller of the HTTP request being handled. Set by [`authenticate`]
    /// around the handler, so that a session created while handling it is
    /// bound to its caller without every handler passing it on.
    static CALLER: Arc<Identity>;
}

/// Runs `f` as if `identity` had made the request (tests only).
#[cfg(test)]
pub(crate) async fn with_caller<F: std::future::Future>(
    identity: Arc<Identity>,
    f: F,
) -> F::Output {
    CALLER.scope(identity, f).await
}

/// The identity of the request being handled on this task, if any.
pub(crate) fn current_caller() -> Option<Arc<Identity>> {
    CALLER.try_with(Arc::clone).ok()
}

pub(crate) struct Authenticator {
    anonymous: Option<Arc<Identity>>,
    api_keys: bool,
    jwt: Option<switchboard_auth::JwtVerifier>,
    separator: String,
    key_cache: moka::future::Cache<String, Option<Arc<Identity>>>,
    /// The configured resource URL, if any; otherwise derived per request.
    resource_url: Option<String>,
    resource_settings: switchboard_config::ResourceConfig,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("anonymous", &self.anonymous.is_some())
            .field("api_keys", &self.api_keys)
            .field("jwt", &self.jwt.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub(crate) fn new(auth: &AuthConfig, server: &ServerConfig) -> Result<Self, AuthSetupError> {
        let anonymous_allowed = match auth.anonymous {
            Some(a) => a,
            None if server.listen.ip().is_loopback() => true,
            None => {
                return Err(AuthSetupError::AnonymousOnPublicAddress {
                    listen: server.listen,
                })
            }
        };
        if !anonymous_allowed && !auth.has_credentials() {
            return Err(AuthSetupError::NoCredentials);
        }
        let anonymous = if anonymous_allowed {
            let scopes = Scopes::parse(&auth.anonymous_scopes, &server.separator)
                .map_err(AuthSetupError::AnonymousScopes)?;
            Some(Arc::new(Identity::anonymous(scopes)))
        } else {
            None
        };
        let jwt = auth
            .jwt
            .as_ref()
            .map(|j| {
                switchboard_auth::JwtVerifier::new(jwt_settings(j, &server.separator)?)
                    .map_err(|e| AuthSetupError::Jwt(e.to_string()))
            })
            .transpose()?;
        Ok(Self {
            anonymous,
            api_keys: auth.api_keys,
            jwt,
            separator: server.separator.clone(),
            key_cache: moka::future::Cache::builder()
                .max_capacity(KEY_CACHE_ENTRIES)
                .time_to_live(KEY_CACHE_TTL)
                .build(),
            resource_url: auth.resource.url.clone(),
            resource_settings: auth.resource.clone(),
        })
    }

    /// Resolves the request's credential into an identity.
    pub(crate) async fn identify(
        &self,
        store: Option<&Arc<dyn switchboard_store::Store>>,
        headers: &axum::http::HeaderMap,
    ) -> Result<Arc<Identity>, AuthError> {
        match switchboard_auth::parse_bearer(headers) {
            Err(AuthError::Missing) => self.anonymous.clone().ok_or(AuthError::Missing),
            Err(e) => Err(e),
            Ok(Credential::ApiKey(key)) => {
                if !self.api_keys {
                    return Err(AuthError::UnknownApiKey);
                }
                let Some(store) = store else {
                    return Err(AuthError::UnknownApiKey);
                };
                let hash = switchboard_auth::hash_api_key(key.expose());
                let store = store.clone();
                let separator = self.separator.clone();
                let found = self
                    .key_cache
                    .try_get_with(hash.clone(), async move {
                        let record = store.find_api_key_by_hash(&hash).await?;
                        Ok::<_, switchboard_store::StoreError>(record.and_then(|r| {
                            if r.revoked_at.is_some() {
                                return None;
                            }
                            let scopes = Scopes::parse(&r.scopes, &separator)
                                .map_err(|e| {
                                    tracing::error!(key = r.name, error = %e, "stored api key has scopes this gateway cannot parse; refusing it");
                                })
                                .ok()?;
                            Some(Arc::new(Identity::api_key(r.id.to_string(), r.name, scopes)))
                        }))
                    })
                    .await
                    .map_err(|e| AuthError::KeysUnavailable(format!("api key store: {e}")))?;
                found.ok_or(AuthError::UnknownApiKey)
            }
            Ok(Credential::Jwt(token)) => match &self.jwt {
                Some(v) => v.verify(token.expose()).await.map(Arc::new),
                None => Err(AuthError::MalformedToken(
                    "this gateway accepts api keys only (no [auth.jwt] configured)",
                )),
            },
        }
    }

    /// The resource identifier: configured, or this gateway's `/mcp` as
    /// the client reached it.
    fn resource(&self, headers: &axum::http::HeaderMap) -> String {
        self.resource_url
            .clone()
            .unwrap_or_else(|| format!("{}/mcp", origin_of(self, headers)))
    }

    /// The URL of this gateway's protected-resource metadata (RFC 9728 §3.1).
    pub(crate) fn metadata_url(&self, headers: &axum::http::HeaderMap) -> String {
        let resource = self.resource(headers);
        match url::Url::parse(&resource) {
            Ok(u) => switchboard_auth::prm::metadata_url(&u).to_string(),
            Err(_) => format!(
                "{}{}",
                origin_of(self, headers),
                switchboard_auth::prm::WELL_KNOWN
            ),
        }
    }

    /// The RFC 9728 document.
    pub(crate) fn metadata(&self, headers: &axum::http::HeaderMap) -> serde_json::Value {
        switchboard_auth::prm::protected_resource_metadata(&switchboard_auth::prm::PrmSettings {
            resource: self.resource(headers),
            authorization_servers: self.resource_settings.authorization_servers.clone(),
            scopes_supported: self.resource_settings.scopes_supported.clone(),
            resource_name: Some("Switchboard MCP gateway".to_owned()),
            resource_documentation: None,
        })
    }
}

fn jwt_settings(
    j: &switchboard_config::JwtConfig,
    separator: &str,
) -> Result<switchboard_auth::JwtSettings, AuthSetupError> {
    let mut s = switchboard_auth::JwtSettings::new(&j.issuer, &j.audience);
    s.hs256_secret = j.hs256_secret.clone();
    s.jwks_url = j
        .jwks_url
        .as_deref()
        .map(url::Url::parse)
        .transpose()
        .map_err(|e| AuthSetupError::Jwt(format!("jwks_url: {e}")))?;
    s.leeway = j.leeway;
    s.scope_claim = j.scope_claim.clone();
    s.separator = separator.to_owned();
    Ok(s)
}

/// `scheme://host` of the request, or of the configured resource URL.
fn origin_of(auth: &Authenticator, headers: &axum::http::HeaderMap) -> String {
    if let Some(url) = &auth.resource_url {
        if let Some(rest) = url.split_once("://") {
            let host = rest.1.split('/').next().unwrap_or_default();
            return format!("{}://{host}", rest.0);
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// The middleware: identifies the caller, applies the per-identity rate
/// limit, and hands the identity on in the request extensions.
pub(crate) async fn authenticate(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let auth = &shared.auth;
    let identity = match auth
        .identify(shared.store.as_ref(), request.headers())
        .await
    {
        Ok(identity) => identity,
        Err(e) => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string());
            if !matches!(e, AuthError::Missing) {
                tracing::warn!(error = %e, peer, path = request.uri().path(), "authentication failed");
                shared.audit_security_event(
                    switchboard_store::method::AUTH_FAILED,
                    None,
                    None,
                    &e.to_string(),
                    peer,
                );
            }
            return unauthorized(auth, request.headers(), &e);
        }
    };
    // The anonymous identity is everyone on a loopback listener: the
    // per-IP limit is what applies to it.
    let limited = identity.kind != switchboard_auth::IdentityKind::Anonymous;
    if let Some(limiter) = shared.identity_limiter.as_ref().filter(|_| limited) {
        if let Err(wait) = limiter.check(&identity.principal()) {
            let secs = wait.as_secs().max(1);
            let mut r = crate::http::error_response(
                StatusCode::TOO_MANY_REQUESTS,
                RejectReason::IdentityRateLimited,
                ErrorObject::new(
                    switchboard_protocol::code::RATE_LIMITED,
                    format!(
                        "rate limit for {} exceeded; retry in {secs}s",
                        identity.principal()
                    ),
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    if let Some(session) = named_session(&shared, &request) {
        let owner = session.identity().map(|i| i.principal());
        if owner.as_deref() != Some(identity.principal().as_str()) {
            tracing::warn!(
                session = %session.id,
                caller = identity.principal(),
                owner,
                "request for a session opened by another identity; answering 404"
            );
            shared.audit_security_event(
                switchboard_store::method::SESSION_HIJACK_ATTEMPT,
                Some(&identity),
                Some(&session.id),
                "session belongs to another identity",
                None,
            );
            return crate::http::error_response(
                StatusCode::NOT_FOUND,
                RejectReason::SessionIdentityMismatch,
                ErrorObject::invalid_request(
                    "session not found: it ended or expired; send initialize to start a new one",
                ),
            );
        }
    }
    CALLER.scope(identity, next.run(request)).await
}

/// The existing session a request names, by `Mcp-Session-Id` or the legacy
/// `sessionId` query parameter.
fn named_session(
    shared: &Shared,
    request: &axum::extract::Request,
) -> Option<Arc<crate::session::Session>> {
    if let Some(id) = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        return shared.sessions.get(id);
    }
    let query = request.uri().query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "sessionId")
        .and_then(|(_, id)| shared.sessions.get(&id))
}

/// A 401/403/400/503 with the RFC 6750 challenge.
pub(crate) fn unauthorized(
    auth: &Authenticator,
    headers: &axum::http::HeaderMap,
    e: &AuthError,
) -> Response {
    let status = e.status();
    let reason = if status == StatusCode::FORBIDDEN {
        RejectReason::Forbidden
    } else {
        RejectReason::Unauthorized
    };
    let mut r = crate::http::error_response(
        status,
        reason,
        ErrorObject::invalid_request(format!("unauthorized: {e}")),
    );
    let challenge =
        switchboard_auth::prm::www_authenticate(&auth.metadata_url(headers), Some(e), None);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
