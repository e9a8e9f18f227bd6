//! The one error type of this crate, and its mapping to JSON-RPC.

use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::{code, ErrorObject};

/// Why a call to an upstream did not produce a result.
///
/// Every variant names the upstream, so the gateway can report *who* failed
/// without carrying the name separately.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The upstream answered with a JSON-RPC error; the gateway passes it
    /// through unchanged.
    #[error("upstream {upstream:?} answered with an error: {error}")]
    Rpc {
        upstream: Arc<str>,
        error: ErrorObject,
    },
    /// The upstream is not connected (starting, down, stopped, overloaded).
    #[error("upstream {upstream:?} is unavailable: {reason}")]
    Unavailable { upstream: Arc<str>, reason: String },
    /// No answer within the request's timeout; the upstream was told to
    /// cancel.
    #[error("upstream {upstream:?} timed out after {}", DisplayDuration(*after))]
    Timeout { upstream: Arc<str>, after: Duration },
    /// The caller cancelled; the upstream was told to cancel.
    #[error("request to upstream {upstream:?} was cancelled")]
    Cancelled { upstream: Arc<str> },
    /// A message from the upstream exceeded `max_response_bytes`.
    #[error("upstream {upstream:?} sent a message over the limit of {limit} bytes")]
    TooLarge { upstream: Arc<str>, limit: usize },
    /// The upstream broke the protocol (bad JSON, unexpected HTTP status, ...).
    #[error("upstream {upstream:?} broke the protocol: {detail}")]
    Protocol { upstream: Arc<str>, detail: String },
    /// A per-session upstream already runs its `max_instances` processes, so
    /// a new session gets none; sessions that end or idle free them.
    #[error("upstream {upstream:?} is overloaded: it already runs its max_instances of {max_instances} per-session processes; retry later or raise max_instances")]
    PoolFull {
        upstream: Arc<str>,
        max_instances: usize,
    },
}

impl CallError {
    /// Returns the name of the upstream that failed.
    pub fn upstream(&self) -> &str {
        match self {
            CallError::Rpc { upstream, .. }
            | CallError::Unavailable { upstream, .. }
            | CallError::Timeout { upstream, .. }
            | CallError::Cancelled { upstream }
            | CallError::TooLarge { upstream, .. }
            | CallError::Protocol { upstream, .. }
            | CallError::PoolFull { upstream, .. } => upstream,
        }
    }

    /// Whether another attempt could succeed (the caller still decides
    /// whether the method is safe to repeat).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            CallError::Unavailable { .. } | CallError::Timeout { .. }
        )
    }

    /// Returns the JSON-RPC error to answer a downstream client with: the
    /// upstream's own error unchanged, or a gateway error whose `data` names
    /// the upstream.
    pub fn to_error_object(&self) -> ErrorObject {
        let code = match self {
            CallError::Rpc { error, .. } => return error.clone(),
            CallError::Unavailable { .. } => code::UPSTREAM_UNAVAILABLE,
            CallError::Timeout { .. } => code::REQUEST_TIMEOUT,
            CallError::Cancelled { .. } => code::REQUEST_CANCELLED,
            CallError::TooLarge { .. } => code::MESSAGE_TOO_LARGE,
            CallError::Protocol { .. } => code::INTERNAL_ERROR,
            CallError::PoolFull { .. } => code::OVERLOADED,
        };
        ErrorObject::new(code, self.to_string())
            .with_data(serde_json::json!({ "upstream": self.upstream() }))
    }
}

/// Formats a duration the way people write it: `60s`, `1500ms`.
struct DisplayDuration(Duration);

impl std::fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        if d.subsec_millis() == 0 && d.as_secs() > 0 {
            write!(f, "{}s", d.as_secs())
        } else {
            write!(f, "{}ms", d.as_millis())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_errors_name_the_upstream_in_message_and_data() {
        let e = CallError::Timeout {
            upstream: "docs".into(),
            after: Duration::from_secs(60),
        };
        let o = e.to_error_object();
        assert_eq!(o.code, code::REQUEST_TIMEOUT);
        assert_eq!(o.message, "upstream \"docs\" timed out after 60s");
        assert_eq!(o.data.unwrap()["upstream"], "docs");
    }

    #[test]
    fn a_full_pool_is_an_overload_naming_the_upstream_and_its_cap() {
        let o = CallError::PoolFull {
            upstream: "browser".into(),
            max_instances: 4,
        }
        .to_error_object();
        assert_eq!(o.code, code::OVERLOADED);
        assert!(o.message.contains("\"browser\""), "{}", o.message);
        assert!(o.message.contains("max_instances of 4"), "{}", o.message);
        assert_eq!(o.data.unwrap()["upstream"], "browser");
    }

    #[test]
    fn an_upstream_rpc_error_passes_through_unchanged() {
        let inner = ErrorObject::new(-32602, "bad").with_data(serde_json::json!([1]));
        let e = CallError::Rpc {
            upstream: "a".into(),
            error: inner.clone(),
        };
        assert_eq!(e.to_error_object(), inner);
    }
}
