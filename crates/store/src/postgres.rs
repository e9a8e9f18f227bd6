//! The shared backend: PostgreSQL, for several replicas behind one store.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;

use crate::settings::StoreSettings;

crate::sql::sql_backend!(sqlx::Postgres, "postgres");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub(crate) async fn open(
    url: &str,
    settings: &StoreSettings,
) -> Result<Arc<dyn Store>, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
        backend: "postgres",
        source,
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections.max(1))
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Connect {
            backend: "postgres",
            source,
        })?;
    // Migrations take an advisory lock, so replicas starting together
    // apply them once.
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            backend: "postgres",
            source,
        })?;
    Ok(Arc::new(Backend::new(pool)))
}
