//! In-process tests of the Streamable HTTP wiring in `serve`: loopback-only
//! binding, DNS-rebinding protection, JSON responses and prompt shutdown.
//! Raw HTTP/1.1 over TCP keeps the test free of an HTTP client dependency.

#![allow(clippy::unwrap_used)] // test helpers; a panic is the failure report

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_testkit::fake::{FakeConfig, FakeUpstream};
use switchboard_testkit::serve::{self, HttpOptions};
use switchboard_testkit::TestkitError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// Sends one POST to /mcp with extra header lines and returns the raw response.
async fn post(addr: SocketAddr, extra_headers: &str, body: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /mcp HTTP/1.1\r\n{extra_headers}Content-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn options(json_response: bool) -> HttpOptions {
    HttpOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        stateless: false,
        json_response,
    }
}

#[tokio::test]
async fn refuses_non_loopback_listen_addresses() {
    let error = serve::bind(SocketAddr::from(([0, 0, 0, 0], 0)))
        .await
        .unwrap_err();
    assert!(matches!(error, TestkitError::NotLoopback(_)));
}

#[tokio::test]
async fn json_response_rebinding_guard_and_shutdown() {
    let listener = serve::bind(options(true).listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = FakeUpstream::new(FakeConfig {
        name: "http-test".to_owned(),
        ..FakeConfig::default()
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        serve::serve_http_on(
            listener,
            move || upstream.new_session(),
            &options(true),
            shutdown,
        )
        .await
    });

    let host = format!("Host: {addr}\r\nOrigin: http://{addr}\r\n");
    let ok = post(addr, &host, INITIALIZE).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("content-type: application/json"), "{ok}");
    assert!(ok.contains(r#""name":"http-test""#), "{ok}");

    let evil_host = post(addr, "Host: evil.example.com\r\n", INITIALIZE).await;
    assert!(evil_host.starts_with("HTTP/1.1 403"), "{evil_host}");
    let evil_origin = post(
        addr,
        &format!("Host: {addr}\r\nOrigin: http://evil.example.com\r\n"),
        INITIALIZE,
    )
    .await;
    assert!(evil_origin.starts_with("HTTP/1.1 403"), "{evil_origin}");

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}
