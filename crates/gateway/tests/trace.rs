#![allow(unreachable_pub, clippy::unwrap_used, dead_code)]
//! End to end: a client's W3C `traceparent` → the gateway's spans → an OTLP
//! receiver, and the trace context on to an HTTP upstream.
//!
//! A binary of its own with one test, because the tracing subscriber it
//! installs is process-global. The receiver is an axum server on loopback
//! that decodes each export with the `opentelemetry-proto` types, as a
//! collector would; the upstream is the testkit's fake over Streamable HTTP,
//! whose `traceparent` tool answers with the header its request carried.

#[path = "it/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use harness::{reply, testkit_bin, Client, TestGateway};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use switchboard_telemetry::{init_with, LogOptions, OtelConfig, Sampler};

const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

async fn receive(
    State(tx): State<mpsc::Sender<ExportTraceServiceRequest>>,
    body: Bytes,
) -> StatusCode {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            let _ = tx.send(request);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// The OTLP receiver, on a runtime of its own so the exporter's final flush
/// (when the guard drops) still finds it serving.
fn start_receiver() -> (
    tokio::runtime::Runtime,
    SocketAddr,
    mpsc::Receiver<ExportTraceServiceRequest>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(tx);
    runtime.spawn(async move { axum::serve(listener, app).await });
    (runtime, addr, rx)
}

/// The fake upstream over Streamable HTTP; `FAKE_UPSTREAM_BIN` overrides the
/// binary built next to this test. Killed on drop.
struct HttpFake {
    url: String,
    child: std::process::Child,
}

impl Drop for HttpFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_fake() -> HttpFake {
    let bin = std::env::var_os("FAKE_UPSTREAM_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| testkit_bin("switchboard-fake-upstream"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(bin)
        .args(["--transport", "http", "--listen", &listen, "--name", "web"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(&listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    HttpFake {
        url: format!("http://{listen}/mcp"),
        child,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[test]
fn a_client_trace_runs_through_the_gateway_spans_to_the_http_upstream() {
    let (_receiver, addr, rx) = start_receiver();
    let mut otel = OtelConfig::new(format!("http://{addr}/v1/traces"));
    otel.sampler = Sampler::ParentBasedAlwaysOn;
    otel.scheduled_delay = Duration::from_millis(50);
    otel.timeout = Duration::from_secs(5);
    let guard = init_with(
        &LogOptions {
            filter: "info".to_owned(),
            json: true,
        },
        Some(otel),
    )
    .unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream_saw = runtime.block_on(async {
        let fake = start_fake().await;
        let gw = TestGateway::start(&format!(
            "[[upstreams]]\nname = \"web\"\nurl = \"{}\"\n",
            fake.url
        ))
        .await;
        let client = Client::connect(&gw.url(), "2025-11-25", json!({})).await;
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "web__traceparent", "arguments": {}}});
        let r = reply(
            client
                .builder(body.to_string())
                .header(
                    "traceparent",
                    format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"),
                )
                .send()
                .await
                .unwrap(),
        )
        .await;
        let saw = r.result()["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        gw.stop().await;
        saw
    });
    drop(runtime);
    // Shutdown flushes the export queue.
    drop(guard);

    // The upstream joined the client's trace, under a span of the gateway's.
    let parts: Vec<&str> = upstream_saw.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {upstream_saw:?}");
    assert_eq!(parts[1], CLIENT_TRACE_ID, "{upstream_saw}");
    assert_ne!(
        parts[2], CLIENT_SPAN_ID,
        "the client's header was forwarded as is"
    );
    let upstream_parent = parts[2].to_owned();

    let mut spans: Vec<Span> = Vec::new();
    let wanted = ["mcp.http", "mcp.request", "mcp.upstream_call"];
    let in_trace = |spans: &[Span], name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && hex(&s.trace_id) == CLIENT_TRACE_ID)
            .cloned()
    };
    while !wanted.iter().all(|w| in_trace(&spans, w).is_some()) {
        let request = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                let names: Vec<_> = spans.iter().map(|s| (&s.name, hex(&s.trace_id))).collect();
                panic!("spans of the client's trace missing; got {names:?}")
            });
        for rs in request.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    let http = in_trace(&spans, "mcp.http").unwrap();
    let request = in_trace(&spans, "mcp.request").unwrap();
    let call = in_trace(&spans, "mcp.upstream_call").unwrap();
    assert_eq!(
        hex(&http.parent_span_id),
        CLIENT_SPAN_ID,
        "client span is the parent"
    );
    assert_eq!(request.parent_span_id, http.span_id);
    assert_eq!(call.parent_span_id, request.span_id);
    assert_eq!(attr(&request.attributes, "mcp.method"), Some("tools/call"));
    assert_eq!(attr(&call.attributes, "upstream"), Some("web"));
    assert_eq!(attr(&call.attributes, "mcp.tool"), Some("traceparent"));
    assert_eq!(
        hex(&call.span_id),
        upstream_parent,
        "the upstream's parent is the gateway's upstream-call span"
    );
}
