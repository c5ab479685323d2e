//! voxgate's storage. The API and the agent call these repositories; they see no SQL.
//!
//! One code path serves SQLite (the embedded default) and PostgreSQL (production,
//! Supabase) through sqlx's `Any` driver: queries are plain SQL with `$N`
//! placeholders, which both databases accept, and values are the portable types
//! (text, 64-bit integers, doubles). Timestamps are Unix milliseconds; JSON is text.
//!
//! SQLite allows one writer at a time. Rather than let concurrent writers race for
//! the lock (and see "database is locked" when a deferred transaction cannot
//! upgrade), writes go through a pool of one connection and queue fairly there,
//! while reads use a pool of their own (WAL lets them run beside the writer). On
//! PostgreSQL both are the same pool.
//!
//! # Layout
//! - [`pool`]: connecting, pool options, pool statistics.
//! - [`migrate`]: the embedded migrations for each backend.
//! - [`assistants`], [`keys`], [`calls`], [`files`]: one repository each.
//! - [`instances`]: the agent instances' heartbeats, and the sweep that ends the
//!   calls of one that died.
//! - [`controls`]: control messages queued for the instance that holds a call.

pub mod assistants;
pub mod calls;
pub mod controls;
pub mod files;
pub mod instances;
pub mod keys;
pub mod knowledge;
pub mod migrate;
pub mod outbox;
pub mod pool;

pub use pool::{Backend, PoolOptions, PoolStats, Store};

/// A page of results and the cursor for the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether trying the same thing again cannot succeed (the database refused the
    /// data itself), as opposed to an outage that may pass.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::Conflict(_) | StoreError::Corrupt(_) | StoreError::NotFound => true,
            StoreError::Database(sqlx::Error::Database(db)) => !matches!(db.kind(), sqlx::error::ErrorKind::Other),
            StoreError::Database(sqlx::Error::Encode(_) | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_)) => true,
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_string()),
            _ => StoreError::Database(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn json_col<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
