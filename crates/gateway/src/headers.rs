//! Security headers on every HTTP response, refusals and streams included.
//!
//! The gateway serves JSON and event streams to programs, never pages to
//! browsers, so the strictest values cost nothing: nothing may be sniffed,
//! cached, framed, or leak a referrer. A browser that is tricked into loading
//! a gateway URL (the DNS-rebinding path the Origin check also guards) gets
//! a response it may neither render as a page nor keep.
//!
//! The layer sits outermost, so responses made by any inner layer (the Host
//! and Origin guard, rate limiting, authentication, the 404 fallback) carry
//! the headers too. Responses hyper writes itself (a malformed request line)
//! never reach a layer and carry none.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use tower::layer::util::{Identity, Stack};
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;

/// A year: long enough for browsers to remember, the common deployed value.
/// No `includeSubDomains`: the gateway cannot know what its siblings serve.
const HSTS: &str = "max-age=31536000";
/// API responses are per-caller (tool lists filtered by scope, session
/// answers): a shared cache must never store one.
const CACHE: &str = "no-store";
/// Nothing the gateway serves needs a script, a style or a frame.
const CSP: &str = "default-src 'none'; frame-ancestors 'none'";

type Set = SetResponseHeaderLayer<HeaderValue>;
type MaybeSet = SetResponseHeaderLayer<Option<HeaderValue>>;

/// The stack [`layer`] returns, named so the router can hold it.
pub(crate) type SecurityHeaders = ServiceBuilder<
    Stack<MaybeSet, Stack<Set, Stack<Set, Stack<Set, Stack<Set, Stack<Set, Identity>>>>>>,
>;

/// The layer that adds the security headers; `tls` adds
/// `Strict-Transport-Security`, which a browser ignores (and an operator
/// would regret) on plain HTTP.
pub(crate) fn layer(tls: bool) -> SecurityHeaders {
    let fixed = |v: &'static str| HeaderValue::from_static(v);
    ServiceBuilder::new()
        .layer(Set::overriding(X_CONTENT_TYPE_OPTIONS, fixed("nosniff")))
        .layer(Set::overriding(CACHE_CONTROL, fixed(CACHE)))
        .layer(Set::overriding(REFERRER_POLICY, fixed("no-referrer")))
        .layer(Set::overriding(X_FRAME_OPTIONS, fixed("DENY")))
        // A route that one day serves a page may set a looser policy for
        // itself; every other response gets the strictest one.
        .layer(Set::if_not_present(CONTENT_SECURITY_POLICY, fixed(CSP)))
        .layer(MaybeSet::overriding(
            STRICT_TRANSPORT_SECURITY,
            tls.then(|| fixed(HSTS)),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn headers_of(tls: bool, path: &str) -> axum::http::HeaderMap {
        let app = Router::new()
            .route("/plain", get(|| async { "ok" }))
            .route(
                "/own",
                get(|| async {
                    (
                        StatusCode::OK,
                        [
                            (CACHE_CONTROL, "no-cache"),
                            (CONTENT_SECURITY_POLICY, "default-src 'self'"),
                        ],
                    )
                        .into_response()
                }),
            )
            .layer(layer(tls));
        let r = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        r.headers().clone()
    }

    #[tokio::test]
    async fn hsts_is_sent_only_over_tls() {
        assert!(!headers_of(false, "/plain")
            .await
            .contains_key(STRICT_TRANSPORT_SECURITY));
        assert_eq!(
            headers_of(true, "/plain").await[STRICT_TRANSPORT_SECURITY],
            HSTS
        );
    }

    #[tokio::test]
    async fn cache_control_is_forced_while_a_route_may_keep_its_own_csp() {
        let h = headers_of(false, "/own").await;
        assert_eq!(h[CACHE_CONTROL], "no-store");
        assert_eq!(h[CONTENT_SECURITY_POLICY], "default-src 'self'");
        let h = headers_of(false, "/missing").await;
        assert_eq!(h[CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
