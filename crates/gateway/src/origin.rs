//! DNS-rebinding defence: which `Host` and `Origin` values the gateway serves.
//!
//! A page on an attacker's domain can resolve that domain to 127.0.0.1 and
//! talk to a local gateway from the victim's browser. Its requests carry the
//! attacker's name in `Host` and `Origin`; refusing names that are not ours
//! (loopback by default, plus configured ones) stops it.

use switchboard_config::ServerConfig;

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Splits `host[:port]` (with `[v6]` literals) and returns the host.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Loopback names always pass. On a loopback listener nothing else does
/// unless listed; on another listener any host passes unless a list is set.
pub(crate) fn host_allowed(server: &ServerConfig, host_header: &str) -> bool {
    let host = strip_port(host_header.trim());
    if is_loopback_name(host) {
        return true;
    }
    if server
        .allowed_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
    {
        return true;
    }
    !server.listen.ip().is_loopback() && server.allowed_hosts.is_empty()
}

/// An `Origin` passes when its host is loopback or it is listed exactly.
pub(crate) fn origin_allowed(server: &ServerConfig, origin: &str) -> bool {
    let origin = origin.trim();
    if server
        .allowed_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    is_loopback_name(strip_port(rest.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(listen: &str, hosts: &[&str], origins: &[&str]) -> ServerConfig {
        let mut c = switchboard_config::parse(&format!("[server]\nlisten = \"{listen}\""), "t")
            .unwrap()
            .server;
        c.allowed_hosts = hosts.iter().map(|s| s.to_string()).collect();
        c.allowed_origins = origins.iter().map(|s| s.to_string()).collect();
        c
    }

    #[test]
    fn a_loopback_listener_serves_loopback_names_only() {
        let s = server("127.0.0.1:8080", &[], &[]);
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost",
            "127.0.0.1",
        ] {
            assert!(host_allowed(&s, ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8080",
            "192.168.1.5:8080",
        ] {
            assert!(!host_allowed(&s, bad), "{bad}");
        }
        assert!(host_allowed(
            &server("127.0.0.1:8080", &["gw.internal"], &[]),
            "gw.internal:8080"
        ));
    }

    #[test]
    fn a_public_listener_serves_any_host_until_a_list_is_set() {
        assert!(host_allowed(
            &server("0.0.0.0:8080", &[], &[]),
            "gw.example.com"
        ));
        assert!(!host_allowed(
            &server("0.0.0.0:8080", &["gw.example.com"], &[]),
            "evil.com"
        ));
    }

    #[test]
    fn origins_must_be_loopback_or_listed() {
        let s = server("127.0.0.1:8080", &[], &["https://app.example.com"]);
        assert!(origin_allowed(&s, "http://localhost:6274"));
        assert!(origin_allowed(&s, "http://127.0.0.1"));
        assert!(origin_allowed(&s, "https://app.example.com"));
        assert!(!origin_allowed(&s, "http://evil.example.com"));
        assert!(!origin_allowed(&s, "null"));
        assert!(!origin_allowed(&s, "file://localhost"));
    }
}
