//! The API keys repository, and one-time login codes.

use sqlx::Row;
use sqlx::any::AnyRow;
use voxgate_domain::key::{ApiKey, KeyKind};
use voxgate_domain::clock::now_ms;

use crate::{Result, Store, StoreError, json_col};

const COLS: &str = "id, name, kind, prefix, hash, assistant_ids, created_at, revoked_at";

fn from_row(r: &AnyRow) -> Result<ApiKey> {
    let kind: String = r.try_get("kind")?;
    let ids: String = r.try_get("assistant_ids")?;
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: KeyKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("api_keys.kind {kind:?}")))?,
        prefix: r.try_get("prefix")?,
        hash: r.try_get("hash")?,
        assistant_ids: json_col(&ids, "api_keys.assistant_ids")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    pub async fn insert_key(&self, key: &ApiKey) -> Result<()> {
        let mut c = self.writer().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, kind, prefix, hash, assistant_ids, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(key.kind.as_str())
        .bind(&key.prefix)
        .bind(&key.hash)
        .bind(serde_json::to_string(&key.assistant_ids).expect("strings serialize"))
        .bind(key.created_at)
        .bind(key.revoked_at)
        .execute(&mut *c)
        .await?;
        Ok(())
    }

    /// The live (not revoked) key with this hash.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let mut c = self.reader().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")))
            .bind(hash)
            .fetch_optional(&mut *c)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn get_key(&self, id: &str) -> Result<ApiKey> {
        let mut c = self.reader().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM api_keys WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
            .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// Every key, newest first, revoked ones included.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM api_keys ORDER BY id DESC")))
            .fetch_all(&mut *c)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes a key; revoking twice is not an error. Returns the key.
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey> {
        {
            let mut c = self.writer().await?;
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *c)
                .await?;
        }
        self.get_key(id).await
    }

    pub async fn count_live_keys(&self) -> Result<i64> {
        let mut c = self.reader().await?;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetch_one(&mut *c).await?;
        Ok(n)
    }

    /// Stores a one-time login code (by hash), replacing any unused ones.
    pub async fn create_login_code(&self, hash: &str, ttl_ms: i64) -> Result<()> {
        let now = now_ms();
        let mut c = self.writer().await?;
        sqlx::query("DELETE FROM login_codes WHERE used_at IS NULL").execute(&mut *c).await?;
        sqlx::query("INSERT INTO login_codes (hash, created_at, expires_at) VALUES ($1, $2, $3)")
            .bind(hash)
            .bind(now)
            .bind(now + ttl_ms)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    /// Marks a login code used. True only for the first use of a live code.
    pub async fn consume_login_code(&self, hash: &str) -> Result<bool> {
        let now = now_ms();
        let mut c = self.writer().await?;
        let done = sqlx::query("UPDATE login_codes SET used_at = $1 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1")
            .bind(now)
            .bind(hash)
            .execute(&mut *c)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Stores a call token (by hash) for one call to `assistant_id`.
    pub async fn create_call_token(&self, hash: &str, assistant_id: &str, key_id: Option<&str>, ttl_ms: i64) -> Result<i64> {
        let now = now_ms();
        let expires = now + ttl_ms;
        let mut c = self.writer().await?;
        // Expired tokens are of no use to anyone: sweep them as new ones come.
        sqlx::query("DELETE FROM call_tokens WHERE expires_at < $1").bind(now - 3_600_000).execute(&mut *c).await?;
        sqlx::query("INSERT INTO call_tokens (hash, assistant_id, key_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(hash)
            .bind(assistant_id)
            .bind(key_id)
            .bind(now)
            .bind(expires)
            .execute(&mut *c)
            .await?;
        Ok(expires)
    }

    /// Uses a call token: its assistant and key, the first time only, before it expires.
    pub async fn consume_call_token(&self, hash: &str) -> Result<Option<(String, Option<String>)>> {
        let now = now_ms();
        let mut c = self.writer().await?;
        let row = sqlx::query(
            "UPDATE call_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING assistant_id, key_id",
        )
        .bind(now)
        .bind(hash)
        .fetch_optional(&mut *c)
        .await?;
        match row {
            Some(r) => Ok(Some((r.try_get("assistant_id")?, r.try_get("key_id")?))),
            None => Ok(None),
        }
    }
}
