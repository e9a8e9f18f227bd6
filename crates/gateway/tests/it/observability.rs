//! Breaker, metrics and health as an operator sees them.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn a_failing_upstream_trips_its_breaker_and_calls_then_fail_fast_naming_it() {
    let gw = TestGateway::start(&(fake_stdio("a", "") + &fake_stdio("b", ""))).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    // `fail` answers with an internal error: the upstream is unwell.
    for id in 1..=5 {
        assert_eq!(c.tool(id, "a__fail", json!({})).await.error_code(), -32603);
    }
    let r = c.tool(6, "a__echo", json!({"text": "x"})).await;
    assert_eq!(r.error_code(), -32010, "{}", r.raw);
    let e = &r.response()["error"];
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("\"a\"") && message.contains("retry in"),
        "{message}"
    );
    assert!(e["data"]["retryInMs"].as_u64().unwrap() > 0);
    // The other upstream is not affected.
    assert_eq!(
        c.tool(7, "b__echo", json!({"text": "ok"})).await.result()["content"][0]["text"],
        "ok"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"circuit_breaker_state{component="a"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"circuit_breaker_calls_total{component="a",result="rejected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"upstream_health_score{upstream="a"} 0"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn metrics_count_tool_calls_requests_and_refusals_with_bounded_labels() {
    let gw = TestGateway::start(&fake_stdio("a", "")).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    c.tool(1, "a__echo", json!({"text": "x"})).await.result();
    c.tool(2, "a__tool_error", json!({})).await.result();
    let bogus = Client {
        session: Some("nope".into()),
        ..c.clone()
    };
    assert_eq!(bogus.call(3, "ping", json!({})).await.status, 404);
    let resp = reqwest::get(format!("{}/metrics", gw.base)).await.unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let m = resp.text().await.unwrap();
    for needle in [
        r#"mcp_tool_calls_total{upstream="a",tool_name="echo",status="success"} 1"#,
        r#"mcp_tool_calls_total{upstream="a",tool_name="tool_error",status="error"} 1"#,
        r#"rejected_requests_total{reason="unknown_session"} 1"#,
        r#"http_requests_total{method="POST",endpoint="/mcp",status_code="404"} 1"#,
        r#"upstream_up{upstream="a"} 1"#,
        "active_sessions_total 1",
        "system_health_score 1",
        "upstream_processes 1",
        "mcp_tool_duration_seconds_bucket",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in\n{m}");
    }
    assert!(
        !m.contains(c.session.as_deref().unwrap()),
        "a session id leaked into a label"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_metrics_token_protects_the_metrics_endpoint() {
    let gw =
        TestGateway::start(&(fake_stdio("a", "") + "[server]\nmetrics_token = \"s3cret\"\n")).await;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", gw.base);
    let denied = http.get(&url).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        http.get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let ok = http.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("http_requests_total"));
    gw.stop().await;
}
