//! Header redaction for logs and span attributes.
//!
//! The list is deliberately broad and matched by name only: a credential that reaches a log
//! line is shipped, indexed and kept for months, while an over-redacted debug header costs one
//! round of "what was that value". Values are never inspected.

/// What a redacted value is replaced with.
pub const REDACTED: &str = "***";

/// Header names redacted whatever their case.
const SENSITIVE_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Substrings that make any header name sensitive, whatever its case: `X-Auth-Token`,
/// `X-Client-Secret`, `Api-Key`, `X-Db-Password`, ...
const SENSITIVE_PARTS: &[&str] = &["token", "secret", "password", "api-key", "apikey"];

/// Whether a header named `name` may hold a credential.
pub fn is_sensitive_header(name: &str) -> bool {
    SENSITIVE_NAMES.iter().any(|s| name.eq_ignore_ascii_case(s))
        || SENSITIVE_PARTS
            .iter()
            .any(|part| contains_ignore_case(name, part))
}

/// The value to log for header `name`: [`REDACTED`] when the name may hold a credential (see
/// [`is_sensitive_header`]), else `value` unchanged.
pub fn redact_header<'a>(name: &str, value: &'a str) -> &'a str {
    if is_sensitive_header(name) {
        REDACTED
    } else {
        value
    }
}

/// ASCII case-insensitive substring test, without allocating (header names are ASCII).
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_in_any_case() {
        for name in [
            "Authorization",
            "authorization",
            "AUTHORIZATION",
            "Proxy-Authorization",
            "Cookie",
            "set-cookie",
            "X-Api-Key",
            "x-auth-token",
            "X-Access-TOKEN",
            "Token",
            "x-client-secret",
            "Secret",
            "X-DB-Password",
            "Api-Key",
            "X-Apikey",
        ] {
            assert_eq!(redact_header(name, "hunter2"), "***", "{name}");
            assert!(is_sensitive_header(name), "{name}");
        }
    }

    #[test]
    fn other_headers_pass_through() {
        for name in [
            "Content-Type",
            "Accept",
            "Mcp-Session-Id",
            "Mcp-Protocol-Version",
            "traceparent",
            "User-Agent",
            "X-Request-Id",
            "",
        ] {
            assert_eq!(redact_header(name, "value"), "value", "{name:?}");
        }
    }

    #[test]
    fn substring_matching() {
        assert!(contains_ignore_case("X-TOKEN-ID", "token"));
        assert!(!contains_ignore_case("tok", "token"));
        assert!(contains_ignore_case("anything", ""));
    }
}
