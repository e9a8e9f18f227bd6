//! End to end: `tracing` spans → our subscriber → OTLP/HTTP protobuf → a real HTTP receiver.
//!
//! One test in its own binary, because `init_with` installs the process-global subscriber.
//! The receiver is an axum server on 127.0.0.1:0 that decodes each body with the
//! `opentelemetry-proto` types, as a collector would. Nothing of OpenTelemetry is mocked.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use switchboard_telemetry::{
    accept_remote_parent, init_with, inject_current, LogOptions, OtelConfig, Sampler,
};

const REMOTE_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_SPAN_ID: &str = "00f067aa0ba902b7";

/// One decoded export request, with the content type it came with.
struct Received {
    content_type: String,
    request: ExportTraceServiceRequest,
}

async fn receive(
    State(tx): State<mpsc::Sender<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let _ = tx.send(Received {
        content_type,
        request,
    });
    // An empty body is a valid, empty ExportTraceServiceResponse.
    StatusCode::OK
}

/// Starts the receiver on its own runtime, so the test thread may block in the guard's drop.
fn start_receiver() -> (
    tokio::runtime::Runtime,
    SocketAddr,
    mpsc::Receiver<Received>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("receiver runtime");
    let (tx, rx) = mpsc::channel();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(tx);
    runtime.spawn(async move { axum::serve(listener, app).await });
    (runtime, addr, rx)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[test]
fn spans_reach_an_otlp_receiver_with_attributes_parents_and_remote_context() {
    let (_receiver_runtime, addr, rx) = start_receiver();
    let mut config = OtelConfig::new(format!("http://{addr}/v1/traces"));
    config.service_name = "switchboard-it".to_owned();
    config.resource_attributes = vec![("deployment.environment".to_owned(), "test".to_owned())];
    config.sampler = Sampler::ParentBasedAlwaysOn;
    config.scheduled_delay = Duration::from_millis(50);
    config.timeout = Duration::from_secs(5);
    let guard = init_with(
        &LogOptions {
            filter: "info".to_owned(),
            json: true,
        },
        Some(config),
    )
    .unwrap();
    assert!(guard.exporting());

    // A downstream request that arrives with a W3C parent, and the upstream call it makes.
    let mut incoming = http::HeaderMap::new();
    incoming.insert(
        "traceparent",
        format!("00-{REMOTE_TRACE_ID}-{REMOTE_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    incoming.insert("tracestate", "vendor=abc".parse().unwrap());
    let request = tracing::info_span!(
        "mcp.request",
        mcp.method = "tools/call",
        mcp.session = "s-1",
        otel.kind = "server"
    );
    accept_remote_parent(&request, &incoming);
    let mut outgoing = http::HeaderMap::new();
    // A client's traceparent must be replaced, not forwarded.
    outgoing.insert("traceparent", incoming["traceparent"].clone());
    request.in_scope(|| {
        tracing::info!("dispatching");
        let call = tracing::info_span!(
            "upstream.call",
            upstream = "docs",
            mcp.tool = "search",
            otel.kind = "client"
        );
        call.in_scope(|| inject_current(&mut outgoing));
    });
    drop(request);

    // A request without trace context starts a trace of its own.
    let root = tracing::info_span!("mcp.request", mcp.method = "tools/list");
    accept_remote_parent(&root, &http::HeaderMap::new());
    root.in_scope(|| {
        let _child = tracing::info_span!("upstream.call", upstream = "notes").entered();
    });
    drop(root);

    // Shutdown flushes the queue.
    drop(guard);

    let mut spans: Vec<Span> = Vec::new();
    let mut service_names = Vec::new();
    while spans.len() < 4 {
        let received = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("only {} spans arrived: {e}", spans.len()));
        assert_eq!(received.content_type, "application/x-protobuf");
        for resource_spans in received.request.resource_spans {
            let resource = resource_spans.resource.unwrap();
            service_names.push(
                string_attr(&resource.attributes, "service.name")
                    .unwrap()
                    .to_owned(),
            );
            assert_eq!(
                string_attr(&resource.attributes, "deployment.environment"),
                Some("test")
            );
            for scope_spans in resource_spans.scope_spans {
                assert_eq!(scope_spans.scope.unwrap().name, "switchboard");
                spans.extend(scope_spans.spans);
            }
        }
    }
    assert_eq!(spans.len(), 4, "no extra spans (e.g. from the export path)");
    assert!(service_names.iter().all(|n| n == "switchboard-it"));

    let find = |name: &str, method_or_upstream: (&str, &str)| -> &Span {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && string_attr(&s.attributes, method_or_upstream.0)
                        == Some(method_or_upstream.1)
            })
            .unwrap_or_else(|| panic!("no span {name} with {method_or_upstream:?}"))
    };

    // The remote parent became the parent: same trace, parent span id from traceparent.
    let request = find("mcp.request", ("mcp.method", "tools/call"));
    assert_eq!(hex(&request.trace_id), REMOTE_TRACE_ID);
    assert_eq!(hex(&request.parent_span_id), REMOTE_SPAN_ID);
    assert_eq!(string_attr(&request.attributes, "mcp.session"), Some("s-1"));
    assert_eq!(request.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(request.events.len(), 1, "the log event inside the span");

    let call = find("upstream.call", ("upstream", "docs"));
    assert_eq!(call.trace_id, request.trace_id);
    assert_eq!(call.parent_span_id, request.span_id);
    assert_eq!(string_attr(&call.attributes, "mcp.tool"), Some("search"));
    assert_eq!(call.kind, 3, "SPAN_KIND_CLIENT");

    // What the upstream was sent: our call span, in the client's trace, replacing its header.
    let traceparent = outgoing["traceparent"].to_str().unwrap();
    assert_eq!(
        traceparent,
        format!("00-{REMOTE_TRACE_ID}-{}-01", hex(&call.span_id))
    );
    assert_eq!(outgoing["tracestate"], "vendor=abc");

    let root = find("mcp.request", ("mcp.method", "tools/list"));
    assert!(root.parent_span_id.is_empty(), "a root span");
    assert_ne!(hex(&root.trace_id), REMOTE_TRACE_ID);
    let child = find("upstream.call", ("upstream", "notes"));
    assert_eq!(child.trace_id, root.trace_id);
    assert_eq!(child.parent_span_id, root.span_id);
}
