//! Switchboard's persistence: API keys (hashed), sessions metadata, the audit
//! log, upstream health reports and tool-definition pins, on embedded SQLite
//! (the default) or PostgreSQL.
//!
//! # Layout
//! - [`Store`]: the one trait the gateway uses, as `Arc<dyn Store>`.
//! - [`open`]: picks the backend from the URL, creates the SQLite file and
//!   its directory on first start, and runs the backend's migrations
//!   (`migrations/{sqlite,postgres}`, embedded in the binary).
//! - `sql`: the statements, written once and instantiated per sqlx driver.
//! - [`audit`]: the audit writer: batched, off the request path, and durable
//!   through an on-disk spool while the database is unreachable.
//! - [`redact`]: argument digests and secret-field redaction for audit records.
//!
//! # Invariants
//! - The only crate that depends on sqlx.
//! - Every value from outside is a bound parameter; SQL text is built only
//!   from fixed fragments.
//! - The store never sees a plaintext API key.
//! - Every query that returns many rows is capped.

pub mod audit;
mod error;
mod model;
mod postgres;
pub mod redact;
mod settings;
mod sql;
mod sqlite;
mod store;
mod time;

pub use error::StoreError;
pub use model::*;
pub use settings::{StoreSettings, SQLITE_FILE};
pub use store::Store;
pub use time::parse_time;

use std::sync::Arc;

/// Opens (creating and migrating as needed) the store the settings name.
pub async fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    match settings.url.as_ref().map(|u| u.expose()) {
        None => sqlite::open_file(&settings.data_dir.join(SQLITE_FILE), settings).await,
        Some(url) if url.starts_with("sqlite:") => sqlite::open_url(url, settings).await,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            postgres::open(url, settings).await
        }
        Some(url) => Err(StoreError::UnsupportedUrl(scheme_only(url))),
    }
}

/// The part of a URL before `://`, so an error never echoes credentials.
fn scheme_only(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://..."),
        None => "<not a url>".to_owned(),
    }
}
