//! The whole comparison in one run: direct upstream vs. gateway (HTTP and stdio upstream) on
//! loopback, plus idle-session memory, written as one Markdown report.
//!
//! Scenarios run one after another, never side by side, so each has the machine to itself
//! (apart from the bench client). A scenario that fails is reported as failed and the suite goes
//! on; only a failing direct upstream aborts, since every ratio is relative to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::time::Instant;

use crate::http::{self, Conn, Endpoint};
use crate::idle;
use crate::load::{self, LoadConfig};
use crate::mcp;
use crate::process::{self, Child};
use crate::report::{self, Scenario, SuiteResults};

/// Bound on waiting for a started process to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of a failed process's log shown in the report and on stderr.
const LOG_TAIL: u64 = 2000;

/// What the suite runs; see `switchboard-bench suite --help`.
#[derive(Debug, Clone)]
pub(crate) struct SuiteConfig {
    pub(crate) gateway_bin: PathBuf,
    pub(crate) upstream_bin: PathBuf,
    pub(crate) out: Option<PathBuf>,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) concurrency: Vec<usize>,
    pub(crate) idle_sessions: usize,
    pub(crate) client_threads: usize,
}

/// Runs the suite, prints the report and writes it into `out` if given.
pub(crate) async fn run(cfg: SuiteConfig) -> Result<()> {
    let gateway_bin = absolute(&cfg.gateway_bin, "--gateway-bin")?;
    let upstream_bin = absolute(&cfg.upstream_bin, "--upstream-bin")?;
    process::become_subreaper()?;
    let work = tempfile::Builder::new()
        .prefix("switchboard-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;

    let outcome = tokio::select! {
        r = scenarios(&cfg, &gateway_bin, &upstream_bin, work.path()) => r,
        _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    // Every `Child` is dropped (killed) by now; catch what escaped through a dead parent.
    let strays = process::sweep_orphans();
    if strays > 0 {
        eprintln!("reaped {strays} leftover descendant process(es)");
    }
    let results = outcome?;

    let section = report::render(&results);
    println!("{section}");
    if let Some(out) = &cfg.out {
        report::write_into(out, &section)?;
        eprintln!("report written to {}", out.display());
    }
    // The report shows what failed; the exit status tells scripts that something did.
    let failed = [
        &results.direct,
        &results.gateway_http,
        &results.gateway_stdio,
    ]
    .iter()
    .filter(|s| s.failure.is_some())
    .count()
        + usize::from(results.idle.is_err());
    if failed > 0 {
        bail!("{failed} scenario(s) failed; see the report");
    }
    Ok(())
}

/// Resolves when the bench is asked to stop (Ctrl-C or SIGTERM).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn scenarios(
    cfg: &SuiteConfig,
    gateway_bin: &Path,
    upstream_bin: &Path,
    dir: &Path,
) -> Result<SuiteResults> {
    let upstream_port = process::free_port()?;
    let upstream_listen = format!("127.0.0.1:{upstream_port}");
    let upstream_url = format!("http://{upstream_listen}/mcp");
    let mut upstream = Child::spawn(
        "upstream",
        upstream_bin,
        &["--transport", "http", "--listen", &upstream_listen],
        dir,
    )?;
    wait_mcp_ready(&mut upstream, &upstream_url).await?;

    eprintln!("== direct: {upstream_url}");
    let direct = load_levels(
        cfg,
        "direct: fake upstream over HTTP (baseline)",
        &upstream_url,
        upstream.pid(),
    )
    .await;
    if let Some(failure) = &direct.failure {
        bail!("direct baseline failed: {failure}");
    }

    let http_entry = format!("url = {}", toml_string(&upstream_url));
    let gateway_http = gateway_scenario(
        cfg,
        "gateway over an HTTP upstream",
        "gateway-http",
        gateway_bin,
        &http_entry,
        dir,
    )
    .await;

    let stdio_entry = format!(
        "command = [{}, \"--transport\", \"stdio\"]",
        toml_string(&upstream_bin.to_string_lossy())
    );
    let gateway_stdio = gateway_scenario(
        cfg,
        "gateway over a stdio upstream",
        "gateway-stdio",
        gateway_bin,
        &stdio_entry,
        dir,
    )
    .await;

    eprintln!("== idle: {} sessions", cfg.idle_sessions);
    let idle = idle_scenario(cfg, gateway_bin, &http_entry, dir)
        .await
        .map_err(|e| format!("{e:#}"));

    upstream.stop().await;
    Ok(SuiteResults {
        direct,
        gateway_http,
        gateway_stdio,
        idle,
        idle_sessions: cfg.idle_sessions,
        command_line: command_line(),
        duration_secs: cfg.duration.as_secs(),
        warmup_secs: cfg.warmup.as_secs(),
        client_threads: cfg.client_threads,
    })
}

/// Starts a gateway with one upstream entry, runs the load levels against it, stops it.
async fn gateway_scenario(
    cfg: &SuiteConfig,
    title: &str,
    name: &str,
    gateway_bin: &Path,
    upstream_entry: &str,
    dir: &Path,
) -> Scenario {
    let started = start_gateway(name, gateway_bin, upstream_entry, dir).await;
    let (mut gateway, url) = match started {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("== {name}: not started: {e:#}");
            return Scenario {
                title: title.to_owned(),
                runs: Vec::new(),
                failure: Some(format!("{e:#}")),
            };
        }
    };
    eprintln!("== {name}: {url}");
    let mut scenario = load_levels(cfg, title, &url, gateway.pid()).await;
    if let Some(status) = gateway.exited() {
        let note = format!(
            "gateway exited ({status}); log: {}",
            gateway.log_tail(LOG_TAIL)
        );
        eprintln!("{note}");
        scenario.failure.get_or_insert(note);
    }
    gateway.stop().await;
    scenario
}

/// Starts a fresh gateway and measures its RSS before and after opening the idle sessions.
async fn idle_scenario(
    cfg: &SuiteConfig,
    gateway_bin: &Path,
    upstream_entry: &str,
    dir: &Path,
) -> Result<idle::IdleReport> {
    let (gateway, url) = start_gateway("gateway-idle", gateway_bin, upstream_entry, dir).await?;
    let report = idle::run(&url, cfg.idle_sessions, gateway.pid()).await;
    gateway.stop().await;
    report
}

/// Runs each configured concurrency; stops at the first level that cannot run at all.
async fn load_levels(cfg: &SuiteConfig, title: &str, url: &str, pid: u32) -> Scenario {
    let mut scenario = Scenario {
        title: title.to_owned(),
        runs: Vec::new(),
        failure: None,
    };
    for &concurrency in &cfg.concurrency {
        let load = LoadConfig {
            url: url.to_owned(),
            concurrency,
            duration: cfg.duration,
            warmup: cfg.warmup,
            sessions: concurrency,
            tool: "echo".to_owned(),
            call_timeout: Duration::from_secs(30),
            pid: Some(pid),
        };
        match load::run(&load).await {
            Ok(report) => {
                load::print(&report);
                scenario.runs.push(report);
            }
            Err(e) => {
                eprintln!("c={concurrency}: {e:#}");
                scenario.failure = Some(format!("c={concurrency}: {e:#}"));
                break;
            }
        }
    }
    scenario
}

/// Writes the gateway config, starts `GATEWAY serve --config FILE` and waits until it serves.
async fn start_gateway(
    name: &str,
    gateway_bin: &Path,
    upstream_entry: &str,
    dir: &Path,
) -> Result<(Child, String)> {
    let port = process::free_port()?;
    let config = dir.join(format!("{name}.toml"));
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[[upstreams]]\nname = \"echo\"\n{upstream_entry}\nprefix = \"never\"\n"
    );
    std::fs::write(&config, toml).with_context(|| format!("cannot write {}", config.display()))?;
    let config_arg = config.to_string_lossy().into_owned();
    let mut gateway = Child::spawn(name, gateway_bin, &["serve", "--config", &config_arg], dir)?;

    let base = Endpoint::resolve(&format!("http://127.0.0.1:{port}/mcp")).await?;
    let live = base.with_path("/health/live");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = gateway.exited() {
            bail!(
                "{name} exited ({status}) before serving; log: {}",
                gateway.log_tail(LOG_TAIL)
            );
        }
        if matches!(http::get_status(&live).await, Ok(200)) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "{name}: GET {} did not answer 200 within {READY_TIMEOUT:?}; log: {}",
                live.url(),
                gateway.log_tail(LOG_TAIL)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Live is not ready: the upstream (a stdio child, say) may still be starting. One verified
    // call makes sure the load does not measure start-up.
    let url = base.url().to_owned();
    wait_mcp_ready(&mut gateway, &url).await?;
    Ok((gateway, url))
}

/// Waits until a session can be opened at `url` and `echo` answers correctly.
async fn wait_mcp_ready(child: &mut Child, url: &str) -> Result<()> {
    let endpoint = Endpoint::resolve(url).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.exited() {
            bail!(
                "process for {url} exited ({status}); log: {}",
                child.log_tail(LOG_TAIL)
            );
        }
        let last_error = match probe_echo(&endpoint).await {
            Ok(()) => return Ok(()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "{url} not ready within {READY_TIMEOUT:?}: {last_error}; log: {}",
                child.log_tail(LOG_TAIL)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn probe_echo(endpoint: &Endpoint) -> Result<()> {
    let mut conn = Conn::open(endpoint).await?;
    let session = mcp::initialize(&mut conn, endpoint).await?;
    let body = mcp::call_body(1, "\"echo\"", "hello-probe");
    let resp = conn.send(session.post(endpoint, body)).await?;
    let reply = mcp::read_reply(resp, "1")
        .await
        .map_err(|f| anyhow::anyhow!("tools/call echo failed: {f:?}"))?;
    mcp::check_echo(&reply.message, "hello-probe")
        .map_err(|f| anyhow::anyhow!("tools/call echo answered wrongly: {f:?}"))?;
    if !conn.is_closed() {
        mcp::close(&mut conn, endpoint, &session).await;
    }
    Ok(())
}

/// Returns `path` made absolute, checking that it is a file: the stdio upstream is started by
/// the gateway from another working directory, and a typo should fail before anything starts.
fn absolute(path: &Path, flag: &str) -> Result<PathBuf> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{flag} {}: cannot stat", path.display()))?;
    if !meta.is_file() {
        bail!("{flag} {}: not a file", path.display());
    }
    std::fs::canonicalize(path).with_context(|| format!("{flag} {}", path.display()))
}

/// Quotes a string as a TOML basic string. JSON string escapes (`\"`, `\\`, `\n`, `\uXXXX`) are
/// all valid TOML escapes; DEL, which JSON leaves raw and TOML forbids, is escaped by hand.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
        .replace('\u{7f}', "\\u007f")
}

/// Returns the bench's own command line, shell-quoted where needed, for the report.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_round_trip_through_a_parser_shape() {
        assert_eq!(toml_string("/usr/bin/x"), "\"/usr/bin/x\"");
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_string("del\u{7f}"), "\"del\\u007f\"");
    }
}
