//! The crate's error vocabulary, split by whose fault a failure is:
//! [`AuthError`] is about the caller's credentials (401/403, RFC 6750 codes),
//! [`UpstreamAuthError`] about the gateway getting its own upstream token
//! (the caller usually did nothing wrong), and [`SettingsError`] about
//! settings the operator wrote. Keeping them apart means an identity
//! provider's answer can never be relayed to a client as if it were theirs.

use std::time::Duration;

use http::StatusCode;

/// Why a request's credentials were refused.
///
/// Messages are safe to return to the client: they never contain the token,
/// a key, or a secret from the settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("no credentials; send `Authorization: Bearer <token>`")]
    Missing,
    #[error("malformed authorization header: {0}")]
    MalformedHeader(&'static str),
    #[error("malformed bearer token: {0}")]
    MalformedToken(&'static str),
    #[error("unknown or revoked api key")]
    UnknownApiKey,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("token was issued by another issuer than this gateway trusts")]
    WrongIssuer,
    #[error("token is meant for another audience than this gateway")]
    WrongAudience,
    #[error("token is signed with {0}, which this gateway does not accept")]
    AlgorithmNotAllowed(String),
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("token claim `{claim}` is invalid: {reason}")]
    InvalidClaim { claim: &'static str, reason: String },
    #[error("token names signing key {0:?}, which the issuer's key set does not have")]
    UnknownKey(String),
    #[error("token has no `kid` and the issuer's key set has several keys for its algorithm")]
    AmbiguousKey,
    /// The key set could not be fetched and no cached copy exists: the
    /// gateway, not the caller, is at fault.
    #[error("token signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    #[error("insufficient scope: this needs {needed}")]
    InsufficientScope { needed: String },
}

impl AuthError {
    /// Returns the RFC 6750 §3.1 `error` code for a `WWW-Authenticate`
    /// header, or `None` where the RFC says to send none (no credentials at
    /// all) or where the gateway is at fault.
    pub fn rfc6750_code(&self) -> Option<&'static str> {
        match self {
            AuthError::Missing | AuthError::KeysUnavailable(_) => None,
            AuthError::MalformedHeader(_) => Some("invalid_request"),
            AuthError::InsufficientScope { .. } => Some("insufficient_scope"),
            AuthError::MalformedToken(_)
            | AuthError::UnknownApiKey
            | AuthError::BadSignature
            | AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::WrongIssuer
            | AuthError::WrongAudience
            | AuthError::AlgorithmNotAllowed(_)
            | AuthError::MissingClaim(_)
            | AuthError::InvalidClaim { .. }
            | AuthError::UnknownKey(_)
            | AuthError::AmbiguousKey => Some("invalid_token"),
        }
    }

    /// Returns the HTTP status RFC 6750 §3.1 pairs with the error.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MalformedHeader(_) => StatusCode::BAD_REQUEST,
            AuthError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            AuthError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Why the gateway could not get (or send) its own credential for an
/// upstream.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamAuthError {
    #[error("upstream {upstream:?}: oauth discovery from {url} failed: {reason}")]
    Discovery {
        upstream: String,
        url: String,
        reason: String,
    },
    #[error("upstream {upstream:?}: token endpoint {url} could not be reached: {reason}")]
    Unreachable {
        upstream: String,
        url: String,
        reason: String,
    },
    #[error("upstream {upstream:?}: token endpoint {url} refused the request with {status}{}", oauth_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Refused {
        upstream: String,
        url: String,
        status: u16,
        /// The RFC 6749 §5.2 `error` code, filtered to its allowed
        /// characters; the free-text description is never kept.
        oauth_error: Option<String>,
    },
    #[error("upstream {upstream:?}: token endpoint {url} sent an unusable answer: {reason}")]
    BadResponse {
        upstream: String,
        url: String,
        reason: String,
    },
    #[error("upstream {upstream:?}: last token request failed; next attempt in {}s", retry_in.as_secs().max(1))]
    CoolingDown {
        upstream: String,
        retry_in: Duration,
    },
    #[error("upstream {upstream:?} acts on behalf of the caller and needs the caller's bearer token; api keys and anonymous callers cannot use it")]
    NoSubjectToken { upstream: String },
    #[error("upstream {upstream:?}: the identity provider would not exchange the caller's token ({oauth_error})")]
    SubjectTokenRejected {
        upstream: String,
        oauth_error: String,
    },
    #[error("upstream {upstream:?}: the token is not a valid http header value")]
    InvalidHeaderValue { upstream: String },
}

impl UpstreamAuthError {
    /// Whether the caller, not the gateway or the identity provider, is at
    /// fault (their token cannot be used for this upstream): the edge
    /// answers 403 rather than 502.
    pub fn is_caller_fault(&self) -> bool {
        matches!(
            self,
            UpstreamAuthError::NoSubjectToken { .. }
                | UpstreamAuthError::SubjectTokenRejected { .. }
        )
    }

    /// Whether trying again later could succeed without any change of
    /// settings.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            UpstreamAuthError::Unreachable { .. } | UpstreamAuthError::CoolingDown { .. }
        ) || matches!(self, UpstreamAuthError::Refused { status, .. } if *status >= 500 || *status == 429)
    }
}

/// Settings that cannot work, named by field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SettingsError {
    pub field: &'static str,
    pub reason: String,
}

impl SettingsError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_credentials_carry_no_error_code_as_rfc_6750_asks() {
        assert_eq!(AuthError::Missing.rfc6750_code(), None);
        assert_eq!(AuthError::Missing.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn each_error_maps_to_its_rfc_6750_code_and_status() {
        let cases = [
            (
                AuthError::MalformedHeader("x"),
                Some("invalid_request"),
                400,
            ),
            (AuthError::Expired, Some("invalid_token"), 401),
            (AuthError::UnknownApiKey, Some("invalid_token"), 401),
            (
                AuthError::InsufficientScope {
                    needed: "tool:a__b".into(),
                },
                Some("insufficient_scope"),
                403,
            ),
            (AuthError::KeysUnavailable("down".into()), None, 503),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.rfc6750_code(), code, "{e}");
            assert_eq!(e.status().as_u16(), status, "{e}");
        }
    }
}
