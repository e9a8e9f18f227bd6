#![allow(clippy::unwrap_used)]
//! `limits` on a stdio upstream, through the real binary: the process runs
//! under the configured rlimits from its start (the binary re-executes
//! itself as `exec-limited` in front of the program), a child that allocates
//! past its memory limit dies, and the supervisor restarts it.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `FAKE_UPSTREAM_BIN`, else the testkit's binary next to this test's.
fn fake_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKE_UPSTREAM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("switchboard-fake-upstream");
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p switchboard-testkit` first",
        path.display()
    );
    path
}

struct Gateway {
    child: Child,
    url: String,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Roomy enough for a multi-threaded runtime's reserved address space on
/// many-core machines; `alloc` of twice this exceeds it.
const LIMIT_MIB: u64 = 512;

async fn start() -> Gateway {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\ndata_dir = \"{data}\"\n[[upstreams]]\nname = \"lim\"\ncommand = [\"{}\", \"--transport\", \"stdio\"]\nretries = 0\nlimits = {{ memory = \"{LIMIT_MIB}MiB\", open_files = 256 }}\n",
        fake_bin().display(),
        data = dir.path().join("data").display()
    );
    let config = dir.path().join("switchboard.toml");
    std::fs::write(&config, toml).unwrap();
    let bin = std::env::var_os("SWITCHBOARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard")));
    // Waited for in Gateway's Drop.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..500 {
        if let Ok(r) = reqwest::get(format!("{base}/health")).await {
            let body = r.text().await.unwrap_or_default();
            if body.contains("\"status\":\"up\"") && !body.contains("\"tools\":0") {
                return Gateway {
                    child,
                    url: format!("{base}/mcp"),
                    base,
                    _dir: dir,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gateway did not become ready");
}

async fn post(http: &reqwest::Client, url: &str, sid: Option<&str>, body: Value) -> Value {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(sid) = sid {
        req = req
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25");
    }
    let text = req
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // JSON, or an SSE stream whose last data line is the response.
    let data = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("data:"))
        .map_or(text.as_str(), str::trim);
    serde_json::from_str(data).unwrap_or_else(|_| panic!("not JSON-RPC: {text}"))
}

async fn tool(http: &reqwest::Client, url: &str, sid: &str, name: &str, args: Value) -> Value {
    post(
        http,
        url,
        Some(sid),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}}),
    )
    .await
}

/// A limit line of `/proc/PID/limits`, e.g. "Max address space".
fn limit(pid: &str, name: &str) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap();
    line[name.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_child_over_its_memory_limit_dies_and_is_restarted_under_the_same_limits() {
    let gw = start().await;
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let sid = http
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init.to_string())
        .send()
        .await
        .unwrap()
        .headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let pid_of = |r: Value| {
        r["result"]["content"][0]["text"]
            .as_str()
            .map(str::to_owned)
    };

    let first = pid_of(tool(&http, &gw.url, &sid, "lim__pid", json!({})).await).unwrap();
    let bytes = (LIMIT_MIB << 20).to_string();
    assert_eq!(limit(&first, "Max address space"), bytes);
    assert_eq!(limit(&first, "Max open files"), "256");

    // Well under the limit: fine.
    let small = tool(&http, &gw.url, &sid, "lim__alloc", json!({"mib": 16})).await;
    assert_eq!(small["result"]["content"][0]["text"], "allocated 16 MiB");
    // Past it: the allocation fails, the process aborts, the call fails.
    let big = tool(
        &http,
        &gw.url,
        &sid,
        "lim__alloc",
        json!({"mib": 2 * LIMIT_MIB}),
    )
    .await;
    assert_eq!(big["error"]["code"], -32010, "{big}");

    let mut second = None;
    for _ in 0..1000 {
        let r = tool(&http, &gw.url, &sid, "lim__pid", json!({})).await;
        if let Some(pid) = pid_of(r).filter(|p| *p != first) {
            second = Some(pid);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = second.expect("the supervisor did not restart the process");
    assert_eq!(limit(&second, "Max address space"), bytes);
    let health = reqwest::get(format!("{}/health", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["upstreams"][0]["restarts"], 1, "{health}");
}
