//! Log and trace set-up. Logs always go to stderr: in `serve --stdio` stdout belongs to
//! the MCP protocol alone. Span export is configured by the standard `OTEL_*` variables and
//! is off without them (see the `switchboard-telemetry` README).

use std::io::IsTerminal;

use switchboard_telemetry::{LogOptions, OtelConfig, TraceError, TracingGuard};

use crate::cli::{LogArgs, LogFormat};

/// Installs the global subscriber. The returned guard flushes queued spans when dropped, so
/// `main` holds it until the runtime has returned.
///
/// A bad `--log` filter only warns and falls back to `info`, as before: losing debug logs
/// should not stop a gateway. A bad `OTEL_*` setting is an error: silently exporting nothing,
/// or everything, is worse than failing at start-up.
pub(crate) fn init(args: &LogArgs) -> Result<TracingGuard, TraceError> {
    let json = match args.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let otel = OtelConfig::from_env()?;
    let opts = LogOptions {
        filter: args.filter.clone(),
        json,
    };
    match switchboard_telemetry::init_with(&opts, otel.clone()) {
        Err(TraceError::Filter { filter, source }) => {
            eprintln!("warning: bad log filter {filter:?} ({source}); using \"info\"");
            let opts = LogOptions {
                filter: "info".to_owned(),
                json,
            };
            switchboard_telemetry::init_with(&opts, otel)
        }
        other => other,
    }
}
