/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store url {0:?} is not supported; use sqlite://PATH or postgres://USER@HOST:PORT/DB")]
    UnsupportedUrl(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to the {backend} store: {source}")]
    Connect {
        backend: &'static str,
        source: sqlx::Error,
    },
    #[error("cannot migrate the {backend} store schema: {source}")]
    Migrate {
        backend: &'static str,
        source: sqlx::migrate::MigrateError,
    },
    #[error("an api key named {0:?} already exists; pick another name or revoke it first")]
    DuplicateKeyName(String),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("store holds a malformed {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl StoreError {
    /// Whether the failure is about reaching the database (so a later attempt
    /// may succeed), as opposed to the request itself being wrong.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Connect { .. } => true,
            StoreError::Query(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            ),
            _ => false,
        }
    }
}
