//! The shared response cache: entries live in Redis, so an answer cached by
//! one replica is served by every replica, and so is the stale fallback
//! while an upstream is down.
//!
//! Redis is an optimisation, never a dependency of a request: every call is
//! bounded by [`OP_TIMEOUT`], and an error, a timeout, a missing connection
//! or a value this module did not write is a miss (or a skipped put). The
//! connection is made in the background and re-made by the
//! `ConnectionManager`, so a gateway starts and serves while Redis is down.
//!
//! Each value is a small versioned JSON envelope holding the answer and its
//! freshness TTL; the Redis key expires later, after the stale window. An
//! entry's age is read from the key's remaining expiry (`PTTL`), so it counts
//! on the Redis server's clock alone and replicas with skewed clocks agree
//! on what is fresh.

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_config::{CacheBackend, CacheConfig, RedisCacheConfig};
use switchboard_protocol::RawValue;
use tokio::sync::watch;

use crate::cache::{Cached, MemoryCache, ResponseCache, STALE_WINDOW};

/// The longest a request waits on Redis for one command (or for a
/// connection being made): a lookup in a healthy Redis takes a millisecond.
const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// Bound on making the first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Between attempts to make the first connection while Redis is unreachable.
const CONNECT_INTERVAL: Duration = Duration::from_secs(1);
/// Redis errors are logged at most once per this interval; the others are
/// counted and reported with the next line.
const LOG_INTERVAL: Duration = Duration::from_secs(30);
/// The envelope format; a value of another version is a miss.
const ENVELOPE_VERSION: u8 = 1;
/// Room for the envelope around the answer.
const ENVELOPE_OVERHEAD: usize = 128;

/// Why the cache cannot be set up. Only a malformed URL stops the start; an
/// unreachable server does not.
#[derive(Debug, thiserror::Error)]
#[error("cache.url is not a usable Redis URL ({0}); write redis://HOST:PORT/DB")]
pub struct CacheSetupError(#[source] redis::RedisError);

/// The cache `[cache]` asks for; `memory_bytes` bounds the in-process one.
pub(crate) fn build(
    config: &CacheConfig,
    memory_bytes: u64,
) -> Result<Arc<dyn ResponseCache>, CacheSetupError> {
    Ok(match &config.backend {
        CacheBackend::Memory => Arc::new(MemoryCache::new(memory_bytes)),
        CacheBackend::Redis(r) => Arc::new(RedisCache::new(r)?),
    })
}

pub(crate) struct RedisCache {
    client: redis::Client,
    /// The live connection once made; operations wait on it for at most
    /// [`OP_TIMEOUT`].
    conn: watch::Receiver<Option<ConnectionManager>>,
    link: Arc<Link>,
    prefix: String,
    max_entry_bytes: usize,
}

impl std::fmt::Debug for RedisCache {
    // The client holds the URL, which may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .finish_non_exhaustive()
    }
}

/// State shared with the background connect task.
struct Link {
    tx: watch::Sender<Option<ConnectionManager>>,
    attempt: Mutex<Attempt>,
    errors: ErrorLog,
}

#[derive(Default)]
struct Attempt {
    running: bool,
    last: Option<Instant>,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u8,
    ttl_ms: u64,
    value: &'a RawValue,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u8,
    ttl_ms: u64,
    value: Box<RawValue>,
}

impl RedisCache {
    /// Starts connecting in the background (when called inside a Tokio
    /// runtime); the cache answers misses until the connection is made.
    pub(crate) fn new(config: &RedisCacheConfig) -> Result<Self, CacheSetupError> {
        let client = redis::Client::open(config.url.expose()).map_err(CacheSetupError)?;
        let (tx, conn) = watch::channel(None);
        let cache = Self {
            client,
            conn,
            link: Arc::new(Link {
                tx,
                attempt: Mutex::new(Attempt::default()),
                errors: ErrorLog::new(),
            }),
            prefix: config.key_prefix.clone(),
            max_entry_bytes: config.max_entry_bytes,
        };
        cache.connect_in_background();
        Ok(cache)
    }

    /// Redis errors and timeouts seen so far.
    #[cfg(test)]
    pub(crate) fn errors(&self) -> u64 {
        self.link.errors.count.load(Ordering::Relaxed)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn connect_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut attempt = self.link.attempt.lock();
            let recent = attempt.last.is_some_and(|t| t.elapsed() < CONNECT_INTERVAL);
            if attempt.running || recent {
                return;
            }
            attempt.running = true;
            attempt.last = Some(Instant::now());
        }
        let client = self.client.clone();
        let link = self.link.clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            // One attempt each time, no backoff sleeps inside a call: this
            // module paces the first connection (CONNECT_INTERVAL), and once
            // connected the manager reconnects when a command fails.
            .set_number_of_retries(0)
            .set_max_delay(1000);
        runtime.spawn(async move {
            let made = tokio::time::timeout(
                CONNECT_TIMEOUT,
                ConnectionManager::new_with_config(client, config),
            )
            .await;
            // `running` is cleared before waiters are woken, so a waiter
            // that saw it set is sure to be woken.
            link.attempt.lock().running = false;
            match made {
                Ok(Ok(manager)) => {
                    tracing::info!("connected to the redis response cache");
                    link.tx.send_replace(Some(manager));
                }
                Ok(Err(e)) => {
                    link.errors.record("connect", &e);
                    link.tx.send_modify(|_| ());
                }
                Err(_) => {
                    link.errors.record("connect", &"timed out");
                    link.tx.send_modify(|_| ());
                }
            }
        });
    }

    /// The connection, waiting at most [`OP_TIMEOUT`] for one being made.
    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(m) = self.conn.borrow().as_ref() {
            return Some(m.clone());
        }
        self.connect_in_background();
        // Wait for the attempt under way to end, whichever way it ends.
        let mut rx = self.conn.clone();
        if let Some(m) = rx.borrow_and_update().as_ref() {
            return Some(m.clone());
        }
        if !self.link.attempt.lock().running {
            return None;
        }
        match tokio::time::timeout(OP_TIMEOUT, rx.changed()).await {
            Ok(Ok(())) => rx.borrow().clone(),
            _ => None,
        }
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(OP_TIMEOUT, call).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.link.errors.record(op, &e);
                None
            }
            Err(_) => {
                self.link.errors.record(op, &"timed out");
                None
            }
        }
    }

    /// An entry from what Redis holds; anything this module did not write
    /// (another version, another program, corruption) is `None`.
    fn decode(&self, bytes: &[u8], pttl_ms: i64) -> Option<Cached> {
        if bytes.len() > self.max_entry_bytes.saturating_add(ENVELOPE_OVERHEAD) {
            return None;
        }
        let e: EnvelopeIn = serde_json::from_slice(bytes).ok()?;
        if e.v != ENVELOPE_VERSION {
            return None;
        }
        // -1 (no expiry) or -2 (gone): not an entry of ours.
        let remaining = Duration::from_millis(u64::try_from(pttl_ms).ok()?);
        let ttl = Duration::from_millis(e.ttl_ms);
        let age = (ttl + STALE_WINDOW).saturating_sub(remaining);
        Some(Cached::aged(e.value, ttl, age))
    }
}

#[async_trait]
impl ResponseCache for RedisCache {
    async fn get(&self, key: &str) -> Option<Cached> {
        let mut conn = self.connection().await?;
        let key = self.key(key);
        let mut pipe = redis::pipe();
        pipe.atomic().get(&key).pttl(&key);
        let (bytes, pttl): (Option<Vec<u8>>, i64) =
            self.bounded("get", pipe.query_async(&mut conn)).await?;
        self.decode(&bytes?, pttl)
    }

    async fn put(&self, key: String, value: Cached) {
        let answer = &value.value;
        if answer.get().len() > self.max_entry_bytes {
            return;
        }
        let ttl = value.ttl();
        let keep = (ttl + STALE_WINDOW).saturating_sub(value.age());
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        if keep_ms == 0 {
            return;
        }
        let envelope = EnvelopeOut {
            v: ENVELOPE_VERSION,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            value: answer,
        };
        let Ok(bytes) = serde_json::to_vec(&envelope) else {
            return;
        };
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&key)).arg(bytes).arg("PX").arg(keep_ms);
        let _: Option<()> = self.bounded("put", cmd.query_async(&mut conn)).await;
    }

    async fn invalidate(&self, key: &str) {
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        let _: Option<()> = self.bounded("invalidate", cmd.query_async(&mut conn)).await;
    }
}

/// Logs Redis failures at most once per [`LOG_INTERVAL`], so a Redis outage
/// under load is a few log lines, not one per request.
struct ErrorLog {
    count: AtomicU64,
    /// Errors at the last line written.
    logged_count: AtomicU64,
    /// Milliseconds after `since` of the last line; `u64::MAX` before any.
    logged_at_ms: AtomicU64,
    since: Instant,
}

impl ErrorLog {
    fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            logged_count: AtomicU64::new(0),
            logged_at_ms: AtomicU64::new(u64::MAX),
            since: Instant::now(),
        }
    }

    fn record(&self, op: &'static str, error: &dyn std::fmt::Display) {
        let total = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.logged_at_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX
            || now.saturating_sub(last) >= u64::try_from(LOG_INTERVAL.as_millis()).unwrap_or(0);
        if !due
            || self
                .logged_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let since_last = total - self.logged_count.swap(total, Ordering::Relaxed);
        tracing::warn!(
            op,
            %error,
            errors = since_last,
            "redis response cache unavailable: requests go to upstreams uncached until it answers"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_config::Secret;

    /// The loopback Redis of `scripts/services.sh`; its absence is a
    /// failure, never a skip.
    fn redis_url() -> String {
        std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| {
            panic!("SWITCHBOARD_TEST_REDIS_URL is not set: run `scripts/services.sh start` and export what it prints (scripts/test.sh does)")
        })
    }

    /// A prefix no other test, or earlier run, uses.
    fn prefix(test: &str) -> String {
        format!("sbtest:{test}:{:016x}:", rand::random::<u64>())
    }

    fn config(url: &str, prefix: &str) -> RedisCacheConfig {
        RedisCacheConfig {
            url: Secret::new(url.to_owned()),
            key_prefix: prefix.to_owned(),
            max_entry_bytes: 4096,
        }
    }

    /// A replica whose connection is made (bounded wait).
    async fn replica(prefix: &str) -> RedisCache {
        let c = RedisCache::new(&config(&redis_url(), prefix)).unwrap();
        for _ in 0..200 {
            if c.conn.borrow().is_some() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no connection to {} within 2s", redis_url());
    }

    async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn answer(text: &str) -> Box<RawValue> {
        RawValue::from_string(format!(
            r#"{{"content":[{{"type":"text","text":"{text}"}}]}}"#
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn two_replicas_share_an_entry() {
        let p = prefix("share");
        let (a, b) = (replica(&p).await, replica(&p).await);
        assert!(b.get("k").await.is_none());
        a.put(
            "k".into(),
            Cached::new(&answer("x"), Duration::from_secs(60)),
        )
        .await;
        let e = b.get("k").await.expect("entry put by the other replica");
        assert_eq!(e.value.get(), answer("x").get());
        assert!(e.is_fresh());
        assert_eq!(e.ttl(), Duration::from_secs(60));
        assert_eq!(a.errors() + b.errors(), 0);
    }

    #[tokio::test]
    async fn an_entry_turns_stale_after_its_ttl_and_is_kept_for_the_stale_window() {
        let p = prefix("stale");
        let (a, b) = (replica(&p).await, replica(&p).await);
        a.put(
            "k".into(),
            Cached::new(&answer("x"), Duration::from_millis(200)),
        )
        .await;
        assert!(b.get("k").await.expect("stored").is_fresh());
        let mut stale = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let e = b.get("k").await.expect("kept past its ttl");
            if !e.is_fresh() {
                stale = Some(e);
                break;
            }
        }
        let e = stale.expect("the entry never turned stale");
        assert!(e.age() >= Duration::from_millis(200));
        // The key itself lives on for the stale window.
        let pttl: i64 = redis::cmd("PTTL")
            .arg(format!("{p}k"))
            .query_async(&mut raw(&redis_url()).await)
            .await
            .unwrap();
        assert!(
            pttl > i64::try_from(STALE_WINDOW.as_millis()).unwrap() - 60_000,
            "key expires in {pttl} ms, before the stale window"
        );
    }

    #[tokio::test]
    async fn an_invalidation_on_one_replica_is_seen_by_the_other() {
        let p = prefix("invalidate");
        let (a, b) = (replica(&p).await, replica(&p).await);
        a.put(
            "k".into(),
            Cached::new(&answer("x"), Duration::from_secs(60)),
        )
        .await;
        assert!(b.get("k").await.is_some());
        b.invalidate("k").await;
        assert!(a.get("k").await.is_none());
        assert!(b.get("k").await.is_none());
    }

    #[tokio::test]
    async fn foreign_or_corrupt_values_are_a_miss() {
        let p = prefix("corrupt");
        let c = replica(&p).await;
        let mut conn = raw(&redis_url()).await;
        let good = r#"{"v":1,"ttl_ms":60000,"value":{"content":[]}}"#;
        let values: &[(&str, &[u8])] = &[
            ("garbage", b"\xff\x00not json"),
            ("version", br#"{"v":2,"ttl_ms":60000,"value":{}}"#),
            ("fields", br#"{"value":{}}"#),
            ("no-expiry", good.as_bytes()),
        ];
        for (k, v) in values {
            let _: () = redis::cmd("SET")
                .arg(format!("{p}{k}"))
                .arg(*v)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(c.get(k).await.is_none(), "{k} was served");
        }
        // A key of another type is an error answered as a miss.
        let _: () = redis::cmd("LPUSH")
            .arg(format!("{p}list"))
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(c.get("list").await.is_none());
        // The same envelope with an expiry is served: the cases above fail
        // for the reason they name.
        let _: () = redis::cmd("SET")
            .arg(format!("{p}ok"))
            .arg(good)
            .arg("PX")
            .arg(60_000 + STALE_WINDOW.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(c.get("ok").await.expect("a valid entry").is_fresh());
    }

    #[tokio::test]
    async fn answers_larger_than_max_entry_bytes_are_not_cached() {
        let p = prefix("large");
        let c = replica(&p).await;
        let big = answer(&"a".repeat(5000));
        c.put("big".into(), Cached::new(&big, Duration::from_secs(60)))
            .await;
        assert!(c.get("big").await.is_none());
        c.put(
            "small".into(),
            Cached::new(&answer("a"), Duration::from_secs(60)),
        )
        .await;
        assert!(c.get("small").await.is_some());
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_miss_and_puts_are_dropped() {
        // Nothing listens on port 1; bounded by a generous guard, not timed.
        let c = RedisCache::new(&config("redis://127.0.0.1:1/0", "x:")).unwrap();
        let guard = Duration::from_secs(10);
        for _ in 0..3 {
            tokio::time::timeout(
                guard,
                c.put(
                    "k".into(),
                    Cached::new(&answer("x"), Duration::from_secs(60)),
                ),
            )
            .await
            .expect("put stalled");
            let got = tokio::time::timeout(guard, c.get("k")).await;
            assert!(got.expect("get stalled").is_none());
            tokio::time::timeout(guard, c.invalidate("k"))
                .await
                .expect("invalidate stalled");
        }
        // The connect attempt failed and was counted.
        for _ in 0..1000 {
            if c.errors() > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the failed connection was not counted");
    }

    #[tokio::test]
    async fn a_redis_that_never_answers_is_a_miss_not_a_stall() {
        // Accepts connections and never replies.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
                if open.len() > 16 {
                    break;
                }
            }
        });
        let c = RedisCache::new(&config(&format!("redis://{addr}/0"), "x:")).unwrap();
        let guard = Duration::from_secs(10);
        let got = tokio::time::timeout(guard, c.get("k")).await;
        assert!(got.expect("get stalled").is_none());
        tokio::time::timeout(
            guard,
            c.put(
                "k".into(),
                Cached::new(&answer("x"), Duration::from_secs(60)),
            ),
        )
        .await
        .expect("put stalled");
        held.abort();
    }

    #[test]
    fn a_malformed_url_is_refused_at_start() {
        let e = RedisCache::new(&config("redis://[::1", "x:")).unwrap_err();
        assert!(e.to_string().contains("cache.url"), "{e}");
    }
}
