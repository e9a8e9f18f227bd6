use serde_json::json;

use crate::harness::*;

async fn upstream_calls(c: &Client) -> u64 {
    let r = c.tool(900, "a__call_count", json!({})).await;
    r.result()["content"][0]["text"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn arguments_that_break_the_input_schema_get_a_tool_error_naming_the_field_and_never_reach_the_upstream(
) {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let before = upstream_calls(&c).await;
    let r = c.tool(1, "a__add", json!({"a": "two", "b": 3})).await;
    assert_eq!(r.result()["isError"], true, "{}", r.raw);
    let text = r.result()["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("a__add") && text.contains("/a:") && text.contains("number"),
        "{text}"
    );
    let r = c.tool(2, "a__add", json!({"a": 2})).await;
    assert!(
        r.result()["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("\"b\""),
        "{}",
        r.raw
    );
    let mut deep = json!("x");
    for _ in 0..70 {
        deep = json!({"k": deep});
    }
    let r = c
        .tool(3, "a__echo", json!({"text": "x", "extra": deep}))
        .await;
    assert!(
        r.result()["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("deeper than 64"),
        "{}",
        r.raw
    );
    // Only the two call_count probes reached the upstream.
    assert_eq!(upstream_calls(&c).await, before + 1);
    // Valid arguments pass.
    assert_eq!(
        c.tool(4, "a__add", json!({"a": 2, "b": 3})).await.result()["structuredContent"]["sum"],
        5
    );
    gw.stop().await;
}

#[tokio::test]
async fn validation_can_be_switched_off_per_upstream() {
    let gw = TestGateway::start(&fake_stdio("a", "validate_input = false")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let before = upstream_calls(&c).await;
    c.tool(1, "a__add", json!({"a": "two", "b": 3})).await;
    assert_eq!(
        upstream_calls(&c).await,
        before + 2,
        "the invalid call must have reached the upstream"
    );
    gw.stop().await;
}
