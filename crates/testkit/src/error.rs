//! The crate's error type.
//!
//! Errors here are about *running* a test server (binding, transport setup).
//! Errors a server sends on purpose (`fail`, `--fail-every`) are MCP
//! `ErrorData` values and never pass through this type.

use std::net::SocketAddr;

/// Why a test server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// `--listen` named an address other machines could reach.
    #[error("listen address {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    /// The HTTP listener could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed while serving.
    #[error("http server failed")]
    Http(#[source] std::io::Error),
    /// The stdio transport could not complete the MCP handshake.
    #[error("stdio server failed to start")]
    StdioStart(#[source] Box<rmcp::service::ServerInitializeError>),
    /// The serving task panicked or was aborted.
    #[error("server task ended abnormally")]
    Join(#[source] tokio::task::JoinError),
    /// A command-line option is inconsistent with another.
    #[error("invalid options: {0}")]
    Options(String),
}

/// Locks `mutex`, turning poisoning into an MCP internal error.
///
/// A panicking handler poisons shared state; the server should keep
/// answering (with errors) rather than panic on every later request.
pub(crate) fn lock<T>(
    mutex: &std::sync::Mutex<T>,
) -> Result<std::sync::MutexGuard<'_, T>, rmcp::ErrorData> {
    mutex
        .lock()
        .map_err(|_| rmcp::ErrorData::internal_error("server state lock poisoned", None))
}
