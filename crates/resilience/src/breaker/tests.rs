use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::advance;

use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A config where each rule can be triggered alone: the rate rule needs 10 calls, the
/// consecutive rule 3 failures in a row.
fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        failure_rate: 0.5,
        window: secs(10),
        min_calls: 10,
        open_base: secs(5),
        open_max: secs(60),
        half_open_trials: 2,
        half_open_successes: 2,
    }
}

fn breaker(config: BreakerConfig) -> Breaker {
    Breaker::new(config).expect("valid config")
}

fn succeed(b: &Breaker) {
    b.try_acquire().expect("admitted").success();
}

fn fail(b: &Breaker) {
    b.try_acquire().expect("admitted").failure();
}

/// Trips a closed breaker through the consecutive-failure rule.
fn trip(b: &Breaker) {
    for _ in 0..b.config().consecutive_failures {
        fail(b);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

fn open_rejection(b: &Breaker) -> Duration {
    let rejected = b.try_acquire().expect_err("open breaker refuses");
    assert_eq!(rejected.reason, RejectReason::Open);
    rejected.retry_in
}

/// Moves an open breaker to half-open by letting its open period run out.
async fn wait_out_open_period(b: &Breaker) {
    advance(open_rejection(b)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

// === closed ===

#[tokio::test(start_paused = true)]
async fn a_new_breaker_is_closed_and_admits_calls() {
    let b = breaker(config());
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..100 {
        succeed(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_the_breaker() {
    let b = breaker(config());
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_restarts_the_consecutive_failure_count() {
    // A high min_calls keeps the rate rule (2 failures in 3) out of the way.
    let b = breaker(BreakerConfig {
        min_calls: 1_000,
        ..config()
    });
    for _ in 0..20 {
        fail(&b);
        fail(&b);
        succeed(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_opens_the_breaker_only_once_min_calls_have_ended() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 100,
        ..config()
    });
    // 4 of 8 calls failed: 50 %, at the threshold, but below min_calls (10).
    for _ in 0..4 {
        succeed(&b);
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    succeed(&b); // 4 of 9
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b); // 5 of 10: min_calls reached, rate 50 % ≥ 50 %
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_below_the_threshold_keeps_the_breaker_closed() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 100,
        ..config()
    });
    // 30 % failures over 100 calls (never 50 % at any point past min_calls).
    for i in 0..100 {
        if i % 10 < 3 {
            fail(&b);
        } else {
            succeed(&b);
        }
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failures_that_left_the_window_no_longer_count() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 100,
        ..config()
    });
    for _ in 0..9 {
        fail(&b);
    }
    // The 9 failures age out of the 10 s window.
    advance(secs(11)).await;
    for _ in 0..9 {
        succeed(&b);
    }
    fail(&b); // 1 failure in 10 calls within the window
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_in_closed_state_counts_as_neither() {
    let b = breaker(config());
    fail(&b);
    fail(&b);
    // A success would restart the count, a failure would trip; a drop does neither.
    drop(b.try_acquire().expect("admitted"));
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

// === open ===

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_calls_and_says_when_to_retry() {
    let b = breaker(config());
    trip(&b);
    assert_eq!(open_rejection(&b), secs(5));
    advance(secs(2)).await;
    assert_eq!(open_rejection(&b), secs(3));
    let err = b.try_acquire().expect_err("still open");
    assert_eq!(err.to_string(), "circuit open; retry in 3s");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_turns_half_open_when_its_open_period_ends() {
    let b = breaker(config());
    trip(&b);
    advance(secs(5) - Duration::from_millis(1)).await;
    assert_eq!(b.state(), BreakerState::Open);
    advance(Duration::from_millis(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn the_open_period_doubles_on_each_consecutive_trip() {
    let b = breaker(config());
    trip(&b);
    let mut periods = vec![open_rejection(&b)];
    for _ in 0..3 {
        wait_out_open_period(&b).await;
        fail(&b); // the trial fails: trip again
        periods.push(open_rejection(&b));
    }
    assert_eq!(periods, [secs(5), secs(10), secs(20), secs(40)]);
}

#[tokio::test(start_paused = true)]
async fn the_open_period_is_capped_at_open_max() {
    let b = breaker(config());
    trip(&b);
    for _ in 0..40 {
        wait_out_open_period(&b).await;
        fail(&b);
    }
    // 5 × 2^40 s would overflow far past the cap.
    assert_eq!(open_rejection(&b), secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_successful_probe_cycle_resets_the_open_period() {
    let b = breaker(config());
    trip(&b);
    wait_out_open_period(&b).await;
    fail(&b);
    assert_eq!(open_rejection(&b), secs(10));
    wait_out_open_period(&b).await;
    succeed(&b);
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    trip(&b);
    assert_eq!(open_rejection(&b), secs(5));
}

// === half-open ===

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_the_configured_trials_at_once() {
    let b = breaker(config());
    trip(&b);
    wait_out_open_period(&b).await;
    let first = b.try_acquire().expect("trial 1");
    let second = b.try_acquire().expect("trial 2");
    let refused = b.try_acquire().expect_err("trial slots are full");
    assert_eq!(refused.reason, RejectReason::TrialsInFlight);
    assert_eq!(refused.retry_in, secs(5));
    // A verdict frees a slot.
    first.success();
    let third = b.try_acquire().expect("slot freed by a verdict");
    drop((second, third));
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_after_the_required_successes() {
    let b = breaker(config());
    trip(&b);
    wait_out_open_period(&b).await;
    succeed(&b);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_successes_may_take_several_rounds_of_trials() {
    let b = breaker(BreakerConfig {
        half_open_trials: 1,
        half_open_successes: 4,
        ..config()
    });
    trip(&b);
    wait_out_open_period(&b).await;
    for _ in 0..3 {
        succeed(&b);
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn any_failure_in_half_open_reopens_the_breaker() {
    let b = breaker(config());
    trip(&b);
    wait_out_open_period(&b).await;
    let good = b.try_acquire().expect("trial 1");
    let bad = b.try_acquire().expect("trial 2");
    good.success();
    bad.failure();
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trial_frees_its_slot_without_counting() {
    let b = breaker(config());
    trip(&b);
    wait_out_open_period(&b).await;
    let kept = b.try_acquire().expect("trial 1");
    let cancelled = b.try_acquire().expect("trial 2");
    assert!(b.try_acquire().is_err());
    drop(cancelled);
    let replacement = b.try_acquire().expect("the dropped trial's slot is free");
    // Two successes are needed; the dropped trial was not one of them.
    kept.success();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    replacement.success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_verdict_from_before_the_last_transition_is_ignored() {
    let b = breaker(config());
    let slow = b.try_acquire().expect("admitted while closed");
    trip(&b);
    wait_out_open_period(&b).await;
    // The slow call finishes while half-open: it was no trial, so it neither closes the
    // breaker nor takes or frees a trial slot.
    slow.success();
    succeed(&b);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let slow = b.try_acquire().expect("trial");
    b.reset();
    slow.failure(); // from before the reset: must not trip the reset breaker
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn closing_forgets_the_failures_from_before_the_outage() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 100,
        ..config()
    });
    for _ in 0..10 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Open);
    wait_out_open_period(&b).await;
    succeed(&b);
    succeed(&b);
    // Ten failures are still inside the 10 s window in time, but they predate the outage.
    for _ in 0..9 {
        succeed(&b);
    }
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

// === reset and observers ===

#[tokio::test(start_paused = true)]
async fn reset_closes_an_open_breaker_and_forgets_its_trips() {
    let b = breaker(config());
    trip(&b);
    wait_out_open_period(&b).await;
    fail(&b);
    assert_eq!(open_rejection(&b), secs(10));
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    succeed(&b);
    trip(&b);
    assert_eq!(open_rejection(&b), secs(5));
}

#[tokio::test(start_paused = true)]
async fn observers_see_every_transition() {
    let b = breaker(config());
    let mut states = b.subscribe();
    assert_eq!(*states.borrow_and_update(), BreakerState::Closed);

    trip(&b);
    assert!(states.has_changed().expect("breaker alive"));
    assert_eq!(*states.borrow_and_update(), BreakerState::Open);

    advance(secs(5)).await;
    // The transition to half-open happens when someone asks.
    assert!(!states.has_changed().expect("breaker alive"));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(*states.borrow_and_update(), BreakerState::HalfOpen);

    succeed(&b);
    succeed(&b);
    assert_eq!(*states.borrow_and_update(), BreakerState::Closed);

    b.reset(); // already closed: no transition to report
    assert!(!states.has_changed().expect("breaker alive"));
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_state() {
    let b = breaker(config());
    let clone = b.clone();
    trip(&clone);
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn config_validation_names_the_offending_field() {
    let cases: [(&str, BreakerConfig); 9] = [
        (
            "consecutive_failures",
            BreakerConfig {
                consecutive_failures: 0,
                ..config()
            },
        ),
        (
            "failure_rate",
            BreakerConfig {
                failure_rate: 0.0,
                ..config()
            },
        ),
        (
            "failure_rate",
            BreakerConfig {
                failure_rate: f64::NAN,
                ..config()
            },
        ),
        (
            "window",
            BreakerConfig {
                window: Duration::ZERO,
                ..config()
            },
        ),
        (
            "min_calls",
            BreakerConfig {
                min_calls: 0,
                ..config()
            },
        ),
        (
            "open_base",
            BreakerConfig {
                open_base: Duration::ZERO,
                ..config()
            },
        ),
        (
            "open_max",
            BreakerConfig {
                open_max: secs(1),
                ..config()
            },
        ),
        (
            "half_open_trials",
            BreakerConfig {
                half_open_trials: 0,
                ..config()
            },
        ),
        (
            "half_open_successes",
            BreakerConfig {
                half_open_successes: 0,
                ..config()
            },
        ),
    ];
    for (field, bad) in cases {
        let err = Breaker::new(bad).expect_err(field);
        assert_eq!(err.field, field);
    }
    assert_eq!(BreakerConfig::default().validate(), Ok(()));
}

// === concurrency ===

/// Many tasks hammer a breaker through repeated half-open rounds, holding their permits across
/// await points and ending them with every kind of verdict; at no point do more trials run than
/// allowed. Failures keep reopening it (it never closes), so every permit is a trial.
#[tokio::test(start_paused = true)]
async fn half_open_trial_limit_holds_across_many_tasks() {
    let b = breaker(BreakerConfig {
        half_open_trials: 3,
        half_open_successes: u32::MAX,
        ..config()
    });
    trip(&b);
    let in_flight = std::sync::Arc::new(AtomicU32::new(0));
    let peak = std::sync::Arc::new(AtomicU32::new(0));
    let admitted = std::sync::Arc::new(AtomicUsize::new(0));

    let tasks: Vec<_> = (0..200u64)
        .map(|task| {
            let (b, in_flight, peak, admitted) =
                (b.clone(), in_flight.clone(), peak.clone(), admitted.clone());
            tokio::spawn(async move {
                for round in 0..50u64 {
                    match b.try_acquire() {
                        Ok(permit) => {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            admitted.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis((task + round) % 7)).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            match (task + round) % 5 {
                                0 => permit.failure(),
                                1 | 2 => drop(permit),
                                _ => permit.success(),
                            }
                        }
                        Err(rejected) => {
                            let jitter = Duration::from_millis(1 + task % 5);
                            let wait = match rejected.reason {
                                RejectReason::Open => rejected.retry_in + jitter,
                                RejectReason::TrialsInFlight => jitter,
                            };
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task finished");
    }
    // Many rounds of trials ran, and never more than three at once.
    assert!(admitted.load(Ordering::SeqCst) > 100, "{admitted:?}");
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

/// OS threads race on one half-open breaker with the clock frozen, so it stays half-open
/// throughout; the number of permits held at once never exceeds the trial limit, and every
/// slot is free again at the end.
#[tokio::test(start_paused = true)]
async fn half_open_trial_limit_holds_across_threads() {
    let b = breaker(BreakerConfig {
        half_open_trials: 4,
        half_open_successes: u32::MAX,
        ..config()
    });
    trip(&b);
    wait_out_open_period(&b).await;
    let in_flight = AtomicU32::new(0);
    let peak = AtomicU32::new(0);
    let admitted = AtomicUsize::new(0);
    let handle = tokio::runtime::Handle::current();

    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                // Tokio time is read from the runtime this thread enters: frozen, shared.
                let _runtime = handle.enter();
                for i in 0..20_000u32 {
                    if let Ok(permit) = b.try_acquire() {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        admitted.fetch_add(1, Ordering::SeqCst);
                        std::thread::yield_now();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if i % 2 == 0 {
                            permit.success();
                        } else {
                            drop(permit);
                        }
                    }
                }
            });
        }
    });

    assert!(admitted.load(Ordering::SeqCst) > 0);
    assert!(peak.load(Ordering::SeqCst) <= 4, "peak {peak:?}");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let all: Vec<_> = (0..4)
        .map(|_| b.try_acquire().expect("slot free"))
        .collect();
    assert!(b.try_acquire().is_err());
    drop(all);
}
