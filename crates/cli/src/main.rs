//! The `switchboard` binary: parses the command line, sets up logging and
//! the runtime, and hands over to a command.

use clap::Parser;
use std::process::ExitCode;

mod audit;
mod cli;
mod client;
mod commands;
mod demo;
mod logging;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // Dropped last (after `runtime`), so spans of the final requests are flushed.
    let _tracing = match logging::init(&args.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: cannot set up logging and tracing: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(args.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
