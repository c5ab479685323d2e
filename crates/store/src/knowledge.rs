//! Knowledge-base chunks: the pieces of an uploaded file's text with their
//! embeddings (little-endian f32 bytes, the same on both databases; the server
//! searches them), and the file's processing outcome.

use sqlx::{Connection, Row};
use voxgate_domain::FileRecord;
use voxgate_domain::clock::now_ms;

use crate::files::{COLS, from_row};
use crate::{Result, Store, StoreError};

/// Rows per INSERT statement (4 parameters each; well under both databases' limits).
const INSERT_BATCH: usize = 200;

/// One stored piece of a file's text.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub file_id: String,
    pub idx: i64,
    pub text: String,
    /// The embedding, as `voxgate_knowledge::encode_vector` wrote it.
    pub embedding: Vec<u8>,
}

impl Store {
    /// Stores a file's chunks and marks it `ready`, in one transaction, but only
    /// while the file is still `processing`: a file deleted (or finished) meanwhile
    /// gets no chunks, and [`StoreError::NotFound`] says so.
    pub async fn complete_file(&self, file_id: &str, chunks: &[(String, Vec<u8>)]) -> Result<()> {
        let mut c = self.writer().await?;
        let mut tx = c.begin().await?;
        let updated = sqlx::query(
            "UPDATE files SET status = 'ready', chunk_count = $2, processed_at = $3, error_code = NULL, error_message = NULL \
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(file_id)
        .bind(chunks.len() as i64)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM knowledge_chunks WHERE file_id = $1").bind(file_id).execute(&mut *tx).await?;
        for (batch_no, batch) in chunks.chunks(INSERT_BATCH).enumerate() {
            let mut sql = String::from("INSERT INTO knowledge_chunks (file_id, idx, text, embedding) VALUES ");
            for n in 0..batch.len() {
                let p = n * 4;
                if n > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (n, (text, embedding)) in batch.iter().enumerate() {
                q = q.bind(file_id).bind((batch_no * INSERT_BATCH + n) as i64).bind(text.as_str()).bind(embedding.as_slice());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks a `processing` file `failed` with a reason.
    pub async fn fail_file(&self, file_id: &str, code: &str, message: &str) -> Result<()> {
        let mut c = self.writer().await?;
        let updated = sqlx::query(
            "UPDATE files SET status = 'failed', error_code = $2, error_message = $3, processed_at = $4 \
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(file_id)
        .bind(code)
        .bind(message)
        .bind(now_ms())
        .execute(&mut *c)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Files still `processing` (oldest first): after a restart their jobs run again.
    pub async fn processing_files(&self) -> Result<Vec<FileRecord>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM files WHERE status = 'processing' ORDER BY id")))
            .fetch_all(&mut *c)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// The records of these files that exist (any status), in no particular order.
    pub async fn files_by_ids(&self, ids: &[String]) -> Result<Vec<FileRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.reader().await?;
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(INSERT_BATCH) {
            let marks = (1..=batch.len()).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM files WHERE id IN ({marks})")));
            for id in batch {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&mut *c).await? {
                out.push(from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Every chunk of one file, in order.
    pub async fn file_chunks(&self, file_id: &str) -> Result<Vec<StoredChunk>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT file_id, idx, text, embedding FROM knowledge_chunks WHERE file_id = $1 ORDER BY idx")
            .bind(file_id)
            .fetch_all(&mut *c)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredChunk {
                    file_id: r.try_get("file_id")?,
                    idx: r.try_get("idx")?,
                    text: r.try_get("text")?,
                    embedding: r.try_get("embedding")?,
                })
            })
            .collect()
    }
}
