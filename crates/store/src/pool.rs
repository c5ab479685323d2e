//! Connecting to SQLite or PostgreSQL, and the pools' statistics.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use futures_util::future::BoxFuture;
use sqlx::{Any, AnyPool, ConnectOptions, Executor};

use crate::{Result, StoreError};

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections (the read pool's size on SQLite).
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// Longest wait for a free connection before a request fails with 503.
    pub acquire_timeout: Duration,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// Longest a statement may run (PostgreSQL `statement_timeout`; SQLite busy timeout).
    pub statement_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// A snapshot of one pool, for `/api/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// The handle every repository hangs off. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    read: AnyPool,
    write: AnyPool,
}

/// Turns what users type (`voxgate.db`, `sqlite:voxgate.db`, `postgres://...`,
/// `postgresql://...`) into a URL sqlx accepts, and names the backend.
pub fn normalize_url(url: &str) -> Result<(Backend, String)> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_string()));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() || url.contains("://") && !url.starts_with("sqlite://") {
        return Err(StoreError::Unavailable(format!(
            "DATABASE_URL must start with sqlite:// or postgres:// (got scheme {:?})",
            url.split("://").next().unwrap_or("")
        )));
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if path == ":memory:" {
        // The writer and the readers are separate connections: each would get a
        // database of its own.
        return Err(StoreError::Unavailable("an in-memory SQLite database cannot be shared by the pool; use a file".into()));
    }
    let mut query: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !query.iter().any(|p| p.starts_with("mode=")) && path != ":memory:" {
        query.push("mode=rwc");
    }
    let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    Ok((Backend::Sqlite, format!("sqlite://{path}{q}")))
}

impl Store {
    /// Connects, without migrating. See [`Store::migrate`].
    pub async fn connect(url: &str, opts: &PoolOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalize_url(url)?;
        let connect = AnyConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Unavailable(format!("bad DATABASE_URL: {}", redact(&e.to_string()))))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));

        let base = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(opts.min_connections.min(max))
                .acquire_timeout(opts.acquire_timeout)
                .idle_timeout(opts.idle_timeout)
        };
        let stmt_ms = opts.statement_timeout.as_millis() as u64;
        match backend {
            Backend::Sqlite => {
                // WAL lets readers run beside the writer; NORMAL is durable across
                // application crashes (only an OS crash may lose the last commits).
                let pragmas = format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {stmt_ms};"
                );
                let write = base(1).after_connect(run_on_connect(pragmas.clone())).connect_with(connect.clone()).await.map_err(connect_err)?;
                let read = base(opts.max_connections.max(1))
                    .after_connect(run_on_connect(pragmas))
                    .connect_with(connect)
                    .await
                    .map_err(connect_err)?;
                Ok(Store { backend, read, write })
            }
            Backend::Postgres => {
                let pool = base(opts.max_connections.max(1))
                    .after_connect(run_on_connect(format!("SET statement_timeout = {stmt_ms}")))
                    .connect_with(connect)
                    .await
                    .map_err(connect_err)?;
                Ok(Store { backend, read: pool.clone(), write: pool })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection for reading, with the wait recorded.
    pub(crate) async fn reader(&self) -> Result<PoolConnection<Any>> {
        acquire(&self.read, "read").await
    }

    /// The connection for writing, with the wait recorded.
    pub(crate) async fn writer(&self) -> Result<PoolConnection<Any>> {
        acquire(&self.write, "write").await
    }

    /// Round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.reader().await?;
        sqlx::query("SELECT 1").execute(&mut *c).await?;
        Ok(())
    }

    /// Statistics per pool: on SQLite `("read", ..)` and `("write", ..)`; on PostgreSQL
    /// one pool serves both, as `("main", ..)`.
    pub fn pool_stats(&self) -> Vec<(&'static str, PoolStats)> {
        let stats = |p: &AnyPool| PoolStats {
            size: p.size(),
            idle: p.num_idle() as u32,
            max: p.options().get_max_connections(),
        };
        match self.backend {
            Backend::Postgres => vec![("main", stats(&self.read))],
            Backend::Sqlite => vec![("read", stats(&self.read)), ("write", stats(&self.write))],
        }
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    pub(crate) fn write_pool(&self) -> &AnyPool {
        &self.write
    }
}

/// A hook that runs `sql` on every new connection.
fn run_on_connect(
    sql: String,
) -> impl for<'c> Fn(&'c mut sqlx::AnyConnection, sqlx::pool::PoolConnectionMetadata) -> BoxFuture<'c, std::result::Result<(), sqlx::Error>>
+ Send
+ Sync
+ 'static {
    move |conn, _meta| {
        let sql = sql.clone();
        Box::pin(async move {
            conn.execute(sqlx::AssertSqlSafe(sql)).await?;
            Ok(())
        })
    }
}

async fn acquire(pool: &AnyPool, which: &'static str) -> Result<PoolConnection<Any>> {
    let t = Instant::now();
    let conn = pool.acquire().await;
    metrics::histogram!("voxgate_db_acquire_seconds", "pool" => which).record(t.elapsed().as_secs_f64());
    Ok(conn?)
}

fn connect_err(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(redact(&e.to_string()))
}

/// Removes a password from anything that looks like a connection URL.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_inclusive(char::is_whitespace) {
        match (word.find("://"), word.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let creds = &word[scheme + 3..at];
                let user = creds.split(':').next().unwrap_or("");
                out.push_str(&word[..scheme + 3]);
                out.push_str(user);
                out.push_str(":***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(normalize_url("voxgate.db").unwrap(), (Backend::Sqlite, "sqlite://voxgate.db?mode=rwc".into()));
        assert_eq!(normalize_url("sqlite:x.db").unwrap().1, "sqlite://x.db?mode=rwc");
        assert_eq!(normalize_url("sqlite://x.db?mode=ro").unwrap().1, "sqlite://x.db?mode=ro");
        assert_eq!(normalize_url("postgresql://u:p@h/db").unwrap().0, Backend::Postgres);
        assert!(normalize_url("mysql://h/db").is_err());
        assert!(normalize_url("").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        let s = redact("cannot reach postgres://postgres.abc:s3cret@db.example:5432/postgres now");
        assert!(!s.contains("s3cret"), "{s}");
        assert!(s.contains("postgres.abc:***@db.example"), "{s}");
    }
}
