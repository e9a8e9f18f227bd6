//! A newline-delimited reader that never buffers more than its limit.
//!
//! stdio upstreams write one JSON message per line. A misbehaving one can
//! write a line of any length, so an over-limit line is skipped while it is
//! read: only its first [`HEAD_BYTES`] are kept, enough to find the request
//! id it answers and fail that request instead of letting it time out.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// How much of an over-limit line is kept for diagnosis.
pub(crate) const HEAD_BYTES: usize = 1024;

/// One line read by [`LineReader`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A whole line, without its `\n` (or `\r\n`).
    Full(Vec<u8>),
    /// A line over the limit, discarded; `head` holds its first bytes.
    TooLong { head: Vec<u8> },
}

/// Reads lines of at most `max` bytes from a buffered reader.
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    reader: R,
    max: usize,
    buf: Vec<u8>,
    /// Set while skipping the rest of an over-limit line.
    discarding: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub(crate) fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            max,
            buf: Vec::new(),
            discarding: false,
        }
    }

    /// Returns the next line, `None` at end of input. A final line without a
    /// newline is returned as well.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.discarding {
                    self.discarding = false;
                    return Ok(Some(Line::TooLong {
                        head: std::mem::take(&mut self.buf),
                    }));
                }
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.finish()));
            }
            match memchr::memchr(b'\n', available) {
                Some(pos) => {
                    if !self.discarding {
                        self.buf.extend_from_slice(&available[..pos]);
                    }
                    self.reader.consume(pos + 1);
                    if self.discarding {
                        self.discarding = false;
                        return Ok(Some(Line::TooLong {
                            head: std::mem::take(&mut self.buf),
                        }));
                    }
                    return Ok(Some(self.finish()));
                }
                None => {
                    let n = available.len();
                    if !self.discarding {
                        self.buf.extend_from_slice(available);
                    }
                    self.reader.consume(n);
                }
            }
            // `max + 1` leaves room for a `\r` that `finish` strips.
            if !self.discarding && self.buf.len() > self.max.saturating_add(1) {
                self.buf.truncate(HEAD_BYTES);
                self.buf.shrink_to(HEAD_BYTES);
                self.discarding = true;
            }
        }
    }

    fn finish(&mut self) -> Line {
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > self.max {
            line.truncate(HEAD_BYTES);
            Line::TooLong { head: line }
        } else {
            Line::Full(line)
        }
    }
}

/// Finds the numeric JSON-RPC id in the first bytes of a message, if it shows
/// (`"id":N` before any nested object would be the norm for a response).
pub(crate) fn scan_id(head: &[u8]) -> Option<i64> {
    let head = &head[..head.len().min(HEAD_BYTES)];
    let pos = memchr::memmem::find(head, b"\"id\"")?;
    let rest = &head[pos + 4..];
    let rest = trim_start(rest);
    let rest = trim_start(rest.strip_prefix(b":")?);
    let end = rest
        .iter()
        .enumerate()
        .position(|(i, b)| !(b.is_ascii_digit() || (i == 0 && *b == b'-')))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::BufReader;
    use tokio_util::io::StreamReader;

    /// Builds a reader that yields exactly these chunks, so tests control
    /// where chunk boundaries fall.
    fn chunked(chunks: &[&[u8]]) -> impl AsyncBufRead + Unpin {
        let items: Vec<std::io::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        BufReader::with_capacity(4, StreamReader::new(futures::stream::iter(items)))
    }

    async fn all(mut r: LineReader<impl AsyncBufRead + Unpin>) -> Vec<Line> {
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn lines_split_across_chunks_are_joined() {
        let r = LineReader::new(
            chunked(&[b"{\"a\"", b":1}\n{\"b", b"\":2}\r", b"\ntail"]),
            100,
        );
        assert_eq!(
            all(r).await,
            vec![
                Line::Full(b"{\"a\":1}".to_vec()),
                Line::Full(b"{\"b\":2}".to_vec()),
                Line::Full(b"tail".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn an_over_limit_line_is_skipped_and_the_next_line_survives() {
        let long = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":42,\"result\":\"{}\"}}\n",
            "x".repeat(5000)
        );
        let mut chunks: Vec<&[u8]> = long.as_bytes().chunks(7).collect();
        chunks.push(b"{\"ok\":1}\n");
        let r = LineReader::new(chunked(&chunks), 64);
        let lines = all(r).await;
        assert_eq!(lines.len(), 2);
        let Line::TooLong { head } = &lines[0] else {
            panic!("expected too long, got {:?}", lines[0]);
        };
        assert!(head.len() <= HEAD_BYTES);
        assert_eq!(scan_id(head), Some(42));
        assert_eq!(lines[1], Line::Full(b"{\"ok\":1}".to_vec()));
    }

    #[tokio::test]
    async fn the_buffer_never_grows_past_the_limit_while_discarding() {
        let big = vec![b'y'; 1 << 20];
        let mut r = LineReader::new(chunked(&[&big, &big, b"\n"]), 1000);
        let line = r.next_line().await.unwrap().unwrap();
        assert!(matches!(line, Line::TooLong { .. }));
        assert!(r.buf.capacity() <= 1000 + 4096 + HEAD_BYTES);
    }

    #[tokio::test]
    async fn a_line_exactly_at_the_limit_is_kept() {
        let r = LineReader::new(chunked(&[b"12345\r\n", b"123456\n"]), 5);
        let lines = all(r).await;
        assert_eq!(lines[0], Line::Full(b"12345".to_vec()));
        assert!(matches!(lines[1], Line::TooLong { .. }));
    }

    #[test]
    fn ids_are_found_only_where_they_are_well_formed() {
        assert_eq!(scan_id(br#"{"jsonrpc":"2.0", "id" : -7,"#), Some(-7));
        assert_eq!(scan_id(br#"{"id":"str"}"#), None);
        assert_eq!(scan_id(br#"{"jsonrpc":"2.0","result":"#), None);
    }
}
