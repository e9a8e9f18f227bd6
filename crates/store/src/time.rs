//! Times as operators write them in audit filters.

use chrono::{DateTime, Utc};

/// A time given as a duration before `now` ("90m", "7d") or as RFC 3339.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        format!(
            "{text:?} is neither a duration (e.g. \"1h\", \"7d\") nor an RFC 3339 time (e.g. \"2026-01-31T12:00:00Z\")"
        )
    };
    let d = humantime::parse_duration(text).map_err(|_| bad())?;
    let d = chrono::Duration::from_std(d).map_err(|_| format!("{text:?} is too long ago"))?;
    now.checked_sub_signed(d)
        .ok_or_else(|| format!("{text:?} is too long ago"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_count_back_from_now_and_rfc3339_is_absolute() {
        let now = DateTime::parse_from_rfc3339("2026-01-31T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_time("1h", now).unwrap().to_rfc3339(),
            "2026-01-31T11:00:00+00:00"
        );
        assert_eq!(
            parse_time("2025-12-24T00:00:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2025-12-23T23:00:00+00:00"
        );
        for bad in ["yesterday", "", "1h' OR '1'='1", "99999999999d"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
