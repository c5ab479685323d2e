//! Control messages for live calls across instances (`POST /api/calls/{id}/control`).
//!
//! The API hands a message to [`Control`]: when this process holds the call (the
//! `all` role), straight to its session through the [`Registry`]; otherwise, on
//! PostgreSQL, `NOTIFY voxgate_call_control` with the call id and the message, and
//! every agent instance [`listen`]s on that channel and delivers the messages for
//! the calls it holds. On SQLite there is one process: local only.
//!
//! Delivery across instances is at most once and not acknowledged: a notification
//! sent while an agent's listening connection is down is lost to it (PostgreSQL
//! keeps no backlog for a listener that is not connected).

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use voxgate_api::control::{CallControl, ControlMessage, Delivery};

use super::registry::Registry;

/// The PostgreSQL channel control messages travel on.
pub const CHANNEL: &str = "voxgate_call_control";

/// The most a notification payload may hold (PostgreSQL refuses 8000 bytes).
const MAX_PAYLOAD: usize = 7999;

/// One notification: which call, and what for it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope {
    call_id: String,
    message: ControlMessage,
}

/// This process's way to live calls: its own registry (if it serves calls), and
/// PostgreSQL's notifications (if the database is PostgreSQL).
pub struct Control {
    pub registry: Option<Registry>,
    /// A small pool on `DATABASE_URL` for `pg_notify`.
    pub notify: Option<PgPool>,
}

impl Control {
    /// `database_url` is used for notifications when it is a PostgreSQL URL; the
    /// pool connects on first use.
    pub fn new(registry: Option<Registry>, database_url: &str, postgres: bool) -> anyhow::Result<Control> {
        let notify = if postgres {
            Some(PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(5)).connect_lazy(database_url)?)
        } else {
            None
        };
        Ok(Control { registry, notify })
    }
}

impl CallControl for Control {
    fn deliver(&self, call_id: &str, msg: ControlMessage) -> BoxFuture<'_, Result<Delivery, String>> {
        let call_id = call_id.to_owned();
        async move {
            let msg = match &self.registry {
                Some(r) => match r.control(&call_id, msg.clone()) {
                    Delivery::NotLive => msg,
                    done => return Ok(done),
                },
                None => msg,
            };
            let Some(pool) = &self.notify else { return Ok(Delivery::NotLive) };
            let payload = serde_json::to_string(&Envelope { call_id, message: msg }).map_err(|e| e.to_string())?;
            if payload.len() > MAX_PAYLOAD {
                // The API limits the text; escapes can still swell it.
                return Err(format!("the message is {} bytes as a notification (at most {MAX_PAYLOAD})", payload.len()));
            }
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(&payload).execute(pool).await.map_err(|e| e.to_string())?;
            Ok(Delivery::Notified)
        }
        .boxed()
    }
}

/// Listens for control messages on `database_url` (PostgreSQL) and hands those for
/// calls of `registry` to them, until `stop`. A dropped connection is opened again
/// (with a pause that grows to 5 s); `ready` is cancelled once listening.
pub async fn listen(database_url: String, registry: Registry, stop: CancellationToken, ready: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = connect(&database_url) => r,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, retry_ms = pause.as_millis() as u64, "cannot listen for call control messages");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        ready.cancel();
        tracing::info!(channel = CHANNEL, "listening for call control messages");
        loop {
            let got = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.try_recv() => r,
            };
            match got {
                Ok(Some(n)) => deliver(&registry, n.payload()),
                // The connection dropped; the listener opens it again on the next call.
                Ok(None) => tracing::warn!("the control listener's connection dropped; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, "the control listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect(url).await?;
    l.listen(CHANNEL).await?;
    Ok(l)
}

/// Hands one notification to its call, if this process holds it.
fn deliver(registry: &Registry, payload: &str) {
    let env: Envelope = match serde_json::from_str(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "a call control notification is malformed; ignored");
            return;
        }
    };
    if env.message.validate().is_err() {
        tracing::warn!("a call control notification is invalid; ignored");
        return;
    }
    match registry.control(&env.call_id, env.message) {
        Delivery::Local => tracing::info!(call_id = %env.call_id, "control message delivered from another instance"),
        Delivery::Busy => tracing::warn!(call_id = %env.call_id, "a call's control queue is full; message dropped"),
        // Another instance's call.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_notifications_are_ignored() {
        let r = Registry::new(4);
        let mut reg = r.register("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        for bad in ["", "{", "null", r#"{"callId":"x"}"#, r#"{"callId":"01ARZ3NDEKTSV4RRFFQ69G5FAV","message":{"type":"say","text":""}}"#] {
            deliver(&r, bad);
        }
        assert!(reg.commands.try_recv().is_err(), "nothing delivered");
        deliver(&r, r#"{"callId":"01ARZ3NDEKTSV4RRFFQ69G5FAV","message":{"type":"end"}}"#);
        assert!(reg.commands.try_recv().is_ok());
    }
}
