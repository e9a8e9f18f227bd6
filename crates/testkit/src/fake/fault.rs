//! The per-call fault schedule: which tool call fails or crashes.
//!
//! Kept apart from the tools so the arithmetic (1-based call numbers,
//! crash before fail) is unit-tested without a server.

/// What the Nth tool call should suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Answer normally.
    None,
    /// Answer with a JSON-RPC internal error (`--fail-every`).
    Fail,
    /// Exit the process with code 1 before answering (`--crash-after-calls`).
    Crash,
}

/// Decides the fault for call number `call` (1-based).
///
/// A crash wins over a failure: the process is gone either way.
pub(super) fn for_call(call: u64, fail_every: Option<u64>, crash_after: Option<u64>) -> Fault {
    if crash_after.is_some_and(|n| call >= n) {
        Fault::Crash
    } else if fail_every.is_some_and(|n| n > 0 && call.is_multiple_of(n)) {
        Fault::Fail
    } else {
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_third_call_fails() {
        let faults: Vec<_> = (1..=6).map(|c| for_call(c, Some(3), None)).collect();
        assert_eq!(
            faults,
            [
                Fault::None,
                Fault::None,
                Fault::Fail,
                Fault::None,
                Fault::None,
                Fault::Fail
            ]
        );
    }

    #[test]
    fn crash_on_the_nth_call_wins() {
        assert_eq!(for_call(1, Some(1), Some(2)), Fault::Fail);
        assert_eq!(for_call(2, Some(1), Some(2)), Fault::Crash);
    }

    #[test]
    fn no_flags_no_faults() {
        assert_eq!(for_call(1_000, None, None), Fault::None);
    }
}
