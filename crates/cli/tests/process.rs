#![allow(clippy::unwrap_used)]
//! The real `switchboard` binary as an operator runs it: signals, draining,
//! child processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn testkit_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|d| d.parent()).unwrap().join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p switchboard-testkit` first",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(upstreams: &[&str]) -> Gateway {
    let port = free_port();
    let fake = testkit_bin("switchboard-fake-upstream");
    let dir = tempfile::tempdir().unwrap();
    // Each gateway its own store: the tests run in parallel.
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndrain_timeout = \"20s\"\n[store]\ndata_dir = \"{}\"\n",
        dir.path().join("data").display()
    );
    for name in upstreams {
        toml.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\ncommand = [\"{}\", \"--transport\", \"stdio\"]\n",
            fake.display()
        ));
    }
    let config = dir.path().join("switchboard.toml");
    std::fs::write(&config, toml).unwrap();
    // Waited for in Gateway's Drop (and by the tests on their success paths).
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            let body = r.text().await.unwrap_or_default();
            // Up *and* discovered: a ready upstream has a non-empty offer here.
            if body.matches("\"status\":\"up\"").count() == upstreams.len()
                && !body.contains("\"tools\":0")
            {
                return Gateway {
                    child,
                    base,
                    _dir: dir,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gateway did not become ready");
}

/// Direct children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|f| f.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// A process that is gone or a zombie no longer runs.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..1500 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gateway did not exit after SIGTERM");
}

async fn session(http: &reqwest::Client, url: &str) -> String {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#)
        .send()
        .await
        .unwrap();
    r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn sigterm_stops_every_child_process_and_exits_cleanly() {
    let mut gw = start(&["a", "b", "c"]).await;
    let pid = gw.child.id();
    let kids = children(pid);
    assert_eq!(kids.len(), 3, "one process per stdio upstream");
    sigterm(pid);
    let status = wait_exit(&mut gw.child).await;
    assert!(status.success(), "exit status {status:?}");
    for kid in kids {
        assert!(!running(kid), "child {kid} outlived the gateway");
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish_before_exit() {
    let mut gw = start(&["a"]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/mcp", gw.base);
    let sid = session(&http, &url).await;
    let call = {
        let (http, url, sid) = (http.clone(), url.clone(), sid.clone());
        tokio::spawn(async move {
            http.post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", sid)
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__slow","arguments":{"ms":1500}}}"#)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    sigterm(gw.child.id());
    let body = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("call hung")
        .unwrap();
    assert!(
        body.contains("\"result\""),
        "in-flight call was cut off: {body}"
    );
    assert!(wait_exit(&mut gw.child).await.success());
}
