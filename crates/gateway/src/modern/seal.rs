//! Sealing of the gateway's MRTR `requestState`.
//!
//! A stateless client hands `requestState` back verbatim on its retry, so the
//! gateway keeps nothing it has to trust the client about: the state is
//! encrypted and authenticated (ChaCha20-Poly1305), so a client can neither
//! read it nor forge or alter one, and it carries its own expiry and the
//! request it belongs to. With a configured key every replica can open what
//! any other sealed.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Format version; bumped when [`State`] changes incompatibly.
const VERSION: u8 = 1;
/// Additional data bound into every tag, so a sealed value of another
/// purpose (or format) never opens as a `requestState`.
const AAD: &[u8] = b"switchboard/requestState/v1";
/// Refuse absurd inputs before decoding them.
const MAX_SEALED_LEN: usize = 64 * 1024;

/// What a `requestState` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// Format version.
    pub(crate) v: u8,
    /// The parked call this continues.
    pub(crate) call: u64,
    /// The replica that holds the parked call, so another one can say so.
    pub(crate) replica: u64,
    /// Unix seconds after which the state is refused.
    pub(crate) exp: u64,
    /// The method and target (`params.name`/`uri`) of the original request:
    /// a state is good only for a retry of that same request.
    pub(crate) method: String,
    pub(crate) target: String,
    /// The upstream's own `requestState` when a modern upstream asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upstream: Option<String>,
    /// The principal that made the original request: only it may continue
    /// it (a leaked state is no credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<String>,
}

/// Why a `requestState` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    #[error("requestState is malformed or was not issued by this gateway")]
    Forged,
    #[error("requestState expired; send the original request again without it")]
    Expired,
    #[error("requestState belongs to a different request ({0})")]
    WrongRequest(String),
    #[error("requestState was issued to another identity; send the original request again")]
    WrongOwner,
}

/// The key and the randomness source.
pub(crate) struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer over a 32-byte key derived from `secret` (any length).
    pub(crate) fn new(secret: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, secret);
        let key = match UnboundKey::new(&CHACHA20_POLY1305, digest.as_ref()) {
            Ok(k) => k,
            // A SHA-256 digest is always a valid 32-byte ChaCha20 key.
            Err(_) => unreachable!("sha-256 digests are chacha20 keys"),
        };
        Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// A sealer over a random key: states survive only in this process.
    pub(crate) fn random() -> Self {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        Self::new(&secret)
    }

    /// Seals `state` into an opaque URL-safe string.
    pub(crate) fn seal(&self, state: &State) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        if self.rng.fill(&mut nonce).is_err() {
            // The OS generator failing is not recoverable in a useful way;
            // fall back to the thread generator, still unpredictable.
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        }
        let mut buf = serde_json::to_vec(state).unwrap_or_default();
        let tag = self.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            &mut buf,
        );
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        if let Ok(tag) = tag {
            out.extend_from_slice(tag.as_ref());
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a sealed state and checks its expiry and the request it belongs to.
    pub(crate) fn open(
        &self,
        sealed: &str,
        now: SystemTime,
        method: &str,
        target: &str,
    ) -> Result<State, SealError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(SealError::Forged);
        }
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| SealError::Forged)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SealError::Forged);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut raw[NONCE_LEN..],
            )
            .map_err(|_| SealError::Forged)?;
        let state: State = serde_json::from_slice(plain).map_err(|_| SealError::Forged)?;
        if state.v != VERSION {
            return Err(SealError::Forged);
        }
        if unix(now) > state.exp {
            return Err(SealError::Expired);
        }
        if state.method != method || state.target != target {
            return Err(SealError::WrongRequest(format!(
                "issued for {} {:?}",
                state.method, state.target
            )));
        }
        if state.owner != caller_principal() {
            return Err(SealError::WrongOwner);
        }
        Ok(state)
    }
}

/// The principal of the request being handled, if it was authenticated.
fn caller_principal() -> Option<String> {
    crate::authn::current_caller().map(|c| c.principal())
}

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Expiry for a state issued at `now` that lives `ttl`.
pub(crate) fn expiry(now: SystemTime, ttl: Duration) -> u64 {
    unix(now).saturating_add(ttl.as_secs().max(1))
}

/// A fresh state for call `call` of `method`/`target`.
pub(crate) fn state(call: u64, replica: u64, exp: u64, method: &str, target: &str) -> State {
    State {
        v: VERSION,
        call,
        replica,
        exp,
        method: method.to_owned(),
        target: target.to_owned(),
        upstream: None,
        owner: caller_principal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[tokio::test]
    async fn a_state_issued_to_one_identity_is_refused_to_another() {
        let sealer = Sealer::random();
        let scopes = switchboard_auth::Scopes::parse(["*"], "__").unwrap();
        let alice = std::sync::Arc::new(switchboard_auth::Identity::api_key(
            "1",
            "alice",
            scopes.clone(),
        ));
        let mallory =
            std::sync::Arc::new(switchboard_auth::Identity::api_key("2", "mallory", scopes));
        let sealed =
            crate::authn::with_caller(alice.clone(), async { sealer.seal(&sample()) }).await;
        let as_mallory = crate::authn::with_caller(mallory, async {
            sealer.open(&sealed, now(), "tools/call", "t")
        })
        .await;
        assert_eq!(as_mallory, Err(SealError::WrongOwner));
        assert_eq!(
            sealer.open(&sealed, now(), "tools/call", "t"),
            Err(SealError::WrongOwner)
        );
        let as_alice = crate::authn::with_caller(alice, async {
            sealer.open(&sealed, now(), "tools/call", "t")
        })
        .await;
        assert!(as_alice.is_ok(), "{as_alice:?}");
    }

    fn sample() -> State {
        state(
            7,
            1,
            expiry(now(), Duration::from_secs(60)),
            "tools/call",
            "t",
        )
    }

    #[test]
    fn a_sealed_state_opens_with_the_same_key() {
        let s = Sealer::new(b"key");
        let sealed = s.seal(&sample());
        assert!(
            !sealed.contains("tools/call"),
            "the state must not be readable"
        );
        assert_eq!(s.open(&sealed, now(), "tools/call", "t"), Ok(sample()));
        // Another replica with the configured key opens it too.
        assert_eq!(
            Sealer::new(b"key").open(&sealed, now(), "tools/call", "t"),
            Ok(sample())
        );
    }

    #[test]
    fn a_state_from_another_key_is_refused() {
        let sealed = Sealer::new(b"other").seal(&sample());
        assert_eq!(
            Sealer::new(b"key").open(&sealed, now(), "tools/call", "t"),
            Err(SealError::Forged)
        );
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let s = Sealer::new(b"key");
        let sealed = s.seal(&sample());
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sealed)
            .unwrap();
        for i in 0..raw.len() {
            let mut t = raw.clone();
            t[i] ^= 0x01;
            let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&t);
            assert_eq!(
                s.open(&forged, now(), "tools/call", "t"),
                Err(SealError::Forged),
                "byte {i}"
            );
        }
        for junk in ["", "not base64!", "AAAA", &"A".repeat(MAX_SEALED_LEN + 1)] {
            assert_eq!(
                s.open(junk, now(), "tools/call", "t"),
                Err(SealError::Forged)
            );
        }
    }

    #[test]
    fn an_expired_state_is_refused() {
        let s = Sealer::new(b"key");
        let sealed = s.seal(&sample());
        let later = now() + Duration::from_secs(61);
        assert_eq!(
            s.open(&sealed, later, "tools/call", "t"),
            Err(SealError::Expired)
        );
    }

    #[test]
    fn a_state_is_good_only_for_its_own_request() {
        let s = Sealer::new(b"key");
        let sealed = s.seal(&sample());
        assert!(matches!(
            s.open(&sealed, now(), "tools/call", "other"),
            Err(SealError::WrongRequest(_))
        ));
        assert!(matches!(
            s.open(&sealed, now(), "prompts/get", "t"),
            Err(SealError::WrongRequest(_))
        ));
    }

    #[test]
    fn two_seals_of_one_state_differ() {
        let s = Sealer::new(b"key");
        assert_ne!(s.seal(&sample()), s.seal(&sample()));
    }
}
