//! The `per_session` pool of a stdio upstream: one process per downstream
//! session, for servers that keep state per client.
//!
//! Each session's process is a full [`Upstream`] of its own (supervised,
//! restarted with backoff after a crash, health-checked, killed by process
//! group), started on the session's first call and stopped when the session
//! ends, when it has been idle for `idle_timeout`, or at shutdown. The
//! upstream's own connection, the *template*, keeps serving discovery and
//! pings: the catalog does not depend on which sessions happen to exist, and
//! a client sees the tool list before its first call.
//!
//! Because a session's process talks to that session alone, its server→client
//! requests and notifications (logs, `resources/updated`, `list_changed`)
//! belong to that session: its events carry the session id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_config::{PoolPolicy, TransportConfig, UpstreamConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Backoff, CallError, Upstream, UpstreamEvent};

/// The session processes of one upstream.
#[derive(Debug)]
pub(crate) struct Pool {
    name: Arc<str>,
    /// What each session process runs: the upstream's config with the
    /// shared policy, so an instance never builds a pool of its own.
    config: UpstreamConfig,
    events: mpsc::Sender<UpstreamEvent>,
    backoff: Backoff,
    max_instances: usize,
    idle_timeout: Duration,
    /// At most `max_instances` entries: a new session past it is refused.
    instances: parking_lot::Mutex<HashMap<Arc<str>, Arc<Instance>>>,
    /// Restarts of processes whose session has ended, so the upstream's
    /// restart count never goes back down.
    ended_restarts: AtomicU64,
    /// The owning upstream's tracker and shutdown token: stops and the idle
    /// reaper run there, so the upstream's shutdown waits for them.
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct Instance {
    upstream: Upstream,
    last_used: parking_lot::Mutex<Instant>,
    /// Calls being served; an instance with calls in flight is never idle.
    in_flight: AtomicUsize,
}

/// Keeps a session process counted as busy while one call uses it.
#[derive(Debug)]
pub(crate) struct Lease {
    instance: Arc<Instance>,
}

impl Lease {
    pub(crate) fn upstream(&self) -> &Upstream {
        &self.instance.upstream
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self.instance.last_used.lock() = Instant::now();
        self.instance.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// Returns a pool when `config` asks for one (a stdio upstream with
    /// `pool = "per_session"`).
    pub(crate) fn for_config(
        config: &UpstreamConfig,
        events: &mpsc::Sender<UpstreamEvent>,
        backoff: Backoff,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Option<Arc<Self>> {
        let TransportConfig::Stdio(stdio) = &config.transport else {
            return None;
        };
        let PoolPolicy::PerSession {
            max_instances,
            idle_timeout,
        } = stdio.pool
        else {
            return None;
        };
        let mut instance_config = config.clone();
        if let TransportConfig::Stdio(s) = &mut instance_config.transport {
            s.pool = PoolPolicy::Shared;
        }
        let pool = Arc::new(Self {
            name: Arc::from(config.name.as_str()),
            config: instance_config,
            events: events.clone(),
            backoff,
            max_instances,
            idle_timeout,
            instances: parking_lot::Mutex::new(HashMap::new()),
            ended_restarts: AtomicU64::new(0),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
        });
        tracker.spawn(reap_idle(pool.clone()));
        Some(pool)
    }

    /// Returns `session`'s process, starting it on the session's first call.
    pub(crate) fn lease(&self, session: &Arc<str>) -> Result<Lease, CallError> {
        let mut instances = self.instances.lock();
        // Checked under the lock: shutdown drains the map under it too, so
        // no process can start after the drain.
        if self.shutdown.is_cancelled() {
            return Err(CallError::Unavailable {
                upstream: self.name.clone(),
                reason: "stopped".into(),
            });
        }
        let instance = match instances.get(session) {
            Some(i) => i.clone(),
            None => {
                if instances.len() >= self.max_instances {
                    return Err(CallError::PoolFull {
                        upstream: self.name.clone(),
                        max_instances: self.max_instances,
                    });
                }
                tracing::debug!(upstream = %self.name, "starting a per-session process");
                let upstream = Upstream::start_instance(
                    self.config.clone(),
                    self.events.clone(),
                    self.backoff,
                    session.clone(),
                );
                let instance = Arc::new(Instance {
                    upstream,
                    last_used: parking_lot::Mutex::new(Instant::now()),
                    in_flight: AtomicUsize::new(0),
                });
                instances.insert(session.clone(), instance.clone());
                instance
            }
        };
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Lease { instance })
    }

    /// Whether `session` has a process now.
    pub(crate) fn contains(&self, session: &str) -> bool {
        self.instances.lock().contains_key(session)
    }

    /// Stops `session`'s process, if any, in the background: the caller (a
    /// DELETE, the session reaper) does not wait for the grace periods.
    pub(crate) fn end_session(&self, session: &str) {
        let instance = self.remove(|k, _| &**k == session).pop();
        if let Some(instance) = instance {
            self.stop_in_background(instance);
        }
    }

    /// Takes the instances `which` selects out of the map, moving their
    /// restart counts to `ended_restarts` under the same lock, so that
    /// [`Pool::restarts`] never sees a count go down.
    fn remove(&self, which: impl Fn(&Arc<str>, &Instance) -> bool) -> Vec<Arc<Instance>> {
        let mut instances = self.instances.lock();
        let keys: Vec<Arc<str>> = instances
            .iter()
            .filter(|(k, i)| which(k, i))
            .map(|(k, _)| k.clone())
            .collect();
        let taken: Vec<Arc<Instance>> = keys.iter().filter_map(|k| instances.remove(k)).collect();
        let restarts: u64 = taken
            .iter()
            .map(|i| i.upstream.health_stats().restarts)
            .sum();
        self.ended_restarts.fetch_add(restarts, Ordering::Relaxed);
        taken
    }

    /// How many session processes run (or are being restarted).
    pub(crate) fn len(&self) -> usize {
        self.instances.lock().len()
    }

    /// Restarts of every session process, past and present.
    pub(crate) fn restarts(&self) -> u64 {
        let instances = self.instances.lock();
        let live: u64 = instances
            .values()
            .map(|i| i.upstream.health_stats().restarts)
            .sum();
        self.ended_restarts.load(Ordering::Relaxed) + live
    }

    /// Stops every session process and waits for them. Called by the
    /// upstream's shutdown after its token fired, so none starts afterwards.
    pub(crate) async fn shutdown(&self) {
        let all = self.remove(|_, _| true);
        futures::future::join_all(all.iter().map(|i| i.upstream.shutdown())).await;
    }

    fn stop_in_background(&self, instance: Arc<Instance>) {
        self.tracker.spawn(async move {
            instance.upstream.shutdown().await;
        });
    }

    /// Removes the instances idle for `idle_timeout` (no call in flight).
    fn take_idle(&self) -> Vec<Arc<Instance>> {
        self.remove(|_, i| {
            i.in_flight.load(Ordering::Relaxed) == 0
                && i.last_used.lock().elapsed() >= self.idle_timeout
        })
    }
}

/// Stops session processes nobody used for `idle_timeout`: a client that
/// vanished without ending its session must not hold a process until the
/// session itself expires.
async fn reap_idle(pool: Arc<Pool>) {
    let period = (pool.idle_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = pool.shutdown.cancelled() => return,
        }
        for instance in pool.take_idle() {
            tracing::info!(upstream = %pool.name, idle_for_s = pool.idle_timeout.as_secs(), "stopping an idle per-session process");
            pool.stop_in_background(instance);
        }
    }
}
