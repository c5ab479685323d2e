//! The embedded migrations, one folder per backend, run by sqlx's `Migrator` (which
//! records what ran in `_sqlx_migrations`, so running twice changes nothing).

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::{Backend, Result, Store};

/// (version, description, SQLite SQL, PostgreSQL SQL), in order.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (1, "init", include_str!("../migrations/sqlite/0001_init.sql"), include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        "call tokens",
        include_str!("../migrations/sqlite/0002_call_tokens.sql"),
        include_str!("../migrations/postgres/0002_call_tokens.sql"),
    ),
    (
        3,
        "response time and recordings",
        include_str!("../migrations/sqlite/0003_response_and_recordings.sql"),
        include_str!("../migrations/postgres/0003_response_and_recordings.sql"),
    ),
    (
        4,
        "knowledge",
        include_str!("../migrations/sqlite/0004_knowledge.sql"),
        include_str!("../migrations/postgres/0004_knowledge.sql"),
    ),
    (
        5,
        "webhooks",
        include_str!("../migrations/sqlite/0005_webhooks.sql"),
        include_str!("../migrations/postgres/0005_webhooks.sql"),
    ),
    (
        6,
        "instances",
        include_str!("../migrations/sqlite/0006_instances.sql"),
        include_str!("../migrations/postgres/0006_instances.sql"),
    ),
    (
        7,
        "turn errors",
        include_str!("../migrations/sqlite/0007_turn_errors.sql"),
        include_str!("../migrations/postgres/0007_turn_errors.sql"),
    ),
    (
        8,
        "call controls",
        include_str!("../migrations/sqlite/0008_call_controls.sql"),
        include_str!("../migrations/postgres/0008_call_controls.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, desc, sqlite, pg)| {
            let sql = match backend {
                Backend::Sqlite => *sqlite,
                Backend::Postgres => *pg,
            };
            Migration::new(*version, Cow::Borrowed(*desc), MigrationType::Simple, sqlx::SqlSafeStr::into_sql_str(sql), false)
        })
        .collect::<Vec<_>>();
    Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT }
}

impl Store {
    /// Applies the migrations not yet applied. Safe to run from several processes at
    /// once on PostgreSQL (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        migrator(self.backend()).run(self.write_pool()).await?;
        Ok(())
    }

    /// The versions applied so far.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let mut c = self.reader().await?;
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(&mut *c).await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
