//! W3C trace context (`traceparent`, `tracestate`) in and out of `http` 1.x header maps.
//!
//! Both helpers go through the global propagator that [`super::init`] installs (the W3C
//! `TraceContextPropagator`), and both return at once when no OpenTelemetry layer is installed:
//! without export there is no trace for a client's parent to join, and nothing to continue
//! upstream, so the gateway neither trusts nor forwards ids it would not use.

use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes the trace context in `headers` (from a downstream client) the parent of `span`.
///
/// Call it right after creating the span, before entering it or logging in it: the
/// OpenTelemetry span starts on first use, and its parent cannot change after that (the call is
/// then ignored). Missing or malformed `traceparent` leaves `span` a root. A no-op when
/// OpenTelemetry export is off.
pub fn accept_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !super::otel_enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "remote trace parent not applied");
    }
}

/// Writes the current span's trace context (`traceparent`, and `tracestate` when there is
/// one) into `headers`, for a request to an upstream, replacing any already there: a
/// client's ids must not pass through unchanged, or the upstream's spans would skip ours. A
/// no-op when OpenTelemetry export is off, or outside any span.
pub fn inject_current(headers: &mut http::HeaderMap) {
    if !super::otel_enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut HeaderInjector(headers));
    });
}
