use serde_json::json;

use crate::harness::*;

fn text(r: &Reply) -> String {
    r.result()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn metric(gw: &TestGateway, series: &str) -> u64 {
    let m = gw.metrics().await;
    m.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse::<u64>().unwrap())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_read_only_tool_is_served_from_cache_and_stale_while_its_breaker_is_open() {
    let gw = TestGateway::start(&fake_stdio(
        "a",
        "cache = { ttl = \"60s\", tools = [\"call_count\", \"echo\"] }\nbreaker = { consecutive_failures = 1, open_base = \"60s\", open_max = \"60s\" }",
    ))
    .await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let first = text(&c.tool(1, "a__call_count", json!({})).await);
    // echo is listed for caching but not read-only: it is never cached.
    c.tool(2, "a__echo", json!({"text": "x"})).await.result();
    assert_eq!(
        text(&c.tool(3, "a__call_count", json!({})).await),
        first,
        "second call not served from cache"
    );
    assert_eq!(
        metric(&gw, r#"cache_hits_total{cache="tool_result"}"#).await,
        1
    );
    // One internal error opens the breaker. Fresh entries still answer, but a
    // call with other arguments has no entry and fails fast, naming the upstream.
    assert_eq!(c.tool(4, "a__fail", json!({})).await.error_code(), -32603);
    let other_args = c.tool(5, "a__call_count", json!({"unused": 1})).await;
    assert_eq!(
        other_args.error_code(),
        -32010,
        "different arguments, no cached answer: {}",
        other_args.raw
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_stale_answer_is_marked_in_meta_when_the_upstream_cannot_be_called() {
    let gw = TestGateway::start(&fake_stdio(
        "a",
        "cache = { ttl = \"100ms\", tools = [\"call_count\"] }\nbreaker = { consecutive_failures = 1, open_base = \"60s\", open_max = \"60s\" }",
    ))
    .await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let first = text(&c.tool(1, "a__call_count", json!({})).await);
    // Let the entry pass its ttl (bounded loop, no wall-clock assertion).
    let expired = eventually(200, || {
        let c = c.clone();
        let first = first.clone();
        async move { text(&c.tool(2, "a__call_count", json!({})).await) != first }
    })
    .await;
    assert!(expired, "the entry never expired");
    c.tool(3, "a__call_count", json!({})).await.result();
    assert_eq!(c.tool(4, "a__fail", json!({})).await.error_code(), -32603);
    let served = eventually(200, || {
        let c = c.clone();
        async move {
            c.tool(5, "a__call_count", json!({})).await.result()["_meta"]
                .get("io.switchboard/stale")
                .is_some()
        }
    })
    .await;
    assert!(served, "no stale answer while the breaker is open");
    let r = c.tool(6, "a__call_count", json!({})).await;
    let stale = &r.result()["_meta"]["io.switchboard/stale"];
    assert!(
        stale["reason"].as_str().unwrap().contains("\"a\""),
        "{stale}"
    );
    assert!(stale["ageMs"].as_u64().is_some());
    gw.stop().await;
}

#[tokio::test]
async fn a_resource_update_invalidates_its_cached_read() {
    let gw = TestGateway::start(&fake_stdio(
        "a",
        "cache = { ttl = \"60s\", resources = true }",
    ))
    .await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let hits = r#"cache_hits_total{cache="resource_read"}"#;
    let misses = r#"cache_misses_total{cache="resource_read"}"#;
    for id in 1..=2 {
        assert_eq!(
            c.call(id, "resources/read", json!({"uri": "fake://static"}))
                .await
                .result()["contents"][0]["text"],
            "static"
        );
    }
    assert_eq!((metric(&gw, hits).await, metric(&gw, misses).await), (1, 1));
    c.tool(3, "a__touch", json!({"uri": "fake://static"}))
        .await
        .result();
    let gw_ref = &gw;
    let invalidated = eventually(250, || {
        let c = c.clone();
        async move {
            c.call(4, "resources/read", json!({"uri": "fake://static"}))
                .await
                .result();
            gw_ref
                .metrics()
                .await
                .contains(r#"cache_misses_total{cache="resource_read"} 2"#)
        }
    })
    .await;
    assert!(invalidated, "the update did not invalidate the cached read");
    gw.stop().await;
}
