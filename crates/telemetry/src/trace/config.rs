//! OTLP trace export settings, resolved from the standard `OTEL_*` variables.
//!
//! Resolution is a pure function over a lookup closure ([`OtelConfig::from_lookup`]) so it is
//! tested without touching the process environment, and so the exporter never reads the
//! environment behind our back for anything we resolve here (the SDK's builders would, if we
//! left a setting unset).

use std::time::Duration;

use super::TraceError;

/// The `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "switchboard";

/// Where and how spans are exported. `None` from [`OtelConfig::from_env`] means "export
/// nothing": the OpenTelemetry layer is then not installed at all, so tracing costs only what
/// the log filter lets through.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelConfig {
    /// Full URL spans are POSTed to, e.g. `http://collector:4318/v1/traces`. Taken as is from
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or built as `OTEL_EXPORTER_OTLP_ENDPOINT` +
    /// `/v1/traces` (the OTLP/HTTP rule for the signal-agnostic variable).
    pub endpoint: String,
    /// `service.name` of the resource: how backends group our spans.
    pub service_name: String,
    /// Extra resource attributes from `OTEL_RESOURCE_ATTRIBUTES` (deployment, region, ...),
    /// without `service.name`, which [`Self::service_name`] carries.
    pub resource_attributes: Vec<(String, String)>,
    /// Head sampling decision for new root spans (and, parent-based, for remote parents).
    pub sampler: Sampler,
    /// Deadline of one export request; an unreachable collector costs at most this per batch.
    pub timeout: Duration,
    /// Spans buffered for export; beyond it new spans are dropped, never blocking a request
    /// and never growing memory without bound.
    pub max_queue_size: usize,
    /// How often the batch worker exports when the batch has not filled up.
    pub scheduled_delay: Duration,
    /// Most spans in one export request.
    pub max_export_batch_size: usize,
}

impl OtelConfig {
    /// The specification's defaults for everything but the endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            resource_attributes: Vec::new(),
            sampler: Sampler::ParentBasedAlwaysOn,
            timeout: Duration::from_secs(10),
            max_queue_size: 2048,
            scheduled_delay: Duration::from_secs(5),
            max_export_batch_size: 512,
        }
    }

    /// Reads the process environment; see [`Self::from_lookup`].
    pub fn from_env() -> Result<Option<Self>, TraceError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Resolves the configuration from `lookup` (a variable name to its value).
    ///
    /// Returns `Ok(None)` when export is off: no endpoint variable is set (or both are empty),
    /// or `OTEL_SDK_DISABLED` is `true`. A variable that is set but wrong is an error rather
    /// than a silent fallback, so a typo in the sampler cannot turn into 100% sampling in
    /// production.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TraceError> {
        // Empty is the same as unset, as the specification asks.
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint = if let Some(url) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.trim())?
        } else if let Some(base) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            let base = check_url("OTEL_EXPORTER_OTLP_ENDPOINT", base.trim())?;
            format!("{}/v1/traces", base.trim_end_matches('/'))
        } else {
            return Ok(None);
        };

        let protocol_var = if get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        } else {
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        };
        if let Some(protocol) = get(protocol_var) {
            if protocol.trim() != "http/protobuf" {
                return Err(env_error(
                    protocol_var,
                    &protocol,
                    "only http/protobuf is built in (no grpc, no http/json)",
                ));
            }
        }

        let mut config = Self::new(endpoint);
        if let Some(attrs) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for (key, value) in parse_key_values(&attrs).ok_or_else(|| {
                env_error("OTEL_RESOURCE_ATTRIBUTES", &attrs, "expected key=value,...")
            })? {
                if key == "service.name" {
                    config.service_name = value;
                } else {
                    config.resource_attributes.push((key, value));
                }
            }
        }
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            config.service_name = name.trim().to_owned();
        }
        if let Some(name) = get("OTEL_TRACES_SAMPLER") {
            config.sampler = Sampler::parse(&name, get("OTEL_TRACES_SAMPLER_ARG").as_deref())?;
        }
        let timeout_var = if get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
        } else {
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        };
        if let Some(ms) = get(timeout_var) {
            config.timeout = Duration::from_millis(positive(timeout_var, &ms)?);
        }
        if let Some(n) = get("OTEL_BSP_MAX_QUEUE_SIZE") {
            config.max_queue_size = usize_from(positive("OTEL_BSP_MAX_QUEUE_SIZE", &n)?);
        }
        if let Some(ms) = get("OTEL_BSP_SCHEDULE_DELAY") {
            config.scheduled_delay =
                Duration::from_millis(positive("OTEL_BSP_SCHEDULE_DELAY", &ms)?);
        }
        if let Some(n) = get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            config.max_export_batch_size =
                usize_from(positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &n)?);
        }
        // The specification: the batch size must not exceed the queue size.
        config.max_export_batch_size = config.max_export_batch_size.min(config.max_queue_size);
        Ok(Some(config))
    }
}

/// Head sampler, as named by `OTEL_TRACES_SAMPLER`. A closed set: the samplers that need no
/// extra machinery (no Jaeger remote, no X-Ray).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// `always_on`: every root span is sampled.
    AlwaysOn,
    /// `always_off`: nothing is sampled (spans still get ids, so logs stay correlatable).
    AlwaysOff,
    /// `traceidratio`: this fraction (0..=1) of traces, decided from the trace id.
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the default): follow the parent's decision, sample roots.
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`: follow the parent's decision, drop roots.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: follow the parent's decision, sample this fraction of roots.
    ParentBasedTraceIdRatio(f64),
}

impl Sampler {
    /// Parses `OTEL_TRACES_SAMPLER` and its `OTEL_TRACES_SAMPLER_ARG` (the ratio, default 1.0;
    /// ignored by the samplers that take no argument).
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, TraceError> {
        let ratio = || -> Result<f64, TraceError> {
            let Some(arg) = arg.map(str::trim).filter(|a| !a.is_empty()) else {
                return Ok(1.0);
            };
            match arg.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(env_error(
                    "OTEL_TRACES_SAMPLER_ARG",
                    arg,
                    "expected a ratio between 0 and 1",
                )),
            }
        };
        Ok(match name.trim() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedTraceIdRatio(ratio()?),
            other => {
                return Err(env_error(
                    "OTEL_TRACES_SAMPLER",
                    other,
                    "expected always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio",
                ))
            }
        })
    }

    pub(super) fn to_sdk(self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler as S;
        match self {
            Self::AlwaysOn => S::AlwaysOn,
            Self::AlwaysOff => S::AlwaysOff,
            Self::TraceIdRatio(r) => S::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => S::ParentBased(Box::new(S::AlwaysOn)),
            Self::ParentBasedAlwaysOff => S::ParentBased(Box::new(S::AlwaysOff)),
            Self::ParentBasedTraceIdRatio(r) => S::ParentBased(Box::new(S::TraceIdRatioBased(r))),
        }
    }
}

fn env_error(var: &'static str, value: &str, reason: &'static str) -> TraceError {
    TraceError::Env {
        var,
        value: value.to_owned(),
        reason,
    }
}

fn check_url(var: &'static str, url: &str) -> Result<String, TraceError> {
    match url.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() =>
        {
            Ok(url.to_owned())
        }
        _ => Err(env_error(var, url, "expected an http:// or https:// URL")),
    }
}

fn positive(var: &'static str, value: &str) -> Result<u64, TraceError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(env_error(var, value, "expected a positive integer")),
    }
}

fn usize_from(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `k=v,k2=v2` with percent-encoded values (the W3C Baggage form the specification uses for
/// `OTEL_RESOURCE_ATTRIBUTES`). `None` when any entry is malformed: the specification asks to
/// discard the whole value rather than keep part of it.
fn parse_key_values(input: &str) -> Option<Vec<(String, String)>> {
    input
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (key, value) = entry.split_once('=')?;
            let key = key.trim();
            if key.is_empty() {
                return None;
            }
            Some((key.to_owned(), percent_decode(value.trim())?))
        })
        .collect()
}

fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> Result<Option<OtelConfig>, TraceError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtelConfig::from_lookup(|name| map.get(name).cloned())
    }

    fn err_var(result: Result<Option<OtelConfig>, TraceError>) -> &'static str {
        match result {
            Err(TraceError::Env { var, .. }) => var,
            other => panic!("expected an env error, got {other:?}"),
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(resolve(&[]).unwrap(), None);
        assert_eq!(resolve(&[("OTEL_SERVICE_NAME", "gw")]).unwrap(), None);
        assert_eq!(
            resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]).unwrap(),
            None
        );
    }

    #[test]
    fn sdk_disabled_wins_over_an_endpoint() {
        for value in ["true", "TRUE", " True "] {
            let vars = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", value),
            ];
            assert_eq!(resolve(&vars).unwrap(), None, "{value}");
        }
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "false"),
        ];
        assert!(resolve(&vars).unwrap().is_some());
    }

    #[test]
    fn generic_endpoint_gets_the_traces_path() {
        for base in ["http://c:4318", "http://c:4318/"] {
            let config = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", base)])
                .unwrap()
                .unwrap();
            assert_eq!(config.endpoint, "http://c:4318/v1/traces");
        }
        let config = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c/otlp")])
            .unwrap()
            .unwrap();
        assert_eq!(config.endpoint, "https://c/otlp/v1/traces");
    }

    #[test]
    fn traces_endpoint_is_taken_as_is_and_wins() {
        let config = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9999/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.endpoint, "http://t:9999/custom");
    }

    #[test]
    fn defaults_follow_the_specification() {
        let config = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(config, OtelConfig::new("http://c:4318/v1/traces"));
        assert_eq!(config.service_name, "switchboard");
        assert_eq!(config.sampler, Sampler::ParentBasedAlwaysOn);
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.max_queue_size, 2048);
    }

    #[test]
    fn bad_endpoint_is_an_error() {
        for bad in ["c:4318", "ftp://c", "not a url"] {
            let r = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)]);
            assert_eq!(err_var(r), "OTEL_EXPORTER_OTLP_ENDPOINT", "{bad}");
        }
    }

    #[test]
    fn only_http_protobuf_is_accepted() {
        let ok = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert!(ok.unwrap().is_some());
        for bad in ["grpc", "http/json"] {
            let r = resolve(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", bad),
            ]);
            assert_eq!(err_var(r), "OTEL_EXPORTER_OTLP_PROTOCOL");
        }
        // The signal-specific variable wins over the generic one.
        let r = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ]);
        assert_eq!(err_var(r), "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
    }

    #[test]
    fn service_name_and_resource_attributes() {
        let config = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs, deployment.environment=prod,team=a%2Cb",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.service_name, "from-attrs");
        assert_eq!(
            config.resource_attributes,
            vec![
                ("deployment.environment".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "a,b".to_owned()),
            ]
        );
        let config = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
            ("OTEL_SERVICE_NAME", "gw-eu"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.service_name, "gw-eu");
        let r = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=1,broken"),
        ]);
        assert_eq!(err_var(r), "OTEL_RESOURCE_ATTRIBUTES");
    }

    #[test]
    fn timeout_and_batch_settings() {
        let config = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1500"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.timeout, Duration::from_millis(1500));
        assert_eq!(config.max_queue_size, 100);
        assert_eq!(config.scheduled_delay, Duration::from_millis(250));
        // clamped to the queue size
        assert_eq!(config.max_export_batch_size, 100);
        let r = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ]);
        assert_eq!(err_var(r), "OTEL_BSP_MAX_QUEUE_SIZE");
    }

    #[test]
    fn sampler_from_env() {
        let config = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.sampler, Sampler::ParentBasedTraceIdRatio(0.25));
    }

    #[test]
    fn sampler_parsing() {
        let cases: &[(&str, Option<&str>, Sampler)] = &[
            ("always_on", None, Sampler::AlwaysOn),
            ("always_off", Some("0.5"), Sampler::AlwaysOff),
            ("traceidratio", Some("0.1"), Sampler::TraceIdRatio(0.1)),
            ("traceidratio", None, Sampler::TraceIdRatio(1.0)),
            ("parentbased_always_on", None, Sampler::ParentBasedAlwaysOn),
            (
                "parentbased_always_off",
                None,
                Sampler::ParentBasedAlwaysOff,
            ),
            (
                "parentbased_traceidratio",
                Some(" 0 "),
                Sampler::ParentBasedTraceIdRatio(0.0),
            ),
            (
                "parentbased_traceidratio",
                Some(""),
                Sampler::ParentBasedTraceIdRatio(1.0),
            ),
        ];
        for (name, arg, want) in cases {
            assert_eq!(Sampler::parse(name, *arg).unwrap(), *want, "{name} {arg:?}");
        }
        for (name, arg) in [
            ("traceidratio", Some("1.5")),
            ("traceidratio", Some("-0.1")),
            ("parentbased_traceidratio", Some("half")),
            ("jaeger_remote", None),
            ("AlwaysOn", None),
        ] {
            assert!(Sampler::parse(name, arg).is_err(), "{name} {arg:?}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
