//! Test support shared by the crates' tests: every test gets a database of its own,
//! SQLite always and PostgreSQL when `VOXGATE_TEST_POSTGRES_URL` is set (CI sets it;
//! `scripts/test.sh` starts a server on loopback).

use sqlx::Connection;
use voxgate_store::{PoolOptions, Store};

/// One empty database for one test. Holds the temp folder (SQLite) alive.
pub struct TestDb {
    pub name: &'static str,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL server for tests, if configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("VOXGATE_TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty())
}

/// In CI, PostgreSQL tests are required, not skipped.
pub fn postgres_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("voxgate.db").display());
        TestDb { name: "sqlite", url, _dir: Some(dir) }
    }

    /// A fresh schema on the test PostgreSQL server, reached through `search_path`.
    pub async fn postgres() -> Option<TestDb> {
        let Some(base) = postgres_url() else {
            assert!(!postgres_required(), "CI must set VOXGATE_TEST_POSTGRES_URL");
            return None;
        };
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&mut conn).await.expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        Some(TestDb { name: "postgres", url, _dir: None })
    }

    /// The backend a test run asked for with `VOXGATE_TEST_BACKEND` (`sqlite`, the
    /// default, or `postgres`), so one suite runs against each in turn.
    pub async fn chosen() -> TestDb {
        match std::env::var("VOXGATE_TEST_BACKEND").as_deref() {
            Ok("postgres") => TestDb::postgres().await.expect("VOXGATE_TEST_BACKEND=postgres needs VOXGATE_TEST_POSTGRES_URL"),
            Ok("sqlite") | Err(_) => TestDb::sqlite(),
            Ok(other) => panic!("VOXGATE_TEST_BACKEND={other:?}: expected sqlite or postgres"),
        }
    }

    /// Every backend available here: SQLite, and PostgreSQL when configured.
    pub async fn all() -> Vec<TestDb> {
        let mut v = vec![TestDb::sqlite()];
        v.extend(TestDb::postgres().await);
        v
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, &PoolOptions::default()).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}

/// A knowledge file's record in `status`, under a new id (its bytes nowhere:
/// tests that need them set `storage_path` and write them).
pub fn file_record(status: voxgate_domain::FileStatus) -> voxgate_domain::FileRecord {
    use voxgate_domain::clock::{new_id, now_ms};
    voxgate_domain::FileRecord {
        id: new_id(),
        name: "notes.txt".into(),
        content_type: "text/plain".into(),
        size_bytes: 0,
        sha256: "00".repeat(32),
        purpose: "knowledge".into(),
        assistant_id: None,
        storage_path: "unused".into(),
        created_at: now_ms(),
        status,
        error: None,
        chunk_count: 0,
        processed_at: None,
    }
}

