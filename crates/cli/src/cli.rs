//! Command-line shape. Every flag with an environment twin says so in `--help`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "One MCP endpoint in front of many MCP servers"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "switchboard_upstream=debug".
    #[arg(
        long = "log",
        env = "SWITCHBOARD_LOG",
        default_value = "info",
        global = true
    )]
    pub(crate) filter: String,
    /// Log format; "auto" is pretty on a terminal and JSON otherwise.
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub(crate) log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// Config file; default: ./switchboard.toml if present, else the embedded default.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Listen address, overriding [server] listen.
        #[arg(long, env = "SWITCHBOARD_LISTEN")]
        listen: Option<SocketAddr>,
        /// Serve one MCP session over stdin/stdout instead of HTTP.
        #[arg(long)]
        stdio: bool,
    },
    /// Validate a config and probe every upstream; exits non-zero on any problem.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// How long to wait for upstreams to answer.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// List the federated tools of a config, or of a running gateway with --url;
    /// `tools approve NAME` approves a changed tool definition.
    Tools {
        #[command(subcommand)]
        action: Option<ToolsAction>,
        #[command(flatten)]
        config: ConfigArgs,
        /// MCP endpoint of a running gateway, e.g. http://127.0.0.1:8080/mcp.
        #[arg(long)]
        url: Option<String>,
        /// Print the raw JSON tool list.
        #[arg(long)]
        json: bool,
    },
    /// Create, list and revoke API keys (stored hashed in the store).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Call one tool through a running gateway.
    Call {
        /// Tool name as the gateway exposes it, e.g. clock__now.
        tool: String,
        /// Arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// MCP endpoint of the running gateway.
        #[arg(
            long,
            env = "SWITCHBOARD_URL",
            default_value = "http://127.0.0.1:8080/mcp"
        )]
        url: String,
    },
    /// Run a bundled demo MCP server over stdio (used by the embedded default config).
    #[command(hide = true)]
    DemoUpstream { kind: DemoKind },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ToolsAction {
    /// Approve the changed definition of a held tool (see GET /admin/pins).
    Approve {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tool as `upstream__tool` (federated name) or `upstream/tool`.
        name: String,
        /// Approve only if the waiting definition still has this hash.
        #[arg(long)]
        hash: Option<String>,
    },
    /// List pinned tools and the changes waiting for approval.
    Pins {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysAction {
    /// Create a key; it is printed once, as the last line, and stored hashed.
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        /// A unique name for the key, e.g. the client or team it is for.
        #[arg(long)]
        name: String,
        /// Scopes, space- or comma-separated, e.g. 'web__* !web__delete_*' or 'admin'.
        #[arg(long, default_value = "")]
        scopes: String,
    },
    /// List keys (never the keys themselves).
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke a key by name; it stops working within seconds.
    Revoke {
        #[command(flatten)]
        config: ConfigArgs,
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DemoKind {
    Clock,
    Notes,
}
