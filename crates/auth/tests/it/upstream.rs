use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::header::AUTHORIZATION;
use http::HeaderName;
use serde_json::json;
use switchboard_auth::{
    CallerToken, ClientAuthMethod, ClientCredentials, Grant, OAuthClientSettings, Secret,
    TokenEndpoint, TokenExchangeSettings, TokenTiming, UpstreamAuth, UpstreamAuthError,
    UpstreamCredential,
};
use url::Url;

use crate::server::serve;

/// One token request as the authorization server saw it.
#[derive(Debug, Clone)]
struct Seen {
    form: HashMap<String, String>,
    authorization: Option<String>,
}

/// An authorization server on loopback that issues numbered tokens and
/// records every request.
#[derive(Clone, Default)]
struct As {
    seen: Arc<Mutex<Vec<Seen>>>,
    issued: Arc<AtomicUsize>,
    expires_in: Arc<AtomicU64>,
    /// When non-zero, answer with this status instead of a token.
    fail_with: Arc<AtomicU16>,
    /// Delay before answering, so concurrent callers overlap.
    delay_ms: Arc<AtomicU64>,
    /// Resource the metadata document claims (defaults to the real one).
    claimed_resource: Arc<Mutex<Option<String>>>,
}

impl As {
    async fn start() -> (As, Url) {
        let state = As::default();
        state.expires_in.store(3600, Ordering::SeqCst);
        let router = Router::new()
            .route("/token", post(token))
            .route("/.well-known/oauth-protected-resource/mcp", get(prm))
            .route("/.well-known/oauth-authorization-server/as", get(as_meta))
            .with_state(state.clone());
        let addr = serve(router).await;
        (state, Url::parse(&format!("http://{addr}/")).unwrap())
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn token(
    State(s): State<As>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    s.seen.lock().unwrap().push(Seen {
        form: form.clone(),
        authorization: headers
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned()),
    });
    let delay = s.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail = s.fail_with.load(Ordering::SeqCst);
    if fail != 0 {
        return (
            StatusCode::from_u16(fail).unwrap(),
            Json(json!({"error": "invalid_grant", "error_description": "said \"no\" secret-xyz"})),
        )
            .into_response();
    }
    let n = s.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = match form.get("audience") {
        Some(aud) => format!("x-{aud}-{n}"),
        None => format!("tok-{n}"),
    };
    Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": s.expires_in.load(Ordering::SeqCst),
        "refresh_token": format!("rt-{}", n + 1),
    }))
    .into_response()
}

async fn prm(State(s): State<As>, headers: HeaderMap) -> Json<serde_json::Value> {
    let host = headers.get("host").unwrap().to_str().unwrap().to_owned();
    let resource = s
        .claimed_resource
        .lock()
        .unwrap()
        .clone()
        .unwrap_or(format!("http://{host}/mcp"));
    Json(json!({ "resource": resource, "authorization_servers": [format!("http://{host}/as")] }))
}

async fn as_meta(headers: HeaderMap) -> Json<serde_json::Value> {
    let host = headers.get("host").unwrap().to_str().unwrap().to_owned();
    Json(
        json!({ "issuer": format!("http://{host}/as"), "token_endpoint": format!("http://{host}/token") }),
    )
}

fn client(method: ClientAuthMethod) -> ClientCredentials {
    ClientCredentials {
        client_id: "gateway".into(),
        client_secret: Some(Secret::new("s3cret:&=".into())),
        method,
    }
}

fn oauth(base: &Url, grant: Grant) -> OAuthClientSettings {
    OAuthClientSettings {
        token_endpoint: TokenEndpoint::Url(base.join("token").unwrap()),
        client: client(ClientAuthMethod::ClientSecretBasic),
        scopes: vec!["read".into(), "write".into()],
        resource: Some("https://upstream.test/mcp".into()),
        grant,
        timing: TokenTiming::default(),
    }
}

fn header_str(v: &Option<http::HeaderValue>) -> String {
    v.as_ref().unwrap().to_str().unwrap().to_owned()
}

async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

#[tokio::test]
async fn client_credentials_tokens_are_cached_and_refreshed_before_expiry() {
    let (server, base) = As::start().await;
    let auth = UpstreamAuth::new(
        "a",
        UpstreamCredential::OAuthClient(oauth(&base, Grant::ClientCredentials)),
    )
    .unwrap();
    let first = auth.authorization_header(None).await.unwrap();
    assert_eq!(header_str(&first), "Bearer tok-1");
    assert!(first.as_ref().unwrap().is_sensitive());
    skip(Duration::from_secs(3500)).await;
    assert_eq!(
        header_str(&auth.authorization_header(None).await.unwrap()),
        "Bearer tok-1"
    );
    assert_eq!(server.count(), 1, "a cached token is reused");
    // 50 s before expiry: inside the 60 s refresh margin, still valid.
    skip(Duration::from_secs(50)).await;
    assert_eq!(
        header_str(&auth.authorization_header(None).await.unwrap()),
        "Bearer tok-2"
    );
    assert_eq!(server.count(), 2);

    let req = &server.requests()[0];
    assert_eq!(req.form["grant_type"], "client_credentials");
    assert_eq!(req.form["scope"], "read write");
    assert_eq!(
        req.form["resource"], "https://upstream.test/mcp",
        "RFC 8707 resource"
    );
    // RFC 6749 §2.3.1: id and secret form-urlencoded, then Basic.
    assert_eq!(
        req.authorization.as_deref(),
        Some("Basic Z2F0ZXdheTpzM2NyZXQlM0ElMjYlM0Q="),
    );
    assert!(!req.form.contains_key("client_secret"));
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_at_half_its_lifetime_not_on_every_call() {
    let (server, base) = As::start().await;
    server.expires_in.store(60, Ordering::SeqCst);
    let auth = UpstreamAuth::new(
        "a",
        UpstreamCredential::OAuthClient(oauth(&base, Grant::ClientCredentials)),
    )
    .unwrap();
    for _ in 0..5 {
        auth.authorization_header(None).await.unwrap();
    }
    assert_eq!(server.count(), 1);
    skip(Duration::from_secs(31)).await;
    auth.authorization_header(None).await.unwrap();
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let (server, base) = As::start().await;
    server.delay_ms.store(200, Ordering::SeqCst);
    let auth = Arc::new(
        UpstreamAuth::new(
            "a",
            UpstreamCredential::OAuthClient(oauth(&base, Grant::ClientCredentials)),
        )
        .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let auth = auth.clone();
        tasks.spawn(async move { header_str(&auth.authorization_header(None).await.unwrap()) });
    }
    while let Some(h) = tasks.join_next().await {
        assert_eq!(h.unwrap(), "Bearer tok-1");
    }
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn an_operator_refresh_token_is_used_and_its_rotation_followed() {
    let (server, base) = As::start().await;
    let mut s = oauth(
        &base,
        Grant::RefreshToken(Secret::new("rt-provisioned".into())),
    );
    s.client = client(ClientAuthMethod::ClientSecretPost);
    let auth = UpstreamAuth::new("a", UpstreamCredential::OAuthClient(s)).unwrap();
    auth.authorization_header(None).await.unwrap();
    skip(Duration::from_secs(3590)).await;
    auth.authorization_header(None).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs[0].form["grant_type"], "refresh_token");
    assert_eq!(reqs[0].form["refresh_token"], "rt-provisioned");
    assert_eq!(
        reqs[1].form["refresh_token"], "rt-2",
        "the rotated refresh token"
    );
    let kept = auth.refresh_token().await.unwrap();
    assert_eq!(
        kept.expose(),
        "rt-3",
        "the latest rotation is kept for persisting"
    );
    assert_eq!(reqs[0].form["client_id"], "gateway");
    assert_eq!(reqs[0].form["client_secret"], "s3cret:&=");
    assert_eq!(reqs[0].authorization, None);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_valid_token_and_backs_off() {
    let (server, base) = As::start().await;
    let auth = UpstreamAuth::new(
        "a",
        UpstreamCredential::OAuthClient(oauth(&base, Grant::ClientCredentials)),
    )
    .unwrap();
    auth.authorization_header(None).await.unwrap();
    server.fail_with.store(503, Ordering::SeqCst);
    skip(Duration::from_secs(3550)).await;
    // Refresh fails; the old token has 50 s left and is still served.
    assert_eq!(
        header_str(&auth.authorization_header(None).await.unwrap()),
        "Bearer tok-1"
    );
    assert_eq!(
        header_str(&auth.authorization_header(None).await.unwrap()),
        "Bearer tok-1"
    );
    assert_eq!(server.count(), 2, "no second attempt within the back-off");
    // Once expired, the back-off answers without calling the server.
    skip(Duration::from_secs(51)).await;
    let err = auth.authorization_header(None).await.unwrap_err();
    assert!(
        matches!(err, UpstreamAuthError::Refused { status: 503, .. }),
        "{err}"
    );
    assert!(err.retryable());
    let err = auth.authorization_header(None).await.unwrap_err();
    assert!(
        matches!(err, UpstreamAuthError::CoolingDown { .. }),
        "{err}"
    );
    assert_eq!(server.count(), 3);
    // The server's free text never reaches our messages.
    assert!(!format!("{err} {:?}", auth).contains("secret-xyz"));
    assert!(!format!("{:?}", auth).contains("s3cret"));
}

#[tokio::test]
async fn a_rejected_token_is_replaced_but_a_stale_rejection_keeps_the_new_one() {
    let (server, base) = As::start().await;
    let auth = UpstreamAuth::new(
        "a",
        UpstreamCredential::OAuthClient(oauth(&base, Grant::ClientCredentials)),
    )
    .unwrap();
    let first = auth.authorization_header(None).await.unwrap().unwrap();
    auth.reject(&first, None).await;
    let second = auth.authorization_header(None).await.unwrap().unwrap();
    assert_eq!(second, "Bearer tok-2");
    auth.reject(&first, None).await;
    assert_eq!(
        auth.authorization_header(None).await.unwrap().unwrap(),
        second
    );
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn the_token_endpoint_is_discovered_from_the_upstream_url() {
    let (server, base) = As::start().await;
    let mut s = oauth(&base, Grant::ClientCredentials);
    s.token_endpoint = TokenEndpoint::Discover {
        resource_url: base.join("mcp").unwrap(),
    };
    s.resource = None;
    let auth = UpstreamAuth::new("a", UpstreamCredential::OAuthClient(s.clone())).unwrap();
    assert_eq!(
        header_str(&auth.authorization_header(None).await.unwrap()),
        "Bearer tok-1"
    );
    assert_eq!(
        server.requests()[0].form["resource"],
        base.join("mcp").unwrap().as_str()
    );

    // Metadata that claims another resource is not trusted.
    *server.claimed_resource.lock().unwrap() = Some("https://elsewhere.test/mcp".into());
    let auth = UpstreamAuth::new("b", UpstreamCredential::OAuthClient(s)).unwrap();
    let err = auth.authorization_header(None).await.unwrap_err();
    assert!(
        matches!(&err, UpstreamAuthError::Discovery { reason, .. } if reason.contains("elsewhere")),
        "{err}"
    );
    assert_eq!(
        server.count(),
        1,
        "no token request after a failed discovery"
    );
}

fn exchange(base: &Url, audience: &str) -> UpstreamCredential {
    let mut s = TokenExchangeSettings::new(
        base.join("token").unwrap(),
        client(ClientAuthMethod::ClientSecretBasic),
    );
    s.audience = Some(audience.into());
    s.resource = Some(format!("https://{audience}.test/mcp"));
    UpstreamCredential::TokenExchange(s)
}

#[tokio::test]
async fn exchanged_tokens_are_per_caller_and_per_upstream_and_cached() {
    let (server, base) = As::start().await;
    let a = UpstreamAuth::new("a", exchange(&base, "a")).unwrap();
    let b = UpstreamAuth::new("b", exchange(&base, "b")).unwrap();
    let alice = CallerToken::new(Secret::new("alice.jwt.sig".into()));
    let bob = CallerToken::new(Secret::new("bob.jwt.sig".into()));

    let alice_a = header_str(&a.authorization_header(Some(&alice)).await.unwrap());
    let alice_b = header_str(&b.authorization_header(Some(&alice)).await.unwrap());
    assert!(alice_a.starts_with("Bearer x-a-"), "{alice_a}");
    assert!(alice_b.starts_with("Bearer x-b-"), "{alice_b}");
    for _ in 0..3 {
        assert_eq!(
            header_str(&a.authorization_header(Some(&alice)).await.unwrap()),
            alice_a
        );
        assert_eq!(
            header_str(&b.authorization_header(Some(&alice)).await.unwrap()),
            alice_b
        );
    }
    assert_eq!(server.count(), 2, "one exchange per (caller, upstream)");
    let bob_a = header_str(&a.authorization_header(Some(&bob)).await.unwrap());
    assert_ne!(bob_a, alice_a);
    assert_eq!(server.count(), 3);

    for req in server.requests() {
        assert_eq!(
            req.form["grant_type"],
            "urn:ietf:params:oauth:grant-type:token-exchange"
        );
        assert_eq!(
            req.form["subject_token_type"],
            "urn:ietf:params:oauth:token-type:access_token"
        );
        assert_eq!(
            req.form["requested_token_type"],
            "urn:ietf:params:oauth:token-type:access_token"
        );
        let aud = &req.form["audience"];
        assert_eq!(req.form["resource"], format!("https://{aud}.test/mcp"));
    }
    assert_eq!(server.requests()[0].form["subject_token"], "alice.jwt.sig");
    // What goes to the upstream is never the caller's own token.
    for h in [&alice_a, &alice_b, &bob_a] {
        assert!(!h.contains("jwt.sig"), "{h}");
    }
}

#[tokio::test]
async fn a_token_that_expires_at_once_is_not_cached() {
    let (server, base) = As::start().await;
    server.expires_in.store(0, Ordering::SeqCst);
    let a = UpstreamAuth::new("a", exchange(&base, "a")).unwrap();
    let alice = CallerToken::new(Secret::new("alice.jwt.sig".into()));
    a.authorization_header(Some(&alice)).await.unwrap();
    a.authorization_header(Some(&alice)).await.unwrap();
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn concurrent_requests_of_one_caller_share_one_exchange() {
    let (server, base) = As::start().await;
    server.delay_ms.store(200, Ordering::SeqCst);
    let a = Arc::new(UpstreamAuth::new("a", exchange(&base, "a")).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let a = a.clone();
        tasks.spawn(async move {
            let alice = CallerToken::new(Secret::new("alice.jwt.sig".into()));
            header_str(&a.authorization_header(Some(&alice)).await.unwrap())
        });
    }
    while let Some(h) = tasks.join_next().await {
        assert_eq!(h.unwrap(), "Bearer x-a-1");
    }
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn exchange_needs_a_caller_token_the_identity_provider_accepts() {
    let (server, base) = As::start().await;
    let a = UpstreamAuth::new("a", exchange(&base, "a")).unwrap();
    let err = a.authorization_header(None).await.unwrap_err();
    assert!(
        matches!(err, UpstreamAuthError::NoSubjectToken { .. }),
        "{err}"
    );
    assert!(err.is_caller_fault());
    server.fail_with.store(400, Ordering::SeqCst);
    let alice = CallerToken::new(Secret::new("alice.jwt.sig".into()));
    let err = a.authorization_header(Some(&alice)).await.unwrap_err();
    assert!(
        matches!(err, UpstreamAuthError::SubjectTokenRejected { .. }),
        "{err}"
    );
    assert!(err.is_caller_fault());
    assert!(!err.to_string().contains("secret-xyz"));
    assert!(!format!("{alice:?}").contains("alice"));
}

#[tokio::test]
async fn static_headers_are_sent_as_configured_and_marked_sensitive() {
    let auth = UpstreamAuth::new(
        "a",
        UpstreamCredential::Static(vec![
            (AUTHORIZATION, Secret::new("Bearer static".into())),
            (
                HeaderName::from_static("x-api-key"),
                Secret::new("k".into()),
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        header_str(&auth.authorization_header(None).await.unwrap()),
        "Bearer static"
    );
    let all = auth.headers(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.values().all(|v| v.is_sensitive()));
    let none = UpstreamAuth::new("b", UpstreamCredential::None).unwrap();
    assert_eq!(none.authorization_header(None).await.unwrap(), None);
    assert!(!format!("{auth:?}").contains("static"));
}

#[test]
fn credentials_that_cannot_work_are_refused_by_field() {
    let base = Url::parse("http://127.0.0.1:1/").unwrap();
    let remote_http = Url::parse("http://idp.example.com/token").unwrap();
    let mut s = oauth(&base, Grant::ClientCredentials);
    s.token_endpoint = TokenEndpoint::Url(remote_http.clone());
    assert_eq!(
        UpstreamAuth::new("a", UpstreamCredential::OAuthClient(s))
            .unwrap_err()
            .field,
        "token_endpoint"
    );
    let s = oauth(&base, Grant::RefreshToken(Secret::new(String::new())));
    assert_eq!(
        UpstreamAuth::new("a", UpstreamCredential::OAuthClient(s))
            .unwrap_err()
            .field,
        "refresh_token"
    );
    let x = TokenExchangeSettings::new(
        base.join("token").unwrap(),
        client(ClientAuthMethod::ClientSecretBasic),
    );
    assert_eq!(
        UpstreamAuth::new("a", UpstreamCredential::TokenExchange(x))
            .unwrap_err()
            .field,
        "audience"
    );
    let bad = UpstreamCredential::Static(vec![(AUTHORIZATION, Secret::new("a\nb".into()))]);
    assert_eq!(UpstreamAuth::new("a", bad).unwrap_err().field, "headers");
}
