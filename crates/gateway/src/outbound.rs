//! Outbound message streams: an ordered, bounded log of encoded messages that
//! one reader at a time consumes from a cursor.
//!
//! Every way the gateway talks to a client goes through one of these: the
//! per-request stream of a Streamable HTTP POST, the session's standalone
//! stream (GET, legacy SSE, stdio). Keeping delivered messages in a log (and
//! not in a channel) is what makes `Last-Event-ID` resumption a replay from a
//! cursor rather than a second mechanism.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// One encoded JSON-RPC message and its sequence number in its stream.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) seq: u64,
    pub(crate) data: Bytes,
}

#[derive(Debug)]
pub(crate) struct Outbound {
    /// Unique within the process; forms the first half of SSE event ids.
    id: u64,
    capacity: usize,
    state: Mutex<State>,
    changed: Notify,
    /// Bumped when a new reader takes over, so the previous one stops.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<Event>,
    next_seq: u64,
    closed: bool,
    dropped: u64,
    /// One past the highest sequence number handed to any reader.
    delivered: u64,
}

static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

/// What a reader got.
#[derive(Debug)]
pub(crate) enum Next {
    Event(Event),
    /// The stream is closed and the reader has seen everything.
    End,
    /// Another reader took over the stream.
    Superseded,
}

impl Outbound {
    /// A stream keeping at most `capacity` unread-or-recent messages; when it is
    /// full the oldest is dropped, so a client that never reads cannot grow
    /// the gateway.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            id: NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed),
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Appends a message; ignored once the stream is closed.
    pub(crate) fn push(&self, data: impl Into<Bytes>) {
        self.append(data.into(), false);
    }

    fn append(&self, data: Bytes, close: bool) {
        {
            let mut s = self.state.lock();
            if s.closed {
                return;
            }
            s.closed = close;
            let seq = s.next_seq;
            s.next_seq += 1;
            if s.events.len() >= self.capacity {
                s.events.pop_front();
                s.dropped += 1;
            }
            s.events.push_back(Event { seq, data });
        }
        self.changed.notify_waiters();
    }

    /// Appends a last message and closes the stream in one step, so a reader
    /// never sees the message without also seeing the end.
    pub(crate) fn finish(&self, data: impl Into<Bytes>) {
        self.append(data.into(), true);
    }

    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.changed.notify_waiters();
    }

    /// When the stream holds exactly one message and is closed, returns it:
    /// the whole exchange fits a plain JSON response.
    pub(crate) fn single(&self) -> Option<Bytes> {
        let s = self.state.lock();
        (s.closed && s.next_seq == 1 && s.events.len() == 1).then(|| s.events[0].data.clone())
    }

    /// Waits until the stream has at least one message or is closed.
    pub(crate) async fn wait_first(&self) {
        loop {
            let notified = self.changed.notified();
            {
                let s = self.state.lock();
                if s.next_seq > 0 || s.closed {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Registers a new reader; earlier readers get [`Next::Superseded`].
    pub(crate) fn take_over(&self) -> u64 {
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.changed.notify_waiters();
        g
    }

    /// Where a new reader without `Last-Event-ID` starts: after everything an
    /// earlier reader already took, so nothing is delivered twice.
    pub(crate) fn undelivered(&self) -> u64 {
        self.state.lock().delivered
    }

    /// Returns the next message at or after `cursor`, waiting for one.
    pub(crate) async fn next(&self, cursor: &mut u64, generation: u64) -> Next {
        loop {
            let notified = self.changed.notified();
            if self.generation.load(Ordering::Acquire) != generation {
                return Next::Superseded;
            }
            {
                let mut s = self.state.lock();
                if let Some(front) = s.events.front() {
                    // Messages dropped for capacity are skipped, not waited for.
                    let idx = cursor.saturating_sub(front.seq) as usize;
                    if *cursor < front.seq {
                        *cursor = front.seq;
                    }
                    if let Some(e) = s.events.get(idx).cloned() {
                        *cursor = e.seq + 1;
                        s.delivered = s.delivered.max(*cursor);
                        return Next::Event(e);
                    }
                }
                if s.closed {
                    return Next::End;
                }
            }
            notified.await;
        }
    }
}

/// Formats the SSE event id of message `seq`: `<stream>-<seq + 1>`. The
/// number is the cursor to resume *after* the message, so `<stream>-0` (the
/// priming event's id) resumes from the very first message.
pub(crate) fn event_id(stream: u64, seq: u64) -> String {
    format!("{stream}-{}", seq + 1)
}

/// The id of a stream's priming event: resuming from it replays everything.
pub(crate) fn priming_id(stream: u64) -> String {
    format!("{stream}-0")
}

/// Parses an id from [`event_id`] into (stream, cursor to resume from).
pub(crate) fn parse_event_id(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_sees_every_message_in_order_then_the_end() {
        let o = Outbound::new(8);
        let g = o.take_over();
        o.push(&b"a"[..]);
        o.push(&b"b"[..]);
        o.finish(&b"c"[..]);
        let mut cur = 0;
        let mut got = vec![];
        while let Next::Event(e) = o.next(&mut cur, g).await {
            got.push(e.data);
        }
        assert_eq!(got, vec!["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_full_stream_drops_the_oldest_and_the_reader_skips_ahead() {
        let o = Outbound::new(2);
        let g = o.take_over();
        for m in ["1", "2", "3"] {
            o.push(Bytes::from(m));
        }
        o.close();
        let mut cur = 0;
        let Next::Event(e) = o.next(&mut cur, g).await else {
            panic!()
        };
        assert_eq!(e.data, "2");
    }

    #[tokio::test]
    async fn resuming_from_a_cursor_replays_only_later_messages() {
        let o = Outbound::new(8);
        for m in ["1", "2", "3"] {
            o.push(Bytes::from(m));
        }
        o.close();
        let g = o.take_over();
        let mut cur = 2; // Last-Event-ID named seq 1
        let Next::Event(e) = o.next(&mut cur, g).await else {
            panic!()
        };
        assert_eq!(e.data, "3");
        assert!(matches!(o.next(&mut cur, g).await, Next::End));
    }

    #[tokio::test]
    async fn a_new_reader_supersedes_the_old_one() {
        let o = Outbound::new(8);
        let g1 = o.take_over();
        let _g2 = o.take_over();
        let mut cur = 0;
        assert!(matches!(o.next(&mut cur, g1).await, Next::Superseded));
    }

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(parse_event_id(&event_id(7, 42)), Some((7, 43)));
        assert_eq!(parse_event_id(&priming_id(7)), Some((7, 0)));
        assert_eq!(parse_event_id("x-1"), None);
    }
}
