//! API keys and the bearer credential of a request.
//!
//! A key is `sb_` followed by 43 characters drawn uniformly from the 62
//! alphanumerics: 43 × log2(62) ≈ 256 bits from the operating system's
//! CSPRNG. The prefix lets secret scanners and the gateway recognise a key;
//! alphanumerics survive copy-paste and double-click selection.
//!
//! Only the SHA-256 of a key is stored. A slow password hash (argon2,
//! bcrypt) exists to make guessing a *low-entropy* secret expensive; a
//! 256-bit random key cannot be guessed at any hashing speed, so the slow
//! hash would buy nothing and cost tens of milliseconds of CPU on every
//! request. A plain unsalted hash is enough for the same reason: there is
//! no dictionary of random 256-bit values to precompute. Lookup is by hash
//! (an indexed equality in the store), so the time a lookup takes reveals
//! nothing about the key; [`api_key_matches`] compares in constant time for
//! the places that compare in memory.

use http::header::{HeaderMap, AUTHORIZATION};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchboard_config::Secret;

use crate::error::AuthError;

/// What every Switchboard API key starts with.
pub const API_KEY_PREFIX: &str = "sb_";
/// Random characters after the prefix.
const API_KEY_RANDOM_CHARS: usize = 43;
/// Random characters shown in listings: enough to tell keys apart, while
/// the rest (≈ 209 bits) stays secret.
const DISPLAY_RANDOM_CHARS: usize = 8;
/// The longest bearer token read; real JWTs are a few KiB at most.
pub const MAX_BEARER_LEN: usize = 8192;

/// A freshly generated key: the key itself is shown to the operator once;
/// only the hash and the display prefix are stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    key: Secret,
    hash: String,
    display_prefix: String,
}

impl NewApiKey {
    /// Returns the key, for the one moment it is shown.
    pub fn key(&self) -> &Secret {
        &self.key
    }
    /// Returns the SHA-256 hex digest to store.
    pub fn hash(&self) -> &str {
        &self.hash
    }
    /// Returns a short, non-secret prefix to show in listings.
    pub fn display_prefix(&self) -> &str {
        &self.display_prefix
    }
}

/// Generates a new API key.
pub fn generate_api_key() -> NewApiKey {
    // `rand::rng()` is a CSPRNG (ChaCha) seeded and reseeded from the OS.
    let random = Alphanumeric.sample_string(&mut rand::rng(), API_KEY_RANDOM_CHARS);
    let key = format!("{API_KEY_PREFIX}{random}");
    NewApiKey {
        hash: hash_api_key(&key),
        display_prefix: api_key_display_prefix(&key),
        key: Secret::new(key),
    }
}

/// Returns the lowercase hex SHA-256 of a key (see the module docs for why
/// a fast hash is the right one here).
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Returns the prefix shown in listings (`sb_AbCd1234`).
pub fn api_key_display_prefix(key: &str) -> String {
    key.chars()
        .take(API_KEY_PREFIX.len() + DISPLAY_RANDOM_CHARS)
        .collect()
}

/// Whether `presented` hashes to `stored_hash`, compared in constant time.
pub fn api_key_matches(presented: &str, stored_hash: &str) -> bool {
    hash_api_key(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// Whether `token` has the exact shape of a Switchboard API key.
pub fn is_api_key(token: &str) -> bool {
    token.strip_prefix(API_KEY_PREFIX).is_some_and(|rest| {
        rest.len() == API_KEY_RANDOM_CHARS && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The bearer credential a request carries, told apart by shape before any
/// lookup or signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A Switchboard API key: look up [`Credential::api_key_hash`].
    ApiKey(Secret),
    /// A compact JWS (three base64url segments): verify with
    /// [`crate::JwtVerifier`].
    Jwt(Secret),
}

impl Credential {
    /// Returns the hash to look an API key up by, or `None` for a JWT.
    pub fn api_key_hash(&self) -> Option<String> {
        match self {
            Credential::ApiKey(k) => Some(hash_api_key(k.expose())),
            Credential::Jwt(_) => None,
        }
    }
}

/// Reads the bearer credential from a request's headers (RFC 6750 §2.1).
///
/// Several `Authorization` headers are refused rather than picking one: a
/// proxy and the gateway could otherwise disagree on which was checked.
pub fn parse_bearer(headers: &HeaderMap) -> Result<Credential, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::MalformedHeader(
            "more than one authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::MalformedHeader("authorization header is not visible ascii"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::MalformedHeader("expected `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedHeader(
            "only the bearer scheme is supported",
        ));
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::MalformedHeader("bearer token is empty"));
    }
    if token.len() > MAX_BEARER_LEN {
        return Err(AuthError::MalformedToken("bearer token is too long"));
    }
    // RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body = token.trim_end_matches('=');
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
    {
        return Err(AuthError::MalformedHeader(
            "bearer token has characters outside the b64token set",
        ));
    }
    if token.starts_with(API_KEY_PREFIX) {
        return if is_api_key(token) {
            Ok(Credential::ApiKey(Secret::new(token.to_owned())))
        } else {
            Err(AuthError::MalformedToken(
                "starts like an api key but is not one",
            ))
        };
    }
    let segments: Vec<&str> = token.split('.').collect();
    let base64url = |s: &&str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match segments.len() {
        3 if segments.iter().all(base64url) => Ok(Credential::Jwt(Secret::new(token.to_owned()))),
        5 => Err(AuthError::MalformedToken(
            "encrypted jwts (jwe) are not supported",
        )),
        _ => Err(AuthError::MalformedToken(
            "neither a switchboard api key (sb_...) nor a jwt",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn generated_keys_are_well_formed_distinct_and_hash_to_their_record() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert!(is_api_key(a.key().expose()), "{}", a.key().expose());
        assert_ne!(a.key(), b.key());
        assert_eq!(a.hash(), hash_api_key(a.key().expose()));
        assert_eq!(a.hash().len(), 64);
        assert!(a.key().expose().starts_with(a.display_prefix()));
        assert_eq!(a.display_prefix().len(), 11);
        assert!(api_key_matches(a.key().expose(), a.hash()));
        assert!(!api_key_matches(b.key().expose(), a.hash()));
        assert!(!format!("{a:?}").contains(a.key().expose()));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_parsing_tells_keys_from_jwts() {
        let key = generate_api_key();
        let k = key.key().expose();
        match parse_bearer(&headers(&[&format!("Bearer {k}")])).unwrap() {
            Credential::ApiKey(s) => assert_eq!(s.expose(), k),
            other => panic!("{other:?}"),
        }
        let cred = parse_bearer(&headers(&[&format!("bearer  {k}")])).unwrap();
        assert_eq!(cred.api_key_hash().as_deref(), Some(key.hash()));
        assert!(matches!(
            parse_bearer(&headers(&["Bearer eyJh.eyJz.c2ln"])).unwrap(),
            Credential::Jwt(_)
        ));
    }

    #[test]
    fn bad_authorization_headers_are_refused_with_the_right_code() {
        let rows: &[(&[&str], &str)] = &[
            (&[], "none"),
            (&["Basic dXNlcjpwYXNz"], "invalid_request"),
            (&["Bearer"], "invalid_request"),
            (&["Bearer "], "invalid_request"),
            (&["Bearer a b"], "invalid_request"),
            (&["Bearer a\"b"], "invalid_request"),
            (&["Bearer x", "Bearer y"], "invalid_request"),
            (&["Bearer sb_short"], "invalid_token"),
            (&["Bearer sb_Ab.cd.ef"], "invalid_token"),
            (&["Bearer a.b"], "invalid_token"),
            (&["Bearer a..c"], "invalid_token"),
            (&["Bearer a.b.c.d.e"], "invalid_token"),
            (&["Bearer opaque-token"], "invalid_token"),
        ];
        for (h, code) in rows {
            let err = parse_bearer(&headers(h)).expect_err(&format!("{h:?}"));
            assert_eq!(err.rfc6750_code().unwrap_or("none"), *code, "{h:?}: {err}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_BEARER_LEN + 1));
        assert!(parse_bearer(&headers(&[&long])).is_err());
    }
}
