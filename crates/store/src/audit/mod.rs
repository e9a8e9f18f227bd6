//! The audit writer: records leave the request path through a bounded
//! channel and reach the database in batches; while the database is
//! unreachable they wait in an on-disk spool, which is replayed oldest first
//! when it returns.
//!
//! ```text
//! record() ──try_send──▶ channel ──▶ writer task ──append_audit──▶ store
//!    │ (full)                           │ (store failing)               ▲
//!    └──────────────▶ spool (JSONL) ◀───┘                               │
//!                          └────────── drainer task (backoff) ──────────┘
//! ```
//!
//! A record is lost only when the spool is at its byte cap; such drops are
//! counted ([`AuditHandle::dropped`]) and logged at error level.

mod spool;

use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::AuditRecord;
use crate::store::Store;
use spool::Spool;

/// Sub-directory of the data directory that holds the spool.
pub const SPOOL_DIR: &str = "audit-spool";

/// How the writer batches, spools and purges.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Records waiting in memory; past this, `record` spools directly.
    pub queue_capacity: usize,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Records (and ended sessions, health reports) older than this are
    /// purged; `None` keeps everything.
    pub retention: Option<Duration>,
    pub purge_interval: Duration,
    /// Longest wait between two replay attempts while the database is down.
    pub max_retry_interval: Duration,
    /// A database write taking longer than this counts as a failure.
    pub write_timeout: Duration,
}

impl AuditSettings {
    /// Settings from `[audit]`, with the spool in `data_dir`.
    pub fn from_config(audit: &switchboard_config::AuditConfig, data_dir: &Path) -> Self {
        Self {
            batch_size: audit.batch_size.max(1),
            flush_interval: audit.flush_interval,
            queue_capacity: 16_384,
            spool_dir: data_dir.join(SPOOL_DIR),
            spool_max_bytes: audit.spool_max_bytes,
            retention: Some(audit.retention),
            purge_interval: Duration::from_secs(3600).min(audit.retention / 4),
            max_retry_interval: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// The spool directory could not be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open the audit spool in {path}: {source}; check that the data directory is writable"
)]
pub struct SpoolError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

enum Msg {
    Record(Box<AuditRecord>),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Stats {
    /// Accepted but not yet confirmed in the database.
    pending: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    /// Time (µs) of the first record of the writer's current batch; 0 = none.
    batch_oldest_us: AtomicI64,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn Store>,
    settings: AuditSettings,
    spool: Spool,
    stats: Stats,
    /// False after a failed write: the writer then spools without trying
    /// the database, and the drainer alone probes it.
    db_ok: AtomicBool,
    wake_drainer: Notify,
}

/// Starts the audit writer.
#[derive(Debug)]
pub struct AuditWriter;

impl AuditWriter {
    /// Opens the spool (taking over what a previous run left in it) and
    /// starts the writer, drainer and purge tasks on the current runtime.
    pub fn spawn(
        store: Arc<dyn Store>,
        settings: AuditSettings,
    ) -> Result<AuditHandle, SpoolError> {
        let (spool, leftover) = Spool::open(&settings.spool_dir, settings.spool_max_bytes)
            .map_err(|source| SpoolError {
                path: settings.spool_dir.clone(),
                source,
            })?;
        if leftover > 0 {
            tracing::info!(
                records = leftover,
                "audit spool holds records from an earlier run; replaying"
            );
        }
        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            store,
            spool,
            stats: Stats {
                pending: AtomicU64::new(leftover),
                ..Stats::default()
            },
            db_ok: AtomicBool::new(true),
            wake_drainer: Notify::new(),
            settings,
        });
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(writer(shared.clone(), rx, cancel.clone()));
        tasks.spawn(drainer(shared.clone(), cancel.clone()));
        if shared.settings.retention.is_some() {
            tasks.spawn(purger(shared.clone(), cancel.clone()));
        }
        tasks.close();
        if leftover > 0 {
            shared.wake_drainer.notify_one();
        }
        Ok(AuditHandle {
            inner: Arc::new(HandleInner {
                tx,
                shared,
                cancel,
                tasks,
            }),
        })
    }
}

#[derive(Debug)]
struct HandleInner {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Debug, Clone)]
pub struct AuditHandle {
    inner: Arc<HandleInner>,
}

impl AuditHandle {
    /// Hands a record to the writer. Never waits for the database: when the
    /// queue is full the record is appended to the spool file (a page-cache
    /// write; the writer fsyncs).
    pub fn record(&self, record: AuditRecord) {
        let shared = &self.inner.shared;
        shared.stats.pending.fetch_add(1, Ordering::Relaxed);
        let record = match self.inner.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(Msg::Record(r)))
            | Err(mpsc::error::TrySendError::Closed(Msg::Record(r))) => r,
            Err(_) => return,
        };
        let mut record = *record;
        sanitise(&mut record);
        spool_records(shared, std::slice::from_ref(&record), false);
    }

    /// Returns once every record handed over before the call is in the
    /// database or synced to the spool.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.inner.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Stops the tasks after writing what is queued (to the database, or to
    /// the spool for the next start). Bound it with a timeout at the caller.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.wait().await;
    }

    /// Records accepted but not yet in the database (queued or spooled).
    pub fn pending(&self) -> u64 {
        self.inner.shared.stats.pending.load(Ordering::Relaxed)
    }

    /// Bytes on disk in the spool.
    pub fn spool_bytes(&self) -> u64 {
        self.inner.shared.spool.bytes()
    }

    /// Records lost because the spool was full (or unwritable).
    pub fn dropped(&self) -> u64 {
        self.inner.shared.stats.dropped.load(Ordering::Relaxed)
    }

    /// Records confirmed in the database by this writer.
    pub fn written(&self) -> u64 {
        self.inner.shared.stats.written.load(Ordering::Relaxed)
    }

    /// Age of the oldest record not yet in the database: how far behind the
    /// audit log is.
    pub fn oldest_pending_age(&self) -> Option<Duration> {
        let shared = &self.inner.shared;
        let batch = Some(shared.stats.batch_oldest_us.load(Ordering::Relaxed)).filter(|t| *t != 0);
        let oldest = match (batch, shared.spool.oldest_us()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        let age = Utc::now().timestamp_micros().saturating_sub(oldest);
        Some(Duration::from_micros(u64::try_from(age).unwrap_or(0)))
    }
}

/// PostgreSQL refuses NUL in text; a client-chosen name must not make a
/// record unwritable.
fn sanitise(r: &mut AuditRecord) {
    for field in [
        r.identity.as_mut(),
        r.session_id.as_mut(),
        r.client_name.as_mut(),
        r.client_version.as_mut(),
        r.upstream.as_mut(),
        r.target.as_mut(),
        r.arguments_digest.as_mut(),
        r.error.as_mut(),
        Some(&mut r.method),
        Some(&mut r.id),
    ]
    .into_iter()
    .flatten()
    {
        if field.contains('\0') {
            *field = field.replace('\0', "\u{FFFD}");
        }
    }
}

/// Appends to the spool and accounts for what could not be kept.
fn spool_records(shared: &Shared, records: &[AuditRecord], sync: bool) {
    let dropped = match shared.spool.append(records, sync) {
        Ok(a) => a.dropped,
        Err(e) => {
            tracing::error!(error = %e, records = records.len(), "cannot write the audit spool; records lost");
            records.len() as u64
        }
    };
    if dropped > 0 {
        shared.stats.pending.fetch_sub(dropped, Ordering::Relaxed);
        let before = shared.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        // Loud, but not one line per record while the condition lasts.
        if before == 0 || (before / 1000) != ((before + dropped) / 1000) {
            tracing::error!(
                dropped_total = before + dropped,
                spool_bytes = shared.spool.bytes(),
                spool_max_bytes = shared.settings.spool_max_bytes,
                "audit records dropped: the spool is full and the database unreachable"
            );
        }
    }
    shared.wake_drainer.notify_one();
}

async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>, cancel: CancellationToken) {
    let size = shared.settings.batch_size;
    let mut batch: Vec<AuditRecord> = Vec::with_capacity(size);
    let mut tick = tokio::time::interval(shared.settings.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Record(r)) => {
                    push(&shared, &mut batch, *r);
                    if batch.len() >= size {
                        flush(&shared, &mut batch).await;
                    }
                }
                Some(Msg::Flush(done)) => {
                    flush(&shared, &mut batch).await;
                    sync_spool(&shared).await;
                    let _ = done.send(());
                }
                None => break,
            },
            _ = tick.tick() => {
                flush(&shared, &mut batch).await;
                sync_spool(&shared).await;
            }
            _ = cancel.cancelled() => break,
        }
    }
    // Shutdown: take what is queued, bounded by the channel's capacity.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Record(r) => {
                push(&shared, &mut batch, *r);
                if batch.len() >= size {
                    flush(&shared, &mut batch).await;
                }
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
    flush(&shared, &mut batch).await;
    sync_spool(&shared).await;
}

fn push(shared: &Shared, batch: &mut Vec<AuditRecord>, mut r: AuditRecord) {
    sanitise(&mut r);
    if batch.is_empty() {
        shared
            .stats
            .batch_oldest_us
            .store(r.time.timestamp_micros().max(1), Ordering::Relaxed);
    }
    batch.push(r);
}

/// Writes the batch to the database, or to the spool when the database is
/// known to be down or this write fails.
async fn flush(shared: &Arc<Shared>, batch: &mut Vec<AuditRecord>) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    if shared.db_ok.load(Ordering::Acquire) {
        let write = tokio::time::timeout(
            shared.settings.write_timeout,
            shared.store.append_audit(batch),
        )
        .await;
        match write {
            Ok(Ok(_)) => {
                shared.stats.written.fetch_add(n, Ordering::Relaxed);
                shared.stats.pending.fetch_sub(n, Ordering::Relaxed);
                batch.clear();
                shared.stats.batch_oldest_us.store(0, Ordering::Relaxed);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, records = n, "audit write failed; spooling to disk until the store is back");
            }
            Err(_) => {
                tracing::warn!(records = n, timeout = ?shared.settings.write_timeout, "audit write timed out; spooling to disk until the store is back");
            }
        }
        shared.db_ok.store(false, Ordering::Release);
    }
    let records = std::mem::take(batch);
    let s = shared.clone();
    let spooled = tokio::task::spawn_blocking(move || {
        spool_records(&s, &records, true);
    })
    .await;
    if let Err(e) = spooled {
        tracing::error!(error = %e, "audit spool task failed");
    }
    shared.stats.batch_oldest_us.store(0, Ordering::Relaxed);
}

async fn sync_spool(shared: &Arc<Shared>) {
    let s = shared.clone();
    let res = tokio::task::spawn_blocking(move || s.spool.sync()).await;
    if let Ok(Err(e)) = res {
        tracing::error!(error = %e, "cannot sync the audit spool");
    }
}

/// Replays the spool into the database whenever it holds records, backing
/// off while the database stays unreachable.
async fn drainer(shared: Arc<Shared>, cancel: CancellationToken) {
    let base = shared.settings.flush_interval;
    let mut backoff = base;
    loop {
        if shared.spool.is_empty() {
            tokio::select! {
                _ = shared.wake_drainer.notified() => continue,
                _ = cancel.cancelled() => return,
            }
        }
        if drain(&shared, &cancel).await {
            backoff = base;
            if shared.spool.is_empty() && !shared.db_ok.swap(true, Ordering::AcqRel) {
                tracing::info!("audit store reachable again; spool replayed");
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(shared.settings.max_retry_interval);
    }
}

/// Replays sealed segments oldest first; `false` when the database failed.
async fn drain(shared: &Arc<Shared>, cancel: &CancellationToken) -> bool {
    while let Some(segment) = shared.spool.oldest() {
        if cancel.is_cancelled() {
            return false;
        }
        let path = segment.path.clone();
        let read = tokio::task::spawn_blocking(move || spool::read_segment(&path)).await;
        let (records, bad) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(error = %e, path = %segment.path.display(), "cannot read an audit spool segment");
                return false;
            }
            Err(_) => return false,
        };
        let mut rejected = 0;
        for chunk in records.chunks(shared.settings.batch_size) {
            match write_chunk(shared, chunk).await {
                Some(r) => rejected += r,
                None => return false,
            }
        }
        let s = shared.clone();
        let seg = segment.clone();
        match tokio::task::spawn_blocking(move || s.spool.remove(&seg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, path = %segment.path.display(), "cannot delete a replayed audit spool segment");
                return false;
            }
            Err(_) => return false,
        }
        if bad > 0 {
            tracing::error!(lines = bad, path = %segment.path.display(), "unreadable lines in the audit spool (a write torn by a crash?); skipped");
        }
        shared
            .stats
            .dropped
            .fetch_add(bad + rejected, Ordering::Relaxed);
        shared.stats.written.fetch_add(
            (records.len() as u64).saturating_sub(rejected),
            Ordering::Relaxed,
        );
        let _ = shared
            .stats
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(segment.records))
            });
    }
    true
}

/// Writes one chunk of replayed records. A chunk the database refuses while
/// it answers pings holds a record it will never take: that record is
/// written alone and, failing again, given up, so one bad record cannot
/// stall the spool forever.
///
/// Returns how many records were given up, or `None` when the database is
/// unreachable.
async fn write_chunk(shared: &Shared, chunk: &[AuditRecord]) -> Option<u64> {
    let timeout = shared.settings.write_timeout;
    match tokio::time::timeout(timeout, shared.store.append_audit(chunk)).await {
        Ok(Ok(_)) => return Some(0),
        Ok(Err(e)) if e.is_unavailable() => return None,
        Err(_) => return None,
        Ok(Err(_)) => {}
    }
    if !matches!(
        tokio::time::timeout(timeout, shared.store.ping()).await,
        Ok(Ok(()))
    ) {
        return None;
    }
    let mut rejected = 0;
    for record in chunk {
        let one = std::slice::from_ref(record);
        match tokio::time::timeout(timeout, shared.store.append_audit(one)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if !e.is_unavailable() => {
                tracing::error!(error = %e, id = %record.id, "the store refuses an audit record; skipped");
                rejected += 1;
            }
            _ => return None,
        }
    }
    Some(rejected)
}

/// Deletes what is older than the retention, every `purge_interval`.
async fn purger(shared: Arc<Shared>, cancel: CancellationToken) {
    let Some(retention) = shared.settings.retention else {
        return;
    };
    let mut tick =
        tokio::time::interval(shared.settings.purge_interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let Ok(age) = chrono::Duration::from_std(retention) else {
            return;
        };
        let before = Utc::now() - age;
        let store = &shared.store;
        let audit = store.purge_audit_before(before).await;
        let health = store.purge_health_reports_before(before).await;
        let sessions = store.purge_sessions_ended_before(before).await;
        match (audit, health, sessions) {
            (Ok(a), Ok(h), Ok(s)) if a + h + s > 0 => {
                tracing::info!(
                    audit = a,
                    health_reports = h,
                    sessions = s,
                    "purged records past retention"
                );
            }
            (Ok(_), Ok(_), Ok(_)) => {}
            (a, h, s) => {
                let e = [a.err(), h.err(), s.err()].into_iter().flatten().next();
                if let Some(e) = e {
                    tracing::warn!(error = %e, "purge of old records failed; retrying at the next interval");
                }
            }
        }
    }
}
