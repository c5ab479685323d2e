//! Control messages for live calls across instances (`POST /api/calls/{id}/control`).
//!
//! The API hands a message to [`Control`]: when this process holds the call (the
//! `all` role), straight to its session through the [`Registry`]; otherwise, on
//! PostgreSQL, the message is queued in the database
//! ([`voxgate_store::Store::queue_control`]) and announced with
//! `NOTIFY voxgate_call_control` (the call's id and the message's). Every agent
//! instance [`listen`]s on that channel; the one holding the call takes the call's
//! queued messages, which deletes them, and hands them to the call in the order
//! they were queued.
//!
//! Delivery is once: a message is taken by one instance, once. It is not lost
//! when the announcement is: PostgreSQL keeps no notification for a listener that
//! is not connected, so an agent looks for queued messages of its calls when its
//! listening connection opens (again) and every [`RESCAN`] besides. A message no
//! instance takes within [`MAX_AGE`] (its call ended first) is dropped. On SQLite
//! there is one process: local only.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use voxgate_api::control::{CallControl, ControlMessage, Delivery};
use voxgate_store::Store;

use super::registry::Registry;

/// The PostgreSQL channel control messages are announced on.
pub const CHANNEL: &str = "voxgate_call_control";

/// How often an agent looks for queued messages it was not told of.
pub const RESCAN: Duration = Duration::from_secs(2);

/// How long a queued message waits for the instance holding its call.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// One notification: which call has a message queued (`id`), or (from an API of an
/// earlier version, which queued nothing) the message itself.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope {
    call_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<ControlMessage>,
}

/// This process's way to live calls: its own registry (if it serves calls), and
/// the database's queue and notifications (if the database is PostgreSQL).
pub struct Control {
    pub registry: Option<Registry>,
    /// The queue, and a small pool on `DATABASE_URL` for `pg_notify`.
    pub remote: Option<(Store, PgPool)>,
}

impl Control {
    /// With a PostgreSQL `store`, messages for calls of other instances go through
    /// it (`database_url` is its URL; the notification pool connects on first use).
    pub fn new(registry: Option<Registry>, store: Option<Store>, database_url: &str) -> anyhow::Result<Control> {
        let remote = match store.filter(|s| s.backend() == voxgate_store::Backend::Postgres) {
            Some(store) => {
                let pool = PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(5)).connect_lazy(database_url)?;
                Some((store, pool))
            }
            None => None,
        };
        Ok(Control { registry, remote })
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
            let Some((store, pool)) = &self.remote else { return Ok(Delivery::NotLive) };
            let message = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
            let id = store.queue_control(&call_id, &message).await.map_err(|e| e.to_string())?;
            let payload = serde_json::to_string(&Envelope { call_id, id: Some(id), message: None }).map_err(|e| e.to_string())?;
            // Queued: a lost announcement only delays the message to the next rescan.
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(&payload).execute(pool).await {
                tracing::warn!(error = %e, "a queued control message could not be announced; the agents find it within {} s", RESCAN.as_secs());
            }
            Ok(Delivery::Notified)
        }
        .boxed()
    }
}

/// Hands queued messages to the calls of a registry, one taker at a time (so two
/// batches for one call never overtake each other).
#[derive(Clone)]
struct Taker {
    store: Store,
    registry: Registry,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Taker {
    /// Takes the messages queued for `call_id` and hands them over, oldest first.
    async fn take(&self, call_id: &str) {
        let _turn = self.turn.lock().await;
        let taken = match self.store.take_controls(call_id).await {
            Ok(t) => t,
            Err(e) => {
                // Still queued: the next rescan tries again.
                tracing::warn!(error = %e, %call_id, "cannot take a call's control messages");
                return;
            }
        };
        for queued in taken {
            match serde_json::from_str::<ControlMessage>(&queued.message) {
                Ok(msg) if msg.validate().is_ok() => hand_over(&self.registry, call_id, msg),
                _ => tracing::warn!(%call_id, id = %queued.id, "a queued control message is malformed; dropped"),
            }
        }
    }

    /// Takes the queued messages of every call held here (what was announced while
    /// nobody listened), and drops those nobody took in time.
    async fn rescan(&self) {
        let calls = match self.store.calls_with_controls(MAX_AGE.as_millis() as i64).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for queued control messages");
                return;
            }
        };
        for call_id in calls.iter().filter(|c| self.registry.holds(c)) {
            self.take(call_id).await;
        }
    }

    /// One notification: the queued messages of a call held here, or (from an API
    /// of an earlier version) the message it carries.
    async fn notified(&self, payload: &str) {
        let env: Envelope = match serde_json::from_str(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "a call control notification is malformed; ignored");
                return;
            }
        };
        if !self.registry.holds(&env.call_id) {
            // Another instance's call.
            return;
        }
        match (env.id, env.message) {
            (Some(_), _) => self.take(&env.call_id).await,
            (None, Some(msg)) if msg.validate().is_ok() => hand_over(&self.registry, &env.call_id, msg),
            _ => tracing::warn!("a call control notification is invalid; ignored"),
        }
    }
}

fn hand_over(registry: &Registry, call_id: &str, msg: ControlMessage) {
    match registry.control(call_id, msg) {
        Delivery::Local => tracing::info!(%call_id, "control message delivered from another instance"),
        Delivery::Busy => tracing::warn!(%call_id, "a call's control queue is full; message dropped"),
        // The call ended meanwhile.
        _ => {}
    }
}

/// Listens for control messages on `database_url` (PostgreSQL, the database of
/// `store`) and hands those for calls of `registry` to them, until `stop`. A
/// dropped connection is opened again (with a pause that grows to 5 s), and each
/// time it opens the queue is searched; so is it every [`RESCAN`]. `ready` is
/// cancelled once listening.
pub async fn listen(database_url: String, store: Store, registry: Registry, stop: CancellationToken, ready: CancellationToken) {
    let taker = Taker { store, registry, turn: Arc::default() };
    // Apart from the listener, so that no wait for a notification is ever cut short.
    let rescans = tokio::spawn({
        let (taker, stop) = (taker.clone(), stop.clone());
        async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RESCAN, RESCAN);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => taker.rescan().await,
                }
            }
        }
    });
    let _rescans = AbortOnDrop(rescans);
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
        // What was announced while this instance was not listening.
        taker.rescan().await;
        loop {
            let got = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.try_recv() => r,
            };
            match got {
                Ok(Some(n)) => taker.notified(n.payload()).await,
                // The connection dropped: open a new one (and search the queue).
                Ok(None) => {
                    tracing::warn!("the control listener's connection dropped; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the control listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Ends a task when its owner goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect(url).await?;
    l.listen(CHANNEL).await?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hostile_notifications_are_ignored() {
        let db = voxgate_testkit::TestDb::sqlite();
        let store = db.store().await;
        let r = Registry::new(4);
        let taker = Taker { store, registry: r.clone(), turn: Arc::default() };
        let mut reg = r.register("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        for bad in [
            "",
            "{",
            "null",
            r#"{"callId":"x"}"#,
            r#"{"callId":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#,
            r#"{"callId":"01ARZ3NDEKTSV4RRFFQ69G5FAV","message":{"type":"say","text":""}}"#,
            r#"{"callId":"01ARZ3NDEKTSV4RRFFQ69G5FAV","message":{"type":"end"},"extra":1}"#,
        ] {
            taker.notified(bad).await;
        }
        assert!(reg.commands.try_recv().is_err(), "nothing delivered");
        // From an API of an earlier version: the message itself.
        taker.notified(r#"{"callId":"01ARZ3NDEKTSV4RRFFQ69G5FAV","message":{"type":"end"}}"#).await;
        assert!(reg.commands.try_recv().is_ok());
    }

    #[tokio::test]
    async fn queued_messages_are_handed_over_once_and_malformed_ones_dropped() {
        let db = voxgate_testkit::TestDb::sqlite();
        let store = db.store().await;
        let r = Registry::new(4);
        let taker = Taker { store: store.clone(), registry: r.clone(), turn: Arc::default() };
        let call = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        let mut reg = r.register(call).unwrap();
        store.queue_control(call, r#"{"type":"say","text":"one"}"#).await.unwrap();
        store.queue_control(call, r#"{"type":"say","text":""}"#).await.unwrap();
        store.queue_control(call, "not json").await.unwrap();
        store.queue_control(call, r#"{"type":"end"}"#).await.unwrap();
        store.queue_control("another-instances-call", r#"{"type":"end"}"#).await.unwrap();
        taker.rescan().await;
        let mut got = Vec::new();
        while let Ok(super::super::registry::Command::Control(m)) = reg.commands.try_recv() {
            got.push(serde_json::to_string(&m).unwrap());
        }
        assert_eq!(got, [r#"{"type":"say","text":"one"}"#, r#"{"type":"end"}"#]);
        // Taken: a notification or another rescan hands nothing over again.
        taker.notified(&format!(r#"{{"callId":"{call}","id":"x"}}"#)).await;
        taker.rescan().await;
        assert!(reg.commands.try_recv().is_err());
        // Another instance's call keeps its message.
        assert_eq!(store.calls_with_controls(60_000).await.unwrap(), ["another-instances-call"]);
    }
}
