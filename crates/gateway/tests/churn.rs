#![allow(unreachable_pub, clippy::unwrap_used, dead_code)]
//! Proof that the gateway leaks no child process: hundreds of downstream
//! sessions opened and closed against a `per_session` and a shared stdio
//! upstream, crash/restart cycles of both, then a gateway shutdown.
//!
//! A binary of its own, with one test: the counts it checks
//! ([`switchboard_upstream::live_processes`], this process's children in
//! `/proc`) are process-wide, so no other test may spawn processes beside it.

#[path = "it/harness.rs"]
mod harness;

use harness::{eventually, testkit_bin, Client, TestGateway};
use serde_json::json;
use switchboard_upstream::live_processes;

/// Sessions opened and closed in the churn phase.
const SESSIONS: usize = 300;
/// Sessions open at once during the churn.
const CONCURRENT: usize = 10;
/// Crash/restart cycles of each upstream.
const CRASHES: usize = 3;
/// The kernel keeps 15 bytes of a command name.
const FAKE_COMM: &str = "switchboard-fak";

/// A fake stdio upstream entry; `FAKE_UPSTREAM_BIN` overrides the binary
/// built next to this test.
fn fake_stdio(name: &str, extra: &str) -> String {
    let bin = std::env::var_os("FAKE_UPSTREAM_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| testkit_bin("switchboard-fake-upstream"));
    format!(
        "[[upstreams]]\nname = \"{name}\"\ncommand = [\"{}\", \"--transport\", \"stdio\", \"--name\", \"{name}\"]\n{extra}\n",
        bin.display()
    )
}

/// Pids of this process's children (zombies included) that are fake
/// upstreams.
fn fake_children() -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may end between listing and reading.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) && &stat[open + 1..close] == FAKE_COMM {
            found.push(pid);
        }
    }
    found
}

/// The `upstream_processes` gauge as `/metrics` shows it.
async fn gauge(gw: &TestGateway) -> usize {
    let text = gw.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix("upstream_processes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no upstream_processes in {text}"))
}

async fn delete(client: &Client) {
    let status = client
        .http
        .delete(&client.url)
        .header("mcp-session-id", client.session.as_deref().unwrap())
        .header("mcp-protocol-version", &client.version)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "DELETE answered {status}");
}

/// Calls `tool` (which answers its pid) until it succeeds with a pid other
/// than `old`: the upstream was restarted after a crash.
async fn pid_after(client: &Client, tool: &str, old: Option<&str>) -> String {
    for id in 0..1000 {
        let r = client.tool(1000 + id, tool, json!({})).await;
        if let Some(pid) = r.response()["result"]["content"][0]["text"].as_str() {
            if Some(pid) != old {
                return pid.to_owned();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{tool} never answered with a pid other than {old:?}");
}

/// Waits until every count is back to `expected`, then checks all three.
async fn settle_at(gw: &TestGateway, expected: usize, when: &str) {
    let settled = eventually(1000, || async {
        live_processes() == expected && fake_children().len() == expected
    })
    .await;
    assert!(
        settled,
        "{when}: live_processes {} and /proc children {:?}, expected {expected}",
        live_processes(),
        fake_children()
    );
    assert_eq!(gauge(gw).await, expected, "{when}: metric");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_churn_and_crash_loops_leave_no_process_behind() {
    assert_eq!(live_processes(), 0);
    // Crashes are the point here: the breaker must not stop the calls.
    let keep_calling = "retries = 0\nbreaker = { consecutive_failures = 1000, min_calls = 1000 }";
    let toml = format!(
        "{}{}",
        fake_stdio("shared", keep_calling),
        fake_stdio(
            "solo",
            &format!("pool = \"per_session\"\nmax_instances = {CONCURRENT}\n{keep_calling}")
        ),
    );
    let gw = TestGateway::start(&toml).await;
    // The shared process and the per-session upstream's template.
    let baseline = 2;
    settle_at(&gw, baseline, "at start").await;

    // Churn: SESSIONS sessions, CONCURRENT at a time, each using both.
    let mut peak = baseline;
    let url = gw.url();
    for _ in 0..SESSIONS / CONCURRENT {
        // Checked per batch, whose processes all live at once: pids of
        // processes from earlier batches may be reused by the kernel.
        let mut pids = std::collections::HashSet::new();
        let clients = futures::future::join_all(
            (0..CONCURRENT).map(|_| Client::connect(&url, "2025-11-25", json!({}))),
        )
        .await;
        let answers = futures::future::join_all(clients.iter().map(|c| async move {
            let shared = c.tool(1, "shared__echo", json!({"text": "hi"})).await;
            assert_eq!(shared.result()["content"][0]["text"], "hi");
            c.tool(2, "solo__pid", json!({})).await
        }))
        .await;
        for a in &answers {
            pids.insert(
                a.result()["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(pids.len(), CONCURRENT, "one process per session");
        // Processes of ended sessions may still be stopping: only the
        // return to the baseline below is a verdict; the peak is reported.
        peak = peak.max(live_processes());
        futures::future::join_all(clients.iter().map(delete)).await;
    }
    settle_at(&gw, baseline, "after the churn").await;

    // Crash/restart cycles: the shared process, and a session's own one.
    let client = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
    let mut shared_pid = pid_after(&client, "shared__pid", None).await;
    let mut solo_pid = pid_after(&client, "solo__pid", None).await;
    for _ in 0..CRASHES {
        let _ = client.tool(3, "shared__crash", json!({})).await;
        let _ = client.tool(4, "solo__crash", json!({})).await;
        shared_pid = pid_after(&client, "shared__pid", Some(&shared_pid)).await;
        solo_pid = pid_after(&client, "solo__pid", Some(&solo_pid)).await;
        assert_eq!(live_processes(), baseline + 1, "crashed processes reaped");
    }
    // A session that ends while its process is down (waiting to restart).
    let _ = client.tool(5, "solo__crash", json!({})).await;
    delete(&client).await;
    settle_at(&gw, baseline, "after the crash cycles").await;
    let health = gw.health().await;
    for u in health["upstreams"].as_array().unwrap() {
        assert!(
            u["restarts"].as_u64().unwrap() >= CRASHES as u64,
            "restarts counted: {u}"
        );
    }
    println!("churn: {SESSIONS} sessions opened and closed; processes baseline {baseline}, peak {peak}, after {baseline}");

    gw.stop().await;
    assert!(
        eventually(500, || async {
            live_processes() == 0 && fake_children().is_empty()
        })
        .await,
        "after shutdown: live_processes {} and /proc children {:?}",
        live_processes(),
        fake_children()
    );
}
