//! Legacy HTTP+SSE upstreams (protocol revision 2024-11-05).
//!
//! A GET opens an SSE stream whose first `endpoint` event names where to POST
//! messages; every answer and server message then arrives on that stream.
//! The wire associates nothing with our requests, so the message-channel core
//! ([`Peer`]) attributes related messages. The stream ending means the
//! connection is lost.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use switchboard_config::HttpConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::http::{build_client, build_headers, describe, read_prefix};
use crate::line::scan_id;
use crate::peer::Peer;
use crate::route::Shared;
use crate::sse::{SseItem, SseParser};

/// Bound on one POST of a message.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// A live HTTP+SSE connection.
#[derive(Debug)]
pub(crate) struct SseLink {
    pub(crate) peer: Arc<Peer>,
}

type ByteStream = futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>;

/// Opens the stream, waits for the `endpoint` event and starts the reader and
/// writer. The caller bounds the whole by the connect timeout.
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    cfg: &HttpConfig,
    connect_timeout: Duration,
) -> Result<SseLink, String> {
    let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("invalid url: {e}"))?;
    let client = build_client(connect_timeout)?;
    let headers = build_headers(cfg)?;
    let resp = client
        .get(url.clone())
        .headers(headers.clone())
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| format!("sse connect failed: {}", describe(&e)))?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !status.is_success() || !content_type.starts_with("text/event-stream") {
        let body = read_prefix(resp, 200).await;
        return Err(format!(
            "sse connect answered {status} ({content_type}): {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let mut stream: ByteStream = resp.bytes_stream().boxed();
    let mut parser = SseParser::new(shared.max_bytes);
    let mut items = Vec::new();
    let endpoint = 'found: loop {
        let chunk = match stream.next().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(format!("sse stream broke: {}", describe(&e))),
            None => return Err("sse stream ended before the endpoint event".into()),
        };
        parser.feed(&chunk, &mut items);
        for item in items.drain(..) {
            if let SseItem::Event(ev) = item {
                if ev.event.as_deref() == Some("endpoint") {
                    break 'found ev.data;
                }
            }
        }
    };
    let endpoint = url
        .join(endpoint.trim())
        .map_err(|e| format!("invalid endpoint {endpoint:?}: {e}"))?;
    // Our POSTs carry the configured credentials: never to another origin.
    if endpoint.origin() != url.origin() {
        return Err(format!(
            "endpoint {} is not on the origin of the configured url",
            endpoint.origin().ascii_serialization()
        ));
    }
    let (peer, out) = Peer::new(shared.clone());
    shared
        .tracker
        .spawn(read_loop(peer.clone(), stream, parser));
    shared
        .tracker
        .spawn(write_loop(peer.clone(), client, endpoint, headers, out));
    Ok(SseLink { peer })
}

async fn read_loop(peer: Arc<Peer>, mut stream: ByteStream, mut parser: SseParser) {
    let mut items = Vec::new();
    loop {
        let chunk = tokio::select! {
            c = stream.next() => c,
            _ = peer.closed().cancelled() => return,
        };
        match chunk {
            Some(Ok(c)) => parser.feed(&c, &mut items),
            Some(Err(e)) => {
                peer.close(format!("sse stream broke: {}", describe(&e)));
                return;
            }
            None => {
                peer.close("sse stream ended");
                return;
            }
        }
        for item in items.drain(..) {
            match item {
                SseItem::Event(ev) => {
                    if matches!(ev.event.as_deref(), None | Some("message"))
                        && !ev.data.trim().is_empty()
                    {
                        peer.handle_message(ev.data.as_bytes());
                    }
                }
                SseItem::TooLarge { head } => {
                    let failed =
                        scan_id(&head).is_some_and(|id| peer.fail(id, peer.shared.too_large()));
                    tracing::warn!(upstream = %peer.shared.name, limit = peer.shared.max_bytes, failed_request = failed, "discarded an event over the size limit");
                }
            }
        }
    }
}

/// POSTs messages in order. A refused POST of a request fails that request
/// at once rather than letting it time out.
async fn write_loop(
    peer: Arc<Peer>,
    client: reqwest::Client,
    endpoint: reqwest::Url,
    headers: HeaderMap,
    mut out: mpsc::Receiver<Vec<u8>>,
) {
    let closed: CancellationToken = peer.closed().clone();
    loop {
        let bytes = tokio::select! {
            m = out.recv() => match m {
                Some(b) => b,
                None => return,
            },
            _ = closed.cancelled() => return,
        };
        let id = own_request_id(&bytes);
        let send = client
            .post(endpoint.clone())
            .headers(headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(bytes)
            .send();
        let failure = match tokio::time::timeout(POST_TIMEOUT, send).await {
            Ok(Ok(resp)) if resp.status().is_success() => None,
            Ok(Ok(resp)) => {
                let status = resp.status();
                let body = read_prefix(resp, 200).await;
                Some(peer.shared.protocol(format!(
                    "post answered http status {status}: {}",
                    String::from_utf8_lossy(&body)
                )))
            }
            Ok(Err(e)) => Some(
                peer.shared
                    .unavailable(format!("post failed: {}", describe(&e))),
            ),
            Err(_) => Some(peer.shared.unavailable("post timed out")),
        };
        if let Some(error) = failure {
            tracing::warn!(upstream = %peer.shared.name, error = %error, "message not delivered");
            if let Some(id) = id {
                peer.fail(id, error);
            }
        }
    }
}

/// The id of a request we encoded (`{"jsonrpc":"2.0","id":N,"method":...`);
/// `None` for notifications and for our answers to the server's requests.
fn own_request_id(bytes: &[u8]) -> Option<i64> {
    let rest = bytes.strip_prefix(br#"{"jsonrpc":"2.0","id":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if !rest[digits..].starts_with(br#","method":"#) {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

impl SseLink {
    pub(crate) async fn lost(&mut self) -> String {
        self.peer.closed().cancelled().await;
        self.peer.close_reason()
    }

    pub(crate) async fn stop(self) {
        self.peer.close("upstream stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_requests_are_matched_to_pending_ids() {
        use switchboard_protocol::{
            empty_object, encode_notification, encode_request, encode_result, RequestId,
        };
        let req = encode_request(&RequestId::Number(12), "tools/list", None);
        assert_eq!(own_request_id(&req), Some(12));
        let answer = encode_result(&RequestId::Number(12), &empty_object());
        assert_eq!(own_request_id(&answer), None);
        assert_eq!(
            own_request_id(&encode_notification("notifications/initialized", None)),
            None
        );
    }
}
