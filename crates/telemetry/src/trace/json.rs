//! JSON log lines that carry the OpenTelemetry `trace_id` and `span_id` of their span.
//!
//! Why a wrapper and not another crate: `tracing-subscriber`'s JSON format has no hook for
//! extra top-level fields, and the crates that add ids (json-subscriber and the like) replace
//! the whole formatter. [`JsonWithTraceIds`] keeps `tracing-subscriber`'s format byte for byte
//! and appends the two fields before the closing brace, only when the event's span has a
//! valid OpenTelemetry context, which exists only when the OpenTelemetry layer is installed.
//!
//! Reading that context needs the subscriber's `Dispatch`, and `tracing` hides the current one
//! while an event is being dispatched (no re-entrancy), so [`CaptureDispatch`] keeps a weak
//! handle to it, taken when the subscriber is registered.

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::{self, Format, Json, Writer};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Where [`CaptureDispatch`] leaves the subscriber's handle for [`JsonWithTraceIds`]. Weak,
/// because the subscriber owns this slot.
#[derive(Debug, Clone, Default)]
pub(super) struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

/// A layer that records nothing; it only fills a [`DispatchSlot`] on registration.
#[derive(Debug)]
pub(super) struct CaptureDispatch(pub(super) DispatchSlot);

impl<S: Subscriber> Layer<S> for CaptureDispatch {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        // Registered once per subscriber; a second registration is the same subscriber.
        let _ = self.0 .0.set(subscriber.downgrade());
    }
}

/// `tracing-subscriber`'s JSON event format (flattened), plus `trace_id` and `span_id`.
#[derive(Debug)]
pub(super) struct JsonWithTraceIds {
    inner: Format<Json, SystemTime>,
    /// `None` when the OpenTelemetry layer is not installed: then there are no ids to look for,
    /// and each line costs nothing extra.
    dispatch: Option<DispatchSlot>,
}

impl JsonWithTraceIds {
    pub(super) fn new(dispatch: Option<DispatchSlot>) -> Self {
        Self {
            inner: format::format().json().flatten_event(true),
            dispatch,
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ids = self.dispatch.as_ref().and_then(|slot| otel_ids(ctx, slot));
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        // The inner format writes exactly one object and a newline.
        let Some(object) = line.trim_end().strip_suffix('}') else {
            return writer.write_str(&line);
        };
        writeln!(
            writer,
            "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
        )
    }
}

/// The ids of the event's span (its explicit parent, else the current span), as lowercase
/// hex. `None` outside any span, and whenever the OpenTelemetry layer is not installed.
fn otel_ids<S, N>(ctx: &FmtContext<'_, S, N>, slot: &DispatchSlot) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    let span = ctx.parent_span()?;
    let dispatch = slot.0.get()?.upgrade()?;
    let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::{fmt_and_otel, LogOptions};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// Collects everything the fmt layer writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Capture {
        fn lines(&self) -> Vec<serde_json::Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    fn options(json: bool) -> LogOptions {
        LogOptions {
            filter: "info".to_owned(),
            json,
        }
    }

    #[test]
    fn json_lines_carry_otel_ids_inside_spans() {
        let capture = Capture::default();
        // No processor: spans get real ids and go nowhere.
        let provider = SdkTracerProvider::builder().build();
        let subscriber = fmt_and_otel(
            &options(true),
            tracing_subscriber::EnvFilter::new("info"),
            Some(provider.tracer("test")),
            capture.clone(),
        );
        let (outer_ids, inner_ids) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(answer = 42, "outside");
            let outer = tracing::info_span!("outer", upstream = "docs");
            let _o = outer.enter();
            tracing::info!("in outer");
            let inner = tracing::info_span!("inner");
            let _i = inner.enter();
            tracing::warn!("in inner");
            let ids = |s: &tracing::Span| {
                use opentelemetry::trace::TraceContextExt as _;
                use tracing_opentelemetry::OpenTelemetrySpanExt as _;
                let cx = s.context();
                let sc = cx.span().span_context().clone();
                (sc.trace_id().to_string(), sc.span_id().to_string())
            };
            (ids(&outer), ids(&inner))
        });
        let lines = capture.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");

        assert_eq!(lines[0]["message"], "outside");
        assert_eq!(lines[0]["answer"], 42);
        assert!(lines[0].get("trace_id").is_none());
        assert!(lines[0].get("span_id").is_none());

        assert_eq!(lines[1]["message"], "in outer");
        assert_eq!(lines[1]["trace_id"], outer_ids.0.as_str());
        assert_eq!(lines[1]["span_id"], outer_ids.1.as_str());
        assert_eq!(lines[1]["span"]["upstream"], "docs");

        assert_eq!(lines[2]["message"], "in inner");
        assert_eq!(lines[2]["trace_id"], outer_ids.0.as_str(), "one trace");
        assert_eq!(lines[2]["span_id"], inner_ids.1.as_str());
        assert_ne!(inner_ids.1, outer_ids.1);
        assert_eq!(outer_ids.0.len(), 32);
        assert_eq!(outer_ids.1.len(), 16);
    }

    #[test]
    fn unsampled_spans_still_give_their_ids_to_logs() {
        let capture = Capture::default();
        let provider = SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
            .build();
        let subscriber = fmt_and_otel(
            &options(true),
            tracing_subscriber::EnvFilter::new("info"),
            Some(provider.tracer("test")),
            capture.clone(),
        );
        tracing::subscriber::with_default(subscriber, || {
            let _s = tracing::info_span!("request").entered();
            tracing::info!("handled");
        });
        let lines = capture.lines();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["trace_id"].as_str().map(str::len), Some(32));
        assert_eq!(lines[0]["span_id"].as_str().map(str::len), Some(16));
    }

    #[test]
    fn json_lines_omit_ids_without_the_otel_layer() {
        let capture = Capture::default();
        let subscriber = fmt_and_otel(
            &options(true),
            tracing_subscriber::EnvFilter::new("info"),
            None,
            capture.clone(),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", mcp.method = "tools/list");
            let _e = span.enter();
            tracing::info!("handled");
        });
        let lines = capture.lines();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "handled");
        assert_eq!(lines[0]["span"]["mcp.method"], "tools/list");
        assert!(lines[0].get("trace_id").is_none());
        assert!(lines[0].get("span_id").is_none());
    }

    #[test]
    fn filter_applies_and_pretty_is_not_json() {
        let capture = Capture::default();
        let subscriber = fmt_and_otel(
            &options(false),
            tracing_subscriber::EnvFilter::new("warn"),
            None,
            capture.clone(),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("dropped");
            tracing::warn!("kept");
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("kept"), "{text}");
        assert!(!text.contains("dropped"), "{text}");
        assert!(!text.trim_start().starts_with('{'), "{text}");
    }
}
