//! The crate's error vocabulary: why a call was refused, and why a config was refused.
//!
//! `Rejected` and `Overloaded` are raised *before* the upstream is called, so the upstream never
//! saw the request: the gateway maps them to "circuit open" and "overloaded" for the client and
//! never retries them (retrying a fast refusal only adds load where there is too much already).

use std::fmt;
use std::time::Duration;

/// Why the breaker refused a call; returned by [`Breaker::try_acquire`](crate::Breaker::try_acquire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; retry in {}", Human(*retry_in))]
pub struct Rejected {
    /// Which of the breaker's refusals this is.
    pub reason: RejectReason,
    /// When a call is next worth trying. While open this is exact: the time left until the
    /// breaker lets trial calls through. While half-open it is a hint (`open_base`), because it
    /// depends on how long the trial calls in flight take.
    pub retry_in: Duration,
}

/// The two states in which a breaker refuses calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The breaker is open: the upstream failed too much and is left alone for a while.
    Open,
    /// The breaker is half-open and every trial slot is taken by a call in flight.
    TrialsInFlight,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "circuit open",
            Self::TrialsInFlight => "circuit half-open with all trial calls in flight",
        })
    }
}

/// Why the bulkhead refused a call; returned by [`Bulkhead::acquire`](crate::Bulkhead::acquire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    /// Every call slot was taken and the wait queue was full, so the call was refused at once.
    #[error("overloaded; {max_in_flight} calls in flight and {max_queued} waiting")]
    QueueFull {
        /// The bulkhead's concurrency limit.
        max_in_flight: usize,
        /// The bulkhead's wait-queue bound.
        max_queued: usize,
    },
    /// The call waited in the queue for the longest allowed time and no slot came free.
    #[error("overloaded; no call slot came free within {}", Human(*waited))]
    WaitTimeout {
        /// How long the call waited (the bulkhead's `max_wait`).
        waited: Duration,
    },
}

/// A policy config that cannot work; returned by the constructors and by each config's
/// `validate`, so `switchboard check` can report it before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {component} config: {field} {requirement}")]
pub struct ConfigError {
    /// `breaker`, `retry`, `retry budget` or `bulkhead`.
    pub component: &'static str,
    /// The offending field, as named in the config struct.
    pub field: &'static str,
    /// What the field must satisfy, e.g. "must be at least 1".
    pub requirement: &'static str,
}

impl ConfigError {
    pub(crate) fn new(
        component: &'static str,
        field: &'static str,
        requirement: &'static str,
    ) -> Self {
        Self {
            component,
            field,
            requirement,
        }
    }
}

/// Shows a duration the way an operator reads it: whole seconds rounded up ("12s"), or whole
/// milliseconds rounded up below a second ("250ms"). Rounding up means "retry in" is never early.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d >= Duration::from_secs(1) {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            write!(f, "{secs}s")
        } else {
            let millis = d.as_nanos().div_ceil(1_000_000);
            write!(f, "{millis}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_name_when_to_retry() {
        let open = Rejected {
            reason: RejectReason::Open,
            retry_in: Duration::from_millis(11_200),
        };
        assert_eq!(open.to_string(), "circuit open; retry in 12s");

        let busy = Rejected {
            reason: RejectReason::TrialsInFlight,
            retry_in: Duration::from_millis(250),
        };
        assert_eq!(
            busy.to_string(),
            "circuit half-open with all trial calls in flight; retry in 250ms"
        );

        let full = Overloaded::QueueFull {
            max_in_flight: 4,
            max_queued: 8,
        };
        assert_eq!(
            full.to_string(),
            "overloaded; 4 calls in flight and 8 waiting"
        );

        let timeout = Overloaded::WaitTimeout {
            waited: Duration::from_secs(10),
        };
        assert_eq!(
            timeout.to_string(),
            "overloaded; no call slot came free within 10s"
        );

        let config = ConfigError::new("breaker", "min_calls", "must be at least 1");
        assert_eq!(
            config.to_string(),
            "invalid breaker config: min_calls must be at least 1"
        );
    }

    #[test]
    fn durations_round_up_so_retry_in_is_never_early() {
        assert_eq!(Human(Duration::ZERO).to_string(), "0ms");
        assert_eq!(Human(Duration::from_nanos(1)).to_string(), "1ms");
        assert_eq!(Human(Duration::from_secs(5)).to_string(), "5s");
        assert_eq!(Human(Duration::from_millis(5_001)).to_string(), "6s");
    }
}
