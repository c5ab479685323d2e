//! The calls repository: a call's record and its turns.

use sqlx::Row;
use sqlx::any::AnyRow;
use voxgate_domain::call::{Call, CallStatus, CallTurn, TurnError, TurnLatency, TurnRole};
use voxgate_domain::clock::now_ms;

use crate::assistants::page;
use crate::{Page, Result, Store, StoreError, json_col};

const COLS: &str = "id, assistant_id, key_id, status, ended_reason, started_at, ended_at, duration_ms, instance, metadata, recording_path";

/// Which calls to list.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub assistant_id: Option<String>,
    pub status: Option<CallStatus>,
    /// Unix milliseconds, inclusive.
    pub started_after: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub started_before: Option<i64>,
    pub cursor: Option<String>,
    pub limit: u32,
}

fn from_row(r: &AnyRow) -> Result<Call> {
    let status: String = r.try_get("status")?;
    let meta: String = r.try_get("metadata")?;
    Ok(Call {
        id: r.try_get("id")?,
        assistant_id: r.try_get("assistant_id")?,
        key_id: r.try_get("key_id")?,
        status: CallStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("calls.status {status:?}")))?,
        ended_reason: r.try_get("ended_reason")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        duration_ms: r.try_get("duration_ms")?,
        instance: r.try_get("instance")?,
        metadata: json_col(&meta, "calls.metadata")?,
        turns: None,
        recording_url: r.try_get::<Option<String>, _>("recording_path")?.map(|_| format!("/api/calls/{id}/recording", id = r.try_get::<String, _>("id").unwrap_or_default())),
    })
}

fn turn_from_row(r: &AnyRow) -> Result<CallTurn> {
    let role: String = r.try_get("role")?;
    let interrupted: i64 = r.try_get("interrupted")?;
    let (error_code, error_message): (Option<String>, Option<String>) = (r.try_get("error_code")?, r.try_get("error_message")?);
    Ok(CallTurn {
        idx: r.try_get("idx")?,
        role: TurnRole::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("call_turns.role {role:?}")))?,
        text: r.try_get("text")?,
        started_ms: r.try_get("started_ms")?,
        interrupted: interrupted != 0,
        latency: TurnLatency {
            endpointing_ms: r.try_get("endpointing_ms")?,
            stt_ms: r.try_get("stt_ms")?,
            llm_first_token_ms: r.try_get("llm_first_token_ms")?,
            tts_first_audio_ms: r.try_get("tts_first_audio_ms")?,
            queue_wait_ms: r.try_get("queue_wait_ms")?,
            voice_to_voice_ms: r.try_get("voice_to_voice_ms")?,
            response_ms: r.try_get("response_ms")?,
            retrieval_ms: r.try_get("retrieval_ms")?,
        },
        error: error_code.map(|code| TurnError { code, message: error_message.unwrap_or_default() }),
    })
}

impl Store {
    /// Records the start of a call.
    pub async fn create_call(&self, call: &Call) -> Result<()> {
        let mut c = self.writer().await?;
        create_call_on(&mut c, call).await
    }

    /// Marks a call ended. Ending an ended call keeps the first reason.
    pub async fn end_call(&self, id: &str, reason: &str) -> Result<()> {
        let mut c = self.writer().await?;
        end_call_on(&mut c, id, reason).await
    }

    /// Ends every call an instance still holds (after a crash or at the end of a drain).
    pub async fn end_calls_of_instance(&self, instance: &str, reason: &str) -> Result<u64> {
        let now = now_ms();
        let mut c = self.writer().await?;
        let done = sqlx::query(
            "UPDATE calls SET status = 'ended', ended_reason = $1, ended_at = $2, duration_ms = $2 - started_at \
             WHERE instance = $3 AND status = 'in-progress'",
        )
        .bind(reason)
        .bind(now)
        .bind(instance)
        .execute(&mut *c)
        .await?;
        Ok(done.rows_affected())
    }

    /// Appends a turn to a call's transcript.
    pub async fn add_turn(&self, call_id: &str, turn: &CallTurn) -> Result<()> {
        let mut c = self.writer().await?;
        insert_turn(&mut c, call_id, turn).await
    }

    /// Applies call writes in order, in one transaction (one commit for many
    /// turns: what lets one SQLite writer keep up with a thousand calls).
    pub async fn apply_call_writes(&self, writes: &[CallWrite]) -> Result<()> {
        let mut c = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *c).await?;
        for w in writes {
            match w {
                CallWrite::Create(call) => create_call_on(&mut tx, call).await?,
                CallWrite::Turn { call_id, turn } => insert_turn(&mut tx, call_id, turn).await?,
                CallWrite::End { call_id, reason } => end_call_on(&mut tx, call_id, reason).await?,
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Notes where a call's recording was written.
    pub async fn set_recording(&self, call_id: &str, path: &str) -> Result<()> {
        let mut c = self.writer().await?;
        sqlx::query("UPDATE calls SET recording_path = $1 WHERE id = $2").bind(path).bind(call_id).execute(&mut *c).await?;
        Ok(())
    }

    /// Where a call's recording is, if it has one.
    pub async fn recording_path(&self, call_id: &str) -> Result<Option<String>> {
        let mut c = self.reader().await?;
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT recording_path FROM calls WHERE id = $1").bind(call_id).fetch_optional(&mut *c).await?;
        row.ok_or(StoreError::NotFound).map(|r| r.0)
    }

    /// A call with its transcript.
    pub async fn get_call(&self, id: &str) -> Result<Call> {
        let mut c = self.reader().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM calls WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut call = from_row(&row)?;
        let turns = sqlx::query("SELECT * FROM call_turns WHERE call_id = $1 ORDER BY idx")
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
        call.turns = Some(turns.iter().map(turn_from_row).collect::<Result<_>>()?);
        Ok(call)
    }

    /// Calls, newest first, filtered.
    pub async fn list_calls(&self, f: &CallFilter) -> Result<Page<Call>> {
        // Only our own fixed fragments go into the SQL text; every value is bound.
        let mut sql = format!("SELECT {COLS} FROM calls WHERE TRUE");
        let mut n = 0;
        let mut next = |col: &str, op: &str| {
            n += 1;
            format!(" AND {col} {op} ${n}")
        };
        if f.cursor.is_some() {
            sql += &next("id", "<");
        }
        if f.assistant_id.is_some() {
            sql += &next("assistant_id", "=");
        }
        if f.status.is_some() {
            sql += &next("status", "=");
        }
        if f.started_after.is_some() {
            sql += &next("started_at", ">=");
        }
        if f.started_before.is_some() {
            sql += &next("started_at", "<");
        }
        sql += &format!(" ORDER BY id DESC LIMIT ${}", n + 1);

        let limit = f.limit.clamp(1, 100) as i64;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(cursor) = &f.cursor {
            q = q.bind(cursor.clone());
        }
        if let Some(a) = &f.assistant_id {
            q = q.bind(a.clone());
        }
        if let Some(s) = f.status {
            q = q.bind(s.as_str());
        }
        if let Some(t) = f.started_after {
            q = q.bind(t);
        }
        if let Some(t) = f.started_before {
            q = q.bind(t);
        }
        let mut c = self.reader().await?;
        let rows = q.bind(limit + 1).fetch_all(&mut *c).await?;
        page(rows, limit, from_row, |c| c.id.clone())
    }
}

/// One write to a call's record, for [`Store::apply_call_writes`].
#[derive(Debug, Clone, PartialEq)]
pub enum CallWrite {
    Create(Box<Call>),
    Turn { call_id: String, turn: CallTurn },
    End { call_id: String, reason: String },
}

async fn end_call_on(c: &mut sqlx::AnyConnection, id: &str, reason: &str) -> Result<()> {
    sqlx::query(
        "UPDATE calls SET status = 'ended', ended_reason = $1, ended_at = $2, duration_ms = $2 - started_at \
         WHERE id = $3 AND status = 'in-progress'",
    )
    .bind(reason)
    .bind(now_ms())
    .bind(id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn insert_turn(c: &mut sqlx::AnyConnection, call_id: &str, turn: &CallTurn) -> Result<()> {
    let l = &turn.latency;
    sqlx::query(
        "INSERT INTO call_turns (call_id, idx, role, text, started_ms, interrupted, endpointing_ms, stt_ms, \
         llm_first_token_ms, tts_first_audio_ms, queue_wait_ms, voice_to_voice_ms, response_ms, retrieval_ms, \
         error_code, error_message) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    // Not a cached prepared statement: through the Any driver, a NULL binds with
    // another type than a number, and PostgreSQL would keep the types of the
    // first run ("incorrect binary data format" when a later turn has a number
    // where the first had none).
    .persistent(false)
    .bind(call_id)
    .bind(turn.idx)
    .bind(turn.role.as_str())
    .bind(&turn.text)
    .bind(turn.started_ms)
    .bind(turn.interrupted as i64)
    .bind(l.endpointing_ms)
    .bind(l.stt_ms)
    .bind(l.llm_first_token_ms)
    .bind(l.tts_first_audio_ms)
    .bind(l.queue_wait_ms)
    .bind(l.voice_to_voice_ms)
    .bind(l.response_ms)
    .bind(l.retrieval_ms)
    .bind(turn.error.as_ref().map(|e| e.code.as_str()))
    .bind(turn.error.as_ref().map(|e| e.message.as_str()))
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn create_call_on(c: &mut sqlx::AnyConnection, call: &Call) -> Result<()> {
    sqlx::query(
        "INSERT INTO calls (id, assistant_id, key_id, status, ended_reason, started_at, ended_at, duration_ms, instance, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    // Uncached, as `insert_turn`: optional columns bind as NULL or a value.
    .persistent(false)
    .bind(&call.id)
    .bind(&call.assistant_id)
    .bind(&call.key_id)
    .bind(call.status.as_str())
    .bind(&call.ended_reason)
    .bind(call.started_at)
    .bind(call.ended_at)
    .bind(call.duration_ms)
    .bind(&call.instance)
    .bind(serde_json::to_string(&call.metadata).expect("a JSON map serializes"))
    .execute(&mut *c)
    .await?;
    Ok(())
}
