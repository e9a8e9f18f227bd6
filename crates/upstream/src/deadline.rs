//! How long one forwarded request may take, and the wait that enforces it.
//!
//! The MCP spec lets a request's timeout restart when progress for it
//! arrives, and asks for a hard maximum so a server that reports progress
//! forever cannot hold a call forever. Both transports race their exchange
//! against [`race`], which implements exactly that.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The time allowed to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Allowed without news from the upstream; restarts on progress.
    pub(crate) timeout: Duration,
    /// Hard cap from the request's start, however much progress arrives.
    /// A `timeout` longer than this is kept whole (the cap only limits
    /// extensions), so an explicit per-call timeout is never cut short.
    pub(crate) max: Duration,
}

impl Budget {
    /// A budget that progress cannot extend (handshakes, pings).
    pub(crate) fn fixed(timeout: Duration) -> Self {
        Self {
            timeout,
            max: timeout,
        }
    }
}

/// Where a request's deadline stands.
#[derive(Debug)]
pub(crate) struct Deadline {
    start: Instant,
    timeout: Duration,
    cap: Instant,
    at: Instant,
}

impl Deadline {
    pub(crate) fn new(budget: Budget) -> Self {
        let start = Instant::now();
        Self {
            start,
            timeout: budget.timeout,
            cap: start + budget.max.max(budget.timeout),
            at: start + budget.timeout,
        }
    }

    /// Restarts the timeout from now, never past the cap.
    pub(crate) fn extend(&mut self) {
        self.at = (Instant::now() + self.timeout).min(self.cap);
    }

    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// The time the request was given in the end, for the error message:
    /// computed from the deadline rather than measured, so it states the
    /// rule that fired (`timeout`, or the cap) rather than scheduling noise.
    pub(crate) fn allowed(&self) -> Duration {
        self.at - self.start
    }
}

/// Recognises progress for one request on a transport that delivers it
/// already associated with the request (Streamable HTTP), and wakes [`race`].
#[derive(Debug)]
pub(crate) struct ProgressWatch {
    /// The request's `_meta.progressToken`.
    token: serde_json::Value,
    pub(crate) notify: Notify,
}

impl ProgressWatch {
    /// Returns a watch when the request's params carry a progress token.
    pub(crate) fn for_params(params: Option<&serde_json::value::RawValue>) -> Option<Self> {
        Some(Self {
            token: crate::route::progress_token(params, true)?,
            notify: Notify::new(),
        })
    }

    /// Wakes the waiting request when `n` is progress with its token (a
    /// server may echo a foreign token; that restarts nothing).
    pub(crate) fn observe(&self, n: &switchboard_protocol::Notification) {
        if n.method == "notifications/progress"
            && crate::route::progress_token(n.params.as_deref(), false).as_ref()
                == Some(&self.token)
        {
            self.notify.notify_one();
        }
    }
}

/// Why [`race`] gave up on an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Cancelled,
    /// The deadline passed; carries the time the request was allowed.
    TimedOut(Duration),
}

/// Runs `exchange` until it ends, `cancel` fires or the deadline passes.
/// Each wake-up of `progress` (progress for this request arrived) restarts
/// the timeout within the budget's cap.
pub(crate) async fn race<T>(
    exchange: impl Future<Output = T>,
    cancel: &CancellationToken,
    budget: Budget,
    progress: Option<&Notify>,
) -> Result<T, Stop> {
    let mut deadline = Deadline::new(budget);
    tokio::pin!(exchange);
    loop {
        let on_progress = async {
            match progress {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut exchange => return Ok(r),
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            _ = tokio::time::sleep_until(deadline.at()) => {
                return Err(Stop::TimedOut(deadline.allowed()));
            }
            _ = on_progress => deadline.extend(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn budget(timeout: u64, max: u64) -> Budget {
        Budget {
            timeout: MS * timeout as u32,
            max: MS * max as u32,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_progress_the_plain_timeout_fires() {
        let progress = Notify::new();
        let r = race(
            std::future::pending::<()>(),
            &CancellationToken::new(),
            budget(300, 10_000),
            Some(&progress),
        )
        .await;
        assert_eq!(r, Err(Stop::TimedOut(MS * 300)));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_timeout_until_the_work_ends() {
        let progress = std::sync::Arc::new(Notify::new());
        let beat = progress.clone();
        // Progress every 100 ms for 1 s, then the answer.
        let work = async move {
            for _ in 0..10 {
                tokio::time::sleep(MS * 100).await;
                beat.notify_one();
            }
            "done"
        };
        let r = race(
            work,
            &CancellationToken::new(),
            budget(300, 10_000),
            Some(&progress),
        )
        .await;
        assert_eq!(r, Ok("done"));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_never_extends_past_the_cap() {
        let progress = std::sync::Arc::new(Notify::new());
        let beat = progress.clone();
        let work = async move {
            loop {
                tokio::time::sleep(MS * 100).await;
                beat.notify_one();
            }
        };
        let start = Instant::now();
        let r = race(
            work,
            &CancellationToken::new(),
            budget(300, 1000),
            Some(&progress),
        )
        .await;
        assert_eq!(r, Err(Stop::TimedOut(MS * 1000)));
        assert_eq!(start.elapsed(), MS * 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_longer_than_the_cap_is_kept_whole() {
        let r = race(
            std::future::pending::<()>(),
            &CancellationToken::new(),
            budget(2000, 1000),
            None,
        )
        .await;
        assert_eq!(r, Err(Stop::TimedOut(MS * 2000)));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_wins_over_a_pending_deadline() {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(MS * 50).await;
            c.cancel();
        });
        let r = race(
            std::future::pending::<()>(),
            &cancel,
            budget(300, 300),
            None,
        )
        .await;
        assert_eq!(r, Err(Stop::Cancelled));
    }
}
