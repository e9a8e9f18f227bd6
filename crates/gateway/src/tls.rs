//! TLS termination with rustls, and certificates that renew without a restart.
//!
//! [`Certs`] holds the current certificate and key behind an `ArcSwap`; every
//! new handshake reads whatever is there, so a swap affects new connections
//! only and never disturbs an open one. A task re-reads the PEM files every
//! `reload_interval`: when their bytes change and the new pair is good, it is
//! swapped in; when the new pair is bad (half-written, mismatched), the old
//! one keeps serving and the error is logged once for that content.
//!
//! [`TlsListener`] is an axum `Listener`: handshakes run in their own tasks
//! (bounded in number and time), so a client that stalls mid-handshake holds
//! one slot, never the accept loop, and the plain-HTTP path is untouched.

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use switchboard_config::TlsConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// PEM files past this size are refused: a certificate chain is a few KiB,
/// and the reloader reads both files on every tick.
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Handshakes in progress at once; past this, accepting waits (the kernel's
/// backlog holds new connections) instead of growing without bound.
const MAX_HANDSHAKES: usize = 512;
/// A client has this long to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Completed handshakes waiting for the HTTP server to pick them up.
const ACCEPTED_QUEUE: usize = 64;

/// Why a certificate/key pair cannot be used. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The cause is in the message, not a `source`, so a `{:#}` chain does
    /// not print it twice.
    #[error("cannot read TLS {what} file {path}: {cause}")]
    Read {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("TLS {what} file {path} is larger than {MAX_PEM_BYTES} bytes; is it the right file?")]
    TooLarge { what: &'static str, path: PathBuf },
    #[error("TLS {what} file {path} is not valid PEM: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("TLS certificate file {path} holds no `BEGIN CERTIFICATE` block; give the PEM certificate chain, leaf first")]
    NoCertificate { path: PathBuf },
    #[error("TLS key file {path} holds no private key; give a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`")]
    NoKey { path: PathBuf },
    #[error("TLS key file {path} holds a key rustls cannot use: {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("TLS key file {key} does not belong to the certificate in {cert}; give the key the certificate was issued for")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The raw contents last looked at, so an unchanged (or unchanged bad) pair
/// is not parsed or reported again.
type Seen = (Vec<u8>, Vec<u8>);

/// The serving certificate and where it comes from.
pub(crate) struct Certs {
    files: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<Seen>,
}

impl fmt::Debug for Certs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certs")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

/// What one look at the files found.
#[derive(Debug)]
pub(crate) enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed (or could not be read) and the new pair is not
    /// usable; the previous certificate keeps serving.
    Failed(TlsError),
}

impl Certs {
    /// Reads and checks the pair; an error here stops the gateway at start.
    pub(crate) fn load(files: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let raw = read_pair(files)?;
        let key = certified(files, &raw, &provider)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            provider,
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(raw),
        }))
    }

    /// The rustls acceptor: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN,
    /// the certificate from [`Certs::current`] at every handshake.
    pub(crate) fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Re-reads the files; swaps the certificate in when they changed and
    /// the new pair is good.
    pub(crate) fn reload(&self) -> Reload {
        let raw = match read_pair(&self.files) {
            Ok(raw) => raw,
            Err(e) => return Reload::Failed(e),
        };
        {
            let mut seen = self.seen.lock();
            if *seen == raw {
                return Reload::Unchanged;
            }
            seen.clone_from(&raw);
        }
        match certified(&self.files, &raw, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// The leaf certificate now being served.
    #[cfg(test)]
    fn leaf(&self) -> Vec<u8> {
        self.current.load().cert[0].to_vec()
    }

    /// Polls the files every `reload_interval` until `shutdown`.
    pub(crate) fn spawn_reloader(
        self: &Arc<Self>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let Some(every) = self.files.reload_interval else {
            return;
        };
        let certs = self.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            // The last failure reported, so a missing file is logged once,
            // not on every tick until it comes back.
            let mut reported: Option<String> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let c = certs.clone();
                let Ok(outcome) = tokio::task::spawn_blocking(move || c.reload()).await else {
                    continue;
                };
                match outcome {
                    Reload::Unchanged => {}
                    Reload::Reloaded => {
                        reported = None;
                        tracing::info!(cert = %certs.files.cert.display(), "tls certificate reloaded");
                    }
                    Reload::Failed(e) => {
                        let message = e.to_string();
                        if reported.as_deref() != Some(message.as_str()) {
                            tracing::error!(error = %message, "tls certificate not reloaded; still serving the previous one");
                            reported = Some(message);
                        }
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |cause| TlsError::Read {
        what,
        path: path.to_owned(),
        cause,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn read_pair(files: &TlsConfig) -> Result<Seen, TlsError> {
    Ok((
        read_file("certificate", &files.cert)?,
        read_file("key", &files.key)?,
    ))
}

fn certified(
    files: &TlsConfig,
    (cert, key): &Seen,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            path: files.cert.clone(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: files.key.clone(),
        },
        e => TlsError::Pem {
            what: "key",
            path: files.key.clone(),
            message: e.to_string(),
        },
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
        // The leaf could not be parsed to compare keys: the certificate is
        // at fault, not the key.
        rustls::Error::InvalidCertificate(c) => TlsError::Pem {
            what: "certificate",
            path: files.cert.clone(),
            message: format!("{c:?}"),
        },
        e => TlsError::BadKey {
            path: files.key.clone(),
            message: e.to_string(),
        },
    })
}

// === listener ===

/// Accepts TCP connections and yields them once their TLS handshake is done.
#[derive(Debug)]
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts the accept loop; it ends with `shutdown` or when the listener
    /// is dropped.
    pub(crate) fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let spawner = tasks.clone();
        tasks.spawn(async move {
            loop {
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    permit = handshakes.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            accept_error(e).await;
                            continue;
                        }
                    },
                };
                // Small SSE frames must not wait for Nagle's algorithm; set
                // before the handshake so its flights go out at once too.
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let stop = shutdown.clone();
                spawner.spawn(async move {
                    let _permit = permit;
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let outcome = tokio::select! {
                        _ = stop.cancelled() => return,
                        outcome = handshake => outcome,
                    };
                    match outcome {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { accepted, local })
    }
}

/// Like axum's own listener: a peer that went away is not worth a pause;
/// anything else (out of file descriptors) backs off a little.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accept loop stopped (shutdown): no more connections; the
            // server's own graceful shutdown ends the serve future.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        cert: String,
        key: String,
    }

    fn pair() -> Pair {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        Pair {
            cert: c.cert.pem(),
            key: c.signing_key.serialize_pem(),
        }
    }

    fn files(dir: &Path, p: &Pair) -> TlsConfig {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &p.cert).unwrap();
        std::fs::write(&key, &p.key).unwrap();
        TlsConfig {
            cert,
            key,
            reload_interval: None,
        }
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn each_bad_pair_is_refused_with_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (pair(), pair());
        let good = files(dir.path(), &a);
        let other_key = dir.path().join("other.pem");
        std::fs::write(&other_key, &b.key).unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        let with = |cert: &Path, key: &Path| TlsConfig {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reload_interval: None,
        };
        let cases: Vec<(TlsConfig, &[&str])> = vec![
            (
                with(&missing, &good.key),
                &["cannot read", "certificate", "missing.pem"],
            ),
            (
                with(&good.cert, &missing),
                &["cannot read", "key file", "missing.pem"],
            ),
            (
                with(&garbage, &good.key),
                &["garbage.pem", "no `BEGIN CERTIFICATE`"],
            ),
            (with(&broken, &good.key), &["broken.pem", "not valid PEM"]),
            (
                with(&good.cert, &garbage),
                &["garbage.pem", "no private key"],
            ),
            (
                with(&good.cert, &good.cert),
                &["cert.pem", "no private key"],
            ),
            (
                with(&good.cert, &other_key),
                &["other.pem", "does not belong", "cert.pem"],
            ),
        ];
        for (config, needles) in cases {
            let msg = Certs::load(&config).unwrap_err().to_string();
            for n in needles {
                assert!(msg.contains(n), "{msg:?} should contain {n:?}");
            }
        }
        assert!(Certs::load(&good).is_ok());
    }

    #[test]
    fn a_changed_good_pair_is_swapped_in_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (pair(), pair(), pair());
        let config = files(dir.path(), &a);
        let certs = Certs::load(&config).unwrap();
        assert!(matches!(certs.reload(), Reload::Unchanged));

        files(dir.path(), &b);
        assert!(matches!(certs.reload(), Reload::Reloaded));
        assert_eq!(certs.leaf(), pem_der(&b.cert));

        // A renewal caught half-way: the new certificate, the old key.
        std::fs::write(&config.cert, &c.cert).unwrap();
        assert!(matches!(
            certs.reload(),
            Reload::Failed(TlsError::Mismatch { .. })
        ));
        assert_eq!(certs.leaf(), pem_der(&b.cert), "the old pair keeps serving");
        // Reported once for that content, not on every tick.
        assert!(matches!(certs.reload(), Reload::Unchanged));
        std::fs::write(&config.key, &c.key).unwrap();
        assert!(matches!(certs.reload(), Reload::Reloaded));
        assert_eq!(certs.leaf(), pem_der(&c.cert));

        std::fs::remove_file(&config.key).unwrap();
        assert!(matches!(
            certs.reload(),
            Reload::Failed(TlsError::Read { .. })
        ));
        assert_eq!(certs.leaf(), pem_der(&c.cert));
    }
}
