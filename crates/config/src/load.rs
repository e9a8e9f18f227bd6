//! Where configuration comes from, and the raw → validated conversion.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

use crate::error::ConfigError;
use crate::interpolate::{interpolate, Context};
use crate::model::*;
use crate::raw::{
    RawAudit, RawBytes, RawConfig, RawFilter, RawLimits, RawSize, RawStore, RawUpstream,
};

/// The configuration used when no file is given and `./switchboard.toml` does
/// not exist: the bundled demo upstreams, spawned from this very binary.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../examples/default.toml");

/// Which text to load.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    /// `--config` if given, else `./switchboard.toml` when it exists, else the
    /// embedded default.
    pub fn discover(flag: Option<PathBuf>) -> Self {
        match flag {
            Some(p) => ConfigSource::File(p),
            None if Path::new("switchboard.toml").is_file() => {
                ConfigSource::File(PathBuf::from("switchboard.toml"))
            }
            None => ConfigSource::Embedded,
        }
    }
}

/// Values that replace what the file says (flags and `SWITCHBOARD_*` env).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    /// `METRICS_TOKEN` from the environment, used when the file sets none.
    pub metrics_token: Option<String>,
}

/// Reads and validates a configuration.
///
/// `env` resolves `${env:NAME}`; `self_exe` is what `${self}` becomes.
pub fn load(
    source: &ConfigSource,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    self_exe: &str,
) -> Result<Config, ConfigError> {
    let (text, origin) = match source {
        ConfigSource::File(path) => (
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?,
            path.display().to_string(),
        ),
        ConfigSource::Embedded => (EMBEDDED_DEFAULT.to_owned(), "<embedded default>".to_owned()),
    };
    let ctx = Context { env, self_exe };
    let mut config = parse_with(&text, &origin, &ctx)?;
    if let Some(listen) = overrides.listen {
        config.server.listen = listen;
    }
    if config.server.metrics_token.is_none() {
        config.server.metrics_token = overrides.metrics_token.clone().map(Secret::new);
    }
    Ok(config)
}

/// Validates config text; `${env:}` references read the process environment.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let env = |k: &str| std::env::var(k).ok();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "switchboard".into());
    parse_with(
        text,
        origin,
        &Context {
            env: &env,
            self_exe: &exe,
        },
    )
}

pub(crate) struct Validator<'a> {
    origin: &'a str,
    text: &'a str,
    ctx: &'a Context<'a>,
}

impl Validator<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub(crate) fn err(
        &self,
        at: Option<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line: at.map(|o| self.line(o)),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn duration(
        &self,
        v: &Option<Spanned<String>>,
        field: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => humantime::parse_duration(s.get_ref()).map_err(|e| {
                self.err(
                    Some(s.span().start),
                    field,
                    format!(
                        "{:?} is not a duration ({e}); write e.g. \"30s\", \"5m\" or \"250ms\"",
                        s.get_ref()
                    ),
                )
            }),
        }
    }

    /// An environment variable (overrides such as `REDIS_URL`).
    pub(crate) fn env(&self, name: &str) -> Option<String> {
        (self.ctx.env)(name)
    }

    pub(crate) fn interp(
        &self,
        at: usize,
        field: &str,
        value: &str,
    ) -> Result<String, ConfigError> {
        interpolate(value, self.ctx).map_err(|m| self.err(Some(at), field, m))
    }
}

fn parse_with(text: &str, origin: &str, ctx: &Context<'_>) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let v = Validator { origin, text, ctx };
    let s = raw.server;
    let listen = match &s.listen {
        None => defaults::LISTEN.parse().map_err(|_| v.err(None, "server.listen", "bad default"))?,
        Some(l) => l.get_ref().parse::<SocketAddr>().map_err(|_| {
            v.err(
                Some(l.span().start),
                "server.listen",
                format!("{:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"", l.get_ref()),
            )
        })?,
    };
    let separator = match &s.separator {
        None => defaults::SEPARATOR.to_owned(),
        Some(sep) => {
            let ok = !sep.get_ref().is_empty()
                && sep.get_ref().len() <= 4
                && sep
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(v.err(
                    Some(sep.span().start),
                    "server.separator",
                    "must be 1 to 4 characters from [A-Za-z0-9_.-], the set every common client accepts in tool names",
                ));
            }
            sep.get_ref().clone()
        }
    };
    let positive = |n: Option<u64>, field: &str, default: usize| -> Result<usize, ConfigError> {
        match n {
            None => Ok(default),
            Some(0) => Err(v.err(None, field, "must be greater than 0")),
            Some(n) => usize::try_from(n).map_err(|_| v.err(None, field, "is too large")),
        }
    };
    let server = ServerConfig {
        listen,
        allowed_origins: s.allowed_origins.unwrap_or_default(),
        allowed_hosts: s.allowed_hosts.unwrap_or_default(),
        max_body_bytes: positive(
            s.max_body_bytes,
            "server.max_body_bytes",
            defaults::MAX_BODY_BYTES,
        )?,
        max_sessions: positive(
            s.max_sessions,
            "server.max_sessions",
            defaults::MAX_SESSIONS,
        )?,
        session_idle_timeout: v.duration(
            &s.session_idle_timeout,
            "server.session_idle_timeout",
            defaults::SESSION_IDLE_TIMEOUT,
        )?,
        drain_timeout: v.duration(
            &s.drain_timeout,
            "server.drain_timeout",
            defaults::DRAIN_TIMEOUT,
        )?,
        separator,
        rate_limit_per_minute: s
            .rate_limit_per_minute
            .unwrap_or(defaults::RATE_LIMIT_PER_MINUTE),
        rate_limit_loopback: s.rate_limit_loopback.unwrap_or(false),
        tls: s.tls.as_ref().map(|t| tls(&v, t)).transpose()?,
        request_state_key: s
            .request_state_key
            .as_ref()
            .map(|t| {
                v.interp(t.span().start, "server.request_state_key", t.get_ref())
                    .map(Secret::new)
            })
            .transpose()?,
        metrics_token: s
            .metrics_token
            .as_ref()
            .map(|t| {
                v.interp(t.span().start, "server.metrics_token", t.get_ref())
                    .map(Secret::new)
            })
            .transpose()?,
        response_mode: match s
            .response_mode
            .as_ref()
            .map(|m| (m.get_ref().as_str(), m.span().start))
        {
            None | Some(("auto", _)) => ResponseMode::Auto,
            Some(("sse", _)) => ResponseMode::Sse,
            Some((other, pos)) => {
                return Err(v.err(
                    Some(pos),
                    "server.response_mode",
                    format!("{other:?} is not a response mode; use \"auto\" or \"sse\""),
                ))
            }
        },
    };
    let mut upstreams = Vec::with_capacity(raw.upstreams.len());
    for (i, spanned) in raw.upstreams.into_iter().enumerate() {
        let at = spanned.span().start;
        let u = spanned.into_inner();
        if u.enabled == Some(false) {
            continue;
        }
        let upstream = upstream(&v, i, at, u)?;
        if upstreams
            .iter()
            .any(|o: &UpstreamConfig| o.name == upstream.name)
        {
            return Err(v.err(
                Some(at),
                format!("upstreams[{i}].name"),
                format!(
                    "{:?} is used by another upstream; names must be unique",
                    upstream.name
                ),
            ));
        }
        upstreams.push(upstream);
    }
    let auth = crate::security::auth(&v, raw.auth)?;
    let security = crate::security::security(&v, raw.security)?;
    let store = store(&v, raw.store)?;
    let audit = audit(&v, raw.audit)?;
    let cache = crate::cache::cache(&v, raw.cache)?;
    Ok(Config {
        server,
        upstreams,
        auth,
        security,
        store,
        audit,
        cache,
        origin: origin.to_owned(),
    })
}

/// `[server.tls]`: paths only; reading and checking the PEM files needs a
/// crypto provider, so the gateway does it (and names the file on failure).
fn tls(v: &Validator<'_>, t: &Spanned<crate::raw::RawTls>) -> Result<TlsConfig, ConfigError> {
    let path = |p: &Spanned<String>, field: &str| -> Result<PathBuf, ConfigError> {
        let at = p.span().start;
        let value = v.interp(at, field, p.get_ref())?;
        if value.trim().is_empty() {
            return Err(v.err(Some(at), field, "is empty; give the path of a PEM file"));
        }
        Ok(PathBuf::from(value))
    };
    let t = t.get_ref();
    let interval = v.duration(
        &t.reload_interval,
        "server.tls.reload_interval",
        defaults::TLS_RELOAD_INTERVAL,
    )?;
    Ok(TlsConfig {
        cert: path(&t.cert, "server.tls.cert")?,
        key: path(&t.key, "server.tls.key")?,
        reload_interval: (!interval.is_zero()).then_some(interval),
    })
}

/// `[store]`. `DATABASE_URL` in the environment replaces `url`, the
/// convention of hosting platforms that provision the database.
fn store(v: &Validator<'_>, s: RawStore) -> Result<StoreConfig, ConfigError> {
    let url = match (v.ctx.env)("DATABASE_URL").filter(|u| !u.is_empty()) {
        Some(url) => Some((url, None)),
        None => match &s.url {
            None => None,
            Some(u) => Some((
                v.interp(u.span().start, "store.url", u.get_ref())?,
                Some(u.span().start),
            )),
        },
    };
    let url = match url {
        None => None,
        Some((url, at)) => {
            let field = if at.is_some() {
                "store.url"
            } else {
                "DATABASE_URL"
            };
            let known = ["sqlite:", "postgres://", "postgresql://"];
            if !known.iter().any(|k| url.starts_with(k)) {
                let scheme = url.split_once(':').map_or("", |(s, _)| s);
                return Err(v.err(
                    at,
                    field,
                    format!("scheme {scheme:?} is not supported; use sqlite://PATH or postgres://USER@HOST:PORT/DB"),
                ));
            }
            Some(Secret::new(url))
        }
    };
    let data_dir = match &s.data_dir {
        Some(d) => {
            let dir = v.interp(d.span().start, "store.data_dir", d.get_ref())?;
            if dir.is_empty() {
                return Err(v.err(
                    Some(d.span().start),
                    "store.data_dir",
                    "is empty; give a directory path",
                ));
            }
            PathBuf::from(dir)
        }
        None => default_data_dir(v.ctx.env),
    };
    let max_connections = match &s.max_connections {
        None => defaults::STORE_MAX_CONNECTIONS,
        Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            return Err(v.err(
                Some(n.span().start),
                "store.max_connections",
                "must be between 1 and 1000",
            ))
        }
    };
    Ok(StoreConfig {
        url,
        data_dir,
        max_connections,
    })
}

/// `$XDG_DATA_HOME/switchboard`, else `~/.local/share/switchboard`, else
/// `./switchboard-data`: one place per user, whatever the working directory.
fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join(defaults::DATA_DIR_NAME);
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home)
            .join(".local/share")
            .join(defaults::DATA_DIR_NAME);
    }
    PathBuf::from("switchboard-data")
}

fn audit(v: &Validator<'_>, a: RawAudit) -> Result<AuditConfig, ConfigError> {
    let retention = v.duration(&a.retention, "audit.retention", defaults::AUDIT_RETENTION)?;
    if retention < Duration::from_secs(60) {
        let at = a.retention.as_ref().map(|r| r.span().start);
        return Err(v.err(at, "audit.retention", "must be at least 1m"));
    }
    let flush_interval = v.duration(
        &a.flush_interval,
        "audit.flush_interval",
        defaults::AUDIT_FLUSH_INTERVAL,
    )?;
    if flush_interval.is_zero() || flush_interval > Duration::from_secs(60) {
        let at = a.flush_interval.as_ref().map(|r| r.span().start);
        return Err(v.err(
            at,
            "audit.flush_interval",
            "must be more than 0 and at most 60s",
        ));
    }
    let batch_size = match &a.batch_size {
        None => defaults::AUDIT_BATCH_SIZE,
        Some(n) if (1..=10_000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            return Err(v.err(
                Some(n.span().start),
                "audit.batch_size",
                "must be between 1 and 10000",
            ))
        }
    };
    let spool_max_bytes = match &a.spool_max_bytes {
        None => defaults::AUDIT_SPOOL_MAX_BYTES,
        Some(b) => {
            let at = Some(b.span().start);
            let n = match b.get_ref() {
                RawBytes::Number(n) => *n,
                RawBytes::Text(t) => t.trim().parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(|_| {
                    v.err(at, "audit.spool_max_bytes", format!("{t:?} is not a byte size; write e.g. \"256 MiB\", \"1GB\" or a number of bytes"))
                })?,
            };
            if n < 64 * 1024 {
                return Err(v.err(at, "audit.spool_max_bytes", "must be at least 64 KiB"));
            }
            n
        }
    };
    let redact_fields = match a.redact_fields {
        None => defaults::AUDIT_REDACT_FIELDS
            .iter()
            .map(|f| (*f).to_owned())
            .collect(),
        Some(fields) => {
            if let Some(bad) = fields.iter().find(|f| f.trim().is_empty()) {
                return Err(v.err(
                    None,
                    "audit.redact_fields",
                    format!("{bad:?} is empty; list field names such as \"password\""),
                ));
            }
            fields
        }
    };
    Ok(AuditConfig {
        enabled: a.enabled.unwrap_or(true),
        record_arguments: a.record_arguments.unwrap_or(false),
        redact_fields,
        retention,
        batch_size,
        flush_interval,
        spool_max_bytes,
    })
}

fn upstream(
    v: &Validator<'_>,
    i: usize,
    at: usize,
    mut u: RawUpstream,
) -> Result<UpstreamConfig, ConfigError> {
    let name = u.name.get_ref().clone();
    let name_at = u.name.span().start;
    let field = |f: &str| format!("upstreams[{i}].{f}");
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid_name {
        return Err(v.err(
            Some(name_at),
            field("name"),
            format!(
                "{name:?} is not a valid upstream name; use 1 to 64 characters from [a-z0-9_-]"
            ),
        ));
    }
    let pool = pool(v, &field, at, &u)?;
    let limits = u
        .limits
        .as_ref()
        .map(|l| limits(v, &field("limits"), l.span().start, l.get_ref()))
        .transpose()?;
    if u.command.is_none() {
        let stdio_only = [
            ("pool", u.pool.is_some()),
            ("max_instances", u.max_instances.is_some()),
            ("idle_timeout", u.idle_timeout.is_some()),
            ("limits", u.limits.is_some()),
        ];
        if let Some((key, _)) = stdio_only.iter().find(|(_, set)| *set) {
            return Err(v.err(
                Some(at),
                field(key),
                format!("applies to stdio upstreams (`command`) only; upstream {name:?} is remote"),
            ));
        }
    }
    let transport = match (&u.command, &u.url) {
        (Some(_), Some(_)) => return Err(v.err(Some(at), field("command"), format!("upstream {name:?} has both `command` (stdio) and `url` (HTTP); keep one"))),
        (None, None) => return Err(v.err(Some(at), field("url"), format!("upstream {name:?} needs `command = [\"program\", \"arg\"]` (stdio) or `url = \"http://...\"` (HTTP)"))),
        (Some(command), None) => {
            if u.transport.as_ref().is_some_and(|t| t.get_ref() != "stdio") {
                return Err(v.err(Some(at), field("transport"), "a `command` upstream uses transport \"stdio\"; remove `transport` or use `url`"));
            }
            if !u.headers.is_empty() {
                return Err(v.err(Some(at), field("headers"), "headers apply to HTTP upstreams only; use `env` for a stdio upstream"));
            }
            let mut parts = command.iter().map(|c| v.interp(at, &field("command"), c));
            let program = match parts.next() {
                Some(p) => p?,
                None => return Err(v.err(Some(at), field("command"), "is empty; give the program and its arguments, e.g. [\"uvx\", \"mcp-server-time\"]")),
            };
            let args = parts.collect::<Result<Vec<_>, _>>()?;
            let env = u
                .env
                .iter()
                .map(|(k, val)| {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(v.err(Some(at), field("env"), format!("{k:?} is not a valid environment variable name")));
                    }
                    Ok((k.clone(), Secret::new(v.interp(at, &field(&format!("env.{k}")), val)?)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let cwd = u.cwd.as_deref().map(|c| v.interp(at, &field("cwd"), c).map(PathBuf::from)).transpose()?;
            TransportConfig::Stdio(StdioConfig { program, args, env, cwd, pool, limits })
        }
        (None, Some(url)) => {
            if !u.env.is_empty() || u.cwd.is_some() {
                return Err(v.err(Some(at), field("env"), "env and cwd apply to stdio upstreams only; use `headers` for an HTTP upstream"));
            }
            let url = v.interp(at, &field("url"), url)?;
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                return Err(v.err(Some(at), field("url"), format!("{url:?} is not an http:// or https:// URL")));
            }
            let headers = u
                .headers
                .iter()
                .map(|(k, val)| {
                    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
                        return Err(v.err(Some(at), field("headers"), format!("{k:?} is not a valid HTTP header name")));
                    }
                    let val = v.interp(at, &field(&format!("headers.{k}")), val)?;
                    if val.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                        return Err(v.err(Some(at), field(&format!("headers.{k}")), "header values cannot contain CR, LF or NUL"));
                    }
                    Ok((k.clone(), Secret::new(val)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let oauth = u
                .oauth
                .take()
                .map(|o| crate::security::upstream_oauth(v, at, &field, o))
                .transpose()?;
            if oauth.is_some() && headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                return Err(v.err(Some(at), field("oauth"), "an upstream gets its Authorization from `oauth` or from `headers`, not both"));
            }
            let http = HttpConfig { url, headers, oauth };
            match u.transport.as_ref().map(|t| (t.get_ref().as_str(), t.span().start)) {
                None | Some(("streamable_http", _)) => TransportConfig::StreamableHttp(http),
                Some(("sse", _)) => TransportConfig::Sse(http),
                Some((other, pos)) => return Err(v.err(Some(pos), field("transport"), format!("{other:?} is not a transport; use \"streamable_http\" (default) or \"sse\""))),
            }
        }
    };
    let prefix = match u
        .prefix
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span().start))
    {
        None | Some(("always", _)) => PrefixPolicy::Always,
        Some(("conditional", _)) => PrefixPolicy::Conditional,
        Some(("never", _)) => PrefixPolicy::Never,
        Some((other, pos)) => {
            return Err(v.err(
                Some(pos),
                field("prefix"),
                format!(
                "{other:?} is not a prefix policy; use \"always\", \"conditional\" or \"never\""
            ),
            ))
        }
    };
    let filter = |f: RawFilter, which: &str| {
        NameFilter::new(f.allow, f.deny)
            .map_err(|e| v.err(Some(at), field(which), format!("bad glob: {e}")))
    };
    let max_response_bytes = match u.max_response_bytes {
        None => defaults::MAX_RESPONSE_BYTES,
        Some(n) if n >= 1024 => usize::try_from(n)
            .map_err(|_| v.err(Some(at), field("max_response_bytes"), "is too large"))?,
        Some(_) => {
            return Err(v.err(
                Some(at),
                field("max_response_bytes"),
                "must be at least 1024",
            ))
        }
    };
    let tool_timeouts = u
        .tool_timeouts
        .iter()
        .map(|(glob, d)| {
            let matcher = globset::Glob::new(glob)
                .map_err(|e| {
                    v.err(
                        Some(d.span().start),
                        field("tool_timeouts"),
                        format!("bad glob {glob:?}: {e}"),
                    )
                })?
                .compile_matcher();
            Ok((
                matcher,
                v.duration(
                    &Some(d.clone()),
                    &field(&format!("tool_timeouts.{glob}")),
                    defaults::TIMEOUT,
                )?,
            ))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let count = |n: Option<u64>, f: &str, default: usize| -> Result<usize, ConfigError> {
        match n {
            None => Ok(default),
            Some(0) => Err(v.err(Some(at), field(f), "must be at least 1")),
            Some(n) => usize::try_from(n).map_err(|_| v.err(Some(at), field(f), "is too large")),
        }
    };
    let b = &u.breaker;
    let rate = b.failure_rate.unwrap_or(defaults::BREAKER_FAILURE_RATE);
    if !(rate > 0.0 && rate <= 1.0) {
        return Err(v.err(
            Some(at),
            field("breaker.failure_rate"),
            "must be in (0, 1], e.g. 0.5",
        ));
    }
    let positive_u32 = |n: Option<u32>, f: &str, default: u32| -> Result<u32, ConfigError> {
        match n {
            Some(0) => Err(v.err(Some(at), field(f), "must be at least 1")),
            n => Ok(n.unwrap_or(default)),
        }
    };
    let breaker = BreakerSettings {
        consecutive_failures: positive_u32(
            b.consecutive_failures,
            "breaker.consecutive_failures",
            defaults::BREAKER_CONSECUTIVE_FAILURES,
        )?,
        failure_rate: rate,
        window: v.duration(
            &b.window,
            &field("breaker.window"),
            defaults::BREAKER_WINDOW,
        )?,
        min_calls: positive_u32(
            b.min_calls,
            "breaker.min_calls",
            defaults::BREAKER_MIN_CALLS,
        )?,
        open_base: v.duration(
            &b.open_base,
            &field("breaker.open_base"),
            defaults::BREAKER_OPEN_BASE,
        )?,
        open_max: v.duration(
            &b.open_max,
            &field("breaker.open_max"),
            defaults::BREAKER_OPEN_MAX,
        )?,
        half_open_trials: positive_u32(
            b.half_open_trials,
            "breaker.half_open_trials",
            defaults::BREAKER_HALF_OPEN_TRIALS,
        )?,
    };
    if breaker.open_max < breaker.open_base {
        return Err(v.err(
            Some(at),
            field("breaker.open_max"),
            "must not be shorter than breaker.open_base",
        ));
    }
    let timeout = v.duration(&u.timeout, &field("timeout"), defaults::TIMEOUT)?;
    let max_timeout = v.duration(&u.max_timeout, &field("max_timeout"), defaults::MAX_TIMEOUT)?;
    if max_timeout < timeout {
        return Err(v.err(
            Some(at),
            field("max_timeout"),
            "must not be shorter than timeout",
        ));
    }
    if let Some((g, d)) = tool_timeouts.iter().find(|(_, d)| *d > max_timeout) {
        return Err(v.err(
            Some(at),
            field("tool_timeouts"),
            format!(
                "{:?} = {d:?} is longer than max_timeout ({max_timeout:?}); raise max_timeout",
                g.glob().glob()
            ),
        ));
    }
    let interval = v.duration(
        &u.health_check_interval,
        &field("health_check_interval"),
        defaults::HEALTH_CHECK_INTERVAL,
    )?;
    let cache = match u.cache {
        None => None,
        Some(c) => {
            let ttl = v.duration(&Some(c.ttl.clone()), &field("cache.ttl"), defaults::TIMEOUT)?;
            if ttl.is_zero() {
                return Err(v.err(
                    Some(c.ttl.span().start),
                    field("cache.ttl"),
                    "must be more than 0; remove [cache] to disable caching",
                ));
            }
            if c.tools.is_empty() && !c.resources {
                return Err(v.err(
                    Some(at),
                    field("cache"),
                    "caches nothing: list `tools` globs and/or set `resources = true`",
                ));
            }
            let tools = NameFilter::new(Some(c.tools), vec![])
                .map_err(|e| v.err(Some(at), field("cache.tools"), format!("bad glob: {e}")))?;
            Some(CacheSettings {
                ttl,
                tools,
                resources: c.resources,
            })
        }
    };
    let per_session = matches!(
        &transport,
        TransportConfig::Stdio(StdioConfig {
            pool: PoolPolicy::PerSession { .. },
            ..
        })
    );
    if per_session && cache.is_some() {
        return Err(v.err(
            Some(at),
            field("cache"),
            "a per_session upstream keeps state per client, so one session's answers must not be served to another from the cache; remove `cache` or use pool = \"shared\"",
        ));
    }
    Ok(UpstreamConfig {
        validate_input: u.validate_input.unwrap_or(true),
        cache,
        tool_timeouts,
        max_timeout,
        health_check_interval: (!interval.is_zero()).then_some(interval),
        max_in_flight: count(u.max_in_flight, "max_in_flight", defaults::MAX_IN_FLIGHT)?,
        max_queued: count(u.max_queued, "max_queued", defaults::MAX_QUEUED)?,
        retries: u.retries.unwrap_or(defaults::RETRIES),
        breaker,
        name,
        transport,
        prefix,
        tools: filter(u.tools, "tools")?,
        prompts: filter(u.prompts, "prompts")?,
        resources: filter(u.resources, "resources")?,
        timeout,
        connect_timeout: v.duration(
            &u.connect_timeout,
            &field("connect_timeout"),
            defaults::CONNECT_TIMEOUT,
        )?,
        max_response_bytes,
    })
}

/// Parses with a fixed test environment (`TOKEN` and `LONG` set), for the
/// table tests of every section.
#[cfg(test)]
pub(crate) fn parse_for_test(text: &str) -> Result<Config, ConfigError> {
    let env = |k: &str| match k {
        "TOKEN" => Some("t0k".to_owned()),
        "LONG" => Some("0123456789abcdef0123456789abcdef".to_owned()),
        _ => None,
    };
    parse_with(
        text,
        "test.toml",
        &Context {
            env: &env,
            self_exe: "/usr/bin/switchboard",
        },
    )
}

#[cfg(test)]
pub(crate) fn parse_with_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    parse_with(
        text,
        "test.toml",
        &Context {
            env,
            self_exe: "/usr/bin/switchboard",
        },
    )
}

/// `pool`, `max_instances` and `idle_timeout` of one upstream.
fn pool(
    v: &Validator<'_>,
    field: &dyn Fn(&str) -> String,
    at: usize,
    u: &RawUpstream,
) -> Result<PoolPolicy, ConfigError> {
    match u
        .pool
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span().start))
    {
        None | Some(("shared", _)) => {
            let stray = [
                ("max_instances", u.max_instances.is_some()),
                ("idle_timeout", u.idle_timeout.is_some()),
            ];
            match stray.iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(v.err(
                    Some(at),
                    field(key),
                    "applies to pool = \"per_session\" only; set the pool or remove the key",
                )),
                None => Ok(PoolPolicy::Shared),
            }
        }
        Some(("per_session", _)) => {
            let max_instances = match u.max_instances {
                None => defaults::MAX_INSTANCES,
                Some(0) => {
                    return Err(v.err(Some(at), field("max_instances"), "must be at least 1"))
                }
                Some(n) => usize::try_from(n)
                    .ok()
                    .filter(|n| *n <= 10_000)
                    .ok_or_else(|| {
                        v.err(Some(at), field("max_instances"), "must be at most 10000")
                    })?,
            };
            let idle_timeout = v.duration(
                &u.idle_timeout,
                &field("idle_timeout"),
                defaults::INSTANCE_IDLE_TIMEOUT,
            )?;
            if idle_timeout < Duration::from_secs(1) {
                return Err(v.err(
                    u.idle_timeout.as_ref().map(|d| d.span().start),
                    field("idle_timeout"),
                    "must be at least 1s",
                ));
            }
            Ok(PoolPolicy::PerSession {
                max_instances,
                idle_timeout,
            })
        }
        Some((other, pos)) => Err(v.err(
            Some(pos),
            field("pool"),
            format!("{other:?} is not a pool policy; use \"shared\" (default) or \"per_session\""),
        )),
    }
}

/// Smallest address-space limit accepted: below it nearly every runtime
/// fails to start, which would read as a crash loop rather than a limit.
const MIN_MEMORY: u64 = 16 * 1024 * 1024;
/// Fewest open files accepted: stdio needs three, runtimes a few more.
const MIN_OPEN_FILES: u64 = 16;

fn limits(
    v: &Validator<'_>,
    field: &str,
    at: usize,
    l: &RawLimits,
) -> Result<ProcessLimits, ConfigError> {
    let memory_bytes = match &l.memory {
        None => None,
        Some(size) => {
            let bytes = match size {
                RawSize::Bytes(n) => Some(*n),
                RawSize::Text(t) => parse_size(t),
            }
            .ok_or_else(|| {
                v.err(
                    Some(at),
                    format!("{field}.memory"),
                    "is not a size; write bytes or e.g. \"512MiB\", \"2GiB\"",
                )
            })?;
            if bytes < MIN_MEMORY {
                return Err(v.err(
                    Some(at),
                    format!("{field}.memory"),
                    "must be at least 16MiB",
                ));
            }
            Some(bytes)
        }
    };
    if l.cpu_seconds == Some(0) {
        return Err(v.err(
            Some(at),
            format!("{field}.cpu_seconds"),
            "must be at least 1",
        ));
    }
    if l.open_files.is_some_and(|n| n < MIN_OPEN_FILES) {
        return Err(v.err(
            Some(at),
            format!("{field}.open_files"),
            "must be at least 16",
        ));
    }
    if memory_bytes.is_none() && l.cpu_seconds.is_none() && l.open_files.is_none() {
        return Err(v.err(
            Some(at),
            field,
            "sets no limit: give memory, cpu_seconds and/or open_files, or remove it",
        ));
    }
    Ok(ProcessLimits {
        memory_bytes,
        cpu_seconds: l.cpu_seconds,
        open_files: l.open_files,
        launcher: v.ctx.self_exe.to_owned(),
    })
}

/// Parses "512MiB", "2 GiB", "100MB", "4096" (bytes); `None` when it is not
/// a size or does not fit in 64 bits.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, ConfigError> {
        parse_for_test(text)
    }

    #[test]
    fn the_request_state_key_is_an_interpolated_secret() {
        let c = check("[server]\nrequest_state_key = \"${env:TOKEN}\"").unwrap();
        let key = c.server.request_state_key.as_ref().map(Secret::expose);
        assert_eq!(key, Some("t0k"));
        assert!(
            !format!("{c:?}").contains("t0k"),
            "the key leaks into Debug"
        );
        assert!(check("[server]")
            .unwrap()
            .server
            .request_state_key
            .is_none());
    }

    #[test]
    fn the_issue_example_validates() {
        let c = check(
            r#"
[server]
listen = "127.0.0.1:8080"
[[upstreams]]
name = "time"
command = ["uvx", "mcp-server-time"]
env = { TZ = "UTC" }
[[upstreams]]
name = "docs"
url = "http://127.0.0.1:3001/mcp"
headers = { Authorization = "Bearer ${env:TOKEN}" }
tools = { allow = ["search*"], deny = ["delete_*"] }
"#,
        )
        .unwrap();
        assert_eq!(c.upstreams.len(), 2);
        let TransportConfig::StreamableHttp(h) = &c.upstreams[1].transport else {
            panic!()
        };
        assert_eq!(h.headers[0].1.expose(), "Bearer t0k");
        assert!(!format!("{c:?}").contains("t0k"), "secrets leak into Debug");
        assert!(c.upstreams[1].tools.permits("search_x"));
        assert!(!c.upstreams[1].tools.permits("delete_x"));
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let cases: &[(&str, &[&str])] = &[
            ("[server]\nlisten = \"nope\"", &["test.toml:2", "server.listen", "IP:PORT"]),
            ("[server]\nlistn = \"x\"", &["test.toml", "unknown field", "listn", "listen"]),
            ("[[upstreams]]\nname = \"Bad Name\"\nurl = \"http://x:1/mcp\"", &["test.toml:2", "upstreams[0].name", "[a-z0-9_-]"]),
            ("[[upstreams]]\nname = \"a\"", &["upstreams[0].url", "needs `command"]),
            ("[[upstreams]]\nname = \"a\"\nurl = \"ftp://x\"", &["upstreams[0].url", "not an http"]),
            ("[[upstreams]]\nname = \"a\"\nurl = \"http://x:1/mcp\"\ntimeout = \"soon\"", &["test.toml:4", "upstreams[0].timeout", "not a duration"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\n[[upstreams]]\nname = \"a\"\ncommand = [\"y\"]", &["test.toml:4", "upstreams[1].name", "unique"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\", \"${env:MISSING}\"]", &["upstreams[0].command", "MISSING is not set"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = []", &["upstreams[0].command", "is empty"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nprefix = \"sometimes\"", &["test.toml:4", "prefix", "conditional"]),
            ("[[upstreams]]\nname = \"a\"\nurl = \"http://x:1/\"\ntransport = \"ws\"", &["upstreams[0].transport", "\"sse\""]),
            ("[server]\nseparator = \"::\"", &["server.separator", "[A-Za-z0-9_.-]"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nbreaker = { failure_rate = 2.0 }", &["upstreams[0].breaker.failure_rate", "(0, 1]"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\ntimeout = \"60s\"\nmax_timeout = \"10s\"", &["upstreams[0].max_timeout", "shorter than timeout"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nbreaker = { colour = 1 }", &["unknown field", "colour"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\ncache = { ttl = \"30s\" }", &["upstreams[0].cache", "caches nothing"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\ncache = { ttl = \"0s\", resources = true }", &["test.toml:4", "upstreams[0].cache.ttl", "more than 0"]),
            ("[server]\nresponse_mode = \"json\"", &["test.toml:2", "server.response_mode", "\"sse\""]),
            ("[[upstreams]]\nname = \"a\"\nurl = \"http://x:1/\"\ntools = { allow = [\"[\"] }", &["upstreams[0].tools", "bad glob"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\npool = \"pooled\"", &["test.toml:4", "upstreams[0].pool", "\"per_session\""]),
            ("[[upstreams]]\nname = \"a\"\nurl = \"http://x:1/mcp\"\npool = \"per_session\"", &["upstreams[0].pool", "stdio upstreams", "remote"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nmax_instances = 4", &["upstreams[0].max_instances", "per_session\" only"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nidle_timeout = \"1m\"", &["upstreams[0].idle_timeout", "per_session\" only"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\npool = \"per_session\"\nmax_instances = 0", &["upstreams[0].max_instances", "at least 1"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\npool = \"per_session\"\nidle_timeout = \"10ms\"", &["test.toml:5", "upstreams[0].idle_timeout", "at least 1s"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nlimits = { memory = \"lots\" }", &["test.toml:4", "upstreams[0].limits.memory", "512MiB"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nlimits = { memory = \"1MiB\" }", &["upstreams[0].limits.memory", "16MiB"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nlimits = { cpu_seconds = 0 }", &["upstreams[0].limits.cpu_seconds", "at least 1"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nlimits = { open_files = 3 }", &["upstreams[0].limits.open_files", "at least 16"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nlimits = {}", &["upstreams[0].limits", "sets no limit"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nlimits = { stack = 1 }", &["unknown field", "stack"]),
            ("[[upstreams]]\nname = \"a\"\nurl = \"http://x:1/mcp\"\nlimits = { cpu_seconds = 5 }", &["upstreams[0].limits", "stdio upstreams"]),
            ("[server.tls]\ncert = \"c.pem\"", &["test.toml", "missing field", "key"]),
            ("[server.tls]\ncert = \"\"\nkey = \"k.pem\"", &["test.toml:2", "server.tls.cert", "is empty"]),
            ("[server.tls]\ncert = \"c.pem\"\nkey = \"${env:MISSING}\"", &["test.toml:3", "server.tls.key", "MISSING is not set"]),
            ("[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nreload_interval = \"often\"", &["test.toml:4", "server.tls.reload_interval", "not a duration"]),
            ("[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nca = \"x\"", &["unknown field", "ca"]),
            ("[store]\nurl = \"mysql://x/y\"", &["test.toml:2", "store.url", "\"mysql\"", "postgres://"]),
            ("[store]\nmax_connections = 0", &["test.toml:2", "store.max_connections", "between 1"]),
            ("[store]\ndata_dir = \"\"", &["test.toml:2", "store.data_dir", "empty"]),
            ("[store]\npool = 3", &["unknown field", "pool"]),
            ("[audit]\nretention = \"forever\"", &["test.toml:2", "audit.retention", "not a duration"]),
            ("[audit]\nretention = \"10s\"", &["test.toml:2", "audit.retention", "at least 1m"]),
            ("[audit]\n\nflush_interval = \"0s\"", &["test.toml:3", "audit.flush_interval", "more than 0"]),
            ("[audit]\nbatch_size = 0", &["test.toml:2", "audit.batch_size", "between 1"]),
            ("[audit]\nspool_max_bytes = \"lots\"", &["test.toml:2", "audit.spool_max_bytes", "not a byte size"]),
            ("[audit]\nspool_max_bytes = 10", &["test.toml:2", "audit.spool_max_bytes", "64 KiB"]),
            ("[audit]\nredact_fields = [\"\"]", &["audit.redact_fields", "empty"]),
            ("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\npool = \"per_session\"\ncache = { ttl = \"5s\", resources = true }", &["upstreams[0].cache", "per_session", "pool = \"shared\""]),
        ];
        for (text, needles) in cases {
            let msg = check(text).unwrap_err().to_string();
            for n in *needles {
                assert!(msg.contains(n), "{text:?}: {msg:?} should contain {n:?}");
            }
        }
    }

    #[test]
    fn self_expands_to_the_running_binary_and_disabled_upstreams_vanish() {
        let c = check("[[upstreams]]\nname = \"a\"\ncommand = [\"${self}\", \"demo\"]\n[[upstreams]]\nname = \"b\"\ncommand = [\"x\"]\nenabled = false").unwrap();
        assert_eq!(c.upstreams.len(), 1);
        let TransportConfig::Stdio(s) = &c.upstreams[0].transport else {
            panic!()
        };
        assert_eq!(s.program, "/usr/bin/switchboard");
    }

    #[test]
    fn per_tool_timeouts_override_the_upstream_timeout_by_glob() {
        let c = check("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\ntimeout = \"10s\"\ntool_timeouts = { \"render_*\" = \"5m\" }\nhealth_check_interval = \"0s\"").unwrap();
        let u = &c.upstreams[0];
        assert_eq!(
            u.timeout_for_tool("render_pdf"),
            std::time::Duration::from_secs(300)
        );
        assert_eq!(
            u.timeout_for_tool("search"),
            std::time::Duration::from_secs(10)
        );
        assert_eq!(u.health_check_interval, None, "0s disables pings");
        assert_eq!(u.retries, defaults::RETRIES);
    }

    #[test]
    fn tls_paths_interpolate_and_a_zero_interval_disables_reloading() {
        let c = check("[server.tls]\ncert = \"/etc/${env:TOKEN}/cert.pem\"\nkey = \"key.pem\"\nreload_interval = \"0s\"").unwrap();
        let tls = c.server.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/t0k/cert.pem"));
        assert_eq!(tls.key, PathBuf::from("key.pem"));
        assert_eq!(tls.reload_interval, None);
        let tls = check("[server.tls]\ncert = \"c\"\nkey = \"k\"")
            .unwrap()
            .server
            .tls
            .unwrap();
        assert_eq!(tls.reload_interval, Some(defaults::TLS_RELOAD_INTERVAL));
        assert!(check("").unwrap().server.tls.is_none());
    }

    #[test]
    fn store_and_audit_defaults_are_a_sqlite_file_in_the_user_data_dir() {
        let c = check("").unwrap();
        assert!(c.store.url.is_none());
        assert_eq!(c.store.max_connections, defaults::STORE_MAX_CONNECTIONS);
        assert!(c.audit.enabled && !c.audit.record_arguments);
        assert_eq!(c.audit.retention, defaults::AUDIT_RETENTION);
        assert!(c.audit.redact_fields.iter().any(|f| f == "password"));
        let env = |k: &str| match k {
            "XDG_DATA_HOME" => Some("/xdg".to_owned()),
            "HOME" => Some("/home/u".to_owned()),
            _ => None,
        };
        assert_eq!(default_data_dir(&env), PathBuf::from("/xdg/switchboard"));
        let env = |k: &str| (k == "HOME").then(|| "/home/u".to_owned());
        assert_eq!(
            default_data_dir(&env),
            PathBuf::from("/home/u/.local/share/switchboard")
        );
        assert_eq!(
            default_data_dir(&|_| None),
            PathBuf::from("switchboard-data")
        );
    }

    #[test]
    fn store_and_audit_keys_parse_with_units_and_interpolation() {
        let c = check(
            "[store]\nurl = \"postgres://sb:${env:TOKEN}@127.0.0.1:5432/sb\"\ndata_dir = \"/var/lib/sb\"\nmax_connections = 20\n[audit]\nenabled = false\nrecord_arguments = true\nredact_fields = [\"pin\"]\nretention = \"7d\"\nbatch_size = 50\nflush_interval = \"250ms\"\nspool_max_bytes = \"64 MiB\"",
        )
        .unwrap();
        assert_eq!(
            c.store.url.as_ref().map(Secret::expose),
            Some("postgres://sb:t0k@127.0.0.1:5432/sb")
        );
        assert!(
            !format!("{c:?}").contains("t0k"),
            "the store url leaks into Debug"
        );
        assert_eq!(c.store.data_dir, PathBuf::from("/var/lib/sb"));
        assert_eq!(c.store.max_connections, 20);
        assert!(!c.audit.enabled && c.audit.record_arguments);
        assert_eq!(c.audit.redact_fields, vec!["pin".to_owned()]);
        assert_eq!(c.audit.retention, Duration::from_secs(7 * 86400));
        assert_eq!(c.audit.batch_size, 50);
        assert_eq!(c.audit.flush_interval, Duration::from_millis(250));
        assert_eq!(c.audit.spool_max_bytes, 64 * 1024 * 1024);
        let c = check("[audit]\nspool_max_bytes = 1048576").unwrap();
        assert_eq!(c.audit.spool_max_bytes, 1 << 20);
    }

    #[test]
    fn database_url_in_the_environment_overrides_the_file() {
        let env = |k: &str| (k == "DATABASE_URL").then(|| "postgres://db.internal/sb".to_owned());
        let ctx = Context {
            env: &env,
            self_exe: "switchboard",
        };
        let c = parse_with("[store]\nurl = \"sqlite:///tmp/x.db\"", "t.toml", &ctx).unwrap();
        assert_eq!(
            c.store.url.as_ref().map(Secret::expose),
            Some("postgres://db.internal/sb")
        );
        let env = |k: &str| (k == "DATABASE_URL").then(|| "redis://x".to_owned());
        let ctx = Context {
            env: &env,
            self_exe: "switchboard",
        };
        let msg = parse_with("", "t.toml", &ctx).unwrap_err().to_string();
        assert!(
            msg.contains("DATABASE_URL") && msg.contains("\"redis\""),
            "{msg}"
        );
    }

    #[test]
    fn the_embedded_default_is_valid() {
        let c = check(EMBEDDED_DEFAULT).unwrap();
        assert!(!c.upstreams.is_empty());
        assert!(c.server.listen.ip().is_loopback());
    }

    #[test]
    fn pool_and_limits_parse_with_their_defaults() {
        let c = check("[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\n[[upstreams]]\nname = \"b\"\ncommand = [\"x\"]\npool = \"per_session\"\n[[upstreams]]\nname = \"c\"\ncommand = [\"x\"]\npool = \"per_session\"\nmax_instances = 4\nidle_timeout = \"90s\"\nlimits = { memory = \"512MiB\", cpu_seconds = 60, open_files = 1024 }").unwrap();
        let stdio = |i: usize| match &c.upstreams[i].transport {
            TransportConfig::Stdio(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(stdio(0).pool, PoolPolicy::Shared);
        assert_eq!(stdio(0).limits, None);
        assert_eq!(
            stdio(1).pool,
            PoolPolicy::PerSession {
                max_instances: defaults::MAX_INSTANCES,
                idle_timeout: defaults::INSTANCE_IDLE_TIMEOUT
            }
        );
        assert_eq!(
            stdio(2).pool,
            PoolPolicy::PerSession {
                max_instances: 4,
                idle_timeout: Duration::from_secs(90)
            }
        );
        assert_eq!(
            stdio(2).limits,
            Some(ProcessLimits {
                memory_bytes: Some(512 << 20),
                cpu_seconds: Some(60),
                open_files: Some(1024),
                launcher: "/usr/bin/switchboard".into(),
            })
        );
    }

    #[test]
    fn sizes_read_binary_and_decimal_units() {
        let cases: &[(&str, Option<u64>)] = &[
            ("4096", Some(4096)),
            ("512MiB", Some(512 << 20)),
            ("2 GiB", Some(2 << 30)),
            ("64M", Some(64 << 20)),
            ("100MB", Some(100_000_000)),
            ("1kB", Some(1000)),
            ("MiB", None),
            ("12 parsecs", None),
            ("-1", None),
            ("99999999999TiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), *want, "{text:?}");
        }
    }
}
