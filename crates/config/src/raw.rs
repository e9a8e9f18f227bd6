//! The file's wire form. Field names here are the documented config keys.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default)]
    pub(crate) auth: crate::security::RawAuth,
    #[serde(default)]
    pub(crate) security: crate::security::RawSecurity,
    #[serde(default)]
    pub(crate) store: RawStore,
    #[serde(default)]
    pub(crate) audit: RawAudit,
    #[serde(default)]
    pub(crate) cache: crate::cache::RawCacheBackend,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) data_dir: Option<Spanned<String>>,
    pub(crate) max_connections: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub(crate) enabled: Option<bool>,
    pub(crate) record_arguments: Option<bool>,
    pub(crate) redact_fields: Option<Vec<String>>,
    pub(crate) retention: Option<Spanned<String>>,
    pub(crate) batch_size: Option<Spanned<u32>>,
    pub(crate) flush_interval: Option<Spanned<String>>,
    pub(crate) spool_max_bytes: Option<Spanned<RawBytes>>,
}

/// A byte size: a plain number, or text with a unit ("256 MiB", "1GB").
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawBytes {
    Number(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) allowed_origins: Option<Vec<String>>,
    pub(crate) allowed_hosts: Option<Vec<String>>,
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) max_sessions: Option<u64>,
    pub(crate) session_idle_timeout: Option<Spanned<String>>,
    pub(crate) drain_timeout: Option<Spanned<String>>,
    pub(crate) separator: Option<Spanned<String>>,
    pub(crate) response_mode: Option<Spanned<String>>,
    pub(crate) metrics_token: Option<Spanned<String>>,
    pub(crate) rate_limit_per_minute: Option<u32>,
    pub(crate) rate_limit_loopback: Option<bool>,
    pub(crate) tls: Option<Spanned<RawTls>>,
    pub(crate) request_state_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert: Spanned<String>,
    pub(crate) key: Spanned<String>,
    pub(crate) reload_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub(crate) name: Spanned<String>,
    pub(crate) command: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) transport: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) oauth: Option<crate::security::RawUpstreamOAuth>,
    pub(crate) prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) tools: RawFilter,
    #[serde(default)]
    pub(crate) prompts: RawFilter,
    #[serde(default)]
    pub(crate) resources: RawFilter,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) max_response_bytes: Option<u64>,
    pub(crate) enabled: Option<bool>,
    /// Per-tool timeouts: glob over the upstream's tool names → duration.
    #[serde(default)]
    pub(crate) tool_timeouts: BTreeMap<String, Spanned<String>>,
    pub(crate) max_timeout: Option<Spanned<String>>,
    pub(crate) health_check_interval: Option<Spanned<String>>,
    pub(crate) max_in_flight: Option<u64>,
    pub(crate) max_queued: Option<u64>,
    pub(crate) retries: Option<u32>,
    #[serde(default)]
    pub(crate) breaker: RawBreaker,
    pub(crate) cache: Option<RawCache>,
    pub(crate) validate_input: Option<bool>,
    pub(crate) pool: Option<Spanned<String>>,
    pub(crate) max_instances: Option<u64>,
    pub(crate) idle_timeout: Option<Spanned<String>>,
    pub(crate) limits: Option<Spanned<RawLimits>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) memory: Option<RawSize>,
    pub(crate) cpu_seconds: Option<u64>,
    pub(crate) open_files: Option<u64>,
}

/// A byte size: a number of bytes or a string with a unit ("512MiB").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub(crate) ttl: Spanned<String>,
    #[serde(default)]
    pub(crate) tools: Vec<String>,
    #[serde(default)]
    pub(crate) resources: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) window: Option<Spanned<String>>,
    pub(crate) min_calls: Option<u32>,
    pub(crate) open_base: Option<Spanned<String>>,
    pub(crate) open_max: Option<Spanned<String>>,
    pub(crate) half_open_trials: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFilter {
    pub(crate) allow: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) deny: Vec<String>,
}
