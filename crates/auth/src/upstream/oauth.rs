//! The gateway as an OAuth client of an upstream's authorization server.
//!
//! The token endpoint is configured or discovered from the upstream URL:
//! RFC 9728 protected-resource metadata (path-inserted well-known URL, then
//! the root one) names the authorization server, whose RFC 8414 metadata
//! (or OpenID configuration) names the token endpoint. The metadata's
//! `resource` must be the upstream's URL and the server's `issuer` the one
//! named, so a document served from elsewhere cannot redirect the gateway's
//! client secret. The resource is sent as RFC 8707 `resource`, binding the
//! token to this upstream.

use std::sync::RwLock;

use http::HeaderValue;
use serde::Deserialize;
use switchboard_config::Secret;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::{check_endpoint, refresh_delay, token_request, ClientCredentials, Issued, TokenTiming};
use crate::error::{SettingsError, UpstreamAuthError};
use crate::fetch::{self, FetchError};
use crate::prm;

/// Where the token endpoint is.
#[derive(Debug, Clone)]
pub enum TokenEndpoint {
    Url(Url),
    /// Discover it from the upstream's MCP endpoint URL.
    Discover {
        resource_url: Url,
    },
}

/// How tokens are obtained.
#[derive(Debug, Clone)]
pub enum Grant {
    ClientCredentials,
    /// A refresh token an operator obtained (e.g. through a browser
    /// consent once) and stored. A rotated refresh token replaces it in
    /// memory; see [`super::UpstreamAuth`].
    RefreshToken(Secret),
}

/// The OAuth client role for one upstream.
#[derive(Debug, Clone)]
pub struct OAuthClientSettings {
    pub token_endpoint: TokenEndpoint,
    pub client: ClientCredentials,
    pub scopes: Vec<String>,
    /// RFC 8707 resource indicator; with discovery and `None`, the
    /// upstream's metadata `resource` is used.
    pub resource: Option<String>,
    pub grant: Grant,
    pub timing: TokenTiming,
}

#[derive(Debug)]
pub(crate) struct TokenSource {
    upstream: String,
    settings: OAuthClientSettings,
    client: reqwest::Client,
    /// Read without waiting on `state`: the fast path of every request.
    current: RwLock<Option<Cached>>,
    /// Held while obtaining a token: concurrent callers share one request.
    state: Mutex<State>,
}

#[derive(Debug, Clone)]
struct Cached {
    header: HeaderValue,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Debug)]
struct State {
    endpoint: Option<(Url, Option<String>)>,
    refresh_token: Option<Secret>,
    failed_at: Option<Instant>,
}

impl TokenSource {
    pub(crate) fn new(
        upstream: &str,
        settings: OAuthClientSettings,
    ) -> Result<Self, SettingsError> {
        match &settings.token_endpoint {
            TokenEndpoint::Url(u) => check_endpoint(u, "token_endpoint")?,
            TokenEndpoint::Discover { resource_url } => check_endpoint(resource_url, "url")?,
        }
        if settings.client.client_id.is_empty() {
            return Err(SettingsError::new("client_id", "is empty"));
        }
        let refresh_token = match &settings.grant {
            Grant::ClientCredentials => None,
            Grant::RefreshToken(t) if t.expose().is_empty() => {
                return Err(SettingsError::new("refresh_token", "is empty"))
            }
            Grant::RefreshToken(t) => Some(t.clone()),
        };
        Ok(Self {
            upstream: upstream.to_owned(),
            client: fetch::client(&settings.timing.fetch)?,
            settings,
            current: RwLock::new(None),
            state: Mutex::new(State {
                endpoint: None,
                refresh_token,
                failed_at: None,
            }),
        })
    }

    fn cached(&self) -> Option<Cached> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    pub(crate) async fn header(&self) -> Result<HeaderValue, UpstreamAuthError> {
        if let Some(c) = self.cached().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.header);
        }
        let mut state = self.state.lock().await;
        let now = Instant::now();
        // Another caller refreshed while this one waited.
        if let Some(c) = self.cached().filter(|c| now < c.refresh_at) {
            return Ok(c.header);
        }
        let still_valid = self.cached().filter(|c| now < c.expires_at);
        let retry_after = self.settings.timing.retry_after_failure;
        if let Some(failed) = state.failed_at.filter(|f| now < *f + retry_after) {
            return match still_valid {
                Some(c) => Ok(c.header),
                None => Err(UpstreamAuthError::CoolingDown {
                    upstream: self.upstream.clone(),
                    retry_in: (failed + retry_after) - now,
                }),
            };
        }
        match self.obtain(&mut state).await {
            Ok(issued) => {
                state.failed_at = None;
                if let Some(rotated) = issued.refresh_token {
                    if state.refresh_token.is_some() {
                        state.refresh_token = Some(rotated);
                    }
                }
                let now = Instant::now();
                let cached = Cached {
                    header: issued.header.clone(),
                    refresh_at: now + refresh_delay(issued.lifetime, &self.settings.timing),
                    expires_at: now + issued.lifetime,
                };
                if let Ok(mut c) = self.current.write() {
                    *c = Some(cached);
                }
                Ok(issued.header)
            }
            Err(e) => {
                state.failed_at = Some(Instant::now());
                match still_valid {
                    Some(c) => {
                        tracing::warn!(upstream = %self.upstream, error = %e, "token refresh failed; using the current token until it expires");
                        Ok(c.header)
                    }
                    None => Err(e),
                }
            }
        }
    }

    async fn obtain(&self, state: &mut State) -> Result<Issued, UpstreamAuthError> {
        let (endpoint, resource) = match (&state.endpoint, &self.settings.token_endpoint) {
            (Some(e), _) => e.clone(),
            (None, TokenEndpoint::Url(u)) => (u.clone(), self.settings.resource.clone()),
            (None, TokenEndpoint::Discover { resource_url }) => {
                let (url, found) =
                    discover(&self.client, &self.upstream, resource_url, &self.settings).await?;
                let e = (url, self.settings.resource.clone().or(Some(found)));
                state.endpoint = Some(e.clone());
                e
            }
        };
        let mut form: Vec<(&'static str, String)> = Vec::new();
        match &state.refresh_token {
            Some(rt) => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", rt.expose().to_owned()));
            }
            None => form.push(("grant_type", "client_credentials".into())),
        }
        if !self.settings.scopes.is_empty() {
            form.push(("scope", self.settings.scopes.join(" ")));
        }
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        token_request(
            &self.client,
            &self.upstream,
            &endpoint,
            &self.settings.client,
            form,
            &self.settings.timing,
        )
        .await
    }

    pub(crate) async fn refresh_token(&self) -> Option<Secret> {
        self.state.lock().await.refresh_token.clone()
    }

    pub(crate) fn reject(&self, rejected: &HeaderValue) {
        if let Ok(mut c) = self.current.write() {
            if c.as_ref().is_some_and(|c| c.header == rejected) {
                *c = None;
            }
        }
    }
}

#[derive(Deserialize)]
struct ResourceMetadata {
    resource: String,
    #[serde(default)]
    authorization_servers: Vec<String>,
}

#[derive(Deserialize)]
struct ServerMetadata {
    issuer: String,
    token_endpoint: Option<String>,
}

/// Finds the token endpoint and resource identifier of `resource_url`.
async fn discover(
    client: &reqwest::Client,
    upstream: &str,
    resource_url: &Url,
    settings: &OAuthClientSettings,
) -> Result<(Url, String), UpstreamAuthError> {
    let max = settings.timing.fetch.max_bytes;
    let fail = |url: &Url, reason: String| UpstreamAuthError::Discovery {
        upstream: upstream.to_owned(),
        url: url.to_string(),
        reason,
    };
    let mut root = resource_url.clone();
    root.set_path(prm::WELL_KNOWN);
    root.set_query(None);
    let candidates = [prm::metadata_url(resource_url), root];
    let (prm_url, meta): (&Url, ResourceMetadata) = first_document(client, &candidates, max)
        .await
        .map_err(|reason| fail(resource_url, reason))?;
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    let origin = resource_url.origin().ascii_serialization();
    if !same(&meta.resource, resource_url.as_str()) && !same(&meta.resource, &origin) {
        return Err(fail(
            prm_url,
            format!(
                "metadata is for resource {:?}, not this upstream",
                meta.resource
            ),
        ));
    }
    let issuer = meta
        .authorization_servers
        .first()
        .ok_or_else(|| fail(prm_url, "metadata names no authorization server".into()))?;
    let issuer_url =
        Url::parse(issuer).map_err(|_| fail(prm_url, format!("{issuer:?} is not a url")))?;
    check_endpoint(&issuer_url, "authorization_servers").map_err(|e| fail(prm_url, e.reason))?;
    let path = issuer_url.path().trim_end_matches('/');
    let at = |p: String| {
        let mut u = issuer_url.clone();
        u.set_path(&p);
        u
    };
    let candidates: Vec<Url> = if path.is_empty() {
        vec![
            at("/.well-known/oauth-authorization-server".into()),
            at("/.well-known/openid-configuration".into()),
        ]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    };
    let (as_url, server): (&Url, ServerMetadata) = first_document(client, &candidates, max)
        .await
        .map_err(|reason| fail(&issuer_url, reason))?;
    if !same(&server.issuer, issuer) {
        return Err(fail(
            as_url,
            format!("metadata is for issuer {:?}, not {issuer:?}", server.issuer),
        ));
    }
    let token_endpoint = server
        .token_endpoint
        .ok_or_else(|| fail(as_url, "metadata has no token_endpoint".into()))?;
    let token_endpoint = Url::parse(&token_endpoint)
        .map_err(|_| fail(as_url, "token_endpoint is not a url".into()))?;
    check_endpoint(&token_endpoint, "token_endpoint").map_err(|e| fail(as_url, e.reason))?;
    tracing::info!(%upstream, %token_endpoint, "discovered the upstream's token endpoint");
    Ok((token_endpoint, meta.resource))
}

/// Fetches the first of `urls` that exists (404 moves on to the next).
async fn first_document<'u, T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    urls: &'u [Url],
    max: usize,
) -> Result<(&'u Url, T), String> {
    let mut last = String::from("no candidate urls");
    for url in urls {
        let request = client
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json");
        match fetch::send(request, max).await {
            Ok(body) => {
                let doc = serde_json::from_slice(&body)
                    .map_err(|_| format!("{url} is not the expected metadata document"))?;
                return Ok((url, doc));
            }
            Err(FetchError::Status(404, _)) => last = format!("{url} answered 404"),
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
    Err(last)
}
