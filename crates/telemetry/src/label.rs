//! Label values: closed enums for closed sets, and [`BoundedLabels`] for the open ones.
//!
//! Every label value that reaches the registry comes from here. Closed sets (routes, MCP
//! methods, outcomes, reasons) are enums whose `as_str` is the exposed value, so a call site
//! cannot invent a new series. Open sets named by configuration or by an upstream (upstream
//! names, tool names) go through [`BoundedLabels`], which admits at most a fixed number of
//! distinct values and folds the rest into [`OTHER`].

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// The label value that stands for "anything outside the bounded set".
pub const OTHER: &str = "other";

/// Longest open-set label value kept as is. MCP asks tool names to be 1..=128 characters;
/// anything longer is not a name an operator would chart, and could be an attack on the
/// scrape size.
pub(crate) const MAX_LABEL_LEN: usize = 128;

/// Declares a closed set of label values: the enum, its exposed strings, and `ALL`.
///
/// One table per set keeps the variant and its string side by side, so they cannot drift.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$( $name::$variant, )+];

            /// Returns the label value exposed for this variant.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $value, )+
                }
            }

            /// Returns the variant whose label value is `value`, if any.
            pub fn from_label(value: &str) -> Option<Self> {
                match value {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }
        }
    };
}

label_enum! {
    /// A downstream HTTP route, as the route template rather than the raw path, so a
    /// path carrying a server name or a scanner's junk never becomes a series.
    pub enum Endpoint {
        /// The Streamable HTTP MCP endpoint over the whole catalog.
        Mcp => "/mcp",
        /// The Streamable HTTP MCP endpoint of one upstream.
        ServerMcp => "/servers/{name}/mcp",
        /// The legacy SSE stream.
        Sse => "/sse",
        /// The legacy SSE message post endpoint.
        Messages => "/messages",
        /// The JSON health report.
        Health => "/health",
        /// The liveness probe.
        HealthLive => "/health/live",
        /// The readiness probe.
        HealthReady => "/health/ready",
        /// This exposition.
        Metrics => "/metrics",
        /// Any other path, including 404s.
        Other => "other",
    }
}

impl Endpoint {
    /// Classifies a request path (raw, or an axum `MatchedPath` template) into its route.
    ///
    /// Only exact routes match: `/mcp/` or `/servers/a/b/mcp` are `Other`, because the router
    /// does not serve them either.
    pub fn from_path(path: &str) -> Self {
        if let Some(endpoint) = Self::from_label(path) {
            return endpoint;
        }
        let server = path
            .strip_prefix("/servers/")
            .and_then(|rest| rest.strip_suffix("/mcp"));
        match server {
            Some(name) if !name.is_empty() && !name.contains('/') => Endpoint::ServerMcp,
            _ => Endpoint::Other,
        }
    }
}

label_enum! {
    /// An MCP JSON-RPC method name (requests and notifications of both directions), plus
    /// `Other` for anything a client or an upstream makes up.
    pub enum McpMethod {
        Initialize => "initialize",
        Ping => "ping",
        ToolsList => "tools/list",
        ToolsCall => "tools/call",
        ResourcesList => "resources/list",
        ResourcesTemplatesList => "resources/templates/list",
        ResourcesRead => "resources/read",
        ResourcesSubscribe => "resources/subscribe",
        ResourcesUnsubscribe => "resources/unsubscribe",
        PromptsList => "prompts/list",
        PromptsGet => "prompts/get",
        CompletionComplete => "completion/complete",
        LoggingSetLevel => "logging/setLevel",
        TasksGet => "tasks/get",
        TasksList => "tasks/list",
        TasksResult => "tasks/result",
        TasksCancel => "tasks/cancel",
        SamplingCreateMessage => "sampling/createMessage",
        ElicitationCreate => "elicitation/create",
        RootsList => "roots/list",
        NotificationsInitialized => "notifications/initialized",
        NotificationsCancelled => "notifications/cancelled",
        NotificationsProgress => "notifications/progress",
        NotificationsMessage => "notifications/message",
        NotificationsRootsListChanged => "notifications/roots/list_changed",
        NotificationsResourcesListChanged => "notifications/resources/list_changed",
        NotificationsResourcesUpdated => "notifications/resources/updated",
        NotificationsToolsListChanged => "notifications/tools/list_changed",
        NotificationsPromptsListChanged => "notifications/prompts/list_changed",
        NotificationsElicitationComplete => "notifications/elicitation/complete",
        NotificationsTasksStatus => "notifications/tasks/status",
        /// A method outside the MCP specification.
        Other => "other",
    }
}

impl McpMethod {
    /// Returns the method for a JSON-RPC `method` string; unknown names are `Other`.
    pub fn from_name(method: &str) -> Self {
        Self::from_label(method).unwrap_or(McpMethod::Other)
    }
}

label_enum! {
    /// Whether an MCP request got a result or a JSON-RPC error.
    pub enum McpStatus {
        Ok => "ok",
        Error => "error",
    }
}

label_enum! {
    /// How a `tools/call` ended, as seen by the gateway.
    pub enum ToolCallStatus {
        /// The upstream returned a result (including one with `isError`: the tool ran).
        Success => "success",
        /// The upstream returned a JSON-RPC error or broke the protocol.
        Error => "error",
        /// The deadline passed; `notifications/cancelled` went upstream.
        Timeout => "timeout",
        /// The downstream client cancelled or disconnected.
        Cancelled => "cancelled",
        /// The upstream could not be reached (process down, connection refused).
        Unavailable => "unavailable",
        /// The gateway refused before calling: breaker open, bulkhead full, policy.
        Rejected => "rejected",
    }
}

impl ToolCallStatus {
    /// Whether the call reached the upstream, so its duration says something about the
    /// upstream. Fast failures would otherwise drag the latency percentiles down exactly
    /// when an upstream is in trouble.
    pub(crate) const fn reached_upstream(self) -> bool {
        !matches!(self, ToolCallStatus::Unavailable | ToolCallStatus::Rejected)
    }
}

label_enum! {
    /// A circuit breaker's state; the gauge exposes it as a number so alerts can compare.
    pub enum BreakerState {
        /// Calls flow; exposed as 0.
        Closed => "closed",
        /// Calls fail fast; exposed as 1.
        Open => "open",
        /// A bounded number of trial calls flow; exposed as 2.
        HalfOpen => "half_open",
    }
}

impl BreakerState {
    /// Returns the gauge value: 0 closed, 1 open, 2 half-open.
    pub const fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// One call seen by a circuit breaker. Rejected calls carry no latency: they never ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerCall {
    /// The call ran and the breaker counted it as a success.
    Success(std::time::Duration),
    /// The call ran and the breaker counted it as a failure.
    Failure(std::time::Duration),
    /// The breaker was open (or half-open and full) and refused the call.
    Rejected,
}

impl BreakerCall {
    /// Returns the `result` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerCall::Success(_) => "success",
            BreakerCall::Failure(_) => "failure",
            BreakerCall::Rejected => "rejected",
        }
    }
}

label_enum! {
    /// What the self-healing machinery was repairing.
    pub enum HealingIssue {
        /// A stdio upstream process exited or was killed.
        ProcessCrash => "process_crash",
        /// An upstream stopped answering pings or calls.
        Unresponsive => "unresponsive",
        /// A remote upstream's connection dropped.
        ConnectionLost => "connection_lost",
        /// A remote upstream answered 404 for its session; the gateway re-initialised it.
        SessionExpired => "session_expired",
        /// The periodic health check failed.
        HealthCheckFailed => "health_check_failed",
    }
}

label_enum! {
    /// How a healing attempt ended.
    pub enum HealingStatus {
        Success => "success",
        Failure => "failure",
    }
}

label_enum! {
    /// A cache whose hits and misses are counted.
    pub enum CacheName {
        /// Results of read-only tools.
        ToolResult => "tool_result",
        /// `resources/read` results.
        ResourceRead => "resource_read",
    }
}

label_enum! {
    /// Why the gateway refused a downstream request before dispatching it.
    pub enum RejectReason {
        BodyTooLarge => "body_too_large",
        BadOrigin => "bad_origin",
        BadHost => "bad_host",
        UnsupportedVersion => "unsupported_version",
        MissingSession => "missing_session",
        UnknownSession => "unknown_session",
        SessionLimit => "session_limit",
        RateLimited => "rate_limited",
        IdentityRateLimited => "identity_rate_limited",
        ToolRateLimited => "tool_rate_limited",
        SessionIdentityMismatch => "session_identity_mismatch",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        Overloaded => "overloaded",
        Invalid => "invalid",
    }
}

/// Returns the exposed label value for an HTTP method: the standard methods as themselves,
/// anything else (extension methods are arbitrary tokens) as [`OTHER`].
pub(crate) fn http_method(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::DELETE => "DELETE",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => OTHER,
    }
}

// === impl Label ===

/// An admitted open-set label value, or the overflow bucket.
///
/// Equality and hashing go by the string, so `Other` and an admitted `"other"` are the same
/// series (two series with one label set would make the exposition invalid).
#[derive(Debug, Clone)]
pub(crate) enum Label {
    Other,
    Value(Arc<str>),
}

impl Label {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Label::Other => OTHER,
            Label::Value(value) => value,
        }
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Label {}

impl Hash for Label {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

// Lets the sets below be probed with a `&str` without allocating; sound because `Hash` and
// `Eq` above are exactly those of the string.
impl Borrow<str> for Label {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

// === impl BoundedLabels ===

/// A set of at most `cap` distinct label values; later newcomers become [`OTHER`].
///
/// First come, first kept: values are never evicted, because a series that vanished and came
/// back would read as a counter reset. The read lock makes the common case (a value already
/// admitted) cheap on the hot path; the write lock is taken once per distinct value.
#[derive(Debug)]
pub(crate) struct BoundedLabels {
    cap: usize,
    values: RwLock<HashSet<Label>>,
}

impl BoundedLabels {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            values: RwLock::new(HashSet::new()),
        }
    }

    /// Returns the label for `value`, admitting it if there is room.
    pub(crate) fn admit(&self, value: &str) -> Label {
        if value == OTHER || !is_presentable(value) {
            return Label::Other;
        }
        if let Some(label) = self.values.read().get(value) {
            return label.clone();
        }
        let mut values = self.values.write();
        if let Some(label) = values.get(value) {
            return label.clone();
        }
        if values.len() >= self.cap {
            return Label::Other;
        }
        let label = Label::Value(Arc::from(value));
        values.insert(label.clone());
        label
    }

    /// Returns the label for `value` if it was admitted before, without admitting it.
    pub(crate) fn get(&self, value: &str) -> Option<Label> {
        self.values.read().get(value).cloned()
    }
}

/// Whether an open-set value may appear as a label value. The text format escapes `\`, `"`
/// and newlines, but other control characters and unbounded lengths have no business in a
/// dashboard legend.
fn is_presentable(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_LABEL_LEN && !value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_from_path_keeps_only_route_templates() {
        let cases = [
            ("/mcp", Endpoint::Mcp),
            ("/servers/docs/mcp", Endpoint::ServerMcp),
            ("/servers/{name}/mcp", Endpoint::ServerMcp),
            ("/sse", Endpoint::Sse),
            ("/messages", Endpoint::Messages),
            ("/health", Endpoint::Health),
            ("/health/live", Endpoint::HealthLive),
            ("/health/ready", Endpoint::HealthReady),
            ("/metrics", Endpoint::Metrics),
            ("/servers//mcp", Endpoint::Other),
            ("/servers/a/b/mcp", Endpoint::Other),
            ("/mcp/", Endpoint::Other),
            ("/wp-login.php", Endpoint::Other),
            ("", Endpoint::Other),
        ];
        for (path, want) in cases {
            assert_eq!(Endpoint::from_path(path), want, "path {path:?}");
        }
    }

    #[test]
    fn mcp_method_round_trips_and_folds_unknown_names() {
        for method in McpMethod::ALL {
            assert_eq!(McpMethod::from_name(method.as_str()), *method);
        }
        assert_eq!(McpMethod::from_name("tools/exec"), McpMethod::Other);
        assert_eq!(McpMethod::from_name(""), McpMethod::Other);
    }

    #[test]
    fn every_closed_set_has_distinct_values() {
        fn distinct(values: Vec<&'static str>) {
            let set: HashSet<_> = values.iter().collect();
            assert_eq!(set.len(), values.len(), "{values:?}");
        }
        distinct(Endpoint::ALL.iter().map(|v| v.as_str()).collect());
        distinct(McpMethod::ALL.iter().map(|v| v.as_str()).collect());
        distinct(ToolCallStatus::ALL.iter().map(|v| v.as_str()).collect());
        distinct(RejectReason::ALL.iter().map(|v| v.as_str()).collect());
        distinct(HealingIssue::ALL.iter().map(|v| v.as_str()).collect());
        distinct(CacheName::ALL.iter().map(|v| v.as_str()).collect());
    }

    #[test]
    fn http_method_folds_extension_methods() {
        assert_eq!(http_method(&http::Method::GET), "GET");
        assert_eq!(http_method(&http::Method::OPTIONS), "OPTIONS");
        let propfind = http::Method::from_bytes(b"PROPFIND").expect("valid token");
        assert_eq!(http_method(&propfind), OTHER);
    }

    #[test]
    fn bounded_labels_admit_up_to_cap_then_fold() {
        let labels = BoundedLabels::new(2);
        assert_eq!(labels.admit("a").as_str(), "a");
        assert_eq!(labels.admit("b").as_str(), "b");
        assert_eq!(labels.admit("c").as_str(), OTHER);
        // admitted values stay admitted
        assert_eq!(labels.admit("a").as_str(), "a");
        assert!(labels.get("c").is_none());
        // "other" never takes a slot
        let labels = BoundedLabels::new(1);
        assert_eq!(labels.admit(OTHER), Label::Other);
        assert_eq!(labels.admit("x").as_str(), "x");
    }

    #[test]
    fn bounded_labels_refuse_unpresentable_values() {
        let labels = BoundedLabels::new(10);
        assert_eq!(labels.admit(""), Label::Other);
        assert_eq!(labels.admit("a\u{0}b"), Label::Other);
        assert_eq!(labels.admit("line\nbreak"), Label::Other);
        assert_eq!(labels.admit(&"x".repeat(MAX_LABEL_LEN + 1)), Label::Other);
        let longest = "x".repeat(MAX_LABEL_LEN);
        assert_eq!(labels.admit(&longest).as_str(), longest);
        // refused values consumed no slot
        assert_eq!(labels.values.read().len(), 1);
    }
}
