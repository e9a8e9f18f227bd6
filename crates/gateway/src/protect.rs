//! The protection every forwarded call passes through, per upstream:
//! circuit breaker (outermost), bulkhead, then the call; safe calls are
//! retried with backoff inside a retry budget.
//!
//! The order is written once, here: a breaker that is open refuses before a
//! call takes a bulkhead slot, and each retry goes through the breaker again.

use parking_lot::Mutex;
use serde_json::json;
use std::collections::VecDeque;
use std::time::Duration;
use switchboard_config::UpstreamConfig;
use switchboard_protocol::{code, ErrorObject, RawValue};
use switchboard_resilience::ConfigError;
use switchboard_resilience::{
    Breaker, BreakerConfig, BreakerState, Bulkhead, BulkheadConfig, RetryBudget, RetryBudgetConfig,
    RetryPolicy,
};
use switchboard_telemetry::{BreakerCall, Metrics};
use switchboard_upstream::{CallError, CallOptions, Upstream};

/// How long a call may wait for a bulkhead slot before it is refused.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// Recent call latencies kept per upstream for `/health` percentiles.
const LATENCY_SAMPLES: usize = 512;

#[derive(Debug)]
pub(crate) struct Protection {
    pub(crate) breaker: Breaker,
    bulkhead: Bulkhead,
    budget: RetryBudget,
    retry: RetryPolicy,
    /// The last `LATENCY_SAMPLES` call durations, oldest first.
    latencies: Mutex<VecDeque<Duration>>,
}

/// Latency percentiles of an upstream's recent calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Percentiles {
    pub(crate) samples: usize,
    pub(crate) p50: Duration,
    pub(crate) p95: Duration,
    pub(crate) p99: Duration,
}

impl Protection {
    /// Builds the protection of one upstream from its validated config.
    pub(crate) fn new(cfg: &UpstreamConfig) -> Result<Self, ConfigError> {
        let b = &cfg.breaker;
        Ok(Self {
            breaker: Breaker::new(BreakerConfig {
                consecutive_failures: b.consecutive_failures,
                failure_rate: b.failure_rate,
                window: b.window,
                min_calls: b.min_calls,
                open_base: b.open_base,
                open_max: b.open_max,
                half_open_trials: b.half_open_trials,
                half_open_successes: b.half_open_trials,
            })?,
            bulkhead: Bulkhead::new(BulkheadConfig {
                max_in_flight: cfg.max_in_flight,
                max_queued: cfg.max_queued,
                max_wait: MAX_QUEUE_WAIT,
            })?,
            budget: RetryBudget::new(RetryBudgetConfig::default())?,
            retry: RetryPolicy {
                attempts: cfg.retries + 1,
                ..RetryPolicy::default()
            },
            latencies: Mutex::new(VecDeque::with_capacity(LATENCY_SAMPLES)),
        })
    }

    fn observe(&self, elapsed: Duration) {
        let mut l = self.latencies.lock();
        if l.len() == LATENCY_SAMPLES {
            l.pop_front();
        }
        l.push_back(elapsed);
    }

    /// Percentiles over the recent calls; `None` before the first call.
    pub(crate) fn percentiles(&self) -> Option<Percentiles> {
        let mut v: Vec<Duration> = self.latencies.lock().iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Percentiles {
            samples: v.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        })
    }

    /// Forwards one call. `safe` says the method may be repeated (reads, and
    /// tools the upstream marks read-only or idempotent).
    pub(crate) async fn call(
        &self,
        metrics: &Metrics,
        upstream: &Upstream,
        method: &str,
        params: Box<RawValue>,
        options: CallOptions,
        safe: bool,
    ) -> Result<Box<RawValue>, ErrorObject> {
        if !safe || self.retry.attempts <= 1 {
            let result = self
                .attempt(metrics, upstream, method, params, options)
                .await;
            // Every success funds the retry budget, not only those of safe calls.
            if result.is_ok() {
                self.budget.deposit();
            }
            return result.map_err(|a| a.error);
        }
        // `retry` deposits on success itself.
        switchboard_resilience::retry(
            &self.retry,
            &self.budget,
            |a: &Attempt| a.retryable,
            || self.attempt(metrics, upstream, method, params.clone(), options.clone()),
        )
        .await
        .map_err(|a| a.error)
    }

    async fn attempt(
        &self,
        metrics: &Metrics,
        upstream: &Upstream,
        method: &str,
        params: Box<RawValue>,
        options: CallOptions,
    ) -> Result<Box<RawValue>, Attempt> {
        let name = upstream.name();
        let permit = match self.breaker.try_acquire() {
            Ok(p) => p,
            Err(rejected) => {
                metrics.record_breaker_call(name, BreakerCall::Rejected);
                return Err(Attempt {
                    error: ErrorObject::new(
                        code::UPSTREAM_UNAVAILABLE,
                        format!("upstream {name:?} is failing and not called: {rejected}"),
                    )
                    .with_data(json!({
                        "upstream": name,
                        "retryInMs": u64::try_from(rejected.retry_in.as_millis()).unwrap_or(u64::MAX),
                    })),
                    retryable: false,
                });
            }
        };
        let slot = self
            .bulkhead
            .acquire()
            .await
            .map_err(|overloaded| Attempt {
                error: ErrorObject::new(
                    code::OVERLOADED,
                    format!("upstream {name:?} is {overloaded}"),
                )
                .with_data(json!({ "upstream": name })),
                retryable: false,
            })?;
        let started = tokio::time::Instant::now();
        let result = upstream.request(method, Some(params), options).await;
        drop(slot);
        let elapsed = started.elapsed();
        self.observe(elapsed);
        // The upstream answered: only its internal errors say it is unwell.
        let healthy = match &result {
            Ok(_) => true,
            Err(CallError::Rpc { error, .. }) => error.code != code::INTERNAL_ERROR,
            _ => false,
        };
        match &result {
            Err(CallError::Cancelled { .. }) => drop(permit),
            _ if healthy => {
                permit.success();
                metrics.record_breaker_call(name, BreakerCall::Success(elapsed));
            }
            _ => {
                permit.failure();
                metrics.record_breaker_call(name, BreakerCall::Failure(elapsed));
            }
        }
        result.map_err(|e| Attempt {
            retryable: e.retryable(),
            error: e.to_error_object(),
        })
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.breaker.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_the_recent_window_only() {
        let cfg = switchboard_config::parse("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]", "t")
            .unwrap();
        let p = Protection::new(&cfg.upstreams[0]).unwrap();
        assert_eq!(p.percentiles(), None);
        for ms in 1..=100u64 {
            p.observe(Duration::from_millis(ms));
        }
        let q = p.percentiles().unwrap();
        assert_eq!(
            (q.samples, q.p50, q.p99),
            (100, Duration::from_millis(51), Duration::from_millis(99))
        );
        for _ in 0..LATENCY_SAMPLES {
            p.observe(Duration::from_millis(7));
        }
        let q = p.percentiles().unwrap();
        assert_eq!(
            (q.samples, q.p50, q.p99),
            (
                LATENCY_SAMPLES,
                Duration::from_millis(7),
                Duration::from_millis(7)
            )
        );
    }
}

/// One failed attempt and whether trying again could help.
#[derive(Debug)]
struct Attempt {
    error: ErrorObject,
    retryable: bool,
}
