//! Per-upstream call policies for Switchboard: a circuit breaker, retries inside a budget, and
//! a bulkhead. Pure policy: no network, no tasks, no knowledge of MCP. The gateway wraps every
//! upstream call with them.
//!
//! # Layout
//!
//! - `breaker`: [`Breaker`], [`BreakerConfig`], [`BreakerState`], [`Permit`].
//! - `retry`: [`RetryPolicy`] (backoff), [`RetryBudget`] (how many retries the upstream can
//!   afford), and the [`retry()`] loop that combines them.
//! - `bulkhead`: [`Bulkhead`], [`BulkheadConfig`], [`BulkheadPermit`],
//!   [`BulkheadStats`].
//! - `error`: [`Rejected`], [`Overloaded`], [`ConfigError`].
//! - `window`: the fixed-memory sliding time window behind the breaker's failure rate and the
//!   retry budget.
//!
//! # Order around one upstream call
//!
//! Outermost first: retry → breaker → bulkhead → call. Each attempt asks the breaker, so an
//! open breaker ends the retries at once (a [`Rejected`] is never retryable); the bulkhead sits
//! inside the breaker so that queueing time is not blamed on the upstream.
//!
//! ```
//! # async fn call_upstream() -> Result<&'static str, std::io::Error> { Ok("ok") }
//! use switchboard_resilience::*;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = Breaker::new(BreakerConfig::default())?;
//! let bulkhead = Bulkhead::new(BulkheadConfig::default())?;
//! let budget = RetryBudget::new(RetryBudgetConfig::default())?;
//!
//! #[derive(Debug)]
//! enum CallError { Rejected(Rejected), Overloaded(Overloaded), Upstream(std::io::Error) }
//!
//! let result = retry(&RetryPolicy::default(), &budget,
//!     |e| matches!(e, CallError::Upstream(_)),   // and only for operations safe to repeat
//!     || async {
//!         let permit = breaker.try_acquire().map_err(CallError::Rejected)?;
//!         let _slot = bulkhead.acquire().await.map_err(CallError::Overloaded)?;
//!         match call_upstream().await {
//!             Ok(v) => { permit.success(); Ok(v) }
//!             Err(e) => { permit.failure(); Err(CallError::Upstream(e)) }
//!         }
//!     }).await;
//! assert_eq!(result.ok(), Some("ok"));
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # Invariants
//!
//! - All time is tokio time (`tokio::time::Instant`), so tests drive it with a paused clock.
//! - Nothing here spawns a task or holds a lock across an `.await`: every decision is a short
//!   critical section, so the types are safe to share across any number of tasks.
//! - A refusal ([`Rejected`], [`Overloaded`]) happens before the upstream is called.
//! - Memory per breaker and per budget is fixed, whatever the traffic.

mod breaker;
mod bulkhead;
mod error;
mod retry;
mod window;

pub use breaker::{Breaker, BreakerConfig, BreakerState, Permit};
pub use bulkhead::{Bulkhead, BulkheadConfig, BulkheadPermit, BulkheadStats};
pub use error::{ConfigError, Overloaded, RejectReason, Rejected};
pub use retry::{retry, RetryBudget, RetryBudgetConfig, RetryPolicy};
