//! What `open` needs to know, taken from `[store]` of the config.

use std::path::PathBuf;
use std::time::Duration;
use switchboard_config::Secret;

/// File name of the embedded database inside the data directory.
pub const SQLITE_FILE: &str = "switchboard.db";

/// Where the store lives and how many connections it may hold.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `sqlite://PATH` or `postgres://...`; `None` is the SQLite file
    /// [`SQLITE_FILE`] in `data_dir`. A secret because it may carry a password.
    pub url: Option<Secret>,
    /// Created on first start; holds the SQLite file and the audit spool.
    pub data_dir: PathBuf,
    pub max_connections: u32,
    /// How long an operation waits for a pooled connection. Short, so a dead
    /// database is noticed quickly and the audit writer spools instead.
    pub acquire_timeout: Duration,
}

impl StoreSettings {
    /// The embedded SQLite store in `data_dir`.
    pub fn sqlite_in(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: None,
            data_dir: data_dir.into(),
            max_connections: switchboard_config::defaults::STORE_MAX_CONNECTIONS,
            acquire_timeout: Duration::from_secs(5),
        }
    }

    /// The store at `url`, with the audit spool in `data_dir`.
    pub fn url(url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: Some(Secret::new(url.into())),
            ..Self::sqlite_in(data_dir)
        }
    }
}

impl From<&switchboard_config::StoreConfig> for StoreSettings {
    fn from(c: &switchboard_config::StoreConfig) -> Self {
        Self {
            url: c.url.clone(),
            data_dir: c.data_dir.clone(),
            max_connections: c.max_connections,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}
