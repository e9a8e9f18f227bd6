//! The records the store holds. Times are UTC; the backends keep them as
//! microseconds since the epoch, so a value read back equals the one written
//! up to the microsecond.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// An API key to create. The store never sees the plaintext key: `key_hash`
/// is computed by the caller and is what lookups use.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub key_hash: String,
    /// The first characters of the key, shown in listings so an operator can
    /// tell keys apart without the store holding the secret.
    pub key_prefix: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub name: String,
    pub key_hash: String,
    pub key_prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked keys are still returned, so the caller can answer "revoked"
    /// rather than "unknown".
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Metadata of one MCP session, written when it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub identity: Option<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub protocol_version: Option<String>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session: SessionRecord,
    pub ended_at: Option<DateTime<Utc>>,
}

/// How an audited operation ended. A closed set, so queries and exports can
/// rely on the spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The upstream or the gateway answered with an error.
    Error,
    /// Authorization refused the operation.
    Denied,
    /// The caller could not be authenticated.
    Unauthenticated,
    RateLimited,
    /// The request was malformed or failed input validation.
    Invalid,
    Timeout,
    Cancelled,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Denied,
        Outcome::Unauthenticated,
        Outcome::RateLimited,
        Outcome::Invalid,
        Outcome::Timeout,
        Outcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Denied => "denied",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::RateLimited => "rate_limited",
            Outcome::Invalid => "invalid",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spelling was not one of [`Outcome::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0:?} is not an outcome; use one of ok, error, denied, unauthenticated, rate_limited, invalid, timeout, cancelled")]
pub struct UnknownOutcome(pub String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

/// Spellings of [`AuditRecord::method`]: the MCP methods that are audited and
/// the security events the gateway records beside them.
pub mod method {
    pub const TOOLS_CALL: &str = "tools/call";
    pub const RESOURCES_READ: &str = "resources/read";
    pub const PROMPTS_GET: &str = "prompts/get";
    pub const SESSION_HIJACK_ATTEMPT: &str = "session_hijack_attempt";
    pub const AUTHZ_DENIED: &str = "authz_denied";
    pub const AUTH_FAILED: &str = "auth_failed";
    pub const TOOL_DEFINITION_CHANGED: &str = "tool_definition_changed";
}

/// One line of the audit log.
///
/// `id` is chosen by whoever creates the record (a UUIDv7, time-ordered), so
/// writing the same record twice — a spool replayed after a crash — stores
/// it once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub time: DateTime<Utc>,
    pub identity: Option<String>,
    pub session_id: Option<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub method: String,
    pub upstream: Option<String>,
    /// Tool name, resource URI or prompt name, as the client named it.
    pub target: Option<String>,
    /// SHA-256 (hex) of the canonical JSON of the redacted arguments.
    pub arguments_digest: Option<String>,
    /// The redacted arguments; only present when recording is configured.
    pub arguments: Option<Value>,
    pub duration_ms: Option<u64>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

impl AuditRecord {
    /// A record stamped now with a fresh id; the caller fills in the rest.
    pub fn new(method: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            time: Utc::now(),
            identity: None,
            session_id: None,
            client_name: None,
            client_version: None,
            method: method.into(),
            upstream: None,
            target: None,
            arguments_digest: None,
            arguments: None,
            duration_ms: None,
            outcome,
            error: None,
        }
    }
}

/// Which audit records to return. Every field narrows the result; all values
/// are bound as query parameters.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Inclusive lower bound on `time`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `time`.
    pub until: Option<DateTime<Utc>>,
    pub identity: Option<String>,
    pub session_id: Option<String>,
    pub upstream: Option<String>,
    /// Exact target, or a glob when it contains `*` or `?`.
    pub target: Option<String>,
    pub method: Option<String>,
    pub outcome: Option<Outcome>,
    /// At most this many records, the most recent ones; `None` means
    /// [`MAX_AUDIT_QUERY_LIMIT`], which is also the cap.
    pub limit: Option<u32>,
}

/// The most records one query returns, so an export cannot exhaust memory.
pub const MAX_AUDIT_QUERY_LIMIT: u32 = 100_000;

/// A health observation of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub time: DateTime<Utc>,
    pub upstream: String,
    pub status: String,
    pub detail: Value,
}

/// The first definition seen of a tool to pin.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPin {
    pub tool: String,
    pub hash: String,
    pub definition: Value,
    pub first_seen: DateTime<Utc>,
}

/// A pinned tool definition and, when the upstream has since changed it, the
/// changed definition awaiting approval.
#[derive(Debug, Clone, PartialEq)]
pub struct PinRecord {
    pub tool: String,
    pub hash: String,
    pub definition: Value,
    pub first_seen: DateTime<Utc>,
    /// When an operator last approved a change (the pin is then that change).
    pub approved_at: Option<DateTime<Utc>>,
    pub pending: Option<PendingChange>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PendingChange {
    pub hash: String,
    pub definition: Value,
    pub since: DateTime<Utc>,
}
