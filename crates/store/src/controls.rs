//! Control messages for live calls on their way to the agent instance that holds
//! the call (`POST /api/calls/{id}/control` with several instances).
//!
//! The API queues a message ([`Store::queue_control`]) and announces it; the
//! instance holding the call takes every message queued for it
//! ([`Store::take_controls`]), which deletes them in the same statement, so each
//! message is taken by one taker, once. An instance that was not told (its
//! listening connection was down when the announcement went out) finds the calls
//! with messages waiting with [`Store::calls_with_controls`], which also deletes the
//! messages nobody took in time (their call ended first).
//!
//! `created_at` comes from the database's clock, so the age limit does not depend
//! on the hosts' clocks agreeing.

use sqlx::Row;

use crate::instances::db_now;
use crate::{Result, Store};

/// One control message taken for its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedControl {
    pub id: String,
    pub call_id: String,
    /// The message, JSON, as queued.
    pub message: String,
    /// Unix milliseconds (the database's clock).
    pub created_at: i64,
}

impl Store {
    /// Queues `message` (JSON) for the call `call_id`; returns the message's id.
    pub async fn queue_control(&self, call_id: &str, message: &str) -> Result<String> {
        let id = voxgate_domain::clock::new_id();
        let now = db_now(self.backend());
        let mut c = self.writer().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO call_controls (id, call_id, message, created_at) VALUES ($1, $2, $3, {now})"
        )))
        .bind(&id)
        .bind(call_id)
        .bind(message)
        .execute(&mut *c)
        .await?;
        Ok(id)
    }

    /// Takes (deletes and returns) every message queued for `call_id`, oldest first.
    /// Two takers never get the same message.
    pub async fn take_controls(&self, call_id: &str) -> Result<Vec<QueuedControl>> {
        let mut c = self.writer().await?;
        let rows = sqlx::query("DELETE FROM call_controls WHERE call_id = $1 RETURNING id, call_id, message, created_at")
            .bind(call_id)
            .fetch_all(&mut *c)
            .await?;
        let mut taken = rows
            .into_iter()
            .map(|r| {
                Ok(QueuedControl {
                    id: r.try_get("id")?,
                    call_id: r.try_get("call_id")?,
                    message: r.try_get("message")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        // RETURNING gives no order.
        taken.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(taken)
    }

    /// The calls with messages waiting, after deleting the messages older than
    /// `max_age_ms` (nobody took them: their call is over, or held by no instance).
    pub async fn calls_with_controls(&self, max_age_ms: i64) -> Result<Vec<String>> {
        let now = db_now(self.backend());
        let mut c = self.writer().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM call_controls WHERE created_at < {now} - $1")))
            .bind(max_age_ms)
            .execute(&mut *c)
            .await?;
        drop(c);
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT DISTINCT call_id FROM call_controls ORDER BY call_id")
            .fetch_all(&mut *c)
            .await?;
        Ok(rows.into_iter().map(|r| r.try_get("call_id")).collect::<std::result::Result<_, _>>()?)
    }
}
