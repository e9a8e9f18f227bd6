use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn tools_of_each_upstream_are_prefixed_and_calls_route_back() {
    let gw = TestGateway::start(&(fake_stdio("a", "") + &fake_stdio("b", ""))).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let names = c.tool_names().await;
    assert!(
        names.contains(&"a__echo".to_owned()) && names.contains(&"b__echo".to_owned()),
        "{names:?}"
    );
    let r = c.tool(1, "b__echo", json!({"text": "hi from b"})).await;
    assert_eq!(r.result()["content"][0]["text"], "hi from b");
    let r = c.tool(2, "a__add", json!({"a": 2, "b": 3})).await;
    assert_eq!(r.result()["structuredContent"]["sum"], 5);
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_that_cannot_start_leaves_the_others_serving() {
    let config = fake_stdio("good", "")
        + "[[upstreams]]\nname = \"broken\"\ncommand = [\"/nonexistent/mcp-server\"]\nconnect_timeout = \"2s\"\n";
    let gw = TestGateway::start(&config).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let names = c.tool_names().await;
    assert!(names.iter().all(|n| n.starts_with("good__")), "{names:?}");
    assert_eq!(
        c.tool(1, "good__echo", json!({"text": "x"})).await.result()["content"][0]["text"],
        "x"
    );
    let health = gw.health().await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["upstreams"][1]["status"], "down");
    assert!(
        health["upstreams"][1]["error"]
            .as_str()
            .unwrap()
            .contains("nonexistent"),
        "{health}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_per_server_route_exposes_one_upstream_unprefixed() {
    let gw = TestGateway::start(
        &(fake_stdio("a", "") + &fake_stdio("b", "tools = { allow = [\"echo\", \"add\"] }")),
    )
    .await;
    let c = Client::connect(
        &format!("{}/servers/b/mcp", gw.base),
        "2025-11-25",
        json!({}),
    )
    .await;
    let mut names = c.tool_names().await;
    names.sort();
    assert_eq!(
        names,
        vec!["add", "echo"],
        "the allow list applies and nothing of a shows"
    );
    assert_eq!(
        c.tool(1, "echo", json!({"text": "direct"})).await.result()["content"][0]["text"],
        "direct"
    );
    let missing = Client::new(&format!("{}/servers/zzz/mcp", gw.base));
    let r = missing.call(1, "initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}})).await;
    assert_eq!(r.status, 404);
    gw.stop().await;
}

#[tokio::test]
async fn conditional_prefixes_only_colliding_names_and_never_keeps_the_first() {
    let gw = TestGateway::start(
        &(fake_stdio(
            "a",
            "prefix = \"conditional\"\ntools = { allow = [\"echo\", \"add\"] }",
        ) + &fake_stdio(
            "b",
            "prefix = \"conditional\"\ntools = { allow = [\"echo\", \"slow\"] }",
        )),
    )
    .await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let mut names = c.tool_names().await;
    names.sort();
    assert_eq!(names, vec!["a__echo", "add", "b__echo", "slow"]);
    gw.stop().await;
}

#[tokio::test]
async fn resources_prompts_and_completions_route_to_their_upstream() {
    let gw = TestGateway::start(
        &(fake_stdio("a", "") + &fake_stdio("b", "resources = { deny = [\"*\"] }")),
    )
    .await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let r = c.call(1, "resources/list", json!({})).await;
    assert_eq!(r.result()["resources"][0]["uri"], "fake://static");
    let r = c
        .call(2, "resources/read", json!({"uri": "fake://static"}))
        .await;
    assert_eq!(r.result()["contents"][0]["text"], "static");
    let r = c
        .call(3, "resources/read", json!({"uri": "fake://item/42"}))
        .await;
    assert_eq!(
        r.result()["contents"][0]["text"],
        "item 42",
        "a template routes unlisted uris"
    );
    let r = c
        .call(
            4,
            "prompts/get",
            json!({"name": "b__greet", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert!(r.result()["messages"][0]["content"]["text"]
        .as_str()
        .unwrap()
        .contains("Hello, Ada!"));
    let r = c.call(5, "completion/complete", json!({"ref": {"type": "ref/prompt", "name": "a__greet"}, "argument": {"name": "name", "value": "a"}})).await;
    assert_eq!(r.result()["completion"]["values"], json!(["alice"]));
    gw.stop().await;
}

#[tokio::test]
async fn paginated_upstream_lists_are_discovered_whole() {
    let gw = TestGateway::start(&fake_stdio("p", "").replace(
        "\"--name\"",
        "\"--tools\", \"25\", \"--page-size\", \"7\", \"--name\"",
    ))
    .await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let names = c.tool_names().await;
    assert!(
        names.contains(&"p__tool_0".to_owned()) && names.contains(&"p__tool_24".to_owned()),
        "{names:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn http_and_stdio_upstreams_federate_and_progress_crosses_the_http_leg() {
    let remote = HttpUpstream::start("remote").await;
    let gw = TestGateway::start(&(remote.config("web") + &fake_stdio("local", ""))).await;
    let c = Client::connect(&gw.url(), "2025-11-25", json!({"sampling": {}})).await;
    let names = c.tool_names().await;
    assert!(
        names.contains(&"web__echo".to_owned()) && names.contains(&"local__echo".to_owned()),
        "{names:?}"
    );
    assert_eq!(
        c.tool(1, "web__echo", json!({"text": "over http"}))
            .await
            .result()["content"][0]["text"],
        "over http"
    );
    let r = c
        .call(
            2,
            "tools/call",
            json!({"name": "web__slow", "arguments": {"ms": 350}, "_meta": {"progressToken": 99}}),
        )
        .await;
    let progress = r
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert!(
        progress > 0,
        "no progress over the http upstream: {}",
        r.raw
    );
    assert!(r
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .all(|m| m["params"]["progressToken"] == 99));
    assert!(r.result().get("content").is_some());
    gw.stop().await;
}
