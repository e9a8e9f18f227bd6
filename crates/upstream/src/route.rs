//! What every transport does with messages the upstream starts: answering
//! its requests and delivering its notifications.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use switchboard_protocol::{
    empty_object, encode_error, encode_result, ErrorObject, Notification, Request, RequestId,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{CallError, EventKind, RequestContext, UpstreamEvent};

/// Most server→client requests one upstream may have being answered at once;
/// more are refused rather than queued.
const MAX_SERVER_REQUESTS: usize = 64;

/// How long a Ready/Down event may wait for room in the events channel.
const EVENT_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// State every part of one upstream needs, whatever the transport.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    /// The downstream session this connection serves alone (a per-session
    /// pool's process); its events are marked with it.
    pub(crate) session: Option<Arc<str>>,
    events: mpsc::Sender<UpstreamEvent>,
    /// Default request timeout; also bounds answers to server requests.
    pub(crate) timeout: Duration,
    pub(crate) max_bytes: usize,
    /// Fired by `Upstream::shutdown`.
    pub(crate) shutdown: CancellationToken,
    /// Every task this upstream spawns, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    server_requests: Arc<Semaphore>,
    /// Server→client requests being answered, so the server's
    /// `notifications/cancelled` can stop them. At most
    /// `MAX_SERVER_REQUESTS` entries (one per permit).
    inbound: parking_lot::Mutex<HashMap<RequestId, CancellationToken>>,
}

impl Shared {
    pub(crate) fn new(
        name: Arc<str>,
        events: mpsc::Sender<UpstreamEvent>,
        timeout: Duration,
        max_bytes: usize,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            name,
            session: None,
            events,
            timeout,
            max_bytes,
            shutdown,
            tracker,
            server_requests: Arc::new(Semaphore::new(MAX_SERVER_REQUESTS)),
            inbound: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn unavailable(&self, reason: impl Into<String>) -> CallError {
        CallError::Unavailable {
            upstream: self.name.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn protocol(&self, detail: impl Into<String>) -> CallError {
        CallError::Protocol {
            upstream: self.name.clone(),
            detail: detail.into(),
        }
    }

    pub(crate) fn too_large(&self) -> CallError {
        CallError::TooLarge {
            upstream: self.name.clone(),
            limit: self.max_bytes,
        }
    }

    /// Reports a status change; waits a bounded time for channel room so a
    /// stalled gateway cannot stall reconnection.
    pub(crate) async fn emit_status(&self, kind: EventKind) {
        let event = UpstreamEvent {
            upstream: self.name.clone(),
            session: self.session.clone(),
            kind,
        };
        if self
            .events
            .send_timeout(event, EVENT_SEND_TIMEOUT)
            .await
            .is_err()
        {
            tracing::warn!(upstream = %self.name, "events channel full or closed: status event dropped");
        }
    }

    /// Reports an unattributed notification. Called from readers, so it never
    /// waits: when the gateway lags this far behind, the notification is
    /// dropped and logged.
    pub(crate) fn emit_notification(&self, notification: Notification) {
        let method = notification.method.clone();
        let event = UpstreamEvent {
            upstream: self.name.clone(),
            session: self.session.clone(),
            kind: EventKind::Notification(notification),
        };
        if self.events.try_send(event).is_err() {
            tracing::warn!(upstream = %self.name, %method, "events channel full or closed: notification dropped");
        }
    }

    /// Delivers a notification to the request it relates to, or to the events
    /// channel when none.
    pub(crate) fn deliver(
        &self,
        context: Option<Arc<dyn RequestContext>>,
        notification: Notification,
    ) {
        match context {
            Some(ctx) => ctx.notify(notification),
            None => self.emit_notification(notification),
        }
    }

    /// Spawns the answer to a server→client request; `send` delivers the
    /// encoded response the transport's way. Returns without waiting.
    pub(crate) fn spawn_answer<F, Fut>(
        self: &Arc<Self>,
        context: Option<Arc<dyn RequestContext>>,
        request: Request,
        send: F,
    ) where
        F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let Ok(permit) = self.server_requests.clone().try_acquire_owned() else {
            tracing::warn!(upstream = %self.name, method = %request.method, "too many server requests in flight: refused");
            let error = ErrorObject::new(
                switchboard_protocol::code::OVERLOADED,
                "too many concurrent requests from this server",
            );
            let bytes = encode_error(Some(&request.id), &error);
            self.tracker.spawn(async move {
                // Bounded: the transport's send has its own timeout.
                send(bytes).await;
            });
            return;
        };
        let shared = self.clone();
        let cancelled = CancellationToken::new();
        let id = request.id.clone();
        self.inbound.lock().insert(id.clone(), cancelled.clone());
        self.tracker.spawn(async move {
            tokio::select! {
                bytes = shared.answer(context, &request) => send(bytes).await,
                // The server withdrew its request: it wants no answer, and
                // dropping the context's future tells the gateway.
                _ = cancelled.cancelled() => {}
            }
            shared.inbound.lock().remove(&id);
            drop(permit);
        });
    }

    /// Stops answering a server request the server has cancelled; returns
    /// whether `notification` was such a cancellation (it is then consumed).
    pub(crate) fn cancel_inbound(&self, notification: &Notification) -> bool {
        if notification.method != "notifications/cancelled" {
            return false;
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Cancelled {
            request_id: RequestId,
        }
        let Some(params) = notification.params.as_deref() else {
            return true;
        };
        if let Ok(c) = serde_json::from_str::<Cancelled>(params.get()) {
            if let Some(token) = self.inbound.lock().remove(&c.request_id) {
                token.cancel();
            }
        }
        true
    }

    async fn answer(&self, context: Option<Arc<dyn RequestContext>>, request: &Request) -> Vec<u8> {
        if request.method == "ping" {
            return encode_result(&request.id, &empty_object());
        }
        let Some(ctx) = context else {
            return encode_error(
                Some(&request.id),
                &ErrorObject::method_not_found(&request.method),
            );
        };
        let call = ctx.request(&request.method, request.params.clone());
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.timeout, call) => r.unwrap_or_else(|_| {
                Err(ErrorObject::new(
                    switchboard_protocol::code::REQUEST_TIMEOUT,
                    format!("client did not answer {} in time", request.method),
                ))
            }),
            _ = self.shutdown.cancelled() => Err(ErrorObject::new(
                switchboard_protocol::code::REQUEST_CANCELLED,
                "gateway is shutting down",
            )),
        };
        match outcome {
            Ok(result) => encode_result(&request.id, &result),
            Err(error) => encode_error(Some(&request.id), &error),
        }
    }
}

/// Reads `params.progressToken` (notifications) or `params._meta.progressToken`
/// (requests), parsing only when the text mentions it.
pub(crate) fn progress_token(
    params: Option<&RawValue>,
    in_meta: bool,
) -> Option<serde_json::Value> {
    let raw = params?.get();
    if !raw.contains("progressToken") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Token {
        #[serde(rename = "progressToken")]
        token: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(rename = "_meta")]
        meta: Option<Token>,
    }
    if in_meta {
        serde_json::from_str::<Meta>(raw).ok()?.meta?.token
    } else {
        serde_json::from_str::<Token>(raw).ok()?.token
    }
}
