//! `switchboard-fake-upstream`: a configurable, misbehaving MCP upstream for
//! gateway tests and benchmarks.
//!
//! ```text
//! switchboard-fake-upstream [--transport stdio|http] [--listen 127.0.0.1:PORT]
//!     [--name NAME] [--tools N] [--latency-ms MS] [--fail-every N]
//!     [--crash-after-calls N] [--page-size N] [--json-response] [--stateless]
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard_testkit::fake::{FakeConfig, FakeUpstream};
use switchboard_testkit::serve::{self, HttpOptions, TransportKind};
use switchboard_testkit::TestkitError;

/// A fake MCP upstream whose faults are chosen on the command line.
#[derive(Debug, Parser)]
#[command(name = "switchboard-fake-upstream", version)]
struct Args {
    /// Transport to serve.
    #[arg(long, value_enum, default_value = "stdio")]
    transport: TransportKind,
    /// Loopback address for `--transport http` (Streamable HTTP at /mcp).
    #[arg(long, default_value = "127.0.0.1:8932")]
    listen: SocketAddr,
    /// Server name reported in serverInfo.
    #[arg(long, default_value = "fake")]
    name: String,
    /// Extra echo tools tool_0..tool_{N-1}.
    #[arg(long, default_value_t = 0)]
    tools: usize,
    /// Sleep this long before every tool call.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Every Nth tool call returns a JSON-RPC internal error.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    fail_every: Option<u64>,
    /// Exit with code 1 when the Nth tool call arrives, before answering.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    crash_after_calls: Option<u64>,
    /// Paginate tools/list with this many tools per page.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    page_size: Option<u64>,
    /// HTTP: answer with application/json instead of SSE where possible
    /// (rmcp supports this only statelessly, so it implies --stateless).
    #[arg(long)]
    json_response: bool,
    /// HTTP: serve without sessions (no Mcp-Session-Id, no GET stream).
    #[arg(long)]
    stateless: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    serve::init_tracing();
    serve::run_main(run(args))
}

async fn run(args: Args) -> Result<(), TestkitError> {
    let page_size = args
        .page_size
        .map(usize::try_from)
        .transpose()
        .map_err(|_| TestkitError::Options("--page-size is too large".to_owned()))?;
    let config = FakeConfig {
        name: args.name,
        extra_tools: args.tools,
        latency: Duration::from_millis(args.latency_ms),
        fail_every: args.fail_every,
        crash_after_calls: args.crash_after_calls,
        page_size,
    };
    let server = FakeUpstream::new(config);
    match args.transport {
        TransportKind::Stdio => {
            if args.json_response || args.stateless {
                return Err(TestkitError::Options(
                    "--json-response and --stateless apply to --transport http only".to_owned(),
                ));
            }
            serve::serve_stdio(server).await
        }
        TransportKind::Http => {
            let options = HttpOptions {
                listen: args.listen,
                stateless: args.stateless,
                json_response: args.json_response,
            };
            serve::serve_http(move || server.new_session(), options).await
        }
    }
}
