//! Test databases: a fresh SQLite file in a temp dir, or a fresh database in
//! the loopback PostgreSQL cluster.

use sqlx::Connection;
use std::sync::Arc;
use switchboard_store::{open, Store, StoreSettings};

/// Set by `scripts/services.sh start` (and `scripts/test.sh`).
pub(crate) const PG_ENV: &str = "SWITCHBOARD_TEST_POSTGRES_URL";

pub(crate) struct Db {
    pub(crate) store: Arc<dyn Store>,
    /// Holds the SQLite file (if any) and every test's audit spool.
    pub(crate) dir: tempfile::TempDir,
    pub(crate) settings: StoreSettings,
    /// (admin url, database name) of a PostgreSQL test database.
    pg: Option<(String, String)>,
}

impl Db {
    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings::sqlite_in(dir.path().join("data"));
        let store = open(&settings).await.unwrap();
        Self {
            store,
            dir,
            settings,
            pg: None,
        }
    }

    /// A fresh database named after a UUID in the cluster at
    /// `$SWITCHBOARD_TEST_POSTGRES_URL`. Without that variable the test fails:
    /// the PostgreSQL half of the suite is never skipped silently.
    pub(crate) async fn postgres() -> Self {
        let admin = std::env::var(PG_ENV).unwrap_or_else(|_| {
            panic!(
                "{PG_ENV} is not set: the PostgreSQL store tests need the loopback cluster; \
                 run `eval \"$(scripts/services.sh start)\"` (scripts/test.sh does this)"
            )
        });
        let name = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at {PG_ENV}: {e}; run `scripts/services.sh start`")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings::url(with_database(&admin, &name), dir.path().join("data"));
        let store = open(&settings).await.unwrap();
        Self {
            store,
            dir,
            settings,
            pg: Some((admin, name)),
        }
    }

    /// Opens the same database again (a second replica, or a restart).
    pub(crate) async fn reopen(&self) -> Arc<dyn Store> {
        open(&self.settings).await.unwrap()
    }

    /// Drops the PostgreSQL database; only reached when the test passed, so
    /// a failing test leaves its data behind for inspection.
    pub(crate) async fn finish(self) {
        drop(self.store);
        if let Some((admin, name)) = self.pg {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// `admin` with its database name replaced by `name`.
fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}
