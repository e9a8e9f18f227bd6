//! The embedded backend: one SQLite file in WAL mode.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::settings::StoreSettings;

crate::sql::sql_backend!(sqlx::Sqlite, "sqlite");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub(crate) async fn open_file(
    path: &Path,
    settings: &StoreSettings,
) -> Result<Arc<dyn Store>, StoreError> {
    open_with(SqliteConnectOptions::new().filename(path), settings).await
}

pub(crate) async fn open_url(
    url: &str,
    settings: &StoreSettings,
) -> Result<Arc<dyn Store>, StoreError> {
    let options = SqliteConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
        backend: "sqlite",
        source,
    })?;
    open_with(options, settings).await
}

async fn open_with(
    options: SqliteConnectOptions,
    settings: &StoreSettings,
) -> Result<Arc<dyn Store>, StoreError> {
    let file = options.get_filename().to_owned();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let options = options
        .create_if_missing(true)
        // Readers never block the writer, and a crash loses no committed row.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        // LIKE (audit target globs) matches case as PostgreSQL does.
        .pragma("case_sensitive_like", "ON");
    let pool = SqlitePoolOptions::new()
        .max_connections(settings.max_connections.max(1))
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Connect {
            backend: "sqlite",
            source,
        })?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            backend: "sqlite",
            source,
        })?;
    Ok(Arc::new(Backend::new(pool)))
}
