//! `switchboard serve --stdio`: one session over stdin/stdout, for desktop
//! clients that launch their servers as child processes.

use std::sync::Arc;
use switchboard_protocol::{decode, encode_error, ErrorObject, Message};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::catalog::RouteId;
use crate::dispatch;
use crate::outbound::Next;
use crate::session::{Session, Transport};
use crate::state::Shared;

/// One line of input, or the news that it was too long.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Text(Vec<u8>),
    /// The line passed the limit; it was skipped to its end, never buffered.
    TooLong,
}

/// Reads newline-delimited input, holding at most `limit` bytes of one line.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(match (line.is_empty(), too_long) {
                (_, true) => Some(Line::TooLong),
                (true, false) => None,
                (false, false) => Some(Line::Text(line)),
            });
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > limit {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Some(if too_long {
                Line::TooLong
            } else {
                Line::Text(line)
            }));
        }
    }
}

pub(crate) async fn serve<R, W>(
    shared: Arc<Shared>,
    mut input: R,
    mut output: W,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let session = Arc::new(Session::new(RouteId::Federated, Transport::Stdio));
    shared
        .add_session(session.clone())
        .map_err(|e| std::io::Error::other(e.message))?;
    let out = session.standalone.clone();
    let writer = tokio::spawn(async move {
        let generation = out.take_over();
        let mut cursor = 0;
        while let Next::Event(e) = out.next(&mut cursor, generation).await {
            output.write_all(&e.data).await?;
            output.write_all(b"\n").await?;
            output.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    });
    let limit = shared.server.max_body_bytes;
    let requests = tokio_util::task::TaskTracker::new();
    loop {
        let line = tokio::select! {
            l = read_line(&mut input, limit) => l?,
            _ = shared.shutdown.cancelled() => break,
        };
        let bytes = match line {
            None => break,
            Some(Line::TooLong) => {
                let e = ErrorObject::new(
                    switchboard_protocol::code::MESSAGE_TOO_LARGE,
                    format!("message exceeds the {limit}-byte limit (server.max_body_bytes)"),
                );
                session.standalone.push(encode_error(None, &e));
                continue;
            }
            Some(Line::Text(t)) if t.iter().all(u8::is_ascii_whitespace) => continue,
            Some(Line::Text(t)) => t,
        };
        match decode(&bytes) {
            Err(e) => session
                .standalone
                .push(encode_error(e.id(), &e.to_error_object())),
            Ok(switchboard_protocol::Decoded::Batch(items)) => {
                for item in items {
                    handle(
                        &shared,
                        &session,
                        &requests,
                        item.map_err(|e| encode_error(e.id(), &e.to_error_object())),
                    );
                }
            }
            Ok(switchboard_protocol::Decoded::Single(m)) => {
                handle(&shared, &session, &requests, Ok(m))
            }
        }
    }
    // Input ended: let running requests answer, then close.
    requests.close();
    requests.wait().await;
    shared.end_session(&session.id).await;
    writer.await.map_err(std::io::Error::other)?
}

fn handle(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    requests: &tokio_util::task::TaskTracker,
    item: Result<Message, Vec<u8>>,
) {
    match item {
        Err(error) => session.standalone.push(error),
        Ok(Message::Request(r)) => {
            let (shared, session) = (shared.clone(), session.clone());
            requests.spawn(async move {
                let sink = session.standalone.clone();
                let body = dispatch::handle_request(&shared, &session, r, &sink).await;
                sink.push(body);
            });
        }
        Ok(other) => dispatch::handle_other(shared, session, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_over_the_limit_are_skipped_and_reading_goes_on() {
        let data = b"short\nthis-line-is-too-long\nok\nlast-without-newline".to_vec();
        // A tiny buffer forces lines to span several reads.
        let mut r = tokio::io::BufReader::with_capacity(4, &data[..]);
        let mut got = vec![];
        while let Some(l) = read_line(&mut r, 8).await.unwrap() {
            got.push(l);
        }
        assert_eq!(
            got,
            vec![
                Line::Text(b"short".to_vec()),
                Line::TooLong,
                Line::Text(b"ok".to_vec()),
                Line::TooLong,
            ]
        );
    }
}
