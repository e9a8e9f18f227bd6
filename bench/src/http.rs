//! A deliberately small HTTP/1.1 client.
//!
//! The bench shares two cores with the server under test, so every microsecond the client spends
//! is a microsecond the server does not get, and a heavy client hides the gateway's own cost.
//! Hence: one owned keep-alive connection per worker (no pool, no locks), `TCP_NODELAY`, no TLS,
//! no redirects, and request headers built from pre-validated `HeaderValue`s.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Where requests go: resolved once, so the hot path never touches DNS or re-parses the URL.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    /// Sent as `Host`: hyper's low-level connection API does not add it, and rmcp-based servers
    /// reject requests without an allowed host (DNS-rebinding guard).
    host: HeaderValue,
    /// Origin-form request target (`/mcp`), what HTTP/1.1 puts on the request line.
    target: Uri,
    /// The URL as given, for messages.
    url: String,
    /// `Authorization` sent on every request, for gateways that require credentials; built once
    /// so the hot path only clones it.
    authorization: Option<HeaderValue>,
}

impl Endpoint {
    /// Parses an `http://host:port/path` URL and resolves the host once.
    pub(crate) async fn resolve(url: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid url {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            // Loopback benchmarking only: TLS would measure rustls, not the gateway.
            bail!("only http:// urls are supported, got {url:?}");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("url {url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host:?}"))?
            .next()
            .with_context(|| format!("{host:?} resolves to no address"))?;
        let target = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .with_context(|| format!("invalid path in url {url:?}"))?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(authority.as_str())?,
            target,
            url: url.to_owned(),
            authorization: None,
        })
    }

    /// Returns the same endpoint sending `Authorization: Bearer <key>` on every request.
    pub(crate) fn with_bearer(&self, key: &str) -> Result<Self> {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the api key is not a valid header value")?;
        value.set_sensitive(true);
        Ok(Self {
            authorization: Some(value),
            ..self.clone()
        })
    }

    /// Returns the URL this endpoint was built from.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Returns the same host and port with another path, e.g. `/health/live` next to `/mcp`.
    pub(crate) fn with_path(&self, path: &'static str) -> Self {
        Self {
            target: Uri::from_static(path),
            url: format!("http://{}{path}", self.addr),
            ..self.clone()
        }
    }

    /// Builds a request with `Host` (and `Authorization`, when set) and nothing else.
    pub(crate) fn request(&self, method: Method, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.target.clone();
        req.headers_mut().insert(header::HOST, self.host.clone());
        if let Some(auth) = &self.authorization {
            req.headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        req
    }
}

/// One HTTP/1.1 keep-alive connection, owned by a single task.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// Drives the connection's IO; aborted on drop so a discarded connection closes at once.
    driver: JoinHandle<()>,
}

impl Conn {
    /// Opens a TCP connection and performs the (trivial) HTTP/1.1 handshake.
    pub(crate) async fn open(endpoint: &Endpoint) -> Result<Self> {
        let tcp = TcpStream::connect(endpoint.addr)
            .await
            .with_context(|| format!("cannot connect to {}", endpoint.url))?;
        // Small request/response pairs: Nagle would add delayed-ACK stalls to every call.
        tcp.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
        let driver = tokio::spawn(async move {
            // The error, if any, surfaces on the next `send`; nothing to add here.
            let _ = connection.await;
        });
        Ok(Self { sender, driver })
    }

    /// Whether the server (or an error) closed the connection, so it must be replaced.
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and returns the response head; the body streams afterwards.
    pub(crate) async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Sends `GET url` on a fresh connection and returns the status; used for health probes.
pub(crate) async fn get_status(endpoint: &Endpoint) -> Result<u16> {
    let mut conn = Conn::open(endpoint).await?;
    let resp = conn
        .send(endpoint.request(Method::GET, Bytes::new()))
        .await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}
