//! The webhook outbox: events waiting to be POSTed to a customer's server, kept until
//! delivered (or given up on), so a restart or an unreachable receiver loses nothing.
//!
//! A worker *claims* due events by setting a lease on them; while the lease runs no
//! other worker claims them. On PostgreSQL the claim locks its rows with
//! `FOR UPDATE SKIP LOCKED`, so two instances on one database never take the same
//! event in the same round; on SQLite every write goes through the one writer
//! connection, so the claim's single `UPDATE ... RETURNING` is atomic already.
//! The lease's end (Unix milliseconds) is also the claim's token: failures and
//! releases only touch a row still under the caller's own lease.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::assistants::page;
use crate::{Backend, Page, Result, Store, StoreError};

const COLS: &str = "id, event_type, call_id, assistant_id, url, body, created_at, attempts, next_attempt_at, \
                    state, delivered_at, last_status, last_error, lease_until";

/// Longest `last_error` kept, in bytes.
pub const MAX_ERROR_LEN: usize = 500;

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Waiting for its first or next attempt.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Given up on (too many attempts, or the receiver said it is gone).
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxState> {
        match s {
            "pending" => Some(OutboxState::Pending),
            "delivered" => Some(OutboxState::Delivered),
            "failed" => Some(OutboxState::Failed),
            _ => None,
        }
    }
}

/// One event in the outbox, with its delivery status.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The event id (a UUIDv7 string); receivers deduplicate by it.
    pub id: String,
    /// `status-update`, `transcript`, `tool-calls`, `end-of-call-report`, ...
    pub event_type: String,
    pub call_id: Option<String>,
    pub assistant_id: Option<String>,
    /// Where it is POSTed.
    pub url: String,
    /// The exact JSON text that is sent and signed.
    pub body: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Attempts made so far.
    pub attempts: i64,
    /// Unix milliseconds; not before then is it tried (again).
    pub next_attempt_at: i64,
    pub state: OutboxState,
    /// Unix milliseconds, when delivered.
    pub delivered_at: Option<i64>,
    /// HTTP status of the last answer, if one came.
    pub last_status: Option<i64>,
    /// Why the last attempt failed (short; never a secret).
    pub last_error: Option<String>,
    /// Unix milliseconds until which a worker holds the event; the claim's token.
    pub lease_until: Option<i64>,
}

/// A new event for [`Store::enqueue_webhook`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxEvent {
    pub id: String,
    pub event_type: String,
    pub call_id: Option<String>,
    pub assistant_id: Option<String>,
    pub url: String,
    pub body: String,
    /// Unix milliseconds; also the first attempt's time.
    pub created_at: i64,
}

/// Which deliveries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    pub call_id: Option<String>,
    pub state: Option<OutboxState>,
    pub event_type: Option<String>,
    pub cursor: Option<String>,
    pub limit: u32,
}

fn from_row(r: &AnyRow) -> Result<OutboxEvent> {
    let state: String = r.try_get("state")?;
    Ok(OutboxEvent {
        id: r.try_get("id")?,
        event_type: r.try_get("event_type")?,
        call_id: r.try_get("call_id")?,
        assistant_id: r.try_get("assistant_id")?,
        url: r.try_get("url")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        state: OutboxState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("webhook_outbox.state {state:?}")))?,
        delivered_at: r.try_get("delivered_at")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        lease_until: r.try_get("lease_until")?,
    })
}

/// Cuts `s` to at most [`MAX_ERROR_LEN`] bytes on a character boundary.
fn short(s: &str) -> &str {
    if s.len() <= MAX_ERROR_LEN {
        return s;
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Store {
    /// Writes an event to the outbox, due at once. Durable when this returns.
    pub async fn enqueue_webhook(&self, e: &NewOutboxEvent) -> Result<()> {
        let mut c = self.writer().await?;
        sqlx::query(
            "INSERT INTO webhook_outbox (id, event_type, call_id, assistant_id, url, body, created_at, attempts, \
             next_attempt_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7, 'pending')",
        )
        // Optional columns bind as NULL or text: no cached statement (see calls.rs).
        .persistent(false)
        .bind(&e.id)
        .bind(&e.event_type)
        .bind(&e.call_id)
        .bind(&e.assistant_id)
        .bind(&e.url)
        .bind(&e.body)
        .bind(e.created_at)
        .execute(&mut *c)
        .await?;
        Ok(())
    }

    /// Claims up to `limit` pending events that are due at `now_ms` and not leased
    /// by anyone, leasing them until `lease_until_ms`. Oldest due first.
    pub async fn claim_webhooks(&self, limit: u32, now_ms: i64, lease_until_ms: i64) -> Result<Vec<OutboxEvent>> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE webhook_outbox SET lease_until = $1 WHERE id IN (\
               SELECT id FROM webhook_outbox WHERE state = 'pending' AND next_attempt_at <= $2 \
               AND (lease_until IS NULL OR lease_until <= $2) ORDER BY next_attempt_at, id LIMIT $3{lock}\
             ) RETURNING {COLS}"
        );
        let mut c = self.writer().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(limit.max(1) as i64)
            .fetch_all(&mut *c)
            .await?;
        let mut events = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        events.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
        Ok(events)
    }

    /// Marks an event delivered (counting the attempt). Returns false when it was
    /// not pending any more (another worker got there first, or it was given up).
    pub async fn mark_webhook_delivered(&self, id: &str, status: u16, at_ms: i64) -> Result<bool> {
        let mut c = self.writer().await?;
        let done = sqlx::query(
            "UPDATE webhook_outbox SET state = 'delivered', delivered_at = $1, attempts = attempts + 1, \
             last_status = $2, last_error = NULL, lease_until = NULL WHERE id = $3 AND state = 'pending'",
        )
        .bind(at_ms)
        .bind(status as i64)
        .bind(id)
        .execute(&mut *c)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt of an event the caller holds under `lease_until_ms`:
    /// tried again at `next_attempt_at_ms`, or, when that is `None`, given up on
    /// (state `failed`). `status` is the HTTP status if an answer came. Returns false
    /// when the caller's lease was no longer the event's.
    pub async fn record_webhook_failure(
        &self,
        id: &str,
        lease_until_ms: i64,
        status: Option<u16>,
        error: &str,
        next_attempt_at_ms: Option<i64>,
    ) -> Result<bool> {
        let (state, next) = match next_attempt_at_ms {
            Some(t) => ("pending", Some(t)),
            None => ("failed", None),
        };
        let mut c = self.writer().await?;
        let done = sqlx::query(
            "UPDATE webhook_outbox SET attempts = attempts + 1, state = $1, \
             next_attempt_at = COALESCE($2, next_attempt_at), last_status = $3, last_error = $4, lease_until = NULL \
             WHERE id = $5 AND state = 'pending' AND lease_until = $6",
        )
        .persistent(false)
        .bind(state)
        .bind(next)
        .bind(status.map(i64::from))
        .bind(short(error))
        .bind(id)
        .bind(lease_until_ms)
        .execute(&mut *c)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives back leases without counting an attempt (a worker shutting down with
    /// attempts in flight), so another worker may take the events at once.
    pub async fn release_webhook_leases(&self, leases: &[(String, i64)]) -> Result<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        let mut c = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *c).await?;
        let mut n = 0;
        for (id, lease) in leases {
            n += sqlx::query(
                "UPDATE webhook_outbox SET lease_until = NULL WHERE id = $1 AND state = 'pending' AND lease_until = $2",
            )
            .bind(id)
            .bind(*lease)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Puts a failed event back in the queue, due at `now_ms`, with its attempts
    /// reset (a manual retry). `NotFound` if there is no failed event with that id.
    pub async fn retry_webhook(&self, id: &str, now_ms: i64) -> Result<()> {
        let mut c = self.writer().await?;
        let done = sqlx::query(
            "UPDATE webhook_outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, lease_until = NULL \
             WHERE id = $2 AND state = 'failed'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut *c)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// One event with its delivery status.
    pub async fn get_webhook(&self, id: &str) -> Result<OutboxEvent> {
        let mut c = self.reader().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM webhook_outbox WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
            .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// Events, newest first, filtered, a page at a time (cursor: the last id seen).
    pub async fn list_webhooks(&self, f: &OutboxFilter) -> Result<Page<OutboxEvent>> {
        // Only our own fixed fragments go into the SQL text; every value is bound.
        let mut sql = format!("SELECT {COLS} FROM webhook_outbox WHERE TRUE");
        let mut n = 0;
        let mut next = |col: &str, op: &str| {
            n += 1;
            format!(" AND {col} {op} ${n}")
        };
        if f.cursor.is_some() {
            sql += &next("id", "<");
        }
        if f.call_id.is_some() {
            sql += &next("call_id", "=");
        }
        if f.state.is_some() {
            sql += &next("state", "=");
        }
        if f.event_type.is_some() {
            sql += &next("event_type", "=");
        }
        sql += &format!(" ORDER BY id DESC LIMIT ${}", n + 1);

        let limit = f.limit.clamp(1, 100) as i64;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in [&f.cursor, &f.call_id].into_iter().flatten() {
            q = q.bind(v.clone());
        }
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(t) = &f.event_type {
            q = q.bind(t.clone());
        }
        let mut c = self.reader().await?;
        let rows = q.bind(limit + 1).fetch_all(&mut *c).await?;
        page(rows, limit, from_row, |e| e.id.clone())
    }

    /// How many events wait for delivery (for the pending gauge).
    pub async fn count_pending_webhooks(&self) -> Result<i64> {
        let mut c = self.reader().await?;
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM webhook_outbox WHERE state = 'pending'").fetch_one(&mut *c).await?;
        Ok(n)
    }
}
