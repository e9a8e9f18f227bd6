//! Switchboard's telemetry: the Prometheus metrics the gateway records and `/metrics` serves.
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
//!
//! # Invariants
//!
//! - Metric names exist only as consts in [`name`]; call sites never build one.
//! - Every label value is either a variant of a closed enum or passes through a bounded set,
//!   so the number of series is bounded whatever clients and upstreams send. No session id,
//!   request id, user input or tool argument ever becomes a label.
//! - [`Metrics::render`]'s output passes `promtool check metrics` (tested).

mod bearer;
mod exposition;
mod label;
mod metrics;
pub mod name;

pub use bearer::check_bearer;
pub use exposition::CONTENT_TYPE;
pub use label::{
    BreakerCall, BreakerState, CacheName, Endpoint, HealingIssue, HealingStatus, McpMethod,
    McpStatus, RejectReason, ToolCallStatus, OTHER,
};
pub use metrics::{GaugeGuard, Metrics, MetricsConfig};
