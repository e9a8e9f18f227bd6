//! The per-upstream task: connect, report, wait for loss (or an unresponsive
//! verdict from the health checker), back off, retry.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use switchboard_config::TransportConfig;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deadline::Budget;
use crate::peer::Peer;
use crate::{handshake, health, http, legacy, stdio};
use crate::{CallError, CallOptions, EventKind, Inner, ServerInfo, Status};

/// How requests reach a live connection.
#[derive(Debug, Clone)]
pub(crate) enum Connection {
    /// stdio and legacy SSE: one message channel each way.
    Peer(Arc<Peer>),
    /// Streamable HTTP: one POST per message.
    Http(Arc<http::HttpSession>),
}

impl Connection {
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
        options: &CallOptions,
        budget: Budget,
    ) -> Result<Box<RawValue>, CallError> {
        match self {
            Connection::Peer(peer) => {
                peer.request(
                    method,
                    params,
                    options.context.clone(),
                    &options.cancel,
                    budget,
                )
                .await
            }
            Connection::Http(session) => session.request(method, params, options, budget).await,
        }
    }

    pub(crate) async fn notify(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<(), CallError> {
        match self {
            Connection::Peer(peer) => peer.notify(method, params.as_deref()).await,
            Connection::Http(session) => session.notify(method, params.as_deref()).await,
        }
    }
}

/// A live connection with whatever keeps it alive.
enum Link {
    Stdio(Box<stdio::StdioLink>),
    Http(Arc<http::HttpSession>),
    Sse(legacy::SseLink),
}

impl Link {
    fn connection(&self) -> Connection {
        match self {
            Link::Stdio(l) => Connection::Peer(l.peer.clone()),
            Link::Http(s) => Connection::Http(s.clone()),
            Link::Sse(l) => Connection::Peer(l.peer.clone()),
        }
    }

    /// Waits until the connection is lost; returns why.
    async fn lost(&mut self) -> String {
        match self {
            Link::Stdio(l) => l.lost().await,
            Link::Http(s) => s.lost().await,
            Link::Sse(l) => l.lost().await,
        }
    }

    async fn stop(self) {
        match self {
            Link::Stdio(l) => (*l).stop().await,
            Link::Http(s) => s.stop().await,
            Link::Sse(l) => l.stop().await,
        }
    }

    /// Drops a connection that stopped answering. A stdio child gets no
    /// grace periods (a wedged process would only use them up): its group
    /// is killed at once. Remote connections are closed; the supervisor
    /// then reconnects and re-initialises.
    async fn abandon(self, reason: &str) {
        match self {
            Link::Stdio(l) => (*l).kill(reason).await,
            other => other.stop().await,
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Link::Stdio(l) => l.pid(),
            Link::Http(_) | Link::Sse(_) => None,
        }
    }
}

/// How a Ready connection ended.
enum End {
    Shutdown,
    Lost(String),
    Unresponsive(String),
}

/// Runs until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    let shutdown = inner.shared.shutdown.clone();
    let policy = inner.backoff;
    let mut backoff = policy.start;
    let mut connected_before = false;
    loop {
        inner.status.send_replace(Status::Connecting);
        let attempt = tokio::select! {
            r = connect(&inner) => r,
            _ = shutdown.cancelled() => break,
        };
        let reason = match attempt {
            Ok((mut link, info)) => {
                let info = Arc::new(info);
                if connected_before {
                    inner.health.record_restart();
                }
                connected_before = true;
                let conn = link.connection();
                *inner.conn.write() = Some(conn.clone());
                *inner.pid.lock() = link.pid();
                inner.status.send_replace(Status::Ready(info.clone()));
                tracing::info!(upstream = %inner.shared.name, version = %info.protocol_version, "upstream ready");
                inner.shared.emit_status(EventKind::Ready(info)).await;
                let up_since = Instant::now();
                let health = async {
                    match inner.config.health_check_interval {
                        Some(every) => health::watch(&conn, every, &inner.health).await,
                        None => std::future::pending().await,
                    }
                };
                // Biased: an HTTP session's own token is a child of the
                // shutdown token, so both fire together at shutdown, which
                // must not be reported as a loss.
                let end = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => End::Shutdown,
                    reason = link.lost() => End::Lost(reason),
                    reason = health => End::Unresponsive(reason),
                };
                *inner.conn.write() = None;
                *inner.pid.lock() = None;
                let reason = match end {
                    End::Shutdown => {
                        link.stop().await;
                        break;
                    }
                    End::Lost(reason) => {
                        link.stop().await;
                        reason
                    }
                    End::Unresponsive(reason) => {
                        tracing::warn!(upstream = %inner.shared.name, error = %reason, "upstream unresponsive; replacing the connection");
                        link.abandon(&reason).await;
                        reason
                    }
                };
                if shutdown.is_cancelled() {
                    break;
                }
                if up_since.elapsed() >= policy.reset_after {
                    backoff = policy.start;
                }
                reason
            }
            Err(reason) => reason,
        };
        tracing::warn!(upstream = %inner.shared.name, error = %reason, retry_in_ms = backoff.as_millis() as u64, "upstream down");
        inner.status.send_replace(Status::Down {
            error: reason.clone(),
        });
        inner.shared.emit_status(EventKind::Down(reason)).await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(policy.max);
    }
    *inner.conn.write() = None;
    *inner.pid.lock() = None;
    inner.status.send_replace(Status::Stopped);
}

/// Connects and handshakes, bounded by `connect_timeout`.
async fn connect(inner: &Inner) -> Result<(Link, ServerInfo), String> {
    let shared = &inner.shared;
    let timeout = inner.config.connect_timeout;
    let attempt = async {
        match &inner.config.transport {
            TransportConfig::Stdio(cfg) => connect_stdio(shared, cfg, timeout).await,
            TransportConfig::StreamableHttp(cfg) => {
                let (session, info) = http::connect(shared, cfg, timeout).await?;
                Ok((Link::Http(session), info))
            }
            TransportConfig::Sse(cfg) => {
                let link = legacy::connect(shared, cfg, timeout).await?;
                match peer_handshake(&link.peer, timeout).await {
                    Ok(info) => Ok((Link::Sse(link), info)),
                    Err(e) => {
                        link.stop().await;
                        Err(e)
                    }
                }
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no handshake within the connect timeout of {}ms",
                timeout.as_millis()
            ))
        })
}

/// Spawns a stdio server and learns its era: `server/discover` first, then
/// `initialize` unless the server speaks only the stateless revision.
///
/// A legacy server may not survive a request before `initialize` (some SDKs
/// end the process on it); when the process is gone after the probe, a fresh
/// one is spawned and goes straight to `initialize`.
async fn connect_stdio(
    shared: &Arc<crate::route::Shared>,
    cfg: &switchboard_config::StdioConfig,
    timeout: Duration,
) -> Result<(Link, ServerInfo), String> {
    let link = stdio::spawn(shared, cfg)?;
    // Half the window, so that a legacy server that ignores the probe
    // still has time for the handshake.
    if let Some(info) = probe_stdio(&link.peer, timeout / 2).await {
        tracing::info!(upstream = %shared.name, "upstream speaks only 2026-07-28; calling it statelessly");
        // Its list changes come only on a listen stream; the stream ends
        // with the process, and the next process opens its own.
        if let Some(params) = crate::modern::listen_params(&info.capabilities) {
            if let Err(e) = link.peer.listen(&params).await {
                tracing::debug!(upstream = %shared.name, error = %e, "cannot open subscriptions/listen");
            }
        }
        return Ok((Link::Stdio(Box::new(link)), info));
    }
    let mut link = link;
    // At most one respawn, so at most two handshakes.
    let mut respawned = false;
    loop {
        if !respawned && link.peer.closed().is_cancelled() {
            tracing::debug!(upstream = %shared.name, reason = %link.peer.close_reason(), "the process ended after the era probe; starting it again for initialize");
            link.stop().await;
            link = stdio::spawn(shared, cfg)?;
            respawned = true;
        }
        match peer_handshake(&link.peer, timeout).await {
            Ok(info) => return Ok((Link::Stdio(Box::new(link)), info)),
            Err(e) if respawned || !link.peer.closed().is_cancelled() => {
                link.stop().await;
                return Err(e);
            }
            Err(_) => {}
        }
    }
}

/// Asks a stdio server `server/discover` with the stateless `_meta`; `Some`
/// (and the peer switched to stateless calls) when it speaks only
/// 2026-07-28. Errors, timeouts and dual-era or legacy answers are `None`,
/// by the same rule as for HTTP upstreams (`modern::parse_discover`).
async fn probe_stdio(peer: &Arc<Peer>, window: Duration) -> Option<ServerInfo> {
    let params = crate::modern::with_meta(None);
    let result = peer
        .request(
            "server/discover",
            Some(params),
            None,
            &CancellationToken::new(),
            Budget::fixed(window),
        )
        .await
        .ok()?;
    match crate::modern::parse_discover(&result) {
        crate::modern::Discovered::Modern(info) => {
            peer.set_modern();
            Some(info)
        }
        crate::modern::Discovered::Dual | crate::modern::Discovered::Legacy => None,
    }
}

/// `initialize` then `notifications/initialized` over a message channel.
async fn peer_handshake(peer: &Arc<Peer>, timeout: Duration) -> Result<ServerInfo, String> {
    let result = peer
        .request(
            "initialize",
            Some(handshake::initialize_params()),
            None,
            &CancellationToken::new(),
            Budget::fixed(timeout),
        )
        .await
        .map_err(|e| format!("initialize failed: {e}"))?;
    let info = handshake::parse_result(&result)?;
    peer.notify("notifications/initialized", None)
        .await
        .map_err(|e| format!("initialized notification failed: {e}"))?;
    Ok(info)
}
