//! The gateway: one MCP endpoint in front of many upstream MCP servers.
//!
//! # Layout
//! - [`state`]: upstream handles, their discovered offers, the published
//!   catalogs and the tasks that keep them current.
//! - [`catalog`]: pure federation rules (namespacing, routing indexes).
//! - [`dispatch`]: what each MCP method means, independent of transport.
//! - [`http`] (Streamable HTTP, legacy HTTP+SSE, health) and [`stdio`]: the
//!   transports, which only decode, pick a session and hand over to dispatch.
//! - [`session`], [`outbound`]: per-client state and the bounded message logs
//!   that every response stream reads from.
//!
//! # Invariants
//! - This crate never names an upstream transport: it calls
//!   [`switchboard_upstream::Upstream`].
//! - Payloads are relayed as raw JSON; only envelopes and the few params the
//!   gateway routes on (`name`, `uri`, `ref`, `_meta.progressToken`) are read.
//! - Every per-client structure is bounded: sessions, pending server→client
//!   requests, stream buffers, retained streams.

mod admin;
mod authn;
mod cache;
mod cache_redis;
mod catalog;
mod dispatch;
mod govern;
mod headers;
mod http;
mod limit;
mod modern;
mod origin;
mod outbound;
mod pin;
mod protect;
mod session;
mod state;
mod stdio;
mod tls;
mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchboard_config::Config;
use tokio::net::TcpListener;

pub use authn::AuthSetupError;
pub use cache_redis::CacheSetupError;
pub use state::UpstreamReport;
pub use switchboard_upstream::Status as UpstreamStatus;
pub use tls::TlsError;

/// What the gateway uses beyond its config: the store (API keys, pins,
/// sessions, audit) and the audit writer. Both absent in bare library use:
/// then only anonymous callers (where allowed) are served, pins live in
/// memory and nothing is audited.
#[derive(Debug, Clone, Default)]
pub struct Services {
    pub store: Option<Arc<dyn switchboard_store::Store>>,
    pub audit: Option<switchboard_store::audit::AuditHandle>,
}

/// Why a gateway cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error(transparent)]
    Auth(#[from] authn::AuthSetupError),
    #[error("upstream {upstream:?}: {source}")]
    Protection {
        upstream: String,
        source: switchboard_resilience::ConfigError,
    },
    /// The message names the file at fault.
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Cache(#[from] CacheSetupError),
}

/// A running gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<state::Shared>,
    /// The serving certificate when `[server.tls]` is set.
    tls: Option<Arc<tls::Certs>>,
}

impl Gateway {
    /// Starts the upstreams (in the background) and the catalog tasks.
    ///
    /// The TLS certificate and key, when configured, are read and checked
    /// first, so a bad pair stops the start before any upstream is spawned.
    pub fn start(config: Config) -> Result<Self, GatewayError> {
        Self::start_with(config, Services::default())
    }

    /// Starts with a store and an audit writer.
    pub fn start_with(config: Config, services: Services) -> Result<Self, GatewayError> {
        let tls = config
            .server
            .tls
            .as_ref()
            .map(tls::Certs::load)
            .transpose()?;
        Ok(Self {
            shared: state::Shared::start(config, services)?,
            tls,
        })
    }

    /// The HTTP application, for serving or for in-process tests.
    pub fn router(&self) -> axum::Router {
        http::router(self.shared.clone()).layer(headers::layer(self.tls.is_some()))
    }

    /// Every upstream's status and offer, in config order.
    pub fn report(&self) -> Vec<UpstreamReport> {
        self.shared.report()
    }

    /// Waits until every upstream has been discovered or has failed, or
    /// `timeout` passes. Returns whether all are up.
    pub async fn settle(&self, timeout: Duration) -> bool {
        self.shared.wait_settled(timeout).await;
        self.shared
            .upstreams
            .iter()
            .all(|u| matches!(u.status(), UpstreamStatus::Ready(_)))
    }

    /// Closes the named upstream's circuit breaker at once; `false` when no
    /// upstream has that name. For operators (the admin API) who know the
    /// upstream recovered and need not wait out the open period.
    pub fn reset_breaker(&self, upstream: &str) -> bool {
        self.shared.reset_breaker(upstream)
    }

    /// The federated tool list as clients see it (for `switchboard tools`).
    pub fn tools(&self) -> serde_json::Value {
        let c = self.shared.catalog(catalog::RouteId::Federated);
        serde_json::from_str(c.tools_result.get()).unwrap_or_default()
    }

    /// Serves HTTP (HTTPS when `[server.tls]` is set, the certificate
    /// reloaded as its files change) until `signal` resolves, then drains:
    /// open streams close, in-flight requests get up to
    /// `server.drain_timeout`, upstreams stop.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let drain = shared.server.drain_timeout;
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let closing = shared.clone();
        // Small SSE frames must not wait for Nagle's algorithm and the peer's
        // delayed ACK (a 40 ms stall per response otherwise).
        use axum::serve::ListenerExt;
        // The peer address feeds per-IP rate limiting.
        let app = self
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let graceful = async move {
            signal.await;
            tracing::info!("shutting down: draining in-flight requests");
            // Long-lived streams would hold the drain open: end them now.
            for s in closing.sessions.all() {
                s.standalone.close();
            }
            let _ = drained_tx.send(());
        };
        let served = if let Some(certs) = &self.tls {
            let acceptor = certs.acceptor().map_err(std::io::Error::other)?;
            certs.spawn_reloader(&shared.tasks, shared.shutdown.clone());
            let listener =
                tls::TlsListener::new(listener, acceptor, &shared.tasks, shared.shutdown.clone())?
                    // A no-op tap: it gives the listener axum's ConnectInfo
                    // impl (nodelay is set before the handshake).
                    .tap_io(|_| {});
            let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
            tokio::spawn(async move { server.await })
        } else {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
            tokio::spawn(async move { server.await })
        };
        let _ = drained_rx.await;
        match tokio::time::timeout(drain, served).await {
            Ok(joined) => joined.map_err(std::io::Error::other)??,
            Err(_) => {
                tracing::warn!(timeout = ?drain, "drain timeout passed; closing the remaining requests")
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Serves one MCP session over the given streams (stdin/stdout) until
    /// the input ends, then shuts down.
    pub async fn serve_stdio<R, W>(self, input: R, output: W) -> std::io::Result<()>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let result = stdio::serve(
            self.shared.clone(),
            tokio::io::BufReader::new(input),
            output,
        )
        .await;
        self.shutdown().await;
        result
    }

    /// Closes every session and stops every upstream (children included).
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        if let Some(a) = &self.shared.audit {
            a.shutdown().await;
        }
        for s in self.shared.sessions.all() {
            self.shared.sessions.remove(&s.id);
        }
        futures::future::join_all(self.shared.upstreams.iter().map(|u| u.shutdown())).await;
        self.shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some gateway tasks did not stop within 5s");
        }
    }
}
