//! The process's tracing subscriber: filtered logs to stderr, and OpenTelemetry span export
//! when the standard `OTEL_*` variables ask for it.
//!
//! The subscriber, outermost first:
//!
//! 1. `EnvFilter` from `--log` / `SWITCHBOARD_LOG`: one filter for logs and exported spans alike.
//! 2. fmt layer to stderr, never stdout (in `serve --stdio` stdout is the MCP stream): JSON
//!    with `trace_id`/`span_id` (`json`), or the human format.
//! 3. OpenTelemetry layer, only with an [`OtelConfig`]: spans → batch processor (bounded
//!    queue) → OTLP/HTTP protobuf (`export`).
//!
//! Everything that can fail is done before the subscriber is installed, so an error leaves no
//! global state behind and the caller may retry (the CLI retries a bad filter with `info`).

mod config;
mod export;
mod json;
mod propagation;

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

pub use config::{OtelConfig, Sampler, DEFAULT_SERVICE_NAME};
pub use propagation::{accept_remote_parent, inject_current};

/// How long dropping [`TracingGuard`] may wait for the last spans to reach the collector. Short
/// enough that a dead collector cannot hold up a restart.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Name of the OpenTelemetry instrumentation scope our spans are reported under.
const SCOPE: &str = "switchboard";

/// Whether an OpenTelemetry layer is installed and its provider not yet shut down. Lets the
/// propagation helpers skip header parsing entirely when export is off.
static OTEL_ENABLED: AtomicBool = AtomicBool::new(false);

fn otel_enabled() -> bool {
    OTEL_ENABLED.load(Ordering::Relaxed)
}

/// Whether spans are exported. Per-request spans cost about 7 % of the
/// gateway's instructions in the log layer alone (callgrind), so callers skip
/// creating them when nobody receives them.
pub fn exporting_traces() -> bool {
    otel_enabled()
}

/// How logs are written. Export settings come separately, from [`OtelConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// `EnvFilter` directives, e.g. `info` or `info,switchboard_upstream=debug`. Also decides
    /// which spans are exported: a span the filter drops is never created.
    pub filter: String,
    /// One JSON object per line (for collectors) rather than the human format.
    pub json: bool,
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// `LogOptions::filter` is not valid `EnvFilter` syntax.
    #[error("bad log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An `OTEL_*` variable is set to something we cannot use.
    #[error("bad {var} value {value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The OTLP exporter or its HTTP client could not be built.
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The export thread or its runtime could not be started.
    #[error("cannot start the OTLP export thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Another global subscriber (or `log` logger) is already installed.
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Keeps span export alive. Dropping it flushes the queued spans and shuts the exporter down,
/// waiting at most [`SHUTDOWN_TIMEOUT`]; hold it until the runtime has returned, so the spans
/// of the last requests are sent. Logging keeps working after the drop.
#[derive(Debug)]
#[must_use = "dropping the guard stops span export"]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracingGuard {
    /// Whether spans are being exported (an [`OtelConfig`] was given).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            OTEL_ENABLED.store(false, Ordering::Relaxed);
            // Shutdown exports what is queued, then stops the batch worker.
            if let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                tracing::warn!(%error, "span export did not shut down cleanly");
            }
        }
    }
}

/// Installs the global subscriber, exporting spans when the `OTEL_*` environment asks for it
/// ([`OtelConfig::from_env`]).
pub fn init(opts: &LogOptions) -> Result<TracingGuard, TraceError> {
    init_with(opts, OtelConfig::from_env()?)
}

/// Installs the global subscriber with explicit export settings (`None`: logs only). Also
/// installs the W3C trace-context propagator globally, and bridges `log` records into
/// `tracing`. Fails if a global subscriber is already installed.
pub fn init_with(opts: &LogOptions, otel: Option<OtelConfig>) -> Result<TracingGuard, TraceError> {
    let filter = EnvFilter::try_new(&opts.filter).map_err(|e| TraceError::Filter {
        filter: opts.filter.clone(),
        source: Box::new(e),
    })?;
    let provider = otel.as_ref().map(export::build_provider).transpose()?;
    let tracer = provider.as_ref().map(|p| p.tracer(SCOPE));
    let subscriber = fmt_and_otel(opts, filter, tracer, std::io::stderr);
    if let Err(e) = subscriber.try_init() {
        if let Some(provider) = provider {
            // Nothing was recorded yet; this only stops the worker thread.
            let _ = provider.shutdown_with_timeout(Duration::from_millis(100));
        }
        return Err(TraceError::AlreadyInstalled(Box::new(e)));
    }
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    OTEL_ENABLED.store(provider.is_some(), Ordering::Relaxed);
    Ok(TracingGuard { provider })
}

/// The subscriber `init_with` installs, with the writer left open so tests capture it.
fn fmt_and_otel<W>(
    opts: &LogOptions,
    filter: EnvFilter,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    writer: W,
) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // JSON lines look their ids up through this slot, filled when the subscriber registers.
    let slot = json::DispatchSlot::default();
    let ids_from = tracer.is_some().then(|| slot.clone());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = if opts.json {
        fmt.json()
            .event_format(json::JsonWithTraceIds::new(ids_from))
            .boxed()
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).boxed()
    };
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Span names say where; file/line/thread attributes would only grow every export.
            .with_location(false)
            .with_threads(false)
            // Busy/idle accounting reads the clock on every enter and exit,
            // and an instrumented future is entered on every poll: it was
            // most of the per-call cost of tracing (BENCHMARKS.md).
            .with_tracked_inactivity(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .with(json::CaptureDispatch(slot))
}
