//! The circuit breaker: stops calling an upstream that keeps failing, and probes it back in.
//!
//! # States
//!
//! ```text
//! Closed   ── consecutive_failures in a row, or failure_rate reached over ≥ min_calls ──▶ Open
//! Open     ── open period over (noticed by the next try_acquire or state) ─────────────▶ HalfOpen
//! HalfOpen ── half_open_successes trial calls succeeded ────────────────────────────────▶ Closed
//! HalfOpen ── any trial call failed ─────────────────────────────────▶ Open (period doubles)
//! any      ── reset ────────────────────────────────────────────────────────────────────▶ Closed
//! ```
//!
//! - The open period is `open_base × 2^(trips − 1)`, capped at `open_max`, where `trips` counts
//!   trips since the breaker last closed through a successful probe cycle (or `reset`).
//! - Open → HalfOpen happens lazily, on the first `try_acquire` or `state` after the open period:
//!   the breaker owns no timer task, so it costs nothing while idle and needs no shutdown.
//! - Every transition starts a new *generation*. A permit carries the generation it was issued
//!   in, and its verdict is ignored if the breaker has moved on since: a slow call admitted while
//!   closed must not count as a half-open trial, and calls in flight across `reset` must not
//!   re-trip the freshly reset breaker.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{ConfigError, RejectReason, Rejected};
use crate::window::SlidingWindow;

/// Thresholds for one upstream's breaker. The defaults suit a typical MCP upstream; see each
/// field and the crate README.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. Catches a hard-down upstream quickly, even
    /// at low traffic where the rate rule never reaches `min_calls`. Default 5.
    pub consecutive_failures: u32,
    /// Failure rate, in (0, 1], that opens the breaker once `min_calls` calls ended within
    /// `window`; the breaker opens when the rate reaches or exceeds it. Catches a flaky upstream
    /// whose failures never line up. Default 0.5.
    pub failure_rate: f64,
    /// Span of the time-based sliding window for the failure rate. Time-based rather than
    /// count-based so that failures age out on a quiet upstream instead of lingering until
    /// enough new calls push them out. It slides in tenths, so a verdict counts for 90–100 % of
    /// the span. Default 30 s.
    pub window: Duration,
    /// Calls (successes + failures) the window must hold before the rate rule applies, so that
    /// 1 failure out of 2 calls does not count as a 50 % failure rate. Default 20.
    pub min_calls: u32,
    /// Open period after the first trip. Default 5 s.
    pub open_base: Duration,
    /// Cap on the open period, which doubles on each trip without a successful probe cycle in
    /// between. Default 5 min.
    pub open_max: Duration,
    /// Trial calls admitted at once while half-open: enough to gather evidence quickly without
    /// sending a burst to an upstream that may still be down. Default 3.
    pub half_open_trials: u32,
    /// Successful trial calls that close the breaker; one failure reopens it. May exceed
    /// `half_open_trials`, in which case trials run in several rounds. Default 3.
    pub half_open_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_calls: 20,
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(300),
            half_open_trials: 3,
            half_open_successes: 3,
        }
    }
}

impl BreakerConfig {
    /// Checks that every threshold can be met and every duration is positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, requirement| Err(ConfigError::new("breaker", field, requirement));
        if self.consecutive_failures == 0 {
            return err("consecutive_failures", "must be at least 1");
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return err("failure_rate", "must be in (0, 1]");
        }
        if self.window.is_zero() {
            return err("window", "must be positive");
        }
        if self.min_calls == 0 {
            return err("min_calls", "must be at least 1");
        }
        if self.open_base.is_zero() {
            return err("open_base", "must be positive");
        }
        if self.open_max < self.open_base {
            return err("open_max", "must be at least open_base");
        }
        if self.half_open_trials == 0 {
            return err("half_open_trials", "must be at least 1");
        }
        if self.half_open_successes == 0 {
            return err("half_open_successes", "must be at least 1");
        }
        Ok(())
    }

    /// Returns how long the breaker stays open on its `trips`-th trip since it last closed.
    fn open_period(&self, trips: u32) -> Duration {
        let factor = 2u32.saturating_pow(trips.saturating_sub(1));
        self.open_base.saturating_mul(factor).min(self.open_max)
    }
}

/// The breaker's state, as published to observers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A bounded number of trial calls go through to test the upstream.
    HalfOpen,
}

impl BreakerState {
    /// Returns the state's name in snake case, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One upstream's circuit breaker. Cloning is cheap and every clone shares the same state.
#[derive(Debug, Clone)]
pub struct Breaker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BreakerConfig,
    /// All mutable state sits under one short, non-async lock, so each decision (admit, count,
    /// transition) is atomic with respect to every other call.
    core: Mutex<Core>,
    /// Publishes each transition; written under `core`'s lock so observers see transitions in
    /// the order they happened.
    state_tx: watch::Sender<BreakerState>,
}

#[derive(Debug)]
struct Core {
    phase: Phase,
    /// Bumped on every transition; see the module docs.
    generation: u64,
    /// Trips since the breaker last closed through a probe cycle or `reset`; sets the open period.
    trips: u32,
    /// Successes and failures of calls that ended recently while closed.
    window: SlidingWindow<Tally>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    successes: u64,
    failures: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    /// The permit was dropped without a verdict: the call was cancelled, so it says nothing
    /// about the upstream's health.
    Cancelled,
}

impl Breaker {
    /// Creates a closed breaker.
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let core = Core {
            phase: Phase::Closed {
                consecutive_failures: 0,
            },
            generation: 0,
            trips: 0,
            window: SlidingWindow::new(config.window, Instant::now()),
        };
        let (state_tx, _) = watch::channel(BreakerState::Closed);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                core: Mutex::new(core),
                state_tx,
            }),
        })
    }

    /// Asks to make one call. The returned permit must be given the call's verdict with
    /// [`Permit::success`] or [`Permit::failure`]; dropping it records neither.
    pub fn try_acquire(&self) -> Result<Permit, Rejected> {
        let now = Instant::now();
        let mut core = self.inner.core.lock();
        self.inner.advance(&mut core, now);
        match &mut core.phase {
            Phase::Closed { .. } => {}
            Phase::Open { until } => {
                return Err(Rejected {
                    reason: RejectReason::Open,
                    retry_in: until.saturating_duration_since(now),
                });
            }
            Phase::HalfOpen { in_flight, .. } => {
                if *in_flight >= self.inner.config.half_open_trials {
                    return Err(Rejected {
                        reason: RejectReason::TrialsInFlight,
                        retry_in: self.inner.config.open_base,
                    });
                }
                *in_flight += 1;
            }
        }
        Ok(Permit {
            inner: Arc::clone(&self.inner),
            generation: core.generation,
            settled: false,
        })
    }

    /// Returns the current state, first moving Open to HalfOpen if the open period is over.
    pub fn state(&self) -> BreakerState {
        let mut core = self.inner.core.lock();
        self.inner.advance(&mut core, Instant::now());
        core.phase.state()
    }

    /// Closes the breaker and forgets its history (window, trip count): the operator's "the
    /// upstream is fixed". Permits issued before the reset no longer count.
    pub fn reset(&self) {
        let now = Instant::now();
        let mut core = self.inner.core.lock();
        self.inner.close(&mut core, now);
    }

    /// Returns a receiver of the breaker's state, updated on every transition. A `watch`
    /// keeps only the latest value, which is what a state gauge needs; it never blocks the
    /// breaker, however slow the observer.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.inner.state_tx.subscribe()
    }

    /// Returns the breaker's config.
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }
}

impl Inner {
    /// Applies the only transition that time alone causes: Open → HalfOpen.
    fn advance(&self, core: &mut Core, now: Instant) {
        if let Phase::Open { until } = core.phase {
            if now >= until {
                self.transition(
                    core,
                    Phase::HalfOpen {
                        in_flight: 0,
                        successes: 0,
                    },
                );
            }
        }
    }

    fn record(&self, generation: u64, verdict: Verdict) {
        let now = Instant::now();
        let mut guard = self.core.lock();
        let core = &mut *guard;
        if generation != core.generation {
            // Issued before the last transition; see the module docs.
            return;
        }
        let config = &self.config;
        match (&mut core.phase, verdict) {
            (Phase::Closed { .. }, Verdict::Cancelled) => {}
            (Phase::Closed { .. }, Verdict::Success) => {
                core.phase = Phase::Closed {
                    consecutive_failures: 0,
                };
                core.window.current(now).successes += 1;
            }
            (
                Phase::Closed {
                    consecutive_failures,
                },
                Verdict::Failure,
            ) => {
                *consecutive_failures += 1;
                let consecutive = *consecutive_failures;
                core.window.current(now).failures += 1;
                let (successes, failures) = core
                    .window
                    .live(now)
                    .fold((0u64, 0u64), |(s, f), t| (s + t.successes, f + t.failures));
                let calls = successes + failures;
                let rate_tripped = calls >= u64::from(config.min_calls)
                    && failures as f64 / calls as f64 >= config.failure_rate;
                if consecutive >= config.consecutive_failures || rate_tripped {
                    self.trip(core, now);
                }
            }
            (Phase::HalfOpen { in_flight, .. }, Verdict::Cancelled) => {
                // Free the slot so another trial can run; a cancelled trial proves nothing.
                *in_flight = in_flight.saturating_sub(1);
            }
            (
                Phase::HalfOpen {
                    in_flight,
                    successes,
                },
                Verdict::Success,
            ) => {
                *in_flight = in_flight.saturating_sub(1);
                *successes += 1;
                if *successes >= config.half_open_successes {
                    self.close(core, now);
                }
            }
            (Phase::HalfOpen { .. }, Verdict::Failure) => self.trip(core, now),
            // No permit is issued while open, so none can match an open generation.
            (Phase::Open { .. }, _) => {}
        }
    }

    fn trip(&self, core: &mut Core, now: Instant) {
        core.trips = core.trips.saturating_add(1);
        let until = now + self.config.open_period(core.trips);
        self.transition(core, Phase::Open { until });
    }

    fn close(&self, core: &mut Core, now: Instant) {
        core.trips = 0;
        // A fresh start: failures from before the outage must not re-trip the breaker.
        core.window.clear(now);
        self.transition(
            core,
            Phase::Closed {
                consecutive_failures: 0,
            },
        );
    }

    fn transition(&self, core: &mut Core, phase: Phase) {
        let from = core.phase.state();
        core.phase = phase;
        core.generation = core.generation.wrapping_add(1);
        let to = phase.state();
        tracing::debug!(%from, %to, trips = core.trips, "circuit breaker transition");
        self.state_tx.send_if_modified(|state| {
            let changed = *state != to;
            *state = to;
            changed
        });
    }
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Leave to make one call through a [`Breaker`]. Give it the call's verdict; dropping it
/// instead (the call was cancelled) counts as neither success nor failure, and frees its
/// half-open trial slot.
#[must_use = "a dropped permit records no verdict; call `success` or `failure`"]
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
    generation: u64,
    /// Set once a verdict is recorded, so `Drop` does not record a second one.
    settled: bool,
}

impl Permit {
    /// Records that the call succeeded.
    pub fn success(mut self) {
        self.settle(Verdict::Success);
    }

    /// Records that the call failed in a way that reflects on the upstream's health (the
    /// caller decides which errors those are; a client's invalid arguments are not).
    pub fn failure(mut self) {
        self.settle(Verdict::Failure);
    }

    fn settle(&mut self, verdict: Verdict) {
        if !self.settled {
            self.settled = true;
            self.inner.record(self.generation, verdict);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.settle(Verdict::Cancelled);
    }
}

#[cfg(test)]
mod tests;
