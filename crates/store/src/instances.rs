//! The agent instances that hold calls, and the sweep that ends the calls of one
//! that died.
//!
//! Each agent-role process keeps a row (`id` is its `INSTANCE_ID`, the value on
//! `calls.instance`) and refreshes its `seen_at` every heartbeat. An instance whose
//! row has not been refreshed for a lease is taken for dead: any other instance may
//! end the calls it left `in-progress` and remove its row
//! ([`Store::end_calls_of_lost_instances`]). Calls whose instance has no row (made
//! before this table existed, or by an instance that was never registered) are left
//! alone.
//!
//! `seen_at` and the sweep's cut-off come from the database's clock, so instances on
//! hosts whose clocks disagree never take each other for dead; a call's `ended_at`
//! stays on the caller's clock, as every other write of a call.

use sqlx::Row;

use crate::{Backend, Result, Store};

/// One registered instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    pub id: String,
    /// Unix milliseconds (the database's clock): when it registered.
    pub started_at: i64,
    /// Unix milliseconds (the database's clock): its last refresh.
    pub seen_at: i64,
}

/// Calls ended because their instance was lost, per instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// (instance, calls of it ended now), by instance id.
    pub ended: Vec<(String, u64)>,
    /// The rows of lost instances removed (they hold no call in progress any more).
    pub removed: Vec<String>,
}

impl Sweep {
    /// Calls ended, over every instance.
    pub fn calls(&self) -> u64 {
        self.ended.iter().map(|(_, n)| n).sum()
    }
}

/// The database's current time in Unix milliseconds, as an SQL expression.
pub(crate) fn db_now(backend: Backend) -> &'static str {
    match backend {
        // 'now' has millisecond precision; Julian day 2440587.5 is the Unix epoch.
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
    }
}

impl Store {
    /// Registers `id` at its start: its row, with `started_at` and `seen_at` now
    /// (a row left by an earlier run of the same id is taken over).
    pub async fn register_instance(&self, id: &str) -> Result<()> {
        let now = db_now(self.backend());
        let mut c = self.writer().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO instances (id, started_at, seen_at) VALUES ($1, {now}, {now}) \
             ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, seen_at = excluded.seen_at"
        )))
        .bind(id)
        .execute(&mut *c)
        .await?;
        Ok(())
    }

    /// The heartbeat: sets `id`'s `seen_at` to now. Returns `false` when its row was
    /// gone and has been written again (others took this instance for dead, after it
    /// could not reach the database for longer than a lease).
    pub async fn refresh_instance(&self, id: &str) -> Result<bool> {
        let now = db_now(self.backend());
        let mut c = self.writer().await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE instances SET seen_at = {now} WHERE id = $1"
        )))
        .bind(id)
        .execute(&mut *c)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO instances (id, started_at, seen_at) VALUES ($1, {now}, {now}) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at"
        )))
        .bind(id)
        .execute(&mut *c)
        .await?;
        Ok(false)
    }

    /// Removes `id`'s row (a clean stop, once its calls have ended).
    pub async fn remove_instance(&self, id: &str) -> Result<()> {
        let mut c = self.writer().await?;
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    /// Every registered instance, by id.
    pub async fn instances(&self) -> Result<Vec<InstanceRow>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT id, started_at, seen_at FROM instances ORDER BY id")
            .fetch_all(&mut *c)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
                    id: r.try_get("id")?,
                    started_at: r.try_get("started_at")?,
                    seen_at: r.try_get("seen_at")?,
                })
            })
            .collect()
    }

    /// The sweep, run by instance `own`: ends (as `reason`, `ended_at` now) every call
    /// still in progress whose instance's row was last refreshed more than `lease_ms`
    /// ago, then removes the rows of such instances that hold no call in progress.
    /// `own` is never swept. Calls with no instance row are left alone.
    ///
    /// Safe to run from several instances at once, and again: the calls are ended by
    /// one `UPDATE` that only touches calls still in progress (on PostgreSQL a
    /// concurrent sweep waits for the other's row locks, then sees those calls ended
    /// and skips them), so each call is ended once, with the first sweep's time. A row
    /// refreshed meanwhile (its instance was alive after all) is kept, and one whose
    /// instance wrote a call between the two statements stays for the next sweep.
    pub async fn end_calls_of_lost_instances(
        &self,
        own: &str,
        lease_ms: i64,
        reason: &str,
    ) -> Result<Sweep> {
        let now = db_now(self.backend());
        let ended_at = voxgate_domain::clock::now_ms();
        let mut c = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *c).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE calls SET status = 'ended', ended_reason = $1, ended_at = $2, duration_ms = $2 - started_at \
             WHERE status = 'in-progress' AND instance IN (SELECT id FROM instances WHERE seen_at < {now} - $3 AND id <> $4) \
             RETURNING instance"
        )))
        .bind(reason)
        .bind(ended_at)
        .bind(lease_ms)
        .bind(own)
        .fetch_all(&mut *tx)
        .await?;
        let mut sweep = Sweep::default();
        for r in &rows {
            let instance: String = r.try_get("instance")?;
            match sweep.ended.iter_mut().find(|(i, _)| *i == instance) {
                Some((_, n)) => *n += 1,
                None => sweep.ended.push((instance, 1)),
            }
        }
        sweep.ended.sort();
        let removed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM instances WHERE seen_at < {now} - $1 AND id <> $2 \
             AND NOT EXISTS (SELECT 1 FROM calls WHERE calls.instance = instances.id AND calls.status = 'in-progress') \
             RETURNING id"
        )))
        .bind(lease_ms)
        .bind(own)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        sweep.removed = removed
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<std::result::Result<_, _>>()?;
        sweep.removed.sort();
        Ok(sweep)
    }
}
