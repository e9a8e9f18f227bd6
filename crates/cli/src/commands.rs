//! The subcommands. Errors are `anyhow` here, at the binary's edge.

use anyhow::{Context, Result};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;
use switchboard_config::{ConfigSource, Overrides};
use switchboard_gateway::{Gateway, UpstreamStatus};

use crate::cli::{Command, ConfigArgs};
use crate::client::Client;

pub(crate) async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve {
            config,
            listen,
            stdio,
        } => serve(config, listen, stdio).await,
        Command::Check { config, timeout } => check(config, timeout).await,
        Command::Tools {
            action: Some(action),
            ..
        } => crate::governance::tools(action).await,
        Command::Tools {
            action: None,
            config,
            url,
            json,
        } => tools(config, url, json).await,
        Command::Keys { action } => crate::governance::keys(action).await,
        Command::Call { tool, args, url } => call(&tool, &args, &url).await,
        Command::DemoUpstream { kind } => crate::demo::run(kind).await.map(|()| ExitCode::SUCCESS),
    }
}

pub(crate) fn load(args: ConfigArgs, overrides: Overrides) -> Result<switchboard_config::Config> {
    let source = ConfigSource::discover(args.config);
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "switchboard".into());
    let env = |k: &str| std::env::var(k).ok();
    Ok(switchboard_config::load(&source, &overrides, &env, &exe)?)
}

async fn serve(
    args: ConfigArgs,
    listen: Option<std::net::SocketAddr>,
    stdio: bool,
) -> Result<ExitCode> {
    let config = load(
        args,
        Overrides {
            listen,
            metrics_token: std::env::var("METRICS_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        },
    )?;
    tracing::info!(config = %config.origin, upstreams = config.upstreams.len(), "starting switchboard");
    let addr = config.server.listen;
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let services = if stdio {
        // One local session: no keys to check, but pins still guard it.
        crate::governance::services(&config, false).await?
    } else {
        crate::governance::services(&config, true).await?
    };
    let gateway = Gateway::start_with(config, services)?;
    if stdio {
        gateway
            .serve_stdio(tokio::io::stdin(), tokio::io::stdout())
            .await
            .context("stdio session failed")?;
        return Ok(ExitCode::SUCCESS);
    }
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr}; is another process using it? Set [server] listen or --listen"
        )
    })?;
    tracing::info!(%addr, "serving MCP at {scheme}://{addr}/mcp");
    gateway.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn check(args: ConfigArgs, timeout: Duration) -> Result<ExitCode> {
    let config = match load(args, Overrides::default()) {
        Ok(c) => c,
        Err(e) => {
            println!("config: INVALID\n  {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    println!(
        "config: ok ({}, {} upstreams)",
        config.origin,
        config.upstreams.len()
    );
    let gateway = Gateway::start(config)?;
    let all_up = gateway.settle(timeout).await;
    for r in gateway.report() {
        match &r.status {
            UpstreamStatus::Ready(_) => println!(
                "  {:<20} {:<16} up     {} tools, {} prompts, {} resources",
                r.name, r.transport, r.tools, r.prompts, r.resources
            ),
            UpstreamStatus::Down { error } => {
                println!("  {:<20} {:<16} DOWN   {error}", r.name, r.transport)
            }
            other => println!(
                "  {:<20} {:<16} DOWN   not ready after {timeout:?} ({other:?})",
                r.name, r.transport
            ),
        }
    }
    gateway.shutdown().await;
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn tools(args: ConfigArgs, url: Option<String>, json: bool) -> Result<ExitCode> {
    let list = match url {
        Some(url) => {
            let mut client = Client::connect(&url).await?;
            let r = client.request("tools/list", serde_json::json!({})).await?;
            client.close().await;
            r
        }
        None => {
            let gateway = Gateway::start(load(args, Overrides::default())?)?;
            gateway.settle(Duration::from_secs(20)).await;
            let list = gateway.tools();
            gateway.shutdown().await;
            list
        }
    };
    let tools = list
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&tools)?);
    } else {
        for t in &tools {
            let name = t.get("name").and_then(Value::as_str).unwrap_or("?");
            let desc = t
                .get("description")
                .and_then(Value::as_str)
                .and_then(|d| d.lines().next())
                .unwrap_or("");
            println!("{name:<40} {desc}");
        }
        println!("({} tools)", tools.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn call(tool: &str, args: &str, url: &str) -> Result<ExitCode> {
    let arguments: Value = serde_json::from_str(args)
        .context("--args must be a JSON object, e.g. '{\"text\": \"hi\"}'")?;
    if !arguments.is_object() {
        anyhow::bail!("--args must be a JSON object, e.g. '{{\"text\": \"hi\"}}'");
    }
    let mut client = Client::connect(url).await?;
    let result = client
        .request(
            "tools/call",
            serde_json::json!({ "name": tool, "arguments": arguments }),
        )
        .await;
    client.close().await;
    let result = result?;
    for block in result
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => println!(
                "{}",
                block.get("text").and_then(Value::as_str).unwrap_or("")
            ),
            _ => println!("{block}"),
        }
    }
    if let Some(s) = result.get("structuredContent") {
        println!("{s}");
    }
    let failed = result
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
