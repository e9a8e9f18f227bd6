//! Progress-extended timeouts: progress for a request restarts its timeout,
//! up to the upstream's `max_timeout`.
//!
//! The fake's `slow {ms}` reports progress every 100 ms when the call
//! carries a progress token. Timeouts here are 5× that period, so scheduling
//! noise on a loaded machine does not decide the outcome.

use std::time::Duration;

use serde_json::json;
use switchboard_config::{HttpConfig, TransportConfig};
use switchboard_upstream::{CallError, CallOptions};

use crate::support::*;

const TIMEOUT: Duration = Duration::from_millis(500);

fn timeout_options() -> CallOptions {
    CallOptions {
        timeout: Some(TIMEOUT),
        ..Default::default()
    }
}

/// `slow` for `ms`, with a progress token when `token` is set.
fn slow(ms: u64, token: Option<&str>) -> Option<Box<serde_json::value::RawValue>> {
    let mut params = json!({"name": "slow", "arguments": {"ms": ms}});
    if let Some(token) = token {
        params["_meta"] = json!({ "progressToken": token });
    }
    Some(raw(params))
}

#[tokio::test]
async fn stdio_progress_extends_the_timeout_past_the_calls_duration() {
    let (up, _events) = started(fake("a", &[])).await;
    let result = up
        .request("tools/call", slow(1500, Some("p1")), timeout_options())
        .await
        .unwrap();
    assert!(result.get().contains("slept 1500 ms"), "{}", result.get());
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_without_a_progress_token_the_plain_timeout_applies() {
    let (up, _events) = started(fake("a", &[])).await;
    let err = up
        .request("tools/call", slow(1500, None), timeout_options())
        .await
        .unwrap_err();
    let CallError::Timeout { after, .. } = err else {
        panic!("expected Timeout, got {err:?}")
    };
    assert_eq!(after, TIMEOUT);
    wait_cancelled_count(&up, 1).await;
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_progress_never_extends_past_max_timeout() {
    let mut cfg = fake("a", &[]);
    cfg.max_timeout = Duration::from_millis(800);
    let (up, _events) = started(cfg).await;
    let err = up
        .request("tools/call", slow(3000, Some("p2")), timeout_options())
        .await
        .unwrap_err();
    let CallError::Timeout { after, .. } = &err else {
        panic!("expected Timeout, got {err:?}")
    };
    assert_eq!(*after, Duration::from_millis(800), "timed out at the cap");
    assert!(err.to_string().contains("timed out after 800ms"), "{err}");
    wait_cancelled_count(&up, 1).await;
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_the_config_timeout_is_extended_like_an_explicit_one() {
    let mut cfg = fake("a", &[]);
    cfg.timeout = TIMEOUT;
    let (up, _events) = started(cfg).await;
    let result = up
        .request("tools/call", slow(1500, Some("p3")), CallOptions::default())
        .await
        .unwrap();
    assert!(result.get().contains("slept 1500 ms"), "{}", result.get());
    up.shutdown().await;
}

#[tokio::test]
async fn http_progress_on_the_post_stream_extends_the_timeout() {
    let server = FakeHttp::start(&[]).await;
    let cfg = config(
        "h",
        TransportConfig::StreamableHttp(HttpConfig {
            url: server.url(),
            headers: vec![],
            oauth: None,
        }),
    );
    let (up, _events) = started(cfg).await;
    let result = up
        .request("tools/call", slow(1500, Some("p4")), timeout_options())
        .await
        .unwrap();
    assert!(result.get().contains("slept 1500 ms"), "{}", result.get());
    let err = up
        .request("tools/call", slow(1500, None), timeout_options())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    up.shutdown().await;
}
