//! `switchboard-bench`: the end-to-end benchmark harness (not a test: nothing here asserts on
//! time).
//!
//! It measures what the gateway costs compared with talking to an MCP server directly, over
//! Streamable HTTP on loopback:
//! - `load` drives `tools/call` at a fixed concurrency and reports calls/s and latency;
//! - `idle` measures the server's RSS with N idle sessions;
//! - `suite` starts the echo upstream and the gateway itself and runs the whole comparison,
//!   writing the report into `BENCHMARKS.md` between markers.
//!
//! # Layout
//! - `http`: a minimal HTTP/1.1 client (one connection per worker);
//! - `sse`, `mcp`: the Streamable HTTP framing and the JSON-RPC checks;
//! - `load`, `idle`: the two measurements;
//! - `process`: child processes and `/proc` readings; `suite`, `report`: the orchestration.
//!
//! # Invariants
//! - A call counts only when its echo comes back intact; everything else is an error, by kind.
//! - The client stays lean, since it shares the cores with the server it measures.
//! - `suite` leaves no process behind, also on error or Ctrl-C (see `process`).

mod http;
mod idle;
mod load;
mod mcp;
mod process;
mod report;
mod soak;
mod sse;
mod suite;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Load driver: direct MCP upstream vs. the Switchboard gateway"
)]
struct Cli {
    /// Runtime threads for the bench client. One keeps the client off the server's core on a
    /// two-core machine; raise it only if the report shows client CPU near 100 %.
    #[arg(long, global = true, default_value_t = 1)]
    client_threads: usize,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive `tools/call` at a fixed concurrency against one MCP endpoint.
    Load(LoadArgs),
    /// Open N sessions, leave them idle, and print the server's RSS before and after.
    Idle(IdleArgs),
    /// Run the whole direct-vs-gateway comparison on loopback and write the report.
    Suite(SuiteArgs),
    /// A long run at a steady rate against a running server, sampling its RSS.
    Soak(SoakArgs),
}

#[derive(Debug, Args)]
struct SoakArgs {
    /// The MCP endpoint, e.g. http://127.0.0.1:8080/mcp
    #[arg(long)]
    url: String,
    /// The server process whose RSS is sampled.
    #[arg(long)]
    pid: u32,
    /// Calls per second, all workers together.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Paced workers, each with its own connection and session.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Total time, in seconds.
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    /// RSS sampling period, in seconds.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// Growth is measured from the first sample after this many seconds.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// The tool to call; it must echo its `text` argument.
    #[arg(long, default_value = "echo")]
    tool: String,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The MCP endpoint, e.g. http://127.0.0.1:8080/mcp
    #[arg(long)]
    url: String,
    /// Workers, each with its own keep-alive connection and one call in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured time, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unrecorded time before measuring, in seconds.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Sessions to spread calls over, round-robin [default: the concurrency].
    #[arg(long)]
    sessions: Option<usize>,
    /// The tool to call; it must echo its `text` argument as its first text content (unless
    /// `--expect-text` says what it returns instead).
    #[arg(long, default_value = "echo")]
    tool: String,
    /// The first text content a correct answer carries, for tools that do not echo.
    #[arg(long)]
    expect_text: Option<String>,
    /// Speak the stateless 2026-07-28 revision (no `initialize`; `_meta` and routing headers
    /// on every request) instead of 2025-06-18 sessions.
    #[arg(long)]
    stateless: bool,
    /// Environment variable holding an API key, sent as `Authorization: Bearer`.
    #[arg(long)]
    api_key_env: Option<String>,
    /// Server process to watch for CPU per call and peak RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct IdleArgs {
    /// The MCP endpoint, e.g. http://127.0.0.1:8080/mcp
    #[arg(long)]
    url: String,
    /// How many sessions to open.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// The server process whose VmRSS is read.
    #[arg(long)]
    pid: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SuiteArgs {
    /// The gateway binary (`switchboard`), started as `GATEWAY serve --config FILE`.
    #[arg(long)]
    gateway_bin: PathBuf,
    /// The echo upstream (`switchboard-fake-upstream`).
    #[arg(long)]
    upstream_bin: PathBuf,
    /// The conformance fixture (`switchboard-fixture`), the stateless 2026-07-28 upstream.
    #[arg(long)]
    fixture_bin: PathBuf,
    /// Markdown file to write the report into, between the bench markers.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measured time per load run, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unrecorded time before each load run, in seconds.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Concurrency levels, comma-separated; the targets are read at 1 and 64.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Idle sessions to open on the gateway for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    idle_sessions: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = if cli.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.client_threads)
            .enable_all()
            .build()
    }
    .context("cannot build the tokio runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Load(args) => {
            let bearer = match &args.api_key_env {
                Some(var) => Some(
                    std::env::var(var)
                        .with_context(|| format!("--api-key-env: {var} is not set"))?,
                ),
                None => None,
            };
            let expect = args
                .expect_text
                .map_or(mcp::Expect::Echo, mcp::Expect::Text);
            let cfg = load::LoadConfig {
                sessions: args.sessions.unwrap_or(args.concurrency),
                url: args.url,
                concurrency: args.concurrency,
                duration: Duration::from_secs(args.duration_secs),
                warmup: Duration::from_secs(args.warmup_secs),
                call: mcp::CallSpec::new(&args.tool, expect)?,
                era: if args.stateless {
                    mcp::Era::Stateless
                } else {
                    mcp::Era::Legacy
                },
                bearer,
                call_timeout: Duration::from_secs(30),
                pid: args.pid,
            };
            let report = load::run(&cfg).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                load::print(&report);
            }
        }
        Command::Soak(args) => {
            let cfg = soak::SoakConfig {
                url: args.url,
                rate: args.rate,
                workers: args.workers,
                duration: Duration::from_secs(args.duration_secs),
                sample_every: Duration::from_secs(args.sample_secs.max(1)),
                warmup: Duration::from_secs(args.warmup_secs),
                pid: args.pid,
                tool: args.tool,
            };
            let report = soak::run(&cfg).await?;
            soak::print(&report, cfg.warmup);
        }
        Command::Idle(args) => {
            let report = idle::run(&args.url, args.sessions, args.pid).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                idle::print(&report);
            }
        }
        Command::Suite(args) => {
            suite::run(suite::SuiteConfig {
                gateway_bin: args.gateway_bin,
                upstream_bin: args.upstream_bin,
                fixture_bin: args.fixture_bin,
                out: args.out,
                duration: Duration::from_secs(args.duration_secs),
                warmup: Duration::from_secs(args.warmup_secs),
                concurrency: args.concurrency,
                idle_sessions: args.idle_sessions,
                client_threads: cli.client_threads,
            })
            .await?;
        }
    }
    Ok(())
}
