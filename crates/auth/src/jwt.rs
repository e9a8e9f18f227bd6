//! JWT bearer verification.
//!
//! # Decisions
//!
//! - The algorithm comes from an allow-list, never from the token alone.
//!   `none` is never accepted (jsonwebtoken has no such algorithm).
//! - The key is chosen by the token's algorithm *family*: an HMAC token is
//!   only ever checked against the configured HMAC secret, an asymmetric one
//!   only against JWKS keys of the matching type (RSA for RS*/PS*, the
//!   matching curve for ES*, OKP for EdDSA). Symmetric keys in a JWKS are
//!   ignored. So an HS256 token "signed" with an RSA public key cannot
//!   verify (alg confusion).
//! - A JWK that declares `alg` or `use` is used only for that algorithm and
//!   for signatures.
//! - `exp`, `iss`, `aud` and `sub` are required; `nbf` is checked when
//!   present; both with the configured leeway for clock skew.
//! - Headers that point elsewhere for keys (`jku`, `x5u`, `jwk`) are
//!   ignored; a `crit` header is refused (RFC 7515 §4.1.11), since this
//!   verifier understands no extension.
//! - The key set is cached for `ttl` and refetched early when a token names
//!   an unknown `kid` (key rotation), but at most once per
//!   `min_refetch_interval`, so tokens with made-up kids cannot turn the
//!   gateway into a load generator against the identity provider. When a
//!   refetch fails, the keys already held keep working.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use switchboard_config::Secret;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

pub use jsonwebtoken::Algorithm;

use crate::error::{AuthError, SettingsError};
use crate::fetch::{self, FetchLimits};
use crate::identity::{Identity, IdentityKind};
use crate::scope::Scopes;

/// The separator the gateway uses unless configured otherwise.
pub const DEFAULT_SEPARATOR: &str = "__";

/// How JWTs are verified. Built by the gateway from its config.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The `iss` every token must carry, exactly.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Required: a
    /// token minted for another service must not work here (MCP
    /// authorization, token audience binding).
    pub audience: Vec<String>,
    /// Enables HS256 with this secret (at least 32 bytes, RFC 7518 §3.2).
    pub hs256_secret: Option<Secret>,
    /// Enables asymmetric algorithms with keys from this JWKS.
    pub jwks_url: Option<Url>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim holding scopes: a space-separated string or an array.
    /// When it is `scope` and absent, `scp` is read too.
    pub scope_claim: String,
    /// Allowed algorithms; empty means HS256 if a secret is set plus RS256
    /// and ES256 if a JWKS URL is set.
    pub algorithms: Vec<Algorithm>,
    /// The gateway's namespacing separator, for parsing scopes.
    pub separator: String,
    pub jwks: JwksSettings,
}

/// How the key set is fetched and cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksSettings {
    pub ttl: Duration,
    /// The shortest time between two fetches triggered by unknown kids or
    /// failures.
    pub min_refetch_interval: Duration,
    pub max_keys: usize,
    pub fetch: FetchLimits,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(30),
            max_keys: 64,
            fetch: FetchLimits::default(),
        }
    }
}

impl JwtSettings {
    /// Settings with the defaults: 60 s leeway, `scope` claim, algorithms
    /// by the keys configured.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: vec![audience.into()],
            hs256_secret: None,
            jwks_url: None,
            leeway: Duration::from_secs(60),
            scope_claim: "scope".to_owned(),
            algorithms: Vec::new(),
            separator: DEFAULT_SEPARATOR.to_owned(),
            jwks: JwksSettings::default(),
        }
    }
}

/// Verifies bearer JWTs into [`Identity`]s.
pub struct JwtVerifier {
    issuer: String,
    audience: Vec<String>,
    leeway: Duration,
    scope_claim: String,
    separator: String,
    algorithms: HashSet<Algorithm>,
    hmac: Option<DecodingKey>,
    jwks: Option<Jwks>,
    /// Parsed scopes by claim value: tokens of one client repeat the same
    /// scopes, and compiling globs per request would cost more than the
    /// signature check.
    scope_cache: moka::sync::Cache<String, Scopes>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .field("hs256", &self.hmac.is_some())
            .field("jwks", &self.jwks.as_ref().map(|j| j.url.as_str()))
            .finish_non_exhaustive()
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Result<Self, SettingsError> {
        if settings.issuer.is_empty() {
            return Err(SettingsError::new("issuer", "is empty"));
        }
        if settings.audience.iter().all(|a| a.is_empty()) {
            return Err(SettingsError::new(
                "audience",
                "is empty; set it to the identifier your identity provider puts in `aud` for this gateway",
            ));
        }
        if settings.hs256_secret.is_none() && settings.jwks_url.is_none() {
            return Err(SettingsError::new(
                "jwks_url",
                "neither jwks_url nor hs256_secret is set; tokens could not be verified",
            ));
        }
        if settings.scope_claim.is_empty() {
            return Err(SettingsError::new("scope_claim", "is empty"));
        }
        if settings.separator.is_empty() {
            return Err(SettingsError::new("separator", "is empty"));
        }
        let hmac = match &settings.hs256_secret {
            Some(s) if s.expose().len() < 32 => {
                return Err(SettingsError::new(
                    "hs256_secret",
                    "is shorter than 32 bytes; HS256 needs a key at least as long as its hash (RFC 7518 §3.2)",
                ))
            }
            Some(s) => Some(DecodingKey::from_secret(s.expose().as_bytes())),
            None => None,
        };
        let mut algorithms: HashSet<Algorithm> = settings.algorithms.iter().copied().collect();
        if algorithms.is_empty() {
            if hmac.is_some() {
                algorithms.insert(Algorithm::HS256);
            }
            if settings.jwks_url.is_some() {
                algorithms.insert(Algorithm::RS256);
                algorithms.insert(Algorithm::ES256);
            }
        }
        for alg in &algorithms {
            match alg {
                Algorithm::HS256 if hmac.is_none() => {
                    return Err(SettingsError::new(
                        "algorithms",
                        "HS256 is allowed but hs256_secret is not set",
                    ))
                }
                Algorithm::HS384 | Algorithm::HS512 => {
                    return Err(SettingsError::new(
                        "algorithms",
                        format!("{alg:?} is not supported; the only HMAC algorithm is HS256"),
                    ))
                }
                a if !is_hmac(*a) && settings.jwks_url.is_none() => {
                    return Err(SettingsError::new(
                        "algorithms",
                        format!("{a:?} is allowed but jwks_url is not set"),
                    ))
                }
                _ => {}
            }
        }
        let jwks = match settings.jwks_url {
            Some(url) => {
                fetch::require_secure(&url, "jwks_url")?;
                Some(Jwks {
                    client: fetch::client(&settings.jwks.fetch)?,
                    url,
                    settings: settings.jwks,
                    current: RwLock::new(None),
                    refetch: Mutex::new(RefetchState { last_attempt: None }),
                })
            }
            None => None,
        };
        Ok(Self {
            issuer: settings.issuer,
            audience: settings.audience,
            leeway: settings.leeway,
            scope_claim: settings.scope_claim,
            separator: settings.separator,
            algorithms,
            hmac,
            jwks,
            scope_cache: moka::sync::Cache::new(1024),
        })
    }

    /// Verifies `token` and returns the identity it proves.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = read_header(token)?;
        let alg = header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{alg:?}")));
        }
        let jwk_key;
        let key = if is_hmac(alg) {
            self.hmac
                .as_ref()
                .ok_or_else(|| AuthError::AlgorithmNotAllowed(format!("{alg:?}")))?
        } else {
            let jwks = self
                .jwks
                .as_ref()
                .ok_or_else(|| AuthError::AlgorithmNotAllowed(format!("{alg:?}")))?;
            jwk_key = jwks.key_for(header.kid.as_deref(), alg).await?;
            &jwk_key.key
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| map_jwt_error(e, alg))?;
        let claims = data.claims;
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(AuthError::InvalidClaim {
                    claim: "sub",
                    reason: "is not a non-empty string".into(),
                })
            }
        };
        let scopes = self.scopes(&claims)?;
        Ok(Identity {
            subject,
            kind: IdentityKind::Jwt {
                issuer: self.issuer.clone(),
            },
            scopes,
        })
    }

    fn scopes(&self, claims: &Map<String, Value>) -> Result<Scopes, AuthError> {
        let value = claims.get(&self.scope_claim).or_else(|| {
            if self.scope_claim == "scope" {
                claims.get("scp")
            } else {
                None
            }
        });
        let items: Vec<&str> = match value {
            None => Vec::new(),
            Some(Value::String(s)) => s.split(' ').filter(|s| !s.is_empty()).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| AuthError::InvalidClaim {
                    claim: "scope",
                    reason: "is an array with a non-string entry".into(),
                })?,
            Some(_) => {
                return Err(AuthError::InvalidClaim {
                    claim: "scope",
                    reason: "is neither a string nor an array of strings".into(),
                })
            }
        };
        let cache_key = items.join(" ");
        if let Some(s) = self.scope_cache.get(&cache_key) {
            return Ok(s);
        }
        let scopes = Scopes::parse_lenient(&items, &self.separator).map_err(|e| {
            AuthError::InvalidClaim {
                claim: "scope",
                reason: e.to_string(),
            }
        })?;
        self.scope_cache.insert(cache_key, scopes.clone());
        Ok(scopes)
    }
}

struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

/// Reads the protected header ourselves first, so that `alg: none` or an
/// unknown algorithm gets a message naming it, and `crit` is refused.
fn read_header(token: &str) -> Result<Header, AuthError> {
    let first = token
        .split('.')
        .next()
        .ok_or(AuthError::MalformedToken("not a jwt"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|_| AuthError::MalformedToken("header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::MalformedToken("header is not a json object"))?;
    if header.contains_key("crit") {
        return Err(AuthError::MalformedToken(
            "header has critical extensions this gateway does not understand",
        ));
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a,
        _ => return Err(AuthError::MalformedToken("header has no alg")),
    };
    let alg: Algorithm = alg.parse().map_err(|_| {
        let shown: String = alg.chars().take(16).collect();
        AuthError::AlgorithmNotAllowed(shown)
    })?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if k.len() > 256 => {
            return Err(AuthError::MalformedToken("header kid is too long"))
        }
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::MalformedToken("header kid is not a string")),
    };
    Ok(Header { alg, kid })
}

fn map_jwt_error(e: jsonwebtoken::errors::Error, alg: Algorithm) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature
        | K::Crypto(_)
        | K::InvalidEcdsaKey
        | K::InvalidRsaKey(_)
        | K::InvalidKeyFormat => AuthError::BadSignature,
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidIssuer => AuthError::WrongIssuer,
        K::InvalidAudience => AuthError::WrongAudience,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
            AuthError::AlgorithmNotAllowed(format!("{alg:?}"))
        }
        K::MissingRequiredClaim(c) => AuthError::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "iss" => "iss",
            "aud" => "aud",
            "sub" => "sub",
            _ => "required",
        }),
        K::Base64(_) | K::Utf8(_) => AuthError::MalformedToken("a segment is not base64url utf-8"),
        K::Json(_) => AuthError::MalformedToken("claims are not a json object"),
        _ => AuthError::MalformedToken("not a valid jwt"),
    }
}

// === JWKS ===

#[derive(Debug)]
struct Jwks {
    client: reqwest::Client,
    url: Url,
    settings: JwksSettings,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching: concurrent misses share one fetch.
    refetch: Mutex<RefetchState>,
}

#[derive(Debug)]
struct RefetchState {
    last_attempt: Option<Instant>,
}

#[derive(Debug)]
struct KeySet {
    keys: Vec<Arc<UsableKey>>,
    fetched_at: Instant,
}

struct UsableKey {
    kid: Option<String>,
    jwk: Jwk,
    key: DecodingKey,
}

impl std::fmt::Debug for UsableKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsableKey").field("kid", &self.kid).finish()
    }
}

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<UsableKey>, AuthError> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| fits(&k.jwk, alg))
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
        match (kid, candidates.next(), candidates.next()) {
            (_, Some(k), None) => Ok(k.clone()),
            (Some(_), Some(k), Some(_)) => Ok(k.clone()),
            (None, Some(_), Some(_)) => Err(AuthError::AmbiguousKey),
            (Some(kid), None, _) => Err(AuthError::UnknownKey(kid.to_owned())),
            (None, None, _) => Err(AuthError::UnknownKey("(none)".to_owned())),
        }
    }
}

/// Whether a JWK may verify a token of `alg`.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return false;
    }
    if let Some(declared) = jwk.common.key_algorithm {
        if key_algorithm(declared) != Some(alg) {
            return false;
        }
    }
    match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA) => true,
        _ => false,
    }
}

fn key_algorithm(k: KeyAlgorithm) -> Option<Algorithm> {
    Some(match k {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

impl Jwks {
    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<UsableKey>, AuthError> {
        let seen = self.snapshot();
        if let Some(set) = &seen {
            if set.fetched_at.elapsed() < self.settings.ttl {
                match set.find(kid, alg) {
                    Ok(k) => return Ok(k),
                    // Rotation: an unknown kid may be a new key.
                    Err(AuthError::UnknownKey(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let set = self.refetch(seen.as_ref()).await?;
        set.find(kid, alg)
    }

    /// Fetches a new key set unless another caller just did, or the last
    /// attempt was too recent; returns the freshest set held.
    async fn refetch(&self, seen: Option<&Arc<KeySet>>) -> Result<Arc<KeySet>, AuthError> {
        let mut state = self.refetch.lock().await;
        let now_held = self.snapshot();
        // Someone fetched while we waited for the lock: use theirs.
        if let Some(held) = &now_held {
            if seen.is_none_or(|s| !Arc::ptr_eq(s, held)) {
                return Ok(held.clone());
            }
        }
        let too_soon = state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.settings.min_refetch_interval);
        if too_soon {
            return now_held.ok_or_else(|| {
                AuthError::KeysUnavailable("the last fetch of the key set failed".into())
            });
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                let set = Arc::new(set);
                if let Ok(mut g) = self.current.write() {
                    *g = Some(set.clone());
                }
                Ok(set)
            }
            Err(reason) => {
                tracing::warn!(url = %self.url, %reason, "could not fetch the jwks; keeping the keys held");
                now_held.ok_or(AuthError::KeysUnavailable(reason))
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let body = fetch::send(
            self.client.get(self.url.clone()),
            self.settings.fetch.max_bytes,
        )
        .await
        .map_err(|e| format!("{}: {e}", self.url))?;
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        let raw: RawSet =
            serde_json::from_slice(&body).map_err(|_| format!("{}: not a jwk set", self.url))?;
        let mut keys = Vec::new();
        for v in raw.keys.into_iter().take(self.settings.max_keys) {
            // One unusable key (another kty, a symmetric key) must not
            // disable the others.
            let Ok(jwk) = serde_json::from_value::<Jwk>(v) else {
                continue;
            };
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            keys.push(Arc::new(UsableKey {
                kid: jwk.common.key_id.clone(),
                jwk,
                key,
            }));
        }
        tracing::debug!(url = %self.url, keys = keys.len(), "fetched jwks");
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }
}
