//! The request/response core for transports that carry every message on one
//! channel each way (stdio, legacy HTTP+SSE).
//!
//! Such a wire says nothing about which of our requests a server-initiated
//! message relates to, so it is attributed here: progress by its token, other
//! related messages and server requests to the most recently sent pending
//! request that has a context.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use switchboard_protocol::{
    decode_message, encode_notification, encode_request, to_raw, Message, Notification, RequestId,
    ResponsePayload,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::deadline::{self, Budget, Stop};
use crate::route::{progress_token, Shared};
use crate::{CallError, RequestContext, MAX_PENDING};

/// Capacity of the outgoing queue; senders wait (bounded by their timeout)
/// when the transport cannot keep up.
pub(crate) const OUT_QUEUE: usize = 256;

/// How long a notification may wait for room in the outgoing queue.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

type Reply = oneshot::Sender<Result<Box<RawValue>, CallError>>;

struct Pending {
    reply: Reply,
    context: Option<Arc<dyn RequestContext>>,
    progress_token: Option<serde_json::Value>,
    /// Woken by progress for this request, which restarts its timeout;
    /// present only when the request carries a progress token.
    progress: Option<Arc<Notify>>,
}

/// One live connection's request state.
pub(crate) struct Peer {
    pub(crate) shared: Arc<Shared>,
    next_id: AtomicI64,
    /// Keyed by our id, which only grows: the last entry is the most recent.
    pending: parking_lot::Mutex<BTreeMap<i64, Pending>>,
    /// Encoded messages for the transport's writer.
    out: mpsc::Sender<Vec<u8>>,
    /// Fired once the connection is lost; `close_reason` says why.
    closed: CancellationToken,
    close_reason: parking_lot::Mutex<Option<String>>,
    /// The server speaks only the stateless revision (learned by the
    /// `server/discover` probe before any other request): every request
    /// carries its own `_meta` and there is no `initialize`.
    modern: AtomicBool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("upstream", &self.shared.name)
            .field("pending", &self.pending.lock().len())
            .field("closed", &self.closed.is_cancelled())
            .finish()
    }
}

impl Peer {
    /// Creates the core and the receiving end the transport's writer drains.
    pub(crate) fn new(shared: Arc<Shared>) -> (Arc<Self>, mpsc::Receiver<Vec<u8>>) {
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        let peer = Arc::new(Self {
            shared,
            next_id: AtomicI64::new(1),
            pending: parking_lot::Mutex::new(BTreeMap::new()),
            out,
            closed: CancellationToken::new(),
            close_reason: parking_lot::Mutex::new(None),
            modern: AtomicBool::new(false),
        });
        (peer, rx)
    }

    pub(crate) fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    pub(crate) fn close_reason(&self) -> String {
        self.close_reason
            .lock()
            .clone()
            .unwrap_or_else(|| "connection closed".into())
    }

    /// Switches the connection to stateless calls; set once, by the era
    /// probe, before any request of the gateway's is sent.
    pub(crate) fn set_modern(&self) {
        self.modern.store(true, Ordering::Release);
    }

    /// Marks the connection lost and fails every pending request. The first
    /// reason given wins.
    pub(crate) fn close(&self, reason: impl Into<String>) {
        {
            let mut r = self.close_reason.lock();
            if r.is_none() {
                *r = Some(reason.into());
            }
        }
        self.closed.cancel();
        let reason = self.close_reason();
        let drained = std::mem::take(&mut *self.pending.lock());
        for (_, p) in drained {
            let _ = p.reply.send(Err(self.shared.unavailable(reason.clone())));
        }
    }

    /// Sends a request and waits for its response, the cancel token or the
    /// deadline, whichever comes first. Progress for the request restarts
    /// its timeout within `budget.max`.
    pub(crate) async fn request(
        self: &Arc<Self>,
        method: &str,
        params: Option<Box<RawValue>>,
        context: Option<Arc<dyn RequestContext>>,
        cancel: &CancellationToken,
        budget: Budget,
    ) -> Result<Box<RawValue>, CallError> {
        if self.closed.is_cancelled() {
            return Err(self.shared.unavailable(self.close_reason()));
        }
        let (method, params) = if self.modern.load(Ordering::Acquire) {
            if let Some(error) = crate::modern::removed(method) {
                return Err(CallError::Rpc {
                    upstream: self.shared.name.clone(),
                    error,
                });
            }
            let params = crate::modern::with_meta(params.as_deref());
            (crate::modern::stateless_method(method), Some(params))
        } else {
            (method, params)
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let token = progress_token(params.as_deref(), true);
        let progress = token.is_some().then(|| Arc::new(Notify::new()));
        {
            let mut pending = self.pending.lock();
            if pending.len() >= MAX_PENDING {
                return Err(self
                    .shared
                    .unavailable(format!("too many requests in flight (limit {MAX_PENDING})")));
            }
            pending.insert(
                id,
                Pending {
                    reply,
                    context,
                    progress_token: token,
                    progress: progress.clone(),
                },
            );
        }
        let mut guard = PendingGuard {
            peer: self,
            id,
            reason: "request abandoned by the gateway",
            // The spec forbids cancelling `initialize`.
            send_cancel: method != "initialize",
        };
        let bytes = encode_request(&RequestId::Number(id), method, params.as_deref());
        let exchange = async {
            self.out
                .send(bytes)
                .await
                .map_err(|_| self.shared.unavailable(self.close_reason()))?;
            rx.await
                .unwrap_or_else(|_| Err(self.shared.unavailable(self.close_reason())))
        };
        match deadline::race(exchange, cancel, budget, progress.as_deref()).await {
            Ok(r) => r,
            Err(Stop::Cancelled) => {
                guard.reason = "cancelled by the client";
                Err(CallError::Cancelled {
                    upstream: self.shared.name.clone(),
                })
            }
            Err(Stop::TimedOut(after)) => {
                guard.reason = "timed out";
                Err(CallError::Timeout {
                    upstream: self.shared.name.clone(),
                    after,
                })
            }
        }
    }

    /// Sends a notification.
    pub(crate) async fn notify(
        &self,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<(), CallError> {
        if self.closed.is_cancelled() {
            return Err(self.shared.unavailable(self.close_reason()));
        }
        let bytes = encode_notification(method, params);
        match tokio::time::timeout(NOTIFY_TIMEOUT, self.out.send(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.shared.unavailable(self.close_reason())),
            Err(_) => Err(self.shared.unavailable("outgoing queue full")),
        }
    }

    /// Opens a `subscriptions/listen` stream on a stateless server. Its
    /// notifications arrive on the one channel like any unsolicited ones;
    /// its final response (sent only if the server tears the subscription
    /// down) finds no pending entry and is dropped. It lives as long as the
    /// connection, so it takes no slot among the pending requests.
    pub(crate) async fn listen(&self, params: &RawValue) -> Result<(), CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let params = crate::modern::with_meta(Some(params));
        let bytes = encode_request(
            &RequestId::Number(id),
            "subscriptions/listen",
            Some(&params),
        );
        match tokio::time::timeout(NOTIFY_TIMEOUT, self.out.send(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.shared.unavailable(self.close_reason())),
            Err(_) => Err(self.shared.unavailable("outgoing queue full")),
        }
    }

    /// Fails one pending request (e.g. its response was too large).
    pub(crate) fn fail(&self, id: i64, error: CallError) -> bool {
        match self.pending.lock().remove(&id) {
            Some(p) => {
                let _ = p.reply.send(Err(error));
                true
            }
            None => false,
        }
    }

    /// Handles one message read from the upstream.
    pub(crate) fn handle_message(self: &Arc<Self>, bytes: &[u8]) {
        let message = match decode_message(bytes) {
            Ok(m) => m,
            Err(e) => {
                if let Some(RequestId::Number(id)) = e.id() {
                    if self.fail(
                        *id,
                        self.shared.protocol(format!("malformed response: {e}")),
                    ) {
                        return;
                    }
                }
                tracing::warn!(upstream = %self.shared.name, error = %e, "ignoring malformed message");
                return;
            }
        };
        match message {
            Message::Response(response) => {
                let RequestId::Number(id) = response.id else {
                    tracing::debug!(upstream = %self.shared.name, "response with a foreign id dropped");
                    return;
                };
                // Late responses (after a timeout or cancel) find nothing and
                // are dropped silently.
                let Some(p) = self.pending.lock().remove(&id) else {
                    return;
                };
                let outcome = match response.payload {
                    ResponsePayload::Result(r) => Ok(r),
                    ResponsePayload::Error(error) => Err(CallError::Rpc {
                        upstream: self.shared.name.clone(),
                        error,
                    }),
                };
                let _ = p.reply.send(outcome);
            }
            Message::Request(request) => {
                let context = self.latest_context();
                let out = self.out.clone();
                self.shared
                    .spawn_answer(context, request, move |bytes| async move {
                        let _ = tokio::time::timeout(NOTIFY_TIMEOUT, out.send(bytes)).await;
                    });
            }
            Message::Notification(n) => self.route_notification(n),
        }
    }

    fn route_notification(&self, n: Notification) {
        if self.shared.cancel_inbound(&n) || n.method == crate::modern::LISTEN_ACK {
            return;
        }
        let context = match n.method.as_str() {
            "notifications/progress" => progress_token(n.params.as_deref(), false)
                .and_then(|token| self.on_progress(&token)),
            "notifications/message" => self.latest_context(),
            _ => None,
        };
        self.shared.deliver(context, n);
    }

    fn latest_context(&self) -> Option<Arc<dyn RequestContext>> {
        self.pending
            .lock()
            .values()
            .rev()
            .find_map(|p| p.context.clone())
    }

    /// Restarts the timeout of the request `token` belongs to and returns
    /// its context, where the progress goes.
    fn on_progress(&self, token: &serde_json::Value) -> Option<Arc<dyn RequestContext>> {
        let pending = self.pending.lock();
        let p = pending
            .values()
            .rev()
            .find(|p| p.progress_token.as_ref() == Some(token))?;
        if let Some(progress) = &p.progress {
            progress.notify_one();
        }
        p.context.clone()
    }
}

/// Removes a pending entry however the request ends; when it ends without a
/// response, tells the upstream to stop working on it.
struct PendingGuard<'a> {
    peer: &'a Peer,
    id: i64,
    reason: &'static str,
    send_cancel: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.peer.pending.lock().remove(&self.id).is_none() || !self.send_cancel {
            return;
        }
        let params = to_raw(&serde_json::json!({
            "requestId": self.id,
            "reason": self.reason,
        }));
        // Never waits: if the queue is full the upstream is not reading, and
        // the cancellation is a courtesy.
        let _ = self.peer.out.try_send(encode_notification(
            "notifications/cancelled",
            Some(&params),
        ));
    }
}

/// A peer with no transport: tests read what it sends from the receiver and
/// play the server by calling [`Peer::handle_message`].
#[cfg(test)]
pub(crate) fn test_peer() -> (Arc<Peer>, mpsc::Receiver<Vec<u8>>) {
    let (events, _) = mpsc::channel(16);
    let shared = Arc::new(Shared::new(
        "t".into(),
        events,
        Duration::from_secs(60),
        1024 * 1024,
        CancellationToken::new(),
        tokio_util::task::TaskTracker::new(),
    ));
    Peer::new(shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{decode_message, empty_object, encode_result};

    const MS: Duration = Duration::from_millis(1);

    /// Plays a server that answers the first request after `work`, sending
    /// progress with `token` every 100 ms meanwhile.
    fn serve_slowly(
        peer: Arc<Peer>,
        mut wire: mpsc::Receiver<Vec<u8>>,
        work: Duration,
        token: &'static str,
    ) {
        tokio::spawn(async move {
            let Some(bytes) = wire.recv().await else {
                return;
            };
            let Ok(Message::Request(request)) = decode_message(&bytes) else {
                panic!("expected a request");
            };
            let mut elapsed = Duration::ZERO;
            while elapsed < work {
                tokio::time::sleep(MS * 100).await;
                elapsed += MS * 100;
                let params = to_raw(&serde_json::json!({"progressToken": token, "progress": 1}));
                peer.handle_message(&encode_notification(
                    "notifications/progress",
                    Some(&params),
                ));
            }
            peer.handle_message(&encode_result(&request.id, &empty_object()));
            // Keep the wire open so cancellations can be sent.
            while wire.recv().await.is_some() {}
        });
    }

    fn budget() -> Budget {
        Budget {
            timeout: MS * 300,
            max: MS * 2000,
        }
    }

    fn with_token(token: &str) -> Option<Box<RawValue>> {
        Some(to_raw(
            &serde_json::json!({"_meta": {"progressToken": token}}),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn progress_with_the_requests_token_restarts_its_timeout() {
        let (peer, wire) = test_peer();
        serve_slowly(peer.clone(), wire, MS * 1000, "mine");
        let r = peer
            .request(
                "tools/call",
                with_token("mine"),
                None,
                &CancellationToken::new(),
                budget(),
            )
            .await;
        assert_eq!(r.unwrap().get(), "{}");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_with_a_foreign_token_restarts_nothing() {
        let (peer, wire) = test_peer();
        serve_slowly(peer.clone(), wire, MS * 1000, "other");
        let err = peer
            .request(
                "tools/call",
                with_token("mine"),
                None,
                &CancellationToken::new(),
                budget(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, CallError::Timeout { after, .. } if after == MS * 300),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_stateless_peer_sends_meta_in_every_request_and_no_ping() {
        let (peer, mut wire) = test_peer();
        peer.set_modern();
        let refused = peer
            .request(
                "resources/subscribe",
                Some(to_raw(&serde_json::json!({"uri": "test://a"}))),
                None,
                &CancellationToken::new(),
                Budget::fixed(Duration::from_secs(10)),
            )
            .await
            .unwrap_err();
        assert!(matches!(refused, CallError::Rpc { .. }), "{refused:?}");
        let server = peer.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let Some(bytes) = wire.recv().await else {
                    return;
                };
                let Ok(Message::Request(request)) = decode_message(&bytes) else {
                    panic!("expected a request");
                };
                let params: serde_json::Value =
                    serde_json::from_str(request.params.as_deref().unwrap().get()).unwrap();
                let answer = serde_json::json!({
                    "method": request.method,
                    "version": params["_meta"]["io.modelcontextprotocol/protocolVersion"],
                    "token": params["_meta"]["progressToken"],
                });
                server.handle_message(&encode_result(&request.id, &to_raw(&answer)));
            }
        });
        let ping = peer
            .request(
                "ping",
                None,
                None,
                &CancellationToken::new(),
                Budget::fixed(Duration::from_secs(10)),
            )
            .await
            .unwrap();
        let ping: serde_json::Value = serde_json::from_str(ping.get()).unwrap();
        assert_eq!(ping["method"], "server/discover");
        assert_eq!(ping["version"], "2026-07-28");
        let call = peer
            .request(
                "tools/call",
                with_token("mine"),
                None,
                &CancellationToken::new(),
                Budget::fixed(Duration::from_secs(10)),
            )
            .await
            .unwrap();
        let call: serde_json::Value = serde_json::from_str(call.get()).unwrap();
        assert_eq!(call["method"], "tools/call");
        assert_eq!(call["version"], "2026-07-28");
        assert_eq!(call["token"], "mine");
    }

    #[tokio::test(start_paused = true)]
    async fn endless_progress_stops_at_the_cap() {
        let (peer, wire) = test_peer();
        serve_slowly(peer.clone(), wire, MS * 60_000, "mine");
        let start = tokio::time::Instant::now();
        let err = peer
            .request(
                "tools/call",
                with_token("mine"),
                None,
                &CancellationToken::new(),
                budget(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, CallError::Timeout { after, .. } if after == MS * 2000),
            "{err:?}"
        );
        assert_eq!(start.elapsed(), MS * 2000);
    }
}
