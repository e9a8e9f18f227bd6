//! `[cache]`: where the gateway keeps the answers it may reuse. Memory is
//! per process; Redis lets replicas share answers (and stale fallbacks), so
//! a read cached by one replica is served by all of them.

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::load::Validator;
use crate::model::Secret;
use crate::raw::RawBytes;

/// `[cache]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCacheBackend {
    pub(crate) backend: Option<Spanned<String>>,
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) key_prefix: Option<Spanned<String>>,
    pub(crate) max_entry_bytes: Option<Spanned<RawBytes>>,
}

/// The response cache the gateway uses.
#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    pub backend: CacheBackend,
}

/// A closed set: each backend is one implementation in the gateway.
#[derive(Debug, Clone, Default)]
pub enum CacheBackend {
    /// In-process, bounded by bytes; nothing is shared between replicas.
    #[default]
    Memory,
    Redis(RedisCacheConfig),
}

#[derive(Debug, Clone)]
pub struct RedisCacheConfig {
    /// `redis://[user:password@]host:port/db` or `redis+unix:///path`; a
    /// secret because it may carry the password.
    pub url: Secret,
    /// Put before every key, so several gateways (or other programs) can
    /// share one Redis database without colliding.
    pub key_prefix: String,
    /// Answers larger than this are not cached: one huge answer must not
    /// evict many small ones or slow every replica that reads it.
    pub max_entry_bytes: usize,
}

pub(crate) const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub(crate) const DEFAULT_KEY_PREFIX: &str = "switchboard:";
pub(crate) const DEFAULT_MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// Keys of longer prefixes are wasted bytes on every entry.
const MAX_KEY_PREFIX: usize = 128;
/// The largest answer an upstream may send by default is 16 MiB; an entry
/// beyond that could never be stored.
const MAX_ENTRY_LIMIT: u64 = 64 * 1024 * 1024;

/// `[cache]`. `REDIS_URL` in the environment replaces `url`, the convention
/// of hosting platforms that provision the database.
pub(crate) fn cache(v: &Validator<'_>, c: RawCacheBackend) -> Result<CacheConfig, ConfigError> {
    let redis = match &c.backend {
        None => false,
        Some(b) => match b.get_ref().as_str() {
            "memory" => false,
            "redis" => true,
            other => {
                return Err(v.err(
                    Some(b.span().start),
                    "cache.backend",
                    format!("{other:?} is not a cache backend; use \"memory\" or \"redis\""),
                ))
            }
        },
    };
    if !redis {
        let stray = [
            c.url.as_ref().map(|s| ("cache.url", s.span().start)),
            c.key_prefix
                .as_ref()
                .map(|s| ("cache.key_prefix", s.span().start)),
            c.max_entry_bytes
                .as_ref()
                .map(|s| ("cache.max_entry_bytes", s.span().start)),
        ];
        if let Some((field, at)) = stray.into_iter().flatten().next() {
            return Err(v.err(
                Some(at),
                field,
                "applies to backend = \"redis\" only; set it or remove this key",
            ));
        }
        return Ok(CacheConfig::default());
    }
    let (url, at, field) = match (v.env("REDIS_URL")).filter(|u| !u.is_empty()) {
        Some(url) => (url, None, "REDIS_URL"),
        None => match &c.url {
            None => (DEFAULT_REDIS_URL.to_owned(), None, "cache.url"),
            Some(u) => (
                v.interp(u.span().start, "cache.url", u.get_ref())?,
                Some(u.span().start),
                "cache.url",
            ),
        },
    };
    let known = ["redis://", "redis+unix://", "unix://"];
    if !known.iter().any(|k| url.starts_with(k)) {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        return Err(v.err(
            at,
            field,
            format!("scheme {scheme:?} is not supported; use redis://HOST:PORT/DB or redis+unix:///PATH"),
        ));
    }
    let key_prefix = match &c.key_prefix {
        None => DEFAULT_KEY_PREFIX.to_owned(),
        Some(p) => {
            let s = p.get_ref();
            if s.is_empty() || s.len() > MAX_KEY_PREFIX || s.chars().any(char::is_control) {
                return Err(v.err(
                    Some(p.span().start),
                    "cache.key_prefix",
                    format!(
                        "must be 1 to {MAX_KEY_PREFIX} printable characters, e.g. \"switchboard:\""
                    ),
                ));
            }
            s.clone()
        }
    };
    let max_entry_bytes = match &c.max_entry_bytes {
        None => DEFAULT_MAX_ENTRY_BYTES,
        Some(b) => {
            let at = Some(b.span().start);
            let n = match b.get_ref() {
                RawBytes::Number(n) => *n,
                RawBytes::Text(t) => t
                    .trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| b.as_u64())
                    .map_err(|_| {
                        v.err(
                            at,
                            "cache.max_entry_bytes",
                            format!("{t:?} is not a byte size; write e.g. \"1 MiB\", \"512KB\" or a number of bytes"),
                        )
                    })?,
            };
            if !(1024..=MAX_ENTRY_LIMIT).contains(&n) {
                return Err(v.err(
                    at,
                    "cache.max_entry_bytes",
                    "must be between 1 KiB and 64 MiB",
                ));
            }
            usize::try_from(n).map_err(|_| v.err(at, "cache.max_entry_bytes", "is too large"))?
        }
    };
    Ok(CacheConfig {
        backend: CacheBackend::Redis(RedisCacheConfig {
            url: Secret::new(url),
            key_prefix,
            max_entry_bytes,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_with_env;

    fn check(text: &str) -> Result<CacheConfig, ConfigError> {
        parse_with_env(text, &|k| (k == "TOKEN").then(|| "t0k".to_owned())).map(|c| c.cache)
    }

    fn redis(c: CacheConfig) -> RedisCacheConfig {
        match c.backend {
            CacheBackend::Redis(r) => r,
            CacheBackend::Memory => panic!("expected the redis backend"),
        }
    }

    #[test]
    fn no_section_is_the_memory_cache() {
        assert!(matches!(check("").unwrap().backend, CacheBackend::Memory));
        assert!(matches!(
            check("[cache]\nbackend = \"memory\"").unwrap().backend,
            CacheBackend::Memory
        ));
    }

    #[test]
    fn redis_defaults_are_a_local_server_and_one_mib_entries() {
        let r = redis(check("[cache]\nbackend = \"redis\"").unwrap());
        assert_eq!(r.url.expose(), DEFAULT_REDIS_URL);
        assert_eq!(r.key_prefix, "switchboard:");
        assert_eq!(r.max_entry_bytes, 1024 * 1024);
    }

    #[test]
    fn redis_keys_parse_with_units_and_interpolation() {
        let r = redis(
            check("[cache]\nbackend = \"redis\"\nurl = \"redis://:${env:TOKEN}@10.0.0.5:6379/2\"\nkey_prefix = \"sb-prod:\"\nmax_entry_bytes = \"256 KiB\"")
                .unwrap(),
        );
        assert_eq!(r.url.expose(), "redis://:t0k@10.0.0.5:6379/2");
        assert!(
            !format!("{r:?}").contains("t0k"),
            "the url leaks into Debug"
        );
        assert_eq!(r.key_prefix, "sb-prod:");
        assert_eq!(r.max_entry_bytes, 256 * 1024);
        let r = redis(check("[cache]\nbackend = \"redis\"\nmax_entry_bytes = 4096").unwrap());
        assert_eq!(r.max_entry_bytes, 4096);
    }

    #[test]
    fn redis_url_in_the_environment_overrides_the_file() {
        let env = |k: &str| (k == "REDIS_URL").then(|| "redis://cache.internal:6379/1".to_owned());
        let c = parse_with_env(
            "[cache]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1/0\"",
            &env,
        )
        .unwrap();
        assert_eq!(redis(c.cache).url.expose(), "redis://cache.internal:6379/1");
        // Without `backend = "redis"` the variable does not switch backends.
        let c = parse_with_env("", &env).unwrap();
        assert!(matches!(c.cache.backend, CacheBackend::Memory));
        let env = |k: &str| (k == "REDIS_URL").then(|| "http://x".to_owned());
        let msg = parse_with_env("[cache]\nbackend = \"redis\"", &env)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("REDIS_URL") && msg.contains("\"http\""),
            "{msg}"
        );
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[cache]\nbackend = \"memcached\"",
                &["test.toml:2", "cache.backend", "\"redis\""],
            ),
            (
                "[cache]\nbackend = \"redis\"\nurl = \"http://x/\"",
                &["test.toml:3", "cache.url", "\"http\"", "redis://"],
            ),
            (
                "[cache]\nbackend = \"redis\"\nurl = \"${env:MISSING}\"",
                &["test.toml:3", "cache.url", "MISSING is not set"],
            ),
            (
                "[cache]\nbackend = \"redis\"\nkey_prefix = \"\"",
                &["test.toml:3", "cache.key_prefix", "printable"],
            ),
            (
                "[cache]\nbackend = \"redis\"\nmax_entry_bytes = \"lots\"",
                &["test.toml:3", "cache.max_entry_bytes", "not a byte size"],
            ),
            (
                "[cache]\nbackend = \"redis\"\nmax_entry_bytes = 10",
                &["test.toml:3", "cache.max_entry_bytes", "1 KiB"],
            ),
            (
                "[cache]\nurl = \"redis://x/0\"",
                &["test.toml:2", "cache.url", "redis\" only"],
            ),
            (
                "[cache]\nbackend = \"redis\"\nttl = \"5s\"",
                &["unknown field", "ttl"],
            ),
        ];
        for (text, needles) in cases {
            let msg = check(text).unwrap_err().to_string();
            for n in *needles {
                assert!(msg.contains(n), "{text:?}: {msg:?} lacks {n:?}");
            }
        }
    }
}
