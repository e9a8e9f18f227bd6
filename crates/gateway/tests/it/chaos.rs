//! Failure under load, bounded in count and time.

use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn a_tool_timeout_overrides_the_upstream_timeout_and_cancels_upstream() {
    let gw = TestGateway::start(&fake_stdio("a", "tool_timeouts = { \"slow\" = \"300ms\" }")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        c.tool(1, "a__slow", json!({"ms": 5000})),
    )
    .await
    .expect("a timed-out call must not hang");
    assert_eq!(r.error_code(), -32001, "{}", r.raw);
    assert!(r.raw.contains("timed out"), "{}", r.raw);
    assert_eq!(
        c.tool(2, "a__echo", json!({"text": "fine"})).await.result()["content"][0]["text"],
        "fine"
    );
    gw.stop().await;
}

#[tokio::test]
async fn killing_an_upstream_under_load_fails_calls_fast_and_traffic_recovers() {
    let gw = TestGateway::start(&fake_stdio(
        "a",
        "breaker = { consecutive_failures = 3, open_base = \"200ms\", open_max = \"1s\" }",
    ))
    .await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok_after_crash = Arc::new(AtomicUsize::new(0));
    let crashed = Arc::new(AtomicBool::new(false));
    let mut workers = vec![];
    for w in 0..4i64 {
        let (c, stop, ok_after_crash, crashed) = (
            c.clone(),
            stop.clone(),
            ok_after_crash.clone(),
            crashed.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut errors = vec![];
            // Bounded: at most 2,000 calls per worker.
            for n in 0..2000i64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = tokio::time::timeout(
                    Duration::from_secs(15),
                    c.tool(w * 10_000 + n, "a__echo", json!({"text": "load"})),
                )
                .await
                .expect("a call hung while the upstream was failing");
                match r.response().get("result") {
                    Some(_) if crashed.load(Ordering::Relaxed) => {
                        ok_after_crash.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None => errors.push(r.response()["error"].clone()),
                }
                if !crashed.load(Ordering::Relaxed) || !errors.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The crash tool exits before answering: once its call returns, the
    // process is gone, and only later successes prove a restart.
    let r = c.tool(99_999, "a__crash", json!({})).await;
    assert!(r.response().get("error").is_some(), "{}", r.raw);
    crashed.store(true, Ordering::Relaxed);
    let recovered = eventually(1500, || {
        let ok = ok_after_crash.clone();
        async move { ok.load(Ordering::Relaxed) >= 50 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = vec![];
    for w in workers {
        errors.extend(w.await.unwrap());
    }
    assert!(
        recovered,
        "traffic did not recover after the upstream restarted"
    );
    for e in &errors {
        assert_eq!(e["code"], -32010, "unexpected error during the outage: {e}");
        assert!(
            e["message"].as_str().unwrap().contains("\"a\""),
            "error does not name the upstream: {e}"
        );
    }
    let health = gw.health().await;
    assert!(
        health["upstreams"][0]["restarts"].as_u64().unwrap() >= 1,
        "{health}"
    );
    gw.stop().await;
}
