//! The health checker: pings a Ready connection on an interval and declares
//! it unresponsive after consecutive failures.
//!
//! A process that is alive but wedged (deadlocked, stopped, stuck in a
//! syscall) never closes its pipes or sockets, so the supervisor alone would
//! wait on it forever while every call times out. Pings notice; the
//! supervisor then replaces the connection through its normal path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::deadline::Budget;
use crate::supervisor::Connection;
use crate::{CallError, CallOptions};

/// Consecutive failed pings after which a connection is replaced: one lost
/// ping is noise, three in a row is a dead or wedged server.
pub(crate) const FAILURES_BEFORE_UNRESPONSIVE: u32 = 3;
/// Longest wait for one ping; shorter when the interval is shorter, so a
/// ping ends before the next one is due.
const MAX_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of one upstream's health, as [`Upstream::health_stats`] reports
/// them.
///
/// [`Upstream::health_stats`]: crate::Upstream::health_stats
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthStats {
    /// Pings answered in time (an error answer counts: the server is alive).
    pub pings_ok: u64,
    /// Pings that timed out or could not be sent.
    pub pings_failed: u64,
    /// Times the supervisor re-established the connection after the first
    /// (after a crash, a lost connection or an unresponsive verdict).
    pub restarts: u64,
    /// Round-trip time of the last ping answered in time.
    pub last_ping: Option<Duration>,
}

/// The live counters behind [`HealthStats`], shared by the supervisor, the
/// pinger and the request path.
#[derive(Debug)]
pub(crate) struct HealthCounters {
    pings_ok: AtomicU64,
    pings_failed: AtomicU64,
    restarts: AtomicU64,
    /// Microseconds of the last ping's round trip, plus one; 0 = none yet.
    last_ping_us: AtomicU64,
    /// Origin of `last_answer_us`.
    epoch: Instant,
    /// Microseconds after `epoch`, plus one, of the last answer to a
    /// forwarded request; 0 = none yet. Answers prove liveness, so pings
    /// are skipped while traffic flows.
    last_answer_us: AtomicU64,
}

impl Default for HealthCounters {
    fn default() -> Self {
        Self {
            pings_ok: AtomicU64::new(0),
            pings_failed: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            last_ping_us: AtomicU64::new(0),
            epoch: Instant::now(),
            last_answer_us: AtomicU64::new(0),
        }
    }
}

impl HealthCounters {
    pub(crate) fn snapshot(&self) -> HealthStats {
        let last = self.last_ping_us.load(Ordering::Relaxed);
        HealthStats {
            pings_ok: self.pings_ok.load(Ordering::Relaxed),
            pings_failed: self.pings_failed.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_ping: last.checked_sub(1).map(Duration::from_micros),
        }
    }

    pub(crate) fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that the upstream answered a forwarded request.
    pub(crate) fn record_answer(&self) {
        let us = micros(self.epoch.elapsed()).saturating_add(1);
        self.last_answer_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Whether the upstream answered a request within the last `window`.
    fn answered_within(&self, window: Duration) -> bool {
        match self.last_answer_us.load(Ordering::Relaxed).checked_sub(1) {
            None => false,
            Some(at) => micros(self.epoch.elapsed()).saturating_sub(at) < micros(window),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Pings `conn` every `interval` until it fails
/// [`FAILURES_BEFORE_UNRESPONSIVE`] times in a row; returns the reason to
/// report. Never returns while the connection stays healthy; the supervisor
/// drops this future when the connection ends for another reason.
pub(crate) async fn watch(
    conn: &Connection,
    interval: Duration,
    counters: &HealthCounters,
) -> String {
    let timeout = interval.min(MAX_PING_TIMEOUT);
    // The first ping comes one interval after Ready: the handshake has just
    // proved liveness. `Delay` keeps pings an interval apart even after a
    // slow one, rather than firing missed ticks in a burst.
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures = 0;
    loop {
        ticks.tick().await;
        if counters.answered_within(interval) {
            failures = 0;
            continue;
        }
        let sent = Instant::now();
        let outcome = conn
            .request(
                "ping",
                None,
                &CallOptions::default(),
                Budget::fixed(timeout),
            )
            .await;
        match outcome {
            // An error answer still comes from a live server.
            Ok(_) | Err(CallError::Rpc { .. }) => {
                counters.pings_ok.fetch_add(1, Ordering::Relaxed);
                let rtt = micros(sent.elapsed()).saturating_add(1);
                counters.last_ping_us.store(rtt, Ordering::Relaxed);
                failures = 0;
            }
            Err(e) => {
                counters.pings_failed.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                tracing::warn!(upstream = %e.upstream(), error = %e, failures, "health ping failed");
                if failures >= FAILURES_BEFORE_UNRESPONSIVE {
                    return format!("unresponsive: {failures} pings failed (last: {e})");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchboard_protocol::{decode_message, empty_object, encode_result, Message};
    use tokio::sync::mpsc;

    use super::*;
    use crate::peer::{test_peer, Peer};

    const SECOND: Duration = Duration::from_secs(1);

    /// Plays a server that answers the first `answers` pings, then hangs.
    fn answer_pings(peer: Arc<Peer>, mut wire: mpsc::Receiver<Vec<u8>>, answers: usize) {
        tokio::spawn(async move {
            let mut answered = 0;
            while let Some(bytes) = wire.recv().await {
                if let Ok(Message::Request(r)) = decode_message(&bytes) {
                    assert_eq!(r.method, "ping");
                    if answered < answers {
                        answered += 1;
                        peer.handle_message(&encode_result(&r.id, &empty_object()));
                    }
                }
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn three_failed_pings_in_a_row_make_a_connection_unresponsive() {
        let (peer, wire) = test_peer();
        answer_pings(peer.clone(), wire, 2);
        let counters = HealthCounters::default();
        let start = Instant::now();
        let reason = watch(&Connection::Peer(peer), SECOND, &counters).await;
        assert!(
            reason.starts_with("unresponsive: 3 pings failed"),
            "{reason}"
        );
        let stats = counters.snapshot();
        assert_eq!((stats.pings_ok, stats.pings_failed), (2, 3), "{stats:?}");
        assert_eq!(stats.last_ping, Some(Duration::ZERO));
        // Pings go out every interval (a timeout is at most one interval):
        // answered at 1 s and 2 s, lost at 3, 4 and 5 s; the last one's
        // timeout ends the watch at 6 s.
        assert_eq!(start.elapsed(), SECOND * 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recent_answer_skips_the_ping() {
        let (peer, wire) = test_peer();
        // A server that would fail every ping...
        answer_pings(peer.clone(), wire, 0);
        let counters = Arc::new(HealthCounters::default());
        // ...while forwarded requests keep being answered.
        let traffic = counters.clone();
        tokio::spawn(async move {
            loop {
                traffic.record_answer();
                tokio::time::sleep(SECOND / 2).await;
            }
        });
        let watched = tokio::time::timeout(
            SECOND * 30,
            watch(&Connection::Peer(peer), SECOND, &counters),
        )
        .await;
        assert!(watched.is_err(), "declared unresponsive: {watched:?}");
        assert_eq!(counters.snapshot(), HealthStats::default());
    }
}
