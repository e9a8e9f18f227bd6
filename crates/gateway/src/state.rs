//! The gateway's shared state: upstream handles, their discovered offers,
//! the published catalogs, and the sessions that must hear about changes.

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchboard_config::{Config, PinningPolicy, PrefixPolicy, ServerConfig};
use switchboard_protocol::{encode_notification, to_raw, Notification};
use switchboard_telemetry::{HealingIssue, HealingStatus, Metrics, MetricsConfig};
use switchboard_upstream::{EventKind, Status, Upstream, UpstreamEvent};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::{Catalog, Member, Offer, RouteId};
use crate::session::{Session, Sessions};

/// One upstream as `check` and `/health` show it.
#[derive(Debug, Clone)]
pub struct UpstreamReport {
    pub name: String,
    pub transport: &'static str,
    pub status: Status,
    pub tools: usize,
    pub prompts: usize,
    pub resources: usize,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// 0..1, see [`Shared::health_scores`].
    pub health_score: f64,
    /// Times it came back after being down (its session processes'
    /// restarts included, for a `per_session` upstream).
    pub restarts: u64,
    /// Processes serving one session each (`pool = "per_session"`), besides
    /// the shared or template one; 0 for other upstreams.
    pub session_processes: usize,
    /// p50/p95/p99 of its recent calls, in milliseconds, and the sample count.
    pub latency_ms: Option<(usize, f64, f64, f64)>,
    /// Health pings answered and failed, and the last ping's round trip.
    pub pings: switchboard_upstream::HealthStats,
}

/// Every route's catalog, replaced whole on any change.
#[derive(Debug)]
pub(crate) struct Catalogs {
    pub(crate) federated: Arc<Catalog>,
    pub(crate) servers: Vec<Arc<Catalog>>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) server: ServerConfig,
    pub(crate) upstreams: Vec<Upstream>,
    offers: Mutex<Vec<Arc<Offer>>>,
    /// Whether each upstream's offer reflects its current connection.
    discovered: Mutex<Vec<bool>>,
    /// Set once every upstream has been discovered or has failed at start.
    settled: AtomicBool,
    /// Woken after each discovery, for whoever waits on `settled`.
    discovery_done: Notify,
    catalogs: ArcSwap<Catalogs>,
    /// One discovery trigger per upstream; a `Notify` holds at most one
    /// permit, so a burst of `list_changed` costs one re-discovery.
    rediscover: Vec<Arc<Notify>>,
    pub(crate) sessions: Sessions,
    /// Upstream subscriptions shared by sessions: (upstream, uri) → count.
    subscriptions: Mutex<HashMap<(usize, String), usize>>,
    next_progress: AtomicI64,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) metrics: Metrics,
    /// Per-client-IP token buckets; `None` when limiting is off.
    pub(crate) limiter: Option<crate::limit::IpLimiter>,
    /// Cached answers of read-only tools and resource reads (opt-in per upstream).
    pub(crate) cache: Arc<dyn crate::cache::ResponseCache>,
    /// Per upstream, in config order: breaker, bulkhead, retry budget.
    pub(crate) protection: Vec<crate::protect::Protection>,
    /// Per upstream: down since its last ready, so the next ready is a heal.
    was_down: Mutex<Vec<bool>>,
    /// Per upstream: how often it came back after being down.
    restarts: Vec<std::sync::atomic::AtomicU64>,
    /// The stateless (2026-07-28) face: `requestState` sealing, parked calls.
    pub(crate) modern: crate::modern::Modern,
    /// Pinned tool definitions and changes waiting for approval.
    pub(crate) pins: crate::pin::PinBook,
    pub(crate) pinning: PinningPolicy,
    /// Who may call: credentials to identities.
    pub(crate) auth: crate::authn::Authenticator,
    /// The store (keys, pins, audit, sessions); `None` in bare library use.
    pub(crate) store: Option<Arc<dyn switchboard_store::Store>>,
    pub(crate) audit: Option<switchboard_store::audit::AuditHandle>,
    /// What of a call's arguments the audit log keeps.
    pub(crate) audit_arguments: switchboard_store::redact::ArgumentPolicy,
    pub(crate) identity_limiter: Option<crate::limit::PrincipalLimiter>,
    pub(crate) tool_limits: crate::limit::ToolLimits,
    /// List results filtered per scope set.
    pub(crate) lists: crate::govern::ListCache,
    /// Per upstream: session-process restarts already counted in metrics.
    session_restarts: Vec<std::sync::atomic::AtomicU64>,
}

const EVENT_QUEUE: usize = 1024;
/// Bytes of cached answers kept in memory at most.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl Shared {
    /// Starts every upstream and the tasks that keep the catalog current.
    pub(crate) fn start(
        config: Config,
        services: crate::Services,
    ) -> Result<Arc<Self>, crate::GatewayError> {
        let auth = crate::authn::Authenticator::new(&config.auth, &config.server)?;
        let protection = config
            .upstreams
            .iter()
            .map(|u| {
                crate::protect::Protection::new(u).map_err(|source| {
                    crate::GatewayError::Protection {
                        upstream: u.name.clone(),
                        source,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limiter = crate::limit::IpLimiter::new(
            config.server.rate_limit_per_minute,
            config.server.rate_limit_loopback,
        );
        let pinning = config.security.pinning;
        let identity_limiter =
            crate::limit::PrincipalLimiter::new(config.auth.rate_limit_per_minute);
        let tool_limits = crate::limit::ToolLimits::new(&config.security.tool_rate_limits);
        let audit_arguments = switchboard_store::redact::ArgumentPolicy::from_config(&config.audit);
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let upstreams: Vec<Upstream> = config
            .upstreams
            .into_iter()
            .map(|u| Upstream::start(u, tx.clone()))
            .collect();
        let n = upstreams.len();
        let request_state_key = config.server.request_state_key.clone();
        if request_state_key.is_none() {
            tracing::warn!("server.request_state_key is not set: requestState of 2026-07-28 clients is sealed with a random per-process key, so replicas behind one load balancer need a configured key");
        }
        let shared = Arc::new(Self {
            server: config.server,
            offers: Mutex::new((0..n).map(|_| Arc::new(Offer::default())).collect()),
            discovered: Mutex::new(vec![false; n]),
            settled: AtomicBool::new(false),
            discovery_done: Notify::new(),
            catalogs: ArcSwap::from_pointee(Catalogs {
                federated: Arc::new(Catalog::build(&[], "__")),
                servers: vec![],
            }),
            rediscover: (0..n).map(|_| Arc::new(Notify::new())).collect(),
            upstreams,
            sessions: Sessions::default(),
            subscriptions: Mutex::new(HashMap::new()),
            next_progress: AtomicI64::new(1),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics: Metrics::new(MetricsConfig::default()),
            limiter,
            cache: crate::cache_redis::build(&config.cache, CACHE_BYTES)?,
            protection,
            was_down: Mutex::new(vec![false; n]),
            restarts: (0..n)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            modern: crate::modern::Modern::new(
                request_state_key.as_ref().map(|k| k.expose().as_bytes()),
            ),
            pins: crate::pin::PinBook::default(),
            pinning,
            auth,
            store: services.store,
            audit: services.audit,
            audit_arguments,
            identity_limiter,
            tool_limits,
            lists: crate::govern::list_cache(),
            session_restarts: (0..n)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        });
        shared.publish(&[]);
        // Pins are loaded before the first discovery, so that a definition
        // changed while the gateway was down is caught.
        let starter = shared.clone();
        shared.tasks.spawn(async move {
            starter.load_pins().await;
            for i in 0..n {
                starter.tasks.spawn(discovery_loop(starter.clone(), i));
            }
        });
        shared.tasks.spawn(event_loop(shared.clone(), rx));
        shared.tasks.spawn(reaper(shared.clone()));
        shared.tasks.spawn(governance(shared.clone()));
        Ok(shared)
    }

    pub(crate) fn catalog(&self, route: RouteId) -> Arc<Catalog> {
        let c = self.catalogs.load();
        match route {
            RouteId::Federated => c.federated.clone(),
            RouteId::Server(i) => c
                .servers
                .get(i)
                .cloned()
                .unwrap_or_else(|| c.federated.clone()),
        }
    }

    pub(crate) fn route_by_name(&self, name: &str) -> Option<RouteId> {
        self.upstreams
            .iter()
            .position(|u| u.name() == name)
            .map(RouteId::Server)
    }

    pub(crate) fn offer(&self, upstream: usize) -> Arc<Offer> {
        self.offers
            .lock()
            .get(upstream)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn report(&self) -> Vec<UpstreamReport> {
        let (scores, _) = self.health_scores();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        self.upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let offer = self.offer(i);
                UpstreamReport {
                    name: u.name().to_owned(),
                    transport: u.config().transport.kind(),
                    status: u.status(),
                    tools: offer.tools.len(),
                    prompts: offer.prompts.len(),
                    resources: offer.resources.len(),
                    breaker: self.breaker_state(i).as_str(),
                    health_score: scores[i],
                    restarts: self.restarts[i].load(Ordering::Relaxed) + u.session_restarts(),
                    session_processes: u.session_instances(),
                    pings: u.health_stats(),
                    latency_ms: self.protection[i]
                        .percentiles()
                        .map(|p| (p.samples, ms(p.p50), ms(p.p95), ms(p.p99))),
                }
            })
            .collect()
    }

    /// Whether start-up discovery is over: every upstream is discovered, or
    /// failed (it may still come later, and clients then hear list_changed).
    pub(crate) fn is_settled(&self) -> bool {
        if self.settled.load(Ordering::Acquire) {
            return true;
        }
        let discovered = self.discovered.lock().clone();
        let done = self
            .upstreams
            .iter()
            .enumerate()
            .all(|(i, u)| match u.status() {
                Status::Ready(_) => discovered.get(i).copied().unwrap_or(false),
                Status::Connecting => false,
                Status::Down { .. } | Status::Stopped => true,
            });
        if done {
            self.settled.store(true, Ordering::Release);
        }
        done
    }

    /// Waits until [`Self::is_settled`] or `cap` passes. Clients that connect
    /// right after start-up then see every upstream's offer, not a partial one.
    pub(crate) async fn wait_settled(&self, cap: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + cap;
        loop {
            let notified = self.discovery_done.notified();
            if self.is_settled() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_settled();
            }
        }
    }

    /// A token unique in this process, to stand in for a client's progress
    /// token upstream (clients of a shared upstream may pick the same ones).
    pub(crate) fn progress_token(&self) -> i64 {
        self.next_progress.fetch_add(1, Ordering::Relaxed)
    }

    /// Rebuilds every catalog and tells sessions whose lists changed.
    fn publish(&self, changed_upstreams: &[usize]) {
        let offers = self.offers.lock().clone();
        let sep = &self.server.separator;
        let member = |i: usize, prefix: PrefixPolicy| Member {
            index: i,
            name: self.upstreams[i].name(),
            prefix,
            offer: &offers[i],
        };
        let all: Vec<Member<'_>> = (0..offers.len())
            .map(|i| member(i, self.upstreams[i].config().prefix))
            .collect();
        let next = Catalogs {
            federated: Arc::new(Catalog::build(&all, sep)),
            servers: (0..offers.len())
                .map(|i| Arc::new(Catalog::build(&[member(i, PrefixPolicy::Never)], sep)))
                .collect(),
        };
        let prev = self.catalogs.swap(Arc::new(next));
        if changed_upstreams.is_empty() {
            return;
        }
        let now = self.catalogs.load();
        let diff = |a: &Catalog, b: &Catalog| -> Vec<&'static str> {
            let mut kinds = vec![];
            if a.tools_result.get() != b.tools_result.get() {
                kinds.push("notifications/tools/list_changed");
            }
            if a.prompts_result.get() != b.prompts_result.get() {
                kinds.push("notifications/prompts/list_changed");
            }
            if a.resources_result.get() != b.resources_result.get()
                || a.templates_result.get() != b.templates_result.get()
            {
                kinds.push("notifications/resources/list_changed");
            }
            kinds
        };
        let mut per_route: HashMap<RouteId, Vec<&'static str>> = HashMap::new();
        per_route.insert(RouteId::Federated, diff(&prev.federated, &now.federated));
        for &i in changed_upstreams {
            if let (Some(a), Some(b)) = (prev.servers.get(i), now.servers.get(i)) {
                per_route.insert(RouteId::Server(i), diff(a, b));
            }
        }
        for session in self.sessions.all() {
            if session.init().is_none() {
                continue;
            }
            if let Some(kinds) = per_route.get(&session.route) {
                for method in kinds {
                    session.standalone.push(encode_notification(method, None));
                }
            }
        }
    }

    async fn discover(&self, i: usize) {
        let upstream = &self.upstreams[i];
        let status = upstream.status();
        let ready = matches!(status, Status::Ready(_));
        let offer = match status {
            Status::Ready(info) => {
                let caps = &info.capabilities;
                let has = |k: &str| caps.get(k).is_some_and(|c| !c.is_null());
                let list = |method: &'static str, field: &'static str, wanted: bool| async move {
                    if !wanted {
                        return vec![];
                    }
                    match upstream.list_all(method, field).await {
                        Ok(items) => items,
                        Err(e) => {
                            tracing::warn!(upstream = upstream.name(), method, error = %e, "discovery failed");
                            vec![]
                        }
                    }
                };
                let (tools, prompts, resources, templates) = tokio::join!(
                    list("tools/list", "tools", has("tools")),
                    list("prompts/list", "prompts", has("prompts")),
                    list("resources/list", "resources", has("resources")),
                    list(
                        "resources/templates/list",
                        "resourceTemplates",
                        has("resources")
                    ),
                );
                let mut offer =
                    Offer::filtered(upstream.config(), tools, prompts, resources, templates);
                offer.has_resources = has("resources");
                if upstream.config().validate_input {
                    offer.checks = offer
                        .tools
                        .iter()
                        .filter_map(|t| {
                            let name = t.get("name")?.as_str()?;
                            let schema = t.get("inputSchema")?;
                            crate::validate::SchemaCheck::compile(upstream.name(), name, schema)
                                .map(|c| (name.to_owned(), c))
                        })
                        .collect();
                }
                offer.held = self.check_pins(upstream.name(), &offer.tools).await;
                offer.instructions = info.instructions.clone();
                tracing::info!(
                    upstream = upstream.name(),
                    tools = offer.tools.len(),
                    prompts = offer.prompts.len(),
                    resources = offer.resources.len(),
                    templates = offer.templates.len(),
                    "discovered upstream offer"
                );
                offer
            }
            // Keep routing to a down upstream's last offer (calls then fail
            // with "unavailable", naming it), but leave it out of lists.
            _ => Offer {
                live: false,
                ..(*self.offer(i)).clone()
            },
        };
        if let Some(slot) = self.offers.lock().get_mut(i) {
            *slot = Arc::new(offer);
        }
        if let Some(d) = self.discovered.lock().get_mut(i) {
            *d = ready;
        }
        self.publish(&[i]);
        self.discovery_done.notify_waiters();
    }

    /// Checks every tool definition of an upstream against its pin; returns
    /// the tools to hold (changed, under the `block` policy).
    async fn check_pins(
        &self,
        upstream: &str,
        tools: &[Value],
    ) -> std::collections::HashSet<String> {
        use crate::pin::Verdict;
        let mut held = std::collections::HashSet::new();
        if self.pinning == PinningPolicy::Off {
            return held;
        }
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let key = crate::pin::key(upstream, name);
            let mut verdict = self.pins.check(&key, tool);
            if let Verdict::FirstSeen(pin) = verdict {
                if !self.persist_pin(&key, pin).await {
                    continue;
                }
                // Another replica's pin won: check against it.
                verdict = self.pins.check(&key, tool);
            }
            match verdict {
                Verdict::Trusted | Verdict::FirstSeen(_) => {}
                Verdict::Changed {
                    pending,
                    changes,
                    new,
                } => {
                    if new {
                        let fields: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
                        tracing::warn!(
                            upstream,
                            tool = name,
                            changed = ?fields,
                            policy = ?self.pinning,
                            "tool definition changed since it was pinned"
                        );
                        self.metrics.record_tool_definition_change(upstream);
                        self.persist_pending(&key, pending).await;
                    }
                    if self.pinning == PinningPolicy::Block {
                        held.insert(name.to_owned());
                    }
                }
            }
        }
        if self.pinning == PinningPolicy::Block {
            self.metrics.set_tools_held(self.pins.pending().len());
        }
        held
    }

    /// Re-discovers every upstream (after a pin approval, a reload).
    pub(crate) fn rediscover_all(&self) {
        for n in &self.rediscover {
            n.notify_one();
        }
    }

    fn on_event(&self, event: UpstreamEvent) {
        let Some(i) = self
            .upstreams
            .iter()
            .position(|u| u.name() == &*event.upstream)
        else {
            return;
        };
        if let Some(session) = event.session {
            self.on_session_event(i, &session, event.kind);
            return;
        }
        match event.kind {
            EventKind::Ready(_) => {
                if std::mem::take(&mut self.was_down.lock()[i]) {
                    self.metrics
                        .record_healing_attempt(self.issue_of(i), HealingStatus::Success);
                    self.metrics
                        .record_upstream_restart(self.upstreams[i].name());
                    self.restarts[i].fetch_add(1, Ordering::Relaxed);
                }
                self.rediscover[i].notify_one();
            }
            EventKind::Down(_) => {
                // A second Down without a Ready between is a failed reconnect.
                if std::mem::replace(&mut self.was_down.lock()[i], true) {
                    self.metrics
                        .record_healing_attempt(self.issue_of(i), HealingStatus::Failure);
                }
                self.rediscover[i].notify_one();
            }
            EventKind::Notification(n) => self.on_notification(i, n),
        }
    }

    /// An event of one session's own process (`pool = "per_session"`): it
    /// concerns that session alone. Its Ready/Down say nothing about the
    /// catalog, which the template process serves.
    fn on_session_event(&self, i: usize, session: &str, kind: EventKind) {
        let n = match kind {
            EventKind::Notification(n) => n,
            EventKind::Ready(_) => {
                // The supervisor counts a restart before it reports Ready.
                let total = self.upstreams[i].session_restarts();
                let seen = self.session_restarts[i].fetch_max(total, Ordering::Relaxed);
                for _ in seen..total {
                    self.metrics
                        .record_upstream_restart(self.upstreams[i].name());
                    self.metrics
                        .record_healing_attempt(HealingIssue::ProcessCrash, HealingStatus::Success);
                }
                return;
            }
            EventKind::Down(_) => return,
        };
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        match n.method.as_str() {
            "notifications/resources/updated" => {
                let uri = params_uri(&n);
                if uri.is_some_and(|uri| s.subscriptions.lock().contains(&uri)) {
                    s.standalone
                        .push(encode_notification(&n.method, n.params.as_deref()));
                }
            }
            "notifications/message" => {
                let level = n
                    .params
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|v| v.get("level").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| "info".into());
                if s.log_opted_in() && s.wants_log(&level) {
                    s.standalone
                        .push(encode_notification(&n.method, n.params.as_deref()));
                }
            }
            // The lists come from the template; a session process that
            // changes its own is not re-discovered per session.
            other => tracing::debug!(
                upstream = self.upstreams[i].name(),
                method = other,
                "dropping per-session upstream notification"
            ),
        }
    }

    fn on_notification(&self, i: usize, n: Notification) {
        match n.method.as_str() {
            "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed" => self.rediscover[i].notify_one(),
            "notifications/resources/updated" => {
                let params: Value = n
                    .params
                    .as_deref()
                    .and_then(|p| serde_json::from_str(p.get()).ok())
                    .unwrap_or(Value::Null);
                let Some(uri) = params.get("uri").and_then(Value::as_str) else {
                    return;
                };
                // A cached read of this resource is now out of date.
                let key = crate::cache::resource_key(self.upstreams[i].name(), uri);
                let cache = self.cache.clone();
                self.tasks
                    .spawn(async move { cache.invalidate(&key).await });
                let bytes = bytes::Bytes::from(encode_notification(&n.method, n.params.as_deref()));
                for s in self.sessions.all() {
                    if s.subscriptions.lock().contains(uri) && self.catalog(s.route).includes(i) {
                        s.standalone.push(bytes.clone());
                    }
                }
            }
            "notifications/message" => {
                // Not tied to any request: only clients that asked for logs get it.
                let level = n
                    .params
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|v| v.get("level").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| "info".into());
                let bytes = bytes::Bytes::from(encode_notification(&n.method, n.params.as_deref()));
                for s in self.sessions.all() {
                    if s.log_opted_in() && s.wants_log(&level) && self.catalog(s.route).includes(i)
                    {
                        s.standalone.push(bytes.clone());
                    }
                }
            }
            other => tracing::debug!(
                upstream = self.upstreams[i].name(),
                method = other,
                "dropping unrelated upstream notification"
            ),
        }
    }

    pub(crate) fn breaker_state(&self, i: usize) -> switchboard_resilience::BreakerState {
        self.protection
            .get(i)
            .map_or(switchboard_resilience::BreakerState::Closed, |p| p.state())
    }

    fn issue_of(&self, i: usize) -> HealingIssue {
        match self.upstreams[i].config().transport {
            switchboard_config::TransportConfig::Stdio(_) => HealingIssue::ProcessCrash,
            _ => HealingIssue::ConnectionLost,
        }
    }

    /// Adds a session under the `max_sessions` cap; it is counted in
    /// `active_sessions_total` until its last reference is gone.
    pub(crate) fn add_session(
        &self,
        session: Arc<Session>,
    ) -> Result<(), switchboard_protocol::ErrorObject> {
        session.track(self.metrics.track_session());
        self.sessions
            .insert(session.clone(), self.server.max_sessions)?;
        self.record_session_start(&session);
        Ok(())
    }

    /// Scores each upstream and the whole gateway (0..1) for `/metrics` and
    /// `/health`: 1 when up with a closed breaker, 0.5 when up with a
    /// half-open breaker or still connecting, 0 when down or its breaker is
    /// open; the system score is the mean (1 with no upstreams).
    pub(crate) fn health_scores(&self) -> (Vec<f64>, f64) {
        let scores: Vec<f64> = self
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let breaker = self.breaker_state(i);
                match (u.status(), breaker) {
                    (_, switchboard_resilience::BreakerState::Open) => 0.0,
                    (Status::Ready(_), switchboard_resilience::BreakerState::Closed) => 1.0,
                    (Status::Ready(_), switchboard_resilience::BreakerState::HalfOpen)
                    | (Status::Connecting, _) => 0.5,
                    _ => 0.0,
                }
            })
            .collect();
        let system = if scores.is_empty() {
            1.0
        } else {
            scores.iter().sum::<f64>() / scores.len() as f64
        };
        (scores, system)
    }

    /// Sets the gauges that are read off current state rather than counted.
    pub(crate) fn refresh_gauges(&self) {
        let (scores, system) = self.health_scores();
        for (i, u) in self.upstreams.iter().enumerate() {
            self.metrics
                .set_upstream_up(u.name(), matches!(u.status(), Status::Ready(_)));
            self.metrics.set_upstream_health_score(u.name(), scores[i]);
            self.metrics
                .set_breaker_state(u.name(), telemetry_state(self.breaker_state(i)));
        }
        self.metrics.set_system_health_score(system);
        self.metrics
            .set_upstream_processes(switchboard_upstream::live_processes());
    }

    /// Subscribes `session` to `uri` on `upstream`, subscribing upstream only
    /// for the first session that asks.
    pub(crate) async fn subscribe(
        &self,
        session: &Session,
        upstream: usize,
        uri: &str,
        params: Option<Box<switchboard_protocol::RawValue>>,
    ) -> Result<Box<switchboard_protocol::RawValue>, switchboard_protocol::ErrorObject> {
        if !session.subscriptions.lock().insert(uri.to_owned()) {
            return Ok(switchboard_protocol::empty_object());
        }
        if self.upstreams[upstream].is_per_session() {
            // The session's own process: nothing is shared, nothing counted.
            let options = switchboard_upstream::CallOptions {
                session: Some(session.id.clone()),
                ..Default::default()
            };
            let outcome = self.upstreams[upstream]
                .request("resources/subscribe", params, options)
                .await;
            if let Err(e) = outcome {
                session.subscriptions.lock().remove(uri);
                return Err(e.to_error_object());
            }
            return Ok(switchboard_protocol::empty_object());
        }
        let first = {
            let mut subs = self.subscriptions.lock();
            let n = subs.entry((upstream, uri.to_owned())).or_default();
            *n += 1;
            *n == 1
        };
        if first {
            if let Err(e) = self.upstreams[upstream]
                .request("resources/subscribe", params, Default::default())
                .await
            {
                self.release(session, upstream, uri);
                return Err(e.to_error_object());
            }
        }
        Ok(switchboard_protocol::empty_object())
    }

    pub(crate) async fn unsubscribe(&self, session: &Session, upstream: usize, uri: &str) {
        let u = &self.upstreams[upstream];
        if u.is_per_session() {
            // Only a live process holds the subscription: never start one
            // just to unsubscribe.
            if session.subscriptions.lock().remove(uri) && u.has_session_instance(&session.id) {
                let options = switchboard_upstream::CallOptions {
                    session: Some(session.id.clone()),
                    ..Default::default()
                };
                let params = to_raw(&json!({ "uri": uri }));
                if let Err(e) = u
                    .request("resources/unsubscribe", Some(params), options)
                    .await
                {
                    tracing::debug!(upstream = u.name(), error = %e, "upstream unsubscribe failed");
                }
            }
            return;
        }
        if self.release(session, upstream, uri) {
            let params = to_raw(&json!({ "uri": uri }));
            if let Err(e) = self.upstreams[upstream]
                .request("resources/unsubscribe", Some(params), Default::default())
                .await
            {
                tracing::debug!(upstream = self.upstreams[upstream].name(), error = %e, "upstream unsubscribe failed");
            }
        }
    }

    /// Drops one session's interest; true when it was the last one.
    fn release(&self, session: &Session, upstream: usize, uri: &str) -> bool {
        if !session.subscriptions.lock().remove(uri) {
            return false;
        }
        let mut subs = self.subscriptions.lock();
        let key = (upstream, uri.to_owned());
        match subs.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                subs.remove(&key);
                true
            }
            None => false,
        }
    }

    /// Ends a session and releases what it held upstream.
    pub(crate) async fn end_session(&self, id: &str) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        self.release_all(&session).await;
        true
    }

    /// Releases what an ended session held upstream: shared subscriptions,
    /// and the processes of `per_session` upstreams (stopped in the
    /// background, so none outlives its session).
    async fn release_all(&self, session: &Session) {
        self.record_session_end(session);
        let uris: Vec<String> = session.subscriptions.lock().iter().cloned().collect();
        let catalog = self.catalog(session.route);
        for uri in uris {
            match catalog.resource(&uri) {
                // The process is about to stop; its subscriptions end with it.
                Some(u) if self.upstreams[u].is_per_session() => {}
                Some(u) => self.unsubscribe(session, u, &uri).await,
                None => {}
            }
        }
        for u in &self.upstreams {
            u.end_session(&session.id);
        }
    }

    /// Closes one upstream's circuit breaker by hand (an operator who knows
    /// the upstream is fixed need not wait out the open period). Returns
    /// `false` when no upstream has that name.
    pub(crate) fn reset_breaker(&self, upstream: &str) -> bool {
        let Some(i) = self.upstreams.iter().position(|u| u.name() == upstream) else {
            return false;
        };
        self.protection[i].breaker.reset();
        tracing::info!(upstream, "circuit breaker reset by hand");
        true
    }
}

/// The `uri` of a notification's params, if any.
fn params_uri(n: &Notification) -> Option<String> {
    let params: Value = serde_json::from_str(n.params.as_deref()?.get()).ok()?;
    params.get("uri")?.as_str().map(str::to_owned)
}

fn telemetry_state(s: switchboard_resilience::BreakerState) -> switchboard_telemetry::BreakerState {
    match s {
        switchboard_resilience::BreakerState::Closed => switchboard_telemetry::BreakerState::Closed,
        switchboard_resilience::BreakerState::Open => switchboard_telemetry::BreakerState::Open,
        switchboard_resilience::BreakerState::HalfOpen => {
            switchboard_telemetry::BreakerState::HalfOpen
        }
    }
}

async fn discovery_loop(shared: Arc<Shared>, i: usize) {
    let trigger = shared.rediscover[i].clone();
    loop {
        tokio::select! {
            _ = trigger.notified() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        tokio::select! {
            _ = shared.discover(i) => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

async fn event_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<UpstreamEvent>) {
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => shared.on_event(ev),
                None => return,
            },
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

async fn reaper(shared: Arc<Shared>) {
    let max_idle = shared.server.session_idle_timeout;
    let period = (max_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        if let Some(l) = &shared.limiter {
            l.forget_idle();
        }
        for s in shared.sessions.reap(max_idle) {
            tracing::info!(session = %s.id, "closed idle session");
            shared.release_all(&s).await;
        }
    }
}

/// How often approvals made elsewhere are picked up and the audit backlog
/// is published.
const GOVERNANCE_PERIOD: Duration = Duration::from_secs(5);
/// Health reports are stored every this many governance periods (1 min).
const HEALTH_REPORT_EVERY: u64 = 12;

async fn governance(shared: Arc<Shared>) {
    let mut ticks: u64 = 0;
    loop {
        ticks = ticks.wrapping_add(1);
        if ticks % HEALTH_REPORT_EVERY == 1 {
            shared.store_health_reports().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(GOVERNANCE_PERIOD) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        shared.sync_pins().await;
        if let Some(a) = &shared.audit {
            shared
                .metrics
                .set_audit_backlog(a.pending(), a.spool_bytes());
            shared.metrics.set_audit_dropped(a.dropped());
        }
        if let Some(l) = &shared.identity_limiter {
            l.forget_idle();
        }
        shared.tool_limits.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_resilience::BreakerState;

    /// Nothing listens on port 1 of loopback: the upstream never connects,
    /// and no process is spawned.
    const CONFIG: &str = "[[upstreams]]\nname = \"down\"\nurl = \"http://127.0.0.1:1/mcp\"\nhealth_check_interval = \"0s\"\nbreaker = { consecutive_failures = 2 }\n";

    #[tokio::test]
    async fn resetting_a_breaker_closes_it_and_unknown_names_are_refused() {
        let shared = Shared::start(
            switchboard_config::parse(CONFIG, "t").unwrap(),
            crate::Services::default(),
        )
        .unwrap();
        for _ in 0..2 {
            shared.protection[0]
                .breaker
                .try_acquire()
                .unwrap()
                .failure();
        }
        assert_eq!(shared.breaker_state(0), BreakerState::Open);
        assert!(shared.protection[0].breaker.try_acquire().is_err());

        assert!(shared.reset_breaker("down"));
        assert_eq!(shared.breaker_state(0), BreakerState::Closed);
        assert!(shared.protection[0].breaker.try_acquire().is_ok());

        assert!(!shared.reset_breaker("nope"));
        shared.shutdown.cancel();
        for u in &shared.upstreams {
            u.shutdown().await;
        }
    }
}
