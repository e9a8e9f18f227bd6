//! `pool = "per_session"` through the handle's API: a process per session
//! key, the template for calls without one, the cap, and stops.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard_config::{PoolPolicy, TransportConfig};
use switchboard_upstream::{CallError, CallOptions, EventKind};

use crate::support::{alive, call_text, fake, started, SOON};

fn for_session(id: &str) -> CallOptions {
    CallOptions {
        session: Some(Arc::from(id)),
        ..Default::default()
    }
}

async fn pid(up: &switchboard_upstream::Upstream, options: CallOptions) -> u32 {
    call_text(up, "pid", json!({}), options)
        .await
        .unwrap()
        .parse()
        .unwrap()
}

async fn gone(pid: u32) -> bool {
    let deadline = tokio::time::Instant::now() + SOON;
    while tokio::time::Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn session_keys_get_their_own_processes_up_to_the_cap_and_all_stop_with_the_upstream() {
    let mut cfg = fake("pooled", &["--transport", "stdio"]);
    if let TransportConfig::Stdio(s) = &mut cfg.transport {
        s.pool = PoolPolicy::PerSession {
            max_instances: 2,
            idle_timeout: Duration::from_secs(600),
        };
    }
    let (up, mut events) = started(cfg).await;
    assert!(up.is_per_session());
    let template = up.process_id().unwrap();
    assert_eq!(pid(&up, CallOptions::default()).await, template);

    let a = pid(&up, for_session("a")).await;
    let b = pid(&up, for_session("b")).await;
    assert_eq!(pid(&up, for_session("a")).await, a, "a keeps its process");
    assert!(a != b && a != template && b != template);
    assert_eq!(up.session_instances(), 2);

    let refused = call_text(&up, "pid", json!({}), for_session("c"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            CallError::PoolFull {
                max_instances: 2,
                ..
            }
        ),
        "{refused:?}"
    );

    // The session processes' events name their session.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("no Ready event from session a's process")
            .unwrap();
        if matches!(event.kind, EventKind::Ready(_)) && event.session.as_deref() == Some("a") {
            break;
        }
    }

    up.end_session("a");
    assert_eq!(up.session_instances(), 1);
    assert!(gone(a).await, "a's process outlived end_session");
    assert!(alive(b) && alive(template));
    let c = pid(&up, for_session("c")).await;

    up.shutdown().await;
    for p in [b, c, template] {
        assert!(!alive(p), "process {p} outlived shutdown");
    }
}
