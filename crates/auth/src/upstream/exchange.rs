//! Acting on behalf of the caller: OAuth 2.0 Token Exchange (RFC 8693).
//!
//! The caller's verified token goes to the configured token endpoint only,
//! as `subject_token`; what comes back is minted for this upstream
//! (`audience`/`resource`) and cached until shortly before it expires,
//! keyed by the SHA-256 of the caller's token. Each upstream has its own
//! exchanger and so its own cache: a token minted for upstream A cannot be
//! found when looking up for upstream B. The cache is bounded; concurrent
//! requests with the same caller token share one exchange.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use url::Url;

use super::{
    check_endpoint, refresh_delay, token_request, CallerToken, ClientCredentials, TokenTiming,
};
use crate::error::{SettingsError, UpstreamAuthError};
use crate::fetch;

/// RFC 8693 §3 token type identifiers.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Token exchange for one upstream.
#[derive(Debug, Clone)]
pub struct TokenExchangeSettings {
    pub token_endpoint: Url,
    pub client: ClientCredentials,
    /// RFC 8693 `audience`: the upstream's name at the identity provider.
    pub audience: Option<String>,
    /// RFC 8707 / RFC 8693 `resource`: the upstream's URL.
    pub resource: Option<String>,
    pub scopes: Vec<String>,
    pub requested_token_type: String,
    pub subject_token_type: String,
    /// The most callers whose minted tokens are kept.
    pub cache_capacity: u64,
    pub timing: TokenTiming,
}

impl TokenExchangeSettings {
    /// Settings asking for an access token in exchange for the caller's
    /// access token, caching up to 10,000 callers.
    pub fn new(token_endpoint: Url, client: ClientCredentials) -> Self {
        Self {
            token_endpoint,
            client,
            audience: None,
            resource: None,
            scopes: Vec::new(),
            requested_token_type: ACCESS_TOKEN_TYPE.to_owned(),
            subject_token_type: ACCESS_TOKEN_TYPE.to_owned(),
            cache_capacity: 10_000,
            timing: TokenTiming::default(),
        }
    }
}

#[derive(Debug)]
struct Minted {
    header: HeaderValue,
    valid_for: Duration,
}

/// Each entry lives until its own token should be refreshed.
struct UntilRefresh;

impl moka::Expiry<[u8; 32], Arc<Minted>> for UntilRefresh {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Minted>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.valid_for)
    }
}

pub(crate) struct TokenExchanger {
    upstream: String,
    settings: TokenExchangeSettings,
    client: reqwest::Client,
    cache: moka::future::Cache<[u8; 32], Arc<Minted>>,
}

impl std::fmt::Debug for TokenExchanger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchanger")
            .field("upstream", &self.upstream)
            .field("token_endpoint", &self.settings.token_endpoint.as_str())
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl TokenExchanger {
    pub(crate) fn new(
        upstream: &str,
        settings: TokenExchangeSettings,
    ) -> Result<Self, SettingsError> {
        check_endpoint(&settings.token_endpoint, "token_endpoint")?;
        if settings.client.client_id.is_empty() {
            return Err(SettingsError::new("client_id", "is empty"));
        }
        if settings.audience.is_none() && settings.resource.is_none() {
            return Err(SettingsError::new(
                "audience",
                "neither audience nor resource is set; the exchanged token would not be bound to this upstream",
            ));
        }
        if settings.cache_capacity == 0 {
            return Err(SettingsError::new(
                "cache_capacity",
                "must be greater than 0",
            ));
        }
        Ok(Self {
            upstream: upstream.to_owned(),
            client: fetch::client(&settings.timing.fetch)?,
            cache: moka::future::Cache::builder()
                .max_capacity(settings.cache_capacity)
                .expire_after(UntilRefresh)
                .build(),
            settings,
        })
    }

    pub(crate) async fn header(
        &self,
        caller: Option<&CallerToken>,
    ) -> Result<HeaderValue, UpstreamAuthError> {
        let caller = caller.ok_or_else(|| UpstreamAuthError::NoSubjectToken {
            upstream: self.upstream.clone(),
        })?;
        self.cache
            .try_get_with(caller.digest(), self.exchange(caller))
            .await
            .map(|m| m.header.clone())
            .map_err(|e| (*e).clone())
    }

    async fn exchange(&self, caller: &CallerToken) -> Result<Arc<Minted>, UpstreamAuthError> {
        let s = &self.settings;
        let mut form: Vec<(&'static str, String)> = vec![
            ("grant_type", GRANT_TYPE.into()),
            ("subject_token", caller.expose().to_owned()),
            ("subject_token_type", s.subject_token_type.clone()),
            ("requested_token_type", s.requested_token_type.clone()),
        ];
        if let Some(a) = &s.audience {
            form.push(("audience", a.clone()));
        }
        if let Some(r) = &s.resource {
            form.push(("resource", r.clone()));
        }
        if !s.scopes.is_empty() {
            form.push(("scope", s.scopes.join(" ")));
        }
        let issued = token_request(
            &self.client,
            &self.upstream,
            &s.token_endpoint,
            &s.client,
            form,
            &s.timing,
        )
        .await
        .map_err(|e| match e {
            // RFC 8693 §2.2.2: an unusable subject token is `invalid_request`
            // (and `invalid_grant` in practice): the caller's problem.
            UpstreamAuthError::Refused {
                upstream,
                status: 400,
                oauth_error: Some(code),
                ..
            } if code == "invalid_grant" || code == "invalid_request" => {
                UpstreamAuthError::SubjectTokenRejected {
                    upstream,
                    oauth_error: code,
                }
            }
            other => other,
        })?;
        Ok(Arc::new(Minted {
            header: issued.header,
            valid_for: refresh_delay(issued.lifetime, &s.timing),
        }))
    }

    pub(crate) async fn reject(&self, rejected: &HeaderValue, caller: Option<&CallerToken>) {
        if let Some(c) = caller {
            let key = c.digest();
            if self
                .cache
                .get(&key)
                .await
                .is_some_and(|m| m.header == rejected)
            {
                self.cache.invalidate(&key).await;
            }
        }
    }
}
