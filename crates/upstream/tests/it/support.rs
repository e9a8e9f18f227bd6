//! Shared helpers: configs, a recording request context, bounded waits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;
use switchboard_config::{StdioConfig, TransportConfig, UpstreamConfig};
use switchboard_protocol::{ErrorObject, Notification};
use switchboard_upstream::{
    CallError, CallOptions, EventKind, RequestContext, Upstream, UpstreamEvent,
};
use tokio::sync::mpsc;

/// Generous bound for anything that should happen "soon"; never asserted as
/// a duration, only used so a broken test fails instead of hanging.
pub(crate) const SOON: Duration = Duration::from_secs(20);

/// Path of the fake upstream binary.
pub(crate) fn fake_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKE_UPSTREAM_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/it-xxxx → target/debug/switchboard-fake-upstream
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("switchboard-fake-upstream");
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build -p switchboard-testkit` (same target dir) or set FAKE_UPSTREAM_BIN",
        bin.display()
    );
    bin
}

/// A config with the config crate's own defaults (so new fields need no edit
/// here), with the test's transport and short timeouts.
pub(crate) fn config(name: &str, transport: TransportConfig) -> UpstreamConfig {
    let text = format!("[[upstreams]]\nname = \"{name}\"\ncommand = [\"placeholder\"]\nretries = 0\nhealth_check_interval = \"0s\"\n");
    let mut cfg = switchboard_config::parse(&text, "test")
        .expect("valid test config")
        .upstreams
        .remove(0);
    cfg.transport = transport;
    cfg.timeout = Duration::from_secs(15);
    cfg.connect_timeout = Duration::from_secs(15);
    cfg.max_response_bytes = 1024 * 1024;
    cfg.max_timeout = Duration::from_secs(60);
    cfg
}

pub(crate) fn raw(v: Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&v).unwrap()
}

pub(crate) fn call_params(tool: &str, args: Value) -> Option<Box<RawValue>> {
    Some(raw(serde_json::json!({ "name": tool, "arguments": args })))
}

/// Starts an upstream and waits until it is ready.
pub(crate) async fn started(config: UpstreamConfig) -> (Upstream, mpsc::Receiver<UpstreamEvent>) {
    let (tx, rx) = mpsc::channel(64);
    let up = Upstream::start(config, tx);
    up.ready(SOON).await.expect("upstream ready");
    (up, rx)
}

/// Calls a tool and returns the first text block of its result.
pub(crate) async fn call_text(
    up: &Upstream,
    tool: &str,
    args: Value,
    options: CallOptions,
) -> Result<String, CallError> {
    let result = up
        .request("tools/call", call_params(tool, args), options)
        .await?;
    let v: Value = serde_json::from_str(result.get()).unwrap();
    Ok(v["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Reads the fake's `cancelled_count` until it reaches `want`.
pub(crate) async fn wait_cancelled_count(up: &Upstream, want: u64) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let got: u64 = call_text(
            up,
            "cancelled_count",
            serde_json::json!({}),
            CallOptions::default(),
        )
        .await
        .unwrap()
        .parse()
        .unwrap();
        if got >= want {
            assert_eq!(got, want);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cancelled_count stayed at {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for an event matching `pred`, skipping others.
pub(crate) async fn wait_event(
    rx: &mut mpsc::Receiver<UpstreamEvent>,
    what: &str,
    pred: impl Fn(&EventKind) -> bool,
) -> EventKind {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} event in time"))
            .expect("events channel open");
        if pred(&ev.kind) {
            return ev.kind;
        }
    }
}

/// A request context that records what it is given and answers server
/// requests with a fixed result.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) notes: parking_lot::Mutex<Vec<Notification>>,
    pub(crate) requests: parking_lot::Mutex<Vec<String>>,
    pub(crate) answer: Option<Value>,
}

impl Recorder {
    pub(crate) fn answering(answer: Value) -> Arc<Self> {
        Arc::new(Self {
            answer: Some(answer),
            ..Default::default()
        })
    }

    pub(crate) fn methods(&self) -> Vec<String> {
        self.notes.lock().iter().map(|n| n.method.clone()).collect()
    }
}

#[async_trait::async_trait]
impl RequestContext for Recorder {
    fn notify(&self, notification: Notification) {
        self.notes.lock().push(notification);
    }

    async fn request(
        &self,
        method: &str,
        _params: Option<Box<RawValue>>,
    ) -> Result<Box<RawValue>, ErrorObject> {
        self.requests.lock().push(method.to_owned());
        match &self.answer {
            Some(a) => Ok(raw(a.clone())),
            None => Err(ErrorObject::method_not_found(method)),
        }
    }
}

pub(crate) fn with_context(ctx: Arc<Recorder>) -> CallOptions {
    CallOptions {
        context: Some(ctx),
        ..Default::default()
    }
}

pub(crate) fn sampling_answer(text: &str) -> Value {
    serde_json::json!({
        "role": "assistant",
        "content": { "type": "text", "text": text },
        "model": "test-model",
        "stopReason": "endTurn"
    })
}

/// A `switchboard-fake-upstream --transport http` child on a free loopback
/// port; killed on drop.
#[derive(Debug)]
pub(crate) struct FakeHttp {
    child: tokio::process::Child,
    pub(crate) port: u16,
    args: Vec<String>,
}

impl FakeHttp {
    pub(crate) async fn start(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let child = Self::spawn(port, &args).await;
        Self { child, port, args }
    }

    async fn spawn(port: u16, args: &[String]) -> tokio::process::Child {
        let child = tokio::process::Command::new(fake_bin())
            .args([
                "--transport",
                "http",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + SOON;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fake http upstream did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child
    }

    /// Kills the server and starts a fresh one on the same port: every
    /// session the client held is now unknown to it.
    pub(crate) async fn restart(&mut self) {
        self.child.kill().await.unwrap();
        self.child = Self::spawn(self.port, &self.args).await;
    }

    /// The server's pid, to signal it (e.g. SIGSTOP to make it hang).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// A stdio upstream running the fake with `args`.
pub(crate) fn fake(name: &str, args: &[&str]) -> UpstreamConfig {
    config(
        name,
        TransportConfig::Stdio(StdioConfig {
            program: fake_bin().to_string_lossy().into_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![],
            cwd: None,
            pool: Default::default(),
            limits: None,
        }),
    )
}

/// Whether a process is still running (a zombie counts as gone).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .map(str::trim_start)
                .and_then(|s| s.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}
