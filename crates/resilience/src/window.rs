//! A fixed-memory sliding time window, shared by the breaker's failure rate and the retry budget.

use std::time::Duration;

use tokio::time::Instant;

/// How many buckets a window is cut into. The window slides one bucket at a time, so an entry
/// stays counted for between 90 % and 100 % of the span: exact enough for a threshold, and the
/// memory stays fixed however many calls arrive (a log of every call would grow with traffic).
pub(crate) const BUCKETS: usize = 10;

/// Per-bucket aggregates over the last `span` of tokio time.
#[derive(Debug)]
pub(crate) struct SlidingWindow<T> {
    /// Bucket numbers count from here, so they only grow.
    origin: Instant,
    /// `span / BUCKETS`, at least a nanosecond so that bucket numbers are defined.
    bucket_len: Duration,
    /// Each bucket remembers which bucket number it holds, so a stale one is recognised (and
    /// recycled) without a sweep.
    buckets: [(u64, T); BUCKETS],
}

impl<T: Default + Copy> SlidingWindow<T> {
    pub(crate) fn new(span: Duration, now: Instant) -> Self {
        Self {
            origin: now,
            bucket_len: (span / BUCKETS as u32).max(Duration::from_nanos(1)),
            buckets: [(0, T::default()); BUCKETS],
        }
    }

    fn bucket_number(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.bucket_len.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Returns the bucket that `now` falls in, emptied first if it last held an older period.
    pub(crate) fn current(&mut self, now: Instant) -> &mut T {
        let number = self.bucket_number(now);
        let slot = &mut self.buckets[(number % BUCKETS as u64) as usize];
        if slot.0 != number {
            *slot = (number, T::default());
        }
        &mut slot.1
    }

    /// Returns the buckets still inside the window at `now`.
    pub(crate) fn live(&self, now: Instant) -> impl Iterator<Item = &T> {
        let number = self.bucket_number(now);
        self.buckets
            .iter()
            .filter(move |(n, _)| *n <= number && n.saturating_add(BUCKETS as u64) > number)
            .map(|(_, value)| value)
    }

    /// Forgets everything, as if the window had just been created at `now`.
    pub(crate) fn clear(&mut self, now: Instant) {
        *self = Self {
            origin: now,
            bucket_len: self.bucket_len,
            buckets: [(0, T::default()); BUCKETS],
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_age_out_bucket_by_bucket() {
        let mut window = SlidingWindow::<u32>::new(Duration::from_secs(10), Instant::now());
        *window.current(Instant::now()) += 1;
        tokio::time::advance(Duration::from_secs(5)).await;
        *window.current(Instant::now()) += 10;
        assert_eq!(window.live(Instant::now()).sum::<u32>(), 11);

        // 10 s after the first entry its bucket has left the window; the second is still in.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(window.live(Instant::now()).sum::<u32>(), 10);

        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(window.live(Instant::now()).sum::<u32>(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recycled_bucket_starts_empty() {
        let mut window = SlidingWindow::<u32>::new(Duration::from_secs(10), Instant::now());
        *window.current(Instant::now()) += 7;
        // Exactly one full window later the same bucket index comes round again.
        tokio::time::advance(Duration::from_secs(10)).await;
        *window.current(Instant::now()) += 1;
        assert_eq!(window.live(Instant::now()).sum::<u32>(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn clear_forgets_everything() {
        let mut window = SlidingWindow::<u32>::new(Duration::from_secs(10), Instant::now());
        *window.current(Instant::now()) += 3;
        window.clear(Instant::now());
        assert_eq!(window.live(Instant::now()).sum::<u32>(), 0);
    }
}
