//! Switchboard's telemetry: the Prometheus metrics the gateway records and `/metrics` serves,
//! the process's log subscriber, and OpenTelemetry trace export. It is the only crate that
//! depends on OpenTelemetry; the others use plain `tracing` spans and the helpers here.
//!
//! Tracing: the binary calls [`init`] once and holds the [`TracingGuard`]. The gateway names
//! spans and fields with `tracing` as usual, calls [`accept_remote_parent`] on each downstream
//! request span, [`inject_current`] on each upstream HTTP request, and [`redact_header`] on any
//! header it logs.
//!
//! The gateway builds one [`Metrics`] at start-up, clones it into whatever records (cheap: an
//! `Arc`), and serves [`Metrics::render`] with [`CONTENT_TYPE`] at `/metrics`, guarded by
//! [`check_bearer`] when `METRICS_TOKEN` is set. The metrics and their labels are listed in
//! this crate's README.
//!
//! # Layout
//!
//! - `metrics`: [`Metrics`], its typed recording methods, and the registry behind them.
//! - `label`: closed enums for every closed label set, and the bounded set that caps open
//!   ones (upstream and tool names).
//! - [`name`]: every metric name, as exposed, as a const.
//! - `exposition`: the classic Prometheus text format, rewritten from `prometheus-client`'s
//!   OpenMetrics output.
//! - `bearer`: the constant-time token check for `/metrics`.
//! - `trace`: the subscriber ([`init`]), `OTEL_*` resolution ([`OtelConfig`]), the OTLP
//!   exporter, JSON lines with trace ids, and W3C propagation.
//! - `redact`: which header values never reach a log line or span.
//!
//! # Invariants
//!
//! - Metric names exist only as consts in [`name`]; call sites never build one.
//! - Every label value is either a variant of a closed enum or passes through a bounded set,
//!   so the number of series is bounded whatever clients and upstreams send. No session id,
//!   request id, user input or tool argument ever becomes a label.
//! - [`Metrics::render`]'s output passes `promtool check metrics` (tested).
//! - Logs go to stderr only: in `serve --stdio` stdout is the MCP stream.
//! - Span export is off unless an OTLP endpoint is configured; when it is off no
//!   OpenTelemetry code runs per request.

mod bearer;
mod exposition;
mod label;
mod metrics;
pub mod name;
mod redact;
mod trace;

pub use bearer::check_bearer;
pub use exposition::CONTENT_TYPE;
pub use label::{
    BreakerCall, BreakerState, CacheName, Endpoint, HealingIssue, HealingStatus, McpMethod,
    McpStatus, RejectReason, ToolCallStatus, OTHER,
};
pub use metrics::{GaugeGuard, Metrics, MetricsConfig};
pub use redact::{is_sensitive_header, redact_header, REDACTED};
pub use trace::{
    accept_remote_parent, exporting_traces, init, init_with, inject_current, LogOptions,
    OtelConfig, Sampler, TraceError, TracingGuard, DEFAULT_SERVICE_NAME, SHUTDOWN_TIMEOUT,
};
