use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use axum::Router;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use switchboard_auth::jwt::JwtSettings;
use switchboard_auth::{AuthError, IdentityKind, JwtVerifier, Secret, Target};
use url::Url;

use crate::server::{serve, Doc};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const ISS: &str = "https://idp.test";
const AUD: &str = "https://gateway.test/mcp";

fn key(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims() -> Value {
    json!({ "iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 3600, "scope": "web__* openid" })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        base.as_object_mut().unwrap().remove(key);
    } else {
        base[key] = value;
    }
    base
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs256(pem: &str, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    encode(
        &h,
        claims,
        &EncodingKey::from_rsa_pem(key(pem).as_bytes()).unwrap(),
    )
    .unwrap()
}

fn es256(kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    encode(
        &h,
        claims,
        &EncodingKey::from_ec_pem(key("ec.pem").as_bytes()).unwrap(),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn hmac_verifier() -> JwtVerifier {
    let mut s = JwtSettings::new(ISS, AUD);
    s.hs256_secret = Some(Secret::new(SECRET.into()));
    JwtVerifier::new(s).unwrap()
}

/// A JWKS endpoint on loopback serving `doc`.
async fn jwks_server(doc: &Doc) -> Url {
    let d = doc.clone();
    let addr = serve(Router::new().route("/jwks", get(move || async move { d.get() }))).await;
    Url::parse(&format!("http://{addr}/jwks")).unwrap()
}

fn jwks_settings(url: Url) -> JwtSettings {
    let mut s = JwtSettings::new(ISS, AUD);
    s.jwks_url = Some(url);
    s
}

/// Moves tokio's clock forward (the cache and rate limit use it) while
/// real sockets keep working on real time.
async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

#[tokio::test]
async fn a_valid_hs256_token_becomes_an_identity_with_its_scopes() {
    let id = hmac_verifier().verify(&hs256(&claims())).await.unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(id.kind, IdentityKind::Jwt { issuer: ISS.into() });
    assert!(id.allows(Target::tool("web", "search")));
    assert!(!id.allows(Target::tool("github", "search")));
    assert_eq!(id.scopes.as_strings(), ["web__*"]);
}

#[tokio::test]
async fn scopes_are_read_from_an_scp_array_and_from_a_configured_claim() {
    let v = hmac_verifier();
    let c = with(
        with(claims(), "scope", Value::Null),
        "scp",
        json!(["admin", "tool:a__b"]),
    );
    let id = v.verify(&hs256(&c)).await.unwrap();
    assert!(id.is_admin());
    assert!(id.allows(Target::tool("a", "b")));

    let mut s = JwtSettings::new(ISS, AUD);
    s.hs256_secret = Some(Secret::new(SECRET.into()));
    s.scope_claim = "permissions".into();
    let v = JwtVerifier::new(s).unwrap();
    let c = with(claims(), "permissions", json!("x__*"));
    let id = v.verify(&hs256(&c)).await.unwrap();
    assert!(id.allows(Target::tool("x", "y")));
    assert!(
        !id.allows(Target::tool("web", "y")),
        "`scope` is not read when another claim is configured"
    );
}

#[tokio::test]
async fn a_token_within_the_clock_skew_leeway_is_accepted() {
    let v = hmac_verifier();
    v.verify(&hs256(&with(claims(), "exp", json!(now() - 30))))
        .await
        .unwrap();
    v.verify(&hs256(&with(claims(), "nbf", json!(now() + 30))))
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_reason() {
    let v = hmac_verifier();
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    let good = hs256(&claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let elevated = b64(&with(claims(), "scope", json!("admin *")));
    parts[1] = &elevated;
    let tampered = parts.join(".");
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    );
    let crit = {
        let sig_input = format!(
            "{}.{}",
            b64(&json!({"alg": "HS256", "crit": ["exp"], "exp": 1})),
            b64(&claims())
        );
        format!("{sig_input}.AAAA")
    };
    let rows: Vec<(&str, String, AuthError)> = vec![
        (
            "expired",
            hs256(&with(claims(), "exp", json!(now() - 3600))),
            AuthError::Expired,
        ),
        (
            "not yet valid",
            hs256(&with(claims(), "nbf", json!(now() + 3600))),
            AuthError::NotYetValid,
        ),
        (
            "wrong issuer",
            hs256(&with(claims(), "iss", json!("https://evil.test"))),
            AuthError::WrongIssuer,
        ),
        (
            "wrong audience",
            hs256(&with(claims(), "aud", json!("https://other.test"))),
            AuthError::WrongAudience,
        ),
        (
            "no exp",
            hs256(&with(claims(), "exp", Value::Null)),
            AuthError::MissingClaim("exp"),
        ),
        (
            "no aud",
            hs256(&with(claims(), "aud", Value::Null)),
            AuthError::MissingClaim("aud"),
        ),
        (
            "no sub",
            hs256(&with(claims(), "sub", Value::Null)),
            AuthError::MissingClaim("sub"),
        ),
        ("forged signature", forged, AuthError::BadSignature),
        ("tampered payload", tampered, AuthError::BadSignature),
        (
            "alg none",
            none,
            AuthError::AlgorithmNotAllowed("none".into()),
        ),
        (
            "crit header",
            crit,
            AuthError::MalformedToken(
                "header has critical extensions this gateway does not understand",
            ),
        ),
        (
            "rs256 without jwks",
            rs256("rsa.pem", "rsa-1", &claims()),
            AuthError::AlgorithmNotAllowed("RS256".into()),
        ),
        (
            "garbage",
            "a.b.c".into(),
            AuthError::MalformedToken("header is not base64url"),
        ),
    ];
    for (what, token, expected) in rows {
        let err = v.verify(&token).await.expect_err(what);
        assert_eq!(err, expected, "{what}");
        assert_eq!(err.rfc6750_code(), Some("invalid_token"), "{what}");
    }
    // An audience list is matched by any member.
    let c = with(claims(), "aud", json!(["https://other.test", AUD]));
    v.verify(&hs256(&c)).await.unwrap();
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_the_jwks_which_is_fetched_once() {
    let doc = Doc::new(key("jwks.json"));
    let v = JwtVerifier::new(jwks_settings(jwks_server(&doc).await)).unwrap();
    for _ in 0..5 {
        let id = v
            .verify(&rs256("rsa.pem", "rsa-1", &claims()))
            .await
            .unwrap();
        assert_eq!(id.subject, "alice");
        v.verify(&es256("ec-1", &claims())).await.unwrap();
    }
    assert_eq!(doc.hits(), 1);
    // After the TTL the set is fetched again.
    skip(Duration::from_secs(301)).await;
    v.verify(&rs256("rsa.pem", "rsa-1", &claims()))
        .await
        .unwrap();
    assert_eq!(doc.hits(), 2);
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rsa_public_key_never_verifies() {
    let public_pem = key("rsa.pub.pem");
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let doc = Doc::new(key("jwks.json"));
    let url = jwks_server(&doc).await;
    let jwks_only = JwtVerifier::new(jwks_settings(url.clone())).unwrap();
    assert_eq!(
        jwks_only.verify(&confused).await.unwrap_err(),
        AuthError::AlgorithmNotAllowed("HS256".into())
    );
    let mut both = jwks_settings(url);
    both.hs256_secret = Some(Secret::new(SECRET.into()));
    both.algorithms = vec![Algorithm::HS256, Algorithm::RS256];
    let both = JwtVerifier::new(both).unwrap();
    assert_eq!(
        both.verify(&confused).await.unwrap_err(),
        AuthError::BadSignature
    );
    // Nor is a key used for another algorithm than its own: an RS256 token
    // naming the EC key's kid finds no key.
    assert!(matches!(
        both.verify(&rs256("rsa.pem", "ec-1", &claims()))
            .await
            .unwrap_err(),
        AuthError::UnknownKey(_)
    ));
    // A symmetric key published in the JWKS is never used.
    let doc = Doc::new(
        json!({"keys": [{"kty": "oct", "kid": "k", "k": b64(&json!(SECRET))}]}).to_string(),
    );
    let mut s = jwks_settings(jwks_server(&doc).await);
    s.algorithms = vec![Algorithm::RS256];
    let v = JwtVerifier::new(s).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k".into());
    let t = encode(&h, &claims(), &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
    assert_eq!(
        v.verify(&t).await.unwrap_err(),
        AuthError::AlgorithmNotAllowed("HS256".into())
    );
}

#[tokio::test]
async fn forged_kids_cannot_make_the_gateway_hammer_the_identity_provider() {
    let doc = Doc::new(key("jwks.json"));
    let v = JwtVerifier::new(jwks_settings(jwks_server(&doc).await)).unwrap();
    for i in 0..20 {
        let err = v
            .verify(&rs256("rsa.pem", &format!("forged-{i}"), &claims()))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::UnknownKey(_)), "{err}");
    }
    assert_eq!(doc.hits(), 1, "one fetch, then the refetch interval holds");
    skip(Duration::from_secs(31)).await;
    v.verify(&rs256("rsa.pem", "forged-x", &claims()))
        .await
        .unwrap_err();
    v.verify(&rs256("rsa.pem", "forged-y", &claims()))
        .await
        .unwrap_err();
    assert_eq!(doc.hits(), 2, "one more fetch per interval");
    // Known kids keep working meanwhile, without fetches.
    v.verify(&rs256("rsa.pem", "rsa-1", &claims()))
        .await
        .unwrap();
    assert_eq!(doc.hits(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_by_refetching_on_its_unknown_kid() {
    let doc = Doc::new(key("jwks.json"));
    let v = JwtVerifier::new(jwks_settings(jwks_server(&doc).await)).unwrap();
    v.verify(&rs256("rsa.pem", "rsa-1", &claims()))
        .await
        .unwrap();
    doc.set(key("jwks-rotated.json"));
    skip(Duration::from_secs(31)).await;
    let id = v
        .verify(&rs256("rsa2.pem", "rsa-2", &claims()))
        .await
        .unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(doc.hits(), 2);
}

#[tokio::test]
async fn held_keys_keep_working_when_the_jwks_endpoint_fails() {
    let doc = Doc::new(key("jwks.json"));
    let v = JwtVerifier::new(jwks_settings(jwks_server(&doc).await)).unwrap();
    v.verify(&rs256("rsa.pem", "rsa-1", &claims()))
        .await
        .unwrap();
    doc.set("not json");
    skip(Duration::from_secs(301)).await;
    v.verify(&rs256("rsa.pem", "rsa-1", &claims()))
        .await
        .unwrap();
    assert_eq!(doc.hits(), 2);
}

#[tokio::test]
async fn an_oversized_or_unreachable_jwks_leaves_the_gateway_without_keys() {
    let mut big = serde_json::from_str::<Value>(&key("jwks.json")).unwrap();
    big["padding"] = json!("x".repeat(70 * 1024));
    let doc = Doc::new(big.to_string());
    let v = JwtVerifier::new(jwks_settings(jwks_server(&doc).await)).unwrap();
    let err = v
        .verify(&rs256("rsa.pem", "rsa-1", &claims()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AuthError::KeysUnavailable(m) if m.contains("larger than")),
        "{err}"
    );
    assert_eq!(err.status().as_u16(), 503);

    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = Url::parse(&format!("http://127.0.0.1:{port}/jwks")).unwrap();
    let v = JwtVerifier::new(jwks_settings(url)).unwrap();
    let err = v
        .verify(&rs256("rsa.pem", "rsa-1", &claims()))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err}");
}

#[test]
fn settings_that_cannot_work_are_refused_by_field() {
    let secret = |s: &str| Some(Secret::new(s.into()));
    let rows: Vec<(JwtSettings, &str)> = vec![
        (JwtSettings::new(ISS, AUD), "jwks_url"),
        (
            JwtSettings {
                hs256_secret: secret("short"),
                ..JwtSettings::new(ISS, AUD)
            },
            "hs256_secret",
        ),
        (
            JwtSettings {
                hs256_secret: secret(SECRET),
                ..JwtSettings::new(ISS, "")
            },
            "audience",
        ),
        (
            JwtSettings {
                hs256_secret: secret(SECRET),
                ..JwtSettings::new("", AUD)
            },
            "issuer",
        ),
        (
            JwtSettings {
                jwks_url: Some(Url::parse("http://idp.example.com/jwks").unwrap()),
                ..JwtSettings::new(ISS, AUD)
            },
            "jwks_url",
        ),
        (
            JwtSettings {
                jwks_url: Some(Url::parse("https://user:pw@idp.example.com/jwks").unwrap()),
                ..JwtSettings::new(ISS, AUD)
            },
            "jwks_url",
        ),
        (
            JwtSettings {
                hs256_secret: secret(SECRET),
                algorithms: vec![Algorithm::RS256],
                ..JwtSettings::new(ISS, AUD)
            },
            "algorithms",
        ),
        (
            JwtSettings {
                hs256_secret: secret(SECRET),
                algorithms: vec![Algorithm::HS512],
                ..JwtSettings::new(ISS, AUD)
            },
            "algorithms",
        ),
    ];
    for (settings, field) in rows {
        let err = JwtVerifier::new(settings).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(!err.to_string().contains(SECRET));
    }
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_kid_is_forged() {
    let doc = Doc::new(key("jwks.json"));
    let v = JwtVerifier::new(jwks_settings(jwks_server(&doc).await)).unwrap();
    let forged = rs256("rsa2.pem", "rsa-1", &claims());
    assert_eq!(
        v.verify(&forged).await.unwrap_err(),
        AuthError::BadSignature
    );
}

#[tokio::test]
async fn a_token_without_kid_needs_exactly_one_fitting_key() {
    let doc = Doc::new(key("jwks.json"));
    let v = JwtVerifier::new(jwks_settings(jwks_server(&doc).await)).unwrap();
    let no_kid = encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_pem(key("rsa.pem").as_bytes()).unwrap(),
    )
    .unwrap();
    // One RSA key (the EC key does not fit RS256).
    v.verify(&no_kid).await.unwrap();

    let mut both: Value = serde_json::from_str(&key("jwks.json")).unwrap();
    let rotated: Value = serde_json::from_str(&key("jwks-rotated.json")).unwrap();
    both["keys"]
        .as_array_mut()
        .unwrap()
        .push(rotated["keys"][0].clone());
    let doc = Doc::new(both.to_string());
    let v = JwtVerifier::new(jwks_settings(jwks_server(&doc).await)).unwrap();
    assert_eq!(
        v.verify(&no_kid).await.unwrap_err(),
        AuthError::AmbiguousKey
    );
    v.verify(&rs256("rsa2.pem", "rsa-2", &claims()))
        .await
        .unwrap();
}
