//! Control messages for live calls on their way to the agent instance that holds
//! the call (`POST /api/calls/{id}/control` with several instances).
//!
//! The API queues a message ([`Store::queue_control`]) and announces it; the
//! instance holding the call reads the call's queue in order
//! ([`Store::queued_controls`]) and removes each message as it hands it over
//! ([`Store::remove_control`]: only the remover that deleted the row hands it
//! over, so a message is handed over once). An instance that was not told (its
//! listening connection was down when the announcement went out) finds the calls
//! with messages waiting with [`Store::calls_with_controls`], which also deletes the
//! messages nobody took in time (their call ended first).
//!
//! The order is the queue's own (`seq`, given by the database), not a clock's.
//! `created_at` comes from the database's clock, so the age limit does not depend
//! on the hosts' clocks agreeing.

use sqlx::Row;

use crate::instances::db_now;
use crate::{Result, Store};

/// One control message waiting for its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedControl {
    pub id: String,
    pub call_id: String,
    /// The message, JSON, as queued.
    pub message: String,
}

impl Store {
    /// Queues `message` (JSON) for the call `call_id`; returns the message's id, or
    /// `None` when `max` messages wait for that call already.
    pub async fn queue_control(&self, call_id: &str, message: &str, max: i64) -> Result<Option<String>> {
        let id = voxgate_domain::clock::new_id();
        let now = db_now(self.backend());
        let mut c = self.writer().await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO call_controls (id, call_id, message, created_at) SELECT $1, $2, $3, {now} \
             WHERE (SELECT COUNT(*) FROM call_controls WHERE call_id = $2) < $4"
        )))
        .bind(&id)
        .bind(call_id)
        .bind(message)
        .bind(max)
        .execute(&mut *c)
        .await?;
        Ok((done.rows_affected() == 1).then_some(id))
    }

    /// The messages waiting for `call_id`, in the order they were queued.
    pub async fn queued_controls(&self, call_id: &str) -> Result<Vec<QueuedControl>> {
        let mut c = self.writer().await?;
        let rows = sqlx::query("SELECT id, call_id, message FROM call_controls WHERE call_id = $1 ORDER BY seq")
            .bind(call_id)
            .fetch_all(&mut *c)
            .await?;
        rows.into_iter()
            .map(|r| Ok(QueuedControl { id: r.try_get("id")?, call_id: r.try_get("call_id")?, message: r.try_get("message")? }))
            .collect()
    }

    /// Removes the message `id`; `true` when this call removed it (it was still
    /// queued), so that of two removers exactly one hands it over.
    pub async fn remove_control(&self, id: &str) -> Result<bool> {
        let mut c = self.writer().await?;
        let done = sqlx::query("DELETE FROM call_controls WHERE id = $1").bind(id).execute(&mut *c).await?;
        Ok(done.rows_affected() == 1)
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
        let rows = sqlx::query("SELECT DISTINCT call_id FROM call_controls ORDER BY call_id")
            .fetch_all(&mut *c)
            .await?;
        Ok(rows.into_iter().map(|r| r.try_get("call_id")).collect::<std::result::Result<_, _>>()?)
    }
}
