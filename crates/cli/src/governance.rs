//! `switchboard keys ...` and `switchboard tools approve|pins`: operator
//! commands that work on the store directly, so they need no running
//! gateway. A running gateway picks approvals up within seconds and sees a
//! revoked key within its key-cache time.

use anyhow::{bail, Context, Result};
use std::process::ExitCode;
use std::sync::Arc;
use switchboard_config::Overrides;
use switchboard_store::Store;

use crate::cli::{ConfigArgs, KeysAction, ToolsAction};
use crate::commands::load;

async fn open(config: &switchboard_config::Config) -> Result<Arc<dyn Store>> {
    switchboard_store::open(&(&config.store).into())
        .await
        .context("cannot open the store named by [store] (or DATABASE_URL)")
}

async fn open_with(args: ConfigArgs) -> Result<(switchboard_config::Config, Arc<dyn Store>)> {
    let config = load(args, Overrides::default())?;
    let store = open(&config).await?;
    Ok((config, store))
}

/// The store and audit writer `serve` runs with. The store is opened (and
/// migrated) before the first request; an unreachable database stops the
/// start with an error naming it, rather than serving without keys.
pub(crate) async fn services(
    config: &switchboard_config::Config,
    audit: bool,
) -> Result<switchboard_gateway::Services> {
    let store = open(config).await?;
    let audit = if audit && config.audit.enabled {
        let settings = switchboard_store::audit::AuditSettings::from_config(
            &config.audit,
            &config.store.data_dir,
        );
        Some(
            switchboard_store::audit::AuditWriter::spawn(store.clone(), settings)
                .context("cannot start the audit writer (is the data directory writable?)")?,
        )
    } else {
        None
    };
    Ok(switchboard_gateway::Services {
        store: Some(store),
        audit,
    })
}

pub(crate) async fn keys(action: KeysAction) -> Result<ExitCode> {
    match action {
        KeysAction::Create {
            config,
            name,
            scopes,
        } => {
            let (config, store) = open_with(config).await?;
            let list: Vec<&str> = scopes.split([' ', ',']).filter(|s| !s.is_empty()).collect();
            // Refuse what the gateway could not parse later.
            switchboard_auth::Scopes::parse(&list, &config.server.separator)
                .with_context(|| format!("--scopes {scopes:?}"))?;
            if name.trim().is_empty() || name.len() > 128 {
                bail!("--name must be 1 to 128 characters");
            }
            let key = switchboard_auth::generate_api_key();
            store
                .insert_api_key(switchboard_store::NewApiKey {
                    name: name.clone(),
                    key_hash: key.hash().to_owned(),
                    key_prefix: key.display_prefix().to_owned(),
                    scopes: list.iter().map(|s| (*s).to_owned()).collect(),
                })
                .await
                .with_context(|| {
                    format!(
                        "cannot create key {name:?} (is the name taken? `switchboard keys list`)"
                    )
                })?;
            println!("created api key {name:?} with scopes [{}]", list.join(" "));
            println!(
                "it is shown once; store it now (clients send `Authorization: Bearer <key>`):"
            );
            println!("{}", key.key().expose());
            Ok(ExitCode::SUCCESS)
        }
        KeysAction::List { config } => {
            let (_, store) = open_with(config).await?;
            let keys = store.list_api_keys().await?;
            println!(
                "{:<24} {:<14} {:<10} {:<25} scopes",
                "name", "prefix", "state", "created"
            );
            for k in keys {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<24} {:<14} {:<10} {:<25} {}",
                    k.name,
                    k.key_prefix,
                    state,
                    k.created_at.to_rfc3339(),
                    k.scopes.join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysAction::Revoke { config, name } => {
            let (_, store) = open_with(config).await?;
            if store.revoke_api_key(&name).await? {
                println!("revoked api key {name:?}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no active api key named {name:?}; see `switchboard keys list`");
                Ok(ExitCode::from(1))
            }
        }
    }
}

pub(crate) async fn tools(action: ToolsAction) -> Result<ExitCode> {
    match action {
        ToolsAction::Approve { config, name, hash } => {
            let (config, store) = open_with(config).await?;
            let key = pin_key(&config, &name)?;
            match store
                .approve_pin(&key, hash.as_deref(), chrono::Utc::now())
                .await?
            {
                Some(pin) => {
                    println!(
                        "approved {name}: its definition {} is now the pin; running gateways serve it again within seconds",
                        &pin.hash[..pin.hash.len().min(12)]
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!(
                        "{name}: no changed definition waits for approval{}; see `switchboard tools pins`",
                        if hash.is_some() { " with that hash" } else { "" }
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        ToolsAction::Pins { config } => {
            let (config, store) = open_with(config).await?;
            let sep = &config.server.separator;
            for p in store.list_pins().await? {
                let shown = p.tool.replacen('/', sep, 1);
                match &p.pending {
                    None => println!("{shown:<40} pinned {}", &p.hash[..p.hash.len().min(12)]),
                    Some(c) => println!(
                        "{shown:<40} CHANGED {} -> {} (waiting since {}; approve with `switchboard tools approve {shown}`)",
                        &p.hash[..p.hash.len().min(12)],
                        &c.hash[..c.hash.len().min(12)],
                        c.since.to_rfc3339()
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `upstream__tool` or `upstream/tool` → the store key `upstream/tool`.
fn pin_key(config: &switchboard_config::Config, name: &str) -> Result<String> {
    let (up, tool) = name
        .split_once('/')
        .or_else(|| name.split_once(config.server.separator.as_str()))
        .with_context(|| {
            format!(
                "{name:?}: write the tool as upstream{}tool or upstream/tool",
                config.server.separator
            )
        })?;
    if !config.upstreams.iter().any(|u| u.name == up) {
        bail!("{name:?}: no upstream named {up:?} in {}", config.origin);
    }
    Ok(format!("{up}/{tool}"))
}
