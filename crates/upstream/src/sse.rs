//! An incremental, bounded Server-Sent Events parser.
//!
//! Bytes go in as they arrive from the network, in chunks of any size; whole
//! events come out. Memory is bounded: an event's `data` may hold at most
//! `max_data` bytes and any single line at most `max_data` plus a little for
//! the field name; an event over the limit is dropped while it is read and
//! reported as [`SseItem::TooLarge`] with its first bytes, so the caller can
//! see which request it answered.

use crate::line::HEAD_BYTES;

/// Room for a field name and separator on top of the data limit.
const LINE_SLACK: usize = 64;
/// Longest `event:` type or `id:` kept; longer values make the event invalid.
const MAX_FIELD: usize = 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` type; `None` means the default, `message`.
    pub(crate) event: Option<String>,
    pub(crate) data: String,
    /// The `id:` carried by this event, if it had one.
    pub(crate) id: Option<String>,
}

/// What the parser produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseItem {
    Event(SseEvent),
    /// An event whose data exceeded the limit; `head` is its first bytes.
    TooLarge {
        head: Vec<u8>,
    },
}

/// Parser state carried across chunks.
#[derive(Debug)]
pub(crate) struct SseParser {
    max_data: usize,
    line: Vec<u8>,
    /// Skipping the rest of an over-limit line.
    skipping_line: bool,
    /// The previous chunk ended in `\r`; a leading `\n` belongs to it.
    after_cr: bool,
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    event_id: Option<String>,
    oversized: bool,
    head: Vec<u8>,
    last_event_id: Option<String>,
    retry: Option<u64>,
}

impl SseParser {
    pub(crate) fn new(max_data: usize) -> Self {
        Self {
            max_data,
            line: Vec::new(),
            skipping_line: false,
            after_cr: false,
            data: Vec::new(),
            has_data: false,
            event: None,
            event_id: None,
            oversized: false,
            head: Vec::new(),
            last_event_id: None,
            retry: None,
        }
    }

    /// The last `id:` seen on the stream, for `Last-Event-ID` on reconnect.
    pub(crate) fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The reconnection delay the server asked for, in milliseconds.
    pub(crate) fn retry_ms(&self) -> Option<u64> {
        self.retry
    }

    /// Feeds a chunk; complete events are appended to `out`.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseItem>) {
        if self.after_cr {
            self.after_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        while !chunk.is_empty() {
            match memchr::memchr2(b'\n', b'\r', chunk) {
                Some(pos) => {
                    self.push_line_bytes(&chunk[..pos]);
                    let was_cr = chunk[pos] == b'\r';
                    chunk = &chunk[pos + 1..];
                    if was_cr {
                        if chunk.is_empty() {
                            self.after_cr = true;
                        } else if chunk[0] == b'\n' {
                            chunk = &chunk[1..];
                        }
                    }
                    self.end_line(out);
                }
                None => {
                    self.push_line_bytes(chunk);
                    chunk = &[];
                }
            }
        }
    }

    /// Ends the stream: an event without its terminating blank line is
    /// discarded, as the SSE specification requires.
    pub(crate) fn finish(&mut self) {
        self.line.clear();
        self.skipping_line = false;
        self.reset_event();
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.skipping_line {
            return;
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() > self.max_data.saturating_add(LINE_SLACK) {
            // Keep what identifies the message, drop the rest as it comes.
            if self.head.is_empty() {
                let start = memchr::memchr(b':', &self.line).map_or(0, |p| p + 1);
                let end = (start + HEAD_BYTES).min(self.line.len());
                self.head = self.line[start..end].to_vec();
            }
            self.line = Vec::new();
            self.skipping_line = true;
            self.oversized = true;
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseItem>) {
        if self.skipping_line {
            self.skipping_line = false;
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment (keep-alive)
        }
        let (field, value) = match memchr::memchr(b':', &line) {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &[][..]),
        };
        match field {
            b"data" => {
                if self.oversized {
                    return;
                }
                if self.data.len() + value.len() + 1 > self.max_data.saturating_add(1) {
                    self.oversized = true;
                    if self.head.is_empty() {
                        let mut head = self.data.clone();
                        head.extend_from_slice(value);
                        head.truncate(HEAD_BYTES);
                        self.head = head;
                    }
                    self.data = Vec::new();
                    return;
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"event" => self.event = short_string(value),
            // An id containing NUL is ignored (SSE specification).
            b"id" if !value.contains(&0) => {
                self.event_id = short_string(value);
                self.last_event_id = self.event_id.clone();
            }
            b"retry" => {
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        if self.oversized {
            out.push(SseItem::TooLarge {
                head: std::mem::take(&mut self.head),
            });
        } else if self.has_data {
            let mut data = std::mem::take(&mut self.data);
            data.pop(); // the trailing '\n'
            out.push(SseItem::Event(SseEvent {
                event: self.event.take(),
                data: String::from_utf8_lossy(&data).into_owned(),
                id: self.event_id.take(),
            }));
        }
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event = None;
        self.event_id = None;
        self.oversized = false;
        self.head.clear();
    }
}

fn short_string(value: &[u8]) -> Option<String> {
    (value.len() <= MAX_FIELD).then(|| String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize, max: usize) -> (Vec<SseItem>, SseParser) {
        let mut p = SseParser::new(max);
        let mut out = Vec::new();
        for c in input.chunks(piece) {
            p.feed(c, &mut out);
        }
        (out, p)
    }

    fn event(event: Option<&str>, data: &str, id: Option<&str>) -> SseItem {
        SseItem::Event(SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        })
    }

    #[test]
    fn events_parse_the_same_whatever_the_chunk_boundaries() {
        let input = b": keep-alive\r\nid: 1\r\nevent: endpoint\r\ndata: /messages?s=1\r\n\r\nretry: 1500\ndata: {\"a\":\ndata:1}\n\nid: 7\ndata:\n\n";
        for piece in 1..input.len() {
            let (out, p) = parse_in_pieces(input, piece, 1000);
            assert_eq!(
                out,
                vec![
                    event(Some("endpoint"), "/messages?s=1", Some("1")),
                    event(None, "{\"a\":\n1}", None),
                    event(None, "", Some("7")),
                ],
                "piece size {piece}"
            );
            assert_eq!(p.last_event_id(), Some("7"));
            assert_eq!(p.retry_ms(), Some(1500));
        }
    }

    #[test]
    fn a_priming_event_with_only_an_id_sets_the_resume_point_without_dispatching() {
        let (out, p) = parse_in_pieces(b"id: abc\n\n", 3, 100);
        assert!(out.is_empty());
        assert_eq!(p.last_event_id(), Some("abc"));
    }

    #[test]
    fn an_oversized_event_is_reported_with_its_head_and_the_stream_continues() {
        let big = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":\"{}\"}}\n\ndata: ok\n\n",
            "z".repeat(10_000)
        );
        for piece in [1, 13, 4096, big.len()] {
            let (out, p) = parse_in_pieces(big.as_bytes(), piece, 512);
            assert_eq!(out.len(), 2, "piece size {piece}");
            let SseItem::TooLarge { head } = &out[0] else {
                panic!("expected TooLarge")
            };
            assert_eq!(crate::line::scan_id(head), Some(9));
            assert_eq!(out[1], event(None, "ok", None));
            assert!(p.line.capacity() <= 512 + LINE_SLACK + 4096 * 2);
        }
    }

    #[test]
    fn many_small_data_lines_cannot_exceed_the_limit() {
        let mut input = String::new();
        for _ in 0..100 {
            input.push_str("data: 0123456789\n");
        }
        input.push('\n');
        let (out, _) = parse_in_pieces(input.as_bytes(), 5, 200);
        assert!(matches!(out.as_slice(), [SseItem::TooLarge { .. }]));
    }

    #[test]
    fn an_unterminated_event_at_stream_end_is_dropped() {
        let mut p = SseParser::new(100);
        let mut out = Vec::new();
        p.feed(b"data: half", &mut out);
        p.finish();
        p.feed(b"\n\n", &mut out);
        assert!(out.is_empty());
    }
}
