//! Runs a `ServerHandler` over stdio or Streamable HTTP until it is told to stop.
//!
//! Both binaries share these rules so that process-level gateway tests can
//! rely on them:
//!
//! * SIGTERM and SIGINT stop the server; open HTTP streams are cancelled so
//!   the graceful shutdown does not wait for long-lived SSE connections.
//! * On stdio the server also stops when stdin reaches EOF, which is how a
//!   supervisor that closes the child's stdin asks it to leave.
//! * HTTP binds only the loopback address it is given and validates `Host`
//!   and `Origin` (403 otherwise), which is what the conformance suite's
//!   `dns-rebinding-protection` scenario checks.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt};
use tokio_util::sync::CancellationToken;

use crate::error::TestkitError;

/// Which transport a test server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// Newline-delimited JSON-RPC on stdin/stdout.
    Stdio,
    /// Streamable HTTP at `/mcp`.
    Http,
}

/// How the Streamable HTTP endpoint behaves.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Loopback address to bind; any other address is refused.
    /// Port 0 picks a free port (see [`bind`]).
    pub listen: SocketAddr,
    /// Serve every request without a session (no `Mcp-Session-Id`).
    pub stateless: bool,
    /// Answer plain request/response exchanges with `application/json`
    /// instead of an SSE stream. rmcp honours this only for stateless
    /// requests, so it implies `stateless`.
    pub json_response: bool,
}

/// Path the Streamable HTTP endpoint is mounted at.
pub const MCP_PATH: &str = "/mcp";

/// Origins a browser on this machine would send; everything else gets 403.
const LOOPBACK_ORIGINS: [&str; 3] = ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

/// Serves `handler` on stdin/stdout until stdin closes or a stop signal arrives.
pub async fn serve_stdio<S>(handler: S) -> Result<(), TestkitError>
where
    S: ServerHandler + Send + 'static,
{
    // Registered before the handshake, so a SIGTERM that races it is still
    // a clean stop rather than the default "killed by signal".
    let mut shutdown = Box::pin(shutdown_signal());
    let running = tokio::select! {
        running = handler.serve(rmcp::transport::stdio()) => {
            running.map_err(|e| TestkitError::StdioStart(Box::new(e)))?
        }
        () = &mut shutdown => return Ok(()),
    };
    let token = running.cancellation_token();
    let stopper = tokio::spawn(async move {
        shutdown.await;
        token.cancel();
    });
    let reason = running.waiting().await.map_err(TestkitError::Join)?;
    stopper.abort();
    tracing::info!(?reason, "stdio server stopped");
    Ok(())
}

/// Serves handlers made by `factory` over Streamable HTTP until a stop signal.
///
/// `factory` runs once per session (or per request when stateless), so it
/// should hand out cheap clones of shared state.
pub async fn serve_http<S, F>(factory: F, options: HttpOptions) -> Result<(), TestkitError>
where
    S: ServerHandler + Send + 'static,
    F: Fn() -> S + Send + Sync + 'static,
{
    let shutdown = shutdown_signal();
    let listener = bind(options.listen).await?;
    serve_http_on(listener, factory, &options, shutdown).await
}

/// Binds `listen`, refusing anything but a loopback address.
///
/// Bind port 0 and read `local_addr()` to get a free port in tests.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, TestkitError> {
    if !listen.ip().is_loopback() {
        return Err(TestkitError::NotLoopback(listen));
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| TestkitError::Bind {
            addr: listen,
            source,
        })
}

/// Serves Streamable HTTP on an already bound `listener` until `shutdown`
/// completes; the in-process form of [`serve_http`] for tests.
///
/// `options.listen` is ignored; the listener decides the address.
pub async fn serve_http_on<S, F>(
    listener: tokio::net::TcpListener,
    factory: F,
    options: &HttpOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), TestkitError>
where
    S: ServerHandler + Send + 'static,
    F: Fn() -> S + Send + Sync + 'static,
{
    let local = listener.local_addr().map_err(TestkitError::Http)?;
    if !local.ip().is_loopback() {
        return Err(TestkitError::NotLoopback(local));
    }
    let stop = CancellationToken::new();
    let stateless = options.stateless || options.json_response;
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(!stateless)
        .with_json_response(options.json_response)
        .with_allowed_origins(LOOPBACK_ORIGINS)
        .with_cancellation_token(stop.child_token());
    let service = StreamableHttpService::new(
        move || Ok(factory()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service(MCP_PATH, service);
    tracing::info!(%local, stateless, json_response = options.json_response, "serving streamable http at {MCP_PATH}");
    let (stopping, stop_requested) = tokio::sync::oneshot::channel::<()>();
    // Without TCP_NODELAY every small SSE write waits on Nagle and the
    // client's delayed ACK: ~40 ms per call, which would swamp benchmarks.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serving = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Cancelling first ends open SSE streams; otherwise the graceful
            // shutdown would wait for clients that never hang up.
            stop.cancel();
            let _ = stopping.send(());
        })
        .into_future();
    // Bounds the drain: a client holding a connection open must not keep a
    // stopped test server alive.
    let drain_deadline = async move {
        if stop_requested.await.is_ok() {
            tokio::time::sleep(HTTP_DRAIN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serving => served.map_err(TestkitError::Http)?,
        () = drain_deadline => tracing::warn!(grace = ?HTTP_DRAIN_GRACE, "connections still open after stop; exiting anyway"),
    }
    tracing::info!("http server stopped");
    Ok(())
}

/// Returns a future that completes on the first SIGTERM or SIGINT.
///
/// The handlers are installed when this is *called*, not when the future is
/// first polled, so callers create it before anything a signal could race.
/// Must be called inside a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (term, interrupt) = signals;
            tokio::select! {
                () = recv_or_wait_forever(term, "SIGTERM") => {}
                () = recv_or_wait_forever(interrupt, "SIGINT") => {}
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        tracing::info!("stop signal received");
    }
}

/// Waits for one delivery of a signal; never completes if it could not be
/// installed (stdin EOF or the other signal still stop the server).
#[cfg(unix)]
async fn recv_or_wait_forever(
    signal: std::io::Result<tokio::signal::unix::Signal>,
    name: &'static str,
) {
    match signal {
        Ok(mut signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot install {name} handler");
            std::future::pending::<()>().await;
        }
    }
}

/// How long open HTTP connections may drain after a stop signal.
pub const HTTP_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long the runtime waits for stray blocking tasks after the server stops.
///
/// tokio reads stdin on a blocking thread that cannot be interrupted; without
/// a bound, a SIGTERM'd stdio server would hang until its stdin closed.
pub const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Initialises logging to stderr (stdout belongs to the stdio transport).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Builds the runtime, runs `main` on it, and bounds the shutdown.
///
/// Returns the process exit code: 0 on a clean stop, 1 after logging the error.
pub fn run_main<F>(main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), TestkitError>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start tokio runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(main);
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Formats an error with all its sources, `outer: inner: innermost`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
