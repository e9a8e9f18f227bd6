//! Prometheus text exposition (format 0.0.4) from `prometheus-client`'s OpenMetrics output.
//!
//! `prometheus-client` encodes only OpenMetrics text, where a counter family is named without
//! its `_total` suffix (`# TYPE http_requests counter` over `http_requests_total` samples).
//! `promtool check metrics` and any scraper that falls back to the classic text format parse
//! that as a sample-less counter plus an untyped, help-less `http_requests_total`. So the
//! exposition is rewritten line by line into the classic format:
//!
//! - `# HELP`/`# TYPE` of a counter family are renamed to the sample name (`<family>_total`);
//! - the OpenMetrics `unknown` type becomes the classic `untyped`;
//! - `# UNIT` and `# EOF`, which the classic format lacks, are dropped.
//!
//! Sample lines are identical in both formats for the metric types this crate registers
//! (no exemplars, no `_created` series, no info metrics), so they pass through unchanged.

use std::collections::HashSet;

/// The `Content-Type` of [`crate::Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites an OpenMetrics text exposition into the classic Prometheus text format.
pub(crate) fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();

    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some((keyword, name, rest)) = descriptor(line) {
            out.push_str("# ");
            out.push_str(keyword);
            out.push(' ');
            out.push_str(name);
            if counters.contains(name) {
                out.push_str("_total");
            }
            out.push(' ');
            out.push_str(if keyword == "TYPE" && rest == "unknown" {
                "untyped"
            } else {
                rest
            });
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Splits `# HELP name text` / `# TYPE name type` into its keyword, name and remainder.
fn descriptor(line: &str) -> Option<(&str, &str, &str)> {
    let rest = line.strip_prefix("# ")?;
    let (keyword, rest) = rest.split_once(' ')?;
    if keyword != "HELP" && keyword != "TYPE" {
        return None;
    }
    let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((keyword, name, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gain_total_on_descriptors_only() {
        let om = "# HELP http_requests Requests.\n\
                  # TYPE http_requests counter\n\
                  http_requests_total{method=\"GET\"} 1\n\
                  # HELP up Up.\n\
                  # TYPE up gauge\n\
                  up 1\n\
                  # EOF\n";
        let want = "# HELP http_requests_total Requests.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"GET\"} 1\n\
                    # HELP up Up.\n\
                    # TYPE up gauge\n\
                    up 1\n";
        assert_eq!(openmetrics_to_prometheus(om), want);
    }

    #[test]
    fn unknown_becomes_untyped_and_unit_lines_go() {
        let om = "# HELP sessions_total Open.\n\
                  # TYPE sessions_total unknown\n\
                  sessions_total 3\n\
                  # HELP lat_seconds Latency.\n\
                  # TYPE lat_seconds histogram\n\
                  # UNIT lat_seconds seconds\n\
                  lat_seconds_sum 0.5\n\
                  # EOF\n";
        let want = "# HELP sessions_total Open.\n\
                    # TYPE sessions_total untyped\n\
                    sessions_total 3\n\
                    # HELP lat_seconds Latency.\n\
                    # TYPE lat_seconds histogram\n\
                    lat_seconds_sum 0.5\n";
        assert_eq!(openmetrics_to_prometheus(om), want);
    }

    #[test]
    fn empty_exposition_stays_empty() {
        assert_eq!(openmetrics_to_prometheus(""), "");
        assert_eq!(openmetrics_to_prometheus("# EOF\n"), "");
    }
}
