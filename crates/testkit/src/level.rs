//! The per-session `logging/setLevel` threshold.
//!
//! The spec says servers send only messages at or above the level the client
//! set. rmcp's `LoggingLevel` has no ordering, so the rank lives here.

// `LoggingLevel` is deprecated for 2026-07-28; legacy sessions still use it.
#![allow(deprecated)]

use std::sync::atomic::{AtomicU8, Ordering};

use rmcp::model::LoggingLevel;

/// The lowest level a session still wants to receive; `debug` until set.
#[derive(Debug, Default)]
pub(crate) struct LogThreshold(AtomicU8);

impl LogThreshold {
    /// Records the level the client asked for.
    pub(crate) fn set(&self, level: LoggingLevel) {
        self.0.store(rank(level), Ordering::Relaxed);
    }

    /// Whether a message at `level` should be sent.
    pub(crate) fn allows(&self, level: LoggingLevel) -> bool {
        rank(level) >= self.0.load(Ordering::Relaxed)
    }
}

/// Severity rank in RFC 5424 order, `debug` lowest.
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_filters_lower_levels() {
        let threshold = LogThreshold::default();
        assert!(threshold.allows(LoggingLevel::Debug));
        threshold.set(LoggingLevel::Warning);
        assert!(!threshold.allows(LoggingLevel::Info));
        assert!(threshold.allows(LoggingLevel::Warning));
        assert!(threshold.allows(LoggingLevel::Emergency));
    }
}
