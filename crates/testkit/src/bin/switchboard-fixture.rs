//! `switchboard-fixture`: the MCP conformance fixture server.
//!
//! ```text
//! switchboard-fixture [--transport stdio]
//! switchboard-fixture --transport http --listen 127.0.0.1:PORT
//! switchboard-fixture ... --era dual|legacy|modern
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use switchboard_testkit::fixture::{Era, Fixture};
use switchboard_testkit::serve::{self, HttpOptions, TransportKind};
use switchboard_testkit::TestkitError;

/// Serves the tool, resource and prompt set the MCP conformance suite expects.
#[derive(Debug, Parser)]
#[command(name = "switchboard-fixture", version)]
struct Args {
    /// Transport to serve.
    #[arg(long, value_enum, default_value = "stdio")]
    transport: TransportKind,
    /// Loopback address for `--transport http` (Streamable HTTP at /mcp).
    #[arg(long, default_value = "127.0.0.1:8931")]
    listen: SocketAddr,
    /// Protocol eras to speak: both (default), only `initialize` sessions,
    /// or only stateless 2026-07-28 requests.
    #[arg(long, value_enum, default_value = "dual")]
    era: Era,
}

fn main() -> ExitCode {
    let args = Args::parse();
    serve::init_tracing();
    serve::run_main(run(args))
}

async fn run(args: Args) -> Result<(), TestkitError> {
    match args.transport {
        TransportKind::Stdio => serve::serve_stdio(Fixture::with_era(args.era)).await,
        TransportKind::Http => {
            let options = HttpOptions {
                listen: args.listen,
                stateless: false,
                json_response: false,
            };
            let server = Fixture::with_era(args.era);
            serve::serve_http(move || server.new_session(), options).await
        }
    }
}
