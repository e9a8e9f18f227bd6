//! Validated configuration types.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::cache::{CacheBackend, CacheConfig, RedisCacheConfig};
pub use crate::security::{
    AuthConfig, JwtConfig, PinningPolicy, ResourceConfig, SecurityConfig, UpstreamOAuthConfig,
};

/// Defaults, in one place so the README's config reference can cite them.
pub mod defaults {
    use std::time::Duration;
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
    pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
    pub const MAX_SESSIONS: usize = 10_000;
    /// The seeds' security checklist: 100 requests per minute per IP.
    pub const RATE_LIMIT_PER_MINUTE: u32 = 100;
    pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const SEPARATOR: &str = "__";
    pub const TIMEOUT: Duration = Duration::from_secs(60);
    /// Hard cap on a call whose timeout is extended by progress notifications.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
    pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);
    pub const MAX_IN_FLIGHT: usize = 256;
    pub const MAX_QUEUED: usize = 1024;
    pub const RETRIES: u32 = 2;
    pub const BREAKER_CONSECUTIVE_FAILURES: u32 = 5;
    pub const BREAKER_FAILURE_RATE: f64 = 0.5;
    pub const BREAKER_WINDOW: Duration = Duration::from_secs(30);
    pub const BREAKER_MIN_CALLS: u32 = 20;
    pub const BREAKER_OPEN_BASE: Duration = Duration::from_secs(5);
    pub const BREAKER_OPEN_MAX: Duration = Duration::from_secs(300);
    pub const BREAKER_HALF_OPEN_TRIALS: u32 = 3;
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Per-session processes one stdio upstream may run at once.
    pub const MAX_INSTANCES: usize = 32;
    /// A per-session process unused this long is stopped.
    pub const INSTANCE_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// How often the TLS certificate and key files are checked for changes.
    pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
    /// Sub-directory of `$XDG_DATA_HOME` (or `~/.local/share`) used as the
    /// data directory; `./switchboard-data` when neither is set.
    pub const DATA_DIR_NAME: &str = "switchboard";
    pub const STORE_MAX_CONNECTIONS: u32 = 8;
    pub const AUDIT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
    pub const AUDIT_BATCH_SIZE: usize = 256;
    pub const AUDIT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
    pub const AUDIT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
    /// Argument fields whose values never reach the audit log. A field is
    /// redacted when its name, lowercased and without `-`/`_`, contains one
    /// of these (so `access_token` and `X-Api-Key` are caught too).
    pub const AUDIT_REDACT_FIELDS: &[&str] = &[
        "password",
        "passwd",
        "token",
        "secret",
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "privatekey",
        "session",
    ];
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub auth: AuthConfig,
    pub security: SecurityConfig,
    pub store: StoreConfig,
    pub audit: AuditConfig,
    pub cache: CacheConfig,
    /// Where the configuration came from, for reports and logs.
    pub origin: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Origins accepted besides loopback ones (exact `scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// Host names accepted in `Host` besides loopback names.
    pub allowed_hosts: Vec<String>,
    pub max_body_bytes: usize,
    pub max_sessions: usize,
    pub session_idle_timeout: Duration,
    pub drain_timeout: Duration,
    /// Joins an upstream name and a tool or prompt name.
    pub separator: String,
    pub response_mode: ResponseMode,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<Secret>,
    /// MCP requests per minute per client IP (IPv6 per /64); 0 disables.
    pub rate_limit_per_minute: u32,
    /// Whether loopback clients are limited too (by default they are not:
    /// a local gateway serves its own user).
    pub rate_limit_loopback: bool,
    /// TLS termination; `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Seals the `requestState` the gateway hands to 2026-07-28 clients.
    /// Replicas behind one load balancer need the same key; `None` means a
    /// random key per process (states then only work on the replica that
    /// issued them).
    pub request_state_key: Option<Secret>,
}

/// Where the PEM certificate chain and private key live. The files are read
/// by the gateway at start (so a bad pair stops it there) and re-read when
/// they change, so a renewed certificate needs no restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key: PathBuf,
    /// How often the files are checked for changes; `None` never reloads.
    pub reload_interval: Option<Duration>,
}

/// `[store]`: where keys, sessions, the audit log and pins are kept.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://...` (`DATABASE_URL` overrides the
    /// file); `None` means the SQLite file `switchboard.db` in `data_dir`.
    pub url: Option<Secret>,
    /// Holds the SQLite file and the audit spool; created on first start.
    pub data_dir: PathBuf,
    pub max_connections: u32,
}

/// `[audit]`: what the audit log records and how it is written.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub enabled: bool,
    /// Whether the (redacted) arguments are stored beside their digest.
    pub record_arguments: bool,
    /// Field names whose values are redacted (see `defaults::AUDIT_REDACT_FIELDS`).
    pub redact_fields: Vec<String>,
    /// Records older than this are deleted.
    pub retention: Duration,
    /// Records written to the database in one transaction, at most.
    pub batch_size: usize,
    /// A partial batch is written after this long.
    pub flush_interval: Duration,
    /// Cap of the on-disk spool used while the database is unreachable.
    pub spool_max_bytes: u64,
}

/// How a Streamable HTTP request is answered when the client accepts both
/// JSON and SSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseMode {
    /// Plain JSON, unless a related message (progress, log, server request)
    /// comes before the response; then SSE. Cheapest for clients.
    #[default]
    Auto,
    /// Always an SSE stream (with a priming event for 2025-11-25 sessions),
    /// so every response can be resumed with `Last-Event-ID`.
    Sse,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub transport: TransportConfig,
    pub prefix: PrefixPolicy,
    pub tools: NameFilter,
    pub prompts: NameFilter,
    pub resources: NameFilter,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_response_bytes: usize,
    /// Per-tool overrides of `timeout`, first matching glob wins.
    pub tool_timeouts: Vec<(globset::GlobMatcher, Duration)>,
    /// Progress notifications extend a call's timeout, up to this.
    pub max_timeout: Duration,
    /// How often an idle upstream is pinged; `None` disables pings.
    pub health_check_interval: Option<Duration>,
    pub max_in_flight: usize,
    pub max_queued: usize,
    /// Extra attempts for calls that are safe to repeat (0 disables retries).
    pub retries: u32,
    pub breaker: BreakerSettings,
    /// Response caching; `None` (the default) caches nothing.
    pub cache: Option<CacheSettings>,
    /// Whether tool arguments are checked against the tool's `inputSchema`
    /// before they are forwarded (default true).
    pub validate_input: bool,
}

/// What of an upstream's answers the gateway may cache, and for how long.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub ttl: Duration,
    /// Tools whose results may be cached (globs over the upstream's names);
    /// only tools that also declare `readOnlyHint: true` are ever cached.
    pub tools: NameFilter,
    /// Whether `resources/read` results are cached.
    pub resources: bool,
}

impl UpstreamConfig {
    /// The timeout for one tool: its override, else the upstream's.
    pub fn timeout_for_tool(&self, tool: &str) -> Duration {
        self.tool_timeouts
            .iter()
            .find(|(g, _)| g.is_match(tool))
            .map_or(self.timeout, |(_, d)| *d)
    }
}

/// Circuit-breaker thresholds of one upstream (see the README).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub window: Duration,
    pub min_calls: u32,
    pub open_base: Duration,
    pub open_max: Duration,
    pub half_open_trials: u32,
}

#[derive(Debug, Clone)]
pub enum TransportConfig {
    Stdio(StdioConfig),
    StreamableHttp(HttpConfig),
    /// The deprecated HTTP+SSE transport of 2024-11-05.
    Sse(HttpConfig),
}

impl TransportConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            TransportConfig::Stdio(_) => "stdio",
            TransportConfig::StreamableHttp(_) => "streamable_http",
            TransportConfig::Sse(_) => "sse",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StdioConfig {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, Secret)>,
    pub cwd: Option<PathBuf>,
    /// How many processes serve this upstream.
    pub pool: PoolPolicy,
    /// Resource limits each process starts under; `None` sets none.
    pub limits: Option<ProcessLimits>,
}

/// How many processes serve one stdio upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolPolicy {
    /// One process for every session: right for stateless servers, and the
    /// cheapest.
    #[default]
    Shared,
    /// One process per downstream session, for servers that keep state per
    /// client (a browser, a REPL, a login). A template process besides them
    /// answers discovery (the catalog) and health pings.
    PerSession {
        /// Most session processes at once; past it a new session's call is
        /// refused as overloaded rather than spawning without bound.
        max_instances: usize,
        /// A session process unused this long is stopped (its session gets a
        /// fresh one on its next call).
        idle_timeout: Duration,
    },
}

/// rlimits a stdio process starts under, applied by the launcher (the
/// switchboard binary's hidden `exec-limited` command) between `fork` and
/// the program's `exec`, so the program never runs unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessLimits {
    /// `RLIMIT_AS`: address space in bytes; allocations past it fail.
    pub memory_bytes: Option<u64>,
    /// `RLIMIT_CPU`: CPU seconds; past it the kernel sends SIGXCPU/SIGKILL.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_NOFILE`: open file descriptors.
    pub open_files: Option<u64>,
    /// The binary that applies the limits and then execs the program: the
    /// running switchboard (`${self}`).
    pub launcher: String,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub url: String,
    pub headers: Vec<(String, Secret)>,
    /// The gateway's own OAuth client for this upstream, if it needs one.
    pub oauth: Option<UpstreamOAuthConfig>,
}

/// How an upstream's tool and prompt names are exposed on federated routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixPolicy {
    /// Always `<upstream><separator><name>`.
    Always,
    /// Prefixed only when another upstream offers the same name.
    Conditional,
    /// Never prefixed; on a collision the upstream listed first wins.
    Never,
}

/// Allow/deny globs over names. A name passes when it matches an allow glob
/// (or no allow list is given) and matches no deny glob.
#[derive(Clone, Default)]
pub struct NameFilter {
    allow: Option<GlobSet>,
    deny: Option<GlobSet>,
    source: (Option<Vec<String>>, Vec<String>),
}

impl NameFilter {
    pub fn new(allow: Option<Vec<String>>, deny: Vec<String>) -> Result<Self, globset::Error> {
        fn build(globs: &[String]) -> Result<GlobSet, globset::Error> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g)?);
            }
            b.build()
        }
        Ok(Self {
            allow: allow.as_deref().map(build).transpose()?,
            deny: if deny.is_empty() {
                None
            } else {
                Some(build(&deny)?)
            },
            source: (allow, deny),
        })
    }

    pub fn permits(&self, name: &str) -> bool {
        self.allow.as_ref().is_none_or(|a| a.is_match(name))
            && !self.deny.as_ref().is_some_and(|d| d.is_match(name))
    }
}

impl fmt::Debug for NameFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameFilter")
            .field("allow", &self.source.0)
            .field("deny", &self.source.1)
            .finish()
    }
}

/// A value that must never appear in logs, errors or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// Returns the value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_allows_matching_and_denies_over_allow() {
        let f = NameFilter::new(
            Some(vec!["search*".into(), "get_*".into()]),
            vec!["get_secret".into()],
        )
        .unwrap();
        assert!(f.permits("search_docs"));
        assert!(f.permits("get_page"));
        assert!(!f.permits("get_secret"));
        assert!(!f.permits("delete_page"));
        assert!(NameFilter::default().permits("anything"));
    }

    #[test]
    fn a_secret_never_shows_in_debug_or_display() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}{s}").contains("hunter2"));
    }
}
