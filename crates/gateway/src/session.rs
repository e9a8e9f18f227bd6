//! Downstream sessions: what the gateway remembers about one client.

use parking_lot::Mutex;
use rand::RngCore;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use switchboard_protocol::{ErrorObject, RawValue, RequestId};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::RouteId;
use crate::outbound::Outbound;

/// How many POST streams a session keeps for `Last-Event-ID` resumption.
const RETAINED_STREAMS: usize = 16;
/// How many messages the standalone stream keeps while no client reads it.
const STANDALONE_CAPACITY: usize = 512;
/// Server→client requests awaiting an answer, per session.
const MAX_PENDING_CLIENT_REQUESTS: usize = 64;

/// Which transport the session lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    StreamableHttp,
    Sse,
    Stdio,
}

/// What `initialize` settled.
#[derive(Debug)]
pub(crate) struct Init {
    pub(crate) protocol_version: &'static str,
    pub(crate) capabilities: Value,
}

/// MCP log levels, least severe first (RFC 5424 order reversed).
pub(crate) const LOG_LEVELS: &[&str] = &[
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

pub(crate) fn log_level_index(level: &str) -> Option<u8> {
    LOG_LEVELS.iter().position(|l| *l == level).map(|i| i as u8)
}

type ClientReply = Result<Box<RawValue>, ErrorObject>;

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: Arc<str>,
    pub(crate) route: RouteId,
    pub(crate) transport: Transport,
    init: OnceLock<Init>,
    log_level: AtomicU8,
    /// Set by `logging/setLevel`: only then do logs not tied to a request reach the client.
    log_opt_in: AtomicBool,
    last_seen: Mutex<Instant>,
    /// Messages not tied to a request: GET stream, legacy SSE, stdio.
    pub(crate) standalone: Arc<Outbound>,
    retained: Mutex<VecDeque<Arc<Outbound>>>,
    next_client_id: AtomicI64,
    pending_client: Mutex<HashMap<RequestId, oneshot::Sender<ClientReply>>>,
    in_flight: Mutex<HashMap<RequestId, CancellationToken>>,
    pub(crate) subscriptions: Mutex<HashSet<String>>,
    /// Cancelled when the session ends; everything working for it stops.
    pub(crate) closed: CancellationToken,
    /// Count of GET/SSE readers attached; an attached session is never idle.
    pub(crate) attached: AtomicU64,
    /// Keeps the session counted in `active_sessions_total` while it lives.
    gauge: Mutex<Option<switchboard_telemetry::GaugeGuard>>,
    /// Who opened the session (taken from the request that created it).
    /// Every later request must come from the same principal: a session id
    /// is never a credential. `None` on stdio, whose user started the process.
    identity: Option<Arc<switchboard_auth::Identity>>,
    /// `clientInfo` name and version from `initialize`, for the audit log.
    client: OnceLock<(String, String)>,
    /// Built for one stateless (2026-07-28) request rather than negotiated.
    stateless: bool,
}

impl Session {
    pub(crate) fn new(route: RouteId, transport: Transport) -> Self {
        Self {
            id: new_session_id().into(),
            route,
            transport,
            init: OnceLock::new(),
            log_level: AtomicU8::new(0),
            log_opt_in: AtomicBool::new(false),
            last_seen: Mutex::new(Instant::now()),
            standalone: Arc::new(Outbound::new(STANDALONE_CAPACITY)),
            retained: Mutex::new(VecDeque::new()),
            next_client_id: AtomicI64::new(1),
            pending_client: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashSet::new()),
            closed: CancellationToken::new(),
            attached: AtomicU64::new(0),
            gauge: Mutex::new(None),
            identity: crate::authn::current_caller(),
            client: OnceLock::new(),
            stateless: false,
        }
    }

    /// A short-lived session for one stateless (2026-07-28) request, built
    /// from its `_meta`, so dispatch serves both eras with one code path.
    /// Without a `logLevel` in `_meta` the request gets no log messages.
    pub(crate) fn stateless(
        route: RouteId,
        protocol_version: &'static str,
        capabilities: Value,
        log_level: Option<u8>,
    ) -> Self {
        let mut s = Self::new(route, Transport::StreamableHttp);
        s.stateless = true;
        let _ = s.init.set(Init {
            protocol_version,
            capabilities,
        });
        s.log_level
            .store(log_level.unwrap_or(u8::MAX), Ordering::Relaxed);
        s
    }

    pub(crate) fn is_stateless(&self) -> bool {
        self.stateless
    }

    pub(crate) fn track(&self, guard: switchboard_telemetry::GaugeGuard) {
        *self.gauge.lock() = Some(guard);
    }

    /// Records the `initialize` outcome; a second `initialize` is refused.
    pub(crate) fn initialize(&self, init: Init) -> Result<(), ErrorObject> {
        self.init
            .set(init)
            .map_err(|_| ErrorObject::invalid_request("session is already initialized"))
    }

    pub(crate) fn identity(&self) -> Option<&Arc<switchboard_auth::Identity>> {
        self.identity.as_ref()
    }

    pub(crate) fn set_client(&self, name: &str, version: &str) {
        let _ = self.client.set((name.to_owned(), version.to_owned()));
    }

    pub(crate) fn client(&self) -> Option<&(String, String)> {
        self.client.get()
    }

    pub(crate) fn init(&self) -> Option<&Init> {
        self.init.get()
    }

    pub(crate) fn protocol_version(&self) -> &'static str {
        self.init
            .get()
            .map_or(switchboard_protocol::version::DEFAULT_HTTP_VERSION, |i| {
                i.protocol_version
            })
    }

    /// Whether the client declared a capability (`sampling`, `elicitation`, `roots`).
    pub(crate) fn has_capability(&self, name: &str) -> bool {
        self.init
            .get()
            .is_some_and(|i| i.capabilities.get(name).is_some_and(|c| !c.is_null()))
    }

    pub(crate) fn set_log_level(&self, level: u8) {
        self.log_level.store(level, Ordering::Relaxed);
        self.log_opt_in.store(true, Ordering::Relaxed);
    }

    pub(crate) fn log_opted_in(&self) -> bool {
        self.log_opt_in.load(Ordering::Relaxed)
    }

    /// Whether a log message of `level` passes the client's `logging/setLevel`.
    pub(crate) fn wants_log(&self, level: &str) -> bool {
        let threshold = self.log_level.load(Ordering::Relaxed);
        // u8::MAX: a stateless request that did not opt in to logs.
        threshold != u8::MAX && log_level_index(level).unwrap_or(u8::MAX) >= threshold
    }

    pub(crate) fn touch(&self) {
        *self.last_seen.lock() = Instant::now();
    }

    pub(crate) fn idle_for(&self) -> Duration {
        self.last_seen.lock().elapsed()
    }

    /// Keeps a POST stream so a client that lost it can resume with GET.
    pub(crate) fn retain_stream(&self, stream: Arc<Outbound>) {
        let mut r = self.retained.lock();
        if r.len() >= RETAINED_STREAMS {
            r.pop_front();
        }
        r.push_back(stream);
    }

    /// Finds a stream by the id in a `Last-Event-ID`.
    pub(crate) fn stream(&self, id: u64) -> Option<Arc<Outbound>> {
        if self.standalone.id() == id {
            return Some(self.standalone.clone());
        }
        self.retained.lock().iter().find(|s| s.id() == id).cloned()
    }

    /// Registers a downstream request so `notifications/cancelled` can reach it.
    pub(crate) fn begin(&self, id: &RequestId) -> CancellationToken {
        let token = self.closed.child_token();
        self.in_flight.lock().insert(id.clone(), token.clone());
        token
    }

    pub(crate) fn end(&self, id: &RequestId) {
        self.in_flight.lock().remove(id);
    }

    pub(crate) fn cancel(&self, id: &RequestId) -> bool {
        match self.in_flight.lock().remove(id) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Sends a server→client request on `stream` and waits for the answer.
    pub(crate) async fn ask_client(
        &self,
        stream: &Outbound,
        method: &str,
        params: Option<&RawValue>,
        timeout: Duration,
    ) -> ClientReply {
        let id = RequestId::Number(self.next_client_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending_client.lock();
            if pending.len() >= MAX_PENDING_CLIENT_REQUESTS {
                return Err(ErrorObject::new(
                    switchboard_protocol::code::OVERLOADED,
                    format!("too many unanswered {method} requests to this client"),
                ));
            }
            pending.insert(id.clone(), tx);
        }
        stream.push(switchboard_protocol::encode_request(&id, method, params));
        let outcome = tokio::select! {
            r = rx => r.unwrap_or_else(|_| Err(ErrorObject::internal("session closed"))),
            _ = tokio::time::sleep(timeout) => Err(ErrorObject::new(
                switchboard_protocol::code::REQUEST_TIMEOUT,
                format!("client did not answer {method} within {}s", timeout.as_secs()),
            )),
            _ = self.closed.cancelled() => Err(ErrorObject::internal("session closed")),
        };
        self.pending_client.lock().remove(&id);
        outcome
    }

    /// Delivers a client's answer to a server→client request.
    pub(crate) fn answer(&self, id: &RequestId, reply: ClientReply) -> bool {
        match self.pending_client.lock().remove(id) {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        }
    }

    /// Ends the session: in-flight work is cancelled, streams close.
    pub(crate) fn close(&self) {
        self.closed.cancel();
        self.standalone.close();
        for s in self.retained.lock().drain(..) {
            s.close();
        }
        self.pending_client.lock().clear();
    }
}

/// 128 bits from the OS-seeded CSPRNG, hex: visible ASCII, unguessable.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// All live sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<Arc<str>, Arc<Session>>>,
}

impl Sessions {
    /// Adds a session unless `max` are already open.
    pub(crate) fn insert(&self, session: Arc<Session>, max: usize) -> Result<(), ErrorObject> {
        let mut map = self.map.lock();
        if map.len() >= max {
            return Err(ErrorObject::new(
                switchboard_protocol::code::OVERLOADED,
                format!("the gateway already holds its maximum of {max} sessions; retry later"),
            ));
        }
        map.insert(session.id.clone(), session);
        Ok(())
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().get(id).cloned()
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.map.lock().remove(id);
        if let Some(s) = &s {
            s.close();
        }
        s
    }

    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        self.map.lock().values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Removes sessions idle longer than `max_idle` with no stream attached.
    pub(crate) fn reap(&self, max_idle: Duration) -> Vec<Arc<Session>> {
        let mut map = self.map.lock();
        let idle: Vec<Arc<str>> = map
            .values()
            .filter(|s| s.attached.load(Ordering::Relaxed) == 0 && s.idle_for() > max_idle)
            .map(|s| s.id.clone())
            .collect();
        idle.iter()
            .filter_map(|id| map.remove(id))
            .inspect(|s| s.close())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_visible_ascii_and_distinct() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn the_session_cap_refuses_one_more() {
        let s = Sessions::default();
        s.insert(
            Arc::new(Session::new(RouteId::Federated, Transport::StreamableHttp)),
            1,
        )
        .unwrap();
        let err = s
            .insert(
                Arc::new(Session::new(RouteId::Federated, Transport::StreamableHttp)),
                1,
            )
            .unwrap_err();
        assert!(err.message.contains("maximum of 1 sessions"));
    }

    #[test]
    fn log_levels_filter_by_severity() {
        let s = Session::new(RouteId::Federated, Transport::Stdio);
        assert!(s.wants_log("debug"));
        s.set_log_level(log_level_index("warning").unwrap());
        assert!(!s.wants_log("info"));
        assert!(s.wants_log("error"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_request_times_out_and_frees_its_slot() {
        let s = Session::new(RouteId::Federated, Transport::Stdio);
        let out = Outbound::new(4);
        let r = s
            .ask_client(&out, "roots/list", None, Duration::from_secs(1))
            .await;
        assert_eq!(
            r.unwrap_err().code,
            switchboard_protocol::code::REQUEST_TIMEOUT
        );
        assert!(s.pending_client.lock().is_empty());
    }
}
