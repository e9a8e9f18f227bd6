//! Retries: when to try again (`RetryPolicy`), whether the upstream can afford it
//! (`RetryBudget`), and the loop that combines them (`retry`).
//!
//! The budget is what keeps retries from multiplying an outage: with every call failing, a
//! policy of 3 attempts alone would triple the load on a struggling upstream. The budget caps
//! retries at a fraction of recent successes plus a small floor, so during an outage retries
//! fall to the floor while healthy traffic still gets its occasional retry.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use tokio::time::Instant;

use crate::error::ConfigError;
use crate::window::SlidingWindow;

/// Exponential backoff with full jitter, and the number of attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first backoff; each further retry doubles the ceiling. Default 100 ms.
    pub base: Duration,
    /// Largest ceiling, so a long run of retries still waits a bounded time. Default 2 s.
    pub max: Duration,
    /// Attempts in all, the first call included: 1 means never retry. Default 3. (0 acts as 1:
    /// the call is always made once.)
    pub attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            attempts: 3,
        }
    }
}

impl RetryPolicy {
    /// Checks that the policy makes at least one attempt and that its backoff is positive and
    /// bounded.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, requirement| Err(ConfigError::new("retry", field, requirement));
        if self.attempts == 0 {
            return err("attempts", "must be at least 1");
        }
        if self.base.is_zero() {
            return err("base", "must be positive");
        }
        if self.max < self.base {
            return err("max", "must be at least base");
        }
        Ok(())
    }

    /// Returns how long to wait after the `attempt`-th failed attempt (1-based) before the
    /// next: uniform in `[0, min(max, base × 2^(attempt−1)))`. Full jitter, rather than a fixed
    /// or half-jittered delay, spreads the retries of many callers that failed together, so
    /// they do not return to the upstream in a synchronised wave.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_at(attempt, rand::rng().random::<f64>())
    }

    /// Returns the upper bound of `backoff(attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// `backoff` with the random draw `unit` in `[0, 1)` passed in, so tests can pin it.
    fn backoff_at(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Thresholds for a [`RetryBudget`]. The defaults are Finagle's.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudgetConfig {
    /// How long a deposit (and a withdrawal) stays on the books. Long enough to smooth bursts,
    /// short enough that yesterday's traffic does not pay for today's outage. Default 10 s.
    pub ttl: Duration,
    /// Retries allowed per second even with no successes at all, so a quiet or just-started
    /// upstream can still retry a blip. Default 10.
    pub min_per_sec: u32,
    /// Retries earned per success: 0.2 lets retries add at most 20 % to the load that succeeds.
    /// Default 0.2.
    pub ratio: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            ratio: 0.2,
        }
    }
}

impl RetryBudgetConfig {
    /// Checks that the window is positive and the ratio a finite, non-negative number.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, requirement| Err(ConfigError::new("retry budget", field, requirement));
        if self.ttl.is_zero() {
            return err("ttl", "must be positive");
        }
        if !(self.ratio.is_finite() && self.ratio >= 0.0) {
            return err("ratio", "must be a finite number of at least 0");
        }
        Ok(())
    }
}

/// Token budget shared by the retries to one upstream; cheap to clone, clones share it.
///
/// Like Finagle's and tower's `TpsBudget`: each [`deposit`](Self::deposit) adds `ratio`
/// tokens, each retry withdraws one, and both expire after `ttl`; on top, a constant reserve of
/// `min_per_sec × ttl` tokens whose withdrawals also expire after `ttl`. So within any `ttl`,
/// retries ≤ `ratio` × deposits + `min_per_sec × ttl` (to a tenth of `ttl`). Unlike tower's,
/// any ratio is exact (tower's rounds 0.3 to 1 retry per 3 deposits) and the check-and-withdraw
/// is atomic, so concurrent retries cannot overdraw it.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    inner: Arc<BudgetInner>,
}

/// Tokens are kept in thousandths so fractional ratios add up exactly in integers.
const MILLI: i64 = 1_000;

#[derive(Debug)]
struct BudgetInner {
    /// What one success deposits, in thousandths of a retry.
    deposit: i64,
    /// `min_per_sec × ttl`, in thousandths of a retry.
    reserve: i64,
    /// Net deposits minus withdrawals per tenth of `ttl`.
    ledger: Mutex<SlidingWindow<i64>>,
}

impl RetryBudget {
    /// Creates a budget holding only its reserve.
    pub fn new(config: RetryBudgetConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        // Saturating float-to-int casts: absurd configs cap out instead of wrapping.
        let deposit = (config.ratio * MILLI as f64).round() as i64;
        let reserve =
            (f64::from(config.min_per_sec) * config.ttl.as_secs_f64() * MILLI as f64) as i64;
        Ok(Self {
            inner: Arc::new(BudgetInner {
                deposit,
                reserve,
                ledger: Mutex::new(SlidingWindow::new(config.ttl, Instant::now())),
            }),
        })
    }

    /// Credits one successful call.
    pub fn deposit(&self) {
        let now = Instant::now();
        let mut ledger = self.inner.ledger.lock();
        let slot = ledger.current(now);
        *slot = slot.saturating_add(self.inner.deposit);
    }

    /// Withdraws one retry if the budget holds one; returns whether it did.
    pub fn can_retry(&self) -> bool {
        let now = Instant::now();
        let mut ledger = self.inner.ledger.lock();
        if self.balance(&ledger, now) < MILLI {
            return false;
        }
        let slot = ledger.current(now);
        *slot = slot.saturating_sub(MILLI);
        true
    }

    /// Returns how many retries the budget would allow right now, for metrics and tests.
    pub fn available(&self) -> u64 {
        let ledger = self.inner.ledger.lock();
        let balance = self.balance(&ledger, Instant::now());
        u64::try_from(balance / MILLI).unwrap_or(0)
    }

    fn balance(&self, ledger: &SlidingWindow<i64>, now: Instant) -> i64 {
        ledger
            .live(now)
            .fold(self.inner.reserve, |sum, slot| sum.saturating_add(*slot))
    }
}

/// Calls `f` until it succeeds, `is_retryable` says its error is final, `policy.attempts` are
/// used up, or `budget` refuses a retry; returns the last result. Waits `policy.backoff` between
/// attempts and deposits each success into `budget`.
///
/// `is_retryable` is where the facts are: the error's retryability *and* whether the operation
/// is safe to repeat. The budget is only touched once a retry is otherwise allowed, so final
/// errors cost no tokens. Dropping the returned future cancels the call and any pending backoff.
pub async fn retry<F, Fut, T, E>(
    policy: &RetryPolicy,
    budget: &RetryBudget,
    is_retryable: impl Fn(&E) -> bool,
    mut f: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        let error = match f().await {
            Ok(value) => {
                budget.deposit();
                return Ok(value);
            }
            Err(error) => error,
        };
        if attempt >= policy.attempts || !is_retryable(&error) {
            return Err(error);
        }
        if !budget.can_retry() {
            tracing::debug!(attempt, "retry budget exhausted; returning the last error");
            return Err(error);
        }
        let delay = policy.backoff(attempt);
        tracing::debug!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            "retrying after backoff"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::advance;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: ms(100),
            max: ms(1_000),
            attempts: 4,
        }
    }

    fn budget(ttl_secs: u64, min_per_sec: u32, ratio: f64) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            ttl: Duration::from_secs(ttl_secs),
            min_per_sec,
            ratio,
        })
        .expect("valid config")
    }

    // === backoff ===

    #[test]
    fn backoff_ceiling_doubles_per_attempt_up_to_max() {
        let p = policy();
        let ceilings: Vec<_> = (1..=6).map(|a| p.ceiling(a)).collect();
        assert_eq!(
            ceilings,
            [ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]
        );
        // Attempt 0 is treated as the first.
        assert_eq!(p.ceiling(0), ms(100));
    }

    #[test]
    fn backoff_spans_zero_to_the_ceiling() {
        let p = policy();
        assert_eq!(p.backoff_at(3, 0.0), Duration::ZERO);
        assert_eq!(p.backoff_at(3, 0.5), ms(200));
        assert!(p.backoff_at(3, 0.999_999) < ms(400));
        // Out-of-range draws are clamped, never past the ceiling.
        assert_eq!(p.backoff_at(3, 7.0), ms(400));
    }

    #[test]
    fn backoff_never_overflows() {
        let p = RetryPolicy {
            base: Duration::from_secs(u64::MAX / 4),
            max: Duration::MAX,
            attempts: 3,
        };
        assert_eq!(p.ceiling(u32::MAX), Duration::MAX);
        assert!(policy().backoff(u32::MAX) < ms(1_000));
    }

    #[test]
    fn jittered_backoffs_stay_in_range_and_spread_across_it() {
        let p = policy();
        let samples: Vec<_> = (0..2_000).map(|_| p.backoff(2)).collect();
        assert!(samples.iter().all(|d| *d < ms(200)));
        // With 2 000 uniform draws, missing either tenth of the range has odds of 0.9^2000.
        assert!(samples.iter().any(|d| *d < ms(20)));
        assert!(samples.iter().any(|d| *d >= ms(180)));
    }

    #[test]
    fn policy_validation_names_the_offending_field() {
        let bad = [
            (
                "attempts",
                RetryPolicy {
                    attempts: 0,
                    ..policy()
                },
            ),
            (
                "base",
                RetryPolicy {
                    base: Duration::ZERO,
                    ..policy()
                },
            ),
            (
                "max",
                RetryPolicy {
                    max: ms(1),
                    ..policy()
                },
            ),
        ];
        for (field, p) in bad {
            assert_eq!(p.validate().expect_err(field).field, field);
        }
        assert_eq!(RetryPolicy::default().validate(), Ok(()));
    }

    // === budget ===

    #[tokio::test(start_paused = true)]
    async fn budget_without_successes_allows_only_the_reserve() {
        let b = budget(10, 2, 0.2); // reserve: 2/s × 10 s
        assert_eq!(b.available(), 20);
        for _ in 0..20 {
            assert!(b.can_retry());
        }
        assert!(!b.can_retry());
        assert_eq!(b.available(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_refills_as_withdrawals_expire() {
        let b = budget(10, 1, 0.0);
        for _ in 0..10 {
            assert!(b.can_retry());
        }
        assert!(!b.can_retry());
        advance(Duration::from_secs(5)).await;
        assert!(!b.can_retry());
        advance(Duration::from_secs(5)).await;
        assert_eq!(b.available(), 10);
        assert!(b.can_retry());
    }

    #[tokio::test(start_paused = true)]
    async fn each_success_earns_a_fraction_of_a_retry() {
        let b = budget(10, 0, 0.2);
        assert!(!b.can_retry());
        for _ in 0..4 {
            b.deposit();
        }
        assert!(!b.can_retry(), "4 × 0.2 is less than one retry");
        b.deposit();
        assert!(b.can_retry());
        assert!(!b.can_retry());
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(b.available(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_ttl() {
        let b = budget(10, 0, 1.0);
        b.deposit();
        b.deposit();
        advance(Duration::from_secs(9)).await;
        assert_eq!(b.available(), 2);
        advance(Duration::from_secs(1)).await;
        assert_eq!(b.available(), 0);
        assert!(!b.can_retry());
    }

    #[tokio::test(start_paused = true)]
    async fn budget_clones_share_one_balance() {
        let b = budget(10, 0, 1.0);
        let clone = b.clone();
        clone.deposit();
        assert!(b.can_retry());
        assert!(!clone.can_retry());
    }

    #[test]
    fn budget_validation_names_the_offending_field() {
        let zero_ttl = RetryBudgetConfig {
            ttl: Duration::ZERO,
            ..RetryBudgetConfig::default()
        };
        assert_eq!(RetryBudget::new(zero_ttl).expect_err("ttl").field, "ttl");
        for ratio in [-0.1, f64::NAN, f64::INFINITY] {
            let bad = RetryBudgetConfig {
                ratio,
                ..RetryBudgetConfig::default()
            };
            assert_eq!(bad.validate().expect_err("ratio").field, "ratio");
        }
        assert_eq!(RetryBudgetConfig::default().validate(), Ok(()));
    }

    // === retry ===

    #[derive(Debug, PartialEq)]
    enum Failure {
        Transient,
        Permanent,
    }

    /// Runs `retry` against a call that fails `failures` times with `error`, then succeeds;
    /// returns the result, the attempts made and the time spent.
    async fn run(
        b: &RetryBudget,
        failures: u32,
        error: fn() -> Failure,
    ) -> (Result<u32, Failure>, u32, Duration) {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result = retry(
            &policy(),
            b,
            |e| *e == Failure::Transient,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= failures {
                    Err(error())
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        (result, calls.load(Ordering::SeqCst), start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_success_returns_at_once_and_deposits() {
        let b = budget(10, 0, 1.0);
        let (result, calls, elapsed) = run(&b, 0, || Failure::Transient).await;
        assert_eq!((result, calls, elapsed), (Ok(1), 1, Duration::ZERO));
        assert_eq!(b.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_with_bounded_backoff() {
        let b = budget(10, 10, 0.2);
        let (result, calls, elapsed) = run(&b, 2, || Failure::Transient).await;
        assert_eq!((result, calls), (Ok(3), 3));
        // Backoffs after attempts 1 and 2 are below 100 ms and 200 ms.
        assert!(elapsed < ms(300), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_attempt_limit() {
        let b = budget(10, 10, 0.2);
        let (result, calls, _) = run(&b, 100, || Failure::Transient).await;
        assert_eq!((result, calls), (Err(Failure::Transient), 4));
        // Three retries were withdrawn from the reserve of 100.
        assert_eq!(b.available(), 97);
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_are_not_retried_and_cost_no_budget() {
        let b = budget(10, 1, 0.0);
        let (result, calls, _) = run(&b, 100, || Failure::Permanent).await;
        assert_eq!((result, calls), (Err(Failure::Permanent), 1));
        assert_eq!(b.available(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_budget_runs_out() {
        let b = budget(10, 0, 0.5);
        b.deposit();
        b.deposit(); // one retry's worth
        let (result, calls, _) = run(&b, 100, || Failure::Transient).await;
        assert_eq!((result, calls), (Err(Failure::Transient), 2));
        // Under an outage, each further call gets no retry at all.
        let (_, calls, elapsed) = run(&b, 100, || Failure::Transient).await;
        assert_eq!((calls, elapsed), (1, Duration::ZERO));
    }
}
