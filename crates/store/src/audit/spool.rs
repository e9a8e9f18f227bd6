//! The audit spool: append-only JSONL segments in the data directory that
//! hold records the database could not take yet.
//!
//! New records go to the active segment; the drainer seals it and replays
//! sealed segments oldest first, deleting each once the database has all of
//! its records. A restart never appends to an old segment, so a line torn by
//! a crash stays alone at the end of its file.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::model::AuditRecord;

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

/// A file of the spool.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    pub(crate) records: u64,
    /// Time (µs) of its first record; `i64::MAX` when unknown.
    first_us: i64,
}

#[derive(Debug)]
struct Active {
    file: Arc<File>,
    segment: Segment,
}

#[derive(Debug)]
struct State {
    sealed: VecDeque<Segment>,
    active: Option<Active>,
    next_seq: u64,
    total_bytes: u64,
}

/// What happened to the records given to [`Spool::append`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub(crate) spooled: u64,
    /// Records refused because the spool is at its byte cap.
    pub(crate) dropped: u64,
}

#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    state: Mutex<State>,
    /// Mirrors `State::total_bytes` for lock-free metrics.
    bytes: AtomicU64,
    /// Time (µs) of the oldest spooled record; `i64::MAX` when empty or unknown.
    oldest_us: AtomicI64,
}

impl Spool {
    /// Opens the spool in `dir`, taking over segments a previous run left.
    /// Returns the spool and how many records those segments hold.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<(Self, u64)> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((seq, entry.path()));
        }
        found.sort();
        let mut sealed = VecDeque::with_capacity(found.len());
        let mut total_bytes = 0;
        let mut records = 0;
        for (_, path) in &found {
            let data = std::fs::read(path)?;
            let lines = data.iter().filter(|b| **b == b'\n').count() as u64;
            total_bytes += data.len() as u64;
            records += lines;
            sealed.push_back(Segment {
                path: path.clone(),
                bytes: data.len() as u64,
                records: lines,
                first_us: first_time_us(&data).unwrap_or(i64::MAX),
            });
        }
        let oldest = sealed.front().map_or(i64::MAX, |s| s.first_us);
        let next_seq = found.last().map_or(0, |(seq, _)| seq + 1);
        let spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            segment_max: (max_bytes / 16).clamp(64 * 1024, 8 * 1024 * 1024),
            state: Mutex::new(State {
                sealed,
                active: None,
                next_seq,
                total_bytes,
            }),
            bytes: AtomicU64::new(total_bytes),
            oldest_us: AtomicI64::new(oldest),
        };
        Ok((spool, records))
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn oldest_us(&self) -> Option<i64> {
        Some(self.oldest_us.load(Ordering::Relaxed)).filter(|t| *t != i64::MAX)
    }

    pub(crate) fn is_empty(&self) -> bool {
        let s = self.state.lock();
        s.sealed.is_empty() && s.active.as_ref().is_none_or(|a| a.segment.records == 0)
    }

    /// Appends records, dropping those that would take the spool past its
    /// cap. With `sync`, returns only once the data is on disk.
    ///
    /// The lock covers only the `write` calls; `fsync` runs after it, so a
    /// caller on the request path is never held up by another's fsync.
    pub(crate) fn append(&self, records: &[AuditRecord], sync: bool) -> io::Result<Appended> {
        let mut result = Appended::default();
        let mut to_sync: Vec<Arc<File>> = Vec::new();
        {
            let mut s = self.state.lock();
            for record in records {
                let mut line = match serde_json::to_vec(record) {
                    Ok(line) => line,
                    Err(e) => {
                        tracing::error!(error = %e, "audit record cannot be serialised; dropped");
                        result.dropped += 1;
                        continue;
                    }
                };
                line.push(b'\n');
                let len = line.len() as u64;
                if s.total_bytes + len > self.max_bytes {
                    result.dropped += 1;
                    continue;
                }
                let rotate = s.active.as_ref().is_none_or(|a| {
                    a.segment.bytes > 0 && a.segment.bytes + len > self.segment_max
                });
                if rotate {
                    self.seal(&mut s);
                    let path = self.dir.join(format!("{PREFIX}{:020}{SUFFIX}", s.next_seq));
                    s.next_seq += 1;
                    let file = OpenOptions::new()
                        .create_new(true)
                        .append(true)
                        .open(&path)?;
                    // The new name must survive a crash too.
                    if let Ok(dir) = File::open(&self.dir) {
                        let _ = dir.sync_all();
                    }
                    s.active = Some(Active {
                        file: Arc::new(file),
                        segment: Segment {
                            path,
                            bytes: 0,
                            records: 0,
                            first_us: record.time.timestamp_micros(),
                        },
                    });
                }
                let Some(active) = s.active.as_mut() else {
                    continue;
                };
                (&*active.file).write_all(&line)?;
                active.segment.bytes += len;
                active.segment.records += 1;
                if sync && !to_sync.iter().any(|f| Arc::ptr_eq(f, &active.file)) {
                    to_sync.push(active.file.clone());
                }
                s.total_bytes += len;
                result.spooled += 1;
            }
            self.publish(&s);
        }
        for file in to_sync {
            file.sync_data()?;
        }
        Ok(result)
    }

    /// Makes sure everything appended so far is on disk.
    pub(crate) fn sync(&self) -> io::Result<()> {
        let file = self.state.lock().active.as_ref().map(|a| a.file.clone());
        match file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// Updates the lock-free mirrors of the state.
    fn publish(&self, s: &State) {
        self.bytes.store(s.total_bytes, Ordering::Relaxed);
        let oldest = s
            .sealed
            .front()
            .or(s
                .active
                .as_ref()
                .map(|a| &a.segment)
                .filter(|a| a.records > 0))
            .map_or(i64::MAX, |seg| seg.first_us);
        self.oldest_us.store(oldest, Ordering::Relaxed);
    }

    fn seal(&self, s: &mut State) {
        if let Some(active) = s.active.take() {
            // Already written with `write`; make it durable before replay.
            let _ = active.file.sync_data();
            if active.segment.records > 0 {
                s.sealed.push_back(active.segment);
            } else {
                let _ = std::fs::remove_file(&active.segment.path);
            }
        }
    }

    /// The oldest segment to replay, sealing the active one when nothing
    /// older is left.
    pub(crate) fn oldest(&self) -> Option<Segment> {
        let mut s = self.state.lock();
        if s.sealed.is_empty() {
            self.seal(&mut s);
        }
        s.sealed.front().cloned()
    }

    /// Deletes a replayed segment (the one [`Spool::oldest`] returned).
    pub(crate) fn remove(&self, segment: &Segment) -> io::Result<()> {
        std::fs::remove_file(&segment.path).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })?;
        let mut s = self.state.lock();
        if s.sealed.front().is_some_and(|f| f.path == segment.path) {
            s.sealed.pop_front();
            s.total_bytes = s.total_bytes.saturating_sub(segment.bytes);
        }
        self.publish(&s);
        Ok(())
    }
}

/// Reads a segment: the records of its parseable lines, and how many lines
/// were not (a torn last line after a crash, or damage).
pub(crate) fn read_segment(path: &Path) -> io::Result<(Vec<AuditRecord>, u64)> {
    let data = std::fs::read(path)?;
    let mut records = Vec::new();
    let mut bad = 0;
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<AuditRecord>(line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((records, bad))
}

fn first_time_us(data: &[u8]) -> Option<i64> {
    let line = data.split(|b| *b == b'\n').next()?;
    serde_json::from_slice::<AuditRecord>(line)
        .ok()
        .map(|r| r.time.timestamp_micros())
}
