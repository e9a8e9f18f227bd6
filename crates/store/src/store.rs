//! The one interface the rest of Switchboard uses for persistence.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::model::*;

/// Persistence of keys, sessions, the audit log, health reports and tool pins.
///
/// Implemented by the SQLite and the PostgreSQL backend with the same SQL and
/// the same semantics; every operation is a single statement or one
/// transaction, so several gateway replicas may share one PostgreSQL store.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `"sqlite"` or `"postgres"`, for logs and `/health`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the database answers a trivial query (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    // --- API keys ---

    /// Fails with [`StoreError::DuplicateKeyName`] when the name is taken.
    async fn insert_api_key(&self, key: NewApiKey) -> Result<ApiKeyRecord, StoreError>;
    /// An indexed lookup by hash; revoked keys are returned too.
    async fn find_api_key_by_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Every key, oldest first, revoked ones included.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Marks the named key revoked; `false` when no such unrevoked key exists.
    async fn revoke_api_key(&self, name: &str) -> Result<bool, StoreError>;
    /// Records that a key was used. Writes at most once a minute per key, so
    /// calling it on every request costs no write amplification.
    async fn touch_api_key_used(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError>;

    // --- sessions ---

    /// Idempotent: a second start of the same id changes nothing.
    async fn record_session_start(&self, session: SessionRecord) -> Result<(), StoreError>;
    async fn record_session_end(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Most recent first, at most `limit`.
    async fn list_sessions(
        &self,
        active_only: bool,
        limit: u32,
    ) -> Result<Vec<SessionInfo>, StoreError>;
    /// Deletes sessions that ended before `before`; returns how many.
    async fn purge_sessions_ended_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    // --- audit ---

    /// Writes a batch in one transaction. Records whose id is already stored
    /// are skipped, so replays are harmless. Returns how many were new.
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<u64, StoreError>;
    /// The most recent matching records (up to the filter's limit), returned
    /// oldest first.
    async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// Deletes records older than `before`; returns how many.
    async fn purge_audit_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    // --- health ---

    async fn insert_health_report(&self, report: HealthReport) -> Result<(), StoreError>;
    /// The most recent report of every upstream that has one.
    async fn latest_health_reports(&self) -> Result<Vec<HealthReport>, StoreError>;
    async fn purge_health_reports_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    // --- tool pins ---

    async fn get_pin(&self, tool: &str) -> Result<Option<PinRecord>, StoreError>;
    async fn list_pins(&self) -> Result<Vec<PinRecord>, StoreError>;
    /// Pins `pin` unless the tool is already pinned, and returns the pin that
    /// holds afterwards: when replicas race, all of them get the winner.
    async fn insert_pin_if_absent(&self, pin: NewPin) -> Result<PinRecord, StoreError>;
    /// Records a changed definition awaiting approval (replacing an older
    /// pending one; `since` is kept when the same change is seen again).
    /// A `hash` equal to the pin clears the pending change. Returns `false`
    /// when the tool is not pinned.
    async fn record_pending_change(
        &self,
        tool: &str,
        hash: &str,
        definition: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Makes the pending change the pin. With `expected_hash`, only when the
    /// pending change is still that one, so an operator never approves a
    /// definition they have not seen. `None` when nothing was approved.
    async fn approve_pin(
        &self,
        tool: &str,
        expected_hash: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Option<PinRecord>, StoreError>;
}
