//! The idle-memory probe: what N open but quiet sessions cost the server in resident memory.
//!
//! Sessions are opened over a few connections that are then closed, so the server holds session
//! state only, no sockets: the shape of many agents that connected once and went quiet.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::http::Endpoint;
use crate::load;
use crate::process;

/// How long to let the server settle (deferred frees, lazily spawned tasks) before reading RSS.
const SETTLE: Duration = Duration::from_secs(2);

/// RSS of the server before and after opening the sessions.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleReport {
    pub(crate) sessions: usize,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
}

impl IdleReport {
    /// Returns the growth per session in KiB.
    pub(crate) fn per_session_kib(&self) -> f64 {
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 / self.sessions.max(1) as f64
    }
}

/// Opens `sessions` sessions at `url` and reads `pid`'s RSS before and after.
pub(crate) async fn run(url: &str, sessions: usize, pid: u32) -> Result<IdleReport> {
    let endpoint = Endpoint::resolve(url).await?;
    let rss_before_kib = process::rss_kib(pid)?;
    // The handles are dropped on purpose: the sessions stay open on the server, idle.
    let _opened = load::open_sessions(&endpoint, sessions, crate::mcp::Era::Legacy).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_after_kib = process::rss_kib(pid)?;
    Ok(IdleReport {
        sessions,
        rss_before_kib,
        rss_after_kib,
    })
}

/// Prints a report in the plain form `idle` uses on a terminal.
pub(crate) fn print(report: &IdleReport) {
    println!("rss before: {} KiB", report.rss_before_kib);
    println!(
        "rss after {} idle sessions: {} KiB ({:.1} KiB per session)",
        report.sessions,
        report.rss_after_kib,
        report.per_session_kib()
    );
}
