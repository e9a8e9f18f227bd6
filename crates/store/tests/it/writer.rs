//! The audit writer against each backend, with a wrapper that makes the
//! store fail on demand (the database "down").

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchboard_store::audit::{AuditHandle, AuditSettings, AuditWriter};
use switchboard_store::*;

use crate::cases::record;
use crate::fixture::Db;

/// Delegates to a real store, except that audit writes and pings fail while
/// `down` is set, as they do when the database is unreachable.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn Store>,
    down: AtomicBool,
    failed_writes: AtomicU64,
}

impl Flaky {
    fn unavailable() -> StoreError {
        StoreError::Query(sqlx::Error::PoolTimedOut)
    }
}

#[async_trait]
impl Store for Flaky {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Self::unavailable());
        }
        self.inner.ping().await
    }
    async fn insert_api_key(&self, key: NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        self.inner.insert_api_key(key).await
    }
    async fn find_api_key_by_hash(&self, h: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.inner.find_api_key_by_hash(h).await
    }
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.inner.list_api_keys().await
    }
    async fn revoke_api_key(&self, name: &str) -> Result<bool, StoreError> {
        self.inner.revoke_api_key(name).await
    }
    async fn touch_api_key_used(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.touch_api_key_used(id, at).await
    }
    async fn record_session_start(&self, s: SessionRecord) -> Result<(), StoreError> {
        self.inner.record_session_start(s).await
    }
    async fn record_session_end(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.record_session_end(id, at).await
    }
    async fn list_sessions(
        &self,
        active: bool,
        limit: u32,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.inner.list_sessions(active, limit).await
    }
    async fn purge_sessions_ended_before(&self, b: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_sessions_ended_before(b).await
    }
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<u64, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            self.failed_writes.fetch_add(1, Ordering::SeqCst);
            return Err(Self::unavailable());
        }
        self.inner.append_audit(records).await
    }
    async fn query_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.query_audit(f).await
    }
    async fn purge_audit_before(&self, b: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_audit_before(b).await
    }
    async fn insert_health_report(&self, r: HealthReport) -> Result<(), StoreError> {
        self.inner.insert_health_report(r).await
    }
    async fn latest_health_reports(&self) -> Result<Vec<HealthReport>, StoreError> {
        self.inner.latest_health_reports().await
    }
    async fn purge_health_reports_before(&self, b: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_health_reports_before(b).await
    }
    async fn get_pin(&self, tool: &str) -> Result<Option<PinRecord>, StoreError> {
        self.inner.get_pin(tool).await
    }
    async fn list_pins(&self) -> Result<Vec<PinRecord>, StoreError> {
        self.inner.list_pins().await
    }
    async fn insert_pin_if_absent(&self, p: NewPin) -> Result<PinRecord, StoreError> {
        self.inner.insert_pin_if_absent(p).await
    }
    async fn record_pending_change(
        &self,
        tool: &str,
        hash: &str,
        def: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.record_pending_change(tool, hash, def, at).await
    }
    async fn approve_pin(
        &self,
        tool: &str,
        expected: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Option<PinRecord>, StoreError> {
        self.inner.approve_pin(tool, expected, at).await
    }
}

fn settings(db: &Db) -> AuditSettings {
    AuditSettings {
        batch_size: 16,
        flush_interval: Duration::from_millis(20),
        queue_capacity: 64,
        spool_dir: db.dir.path().join("spool"),
        spool_max_bytes: 4 * 1024 * 1024,
        retention: None,
        purge_interval: Duration::from_secs(3600),
        max_retry_interval: Duration::from_millis(200),
        write_timeout: Duration::from_secs(5),
    }
}

/// Polls `cond` every 20 ms, at most 30 s; panics with `what` otherwise.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn stored_ids(store: &Arc<dyn Store>) -> Vec<String> {
    let mut ids: Vec<_> = store
        .query_audit(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

fn records(n: usize) -> Vec<AuditRecord> {
    (0..n)
        .map(|i| record(i as i64, "alice", &format!("web__t{i}"), Outcome::Ok))
        .collect()
}

fn ids(records: &[AuditRecord]) -> Vec<String> {
    let mut ids: Vec<_> = records.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids
}

fn spawn(store: Arc<dyn Store>, settings: AuditSettings) -> AuditHandle {
    AuditWriter::spawn(store, settings).unwrap()
}

pub(crate) async fn audit_writer_batches_records_into_the_store(db: &Db) {
    let audit = spawn(db.store.clone(), settings(db));
    let sent = records(100);
    for r in &sent {
        audit.record(r.clone());
    }
    // Past the queue's 64, `record` spools; the drainer then replays.
    eventually("all records are written", || audit.pending() == 0).await;
    audit.flush().await;
    assert_eq!(stored_ids(&db.store).await, ids(&sent));
    assert_eq!(
        (audit.pending(), audit.written(), audit.dropped()),
        (0, 100, 0)
    );
    assert_eq!(audit.spool_bytes(), 0);
    assert_eq!(audit.oldest_pending_age(), None);
    audit.shutdown().await;
}

pub(crate) async fn audit_writer_spools_while_the_store_is_down_and_replays_exactly_once(db: &Db) {
    let flaky = Arc::new(Flaky {
        inner: db.store.clone(),
        down: AtomicBool::new(false),
        failed_writes: AtomicU64::new(0),
    });
    let audit = spawn(flaky.clone(), settings(db));
    let before = records(10);
    for r in &before {
        audit.record(r.clone());
    }
    audit.flush().await;

    flaky.down.store(true, Ordering::SeqCst);
    // More than the queue holds, so `record` also spools directly.
    let during: Vec<_> = (0..300)
        .map(|i| record(100 + i, "bob", "git__push", Outcome::Ok))
        .collect();
    for r in &during {
        audit.record(r.clone());
    }
    audit.flush().await;
    assert!(
        flaky.failed_writes.load(Ordering::SeqCst) > 0,
        "the writer tried the store"
    );
    assert_eq!(
        audit.pending(),
        300,
        "everything written while down is pending"
    );
    assert!(audit.spool_bytes() > 0, "and on disk");
    assert!(audit.oldest_pending_age().is_some());
    assert_eq!(audit.dropped(), 0);
    assert_eq!(stored_ids(&db.store).await, ids(&before));

    flaky.down.store(false, Ordering::SeqCst);
    let after = records(5);
    for r in &after {
        audit.record(r.clone());
    }
    eventually("the spool is replayed", || audit.pending() == 0).await;
    audit.flush().await;
    let mut all = before.clone();
    all.extend(during.iter().cloned());
    all.extend(after.iter().cloned());
    assert_eq!(
        stored_ids(&db.store).await,
        ids(&all),
        "every record exactly once"
    );
    assert_eq!(audit.spool_bytes(), 0);
    assert_eq!(audit.dropped(), 0);
    assert_eq!(audit.written(), 315);
    let leftovers = std::fs::read_dir(db.dir.path().join("spool"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "replayed segments are deleted");
    audit.shutdown().await;
}

pub(crate) async fn audit_writer_replays_a_spool_left_by_an_earlier_run(db: &Db) {
    let flaky = Arc::new(Flaky {
        inner: db.store.clone(),
        down: AtomicBool::new(true),
        failed_writes: AtomicU64::new(0),
    });
    let first = spawn(flaky.clone(), settings(db));
    let sent = records(40);
    for r in &sent {
        first.record(r.clone());
    }
    first.shutdown().await;
    assert_eq!(first.pending(), 40);
    assert!(stored_ids(&db.store).await.is_empty());
    // A torn line, as a crash in the middle of a write would leave.
    let spool = db.dir.path().join("spool");
    let seg = std::fs::read_dir(&spool)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut text = std::fs::read_to_string(&seg).unwrap();
    text.push_str("{\"id\":\"torn");
    std::fs::write(&seg, text).unwrap();

    // The next start, with the database back: the spool is replayed, twice
    // over even (a replay is idempotent), and nothing is duplicated.
    let second = spawn(db.store.clone(), settings(db));
    eventually("the old spool is replayed", || second.spool_bytes() == 0).await;
    assert_eq!(stored_ids(&db.store).await, ids(&sent));
    assert_eq!(second.pending(), 0);
    assert_eq!(second.dropped(), 1, "the torn line is counted as lost");
    second.append_again_is_harmless(&sent, &db.store).await;
    second.shutdown().await;
}

trait Replay {
    async fn append_again_is_harmless(&self, sent: &[AuditRecord], store: &Arc<dyn Store>);
}

impl Replay for AuditHandle {
    async fn append_again_is_harmless(&self, sent: &[AuditRecord], store: &Arc<dyn Store>) {
        for r in sent {
            self.record(r.clone());
        }
        self.flush().await;
        assert_eq!(stored_ids(store).await, ids(sent));
    }
}

pub(crate) async fn audit_writer_drops_only_past_the_spool_cap_and_counts_it(db: &Db) {
    let flaky = Arc::new(Flaky {
        inner: db.store.clone(),
        down: AtomicBool::new(true),
        failed_writes: AtomicU64::new(0),
    });
    let mut s = settings(db);
    s.spool_max_bytes = 64 * 1024;
    let audit = spawn(flaky.clone(), s);
    let line = serde_json::to_vec(&records(1)[0]).unwrap().len() as u64 + 1;
    let n = 2000;
    for r in records(n) {
        audit.record(r);
    }
    audit.flush().await;
    let kept = audit.pending();
    assert!(audit.spool_bytes() <= 64 * 1024, "the cap holds");
    assert!(audit.dropped() > 0, "past the cap records are dropped");
    assert_eq!(
        kept + audit.dropped(),
        n as u64,
        "every record is kept or counted"
    );
    assert!(
        kept >= (64 * 1024 / (line + 8)) - 1,
        "the spool fills up to its cap ({kept} kept)"
    );

    flaky.down.store(false, Ordering::SeqCst);
    eventually("the spool is replayed", || audit.pending() == 0).await;
    assert_eq!(stored_ids(&db.store).await.len() as u64, kept);
    audit.shutdown().await;
}
