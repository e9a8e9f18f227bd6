//! The tracer provider: batch span processor → OTLP/HTTP protobuf exporter → our HTTP client.
//!
//! Why our own [`HttpClient`]: `opentelemetry-otlp`'s bundled clients are either reqwest 0.13
//! (a second reqwest next to the workspace's 0.12, and its TLS needs another provider) or hyper
//! without TLS, and the async ones need a Tokio runtime on the batch processor's thread, which
//! has none. [`ExportClient`] sends with the workspace's reqwest (rustls) on a small runtime
//! of its own, on its own thread, so export works from any thread, before the gateway's
//! runtime starts and after it has stopped (the final flush at exit).

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use super::{OtelConfig, TraceError};

/// Largest collector response we read; OTLP responses are a few bytes (partial-success).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

pub(super) fn build_provider(config: &OtelConfig) -> Result<SdkTracerProvider, TraceError> {
    let client = ExportClient::start(config.timeout)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.clone())
        .with_timeout(config.timeout)
        .build()
        .map_err(|e| TraceError::Exporter(Box::new(e)))?;
    // Every batch setting is given explicitly: `BatchConfigBuilder::default()` reads OTEL_BSP_*
    // itself, and `OtelConfig` is the one place the environment is read.
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(config.max_queue_size)
        .with_max_export_batch_size(config.max_export_batch_size)
        .with_scheduled_delay(config.scheduled_delay)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    // `builder_empty`, not `builder`: the default builder's detectors read
    // OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES from the process environment.
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(config.sampler.to_sdk())
        .with_resource(resource)
        .build())
}

/// reqwest on a one-thread runtime of its own. Dropping the client (when the provider shuts
/// down) closes `_stop`, which ends that runtime and its thread.
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ExportClient {
    fn start(timeout: Duration) -> Result<Self, TraceError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| TraceError::Exporter(Box::new(e)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TraceError::Thread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("otlp-export".to_owned())
            .spawn(move || {
                // The export path must not feed the pipeline it serves: with a debug or trace
                // filter, hyper's and reqwest's own events and spans would be exported, each
                // export producing more. This thread records nothing.
                let _quiet = tracing::dispatcher::set_default(&tracing::Dispatch::none());
                // Either a stop or the sender's drop ends the wait.
                let _ = runtime.block_on(stopped);
            })
            .map_err(TraceError::Thread)?;
        Ok(Self {
            client,
            runtime: handle,
            _stop: stop,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        // A JoinHandle can be awaited from any executor, so the batch worker's plain
        // `block_on` drives this without a Tokio context of its own.
        self.runtime
            .spawn(async move {
                let mut response = client.execute(request).await?;
                let mut builder = Response::builder().status(response.status());
                if let Some(headers) = builder.headers_mut() {
                    *headers = std::mem::take(response.headers_mut());
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err::<Response<Bytes>, HttpError>(
                            "OTLP response body too large".into(),
                        );
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(builder.body(Bytes::from(body))?)
            })
            .await?
    }
}
