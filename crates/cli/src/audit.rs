//! `switchboard audit`: queries the audit log of the store a config names
//! and prints it as a table, JSON Lines or CSV.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::process::ExitCode;
use switchboard_config::{ConfigSource, Overrides};
use switchboard_store::{AuditFilter, AuditRecord, Outcome, StoreSettings};

use crate::cli::ConfigArgs;

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Records at or after this time: a duration ago ("1h", "30m", "7d") or RFC 3339.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Records before this time: a duration ago or RFC 3339.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Only this identity (exact).
    #[arg(long)]
    pub(crate) identity: Option<String>,
    /// Only this session id (exact).
    #[arg(long)]
    pub(crate) session: Option<String>,
    /// Only this upstream (exact).
    #[arg(long)]
    pub(crate) upstream: Option<String>,
    /// Tool name, resource URI or prompt name; a glob with `*` or `?`.
    #[arg(long)]
    pub(crate) tool: Option<String>,
    /// Only this method, e.g. tools/call or authz_denied.
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// Only this outcome: ok, error, denied, unauthenticated, rate_limited, invalid, timeout, cancelled.
    #[arg(long, value_parser = |s: &str| s.parse::<Outcome>())]
    pub(crate) outcome: Option<Outcome>,
    /// At most this many records, the most recent ones (capped at 100000).
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Table,
    Jsonl,
    Csv,
}

pub(crate) async fn run(args: AuditArgs) -> Result<ExitCode> {
    let source = ConfigSource::discover(args.config.config.clone());
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "switchboard".into());
    let env = |k: &str| std::env::var(k).ok();
    let config = switchboard_config::load(&source, &Overrides::default(), &env, &exe)?;
    let now = Utc::now();
    let filter = AuditFilter {
        since: args
            .since
            .as_deref()
            .map(|s| parse_time(s, now))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|s| parse_time(s, now))
            .transpose()?,
        identity: args.identity,
        session_id: args.session,
        upstream: args.upstream,
        target: args.tool,
        method: args.method,
        outcome: args.outcome,
        limit: Some(args.limit),
    };
    let store = switchboard_store::open(&StoreSettings::from(&config.store))
        .await
        .context("cannot open the store named by [store] (or DATABASE_URL)")?;
    let records = store.query_audit(&filter).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Jsonl => {
            for r in &records {
                serde_json::to_writer(&mut out, r)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => write_csv(&mut out, &records)?,
        Format::Table => write_table(&mut out, &records)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The store's reading of an operator's time, as an `anyhow` error here.
fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    switchboard_store::parse_time(text, now).map_err(anyhow::Error::msg)
}

const CSV_HEADER: [&str; 14] = [
    "time",
    "id",
    "identity",
    "session_id",
    "client_name",
    "client_version",
    "method",
    "upstream",
    "target",
    "outcome",
    "duration_ms",
    "error",
    "arguments_digest",
    "arguments",
];

fn write_csv(out: &mut impl Write, records: &[AuditRecord]) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_HEADER)?;
    for r in records {
        let opt = |v: &Option<String>| cell(v.as_deref().unwrap_or(""));
        w.write_record([
            r.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            cell(&r.id),
            opt(&r.identity),
            opt(&r.session_id),
            opt(&r.client_name),
            opt(&r.client_version),
            cell(&r.method),
            opt(&r.upstream),
            opt(&r.target),
            r.outcome.to_string(),
            r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
            opt(&r.error),
            opt(&r.arguments_digest),
            r.arguments
                .as_ref()
                .map(|a| cell(&a.to_string()))
                .unwrap_or_default(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// A CSV cell that a spreadsheet will not run as a formula: values come from
/// clients, and `=HYPERLINK(...)` in a tool name must stay text.
fn cell(v: &str) -> String {
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_owned()
    }
}

fn write_table(out: &mut impl Write, records: &[AuditRecord]) -> Result<()> {
    writeln!(
        out,
        "{:<20} {:<20} {:<16} {:<32} {:<12} {:>8}  ERROR",
        "TIME", "IDENTITY", "METHOD", "TARGET", "OUTCOME", "MS"
    )?;
    for r in records {
        let opt = |v: &Option<String>, w: usize| fit(v.as_deref().unwrap_or("-"), w);
        writeln!(
            out,
            "{:<20} {:<20} {:<16} {:<32} {:<12} {:>8}  {}",
            r.time.format("%Y-%m-%dT%H:%M:%SZ"),
            opt(&r.identity, 20),
            fit(&r.method, 16),
            opt(&r.target, 32),
            r.outcome.as_str(),
            r.duration_ms
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            opt(&r.error, 80),
        )?;
    }
    writeln!(out, "({} records)", records.len())?;
    Ok(())
}

/// At most `width` characters, with control characters (a terminal escape
/// sequence in a client-chosen name) shown as `?`.
fn fit(v: &str, width: usize) -> String {
    let clean: String = v
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.chars().count() <= width {
        clean
    } else {
        let mut s: String = clean.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_are_durations_ago_or_rfc3339() {
        let now = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        assert_eq!(
            parse_time("1h", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 31, 11, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time("2d", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 29, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:00+02:00", now).unwrap(),
            Utc.with_ymd_and_hms(2025, 12, 31, 22, 0, 0).unwrap()
        );
        let msg = parse_time("yesterday", now).unwrap_err().to_string();
        assert!(msg.contains("RFC 3339") && msg.contains("\"1h\""), "{msg}");
    }

    #[test]
    fn csv_cells_never_start_a_spreadsheet_formula() {
        let mut r = AuditRecord::new("tools/call", Outcome::Ok);
        r.target = Some("=HYPERLINK(\"http://evil\")".into());
        r.identity = Some("a,b \"quoted\"".into());
        let mut out = Vec::new();
        write_csv(&mut out, &[r]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut rows = csv::Reader::from_reader(text.as_bytes());
        let row = rows.records().next().unwrap().unwrap();
        assert_eq!(&row[2], "a,b \"quoted\"", "commas and quotes round-trip");
        assert_eq!(&row[8], "'=HYPERLINK(\"http://evil\")");
    }

    #[test]
    fn table_cells_are_truncated_and_stripped_of_control_characters() {
        assert_eq!(fit("abc", 5), "abc");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("a\u{1b}[2Jb", 10), "a?[2Jb");
    }
}
