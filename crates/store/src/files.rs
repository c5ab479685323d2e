//! The files repository (records only; the bytes are stored elsewhere).

use sqlx::Row;
use sqlx::any::AnyRow;
use voxgate_domain::{FileError, FileRecord, FileStatus};

use crate::assistants::page;
use crate::{Page, Result, Store, StoreError};

pub(crate) const COLS: &str =
    "id, name, content_type, size_bytes, sha256, purpose, assistant_id, storage_path, created_at, status, error_code, error_message, chunk_count, processed_at";

pub(crate) fn from_row(r: &AnyRow) -> Result<FileRecord> {
    let status: String = r.try_get("status")?;
    let code: Option<String> = r.try_get("error_code")?;
    let message: Option<String> = r.try_get("error_message")?;
    Ok(FileRecord {
        status: FileStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("file status `{status}`")))?,
        error: code.map(|code| FileError { code, message: message.unwrap_or_default() }),
        chunk_count: r.try_get("chunk_count")?,
        processed_at: r.try_get("processed_at")?,
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        content_type: r.try_get("content_type")?,
        size_bytes: r.try_get("size_bytes")?,
        sha256: r.try_get("sha256")?,
        purpose: r.try_get("purpose")?,
        assistant_id: r.try_get("assistant_id")?,
        storage_path: r.try_get("storage_path")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    pub async fn insert_file(&self, f: &FileRecord) -> Result<()> {
        let mut c = self.writer().await?;
        sqlx::query(
            "INSERT INTO files (id, name, content_type, size_bytes, sha256, purpose, assistant_id, storage_path, created_at, \
             status, error_code, error_message, chunk_count, processed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        // Uncached: NULLs bind with other types through the Any driver (see calls.rs).
        .persistent(false)
        .bind(&f.id)
        .bind(&f.name)
        .bind(&f.content_type)
        .bind(f.size_bytes)
        .bind(&f.sha256)
        .bind(&f.purpose)
        .bind(&f.assistant_id)
        .bind(&f.storage_path)
        .bind(f.created_at)
        .bind(f.status.as_str())
        .bind(f.error.as_ref().map(|e| e.code.clone()))
        .bind(f.error.as_ref().map(|e| e.message.clone()))
        .bind(f.chunk_count)
        .bind(f.processed_at)
        .execute(&mut *c)
        .await?;
        Ok(())
    }

    pub async fn get_file(&self, id: &str) -> Result<FileRecord> {
        let mut c = self.reader().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM files WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
            .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    pub async fn list_files(&self, limit: u32, cursor: Option<&str>) -> Result<Page<FileRecord>> {
        let limit = limit.clamp(1, 100) as i64;
        let mut c = self.reader().await?;
        let rows = match cursor {
            Some(cursor) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM files WHERE id < $1 ORDER BY id DESC LIMIT $2")))
                    .bind(cursor.to_string())
                    .bind(limit + 1)
                    .fetch_all(&mut *c)
                    .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM files ORDER BY id DESC LIMIT $1")))
                    .bind(limit + 1)
                    .fetch_all(&mut *c)
                    .await?
            }
        };
        page(rows, limit, from_row, |f| f.id.clone())
    }

    /// Deletes a file's record and its knowledge chunks (in one transaction) and
    /// returns the record, so the caller can remove the bytes.
    pub async fn delete_file(&self, id: &str) -> Result<FileRecord> {
        use sqlx::Connection;
        let mut c = self.writer().await?;
        let mut tx = c.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM files WHERE id = $1 RETURNING {COLS}")))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        sqlx::query("DELETE FROM knowledge_chunks WHERE file_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        from_row(&row)
    }
}
