//! Protocol revisions and version negotiation.

/// Legacy-era revisions (those with an `initialize` handshake), oldest first.
pub const LEGACY_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The newest revision the gateway negotiates in `initialize`.
pub const LATEST_LEGACY: &str = "2025-11-25";

/// The revision assumed when an HTTP client sends no `MCP-Protocol-Version`
/// header (the spec's backwards-compatibility default).
pub const DEFAULT_HTTP_VERSION: &str = "2025-03-26";

/// The only revision in which JSON-RPC batches are part of the protocol.
pub const BATCH_VERSION: &str = "2025-03-26";

/// Returns the revision to answer an `initialize` that requested `requested`:
/// the same one when supported, else the newest supported (the client then
/// decides whether it can continue).
pub fn negotiate(requested: &str) -> &'static str {
    LEGACY_VERSIONS
        .iter()
        .find(|v| **v == requested)
        .copied()
        .unwrap_or(LATEST_LEGACY)
}

/// Whether revision `version` is `min` or later. Revisions are ISO dates, so
/// their lexical order is their order in time.
pub fn is_at_least(version: &str, min: &str) -> bool {
    version >= min
}

/// Returns the static form of a supported revision, `None` when unsupported.
pub fn supported(version: &str) -> Option<&'static str> {
    LEGACY_VERSIONS.iter().find(|v| **v == version).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_answers_a_supported_version_with_itself() {
        for v in LEGACY_VERSIONS {
            assert_eq!(negotiate(v), *v);
        }
    }

    #[test]
    fn negotiation_answers_an_unknown_version_with_the_latest() {
        assert_eq!(negotiate("1999-01-01"), LATEST_LEGACY);
        assert_eq!(supported("2030-01-01"), None);
    }
}
