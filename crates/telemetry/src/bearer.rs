//! Bearer-token check for the optional `METRICS_TOKEN` protection of `/metrics`.

use subtle::ConstantTimeEq;

/// Returns whether a request may read `/metrics`.
///
/// - `expected == None`: no token is configured, so the endpoint is open.
/// - `expected == Some("")`: a misconfiguration that must not mean "open"; every request is
///   refused (fail closed).
/// - otherwise the `Authorization` header must be `Bearer <token>` (scheme case-insensitive,
///   RFC 7235) with exactly the expected token.
///
/// The token comparison takes time that depends only on the expected token's length, never
/// on how many leading bytes of a guess are right, so the secret cannot be recovered byte by
/// byte from response timings.
pub fn check_bearer(expected: Option<&str>, authorization_header: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let presented = authorization_header
        .and_then(|header| header.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_matches(' '))
        .unwrap_or("");
    !expected.is_empty() && bool::from(constant_time_eq(expected.as_bytes(), presented.as_bytes()))
}

/// Compares `presented` with `expected` in time that depends on `expected.len()` only.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> subtle::Choice {
    let same_len = (expected.len() as u64).ct_eq(&(presented.len() as u64));
    expected
        .iter()
        .enumerate()
        .fold(same_len, |acc, (i, byte)| {
            acc & byte.ct_eq(presented.get(i).unwrap_or(&0))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_configured_means_open() {
        assert!(check_bearer(None, None));
        assert!(check_bearer(None, Some("Bearer anything")));
    }

    #[test]
    fn the_right_token_passes() {
        assert!(check_bearer(Some("s3cret"), Some("Bearer s3cret")));
        assert!(check_bearer(Some("s3cret"), Some("bearer s3cret")));
        assert!(check_bearer(Some("s3cret"), Some("BEARER  s3cret")));
    }

    #[test]
    fn anything_else_is_refused() {
        let token = Some("s3cret");
        for header in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("s3cret"),
            Some("Basic s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Bearer S3CRET"),
            Some("Bearer s3cret\0"),
            Some("Bearers3cret"),
        ] {
            assert!(!check_bearer(token, header), "header {header:?}");
        }
    }

    #[test]
    fn an_empty_configured_token_fails_closed() {
        assert!(!check_bearer(Some(""), None));
        assert!(!check_bearer(Some(""), Some("Bearer ")));
        assert!(!check_bearer(Some(""), Some("Bearer")));
    }
}
