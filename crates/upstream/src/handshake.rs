//! The `initialize` exchange: what we offer and what we accept.

use serde_json::value::RawValue;
use switchboard_protocol::version::{LATEST_LEGACY, LEGACY_VERSIONS};

use crate::{ServerInfo, CLIENT_NAME, CLIENT_VERSION};

/// The `initialize` params: the newest legacy revision, and every client
/// capability the gateway can relay to its own clients.
pub(crate) fn initialize_params() -> Box<RawValue> {
    switchboard_protocol::to_raw(&serde_json::json!({
        "protocolVersion": LATEST_LEGACY,
        "capabilities": {
            "sampling": {},
            "elicitation": {},
            "roots": { "listChanged": true },
        },
        "clientInfo": { "name": CLIENT_NAME, "version": CLIENT_VERSION },
    }))
}

/// Reads an `InitializeResult`, refusing versions we do not speak.
pub(crate) fn parse_result(raw: &RawValue) -> Result<ServerInfo, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct InitializeResult {
        protocol_version: String,
        #[serde(default)]
        capabilities: serde_json::Value,
        #[serde(default)]
        server_info: serde_json::Value,
        #[serde(default)]
        instructions: Option<String>,
    }
    let r: InitializeResult =
        serde_json::from_str(raw.get()).map_err(|e| format!("malformed initialize result: {e}"))?;
    if !LEGACY_VERSIONS.contains(&r.protocol_version.as_str()) {
        return Err(format!(
            "unsupported protocol version {:?} (supported: {})",
            r.protocol_version,
            LEGACY_VERSIONS.join(", ")
        ));
    }
    Ok(ServerInfo {
        protocol_version: r.protocol_version,
        capabilities: r.capabilities,
        server_info: r.server_info,
        instructions: r.instructions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn a_supported_version_is_accepted_with_its_details() {
        let info = parse_result(&raw(
            r#"{"protocolVersion":"2025-03-26","capabilities":{"tools":{}},"serverInfo":{"name":"x"},"instructions":"hi"}"#,
        ))
        .unwrap();
        assert_eq!(info.protocol_version, "2025-03-26");
        assert_eq!(info.instructions.as_deref(), Some("hi"));
    }

    #[test]
    fn an_unknown_version_is_refused_with_a_clear_error() {
        let err = parse_result(&raw(r#"{"protocolVersion":"2099-01-01"}"#)).unwrap_err();
        assert!(
            err.contains("unsupported protocol version \"2099-01-01\""),
            "{err}"
        );
    }
}
