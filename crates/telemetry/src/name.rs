//! Metric names, exactly as exposed on `/metrics`.
//!
//! Alert rules, the Grafana dashboard and tests refer to these strings; keeping them as
//! consts in one place is how a rename stays a one-line, greppable change. Counter names
//! carry their `_total` suffix here even though `prometheus-client` adds it itself: the
//! registry strips it at registration (see `metrics::counter_family`), so the exposed name is
//! the const, never `_total_total`.

/// Counter `{method, endpoint, status_code}`: downstream HTTP requests answered.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram `{method, endpoint}`: downstream HTTP request latency.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
/// Counter `{method, status}`: MCP JSON-RPC messages handled, by method.
pub const MCP_REQUESTS_TOTAL: &str = "mcp_requests_total";
/// Counter `{upstream, tool_name, status}`: `tools/call` outcomes.
pub const MCP_TOOL_CALLS_TOTAL: &str = "mcp_tool_calls_total";
/// Histogram `{upstream, tool_name}`: `tools/call` latency, for calls that reached the upstream.
pub const MCP_TOOL_DURATION_SECONDS: &str = "mcp_tool_duration_seconds";
/// Gauge `{component}`: 0 closed, 1 open, 2 half-open.
pub const CIRCUIT_BREAKER_STATE: &str = "circuit_breaker_state";
/// Counter `{component, result}`: calls seen by a breaker.
pub const CIRCUIT_BREAKER_CALLS_TOTAL: &str = "circuit_breaker_calls_total";
/// Histogram `{component}`: latency of calls a breaker let through.
pub const CIRCUIT_BREAKER_LATENCY_SECONDS: &str = "circuit_breaker_latency_seconds";
/// Counter `{issue_type, status}`: self-healing attempts.
pub const HEALING_ATTEMPTS_TOTAL: &str = "healing_attempts_total";
/// Gauge: successful healing attempts / all attempts since start (1 before any attempt).
pub const HEALING_SUCCESS_RATE: &str = "healing_success_rate";
/// Gauge: the gateway's overall health score in 0..=1.
pub const SYSTEM_HEALTH_SCORE: &str = "system_health_score";
/// Gauge `{upstream}`: one upstream's health score in 0..=1.
pub const UPSTREAM_HEALTH_SCORE: &str = "upstream_health_score";
/// Untyped gauge: open downstream MCP sessions. The name is the seeds'; see the README for
/// why it is declared `untyped` rather than `gauge`.
pub const ACTIVE_SESSIONS_TOTAL: &str = "active_sessions_total";
/// Gauge `{upstream}`: 1 if the upstream is connected and initialised, else 0.
pub const UPSTREAM_UP: &str = "upstream_up";
/// Counter `{upstream}`: upstream restarts and reconnects.
pub const UPSTREAM_RESTARTS_TOTAL: &str = "upstream_restarts_total";
/// Gauge: live upstream child processes, all upstreams together.
pub const UPSTREAM_PROCESSES: &str = "upstream_processes";
/// Counter `{cache}`: cache lookups that found an entry.
pub const CACHE_HITS_TOTAL: &str = "cache_hits_total";
/// Counter `{cache}`: cache lookups that found nothing.
pub const CACHE_MISSES_TOTAL: &str = "cache_misses_total";
/// Counter `{reason}`: downstream requests refused before dispatch.
pub const REJECTED_REQUESTS_TOTAL: &str = "rejected_requests_total";

/// Counter `{upstream}`: tool definitions seen that differ from their pin.
pub const TOOL_DEFINITION_CHANGES_TOTAL: &str = "tool_definition_changes_total";
/// Gauge: tools hidden until an operator approves their changed definition.
pub const TOOLS_HELD: &str = "tools_held";
/// Gauge: audit records accepted but not yet in the store (memory and spool).
pub const AUDIT_PENDING_RECORDS: &str = "audit_pending_records";
/// Gauge: bytes of audit records waiting in the on-disk spool.
pub const AUDIT_SPOOL_BYTES: &str = "audit_spool_bytes";
/// Counter: audit records lost because the spool was full.
pub const AUDIT_DROPPED_TOTAL: &str = "audit_dropped_total";

/// Every metric name, for tests and tooling that check the exposition covers them all.
pub const ALL: &[&str] = &[
    HTTP_REQUESTS_TOTAL,
    HTTP_REQUEST_DURATION_SECONDS,
    MCP_REQUESTS_TOTAL,
    MCP_TOOL_CALLS_TOTAL,
    MCP_TOOL_DURATION_SECONDS,
    CIRCUIT_BREAKER_STATE,
    CIRCUIT_BREAKER_CALLS_TOTAL,
    CIRCUIT_BREAKER_LATENCY_SECONDS,
    HEALING_ATTEMPTS_TOTAL,
    HEALING_SUCCESS_RATE,
    SYSTEM_HEALTH_SCORE,
    UPSTREAM_HEALTH_SCORE,
    ACTIVE_SESSIONS_TOTAL,
    UPSTREAM_UP,
    UPSTREAM_RESTARTS_TOTAL,
    UPSTREAM_PROCESSES,
    CACHE_HITS_TOTAL,
    CACHE_MISSES_TOTAL,
    REJECTED_REQUESTS_TOTAL,
    TOOL_DEFINITION_CHANGES_TOTAL,
    TOOLS_HELD,
    AUDIT_PENDING_RECORDS,
    AUDIT_SPOOL_BYTES,
    AUDIT_DROPPED_TOTAL,
];

/// Histogram bucket upper bounds in seconds, shared by every latency histogram.
///
/// MCP latencies span a cached `resources/read` (about a millisecond) to a long tool call
/// that hits the default 60 s timeout; 15 buckets cover that range at roughly 2–2.5x steps
/// below 10 s, where SLOs live, and coarser above.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
