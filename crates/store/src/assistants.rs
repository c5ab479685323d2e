//! The assistants repository.

use sqlx::Row;
use sqlx::any::AnyRow;
use voxgate_domain::clock::{new_id, now_ms};
use voxgate_domain::{Assistant, AssistantSpec};

use crate::{Page, Result, Store, StoreError, json_col};

fn from_row(r: &AnyRow) -> Result<Assistant> {
    let spec: String = r.try_get("spec")?;
    Ok(Assistant {
        id: r.try_get("id")?,
        spec: json_col::<AssistantSpec>(&spec, "assistants.spec")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn spec_json(spec: &AssistantSpec) -> String {
    serde_json::to_string(spec).expect("an AssistantSpec always serializes")
}

impl Store {
    /// Stores a new assistant (the spec is assumed validated).
    pub async fn create_assistant(&self, spec: AssistantSpec) -> Result<Assistant> {
        let now = now_ms();
        let a = Assistant { id: new_id(), spec, created_at: now, updated_at: now };
        let mut c = self.writer().await?;
        sqlx::query("INSERT INTO assistants (id, name, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&a.id)
            .bind(&a.spec.name)
            .bind(spec_json(&a.spec))
            .bind(a.created_at)
            .bind(a.updated_at)
            .execute(&mut *c)
            .await?;
        Ok(a)
    }

    pub async fn get_assistant(&self, id: &str) -> Result<Assistant> {
        let mut c = self.reader().await?;
        let row = sqlx::query("SELECT id, spec, created_at, updated_at FROM assistants WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
            .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// Newest first. `cursor` is the last id of the previous page.
    pub async fn list_assistants(&self, limit: u32, cursor: Option<&str>) -> Result<Page<Assistant>> {
        let mut c = self.reader().await?;
        let limit = limit.clamp(1, 100) as i64;
        // Two statements rather than a sentinel cursor: no string sorts after every id
        // under every collation.
        let rows = match cursor {
            Some(cursor) => {
                sqlx::query("SELECT id, spec, created_at, updated_at FROM assistants WHERE id < $1 ORDER BY id DESC LIMIT $2")
                    .bind(cursor)
                    .bind(limit + 1)
                    .fetch_all(&mut *c)
                    .await?
            }
            None => {
                sqlx::query("SELECT id, spec, created_at, updated_at FROM assistants ORDER BY id DESC LIMIT $1")
                    .bind(limit + 1)
                    .fetch_all(&mut *c)
                    .await?
            }
        };
        page(rows, limit, from_row, |a| a.id.clone())
    }

    /// Replaces an assistant's spec.
    pub async fn update_assistant(&self, id: &str, spec: AssistantSpec) -> Result<Assistant> {
        let now = now_ms();
        let mut c = self.writer().await?;
        let row = sqlx::query(
            "UPDATE assistants SET name = $1, spec = $2, updated_at = $3 WHERE id = $4 \
             RETURNING id, spec, created_at, updated_at",
        )
        .bind(&spec.name)
        .bind(spec_json(&spec))
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    pub async fn delete_assistant(&self, id: &str) -> Result<()> {
        let mut c = self.writer().await?;
        let done = sqlx::query("DELETE FROM assistants WHERE id = $1").bind(id).execute(&mut *c).await?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}

/// Cuts `rows` (fetched with `limit + 1`) into a page and its next cursor.
pub(crate) fn page<T>(
    rows: Vec<AnyRow>,
    limit: i64,
    decode: impl Fn(&AnyRow) -> Result<T>,
    cursor_of: impl Fn(&T) -> String,
) -> Result<Page<T>> {
    let more = rows.len() as i64 > limit;
    let items = rows.iter().take(limit as usize).map(decode).collect::<Result<Vec<T>>>()?;
    let next_cursor = if more { items.last().map(cursor_of) } else { None };
    Ok(Page { items, next_cursor })
}
