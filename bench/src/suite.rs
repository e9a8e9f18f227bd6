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
use crate::mcp::{self, CallSpec, Era, Expect};
use crate::process::{self, Child};
use crate::report::{self, Scenario, SuiteResults};

/// Bound on waiting for a started process to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The fixture's cheapest tool: no arguments, a fixed text back. The fixture has no echo tool, so
/// the modern scenarios check this text (and the JSON-RPC id) instead of an echo.
const MODERN_TOOL: &str = "test_simple_text";
const MODERN_TOOL_TEXT: &str = "This is a simple text response for testing.";

/// Bytes of a failed process's log shown in the report and on stderr.
const LOG_TAIL: u64 = 2000;

/// What the suite runs; see `switchboard-bench suite --help`.
#[derive(Debug, Clone)]
pub(crate) struct SuiteConfig {
    pub(crate) gateway_bin: PathBuf,
    pub(crate) upstream_bin: PathBuf,
    pub(crate) fixture_bin: PathBuf,
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
    let fixture_bin = absolute(&cfg.fixture_bin, "--fixture-bin")?;
    process::become_subreaper()?;
    let work = tempfile::Builder::new()
        .prefix("switchboard-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;

    let outcome = tokio::select! {
        r = scenarios(&cfg, &gateway_bin, &upstream_bin, &fixture_bin, work.path()) => r,
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
    let failed = results
        .scenarios()
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
    fixture_bin: &Path,
    dir: &Path,
) -> Result<SuiteResults> {
    let echo = CallSpec::new("echo", Expect::Echo)?;
    let upstream_port = process::free_port()?;
    let upstream_listen = format!("127.0.0.1:{upstream_port}");
    let upstream_url = format!("http://{upstream_listen}/mcp");
    let mut upstream = Child::spawn(
        "upstream",
        upstream_bin,
        &["--transport", "http", "--listen", &upstream_listen],
        dir,
    )?;
    let upstream_endpoint = Endpoint::resolve(&upstream_url).await?;
    wait_mcp_ready(&mut upstream, &upstream_endpoint, &echo, Era::Legacy).await?;

    eprintln!("== direct: {upstream_url}");
    let direct = load_levels(
        cfg,
        "direct: fake upstream over HTTP (baseline)",
        &Target::open(&upstream_url, upstream.pid(), &echo, Era::Legacy),
    )
    .await;
    if let Some(failure) = &direct.failure {
        bail!("direct baseline failed: {failure}");
    }

    let http_entry = format!("url = {}", toml_string(&upstream_url));
    let legacy_gateway = |name: &'static str, entry: &str, governance| GatewaySpec {
        name,
        upstream_entry: entry.to_owned(),
        governance,
        call: echo.clone(),
        era: Era::Legacy,
    };
    // Off and on back to back, so the ratio between them sees the same machine load.
    let gateway_http = gateway_scenario(
        cfg,
        "gateway over an HTTP upstream (governance off: anonymous, audit off)",
        &legacy_gateway("gateway-http", &http_entry, Governance::Off),
        gateway_bin,
        dir,
    )
    .await;
    let gateway_http_governed = gateway_scenario(
        cfg,
        "gateway over an HTTP upstream, auth + audit on (API key, every call audited)",
        &legacy_gateway("gateway-http-governed", &http_entry, Governance::AuthAudit),
        gateway_bin,
        dir,
    )
    .await;

    let stdio_entry = format!(
        "command = [{}, \"--transport\", \"stdio\"]",
        toml_string(&upstream_bin.to_string_lossy())
    );
    let gateway_stdio = gateway_scenario(
        cfg,
        "gateway over a stdio upstream (governance off)",
        &legacy_gateway("gateway-stdio", &stdio_entry, Governance::Off),
        gateway_bin,
        dir,
    )
    .await;

    let (modern_direct, modern_gateway) =
        modern_scenarios(cfg, gateway_bin, fixture_bin, dir).await;

    eprintln!("== idle: {} sessions", cfg.idle_sessions);
    let idle = idle_scenario(
        cfg,
        &legacy_gateway("gateway-idle", &http_entry, Governance::Off),
        gateway_bin,
        dir,
    )
    .await
    .map_err(|e| format!("{e:#}"));

    upstream.stop().await;
    Ok(SuiteResults {
        direct,
        gateway_http,
        gateway_http_governed,
        gateway_stdio,
        modern_direct,
        modern_gateway,
        idle,
        idle_sessions: cfg.idle_sessions,
        command_line: command_line(),
        duration_secs: cfg.duration.as_secs(),
        warmup_secs: cfg.warmup.as_secs(),
        client_threads: cfg.client_threads,
    })
}

/// The 2026-07-28 pair: the fixture serving the stateless revision only, called directly and
/// through a gateway, both with stateless requests. A fixture that does not start fails both
/// scenarios, not the suite: the legacy results stand on their own.
async fn modern_scenarios(
    cfg: &SuiteConfig,
    gateway_bin: &Path,
    fixture_bin: &Path,
    dir: &Path,
) -> (Scenario, Scenario) {
    const DIRECT: &str =
        "direct: fixture serving 2026-07-28 statelessly over HTTP (modern baseline)";
    const GATEWAY: &str =
        "gateway over a stateless 2026-07-28 HTTP upstream, stateless clients (governance off)";
    let started = async {
        let call = CallSpec::new(MODERN_TOOL, Expect::Text(MODERN_TOOL_TEXT.to_owned()))?;
        let port = process::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let url = format!("http://{listen}/mcp");
        let mut fixture = Child::spawn(
            "fixture-modern",
            fixture_bin,
            &[
                "--transport",
                "http",
                "--listen",
                &listen,
                "--era",
                "modern",
            ],
            dir,
        )?;
        let endpoint = Endpoint::resolve(&url).await?;
        wait_mcp_ready(&mut fixture, &endpoint, &call, Era::Stateless).await?;
        anyhow::Ok((fixture, url, call))
    }
    .await;
    let (fixture, url, call) = match started {
        Ok(started) => started,
        Err(e) => {
            eprintln!("== modern: fixture not started: {e:#}");
            let failed = |title: &str| Scenario {
                title: title.to_owned(),
                runs: Vec::new(),
                failure: Some(format!("fixture not started: {e:#}")),
            };
            return (failed(DIRECT), failed(GATEWAY));
        }
    };
    eprintln!("== modern direct: {url}");
    let direct = load_levels(
        cfg,
        DIRECT,
        &Target::open(&url, fixture.pid(), &call, Era::Stateless),
    )
    .await;
    let spec = GatewaySpec {
        name: "gateway-modern",
        upstream_entry: format!("url = {}", toml_string(&url)),
        governance: Governance::Off,
        call,
        era: Era::Stateless,
    };
    let gateway = gateway_scenario(cfg, GATEWAY, &spec, gateway_bin, dir).await;
    fixture.stop().await;
    (direct, gateway)
}

/// Whether a gateway identifies callers and keeps the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Governance {
    /// Anonymous callers (the loopback default, said explicitly) and no audit log: the bare
    /// relay.
    Off,
    /// An API key required on every request and every call audited (the default audit
    /// settings: batched writes to the SQLite store).
    AuthAudit,
}

/// One gateway a scenario starts: its upstream, its governance, and how the load talks to it.
#[derive(Debug)]
struct GatewaySpec {
    /// Names its config, data directory and log in the suite's temporary directory.
    name: &'static str,
    /// The upstream's transport lines (`url = ...` or `command = [...]`).
    upstream_entry: String,
    governance: Governance,
    call: CallSpec,
    era: Era,
}

/// What a load run is aimed at.
struct Target {
    url: String,
    pid: u32,
    call: CallSpec,
    era: Era,
    bearer: Option<String>,
}

impl Target {
    /// A server that needs no credentials.
    fn open(url: &str, pid: u32, call: &CallSpec, era: Era) -> Self {
        Self {
            url: url.to_owned(),
            pid,
            call: call.clone(),
            era,
            bearer: None,
        }
    }
}

/// A started gateway and how to reach it.
struct RunningGateway {
    child: Child,
    target: Target,
}

/// Starts a gateway, runs the load levels against it, stops it.
async fn gateway_scenario(
    cfg: &SuiteConfig,
    title: &str,
    spec: &GatewaySpec,
    gateway_bin: &Path,
    dir: &Path,
) -> Scenario {
    let name = spec.name;
    let mut gateway = match start_gateway(spec, gateway_bin, dir).await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("== {name}: not started: {e:#}");
            return Scenario {
                title: title.to_owned(),
                runs: Vec::new(),
                failure: Some(format!("{e:#}")),
            };
        }
    };
    eprintln!("== {name}: {}", gateway.target.url);
    let mut scenario = load_levels(cfg, title, &gateway.target).await;
    if let Some(status) = gateway.child.exited() {
        let note = format!(
            "gateway exited ({status}); log: {}",
            gateway.child.log_tail(LOG_TAIL)
        );
        eprintln!("{note}");
        scenario.failure.get_or_insert(note);
    }
    gateway.child.stop().await;
    scenario
}

/// Starts a fresh gateway and measures its RSS before and after opening the idle sessions.
async fn idle_scenario(
    cfg: &SuiteConfig,
    spec: &GatewaySpec,
    gateway_bin: &Path,
    dir: &Path,
) -> Result<idle::IdleReport> {
    let gateway = start_gateway(spec, gateway_bin, dir).await?;
    let report = idle::run(&gateway.target.url, cfg.idle_sessions, gateway.target.pid).await;
    gateway.child.stop().await;
    report
}

/// Runs each configured concurrency; stops at the first level that cannot run at all.
async fn load_levels(cfg: &SuiteConfig, title: &str, target: &Target) -> Scenario {
    let mut scenario = Scenario {
        title: title.to_owned(),
        runs: Vec::new(),
        failure: None,
    };
    for &concurrency in &cfg.concurrency {
        let load = LoadConfig {
            url: target.url.clone(),
            concurrency,
            duration: cfg.duration,
            warmup: cfg.warmup,
            sessions: concurrency,
            call: target.call.clone(),
            era: target.era,
            bearer: target.bearer.clone(),
            call_timeout: Duration::from_secs(30),
            pid: Some(target.pid),
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

/// Renders a gateway config with one upstream, its store in `data_dir` (never the user's), and
/// governance as asked.
fn gateway_toml(
    port: u16,
    data_dir: &Path,
    upstream_entry: &str,
    governance: Governance,
) -> String {
    let (anonymous, audit) = match governance {
        Governance::Off => (true, false),
        Governance::AuthAudit => (false, true),
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [auth]\nanonymous = {anonymous}\n\
         # One identity making thousands of calls a second: the per-identity limit would \
         measure 429s.\nrate_limit_per_minute = 0\n\n\
         [audit]\nenabled = {audit}\n\n\
         [store]\ndata_dir = {}\n\n\
         [[upstreams]]\nname = \"echo\"\n{upstream_entry}\nprefix = \"never\"\n",
        toml_string(&data_dir.to_string_lossy())
    )
}

/// Returns the key `switchboard keys create` printed: its last non-empty line of stdout.
fn api_key_from_output(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .filter(|l| !l.contains(char::is_whitespace))
}

/// Creates an API key with every tool scope in the store `config` names, with the gateway's
/// own CLI, as an operator would.
async fn create_api_key(gateway_bin: &Path, config: &Path) -> Result<String> {
    let mut command = tokio::process::Command::new(gateway_bin);
    command
        .args(["keys", "create", "--config"])
        .arg(config)
        .args(["--name", "bench", "--scopes", "*"])
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(READY_TIMEOUT, command.output())
        .await
        .with_context(|| format!("`keys create` did not finish within {READY_TIMEOUT:?}"))?
        .context("cannot run `keys create`")?;
    if !output.status.success() {
        bail!(
            "`keys create` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    api_key_from_output(&stdout)
        .map(str::to_owned)
        .with_context(|| format!("`keys create` printed no key: {stdout:?}"))
}

/// Writes the gateway config (creating an API key first when governance is on), starts
/// `GATEWAY serve --config FILE` and waits until it serves the scenario's call.
async fn start_gateway(
    spec: &GatewaySpec,
    gateway_bin: &Path,
    dir: &Path,
) -> Result<RunningGateway> {
    let name = spec.name;
    let port = process::free_port()?;
    let config = dir.join(format!("{name}.toml"));
    let data_dir = dir.join(format!("{name}-data"));
    let toml = gateway_toml(port, &data_dir, &spec.upstream_entry, spec.governance);
    std::fs::write(&config, toml).with_context(|| format!("cannot write {}", config.display()))?;
    let bearer = match spec.governance {
        Governance::Off => None,
        Governance::AuthAudit => Some(create_api_key(gateway_bin, &config).await?),
    };
    let config_arg = config.to_string_lossy().into_owned();
    let mut gateway = Child::spawn(name, gateway_bin, &["serve", "--config", &config_arg], dir)?;

    let url = format!("http://127.0.0.1:{port}/mcp");
    let base = Endpoint::resolve(&url).await?;
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
    let endpoint = match &bearer {
        Some(key) => base.with_bearer(key)?,
        None => base,
    };
    wait_mcp_ready(&mut gateway, &endpoint, &spec.call, spec.era).await?;
    let pid = gateway.pid();
    Ok(RunningGateway {
        child: gateway,
        target: Target {
            url,
            pid,
            call: spec.call.clone(),
            era: spec.era,
            bearer,
        },
    })
}

/// Waits until a session can be opened at `endpoint` and `call` answers correctly.
async fn wait_mcp_ready(
    child: &mut Child,
    endpoint: &Endpoint,
    call: &CallSpec,
    era: Era,
) -> Result<()> {
    let url = endpoint.url();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.exited() {
            bail!(
                "process for {url} exited ({status}); log: {}",
                child.log_tail(LOG_TAIL)
            );
        }
        let last_error = match probe(endpoint, call, era).await {
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

/// One verified call, exactly as the load makes it.
async fn probe(endpoint: &Endpoint, call: &CallSpec, era: Era) -> Result<()> {
    let mut conn = Conn::open(endpoint).await?;
    let session = mcp::open(&mut conn, endpoint, era).await?;
    load::verified_call(&mut conn, endpoint, &session, call, 1, READY_TIMEOUT)
        .await
        .map_err(|f| anyhow::anyhow!("probe tools/call failed: {f:?}"))?;
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

    fn render(governance: Governance) -> switchboard_config::Config {
        let text = gateway_toml(
            4321,
            Path::new("/tmp/bench \"x\"/gw-data"),
            "url = \"http://127.0.0.1:9/mcp\"",
            governance,
        );
        switchboard_config::parse(&text, "bench.toml").unwrap()
    }

    #[test]
    fn governance_off_config_is_anonymous_without_audit() {
        let config = render(Governance::Off);
        assert_eq!(config.auth.anonymous, Some(true));
        assert!(!config.audit.enabled);
        assert_eq!(config.auth.rate_limit_per_minute, 0);
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:4321");
    }

    #[test]
    fn governed_config_requires_credentials_and_audits() {
        let config = render(Governance::AuthAudit);
        assert_eq!(config.auth.anonymous, Some(false));
        assert!(config.auth.api_keys);
        assert!(config.audit.enabled);
        assert_eq!(config.auth.rate_limit_per_minute, 0);
    }

    #[test]
    fn gateway_store_lives_in_the_given_data_dir() {
        for governance in [Governance::Off, Governance::AuthAudit] {
            let config = render(governance);
            assert_eq!(config.store.data_dir, Path::new("/tmp/bench \"x\"/gw-data"));
            assert!(config.store.url.is_none());
            assert_eq!(config.upstreams.len(), 1);
        }
    }

    #[test]
    fn api_key_is_the_last_printed_line() {
        let out = "created api key \"bench\" with scopes [*]\nit is shown once; store it now:\nsb_abc123\n\n";
        assert_eq!(api_key_from_output(out), Some("sb_abc123"));
        assert_eq!(api_key_from_output(""), None);
        assert_eq!(api_key_from_output("no key was made\n"), None);
    }

    #[test]
    fn toml_strings_round_trip_through_a_parser_shape() {
        assert_eq!(toml_string("/usr/bin/x"), "\"/usr/bin/x\"");
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_string("del\u{7f}"), "\"del\\u007f\"");
    }
}
