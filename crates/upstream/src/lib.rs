//! Clients for upstream MCP servers: stdio child processes, Streamable HTTP
//! and the legacy HTTP+SSE transport.
//!
//! The gateway sees one type, [`Upstream`], whatever the transport: a handle
//! that connects in the background, reconnects after failure, and forwards
//! raw JSON-RPC requests with [`CallOptions`] saying where related messages
//! (progress, logs, server→client requests) must go.
//!
//! # Layout
//! - [`Upstream`] (this file): the handle and its public types.
//! - `supervisor`: the per-upstream task that connects, reports status and
//!   reconnects with backoff.
//! - `health`: the pinger that declares a wedged connection unresponsive.
//! - `deadline`: request timeouts, restarted by progress up to a hard cap.
//! - `process`: spawned children, counted until reaped ([`live_processes`]).
//! - `pool`: the `per_session` policy: a supervised process per downstream
//!   session, capped and reaped when idle or when the session ends.
//! - `limits`: rlimits for stdio children, applied by re-executing the
//!   switchboard binary ([`exec_limited`]) in front of the program.
//! - `peer`: the request/response core shared by the two transports whose
//!   messages all travel on one channel (stdio, legacy SSE): id space, pending
//!   map, routing of server-initiated messages.
//! - `route`: answering server→client requests and delivering related
//!   notifications, for every transport.
//! - `stdio`, `http` (Streamable HTTP), `legacy` (HTTP+SSE): the transports.
//! - `line`, `sse`: bounded incremental readers.
//! - `handshake`: the `initialize` exchange.
//! - `modern`: the stateless revision (2026-07-28): the era rule applied to
//!   `server/discover` answers (HTTP and stdio alike), per-request `_meta`,
//!   routing headers, and the `subscriptions/listen` filter through which a
//!   stateless upstream's list changes reach the gateway's event path.
//!
//! # Invariants
//! - Payloads stay raw JSON: params go out byte for byte, results come back as
//!   `Box<RawValue>` without a typed decode.
//! - Every message read from an upstream is bounded by `max_response_bytes`
//!   while it is read, never after buffering it whole.
//! - Every spawned task and child process ends on [`Upstream::shutdown`], and
//!   every child is reaped: [`live_processes`] returns to where it started.
//! - One upstream's failure is contained in its own handle.
//! - Nothing an upstream sends can panic this crate, block it forever, or make
//!   it hold unbounded memory: pending requests, channels and concurrent
//!   server→client requests are capped and every wait has a timeout.

mod deadline;
mod error;
mod handshake;
mod health;
mod http;
mod legacy;
mod limits;
mod line;
mod modern;
mod peer;
mod pool;
mod process;
mod route;
mod sse;
mod stdio;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use switchboard_config::UpstreamConfig;
use switchboard_protocol::ErrorObject;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::CallError;
pub use health::HealthStats;
pub use limits::{exec_limited, LimitArgs, LimitError, EXEC_LIMITED};
pub use process::live_processes;

use deadline::Budget;
use health::HealthCounters;
use route::Shared;
use supervisor::Connection;

/// Most requests one upstream connection may have in flight; past it calls
/// fail fast with [`CallError::Unavailable`] instead of queueing without bound.
pub const MAX_PENDING: usize = 10_000;

/// What the handshake told us.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub protocol_version: String,
    pub capabilities: serde_json::Value,
    pub server_info: serde_json::Value,
    pub instructions: Option<String>,
}

/// Where an upstream's connection stands.
#[derive(Debug, Clone)]
pub enum Status {
    /// Spawning or handshaking.
    Connecting,
    Ready(Arc<ServerInfo>),
    /// The last attempt failed or the connection was lost; a retry follows
    /// after a backoff.
    Down {
        error: String,
    },
    /// [`Upstream::shutdown`] ran; no more retries.
    Stopped,
}

impl Status {
    /// The status as `/health`, the admin API and health reports spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Ready(_) => "up",
            Status::Down { .. } => "down",
            Status::Stopped => "stopped",
        }
    }

    /// The last error, while down.
    pub fn error(&self) -> Option<&str> {
        match self {
            Status::Down { error } => Some(error),
            _ => None,
        }
    }
}

/// Something an upstream said that is not tied to one forwarded request.
#[derive(Debug)]
pub struct UpstreamEvent {
    pub upstream: Arc<str>,
    /// Set when the event comes from a `per_session` process: it concerns
    /// that downstream session alone (its logs, its resource updates), and
    /// its Ready/Down say nothing about the upstream's catalog.
    pub session: Option<Arc<str>>,
    pub kind: EventKind,
}

#[derive(Debug)]
pub enum EventKind {
    /// Connected (also after a reconnect or a transparent re-initialisation:
    /// the upstream's lists may have changed).
    Ready(Arc<ServerInfo>),
    Down(String),
    /// A notification not related to a forwarded request (`list_changed`,
    /// `resources/updated`, or a message that could not be attributed).
    Notification(switchboard_protocol::Notification),
}

/// The downstream side of one forwarded request; implemented by the gateway.
#[async_trait::async_trait]
pub trait RequestContext: Send + Sync + std::fmt::Debug {
    /// A notification related to the request (progress, log message, ...),
    /// relayed as is. Called from the upstream's reader: it must not block.
    fn notify(&self, notification: switchboard_protocol::Notification);
    /// A server→client request made while serving this request
    /// (sampling/createMessage, elicitation/create, roots/list). Returns the
    /// client's raw result or its error. Bounded by the upstream's timeout.
    async fn request(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<Box<RawValue>, ErrorObject>;
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Where related notifications and server→client requests go; without
    /// one, server→client requests are refused with `-32601`.
    pub context: Option<Arc<dyn RequestContext>>,
    /// Firing it cancels the call (and tells the upstream).
    pub cancel: CancellationToken,
    /// Overrides the config timeout. Either way, progress for the request
    /// (when it carries `_meta.progressToken`) restarts the timeout, up to
    /// the config's `max_timeout` from the start.
    pub timeout: Option<Duration>,
    /// The downstream session the call is made for. A `per_session` upstream
    /// serves it from that session's own process (started on first use);
    /// without one, or for a shared upstream, the shared connection serves.
    pub session: Option<Arc<str>>,
}

/// How the supervisor paces reconnection after a failure.
///
/// [`Upstream::start`] uses the default; tests and embedders that need
/// faster (or slower) recovery pass their own to [`Upstream::start_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub start: Duration,
    /// Longest delay; each failure doubles the delay up to this.
    pub max: Duration,
    /// A connection that stayed up this long resets the delay to `start`,
    /// so a server that crashes once a day is not punished for old crashes.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            start: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// A handle on one upstream server. Cheap to clone.
///
/// Dropping the last clone stops the upstream like [`Upstream::shutdown`]
/// does, without waiting; call `shutdown` to wait for the process to end.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
    /// Fires the shutdown token when the last handle goes away, so a
    /// forgotten upstream does not keep its process and tasks alive.
    _stop_on_drop: Arc<tokio_util::sync::DropGuard>,
}

struct Inner {
    shared: Arc<Shared>,
    config: UpstreamConfig,
    status: watch::Sender<Status>,
    /// The live connection, `None` while connecting or down.
    conn: parking_lot::RwLock<Option<Connection>>,
    /// The live stdio child's pid, for operators and tests that need to
    /// signal it; `None` for other transports and while not connected.
    pid: parking_lot::Mutex<Option<u32>>,
    backoff: Backoff,
    health: HealthCounters,
    supervisor: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The per-session processes, for a `per_session` upstream; the
    /// connection above is then the template that serves discovery.
    pool: Option<Arc<pool::Pool>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.inner.shared.name)
            .field("transport", &self.inner.config.transport.kind())
            .field("status", &*self.inner.status.borrow())
            .finish()
    }
}

/// The `clientInfo.name` sent in `initialize`.
pub const CLIENT_NAME: &str = "switchboard";
/// The `clientInfo.version` sent in `initialize`.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Upstream {
    /// Starts connecting in the background and returns at once; status and
    /// events report progress. Must be called inside a Tokio runtime.
    ///
    /// When `config.health_check_interval` is set, a Ready connection is
    /// pinged on that interval and replaced after 3 consecutive failures.
    pub fn start(config: UpstreamConfig, events: mpsc::Sender<UpstreamEvent>) -> Self {
        Self::start_with(config, events, Backoff::default())
    }

    /// Like [`Upstream::start`], with a reconnection pace of its own.
    pub fn start_with(
        config: UpstreamConfig,
        events: mpsc::Sender<UpstreamEvent>,
        backoff: Backoff,
    ) -> Self {
        Self::launch(config, events, backoff, None)
    }

    /// Starts one per-session process of a pool; its events carry `session`.
    pub(crate) fn start_instance(
        config: UpstreamConfig,
        events: mpsc::Sender<UpstreamEvent>,
        backoff: Backoff,
        session: Arc<str>,
    ) -> Self {
        Self::launch(config, events, backoff, Some(session))
    }

    fn launch(
        config: UpstreamConfig,
        events: mpsc::Sender<UpstreamEvent>,
        backoff: Backoff,
        session: Option<Arc<str>>,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let pool = match session {
            None => pool::Pool::for_config(&config, &events, backoff, &tracker, &shutdown),
            Some(_) => None,
        };
        let mut shared = Shared::new(
            Arc::from(config.name.as_str()),
            events,
            config.timeout,
            config.max_response_bytes,
            shutdown,
            tracker,
        );
        shared.session = session;
        let shared = Arc::new(shared);
        let (status, _) = watch::channel(Status::Connecting);
        let inner = Arc::new(Inner {
            shared,
            config,
            status,
            conn: parking_lot::RwLock::new(None),
            pid: parking_lot::Mutex::new(None),
            backoff,
            health: HealthCounters::default(),
            supervisor: parking_lot::Mutex::new(None),
            pool,
        });
        let handle = tokio::spawn(supervisor::run(inner.clone()));
        *inner.supervisor.lock() = Some(handle);
        let guard = inner.shared.shutdown.clone().drop_guard();
        Self {
            inner,
            _stop_on_drop: Arc::new(guard),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.config
    }

    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// Returns the health checker's and the supervisor's counters (of the
    /// shared connection; see [`Upstream::session_restarts`] for the rest).
    pub fn health_stats(&self) -> HealthStats {
        self.inner.health.snapshot()
    }

    /// Returns how often the session processes of a `per_session` upstream
    /// were restarted after a crash, those already ended included; it only
    /// grows. 0 for a shared upstream.
    pub fn session_restarts(&self) -> u64 {
        self.inner.pool.as_ref().map_or(0, |p| p.restarts())
    }

    /// Whether this upstream runs a process per downstream session.
    pub fn is_per_session(&self) -> bool {
        self.inner.pool.is_some()
    }

    /// Returns how many per-session processes run now (0 for a shared
    /// upstream, whose one process is not counted here).
    pub fn session_instances(&self) -> usize {
        self.inner.pool.as_ref().map_or(0, |p| p.len())
    }

    /// Whether a `per_session` upstream runs a process for `session` now
    /// (so a call for it would not start one).
    pub fn has_session_instance(&self, session: &str) -> bool {
        self.inner
            .pool
            .as_ref()
            .is_some_and(|p| p.contains(session))
    }

    /// Ends what this upstream keeps for a downstream session that has
    /// ended: a `per_session` upstream stops the session's process (in the
    /// background, SIGTERM then SIGKILL to its group). No-op otherwise.
    pub fn end_session(&self, session: &str) {
        if let Some(pool) = &self.inner.pool {
            pool.end_session(session);
        }
    }

    /// Returns the pid (also the process group id) of the stdio child
    /// serving the live connection; `None` for HTTP transports and while
    /// connecting or down.
    pub fn process_id(&self) -> Option<u32> {
        *self.inner.pid.lock()
    }

    /// Waits until Ready (or returns the Down error / Unavailable after
    /// `timeout`).
    pub async fn ready(&self, timeout: Duration) -> Result<Arc<ServerInfo>, CallError> {
        let mut rx = self.inner.status.subscribe();
        let wait = async {
            loop {
                match &*rx.borrow_and_update() {
                    Status::Ready(info) => return Ok(info.clone()),
                    Status::Down { error } => return Err(self.unavailable(error.clone())),
                    Status::Stopped => return Err(self.unavailable("stopped".into())),
                    Status::Connecting => {}
                }
                if rx.changed().await.is_err() {
                    return Err(self.unavailable("stopped".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(self.unavailable(format!("not ready after {}ms", timeout.as_millis())))
            })
    }

    /// Forwards one request; params are sent byte for byte. While the
    /// upstream is still Connecting it waits (bounded by connect_timeout)
    /// instead of failing at once.
    ///
    /// The request gets `options.timeout` (else the config's `timeout`);
    /// when its params carry `_meta.progressToken`, each progress
    /// notification for it restarts that timeout, but never past
    /// `max_timeout` from the start (a timeout longer than `max_timeout` is
    /// kept whole). On expiry the upstream is sent `notifications/cancelled`
    /// and the call fails with [`CallError::Timeout`].
    pub async fn request(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
        options: CallOptions,
    ) -> Result<Box<RawValue>, CallError> {
        if let (Some(pool), Some(session)) = (&self.inner.pool, &options.session) {
            let lease = pool.lease(session)?;
            let instance = lease.upstream().clone();
            // The instance has no pool, so this recursion is one level deep.
            let outcome = Box::pin(instance.request(method, params, options)).await;
            drop(lease);
            return outcome;
        }
        let conn = self.connection(&options.cancel).await?;
        let budget = Budget {
            timeout: options.timeout.unwrap_or(self.inner.config.timeout),
            max: self.inner.config.max_timeout,
        };
        let outcome = conn.request(method, params, &options, budget).await;
        if matches!(outcome, Ok(_) | Err(CallError::Rpc { .. })) {
            // Any answer proves the upstream alive: the next ping is skipped.
            self.inner.health.record_answer();
        }
        outcome
    }

    /// Sends a notification (e.g. `notifications/roots/list_changed`).
    pub async fn notify(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<(), CallError> {
        let conn = self.connection(&CancellationToken::new()).await?;
        conn.notify(method, params).await
    }

    /// Follows `nextCursor` to the end (bounded: at most 1000 pages, and a
    /// repeated cursor is an error) and returns the concatenated array found
    /// under `field` of each page (e.g. ("tools/list", "tools")).
    pub async fn list_all(
        &self,
        method: &str,
        field: &str,
    ) -> Result<Vec<serde_json::Value>, CallError> {
        const MAX_PAGES: usize = 1000;
        let mut items = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor
                .as_ref()
                .map(|c| switchboard_protocol::to_raw(&serde_json::json!({ "cursor": c })));
            let raw = self.request(method, params, CallOptions::default()).await?;
            let mut page: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(raw.get())
                    .map_err(|e| self.protocol(format!("{method} result is not an object: {e}")))?;
            match page.remove(field) {
                Some(serde_json::Value::Array(list)) => items.extend(list),
                None | Some(serde_json::Value::Null) => {}
                Some(_) => {
                    return Err(
                        self.protocol(format!("{method} result field {field:?} is not an array"))
                    )
                }
            }
            match page.remove("nextCursor") {
                Some(serde_json::Value::String(next)) => {
                    if !seen.insert(next.clone()) {
                        return Err(self.protocol(format!("{method} repeated cursor {next:?}")));
                    }
                    cursor = Some(next);
                }
                _ => return Ok(items),
            }
        }
        Err(self.protocol(format!("{method} has more than {MAX_PAGES} pages")))
    }

    /// Graceful stop: HTTP: DELETE the session; stdio: close stdin, wait
    /// briefly, SIGTERM the process group, then SIGKILL after a grace period
    /// (2 s); all tasks end. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown.cancel();
        if let Some(pool) = &self.inner.pool {
            pool.shutdown().await;
        }
        let handle = self.inner.supervisor.lock().take();
        if let Some(handle) = handle {
            // The supervisor stops the connection; its own waits are bounded,
            // this one is a backstop.
            if tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .is_err()
            {
                tracing::warn!(upstream = %self.name(), "supervisor did not stop in time");
            }
        }
        self.inner.shared.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.inner.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(upstream = %self.name(), "upstream tasks did not stop in time");
        }
        self.inner.status.send_replace(Status::Stopped);
    }

    /// Returns the live connection, waiting while the upstream is connecting.
    async fn connection(&self, cancel: &CancellationToken) -> Result<Connection, CallError> {
        let mut rx = self.inner.status.subscribe();
        let wait = async {
            loop {
                let status = rx.borrow_and_update().clone();
                match status {
                    Status::Ready(_) => {
                        if let Some(conn) = self.inner.conn.read().clone() {
                            return Ok(conn);
                        }
                    }
                    Status::Down { error } => return Err(self.unavailable(error)),
                    Status::Stopped => return Err(self.unavailable("stopped".into())),
                    Status::Connecting => {}
                }
                if rx.changed().await.is_err() {
                    return Err(self.unavailable("stopped".into()));
                }
            }
        };
        let connect_timeout = self.inner.config.connect_timeout;
        tokio::select! {
            r = tokio::time::timeout(connect_timeout, wait) => r.unwrap_or_else(|_| {
                Err(self.unavailable(format!(
                    "still connecting after {}ms",
                    connect_timeout.as_millis()
                )))
            }),
            _ = cancel.cancelled() => Err(CallError::Cancelled { upstream: self.inner.shared.name.clone() }),
        }
    }

    fn unavailable(&self, reason: String) -> CallError {
        self.inner.shared.unavailable(reason)
    }

    fn protocol(&self, detail: String) -> CallError {
        self.inner.shared.protocol(detail)
    }
}
