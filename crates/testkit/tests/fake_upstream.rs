//! Process-level tests of `switchboard-fake-upstream` over stdio, driven by a
//! real rmcp client, so the binary's CLI, fault schedule and exit codes are
//! covered exactly as the gateway will see them.

#![allow(deprecated)]
// sampling, roots and logging are legacy-era features under test
// Helpers outside #[test] fns are test code too; a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    ArgumentInfo, CallToolRequestParams, CallToolResult, ClientCapabilities, ClientRequest,
    CompleteRequestParams, CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams,
    ElicitResult, ElicitationAction, GetPromptRequestParams, Implementation,
    InitializeRequestParams, ListRootsResult, LoggingMessageNotificationParam,
    PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion, ReadResourceRequestParams,
    Reference, Request, ResourceUpdatedNotificationParam, Role, Root, SamplingMessage,
};
use rmcp::service::{
    NotificationContext, PeerRequestOptions, RequestContext, RoleClient, RunningService,
    ServiceError,
};
use rmcp::{ClientHandler, ErrorData, ServiceExt};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-fake-upstream");

/// What the server sent us unprompted.
#[derive(Debug, Default)]
struct Seen {
    progress: Vec<f64>,
    logs: Vec<Value>,
    updated: Vec<String>,
    tools_changed: usize,
}

/// A client that answers every server→client request and records notifications.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

impl ClientHandler for Recorder {
    fn get_info(&self) -> InitializeRequestParams {
        let capabilities = ClientCapabilities::builder()
            .enable_roots()
            .enable_sampling()
            .enable_elicitation()
            .build();
        InitializeRequestParams::new(capabilities, Implementation::new("testkit-test", "0"))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let asked = params.messages[0]
            .content
            .first()
            .unwrap()
            .as_text()
            .unwrap()
            .text
            .clone();
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(format!("reply to {asked}")),
            "test-model".to_owned(),
        ))
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({ "answer": "42" })))
    }

    async fn list_roots(
        &self,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        Ok(ListRootsResult::new(vec![Root::new("file:///tmp/root")]))
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.0.lock().unwrap().progress.push(params.progress);
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.0.lock().unwrap().logs.push(params.data);
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.0.lock().unwrap().updated.push(params.uri);
    }

    async fn on_tool_list_changed(&self, _cx: NotificationContext<RoleClient>) {
        self.0.lock().unwrap().tools_changed += 1;
    }
}

type Client = RunningService<RoleClient, Recorder>;

/// Starts the binary with `args` and connects a recording client to it.
async fn start(args: &[&str]) -> (Child, Client, Recorder) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
    let recorder = Recorder::default();
    let client = recorder.clone().serve((stdout, stdin)).await.unwrap();
    (child, client, recorder)
}

async fn call(
    client: &Client,
    name: &'static str,
    args: Value,
) -> Result<CallToolResult, ServiceError> {
    let Value::Object(args) = args else {
        panic!("args must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(name).with_arguments(args))
        .await
}

fn text(result: &CallToolResult) -> &str {
    &result.content[0].as_text().unwrap().text
}

fn error_of(result: Result<CallToolResult, ServiceError>) -> ErrorData {
    match result {
        Err(ServiceError::McpError(error)) => error,
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

/// Waits until `check` holds, for at most two seconds.
async fn eventually(recorder: &Recorder, check: impl Fn(&Seen) -> bool) {
    for _ in 0..200 {
        if check(&recorder.0.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met: {:?}", recorder.0.lock().unwrap());
}

#[tokio::test]
async fn tools_resources_prompts_and_pagination() {
    let (_child, client, _) = start(&["--name", "alpha", "--tools", "3", "--page-size", "5"]).await;
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "alpha");

    let first = client.list_tools(None).await.unwrap();
    assert_eq!(first.tools.len(), 5);
    assert_eq!(first.next_cursor.as_deref(), Some("5"));
    let all = client.list_all_tools().await.unwrap();
    assert_eq!(all.len(), 20 + 3);
    assert_eq!(all.last().unwrap().name, "tool_2");
    let bad = client
        .list_tools(Some(
            PaginatedRequestParams::default().with_cursor(Some("bogus".to_owned())),
        ))
        .await;
    assert!(matches!(bad, Err(ServiceError::McpError(e)) if e.code.0 == -32602));

    assert_eq!(
        text(
            &call(&client, "echo", json!({ "text": "hi" }))
                .await
                .unwrap()
        ),
        "hi"
    );
    let sum = call(&client, "add", json!({ "a": 2, "b": 3 }))
        .await
        .unwrap();
    assert_eq!(text(&sum), "5");
    assert_eq!(sum.structured_content, Some(json!({ "sum": 5 })));
    assert_eq!(
        text(&call(&client, "tool_1", json!({ "k": 1 })).await.unwrap()),
        r#"{"k":1}"#
    );
    assert_eq!(
        text(&call(&client, "big", json!({ "bytes": 10 })).await.unwrap()),
        "xxxxxxxxxx"
    );
    assert_eq!(
        call(&client, "tool_error", json!({}))
            .await
            .unwrap()
            .is_error,
        Some(true)
    );
    let failure = error_of(call(&client, "fail", json!({})).await);
    assert_eq!(
        (failure.code.0, failure.message.as_ref()),
        (-32603, "fake failure")
    );

    let read = client
        .read_resource(ReadResourceRequestParams::new("fake://item/7"))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&read).unwrap()["contents"][0]["text"],
        "item 7"
    );
    let read = client
        .read_resource(ReadResourceRequestParams::new("fake://static"))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&read).unwrap()["contents"][0]["text"],
        "static"
    );

    let mut greet = GetPromptRequestParams::new("greet");
    greet.arguments = Some(json!({ "name": "ada" }).as_object().unwrap().clone());
    let prompt = client.get_prompt(greet).await.unwrap();
    assert_eq!(prompt.messages[0].role, Role::User);
    assert_eq!(
        prompt.messages[0].content.as_text().unwrap().text,
        "Hello, ada!"
    );

    let completion = client
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("greet"),
            ArgumentInfo::new("name", "b"),
        ))
        .await
        .unwrap();
    assert_eq!(completion.completion.values, ["bob"]);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn server_to_client_requests_and_notifications() {
    let (_child, client, recorder) = start(&[]).await;

    let sampled = call(&client, "sample", json!({ "prompt": "ping" }))
        .await
        .unwrap();
    assert_eq!(text(&sampled), "reply to ping");
    let elicited: Value =
        serde_json::from_str(text(&call(&client, "elicit", json!({})).await.unwrap())).unwrap();
    assert_eq!(elicited["content"]["answer"], "42");
    let roots: Value =
        serde_json::from_str(text(&call(&client, "roots", json!({})).await.unwrap())).unwrap();
    assert_eq!(roots["roots"][0]["uri"], "file:///tmp/root");

    call(
        &client,
        "log",
        json!({ "level": "warning", "message": "careful" }),
    )
    .await
    .unwrap();
    call(&client, "touch", json!({ "uri": "fake://static" }))
        .await
        .unwrap();
    call(&client, "add_tool", json!({ "name": "late" }))
        .await
        .unwrap();
    eventually(&recorder, |seen| {
        seen.logs == [json!("careful")]
            && seen.updated == ["fake://static"]
            && seen.tools_changed == 1
    })
    .await;
    assert!(client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "late"));
    assert_eq!(
        text(&call(&client, "late", json!({ "x": true })).await.unwrap()),
        r#"{"x":true}"#
    );
    let again = call(&client, "add_tool", json!({ "name": "late" }))
        .await
        .unwrap();
    assert_eq!(again.is_error, Some(true));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn slow_reports_progress_and_counts_cancellations() {
    let (_child, client, recorder) = start(&[]).await;
    let slow = |ms: u64, options: PeerRequestOptions| {
        let request = CallToolRequestParams::new("slow")
            .with_arguments(json!({ "ms": ms }).as_object().unwrap().clone());
        let peer = client.peer().clone();
        async move {
            peer.send_cancellable_request(
                ClientRequest::CallToolRequest(Request::new(request)),
                options,
            )
            .await
            .unwrap()
            .await_response()
            .await
        }
    };
    slow(350, PeerRequestOptions::no_options()).await.unwrap();
    let progress = recorder.0.lock().unwrap().progress.clone();
    assert_eq!(progress, [100.0, 200.0, 300.0, 350.0]);

    // The client's timeout sends notifications/cancelled; the server must stop and count it.
    let timed_out = slow(
        10_000,
        PeerRequestOptions::with_timeout(Duration::from_millis(150)),
    )
    .await;
    assert!(
        matches!(timed_out, Err(ServiceError::Timeout { .. })),
        "{timed_out:?}"
    );
    let mut count = String::new();
    for _ in 0..100 {
        count = text(&call(&client, "cancelled_count", json!({})).await.unwrap()).to_owned();
        if count == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count, "1");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn fail_every_then_crash_after_calls() {
    let (mut child, client, _) = start(&["--fail-every", "2", "--crash-after-calls", "4"]).await;
    assert!(call(&client, "echo", json!({ "text": "1" })).await.is_ok());
    assert_eq!(
        error_of(call(&client, "echo", json!({ "text": "2" })).await)
            .code
            .0,
        -32603
    );
    assert!(call(&client, "echo", json!({ "text": "3" })).await.is_ok());
    assert!(call(&client, "echo", json!({ "text": "4" })).await.is_err());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[tokio::test]
async fn crash_tool_exits_with_code_one() {
    let (mut child, client, _) = start(&[]).await;
    assert!(call(&client, "crash", json!({})).await.is_err());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[tokio::test]
async fn exits_cleanly_on_stdin_eof_and_sigterm() {
    let (mut child, client, _) = start(&[]).await;
    // Dropping the client closes the child's stdin.
    drop(client);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let (mut child, client, _) = start(&[]).await;
    let pid = child.id().unwrap().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    drop(client);
}
