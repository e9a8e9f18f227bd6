//! Health checks: pings while Ready, and replacement of a connection whose
//! server stopped answering (made to hang with SIGSTOP).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use switchboard_config::{HttpConfig, TransportConfig, UpstreamConfig};
use switchboard_upstream::{Backoff, CallOptions, EventKind, Upstream, UpstreamEvent};
use tokio::sync::mpsc;

use crate::support::*;

const INTERVAL: Duration = Duration::from_millis(200);

/// Reconnects quickly, so a replaced connection is back within the test.
const FAST: Backoff = Backoff {
    start: Duration::from_millis(100),
    max: Duration::from_millis(400),
    reset_after: Duration::from_secs(60),
};

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), signal).unwrap();
}

async fn started_fast(cfg: UpstreamConfig) -> (Upstream, mpsc::Receiver<UpstreamEvent>) {
    let (tx, rx) = mpsc::channel(64);
    let up = Upstream::start_with(cfg, tx, FAST);
    up.ready(SOON).await.expect("upstream ready");
    (up, rx)
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stdio_a_healthy_upstream_is_pinged_and_kept() {
    let mut cfg = fake("a", &[]);
    cfg.health_check_interval = Some(Duration::from_millis(100));
    let (up, _events) = started(cfg).await;
    let pid = up.process_id().expect("stdio pid");
    eventually("3 pings answered", || up.health_stats().pings_ok >= 3).await;
    let stats = up.health_stats();
    assert_eq!(stats.pings_failed, 0, "{stats:?}");
    assert_eq!(stats.restarts, 0, "{stats:?}");
    assert!(stats.last_ping.is_some(), "{stats:?}");
    assert_eq!(up.process_id(), Some(pid), "same process");
    assert!(alive(pid));
    up.shutdown().await;
    assert_eq!(up.process_id(), None);
}

#[tokio::test]
async fn without_an_interval_nothing_is_pinged() {
    let (up, _events) = started(fake("a", &[])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.health_stats(), Default::default());
    up.shutdown().await;
}

#[tokio::test]
async fn stdio_a_hung_upstream_is_declared_unresponsive_and_restarted() {
    let mut cfg = fake("a", &[]);
    cfg.health_check_interval = Some(INTERVAL);
    let (up, mut events) = started_fast(cfg).await;
    let old = up.process_id().expect("stdio pid");
    signal(old, Signal::SIGSTOP);
    let down = wait_event(
        &mut events,
        "unresponsive down",
        |k| matches!(k, EventKind::Down(r) if r.contains("unresponsive")),
    )
    .await;
    let EventKind::Down(reason) = down else {
        unreachable!()
    };
    assert!(reason.contains("unresponsive: 3 pings failed"), "{reason}");
    // Harmless if it is already gone; resumes it if it is not.
    let _ = kill(Pid::from_raw(i32::try_from(old).unwrap()), Signal::SIGCONT);
    wait_event(&mut events, "ready", |k| matches!(k, EventKind::Ready(_))).await;
    let new = up.process_id().expect("new pid");
    assert_ne!(new, old);
    eventually("old process gone", || !alive(old)).await;
    let text = call_text(&up, "echo", json!({"text": "back"}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(text, "back");
    let stats = up.health_stats();
    assert_eq!(stats.restarts, 1, "{stats:?}");
    assert!(stats.pings_failed >= 3, "{stats:?}");
    up.shutdown().await;
}

#[tokio::test]
async fn http_a_hung_upstream_is_dropped_and_the_session_re_established() {
    let server = FakeHttp::start(&[]).await;
    let mut cfg = config(
        "h",
        TransportConfig::StreamableHttp(HttpConfig {
            url: server.url(),
            headers: vec![],
            oauth: None,
        }),
    );
    cfg.health_check_interval = Some(INTERVAL);
    // Reconnection attempts against the hung server fail fast.
    cfg.connect_timeout = Duration::from_millis(500);
    let (up, mut events) = started_fast(cfg).await;
    assert_eq!(up.process_id(), None, "no child for http");
    signal(server.pid(), Signal::SIGSTOP);
    let down = wait_event(
        &mut events,
        "unresponsive down",
        |k| matches!(k, EventKind::Down(r) if r.contains("unresponsive")),
    )
    .await;
    let EventKind::Down(reason) = down else {
        unreachable!()
    };
    assert!(reason.contains("unresponsive: 3 pings failed"), "{reason}");
    signal(server.pid(), Signal::SIGCONT);
    wait_event(&mut events, "ready", |k| matches!(k, EventKind::Ready(_))).await;
    let text = call_text(&up, "echo", json!({"text": "back"}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(text, "back");
    assert_eq!(up.health_stats().restarts, 1);
    up.shutdown().await;
}
