//! The resource-server side of MCP authorization: the RFC 9728 protected
//! resource metadata document and the `WWW-Authenticate` header that points
//! clients at it, so a standard MCP client can find the authorization
//! server on its own.

use serde_json::{json, Map, Value};
use url::Url;

use crate::error::{AuthError, SettingsError};

/// What the metadata document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrmSettings {
    /// The gateway's resource identifier: the URL clients connect to
    /// (`https://gateway.example.com/mcp`), which is also the audience its
    /// tokens must carry. Kept as written: issuers and resources are
    /// compared as strings, so no trailing slash may be added.
    pub resource: String,
    /// Issuer identifiers of the authorization servers, as written.
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub resource_name: Option<String>,
    pub resource_documentation: Option<String>,
}

impl PrmSettings {
    /// Checks that the resource and issuers are absolute `https` URLs (http
    /// only for loopback) without fragments, as RFC 9728 §2 requires.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let check = |field: &'static str, s: &str| -> Result<Url, SettingsError> {
            let url = Url::parse(s).map_err(|e| {
                SettingsError::new(field, format!("{s:?} is not an absolute url: {e}"))
            })?;
            if url.fragment().is_some() {
                return Err(SettingsError::new(field, format!("{s:?} has a fragment")));
            }
            crate::fetch::require_secure(&url, field)?;
            Ok(url)
        };
        check("resource", &self.resource)?;
        if self.authorization_servers.is_empty() {
            return Err(SettingsError::new(
                "authorization_servers",
                "is empty; name at least the issuer of your tokens",
            ));
        }
        for s in &self.authorization_servers {
            check("authorization_servers", s)?;
        }
        Ok(())
    }
}

/// The RFC 9728 §2 metadata document, served at
/// [`metadata_url`] (and, for older clients, at the root well-known path).
pub fn protected_resource_metadata(settings: &PrmSettings) -> Value {
    let mut doc = Map::new();
    doc.insert("resource".into(), json!(settings.resource));
    doc.insert(
        "authorization_servers".into(),
        json!(settings.authorization_servers),
    );
    if !settings.scopes_supported.is_empty() {
        doc.insert("scopes_supported".into(), json!(settings.scopes_supported));
    }
    // Tokens are accepted in the Authorization header only: a token in a
    // query string ends up in logs.
    doc.insert("bearer_methods_supported".into(), json!(["header"]));
    if let Some(n) = &settings.resource_name {
        doc.insert("resource_name".into(), json!(n));
    }
    if let Some(d) = &settings.resource_documentation {
        doc.insert("resource_documentation".into(), json!(d));
    }
    Value::Object(doc)
}

/// The well-known path segment of RFC 9728 §3.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Returns where the metadata of `resource` lives (RFC 9728 §3.1): the
/// well-known segment inserted between the host and the path, so
/// `https://gw/mcp` → `https://gw/.well-known/oauth-protected-resource/mcp`.
pub fn metadata_url(resource: &Url) -> Url {
    let mut url = resource.clone();
    let path = resource.path().trim_end_matches('/');
    url.set_path(&format!("{WELL_KNOWN}{path}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// Builds a `WWW-Authenticate` value for a 401 or 403 (RFC 6750 §3, RFC
/// 9728 §5.1): `Bearer resource_metadata="…"` plus, when given, the error
/// code, its description and the scope needed.
pub fn www_authenticate(
    resource_metadata_url: &str,
    error: Option<&AuthError>,
    scope: Option<&str>,
) -> String {
    let mut value = format!(
        "Bearer resource_metadata=\"{}\"",
        quoted(resource_metadata_url)
    );
    if let Some(e) = error {
        if let Some(code) = e.rfc6750_code() {
            value.push_str(&format!(
                ", error=\"{code}\", error_description=\"{}\"",
                quoted(&e.to_string())
            ));
        }
    }
    if let Some(s) = scope {
        value.push_str(&format!(", scope=\"{}\"", quoted(s)));
    }
    value
}

/// Keeps only the characters RFC 6750 §3 allows in these quoted values
/// (%x20-21 / %x23-5B / %x5D-7E), so nothing can break out of the quotes or
/// the header.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| matches!(*c as u32, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        .take(512)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PrmSettings {
        PrmSettings {
            resource: "https://gw.example.com/mcp".into(),
            authorization_servers: vec!["https://idp.example.com".into()],
            scopes_supported: vec!["web__*".into(), "admin".into()],
            resource_name: Some("Switchboard".into()),
            resource_documentation: None,
        }
    }

    #[test]
    fn metadata_has_the_rfc_9728_fields_as_written() {
        let doc = protected_resource_metadata(&settings());
        assert_eq!(
            doc,
            json!({
                "resource": "https://gw.example.com/mcp",
                "authorization_servers": ["https://idp.example.com"],
                "scopes_supported": ["web__*", "admin"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Switchboard",
            })
        );
        let mut s = settings();
        s.scopes_supported.clear();
        assert!(protected_resource_metadata(&s)
            .get("scopes_supported")
            .is_none());
    }

    #[test]
    fn the_metadata_url_inserts_the_well_known_segment_before_the_path() {
        let rows = [
            (
                "https://gw/mcp",
                "https://gw/.well-known/oauth-protected-resource/mcp",
            ),
            (
                "https://gw/",
                "https://gw/.well-known/oauth-protected-resource",
            ),
            (
                "https://gw:8443/a/b/?x=1",
                "https://gw:8443/.well-known/oauth-protected-resource/a/b",
            ),
        ];
        for (resource, expected) in rows {
            assert_eq!(
                metadata_url(&Url::parse(resource).unwrap()).as_str(),
                expected
            );
        }
    }

    #[test]
    fn www_authenticate_points_at_the_metadata_and_carries_the_error() {
        let url = "https://gw/.well-known/oauth-protected-resource/mcp";
        assert_eq!(
            www_authenticate(url, Some(&AuthError::Missing), None),
            format!("Bearer resource_metadata=\"{url}\"")
        );
        assert_eq!(
            www_authenticate(url, Some(&AuthError::Expired), None),
            format!("Bearer resource_metadata=\"{url}\", error=\"invalid_token\", error_description=\"token has expired\"")
        );
        let forbidden = AuthError::InsufficientScope {
            needed: "tool:web__search".into(),
        };
        let v = www_authenticate(url, Some(&forbidden), Some("web__search"));
        assert!(v.ends_with(", scope=\"web__search\""), "{v}");
        assert!(v.contains("error=\"insufficient_scope\""), "{v}");
    }

    #[test]
    fn quoted_values_cannot_break_out_of_the_header() {
        let v = www_authenticate("https://gw/x\"\r\nSet-Cookie: a=b", None, Some("a\\\"b"));
        assert_eq!(
            v,
            "Bearer resource_metadata=\"https://gw/xSet-Cookie: a=b\", scope=\"ab\""
        );
        assert!(http::HeaderValue::from_str(&v).is_ok());
    }

    #[test]
    fn settings_need_absolute_secure_urls_and_an_issuer() {
        settings().validate().unwrap();
        let rows: Vec<(PrmSettings, &str)> = vec![
            (
                PrmSettings {
                    resource: "mcp".into(),
                    ..settings()
                },
                "resource",
            ),
            (
                PrmSettings {
                    resource: "http://gw.example.com/mcp".into(),
                    ..settings()
                },
                "resource",
            ),
            (
                PrmSettings {
                    resource: "https://gw/mcp#x".into(),
                    ..settings()
                },
                "resource",
            ),
            (
                PrmSettings {
                    authorization_servers: vec![],
                    ..settings()
                },
                "authorization_servers",
            ),
        ];
        for (s, field) in rows {
            assert_eq!(s.validate().unwrap_err().field, field);
        }
        let local = PrmSettings {
            resource: "http://127.0.0.1:8080/mcp".into(),
            ..settings()
        };
        local.validate().unwrap();
    }
}
