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

/// Two replicas behind one Redis (`[cache] backend = "redis"`): an answer
/// cached by one is served by the other without calling its upstream.
#[tokio::test]
async fn a_tool_answer_cached_by_one_gateway_is_served_by_another_sharing_redis() {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("SWITCHBOARD_TEST_REDIS_URL is not set: run `scripts/services.sh start` and export what it prints (scripts/test.sh does)")
    });
    let toml = format!(
        "[cache]\nbackend = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"sbtest:it:{:016x}:\"\n{}",
        rand::random::<u64>(),
        fake_stdio("a", "cache = { ttl = \"60s\", tools = [\"call_count\"] }"),
    );
    let (a, b) = (
        TestGateway::start(&toml).await,
        TestGateway::start(&toml).await,
    );
    let ca = Client::connect(&a.url(), "2025-11-25", json!({})).await;
    let cb = Client::connect(&b.url(), "2025-11-25", json!({})).await;
    // Each gateway runs its own upstream process; B's has counted more
    // calls, so its own answer would differ from A's.
    for id in 1..=3 {
        cb.tool(id, "a__echo", json!({"text": "x"})).await.result();
    }
    let from_a = text(&ca.tool(1, "a__call_count", json!({})).await);
    let from_b = text(&cb.tool(4, "a__call_count", json!({})).await);
    assert_eq!(
        from_b, from_a,
        "gateway B called its upstream instead of serving A's cached answer"
    );
    let hits = r#"cache_hits_total{cache="tool_result"}"#;
    let misses = r#"cache_misses_total{cache="tool_result"}"#;
    assert_eq!((metric(&a, hits).await, metric(&a, misses).await), (0, 1));
    assert_eq!((metric(&b, hits).await, metric(&b, misses).await), (1, 0));
    a.stop().await;
    b.stop().await;
}
