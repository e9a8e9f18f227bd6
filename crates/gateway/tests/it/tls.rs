//! TLS termination on a real loopback socket: MCP over https, renewed
//! certificates picked up by new connections, a bad renewal ignored, and
//! every streaming shape (Streamable HTTP SSE, legacy /sse) through TLS.

use futures::StreamExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::*;

struct Pem {
    cert: String,
    key: String,
}

fn self_signed() -> Pem {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    Pem {
        cert: c.cert.pem(),
        key: c.signing_key.serialize_pem(),
    }
}

fn write(dir: &Path, pem: &Pem) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pem.cert).unwrap();
    std::fs::write(&key, &pem.key).unwrap();
    (cert, key)
}

/// A client that trusts `pem`'s certificate and nothing else; a fresh one
/// opens fresh connections, so it sees the certificate served now.
fn trusting(pem: &Pem) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.cert.as_bytes()).unwrap())
        .build()
        .unwrap()
}

async fn initialize(http: &reqwest::Client, url: &str) -> reqwest::Result<Reply> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "it", "version": "0"}}})
            .to_string(),
        )
        .send()
        .await?;
    Ok(reply(r).await)
}

async fn start(dir: &Path, pem: &Pem, extra: &str) -> (TestGateway, String) {
    let (cert, key) = write(dir, pem);
    let gw = TestGateway::start(&format!(
        "[server]\n{extra}\n[server.tls]\ncert = {cert:?}\nkey = {key:?}\nreload_interval = \"20ms\"\n"
    ))
    .await;
    let url = format!("{}/mcp", gw.base.replace("http://", "https://"));
    (gw, url)
}

#[tokio::test]
async fn mcp_is_served_over_https_with_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let a = self_signed();
    let (gw, url) = start(dir.path(), &a, "").await;
    let r = initialize(&trusting(&a), &url).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.result()["protocolVersion"], "2025-11-25");
    assert_eq!(
        r.headers["strict-transport-security"], "max-age=31536000",
        "HSTS over TLS"
    );
    // Plain HTTP on the TLS port gets no MCP answer.
    assert!(reqwest::Client::new()
        .post(gw.url())
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .is_err());
    gw.stop().await;
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_and_a_bad_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (self_signed(), self_signed());
    let (gw, url) = start(dir.path(), &a, "").await;
    let old = trusting(&a);
    assert_eq!(initialize(&old, &url).await.unwrap().status, 200);

    write(dir.path(), &b);
    let swapped = eventually(500, || async {
        initialize(&trusting(&b), &url)
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(swapped, "the renewed certificate was never served");
    assert!(
        initialize(&trusting(&a), &url).await.is_err(),
        "a new connection still got the old certificate"
    );

    // A bad renewal: garbage certificate, then a key of another pair.
    std::fs::write(
        dir.path().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nnope\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(dir.path().join("cert.pem"), &b.cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), self_signed().key).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = initialize(&trusting(&b), &url).await.unwrap();
    assert_eq!(r.status, 200, "the previous certificate keeps serving");
    gw.stop().await;
}

/// Reads SSE events from a response until `want` data messages arrived.
async fn events(resp: reqwest::Response, want: usize) -> Vec<String> {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = vec![];
    while out.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an SSE event in time")
            .expect("the stream stays open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                if !data.trim().is_empty() {
                    out.push(data.to_owned());
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_streams_work_through_tls() {
    let dir = tempfile::tempdir().unwrap();
    let a = self_signed();
    let (gw, url) = start(dir.path(), &a, "response_mode = \"sse\"").await;
    let http = trusting(&a);
    let base = url.trim_end_matches("/mcp").to_owned();

    // Legacy HTTP+SSE: the stream names the POST endpoint; the answer to a
    // POSTed request comes back on the stream.
    let stream = http
        .get(format!("{base}/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["cache-control"], "no-store");
    let mut body = stream.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first).to_string();
    let endpoint = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no endpoint event in {first:?}"))
        .to_owned();
    let posted = http
        .post(format!("{base}{endpoint}"))
        .header("content-type", "application/json")
        .body(
            json!({"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {
                "protocolVersion": "2024-11-05", "capabilities": {},
                "clientInfo": {"name": "it", "version": "0"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);
    let mut buf = String::new();
    let answer = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the answer arrives on the stream")
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(v) = parse_sse(&buf).0.into_iter().find(|m| m["id"] == 7) {
            break v;
        }
    };
    assert_eq!(answer["result"]["protocolVersion"], "2024-11-05");

    // Streamable HTTP with response_mode = "sse": the answer is an event
    // stream, read through TLS.
    let r = initialize(&http, &url).await.unwrap();
    let sid = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let ping = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .body(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(ping.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = events(ping, 1).await;
    let v: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(v["id"], 2);
    assert_eq!(v["result"], json!({}));
    gw.stop().await;
}
