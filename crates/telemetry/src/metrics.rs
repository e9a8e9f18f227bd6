//! [`Metrics`]: the registry the gateway records into and `/metrics` renders.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::exposition;
use crate::label::{
    self, BoundedLabels, BreakerCall, BreakerState, CacheName, Endpoint, HealingIssue,
    HealingStatus, Label, McpMethod, McpStatus, RejectReason, ToolCallStatus,
};
use crate::name;

/// Limits on open-set label values, fixed at construction.
///
/// They bound the number of series an upstream can create, whatever it advertises: at the
/// defaults the tool metrics hold at most `max_upstreams * max_tools_per_upstream` label
/// pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Distinct `tool_name` values kept per upstream; later tools are counted as `other`.
    /// 256 covers every real MCP server we know of, while a server advertising thousands of
    /// generated tools cannot blow up the scrape.
    pub max_tools_per_upstream: usize,
    /// Distinct `upstream` (and breaker `component`) values kept; later ones are `other`.
    /// Upstream names come from configuration, so this only guards against a wiring bug
    /// that feeds something unbounded (a session-scoped name) into the label.
    pub max_upstreams: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_tools_per_upstream: 256,
            max_upstreams: 1024,
        }
    }
}

/// The gateway's metrics: typed recording methods and the `/metrics` exposition.
///
/// Cheap to clone (one `Arc`); every clone records into the same registry. Recording never
/// allocates once a label combination has been seen, and never blocks beyond short
/// uncontended locks, so it is fit for the hot path.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug)]
struct Inner {
    config: MetricsConfig,
    /// Owns a handle to every metric below; only `render` reads it.
    registry: Registry,

    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpRouteLabels>,
    mcp_requests: Family<McpLabels, Counter>,
    tool_calls: Family<ToolCallLabels, Counter>,
    tool_duration: HistogramFamily<ToolLabels>,
    breaker_state: Family<ComponentLabels, Gauge>,
    breaker_calls: Family<BreakerCallLabels, Counter>,
    breaker_latency: HistogramFamily<ComponentLabels>,
    healing_attempts: Family<HealingLabels, Counter>,
    healing_success_rate: FloatGauge,
    /// Successes and attempts, under one lock so the published ratio is always one that
    /// existed; healing is rare, so the lock is never contended in practice.
    healing_tally: Mutex<HealingTally>,
    system_health_score: FloatGauge,
    upstream_health_score: Family<UpstreamLabels, FloatGauge>,
    active_sessions: Gauge,
    upstream_up: Family<UpstreamLabels, Gauge>,
    upstream_restarts: Family<UpstreamLabels, Counter>,
    upstream_processes: Gauge,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    rejected_requests: Family<RejectLabels, Counter>,
    tool_definition_changes: Family<UpstreamLabels, Counter>,
    tools_held: Gauge,
    audit_pending: Gauge,
    audit_spool_bytes: Gauge,
    audit_dropped: Counter,

    upstreams: BoundedLabels,
    components: BoundedLabels,
    /// Admitted tool names per admitted upstream (the `other` upstream included, so even
    /// overflow upstreams are bounded).
    tools: RwLock<HashMap<Label, Arc<BoundedLabels>>>,
}

#[derive(Debug, Default)]
struct HealingTally {
    attempts: u64,
    successes: u64,
}

// Label sets. Field order is the exposed label order.

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    endpoint: &'static str,
    status_code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpRouteLabels {
    method: &'static str,
    endpoint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct McpLabels {
    method: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolCallLabels {
    upstream: Label,
    tool_name: Label,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolLabels {
    upstream: Label,
    tool_name: Label,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ComponentLabels {
    component: Label,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BreakerCallLabels {
    component: Label,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HealingLabels {
    issue_type: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Label,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    reason: &'static str,
}

/// A gauge declared `untyped` in the exposition.
///
/// Only for `active_sessions_total`: the seeds name it with `_total`, and promtool's linter
/// rejects `_total` on a gauge but accepts it on an untyped metric. Prometheus stores
/// gauges and untyped samples identically, so queries are unaffected.
#[derive(Debug, Clone)]
struct Untyped(Gauge);

impl EncodeMetric for Untyped {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
}

/// Returns the name to register a counter under, so that `prometheus-client`'s automatic
/// `_total` suffix yields exactly the const in [`name`].
fn counter_family(exposed: &'static str) -> &'static str {
    exposed.strip_suffix("_total").unwrap_or(exposed)
}

fn latency_histogram() -> Histogram {
    Histogram::new(name::LATENCY_BUCKETS)
}

/// Clamps a score into 0..=1; NaN (a 0/0 upstream of us) reads as 0, the alarming end.
fn clamp_score(score: f64) -> f64 {
    if score.is_nan() {
        0.0
    } else {
        score.clamp(0.0, 1.0)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(MetricsConfig::default())
    }
}

impl Metrics {
    /// Creates a registry with every metric registered and no series yet recorded
    /// (labelled families appear on first use; unlabelled gauges start at their documented
    /// initial values).
    pub fn new(config: MetricsConfig) -> Self {
        let mut registry = Registry::default();

        let http_requests = Family::default();
        registry.register(
            counter_family(name::HTTP_REQUESTS_TOTAL),
            "Downstream HTTP requests answered, by method, route template and status code",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<_> = Family::new_with_constructor(latency_histogram);
        registry.register(
            name::HTTP_REQUEST_DURATION_SECONDS,
            "Downstream HTTP request latency in seconds, by method and route template",
            http_duration.clone(),
        );
        let mcp_requests = Family::default();
        registry.register(
            counter_family(name::MCP_REQUESTS_TOTAL),
            "MCP JSON-RPC messages handled, by method and outcome",
            mcp_requests.clone(),
        );
        let tool_calls = Family::default();
        registry.register(
            counter_family(name::MCP_TOOL_CALLS_TOTAL),
            "MCP tool calls, by upstream, tool and outcome",
            tool_calls.clone(),
        );
        let tool_duration: HistogramFamily<_> = Family::new_with_constructor(latency_histogram);
        registry.register(
            name::MCP_TOOL_DURATION_SECONDS,
            "MCP tool call latency in seconds for calls that reached the upstream",
            tool_duration.clone(),
        );
        let breaker_state = Family::default();
        registry.register(
            name::CIRCUIT_BREAKER_STATE,
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        let breaker_calls = Family::default();
        registry.register(
            counter_family(name::CIRCUIT_BREAKER_CALLS_TOTAL),
            "Calls seen by a circuit breaker, by result",
            breaker_calls.clone(),
        );
        let breaker_latency: HistogramFamily<_> = Family::new_with_constructor(latency_histogram);
        registry.register(
            name::CIRCUIT_BREAKER_LATENCY_SECONDS,
            "Latency in seconds of calls a circuit breaker let through",
            breaker_latency.clone(),
        );
        let healing_attempts = Family::default();
        registry.register(
            counter_family(name::HEALING_ATTEMPTS_TOTAL),
            "Self-healing attempts, by issue type and outcome",
            healing_attempts.clone(),
        );
        let healing_success_rate = FloatGauge::default();
        healing_success_rate.set(1.0);
        registry.register(
            name::HEALING_SUCCESS_RATE,
            "Successful self-healing attempts over all attempts since start (1 before any)",
            healing_success_rate.clone(),
        );
        let system_health_score = FloatGauge::default();
        system_health_score.set(1.0);
        registry.register(
            name::SYSTEM_HEALTH_SCORE,
            "Overall gateway health score from 0 (down) to 1 (healthy)",
            system_health_score.clone(),
        );
        let upstream_health_score = Family::default();
        registry.register(
            name::UPSTREAM_HEALTH_SCORE,
            "Upstream health score from 0 (down) to 1 (healthy)",
            upstream_health_score.clone(),
        );
        let active_sessions = Gauge::default();
        registry.register(
            name::ACTIVE_SESSIONS_TOTAL,
            "Open downstream MCP sessions (a gauge, exposed untyped)",
            Untyped(active_sessions.clone()),
        );
        let upstream_up = Family::default();
        registry.register(
            name::UPSTREAM_UP,
            "Whether the upstream is connected and initialised (1) or not (0)",
            upstream_up.clone(),
        );
        let upstream_restarts = Family::default();
        registry.register(
            counter_family(name::UPSTREAM_RESTARTS_TOTAL),
            "Upstream process restarts and reconnects",
            upstream_restarts.clone(),
        );
        let upstream_processes = Gauge::default();
        registry.register(
            name::UPSTREAM_PROCESSES,
            "Live upstream child processes, all upstreams together",
            upstream_processes.clone(),
        );
        let cache_hits = Family::default();
        registry.register(
            counter_family(name::CACHE_HITS_TOTAL),
            "Cache lookups that found an entry",
            cache_hits.clone(),
        );
        let cache_misses = Family::default();
        registry.register(
            counter_family(name::CACHE_MISSES_TOTAL),
            "Cache lookups that found no entry",
            cache_misses.clone(),
        );
        let rejected_requests = Family::default();
        registry.register(
            counter_family(name::REJECTED_REQUESTS_TOTAL),
            "Downstream requests refused before dispatch, by reason",
            rejected_requests.clone(),
        );

        let tool_definition_changes = Family::default();
        registry.register(
            counter_family(name::TOOL_DEFINITION_CHANGES_TOTAL),
            "Tool definitions seen that differ from their pin, by upstream",
            tool_definition_changes.clone(),
        );
        let tools_held = Gauge::default();
        registry.register(
            name::TOOLS_HELD,
            "Tools hidden until an operator approves their changed definition",
            tools_held.clone(),
        );
        let audit_pending = Gauge::default();
        registry.register(
            name::AUDIT_PENDING_RECORDS,
            "Audit records accepted but not yet written to the store",
            audit_pending.clone(),
        );
        let audit_spool_bytes = Gauge::default();
        registry.register(
            name::AUDIT_SPOOL_BYTES,
            "Bytes of audit records waiting in the on-disk spool",
            audit_spool_bytes.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            counter_family(name::AUDIT_DROPPED_TOTAL),
            "Audit records lost because the on-disk spool was full",
            audit_dropped.clone(),
        );

        Self {
            inner: Arc::new(Inner {
                upstreams: BoundedLabels::new(config.max_upstreams),
                components: BoundedLabels::new(config.max_upstreams),
                tools: RwLock::new(HashMap::new()),
                config,
                registry,
                http_requests,
                http_duration,
                mcp_requests,
                tool_calls,
                tool_duration,
                breaker_state,
                breaker_calls,
                breaker_latency,
                healing_attempts,
                healing_success_rate,
                healing_tally: Mutex::new(HealingTally::default()),
                system_health_score,
                upstream_health_score,
                active_sessions,
                upstream_up,
                upstream_restarts,
                upstream_processes,
                cache_hits,
                cache_misses,
                rejected_requests,
                tool_definition_changes,
                tools_held,
                audit_pending,
                audit_spool_bytes,
                audit_dropped,
            }),
        }
    }

    /// Returns the exposition in the Prometheus text format ([`crate::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut openmetrics = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode_registry(
            &mut openmetrics,
            &self.inner.registry,
        ) {
            // Only a label encoder can fail, and ours write plain strings; an empty
            // exposition is still valid, a truncated one would not be.
            tracing::error!(%error, "encoding the metrics registry failed");
            return String::new();
        }
        exposition::openmetrics_to_prometheus(&openmetrics)
    }

    /// Records one downstream HTTP request, once its response status is known.
    ///
    /// `endpoint` is the route template (see [`Endpoint::from_path`]), never the raw path.
    /// Record a streaming response (SSE) when its head goes out: a stream that lives for an
    /// hour would otherwise only ever land in the `+Inf` bucket.
    pub fn record_http_request(
        &self,
        method: &http::Method,
        endpoint: Endpoint,
        status: http::StatusCode,
        elapsed: Duration,
    ) {
        let method = label::http_method(method);
        let endpoint = endpoint.as_str();
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method,
                endpoint,
                status_code: status.as_u16(),
            })
            .inc();
        self.inner
            .http_duration
            .get_or_create(&HttpRouteLabels { method, endpoint })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one MCP JSON-RPC message handled by the gateway (request or notification).
    pub fn record_mcp_request(&self, method: McpMethod, status: McpStatus) {
        self.inner
            .mcp_requests
            .get_or_create(&McpLabels {
                method: method.as_str(),
                status: status.as_str(),
            })
            .inc();
    }

    /// Records one `tools/call` and how it ended.
    ///
    /// `upstream` is the configured upstream name and `tool_name` the upstream's own (not
    /// namespaced) tool name. Both are bounded by [`MetricsConfig`]. The duration is
    /// observed only for calls that reached the upstream; `Rejected` and `Unavailable`
    /// calls are counted but not timed.
    pub fn record_tool_call(
        &self,
        upstream: &str,
        tool_name: &str,
        status: ToolCallStatus,
        elapsed: Duration,
    ) {
        let upstream = self.inner.upstreams.admit(upstream);
        let tool_name = self.tools_of(&upstream).admit(tool_name);
        self.inner
            .tool_calls
            .get_or_create(&ToolCallLabels {
                upstream: upstream.clone(),
                tool_name: tool_name.clone(),
                status: status.as_str(),
            })
            .inc();
        if status.reached_upstream() {
            self.inner
                .tool_duration
                .get_or_create(&ToolLabels {
                    upstream,
                    tool_name,
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Publishes a circuit breaker's state; call on every transition.
    pub fn set_breaker_state(&self, component: &str, state: BreakerState) {
        let component = self.inner.components.admit(component);
        self.inner
            .breaker_state
            .get_or_create(&ComponentLabels { component })
            .set(state.as_gauge());
    }

    /// Records one call seen by a circuit breaker; calls that ran also feed the latency
    /// histogram.
    pub fn record_breaker_call(&self, component: &str, call: BreakerCall) {
        let component = self.inner.components.admit(component);
        self.inner
            .breaker_calls
            .get_or_create(&BreakerCallLabels {
                component: component.clone(),
                result: call.as_str(),
            })
            .inc();
        if let BreakerCall::Success(latency) | BreakerCall::Failure(latency) = call {
            self.inner
                .breaker_latency
                .get_or_create(&ComponentLabels { component })
                .observe(latency.as_secs_f64());
        }
    }

    /// Records one finished self-healing attempt and republishes `healing_success_rate`.
    pub fn record_healing_attempt(&self, issue: HealingIssue, status: HealingStatus) {
        self.inner
            .healing_attempts
            .get_or_create(&HealingLabels {
                issue_type: issue.as_str(),
                status: status.as_str(),
            })
            .inc();
        let mut tally = self.inner.healing_tally.lock();
        tally.attempts += 1;
        if status == HealingStatus::Success {
            tally.successes += 1;
        }
        // u64 -> f64 loses precision only past 2^53 attempts
        let rate = tally.successes as f64 / tally.attempts as f64;
        self.inner.healing_success_rate.set(rate);
    }

    /// Publishes the gateway's overall health score, clamped into 0..=1 (NaN reads as 0).
    ///
    /// Starts at 1 so a freshly started gateway does not page before its first evaluation.
    pub fn set_system_health_score(&self, score: f64) {
        self.inner.system_health_score.set(clamp_score(score));
    }

    /// Publishes one upstream's health score, clamped into 0..=1 (NaN reads as 0).
    pub fn set_upstream_health_score(&self, upstream: &str, score: f64) {
        let upstream = self.inner.upstreams.admit(upstream);
        self.inner
            .upstream_health_score
            .get_or_create(&UpstreamLabels { upstream })
            .set(clamp_score(score));
    }

    /// Counts one open downstream session until the returned guard drops.
    ///
    /// A guard rather than inc/dec calls, so that every way a session ends (close, expiry,
    /// eviction, a panic in its task) gives the count back. Keep it in the session's state.
    pub fn track_session(&self) -> GaugeGuard {
        GaugeGuard::new(self.inner.active_sessions.clone())
    }

    /// Publishes whether an upstream is connected and initialised.
    pub fn set_upstream_up(&self, upstream: &str, up: bool) {
        let upstream = self.inner.upstreams.admit(upstream);
        self.inner
            .upstream_up
            .get_or_create(&UpstreamLabels { upstream })
            .set(i64::from(up));
    }

    /// Records one restart of an upstream's process, or one reconnect of a remote upstream.
    pub fn record_upstream_restart(&self, upstream: &str) {
        let upstream = self.inner.upstreams.admit(upstream);
        self.inner
            .upstream_restarts
            .get_or_create(&UpstreamLabels { upstream })
            .inc();
    }

    /// Counts one live upstream child process until the returned guard drops.
    ///
    /// Drop the guard after the process has been reaped, not when it was signalled, so the
    /// gauge is the orphan detector the process-churn test relies on.
    pub fn track_upstream_process(&self) -> GaugeGuard {
        GaugeGuard::new(self.inner.upstream_processes.clone())
    }

    /// Sets the live child-process count read off the process table of the
    /// upstream clients (for callers that count rather than hold guards).
    pub fn set_upstream_processes(&self, live: usize) {
        self.inner
            .upstream_processes
            .set(i64::try_from(live).unwrap_or(i64::MAX));
    }

    /// Records a cache lookup that found an entry.
    pub fn record_cache_hit(&self, cache: CacheName) {
        self.inner
            .cache_hits
            .get_or_create(&CacheLabels {
                cache: cache.as_str(),
            })
            .inc();
    }

    /// Records a cache lookup that found no entry.
    pub fn record_cache_miss(&self, cache: CacheName) {
        self.inner
            .cache_misses
            .get_or_create(&CacheLabels {
                cache: cache.as_str(),
            })
            .inc();
    }

    /// Records a downstream request refused before dispatch.
    pub fn record_rejected_request(&self, reason: RejectReason) {
        self.inner
            .rejected_requests
            .get_or_create(&RejectLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Records one tool definition that differs from its pin.
    pub fn record_tool_definition_change(&self, upstream: &str) {
        let upstream = self.inner.upstreams.admit(upstream);
        self.inner
            .tool_definition_changes
            .get_or_create(&UpstreamLabels { upstream })
            .inc();
    }

    /// Sets how many tools are held for approval.
    pub fn set_tools_held(&self, held: usize) {
        self.inner
            .tools_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Sets how far the audit log is behind: records not yet stored, and the
    /// bytes of them waiting on disk.
    pub fn set_audit_backlog(&self, pending: u64, spool_bytes: u64) {
        self.inner
            .audit_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.inner
            .audit_spool_bytes
            .set(i64::try_from(spool_bytes).unwrap_or(i64::MAX));
    }

    /// Sets the total of audit records lost so far (the writer counts them).
    pub fn set_audit_dropped(&self, total: u64) {
        let now = self.inner.audit_dropped.get();
        if total > now {
            self.inner.audit_dropped.inc_by(total - now);
        }
    }

    /// Drops an upstream's state gauges (`upstream_up`, `upstream_health_score`) after a
    /// reload removed it, so dashboards do not show a stale "up". Counters and histograms
    /// stay: they are history, and Prometheus ages them out.
    pub fn remove_upstream(&self, upstream: &str) {
        if let Some(upstream) = self.inner.upstreams.get(upstream) {
            let labels = UpstreamLabels { upstream };
            self.inner.upstream_up.remove(&labels);
            self.inner.upstream_health_score.remove(&labels);
        }
    }

    /// Returns the bounded tool-name set of an (already admitted) upstream.
    fn tools_of(&self, upstream: &Label) -> Arc<BoundedLabels> {
        if let Some(tools) = self.inner.tools.read().get(upstream) {
            return Arc::clone(tools);
        }
        let max_tools = self.inner.config.max_tools_per_upstream;
        Arc::clone(
            self.inner
                .tools
                .write()
                .entry(upstream.clone())
                .or_insert_with(|| Arc::new(BoundedLabels::new(max_tools))),
        )
    }
}

// === impl GaugeGuard ===

/// Holds one unit of a gauge (a session, a child process) and gives it back on drop.
#[derive(Debug)]
#[must_use = "the gauge is decremented as soon as the guard is dropped"]
pub struct GaugeGuard {
    gauge: Gauge,
}

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self { gauge }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests;
