//! Response cache for answers that are safe to reuse: results of read-only
//! tools and resource reads, opt-in per upstream with a TTL.
//!
//! The cache is a trait so a shared (Redis) implementation can replace the
//! in-process one without touching dispatch. Entries outlive their TTL by a
//! stale window: a stale entry is never served as a hit, only as the last
//! good answer while its upstream is unavailable, and then marked so in
//! `_meta`.

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use switchboard_protocol::RawValue;
use tokio::time::Instant;

/// How long past its TTL an entry is kept as a fallback.
pub(crate) const STALE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Arguments larger than this are not used as cache keys.
const MAX_KEY_BYTES: usize = 64 * 1024;
/// `_meta` key that marks a result served from cache past its TTL.
pub(crate) const STALE_META: &str = "io.switchboard/stale";

/// One cached answer.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) value: Arc<RawValue>,
    stored_at: Instant,
    ttl: Duration,
}

impl Cached {
    pub(crate) fn new(value: &RawValue, ttl: Duration) -> Self {
        Self {
            value: Arc::from(value.to_owned()),
            stored_at: Instant::now(),
            ttl,
        }
    }

    /// An entry stored `age` ago elsewhere (a shared cache), so freshness
    /// and the stale mark count from when it was stored, not when it was read.
    pub(crate) fn aged(value: Box<RawValue>, ttl: Duration, age: Duration) -> Self {
        let now = Instant::now();
        Self {
            value: Arc::from(value),
            stored_at: now.checked_sub(age).unwrap_or(now),
            ttl,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn is_fresh(&self) -> bool {
        self.stored_at.elapsed() < self.ttl
    }

    pub(crate) fn age(&self) -> Duration {
        self.stored_at.elapsed()
    }
}

#[async_trait]
pub(crate) trait ResponseCache: Send + Sync + std::fmt::Debug {
    /// The entry under `key`, fresh or stale.
    async fn get(&self, key: &str) -> Option<Cached>;
    async fn put(&self, key: String, value: Cached);
    async fn invalidate(&self, key: &str);
}

/// The in-process cache: moka, bounded by the bytes it holds.
#[derive(Debug)]
pub(crate) struct MemoryCache {
    inner: moka::future::Cache<String, Cached>,
}

struct ExpireAfterStaleWindow;

impl moka::Expiry<String, Cached> for ExpireAfterStaleWindow {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Cached,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl + STALE_WINDOW)
    }
}

impl MemoryCache {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            inner: moka::future::Cache::builder()
                .weigher(|k: &String, v: &Cached| {
                    u32::try_from(k.len() + v.value.get().len()).unwrap_or(u32::MAX)
                })
                .max_capacity(max_bytes)
                .expire_after(ExpireAfterStaleWindow)
                .build(),
        }
    }
}

#[async_trait]
impl ResponseCache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Cached> {
        self.inner.get(key).await
    }

    async fn put(&self, key: String, value: Cached) {
        self.inner.insert(key, value).await;
    }

    async fn invalidate(&self, key: &str) {
        self.inner.invalidate(key).await;
    }
}

/// The key of a tool call: upstream, tool and the arguments in canonical
/// form (object keys sorted), so `{"a":1,"b":2}` and `{"b":2,"a":1}` share
/// an entry. `None` when the arguments are too large to key on.
pub(crate) fn tool_key(upstream: &str, tool: &str, arguments: Option<&Value>) -> Option<String> {
    let mut key = format!("tool\u{0}{upstream}\u{0}{tool}\u{0}");
    write_canonical(&mut key, arguments.unwrap_or(&Value::Null));
    (key.len() <= MAX_KEY_BYTES).then_some(key)
}

pub(crate) fn resource_key(upstream: &str, uri: &str) -> String {
    format!("resource\u{0}{upstream}\u{0}{uri}")
}

fn write_canonical(out: &mut String, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(*k) {
                    write_canonical(out, inner);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Returns `result` with `_meta["io.switchboard/stale"]` saying how old it
/// is and why it was served instead of a fresh answer.
pub(crate) fn mark_stale(result: &RawValue, age: Duration, reason: &str) -> Box<RawValue> {
    let mut obj: Map<String, Value> = serde_json::from_str(result.get()).unwrap_or_default();
    let meta = obj
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = meta {
        m.insert(
            STALE_META.into(),
            serde_json::json!({
                "ageMs": u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                "reason": reason,
            }),
        );
    }
    switchboard_protocol::to_raw(&obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argument_order_does_not_change_the_key() {
        let a = tool_key(
            "u",
            "t",
            Some(&json!({"b": [1, {"y": 2, "x": 1}], "a": "s"})),
        );
        let b = tool_key(
            "u",
            "t",
            Some(&json!({"a": "s", "b": [1, {"x": 1, "y": 2}]})),
        );
        assert_eq!(a, b);
        assert_ne!(a, tool_key("u", "t", Some(&json!({"a": "s"}))));
        assert_ne!(
            a,
            tool_key(
                "v",
                "t",
                Some(&json!({"a": "s", "b": [1, {"x": 1, "y": 2}]}))
            )
        );
    }

    #[test]
    fn huge_arguments_are_not_keys() {
        assert!(tool_key("u", "t", Some(&json!({"x": "a".repeat(MAX_KEY_BYTES)}))).is_none());
    }

    #[test]
    fn a_stale_mark_keeps_the_result_and_its_meta() {
        let r = RawValue::from_string(r#"{"content":[],"_meta":{"k":1}}"#.into()).unwrap();
        let v: Value =
            serde_json::from_str(mark_stale(&r, Duration::from_millis(1500), "down").get())
                .unwrap();
        assert_eq!(v["_meta"]["k"], 1);
        assert_eq!(v["_meta"][STALE_META]["ageMs"], 1500);
        assert_eq!(v["content"], json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_turns_stale_after_its_ttl_but_stays_as_a_fallback() {
        let c = MemoryCache::new(1 << 20);
        let v = RawValue::from_string("{}".into()).unwrap();
        c.put("k".into(), Cached::new(&v, Duration::from_secs(5)))
            .await;
        assert!(c.get("k").await.unwrap().is_fresh());
        tokio::time::advance(Duration::from_secs(6)).await;
        let e = c.get("k").await.expect("kept past its ttl");
        assert!(!e.is_fresh());
        c.invalidate("k").await;
        assert!(c.get("k").await.is_none());
    }
}
