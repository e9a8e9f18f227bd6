//! `[auth]` and `[security]`: who may call, and how the gateway guards the
//! tools it federates. Kept apart from the server and upstream sections so
//! that each concern validates in one place.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

use crate::error::ConfigError;
use crate::load::Validator;
use crate::model::Secret;

/// `[auth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub(crate) anonymous: Option<bool>,
    pub(crate) anonymous_scopes: Option<Vec<String>>,
    pub(crate) api_keys: Option<bool>,
    pub(crate) rate_limit_per_minute: Option<u32>,
    pub(crate) jwt: Option<Spanned<RawJwt>>,
    pub(crate) resource: Option<RawResource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) jwks_url: Option<Spanned<String>>,
    pub(crate) hs256_secret: Option<Spanned<String>>,
    pub(crate) leeway: Option<Spanned<String>>,
    pub(crate) scope_claim: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    pub(crate) url: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) authorization_servers: Vec<String>,
    #[serde(default)]
    pub(crate) scopes_supported: Vec<String>,
}

/// `oauth = { ... }` of an HTTP upstream, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamOAuth {
    pub(crate) token_url: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<String>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) resource: Option<String>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) auth_method: Option<String>,
}

/// The gateway's own OAuth client registration for one upstream: it gets
/// tokens for the upstream itself (client credentials, or a refresh token an
/// operator provisioned). A caller's token is never sent upstream.
#[derive(Debug, Clone)]
pub struct UpstreamOAuthConfig {
    /// The token endpoint; `None` discovers it from the upstream URL
    /// (RFC 9728 protected-resource metadata, then RFC 8414).
    pub token_url: Option<String>,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    /// RFC 8707 resource indicator; by default the one the upstream's
    /// metadata names.
    pub resource: Option<String>,
    /// Use this refresh token instead of the client-credentials grant.
    pub refresh_token: Option<Secret>,
    /// `client_secret_post` instead of HTTP Basic at the token endpoint.
    pub secret_in_body: bool,
}

pub(crate) fn upstream_oauth(
    v: &Validator<'_>,
    at: usize,
    field: &dyn Fn(&str) -> String,
    raw: RawUpstreamOAuth,
) -> Result<UpstreamOAuthConfig, ConfigError> {
    let url_field = |name: &str, value: Option<String>| {
        value.map(|u| http_url(v, at, &field(name), &u)).transpose()
    };
    let secret = |name: &str, value: Option<String>| {
        value
            .map(|s| referenced_secret(v, at, &field(name), &s))
            .transpose()
    };
    if raw.client_id.trim().is_empty() {
        return Err(v.err(Some(at), field("oauth.client_id"), "must not be empty"));
    }
    let secret_in_body = match raw.auth_method.as_deref() {
        None | Some("basic") => false,
        Some("post") => true,
        Some(other) => {
            return Err(v.err(
                Some(at),
                field("oauth.auth_method"),
                format!(
                    "{other:?} is not a client authentication method; use \"basic\" or \"post\""
                ),
            ))
        }
    };
    Ok(UpstreamOAuthConfig {
        token_url: url_field("oauth.token_url", raw.token_url)?,
        client_id: raw.client_id,
        client_secret: secret("oauth.client_secret", raw.client_secret)?,
        scopes: raw.scopes,
        resource: url_field("oauth.resource", raw.resource)?,
        refresh_token: secret("oauth.refresh_token", raw.refresh_token)?,
        secret_in_body,
    })
}

/// `[security]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecurity {
    pub(crate) pinning: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) tool_rate_limits: BTreeMap<String, u32>,
}

/// Who may call the gateway.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Whether requests without credentials are served. `None` means "not
    /// said": the gateway then serves anonymous callers only when it listens
    /// on loopback, and refuses to start on any other address.
    pub anonymous: Option<bool>,
    /// What an anonymous caller may use (scope patterns; `admin` is never
    /// implied by `*`).
    pub anonymous_scopes: Vec<String>,
    /// Whether API keys from the store are accepted.
    pub api_keys: bool,
    /// Requests per minute per authenticated identity; 0 disables.
    pub rate_limit_per_minute: u32,
    pub jwt: Option<JwtConfig>,
    /// RFC 9728 protected-resource metadata, served at
    /// `/.well-known/oauth-protected-resource`.
    pub resource: ResourceConfig,
}

impl AuthConfig {
    /// Whether any way to present credentials is configured.
    pub fn has_credentials(&self) -> bool {
        self.api_keys || self.jwt.is_some()
    }
}

/// JWT bearer-token verification.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: Option<String>,
    pub hs256_secret: Option<Secret>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim holding the caller's scopes (space-separated string or array).
    pub scope_claim: String,
}

#[derive(Debug, Clone, Default)]
pub struct ResourceConfig {
    /// The resource identifier clients ask tokens for; by default derived from
    /// the request's own `Host`.
    pub url: Option<String>,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
}

/// What the gateway does when an upstream changes a tool definition after it
/// was pinned (the "rug pull" defence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinningPolicy {
    /// Hide the changed tool until an operator approves the new definition.
    #[default]
    Block,
    /// Keep serving the changed tool, but log and count the change.
    Warn,
    /// Do not pin at all.
    Off,
}

#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    pub pinning: PinningPolicy,
    /// Calls per minute per identity for tools matching a glob (over the
    /// exposed, federated name).
    pub tool_rate_limits: Vec<(String, u32)>,
}

pub(crate) const DEFAULT_IDENTITY_RATE_LIMIT: u32 = 600;
pub(crate) const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

pub(crate) fn auth(v: &Validator<'_>, raw: RawAuth) -> Result<AuthConfig, ConfigError> {
    let jwt = match raw.jwt {
        None => None,
        Some(spanned) => {
            let at = spanned.span().start;
            let j = spanned.into_inner();
            if j.issuer.trim().is_empty() || j.audience.trim().is_empty() {
                return Err(v.err(
                    Some(at),
                    "auth.jwt",
                    "needs a non-empty `issuer` and `audience`: tokens are only accepted for this gateway",
                ));
            }
            let jwks_url = match &j.jwks_url {
                None => None,
                Some(u) => Some(http_url(
                    v,
                    u.span().start,
                    "auth.jwt.jwks_url",
                    u.get_ref(),
                )?),
            };
            let hs256_secret = match &j.hs256_secret {
                None => None,
                Some(s) => {
                    let value =
                        referenced_secret(v, s.span().start, "auth.jwt.hs256_secret", s.get_ref())?;
                    if value.expose().len() < 32 {
                        return Err(v.err(
                            Some(s.span().start),
                            "auth.jwt.hs256_secret",
                            "must be at least 32 bytes: a shorter HMAC key can be guessed offline",
                        ));
                    }
                    Some(value)
                }
            };
            if jwks_url.is_none() && hs256_secret.is_none() {
                return Err(v.err(
                    Some(at),
                    "auth.jwt",
                    "needs `jwks_url` (RS256/ES256) or `hs256_secret` to verify signatures",
                ));
            }
            Some(JwtConfig {
                issuer: j.issuer,
                audience: j.audience,
                jwks_url,
                hs256_secret,
                leeway: v.duration(&j.leeway, "auth.jwt.leeway", DEFAULT_LEEWAY)?,
                scope_claim: j.scope_claim.unwrap_or_else(|| "scope".to_owned()),
            })
        }
    };
    let resource = raw.resource.unwrap_or_default();
    let url = match &resource.url {
        None => None,
        Some(u) => {
            let url = u.get_ref().clone();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(v.err(
                    Some(u.span().start),
                    "auth.resource.url",
                    format!("{url:?} is not an http(s) URL; write the gateway's public /mcp URL"),
                ));
            }
            Some(url)
        }
    };
    Ok(AuthConfig {
        anonymous: raw.anonymous,
        anonymous_scopes: raw.anonymous_scopes.unwrap_or_else(|| vec!["*".to_owned()]),
        api_keys: raw.api_keys.unwrap_or(true),
        rate_limit_per_minute: raw
            .rate_limit_per_minute
            .unwrap_or(DEFAULT_IDENTITY_RATE_LIMIT),
        jwt,
        resource: ResourceConfig {
            url,
            authorization_servers: resource.authorization_servers,
            scopes_supported: resource.scopes_supported,
        },
    })
}

/// A secret value, which must be a `${env:}`/`${file:}` reference so that it
/// is never written in the file itself.
fn referenced_secret(
    v: &Validator<'_>,
    at: usize,
    field: &str,
    raw: &str,
) -> Result<Secret, ConfigError> {
    if !raw.contains("${") {
        return Err(v.err(
            Some(at),
            field,
            "secrets are only read from ${env:NAME} or ${file:PATH}, never written in the file",
        ));
    }
    Ok(Secret::new(v.interp(at, field, raw)?))
}

/// An interpolated http(s) URL.
fn http_url(v: &Validator<'_>, at: usize, field: &str, raw: &str) -> Result<String, ConfigError> {
    let url = v.interp(at, field, raw)?;
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(url)
    } else {
        Err(v.err(Some(at), field, format!("{url:?} is not an http(s) URL")))
    }
}

pub(crate) fn security(v: &Validator<'_>, raw: RawSecurity) -> Result<SecurityConfig, ConfigError> {
    let pinning = match raw
        .pinning
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span().start))
    {
        None | Some(("block", _)) => PinningPolicy::Block,
        Some(("warn", _)) => PinningPolicy::Warn,
        Some(("off", _)) => PinningPolicy::Off,
        Some((other, at)) => {
            return Err(v.err(
                Some(at),
                "security.pinning",
                format!("{other:?} is not a pinning policy; use \"block\", \"warn\" or \"off\""),
            ))
        }
    };
    let mut tool_rate_limits = Vec::with_capacity(raw.tool_rate_limits.len());
    for (glob, per_minute) in raw.tool_rate_limits {
        if let Err(e) = globset::Glob::new(&glob) {
            return Err(v.err(
                None,
                format!("security.tool_rate_limits.{glob:?}"),
                format!("is not a glob: {e}"),
            ));
        }
        if per_minute == 0 {
            return Err(v.err(
                None,
                format!("security.tool_rate_limits.{glob:?}"),
                "must be greater than 0; remove the entry to lift the limit",
            ));
        }
        tool_rate_limits.push((glob, per_minute));
    }
    Ok(SecurityConfig {
        pinning,
        tool_rate_limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<crate::Config, ConfigError> {
        crate::load::parse_for_test(text)
    }

    #[test]
    fn no_auth_section_leaves_anonymous_undecided_and_keys_on() {
        let c = check("").unwrap();
        assert_eq!(c.auth.anonymous, None);
        assert!(c.auth.api_keys);
        assert_eq!(c.auth.anonymous_scopes, vec!["*".to_owned()]);
        assert_eq!(c.security.pinning, PinningPolicy::Block);
    }

    #[test]
    fn a_jwt_section_with_secret_from_env_validates() {
        let c = check(
            "[auth]\nanonymous = false\n[auth.jwt]\nissuer = \"https://idp\"\naudience = \"sb\"\nhs256_secret = \"${env:LONG}\"\n",
        )
        .unwrap();
        let jwt = c.auth.jwt.unwrap();
        assert_eq!(jwt.leeway, DEFAULT_LEEWAY);
        assert!(!format!("{jwt:?}").contains("0123456789"));
    }

    #[test]
    fn auth_and_security_errors_name_the_field_and_the_fix() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[auth.jwt]\nissuer = \"i\"\naudience = \"a\"",
                &["auth.jwt", "jwks_url", "hs256_secret"],
            ),
            (
                "[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\nhs256_secret = \"plain\"",
                &["test.toml:4", "${env:NAME}"],
            ),
            (
                "[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\nhs256_secret = \"${env:TOKEN}\"",
                &["at least 32 bytes"],
            ),
            (
                "[auth.jwt]\nissuer = \"\"\naudience = \"a\"\njwks_url = \"https://x\"",
                &["issuer"],
            ),
            (
                "[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"ftp://x\"",
                &["auth.jwt.jwks_url", "http(s)"],
            ),
            ("[auth]\nanonymus = true", &["unknown field", "anonymus"]),
            (
                "[security]\npinning = \"strict\"",
                &["test.toml:2", "security.pinning", "\"block\""],
            ),
            (
                "[security.tool_rate_limits]\n\"a[\" = 5",
                &["tool_rate_limits", "glob"],
            ),
            (
                "[security.tool_rate_limits]\n\"a*\" = 0",
                &["greater than 0"],
            ),
        ];
        for (text, needles) in cases {
            let e = check(text).expect_err(text).to_string();
            for n in *needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
    }
}
