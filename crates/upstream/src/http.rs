//! Streamable HTTP upstreams (protocol revisions 2025-03-26 … 2025-11-25).
//!
//! Each message is its own POST. A request's answer comes back either as one
//! JSON body or as an SSE stream that may first carry messages related to
//! that request (progress, logs, server→client requests), which therefore go
//! to that request's context. A background GET stream carries unrelated
//! server messages. Bodies are bounded while they stream.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::StatusCode;
use serde_json::value::RawValue;
use switchboard_config::HttpConfig;
use switchboard_protocol::{
    decode_message, encode_notification, encode_request, to_raw, Message, RequestId,
    ResponsePayload,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deadline::{self, Budget, ProgressWatch, Stop};
use crate::handshake;
use crate::line::scan_id;
use crate::route::Shared;
use crate::sse::{SseItem, SseParser};
use crate::{CallError, CallOptions, EventKind, RequestContext, ServerInfo, MAX_PENDING};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";
/// Resumptions of one request's stream (GET + `Last-Event-ID`) before giving up.
const MAX_RESUMES: u32 = 5;
/// Longest `retry:` delay honoured before resuming a stream.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Bound on the small POSTs that carry notifications and answers.
const SMALL_POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the DELETE that ends the session at shutdown.
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of an error body is read for the error message.
const ERROR_BODY_BYTES: usize = 4096;
/// How many characters of an error body the error message quotes.
const ERROR_BODY_CHARS: usize = 200;
const GET_BACKOFF_START: Duration = Duration::from_secs(1);
const GET_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One Streamable HTTP session with an upstream.
#[derive(Debug)]
pub(crate) struct HttpSession {
    shared: Arc<Shared>,
    client: reqwest::Client,
    url: reqwest::Url,
    /// Configured headers (credentials), sent on every request.
    headers: HeaderMap,
    /// The gateway's own OAuth client for this upstream: a token added to
    /// every request and renewed before it expires, or after a 401.
    oauth: Option<switchboard_auth::UpstreamAuth>,
    connect_timeout: Duration,
    state: parking_lot::RwLock<SessionState>,
    /// Serialises re-initialisation after a 404.
    reinit: tokio::sync::Mutex<()>,
    next_id: AtomicI64,
    in_flight: AtomicUsize,
    /// Fired when the session is lost for good or stopped; ends background
    /// tasks.
    closed: CancellationToken,
    close_reason: parking_lot::Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct SessionState {
    session_id: Option<HeaderValue>,
    protocol_version: Option<HeaderValue>,
    /// Bumped by each successful initialisation, so concurrent 404s
    /// re-initialise only once.
    generation: u64,
    /// The upstream speaks only the stateless revision: every request is
    /// self-contained, there is no session, GET stream or cancel message.
    modern: bool,
    /// Stateless only: tools whose arguments go in `Mcp-Param-*` headers.
    param_headers: crate::modern::ParamHeaders,
}

/// Builds the client every HTTP transport uses: pooled keep-alive, bounded
/// connects, and redirects only within the configured origin (headers carry
/// credentials).
pub(crate) fn build_client(connect_timeout: Duration) -> Result<reqwest::Client, String> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() < 3 && same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(policy)
        .build()
        .map_err(|e| format!("cannot build http client: {}", describe(&e)))
}

/// Turns the configured header list into a header map.
pub(crate) fn build_headers(cfg: &HttpConfig) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in &cfg.headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let mut v = HeaderValue::from_str(value.expose())
            .map_err(|_| format!("invalid value for header {name:?}"))?;
        v.set_sensitive(true);
        map.append(n, v);
    }
    Ok(map)
}

/// The OAuth client of an upstream, from its config.
fn oauth_credential(
    upstream: &str,
    url: &str,
    o: &switchboard_config::UpstreamOAuthConfig,
) -> Result<switchboard_auth::UpstreamAuth, String> {
    use switchboard_auth::upstream::{
        ClientAuthMethod, ClientCredentials, Grant, OAuthClientSettings, TokenEndpoint,
        UpstreamCredential,
    };
    let parse =
        |u: &str| reqwest::Url::parse(u).map_err(|e| format!("invalid oauth url {u:?}: {e}"));
    let token_endpoint = match &o.token_url {
        Some(t) => TokenEndpoint::Url(parse(t)?),
        None => TokenEndpoint::Discover {
            resource_url: parse(url)?,
        },
    };
    let settings = OAuthClientSettings {
        token_endpoint,
        client: ClientCredentials {
            client_id: o.client_id.clone(),
            client_secret: o.client_secret.clone(),
            method: if o.secret_in_body {
                ClientAuthMethod::ClientSecretPost
            } else {
                ClientAuthMethod::ClientSecretBasic
            },
        },
        scopes: o.scopes.clone(),
        resource: o.resource.clone(),
        grant: match &o.refresh_token {
            Some(t) => Grant::RefreshToken(t.clone()),
            None => Grant::ClientCredentials,
        },
        timing: Default::default(),
    };
    switchboard_auth::UpstreamAuth::new(upstream, UpstreamCredential::OAuthClient(settings))
        .map_err(|e| format!("oauth: {e}"))
}

/// Describes a reqwest error with its causes, without the URL (which may
/// carry a token in its query).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        let text = err.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        source = err.source();
    }
    out
}

/// Connects: `initialize`, `notifications/initialized`, then the GET stream.
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    cfg: &HttpConfig,
    connect_timeout: Duration,
) -> Result<(Arc<HttpSession>, ServerInfo), String> {
    let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("invalid url: {e}"))?;
    let session = Arc::new(HttpSession {
        shared: shared.clone(),
        client: build_client(connect_timeout)?,
        url,
        headers: build_headers(cfg)?,
        oauth: cfg
            .oauth
            .as_ref()
            .map(|o| oauth_credential(&shared.name, &cfg.url, o))
            .transpose()?,
        connect_timeout,
        state: parking_lot::RwLock::new(SessionState::default()),
        reinit: tokio::sync::Mutex::new(()),
        next_id: AtomicI64::new(1),
        in_flight: AtomicUsize::new(0),
        closed: shared.shutdown.child_token(),
        close_reason: parking_lot::Mutex::new(None),
    });
    if let Some(info) = session.probe_modern().await {
        tracing::info!(upstream = %shared.name, "upstream speaks only 2026-07-28; calling it statelessly");
        if let Some(params) = crate::modern::listen_params(&info.capabilities) {
            let s = session.clone();
            shared
                .tracker
                .spawn(async move { s.listen_loop(params).await });
        }
        return Ok((session, info));
    }
    let info = session.initialize().await.map_err(|e| e.to_string())?;
    let s = session.clone();
    shared.tracker.spawn(async move { s.get_loop().await });
    Ok((session, info))
}

impl HttpSession {
    /// Forwards one request and waits for its answer, the cancel token or the
    /// deadline; progress on the request's stream restarts its timeout
    /// within `budget.max`.
    pub(crate) async fn request(
        self: &Arc<Self>,
        method: &str,
        params: Option<Box<RawValue>>,
        options: &CallOptions,
        budget: Budget,
    ) -> Result<Box<RawValue>, CallError> {
        if self.closed.is_cancelled() {
            return Err(self.shared.unavailable(self.close_reason()));
        }
        let _slot = InFlight::acquire(self)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (body, extra) = if self.state.read().modern {
            if let Some(error) = crate::modern::removed(method) {
                return Err(CallError::Rpc {
                    upstream: self.shared.name.clone(),
                    error,
                });
            }
            let p = crate::modern::prepare_with(
                method,
                params.as_deref(),
                &self.state.read().param_headers,
            );
            let body = encode_request(&RequestId::Number(id), &p.method, Some(&p.params));
            (body, Some(p.headers))
        } else {
            let body = encode_request(&RequestId::Number(id), method, params.as_deref());
            (body, None)
        };
        let mut guard = CancelGuard {
            session: self,
            id,
            reason: Some("request abandoned by the gateway"),
        };
        let progress = ProgressWatch::for_params(params.as_deref());
        let exchange = self.exchange(
            id,
            body,
            extra.as_ref(),
            options.context.clone(),
            progress.as_ref(),
        );
        let notify = progress.as_ref().map(|p| &p.notify);
        match deadline::race(exchange, &options.cancel, budget, notify).await {
            Ok(r) => {
                guard.reason = None;
                if let (Ok(result), "tools/list") = (&r, method) {
                    let mut st = self.state.write();
                    if st.modern {
                        st.param_headers.learn(result);
                    }
                }
                r
            }
            Err(Stop::Cancelled) => {
                guard.reason = Some("cancelled by the client");
                Err(CallError::Cancelled {
                    upstream: self.shared.name.clone(),
                })
            }
            Err(Stop::TimedOut(after)) => {
                guard.reason = Some("timed out");
                Err(CallError::Timeout {
                    upstream: self.shared.name.clone(),
                    after,
                })
            }
        }
    }

    /// Sends a notification (expects 202).
    pub(crate) async fn notify(
        self: &Arc<Self>,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<(), CallError> {
        if self.closed.is_cancelled() {
            return Err(self.shared.unavailable(self.close_reason()));
        }
        let body = encode_notification(method, params);
        let send = async {
            let generation = self.generation();
            let mut resp = self.post(body.clone()).await?;
            if resp.status() == StatusCode::NOT_FOUND && self.has_session() {
                self.reinitialize(generation).await?;
                resp = self.post(body).await?;
            }
            self.expect_accepted(resp).await
        };
        tokio::time::timeout(SMALL_POST_TIMEOUT, send)
            .await
            .unwrap_or_else(|_| {
                Err(CallError::Timeout {
                    upstream: self.shared.name.clone(),
                    after: SMALL_POST_TIMEOUT,
                })
            })
    }

    /// Waits until the session is lost; returns why.
    pub(crate) async fn lost(&self) -> String {
        self.closed.cancelled().await;
        self.close_reason()
    }

    /// Ends the session: stops the GET stream and DELETEs the session.
    pub(crate) async fn stop(&self) {
        self.close("upstream stopped");
        let session_id = self.state.read().session_id.clone();
        if let Some(sid) = session_id {
            let req = self
                .client
                .delete(self.url.clone())
                .headers(self.headers.clone())
                .header(SESSION_HEADER, sid);
            let req = match self.state.read().protocol_version.clone() {
                Some(v) => req.header(VERSION_HEADER, v),
                None => req,
            };
            match tokio::time::timeout(DELETE_TIMEOUT, req.send()).await {
                Ok(Ok(r)) => {
                    tracing::debug!(upstream = %self.shared.name, status = %r.status(), "session deleted")
                }
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %self.shared.name, error = %describe(&e), "session delete failed")
                }
                Err(_) => tracing::debug!(upstream = %self.shared.name, "session delete timed out"),
            }
        }
    }

    fn close(&self, reason: &str) {
        {
            let mut r = self.close_reason.lock();
            if r.is_none() {
                *r = Some(reason.to_owned());
            }
        }
        self.closed.cancel();
    }

    fn close_reason(&self) -> String {
        self.close_reason
            .lock()
            .clone()
            .unwrap_or_else(|| "session closed".into())
    }

    fn generation(&self) -> u64 {
        self.state.read().generation
    }

    fn has_session(&self) -> bool {
        self.state.read().session_id.is_some()
    }

    /// Asks `server/discover` whether the upstream speaks only the stateless
    /// revision; on yes, switches this session to stateless calls. Any other
    /// answer (an error, a legacy or dual-era server, a timeout) is `None`
    /// and the caller falls back to `initialize`.
    async fn probe_modern(self: &Arc<Self>) -> Option<ServerInfo> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let p = crate::modern::prepare("server/discover", None);
        let body = encode_request(&RequestId::Number(id), &p.method, Some(&p.params));
        let run = async {
            let resp = self.post_extra(body, false, Some(&p.headers)).await.ok()?;
            self.read_response(resp, id, None, None).await.ok()
        };
        let result = tokio::time::timeout(self.connect_timeout, run)
            .await
            .ok()??;
        match crate::modern::parse_discover(&result) {
            crate::modern::Discovered::Modern(info) => {
                let mut st = self.state.write();
                st.modern = true;
                st.protocol_version = HeaderValue::from_str(&info.protocol_version).ok();
                Some(info)
            }
            crate::modern::Discovered::Dual | crate::modern::Discovered::Legacy => None,
        }
    }

    /// Runs the handshake (first time or after a 404) and installs the new
    /// session id and protocol version.
    async fn initialize(self: &Arc<Self>) -> Result<ServerInfo, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = encode_request(
            &RequestId::Number(id),
            "initialize",
            Some(&handshake::initialize_params()),
        );
        let run = async {
            // Without the old session's headers; concurrent requests keep
            // using the old session until the new one is installed.
            let resp = self.post_with(body, false).await?;
            let session_id = resp
                .headers()
                .get(SESSION_HEADER)
                .filter(|v| valid_session_id(v.as_bytes()))
                .cloned();
            let result = self.read_response(resp, id, None, None).await?;
            let info = handshake::parse_result(&result).map_err(|e| self.shared.protocol(e))?;
            {
                let mut st = self.state.write();
                st.session_id = session_id;
                st.protocol_version = HeaderValue::from_str(&info.protocol_version).ok();
                st.generation += 1;
            }
            let resp = self
                .post(encode_notification("notifications/initialized", None))
                .await?;
            self.expect_accepted(resp).await?;
            Ok(info)
        };
        tokio::time::timeout(self.connect_timeout, run)
            .await
            .unwrap_or_else(|_| {
                Err(CallError::Timeout {
                    upstream: self.shared.name.clone(),
                    after: self.connect_timeout,
                })
            })
    }

    /// Re-initialises after the upstream forgot our session (404), once for
    /// all requests that saw the same session. A failure closes the session,
    /// so the supervisor reconnects with backoff.
    async fn reinitialize(self: &Arc<Self>, seen_generation: u64) -> Result<(), CallError> {
        let _lock = self.reinit.lock().await;
        if self.generation() != seen_generation {
            return Ok(());
        }
        tracing::info!(upstream = %self.shared.name, "session expired upstream; re-initialising");
        match self.initialize().await {
            Ok(info) => {
                self.shared
                    .emit_status(EventKind::Ready(Arc::new(info)))
                    .await;
                Ok(())
            }
            Err(e) => {
                self.close(&format!("re-initialisation failed: {e}"));
                Err(self.shared.unavailable(self.close_reason()))
            }
        }
    }

    /// POSTs one message with the session's headers.
    async fn post(&self, body: Vec<u8>) -> Result<reqwest::Response, CallError> {
        self.post_with(body, true).await
    }

    /// The configured headers plus, with an OAuth client, a current token.
    async fn credentials(&self) -> Result<HeaderMap, CallError> {
        let mut headers = self.headers.clone();
        if let Some(auth) = &self.oauth {
            match auth.authorization_header(None).await {
                Ok(Some(v)) => {
                    headers.insert(http::header::AUTHORIZATION, v);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(self
                        .shared
                        .unavailable(format!("cannot get this upstream's access token: {e}")))
                }
            }
        }
        Ok(headers)
    }

    async fn post_with(
        &self,
        body: Vec<u8>,
        with_session: bool,
    ) -> Result<reqwest::Response, CallError> {
        self.post_extra(body, with_session, None).await
    }

    /// POSTs with `extra` headers too (a stateless request's routing headers).
    async fn post_extra(
        &self,
        body: Vec<u8>,
        with_session: bool,
        extra: Option<&HeaderMap>,
    ) -> Result<reqwest::Response, CallError> {
        let resp = self.post_once(body.clone(), with_session, extra).await?;
        // A token the upstream refuses is dropped and the request sent once
        // more with a fresh one (revoked or rotated early by the server).
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(auth) = &self.oauth {
                if let Ok(Some(sent)) = auth.authorization_header(None).await {
                    auth.reject(&sent, None).await;
                    return self.post_once(body, with_session, extra).await;
                }
            }
        }
        Ok(resp)
    }

    async fn post_once(
        &self,
        body: Vec<u8>,
        with_session: bool,
        extra: Option<&HeaderMap>,
    ) -> Result<reqwest::Response, CallError> {
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.credentials().await?)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json");
        // W3C trace context of the current span (the gateway's upstream-call
        // span), so the upstream's spans join the caller's trace.
        let mut trace = http::HeaderMap::new();
        switchboard_telemetry::inject_current(&mut trace);
        if !trace.is_empty() {
            req = req.headers(trace);
        }
        if let Some(extra) = extra {
            req = req.headers(extra.clone());
        }
        if with_session {
            let st = self.state.read();
            if let Some(sid) = &st.session_id {
                req = req.header(SESSION_HEADER, sid.clone());
            }
            if let Some(v) = &st.protocol_version {
                req = req.header(VERSION_HEADER, v.clone());
            }
        }
        req.body(body).send().await.map_err(|e| {
            self.shared
                .unavailable(format!("http request failed: {}", describe(&e)))
        })
    }

    /// POSTs a request, re-initialising once on 404, and reads its answer.
    async fn exchange(
        self: &Arc<Self>,
        id: i64,
        body: Vec<u8>,
        extra: Option<&HeaderMap>,
        context: Option<Arc<dyn RequestContext>>,
        progress: Option<&ProgressWatch>,
    ) -> Result<Box<RawValue>, CallError> {
        let generation = self.generation();
        let mut resp = self.post_extra(body.clone(), true, extra).await?;
        if resp.status() == StatusCode::NOT_FOUND && self.has_session() {
            self.reinitialize(generation).await?;
            resp = self.post(body).await?;
        }
        self.read_response(resp, id, context, progress).await
    }

    /// Reads the answer to request `id` from a POST response.
    async fn read_response(
        self: &Arc<Self>,
        resp: reqwest::Response,
        id: i64,
        context: Option<Arc<dyn RequestContext>>,
        progress: Option<&ProgressWatch>,
    ) -> Result<Box<RawValue>, CallError> {
        let status = resp.status();
        if status.is_client_error() && self.state.read().modern {
            // The stateless revision answers -32020/-32021/-32022 and
            // unknown methods with 4xx and a JSON-RPC error: the server's
            // own answer, to pass on as such.
            let body = read_bounded(&self.shared, resp).await?;
            return match decode_message(&body) {
                Ok(Message::Response(r)) if r.id == RequestId::Number(id) => {
                    self.payload(r.payload)
                }
                _ => Err(self.shared.protocol(format!(
                    "http status {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_CHARS)])
                ))),
            };
        }
        if status != StatusCode::OK {
            return Err(self.status_error(resp).await);
        }
        let content_type = content_type(&resp);
        if content_type.starts_with("text/event-stream") {
            return self.read_stream(resp, id, context, progress).await;
        }
        if !content_type.is_empty() && !content_type.starts_with("application/json") {
            return Err(self.status_error(resp).await);
        }
        let body = read_bounded(&self.shared, resp).await?;
        match decode_message(&body) {
            Ok(Message::Response(r)) if r.id == RequestId::Number(id) => self.payload(r.payload),
            Ok(other) => Err(self.shared.protocol(format!(
                "expected the response to request {id}, got {}",
                kind_of(&other)
            ))),
            Err(e) => Err(self.shared.protocol(format!("malformed response: {e}"))),
        }
    }

    fn payload(&self, payload: ResponsePayload) -> Result<Box<RawValue>, CallError> {
        match payload {
            ResponsePayload::Result(r) => Ok(r),
            ResponsePayload::Error(error) => Err(CallError::Rpc {
                upstream: self.shared.name.clone(),
                error,
            }),
        }
    }

    /// Reads a POST's SSE stream until the response to `id`, resuming with
    /// GET + `Last-Event-ID` when the stream ends early.
    async fn read_stream(
        self: &Arc<Self>,
        resp: reqwest::Response,
        id: i64,
        context: Option<Arc<dyn RequestContext>>,
        progress: Option<&ProgressWatch>,
    ) -> Result<Box<RawValue>, CallError> {
        let mut parser = SseParser::new(self.shared.max_bytes);
        let mut resp = resp;
        let mut resumes = 0;
        loop {
            if let Some(outcome) = self
                .drain(resp, &mut parser, Some(id), &context, progress)
                .await
            {
                return outcome;
            }
            let Some(last) = parser.last_event_id().map(str::to_owned) else {
                return Err(self
                    .shared
                    .protocol(format!("stream ended without the response to request {id}")));
            };
            resumes += 1;
            if resumes > MAX_RESUMES {
                return Err(self.shared.unavailable(format!(
                    "stream for request {id} ended {MAX_RESUMES} times without a response"
                )));
            }
            let delay = parser
                .retry_ms()
                .map_or(Duration::ZERO, Duration::from_millis)
                .min(MAX_RETRY_DELAY);
            tokio::time::sleep(delay).await;
            let next = self.get(Some(&last)).await?;
            if next.status() != StatusCode::OK
                || !content_type(&next).starts_with("text/event-stream")
            {
                return Err(self.status_error(next).await);
            }
            resp = next;
        }
    }

    /// Handles one SSE response until it ends. With `id`, returns the
    /// response to that request as soon as it arrives; related messages go
    /// to `context`. Returns `None` when the stream ends first.
    async fn drain(
        self: &Arc<Self>,
        resp: reqwest::Response,
        parser: &mut SseParser,
        id: Option<i64>,
        context: &Option<Arc<dyn RequestContext>>,
        progress: Option<&ProgressWatch>,
    ) -> Option<Result<Box<RawValue>, CallError>> {
        let mut stream = resp.bytes_stream();
        let mut items = Vec::new();
        loop {
            let chunk = tokio::select! {
                c = stream.next() => c,
                _ = self.closed.cancelled() => {
                    return Some(Err(self.shared.unavailable(self.close_reason())));
                }
            };
            let chunk = match chunk {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::debug!(upstream = %self.shared.name, error = %describe(&e), "sse stream broke");
                    break;
                }
                None => break,
            };
            parser.feed(&chunk, &mut items);
            for item in items.drain(..) {
                match item {
                    SseItem::Event(ev) => {
                        if !matches!(ev.event.as_deref(), None | Some("message"))
                            || ev.data.trim().is_empty()
                        {
                            continue;
                        }
                        if let Some(outcome) =
                            self.on_message(ev.data.as_bytes(), id, context, progress)
                        {
                            return Some(outcome);
                        }
                    }
                    SseItem::TooLarge { head } => {
                        let target = scan_id(&head);
                        tracing::warn!(upstream = %self.shared.name, limit = self.shared.max_bytes, "discarded an event over the size limit");
                        if id.is_some() && target == id {
                            return Some(Err(self.shared.too_large()));
                        }
                    }
                }
            }
        }
        parser.finish();
        None
    }

    /// Handles one message from a stream.
    fn on_message(
        self: &Arc<Self>,
        bytes: &[u8],
        id: Option<i64>,
        context: &Option<Arc<dyn RequestContext>>,
        progress: Option<&ProgressWatch>,
    ) -> Option<Result<Box<RawValue>, CallError>> {
        match decode_message(bytes) {
            Ok(Message::Response(r)) => {
                if id.is_some_and(|id| r.id == RequestId::Number(id)) {
                    return Some(self.payload(r.payload));
                }
                tracing::debug!(upstream = %self.shared.name, id = %r.id, "unexpected response dropped");
            }
            Ok(Message::Request(request)) => {
                let session = self.clone();
                self.shared
                    .spawn_answer(context.clone(), request, move |bytes| async move {
                        session.post_answer(bytes).await;
                    });
            }
            Ok(Message::Notification(n)) => {
                if self.shared.cancel_inbound(&n) || n.method == crate::modern::LISTEN_ACK {
                    return None;
                }
                let related = matches!(
                    n.method.as_str(),
                    "notifications/progress" | "notifications/message"
                );
                if let Some(progress) = progress {
                    progress.observe(&n);
                }
                let target = if related { context.clone() } else { None };
                self.shared.deliver(target, n);
            }
            Err(e) => {
                if let (Some(RequestId::Number(got)), Some(want)) = (e.id(), id) {
                    if *got == want {
                        return Some(Err(self
                            .shared
                            .protocol(format!("malformed response: {e}"))));
                    }
                }
                tracing::warn!(upstream = %self.shared.name, error = %e, "ignoring malformed message");
            }
        }
        None
    }

    /// POSTs our answer to a server→client request.
    async fn post_answer(&self, bytes: Vec<u8>) {
        let outcome = tokio::time::timeout(SMALL_POST_TIMEOUT, async {
            let resp = self.post(bytes).await?;
            self.expect_accepted(resp).await
        })
        .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(upstream = %self.shared.name, error = %e, "answer to a server request not delivered")
            }
            Err(_) => {
                tracing::warn!(upstream = %self.shared.name, "answer to a server request timed out")
            }
        }
    }

    /// Opens a GET stream (the unsolicited stream, or a resumption).
    async fn get(&self, last_event_id: Option<&str>) -> Result<reqwest::Response, CallError> {
        let mut req = self
            .client
            .get(self.url.clone())
            .headers(self.credentials().await?)
            .header(ACCEPT, "text/event-stream");
        {
            let st = self.state.read();
            if let Some(sid) = &st.session_id {
                req = req.header(SESSION_HEADER, sid.clone());
            }
            if let Some(v) = &st.protocol_version {
                req = req.header(VERSION_HEADER, v.clone());
            }
        }
        if let Some(last) = last_event_id.and_then(|l| HeaderValue::from_str(l).ok()) {
            req = req.header(LAST_EVENT_ID, last);
        }
        let send = tokio::time::timeout(self.connect_timeout, req.send());
        match send.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(self
                .shared
                .unavailable(format!("http request failed: {}", describe(&e)))),
            Err(_) => Err(CallError::Timeout {
                upstream: self.shared.name.clone(),
                after: self.connect_timeout,
            }),
        }
    }

    /// Keeps the unsolicited GET stream open until the session closes.
    async fn get_loop(self: Arc<Self>) {
        let mut backoff = GET_BACKOFF_START;
        let mut parser = SseParser::new(self.shared.max_bytes);
        let none: Option<Arc<dyn RequestContext>> = None;
        loop {
            if self.closed.is_cancelled() {
                return;
            }
            let generation = self.generation();
            let last = parser.last_event_id().map(str::to_owned);
            let resp = tokio::select! {
                r = self.get(last.as_deref()) => r,
                _ = self.closed.cancelled() => return,
            };
            match resp {
                Ok(r) if r.status() == StatusCode::METHOD_NOT_ALLOWED => {
                    tracing::debug!(upstream = %self.shared.name, "upstream offers no GET stream");
                    return;
                }
                Ok(r)
                    if r.status() == StatusCode::OK
                        && content_type(&r).starts_with("text/event-stream") =>
                {
                    let opened = Instant::now();
                    if let Some(Err(_)) = self.drain(r, &mut parser, None, &none, None).await {
                        return; // closed
                    }
                    if opened.elapsed() >= GET_BACKOFF_MAX {
                        backoff = GET_BACKOFF_START;
                    }
                }
                Ok(r) if r.status() == StatusCode::NOT_FOUND && self.has_session() => {
                    if self.reinitialize(generation).await.is_err() {
                        return;
                    }
                    parser = SseParser::new(self.shared.max_bytes);
                    continue;
                }
                Ok(r) => {
                    tracing::debug!(upstream = %self.shared.name, status = %r.status(), "get stream refused");
                }
                Err(e) => {
                    tracing::debug!(upstream = %self.shared.name, error = %e, "get stream failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.closed.cancelled() => return,
            }
            backoff = (backoff * 2).min(GET_BACKOFF_MAX);
        }
    }

    /// Keeps one `subscriptions/listen` stream open on a stateless upstream
    /// until the session closes: the revision's replacement for the GET
    /// stream, and the only way its list changes reach the gateway. What
    /// arrives goes where a legacy upstream's unsolicited notifications go.
    /// A dropped stream is reopened with backoff, and the list changes it
    /// opted in to are then announced, since any may have been missed; a
    /// server that refuses the request is not asked again.
    async fn listen_loop(self: Arc<Self>, params: Box<RawValue>) {
        let mut backoff = GET_BACKOFF_START;
        let mut reopened = false;
        let none: Option<Arc<dyn RequestContext>> = None;
        let p = crate::modern::prepare("subscriptions/listen", Some(&params));
        loop {
            if self.closed.is_cancelled() {
                return;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let body = encode_request(&RequestId::Number(id), &p.method, Some(&p.params));
            let send = tokio::time::timeout(
                self.connect_timeout,
                self.post_extra(body, false, Some(&p.headers)),
            );
            let resp = tokio::select! {
                r = send => r,
                _ = self.closed.cancelled() => return,
            };
            match resp {
                Ok(Ok(r))
                    if r.status() == StatusCode::OK
                        && content_type(&r).starts_with("text/event-stream") =>
                {
                    if reopened {
                        for method in crate::modern::listened_changes(&params) {
                            self.shared.deliver(
                                None,
                                switchboard_protocol::Notification {
                                    method: method.to_owned(),
                                    params: None,
                                },
                            );
                        }
                    }
                    reopened = true;
                    let opened = Instant::now();
                    let mut parser = SseParser::new(self.shared.max_bytes);
                    match self.drain(r, &mut parser, Some(id), &none, None).await {
                        Some(Err(CallError::Rpc { error, .. })) => {
                            tracing::info!(upstream = %self.shared.name, error = %error.message, "upstream refused subscriptions/listen; its list changes are not followed");
                            return;
                        }
                        Some(Err(_)) if self.closed.is_cancelled() => return,
                        Some(outcome) => {
                            tracing::debug!(upstream = %self.shared.name, ok = outcome.is_ok(), "upstream ended the listen stream");
                        }
                        None => {
                            tracing::debug!(upstream = %self.shared.name, "listen stream dropped");
                        }
                    }
                    if opened.elapsed() >= GET_BACKOFF_MAX {
                        backoff = GET_BACKOFF_START;
                    }
                }
                Ok(Ok(r)) => match self.read_response(r, id, None, None).await {
                    Err(CallError::Rpc { error, .. }) => {
                        tracing::info!(upstream = %self.shared.name, error = %error.message, "upstream refused subscriptions/listen; its list changes are not followed");
                        return;
                    }
                    other => {
                        tracing::debug!(upstream = %self.shared.name, ok = other.is_ok(), "listen request answered without a stream");
                    }
                },
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %self.shared.name, error = %e, "listen request failed");
                }
                Err(_) => {
                    tracing::debug!(upstream = %self.shared.name, "listen request timed out");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.closed.cancelled() => return,
            }
            backoff = (backoff * 2).min(GET_BACKOFF_MAX);
        }
    }

    async fn expect_accepted(&self, resp: reqwest::Response) -> Result<(), CallError> {
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(resp).await)
        }
    }

    /// A Protocol error quoting the status and the start of the body.
    async fn status_error(&self, resp: reqwest::Response) -> CallError {
        let status = resp.status();
        let content_type = content_type(&resp);
        let body = read_prefix(resp, ERROR_BODY_BYTES).await;
        let text: String = String::from_utf8_lossy(&body)
            .chars()
            .take(ERROR_BODY_CHARS)
            .collect();
        if status == StatusCode::OK {
            return self
                .shared
                .protocol(format!("unexpected content type {content_type:?}: {text}"));
        }
        self.shared
            .protocol(format!("http status {status}: {text}"))
    }

    fn send_cancel(self: &Arc<Self>, id: i64, reason: &'static str) {
        if self.state.read().modern {
            // Stateless: dropping the response stream was the cancellation.
            return;
        }
        let session = self.clone();
        let params = to_raw(&serde_json::json!({ "requestId": id, "reason": reason }));
        self.shared.tracker.spawn(async move {
            let _ = session
                .notify("notifications/cancelled", Some(&params))
                .await;
        });
    }
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Reads a whole body, failing as soon as it passes the limit.
pub(crate) async fn read_bounded(
    shared: &Shared,
    mut resp: reqwest::Response,
) -> Result<Vec<u8>, CallError> {
    let limit = shared.max_bytes;
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(shared.too_large());
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(shared.too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(shared.unavailable(format!("reading the body failed: {}", describe(&e))))
            }
        }
    }
}

/// Reads at most `limit` bytes of a body (for error messages), bounded in time.
pub(crate) async fn read_prefix(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let read = async {
        while body.len() < limit {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    body.truncate(limit);
    body
}

/// Visible ASCII only (0x21–0x7E), as the spec requires of session ids.
fn valid_session_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 1024 && v.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn kind_of(m: &Message) -> String {
    match m {
        Message::Request(r) => format!("a request ({})", r.method),
        Message::Notification(n) => format!("a notification ({})", n.method),
        Message::Response(r) => format!("the response to request {}", r.id),
    }
}

/// Counts requests in flight, so a flood fails fast instead of piling up.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn acquire(session: &'a HttpSession) -> Result<Self, CallError> {
        let n = session.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = InFlight(&session.in_flight);
        if n >= MAX_PENDING {
            return Err(session
                .shared
                .unavailable(format!("too many requests in flight (limit {MAX_PENDING})")));
        }
        Ok(slot)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells the upstream to stop a request that ended without its response
/// (cancelled, timed out, or abandoned when the caller's future dropped):
/// on legacy HTTP, a closed stream is not a cancellation.
struct CancelGuard<'a> {
    session: &'a Arc<HttpSession>,
    id: i64,
    reason: Option<&'static str>,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if let Some(reason) = self.reason {
            if !self.session.closed.is_cancelled() {
                self.session.send_cancel(self.id, reason);
            }
        }
    }
}
