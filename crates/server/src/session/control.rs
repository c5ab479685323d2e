//! Control messages for live calls across instances (`POST /api/calls/{id}/control`).
//!
//! The API hands a message to [`Control`]: when this process holds the call (the
//! `all` role), straight to its session through the [`Registry`]; otherwise, on
//! PostgreSQL, the message is queued in the database
//! ([`voxgate_store::Store::queue_control`]) and announced with
//! `NOTIFY voxgate_call_control` (the call's id and the message's). Every agent
//! instance [`listen`]s on that channel; the one holding the call hands the call's
//! queued messages to it in the order they were queued.
//!
//! Delivery is once: a message leaves the queue (one remover wins) only once room
//! for it in the call's own queue is held, so it is neither handed over twice nor
//! dropped on the way; one that cannot go yet waits in the database. It is not lost
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

use super::registry::{Command, Registry};

/// The PostgreSQL channel control messages are announced on.
pub const CHANNEL: &str = "voxgate_call_control";

/// How often an agent looks for queued messages it was not told of.
pub const RESCAN: Duration = Duration::from_secs(2);

/// How long a queued message waits for the instance holding its call.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// The most messages that may wait in the database for one call (more: 429).
pub const MAX_QUEUED: i64 = 16;

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
            let Some(id) = store.queue_control(&call_id, &message, MAX_QUEUED).await.map_err(|e| e.to_string())? else {
                return Ok(Delivery::Busy);
            };
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
    /// Hands the messages queued for `call_id` over, in order, each removed from
    /// the queue as it goes (once room for it in the call's queue is held, so a
    /// removed message is never dropped). What cannot go now stays queued for the
    /// next rescan: the call's queue is full, or the database failed.
    async fn take(&self, call_id: &str) {
        let _turn = self.turn.lock().await;
        let queued = match self.store.queued_controls(call_id).await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, %call_id, "cannot read a call's control messages; trying again later");
                return;
            }
        };
        for q in queued {
            let msg = serde_json::from_str::<ControlMessage>(&q.message).ok().filter(|m| m.validate().is_ok());
            // Room first: a message removed from the queue is always handed over.
            let handover = match msg {
                Some(msg) => match self.registry.reserve(call_id) {
                    Ok(room) => Some((msg, room)),
                    Err(Delivery::Busy) => {
                        tracing::warn!(%call_id, "a call's control queue is full; its messages wait");
                        return;
                    }
                    // The call ended meanwhile: its messages expire.
                    Err(_) => return,
                },
                None => None,
            };
            match self.store.remove_control(&q.id).await {
                Ok(true) => {}
                // Handed over already (by another taker).
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, %call_id, "cannot take a call's control message; trying again later");
                    return;
                }
            }
            match handover {
                Some((msg, room)) => {
                    room.send(Command::Control(msg));
                    tracing::info!(%call_id, "control message delivered from another instance");
                }
                None => tracing::warn!(%call_id, id = %q.id, "a queued control message is malformed; dropped"),
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
            (None, Some(msg)) if msg.validate().is_ok() => match self.registry.control(&env.call_id, msg) {
                Delivery::Local => tracing::info!(call_id = %env.call_id, "control message delivered from another instance"),
                Delivery::Busy => tracing::warn!(call_id = %env.call_id, "a call's control queue is full; message dropped"),
                _ => {}
            },
            _ => tracing::warn!("a call control notification is invalid; ignored"),
        }
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
        let opened = tokio::time::Instant::now();
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
        // A connection that drops soon after opening (a proxy that cuts it, an idle
        // timeout) is opened again after the growing pause, not at once.
        if opened.elapsed() >= STEADY {
            pause = Duration::from_millis(100);
        } else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// How long a listening connection must last for the next one to open at once.
const STEADY: Duration = Duration::from_secs(10);

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

    const CALL: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

    /// A queue on a new SQLite database, a registry holding the call `CALL`, its
    /// taker, and the call's registration.
    async fn setup() -> (voxgate_testkit::TestDb, Store, Registry, Taker, super::super::registry::Registration) {
        let db = voxgate_testkit::TestDb::sqlite();
        let store = db.store().await;
        let r = Registry::new(4);
        let taker = Taker { store: store.clone(), registry: r.clone(), turn: Arc::default() };
        let reg = r.register(CALL).unwrap();
        (db, store, r, taker, reg)
    }

    fn said(reg: &mut super::super::registry::Registration) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(Command::Control(m)) = reg.commands.try_recv() {
            got.push(serde_json::to_string(&m).unwrap());
        }
        got
    }

    #[tokio::test]
    async fn queued_messages_are_handed_over_once_and_malformed_ones_dropped() {
        let (_db, store, _, taker, mut reg) = setup().await;
        let call = CALL;
        for m in [r#"{"type":"say","text":"one"}"#, r#"{"type":"say","text":""}"#, "not json", r#"{"type":"end"}"#] {
            store.queue_control(call, m, MAX_QUEUED).await.unwrap().unwrap();
        }
        store.queue_control("another-instances-call", r#"{"type":"end"}"#, MAX_QUEUED).await.unwrap().unwrap();
        taker.rescan().await;
        assert_eq!(said(&mut reg), [r#"{"type":"say","text":"one"}"#, r#"{"type":"end"}"#]);
        // Handed over: a notification or another rescan hands nothing over again.
        taker.notified(&format!(r#"{{"callId":"{call}","id":"x"}}"#)).await;
        taker.rescan().await;
        assert!(said(&mut reg).is_empty());
        // Another instance's call keeps its message.
        assert_eq!(store.calls_with_controls(60_000).await.unwrap(), ["another-instances-call"]);
    }

    #[tokio::test]
    async fn messages_for_a_call_whose_queue_is_full_wait_their_turn() {
        let (_db, store, r, taker, mut reg) = setup().await;
        let call = CALL;
        let mut sent = Vec::new();
        for i in 0..MAX_QUEUED + 4 {
            let m = format!(r#"{{"type":"say","text":"{i}"}}"#);
            // The queue in the database holds MAX_QUEUED; the rest come back full.
            let queued = store.queue_control(call, &m, MAX_QUEUED).await.unwrap();
            assert_eq!(queued.is_some(), i < MAX_QUEUED, "{i}");
            if queued.is_some() {
                sent.push(m);
            }
        }
        // The call's own queue is full before: nothing is taken from the database.
        while r.control(call, ControlMessage::End {}) == Delivery::Local {}
        taker.rescan().await;
        assert_eq!(store.queued_controls(call).await.unwrap().len(), MAX_QUEUED as usize, "all still queued");
        // Room for some: those go, in order, the rest wait.
        let ends = said(&mut reg);
        assert!(ends.iter().all(|e| e == r#"{"type":"end"}"#) && !ends.is_empty());
        let mut got = Vec::new();
        while got.len() < sent.len() {
            taker.rescan().await;
            let more = said(&mut reg);
            assert!(!more.is_empty(), "progress");
            got.extend(more);
        }
        assert_eq!(got, sent, "every message once, in order");
        assert!(store.queued_controls(call).await.unwrap().is_empty());
    }
}
