//! The bulkhead: a concurrency limit per upstream with a bounded, time-limited wait queue.
//!
//! It protects both sides. The upstream never sees more than `max_in_flight` calls at once
//! (a stdio server may handle only one or two), and the gateway never holds more than
//! `max_queued` waiting requests per upstream, each for at most `max_wait`: past that a caller
//! gets a fast, clear "overloaded" instead of a request that hangs until its deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ConfigError, Overloaded};

/// Limits for one upstream's bulkhead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Calls allowed in flight at once. Default 32.
    pub max_in_flight: usize,
    /// Callers allowed to wait for a slot; 0 refuses as soon as the limit is reached.
    /// Default 64: a short burst of twice the limit is absorbed, a sustained overload is not.
    pub max_queued: usize,
    /// Longest a caller waits for a slot. Kept well below the 60 s default request timeout, so
    /// that a queued request fails as "overloaded", not as a timeout blamed on the upstream.
    /// Default 5 s.
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 32,
            max_queued: 64,
            max_wait: Duration::from_secs(5),
        }
    }
}

impl BulkheadConfig {
    /// Checks that the limit admits at least one call and fits a semaphore.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_in_flight == 0 {
            return Err(ConfigError::new(
                "bulkhead",
                "max_in_flight",
                "must be at least 1",
            ));
        }
        if self.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "bulkhead",
                "max_in_flight",
                "must be at most 2^61 - 1",
            ));
        }
        Ok(())
    }
}

/// A point-in-time view of a bulkhead's load, for metrics and `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadStats {
    /// Calls holding a permit.
    pub in_flight: usize,
    /// Callers waiting for a permit.
    pub queued: usize,
}

/// One upstream's bulkhead. Cloning is cheap and every clone shares the same limit.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BulkheadConfig,
    /// One permit per call slot. Tokio's semaphore is fair (first come, first served), so a
    /// newcomer never overtakes a queued caller; it is never closed.
    slots: Arc<Semaphore>,
    /// Callers inside `acquire` waiting on `slots`; bounded by `max_queued`.
    queued: AtomicUsize,
}

/// A call slot, held for the duration of one upstream call and released on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    _slot: OwnedSemaphorePermit,
}

impl Bulkhead {
    /// Creates an empty bulkhead.
    pub fn new(config: BulkheadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(config.max_in_flight)),
                queued: AtomicUsize::new(0),
                config,
            }),
        })
    }

    /// Waits for a call slot: at once if one is free, else in the queue for up to `max_wait`.
    /// Refuses at once if the queue is full. Cancel-safe: dropping the future leaves the queue.
    pub async fn acquire(&self) -> Result<BulkheadPermit, Overloaded> {
        let inner = &self.inner;
        if let Ok(slot) = Arc::clone(&inner.slots).try_acquire_owned() {
            return Ok(BulkheadPermit { _slot: slot });
        }
        let config = &inner.config;
        // Take a queue place only if one is left, atomically, so the bound is exact even when
        // many callers arrive at once.
        let queue_place =
            inner
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued < config.max_queued).then_some(queued + 1)
                });
        if queue_place.is_err() {
            return Err(Overloaded::QueueFull {
                max_in_flight: config.max_in_flight,
                max_queued: config.max_queued,
            });
        }
        // Gives the queue place back however this future ends: slot, timeout or cancellation.
        let _leave = QueuePlace(&inner.queued);
        match tokio::time::timeout(config.max_wait, Arc::clone(&inner.slots).acquire_owned()).await
        {
            Ok(Ok(slot)) => Ok(BulkheadPermit { _slot: slot }),
            // `Err` from the semaphore means it was closed, which this type never does; treat it
            // like a wait that found no slot rather than panic.
            Ok(Err(_)) | Err(_) => Err(Overloaded::WaitTimeout {
                waited: config.max_wait,
            }),
        }
    }

    /// Returns how many calls hold a slot and how many wait for one.
    pub fn stats(&self) -> BulkheadStats {
        let inner = &self.inner;
        BulkheadStats {
            in_flight: inner
                .config
                .max_in_flight
                .saturating_sub(inner.slots.available_permits()),
            queued: inner.queued.load(Ordering::Acquire),
        }
    }

    /// Returns the bulkhead's config.
    pub fn config(&self) -> &BulkheadConfig {
        &self.inner.config
    }
}

/// A held place in the wait queue; frees it on drop.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::{advance, Instant};

    use super::*;

    fn bulkhead(max_in_flight: usize, max_queued: usize) -> Bulkhead {
        Bulkhead::new(BulkheadConfig {
            max_in_flight,
            max_queued,
            max_wait: Duration::from_secs(1),
        })
        .expect("valid config")
    }

    fn stats(in_flight: usize, queued: usize) -> BulkheadStats {
        BulkheadStats { in_flight, queued }
    }

    /// Lets spawned tasks run until they block, without moving the clock.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_under_the_limit_get_a_slot_at_once() {
        let b = bulkhead(2, 0);
        let first = b.acquire().await.expect("slot 1");
        let second = b.acquire().await.expect("slot 2");
        assert_eq!(b.stats(), stats(2, 0));
        drop(first);
        assert_eq!(b.stats(), stats(1, 0));
        drop(second);
        assert_eq!(b.stats(), stats(0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once() {
        let b = bulkhead(1, 1);
        let _held = b.acquire().await.expect("slot");
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        settle().await;
        assert_eq!(b.stats(), stats(1, 1));

        let start = Instant::now();
        let refused = b.acquire().await.expect_err("queue full");
        assert_eq!(
            refused,
            Overloaded::QueueFull {
                max_in_flight: 1,
                max_queued: 1
            }
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        waiter.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_queue_the_limit_refuses_at_once() {
        let b = bulkhead(1, 0);
        let _held = b.acquire().await.expect("slot");
        assert!(matches!(
            b.acquire().await,
            Err(Overloaded::QueueFull { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_call_times_out_after_max_wait() {
        let b = bulkhead(1, 4);
        let _held = b.acquire().await.expect("slot");
        let start = Instant::now();
        let refused = b.acquire().await.expect_err("no slot freed");
        assert_eq!(
            refused,
            Overloaded::WaitTimeout {
                waited: Duration::from_secs(1)
            }
        );
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(
            b.stats(),
            stats(1, 0),
            "the timed-out caller left the queue"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn queued_calls_get_freed_slots_in_arrival_order() {
        let b = bulkhead(1, 2);
        let held = b.acquire().await.expect("slot");
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
        for caller in 0..2 {
            let (b, order_tx) = (b.clone(), order_tx.clone());
            tokio::spawn(async move {
                let _slot = b.acquire().await.expect("slot within max_wait");
                order_tx.send(caller).expect("test alive");
                tokio::time::sleep(Duration::from_millis(100)).await;
            });
            settle().await;
        }
        assert_eq!(b.stats(), stats(1, 2));
        advance(Duration::from_millis(500)).await;
        drop(held);
        assert_eq!(order_rx.recv().await, Some(0));
        assert_eq!(order_rx.recv().await, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_does_not_overtake_the_queue() {
        let b = bulkhead(1, 1);
        let held = b.acquire().await.expect("slot");
        let queued = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        settle().await;
        drop(held);
        // The freed slot passed straight to the queued caller: nothing is left for a newcomer
        // to grab before the queued caller even runs.
        assert_eq!(b.stats().in_flight, 1);
        queued
            .await
            .expect("task")
            .expect("queued caller got the slot");
        assert_eq!(b.stats(), stats(0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let b = bulkhead(1, 1);
        let _held = b.acquire().await.expect("slot");
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        settle().await;
        assert_eq!(b.stats(), stats(1, 1));
        waiter.abort();
        assert!(waiter.await.expect_err("aborted").is_cancelled());
        assert_eq!(b.stats(), stats(1, 0));
        // Its place is free for the next caller.
        let next = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        settle().await;
        assert_eq!(b.stats(), stats(1, 1));
        next.abort();
    }

    #[test]
    fn config_validation_requires_at_least_one_slot() {
        let bad = BulkheadConfig {
            max_in_flight: 0,
            ..BulkheadConfig::default()
        };
        assert_eq!(
            Bulkhead::new(bad).expect_err("zero slots").field,
            "max_in_flight"
        );
        assert_eq!(BulkheadConfig::default().validate(), Ok(()));
    }
}
