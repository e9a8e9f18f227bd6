//! Per-client-IP rate limiting: a token bucket per address (IPv6 per /64, so
//! one host cannot multiply its budget by rotating addresses).
//!
//! Loopback clients are exempt unless configured: a gateway on 127.0.0.1
//! serves its own user, and the only anonymous deployments are local ones.
//! Idle buckets are dropped periodically so the table cannot grow without
//! bound. The address is the TCP peer; behind a reverse proxy, limit there.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct IpLimiter {
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    loopback_too: bool,
}

impl IpLimiter {
    /// `None` when `per_minute` is 0 (limiting off).
    pub(crate) fn new(per_minute: u32, loopback_too: bool) -> Option<Self> {
        NonZeroU32::new(per_minute).map(|n| Self {
            buckets: RateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
            loopback_too,
        })
    }

    /// Takes one token for `ip`, or says how long until the next one.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        // Loopback is decided on the address itself: its /64 (`::`) is not loopback.
        if ip.to_canonical().is_loopback() && !self.loopback_too {
            return Ok(());
        }
        self.buckets
            .check_key(&bucket(ip))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops buckets that are full again (idle clients).
    pub(crate) fn forget_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }
}

/// Token buckets per principal (an authenticated identity), for the
/// per-identity limit and for each per-tool limit.
#[derive(Debug)]
pub(crate) struct PrincipalLimiter {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl PrincipalLimiter {
    /// `None` when `per_minute` is 0 (limiting off).
    pub(crate) fn new(per_minute: u32) -> Option<Self> {
        NonZeroU32::new(per_minute).map(|n| Self {
            buckets: RateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
        })
    }

    /// Takes one token for `principal`, or says how long until the next one.
    pub(crate) fn check(&self, principal: &str) -> Result<(), Duration> {
        self.buckets
            .check_key(&principal.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    pub(crate) fn forget_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }
}

/// Per-tool limits: calls per minute per principal for tools whose exposed
/// name matches a glob. Every matching rule takes a token.
#[derive(Debug)]
pub(crate) struct ToolLimits {
    rules: Vec<(String, globset::GlobMatcher, PrincipalLimiter)>,
}

impl ToolLimits {
    /// Globs were validated with the config; one that still fails to
    /// compile is skipped with an error log rather than stopping the gateway.
    pub(crate) fn new(rules: &[(String, u32)]) -> Self {
        Self {
            rules: rules
                .iter()
                .filter_map(|(glob, n)| {
                    let m = globset::Glob::new(glob)
                        .map_err(|e| tracing::error!(glob, error = %e, "tool rate limit glob"))
                        .ok()?
                        .compile_matcher();
                    Some((glob.clone(), m, PrincipalLimiter::new(*n)?))
                })
                .collect(),
        }
    }

    /// Takes a token from every rule matching `tool`; on refusal names the
    /// rule and the wait.
    pub(crate) fn check(&self, principal: &str, tool: &str) -> Result<(), (&str, Duration)> {
        for (glob, m, limiter) in &self.rules {
            if m.is_match(tool) {
                limiter.check(principal).map_err(|w| (glob.as_str(), w))?;
            }
        }
        Ok(())
    }

    pub(crate) fn forget_idle(&self) {
        for (_, _, l) in &self.rules {
            l.forget_idle();
        }
    }
}

/// The key of an address: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_have_separate_budgets() {
        let l = PrincipalLimiter::new(1).unwrap();
        assert!(l.check("key:1").is_ok());
        assert!(l.check("key:1").is_err());
        assert!(l.check("key:2").is_ok());
        assert!(PrincipalLimiter::new(0).is_none());
    }

    #[test]
    fn a_tool_limit_applies_only_to_matching_tools_and_names_its_rule() {
        let t = ToolLimits::new(&[("github__create_*".into(), 1)]);
        assert!(t.check("key:1", "github__create_issue").is_ok());
        let (rule, wait) = t.check("key:1", "github__create_pr").unwrap_err();
        assert_eq!(rule, "github__create_*");
        assert!(wait > Duration::ZERO);
        assert!(t.check("key:1", "github__list_issues").is_ok());
        assert!(t.check("key:2", "github__create_pr").is_ok());
    }

    #[test]
    fn a_client_over_its_budget_is_told_when_to_come_back() {
        let l = IpLimiter::new(2, false).unwrap();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(l.check(ip).is_ok());
        assert!(l.check(ip).is_ok());
        let wait = l.check(ip).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(
            l.check("203.0.113.8".parse().unwrap()).is_ok(),
            "another client has its own bucket"
        );
    }

    #[test]
    fn loopback_is_exempt_unless_configured() {
        let off = IpLimiter::new(1, false).unwrap();
        for _ in 0..10 {
            assert!(off.check("127.0.0.1".parse().unwrap()).is_ok());
            assert!(off.check("::1".parse().unwrap()).is_ok());
        }
        let on = IpLimiter::new(1, true).unwrap();
        assert!(on.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(on.check("127.0.0.1".parse().unwrap()).is_err());
        assert!(IpLimiter::new(0, true).is_none());
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket() {
        let l = IpLimiter::new(1, false).unwrap();
        assert!(l.check("2001:db8:1:2::1".parse().unwrap()).is_ok());
        assert!(l.check("2001:db8:1:2:ffff::9".parse().unwrap()).is_err());
        assert!(l.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert_eq!(
            bucket("::ffff:198.51.100.1".parse().unwrap()),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
    }
}
