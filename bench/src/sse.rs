//! An incremental `text/event-stream` parser that yields the `data` of each event.
//!
//! Streamable HTTP servers may answer a POST with an SSE stream that carries a priming event
//! (an `id` and empty data), notifications and then the response; chunks from the socket split
//! lines and events anywhere, so the parser buffers partial lines between pushes. Only `data`
//! matters to the bench: `id`, `event` and `retry` fields and `:` comments are skipped. Lines end
//! with LF or CRLF (what every MCP server emits); a lone CR as line end is not supported.

/// Parser state carried between chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes of the current, not yet terminated line(s).
    pending: Vec<u8>,
    /// The current event's data lines, joined with `\n` as the SSE spec says.
    data: Vec<u8>,
    /// Whether the current event had a `data` field at all (an empty one still counts).
    has_data: bool,
}

impl SseParser {
    /// Feeds a chunk and calls `on_event` with each completed event's data, in order.
    ///
    /// Returns `true` as soon as `on_event` returns `true` (the caller found what it wanted); the
    /// rest of the chunk is then left unparsed, since the caller stops reading the stream.
    pub(crate) fn push(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8]) -> bool) -> bool {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        let mut found = false;
        while let Some(offset) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let line = &self.pending[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            start = end + 1;
            if line.is_empty() {
                if self.has_data && on_event(&self.data) {
                    found = true;
                }
                self.data.clear();
                self.has_data = false;
                if found {
                    break;
                }
            } else {
                Self::field(line, &mut self.data, &mut self.has_data);
            }
        }
        self.pending.drain(..start);
        found
    }

    /// Treats the end of the stream as the end of the last event.
    ///
    /// The SSE spec drops an unterminated event, but a server that closes right after its last
    /// `data:` line is common enough that being lenient beats misreporting a valid response.
    pub(crate) fn finish(&mut self, mut on_event: impl FnMut(&[u8]) -> bool) -> bool {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            Self::field(line, &mut self.data, &mut self.has_data);
        }
        let found = self.has_data && on_event(&self.data);
        self.data.clear();
        self.has_data = false;
        found
    }

    fn field(line: &[u8], data: &mut Vec<u8>, has_data: &mut bool) {
        if line.first() == Some(&b':') {
            return; // comment / keep-alive
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        if name == b"data" {
            if *has_data {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
            *has_data = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&str]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk.as_bytes(), |d| {
                out.push(String::from_utf8_lossy(d).into_owned());
                false
            });
        }
        parser.finish(|d| {
            out.push(String::from_utf8_lossy(d).into_owned());
            false
        });
        out
    }

    #[test]
    fn priming_event_then_response() {
        let got = events(&["id: 0\nretry: 3000\ndata:\n\n", "data: {\"id\":1}\n\n"]);
        assert_eq!(got, vec!["".to_owned(), "{\"id\":1}".to_owned()]);
    }

    #[test]
    fn split_across_chunks_and_crlf() {
        let got = events(&["da", "ta: {\"a\":", "1}\r", "\n\r\n: ping\r\n\r\n"]);
        assert_eq!(got, vec!["{\"a\":1}".to_owned()]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newline() {
        let got = events(&["event: message\ndata: a\ndata:b\n\n"]);
        assert_eq!(got, vec!["a\nb".to_owned()]);
    }

    #[test]
    fn unterminated_last_event_is_kept() {
        let got = events(&["data: x\n\ndata: y"]);
        assert_eq!(got, vec!["x".to_owned(), "y".to_owned()]);
    }

    #[test]
    fn stops_at_the_wanted_event() {
        let mut parser = SseParser::default();
        let mut seen = Vec::new();
        let found = parser.push(b"data: 1\n\ndata: 2\n\ndata: 3\n\n", |d| {
            seen.push(d.to_vec());
            d == b"2"
        });
        assert!(found);
        assert_eq!(seen, vec![b"1".to_vec(), b"2".to_vec()]);
    }
}
