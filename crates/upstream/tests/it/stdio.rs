//! stdio upstreams against `switchboard-fake-upstream --transport stdio`.

use std::time::Duration;

use serde_json::json;
use switchboard_config::{StdioConfig, TransportConfig, UpstreamConfig};
use switchboard_upstream::{CallError, CallOptions, EventKind, Status, Upstream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn shell(name: &str, script: &str) -> UpstreamConfig {
    config(
        name,
        TransportConfig::Stdio(StdioConfig {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            cwd: None,
            pool: Default::default(),
            limits: None,
        }),
    )
}

#[tokio::test]
async fn stdio_handshake_reports_server_info_and_forwards_requests() {
    let (up, _events) = started(fake("a", &["--name", "fake-a"])).await;
    let Status::Ready(info) = up.status() else {
        panic!("not ready: {:?}", up.status())
    };
    assert_eq!(info.server_info["name"], "fake-a");
    let text = call_text(
        &up,
        "echo",
        json!({"text": "héllo"}),
        CallOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(text, "héllo");
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_list_all_follows_cursors_to_the_end() {
    let (up, _events) = started(fake("a", &["--tools", "5", "--page-size", "2"])).await;
    let tools = up.list_all("tools/list", "tools").await.unwrap();
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    for want in ["echo", "tool_0", "tool_4"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "duplicates in {names:?}");
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_upstream_errors_pass_through_as_rpc_errors() {
    let (up, _events) = started(fake("a", &[])).await;
    let err = call_text(&up, "fail", json!({}), CallOptions::default())
        .await
        .unwrap_err();
    let CallError::Rpc { error, .. } = &err else {
        panic!("expected Rpc, got {err:?}")
    };
    assert_eq!(error.code, -32603);
    assert_eq!(err.to_error_object(), *error);
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_cancel_returns_cancelled_and_tells_the_upstream() {
    let (up, _events) = started(fake("a", &[])).await;
    let cancel = CancellationToken::new();
    let options = CallOptions {
        cancel: cancel.clone(),
        ..Default::default()
    };
    let call = tokio::spawn({
        let up = up.clone();
        async move { call_text(&up, "slow", json!({"ms": 30_000}), options).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, CallError::Cancelled { .. }), "{err:?}");
    wait_cancelled_count(&up, 1).await;
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_timeout_returns_timeout_and_tells_the_upstream() {
    let (up, _events) = started(fake("a", &[])).await;
    let options = CallOptions {
        timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let err = call_text(&up, "slow", json!({"ms": 30_000}), options)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    assert!(err
        .to_error_object()
        .message
        .contains("timed out after 300ms"));
    wait_cancelled_count(&up, 1).await;
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_progress_and_log_messages_go_to_the_request_context() {
    let (up, mut events) = started(fake("a", &[])).await;
    let ctx = Recorder::answering(json!({}));
    let params =
        json!({"name": "slow", "arguments": {"ms": 400}, "_meta": {"progressToken": "tok-1"}});
    up.request("tools/call", Some(raw(params)), with_context(ctx.clone()))
        .await
        .unwrap();
    assert!(
        ctx.methods().iter().any(|m| m == "notifications/progress"),
        "{:?}",
        ctx.methods()
    );
    let notes = ctx.notes.lock().clone();
    assert!(notes[0].params.as_ref().unwrap().get().contains("tok-1"));

    call_text(
        &up,
        "log",
        json!({"level": "error", "message": "m1"}),
        with_context(ctx.clone()),
    )
    .await
    .unwrap();
    assert!(
        ctx.methods().iter().any(|m| m == "notifications/message"),
        "{:?}",
        ctx.methods()
    );
    // Nothing related leaked to the events channel.
    while let Ok(ev) = events.try_recv() {
        if let EventKind::Notification(n) = ev.kind {
            assert!(
                !n.method.contains("progress") && !n.method.contains("message"),
                "{n:?}"
            );
        }
    }
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_server_requests_go_to_the_request_context() {
    let (up, _events) = started(fake("a", &[])).await;
    let ctx = Recorder::answering(sampling_answer("from the client"));
    let text = call_text(
        &up,
        "sample",
        json!({"prompt": "hi"}),
        with_context(ctx.clone()),
    )
    .await
    .unwrap();
    assert_eq!(text, "from the client");
    assert_eq!(
        *ctx.requests.lock(),
        vec!["sampling/createMessage".to_owned()]
    );
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_server_requests_without_a_context_are_refused_as_method_not_found() {
    let (up, _events) = started(fake("a", &[])).await;
    let text = call_text(&up, "sample", json!({}), CallOptions::default())
        .await
        .unwrap();
    assert!(text.contains("sampling failed"), "{text}");
    assert!(text.contains("sampling/createMessage"), "{text}");
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_list_changed_arrives_on_the_events_channel() {
    let (up, mut events) = started(fake("a", &[])).await;
    call_text(
        &up,
        "add_tool",
        json!({"name": "fresh"}),
        CallOptions::default(),
    )
    .await
    .unwrap();
    wait_event(&mut events, "list_changed", |k| {
        matches!(k, EventKind::Notification(n) if n.method == "notifications/tools/list_changed")
    })
    .await;
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_an_oversized_response_fails_only_its_request() {
    let mut cfg = fake("a", &[]);
    cfg.max_response_bytes = 64 * 1024;
    let (up, _events) = started(cfg).await;
    let err = call_text(
        &up,
        "big",
        json!({"bytes": 500_000}),
        CallOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, CallError::TooLarge { limit: 65536, .. }),
        "{err:?}"
    );
    let text = call_text(
        &up,
        "echo",
        json!({"text": "still here"}),
        CallOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(text, "still here");
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_a_crash_fails_pending_requests_reports_down_and_restarts() {
    let (up, mut events) = started(fake("a", &[])).await;
    let err = call_text(&up, "crash", json!({}), CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Unavailable { .. }), "{err:?}");
    wait_event(&mut events, "down", |k| matches!(k, EventKind::Down(_))).await;
    wait_event(&mut events, "ready", |k| matches!(k, EventKind::Ready(_))).await;
    let text = call_text(&up, "echo", json!({"text": "back"}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(text, "back");
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_shutdown_stops_everything_and_is_idempotent() {
    let (up, _events) = started(fake("a", &[])).await;
    up.shutdown().await;
    up.shutdown().await;
    assert!(matches!(up.status(), Status::Stopped));
    let err = call_text(&up, "echo", json!({"text": "x"}), CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn stdio_shutdown_kills_a_server_that_ignores_stdin_close_and_sigterm() {
    // Ignores SIGTERM and EOF; only SIGKILL ends it. Answers initialize first.
    let script = r#"trap '' TERM; read l; echo '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}'; read l; echo '{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":"2025-06-18","capabilities":{}}}'; while true; do sleep 1; done"#;
    let (up, _events) = started(shell("stubborn", script)).await;
    tokio::time::timeout(Duration::from_secs(15), up.shutdown())
        .await
        .expect("shutdown is bounded");
    assert!(matches!(up.status(), Status::Stopped));
}

#[tokio::test]
async fn stdio_an_unsupported_protocol_version_is_down_with_a_clear_error() {
    let script = r#"read l; echo '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}'; read l; echo '{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":"2099-01-01","capabilities":{}}}'; sleep 30"#;
    let (tx, _rx) = mpsc::channel(16);
    let up = Upstream::start(shell("future", script), tx);
    let err = up.ready(SOON).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported protocol version \"2099-01-01\""),
        "{err}"
    );
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_a_missing_program_is_down_naming_the_program() {
    let cfg = shell("missing", "");
    let cfg = UpstreamConfig {
        transport: TransportConfig::Stdio(StdioConfig {
            program: "/nonexistent/mcp-server".into(),
            args: vec![],
            env: vec![],
            cwd: None,
            pool: Default::default(),
            limits: None,
        }),
        ..cfg
    };
    let (tx, _rx) = mpsc::channel(16);
    let up = Upstream::start(cfg, tx);
    let err = up.ready(SOON).await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/mcp-server"), "{err}");
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_garbage_and_unknown_ids_on_stdout_do_not_break_the_connection() {
    // Answers the era probe as a legacy server does, and initialize, then
    // prints junk, an oversized line without an id and a response for an id
    // nobody asked, then answers request 3.
    let script = r#"
read l; echo '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}'
read l; echo '{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":"2025-06-18","capabilities":{}}}'
read l
read l
echo 'not json'
echo '{"jsonrpc":"2.0","id":999,"result":{}}'
head -c 200000 /dev/zero | tr '\0' 'x'; echo
echo '{"jsonrpc":"2.0","id":3,"result":{"ok":true}}'
sleep 30"#;
    let mut cfg = shell("junk", script);
    cfg.max_response_bytes = 4096;
    let (up, _events) = started(cfg).await;
    let result = up
        .request("tools/list", None, CallOptions::default())
        .await
        .unwrap();
    assert_eq!(result.get(), r#"{"ok":true}"#);
    up.shutdown().await;
}

/// A server that starts a grandchild and writes both pids to `dir`.
fn family(dir: &std::path::Path) -> UpstreamConfig {
    let script = format!(
        r#"sleep 300 & echo $! > {d}/grandchild; echo $$ > {d}/child; read l; echo '{{"jsonrpc":"2.0","id":1,"error":{{"code":-32601,"message":"Method not found"}}}}'; read l; echo '{{"jsonrpc":"2.0","id":2,"result":{{"protocolVersion":"2025-06-18","capabilities":{{}}}}}}'; while true; do sleep 1; done"#,
        d = dir.display()
    );
    shell("family", &script)
}

fn pids(dir: &std::path::Path) -> [u32; 2] {
    ["child", "grandchild"].map(|f| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    })
}

async fn wait_gone(pids: [u32; 2]) {
    let deadline = tokio::time::Instant::now() + SOON;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes {pids:?} still alive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stdio_shutdown_stops_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _events) = started(family(dir.path())).await;
    let pids = pids(dir.path());
    assert!(pids.iter().all(|p| alive(*p)));
    up.shutdown().await;
    wait_gone(pids).await;
}

#[tokio::test]
async fn stdio_dropping_the_last_handle_stops_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _events) = started(family(dir.path())).await;
    let pids = pids(dir.path());
    drop(up);
    wait_gone(pids).await;
}

/// A context whose server requests never finish; records when the server's
/// cancellation drops them.
#[derive(Debug, Default)]
struct Hanging {
    dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl switchboard_upstream::RequestContext for Hanging {
    fn notify(&self, _: switchboard_protocol::Notification) {}

    async fn request(
        &self,
        _: &str,
        _: Option<Box<serde_json::value::RawValue>>,
    ) -> Result<Box<serde_json::value::RawValue>, switchboard_protocol::ErrorObject> {
        let _guard = SetOnDrop(self.dropped.clone());
        std::future::pending().await
    }
}

#[tokio::test]
async fn stdio_a_server_cancelling_its_own_request_stops_the_client_side_call() {
    let script = r#"
read l; echo '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}'
read l; echo '{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":"2025-06-18","capabilities":{}}}'
read l
read l
echo '{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}'
sleep 0.3
echo '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"s1"}}'
sleep 0.3
echo '{"jsonrpc":"2.0","id":3,"result":{"done":true}}'
sleep 30"#;
    let (up, _events) = started(shell("withdraws", script)).await;
    let ctx = std::sync::Arc::new(Hanging::default());
    let options = CallOptions {
        context: Some(ctx.clone()),
        ..Default::default()
    };
    let result = up.request("tools/call", None, options).await.unwrap();
    assert_eq!(result.get(), r#"{"done":true}"#);
    let deadline = tokio::time::Instant::now() + SOON;
    while !ctx.dropped.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server request still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_a_modern_only_server_is_called_statelessly_without_initialize() {
    // Answers server/discover with the stateless revision only, then
    // answers the next request with "stateless" only if it is tools/list
    // carrying the revision in _meta (an initialize would get "handshake").
    let script = r#"
read l; echo '{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28"],"capabilities":{"tools":{}},"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"m","version":"1"}}}}'
read l
case "$l" in
  *'"tools/list"'*'"io.modelcontextprotocol/protocolVersion":"2026-07-28"'*) echo '{"jsonrpc":"2.0","id":2,"result":{"tools":[],"era":"stateless"}}' ;;
  *) echo '{"jsonrpc":"2.0","id":2,"result":{"era":"handshake"}}' ;;
esac
sleep 30"#;
    let (up, _events) = started(shell("modern", script)).await;
    let Status::Ready(info) = up.status() else {
        panic!("not ready: {:?}", up.status())
    };
    assert_eq!(info.protocol_version, "2026-07-28");
    assert_eq!(info.server_info["name"], "m");
    let result = up
        .request("tools/list", None, CallOptions::default())
        .await
        .unwrap();
    let result: serde_json::Value = serde_json::from_str(result.get()).unwrap();
    assert_eq!(result["era"], "stateless", "{result}");
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_a_legacy_server_that_exits_on_the_era_probe_is_started_again_for_initialize() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("probed");
    // The first process dies on the probe; the next one only handshakes.
    let script = format!(
        r#"
if [ ! -e '{mark}' ]; then touch '{mark}'; read l; exit 1; fi
read l; echo '{{"jsonrpc":"2.0","id":1,"result":{{"protocolVersion":"2025-06-18","capabilities":{{}},"serverInfo":{{"name":"second"}}}}}}'
read l
sleep 30"#,
        mark = mark.display()
    );
    let (up, _events) = started(shell("fragile", &script)).await;
    let Status::Ready(info) = up.status() else {
        panic!("not ready: {:?}", up.status())
    };
    assert_eq!(info.protocol_version, "2025-06-18");
    assert_eq!(info.server_info["name"], "second");
    assert_eq!(
        up.health_stats().restarts,
        0,
        "a respawn for the handshake is not a restart"
    );
    up.shutdown().await;
}
