//! The `switchboard` binary: parses the command line, sets up logging and
//! the runtime, and hands over to a command.

use clap::Parser;
use std::process::ExitCode;

mod cli;
mod client;
mod commands;
mod demo;
mod governance;
mod logging;

fn main() -> ExitCode {
    // `switchboard exec-limited [limits] -- PROGRAM ARGS`: the launcher a
    // stdio upstream with `limits` is started through. Handled before clap,
    // logging and the runtime: nothing may run (or parse PROGRAM's own
    // flags) between setting the limits and exec'ing the program.
    let mut raw = std::env::args_os().skip(1);
    if raw
        .next()
        .is_some_and(|a| a == switchboard_upstream::EXEC_LIMITED)
    {
        return exec_limited(raw);
    }
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

/// Sets the limits and execs the program; returns only on failure, with the
/// exit code a shell uses for a command it could not run.
fn exec_limited(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let error = match switchboard_upstream::LimitArgs::parse(args) {
        Ok(args) => switchboard_upstream::exec_limited(&args),
        Err(e) => e,
    };
    eprintln!("error: {error}");
    ExitCode::from(127)
}
