//! A killed agent instance's calls are closed by the survivors, whatever their
//! instance ids (issue 9, fault-injection follow-up): the real `voxgate serve`
//! binary, real calls over `/agent`, `kill -9`.
//!
//! A restart with the same `INSTANCE_ID` ends its predecessor's calls at start
//! (`faults.rs`); these cover a successor with another id (a new pod name, a
//! recreated container): agent instances refresh a row in `instances`, and one whose
//! row is older than the lease has its calls ended by another as `instance-lost`.
//!
//! Short settings keep them quick: a heartbeat every second, a lease of 5 s. Each runs
//! on the backend `VOXGATE_TEST_BACKEND` names (SQLite by default).

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::time::{Duration, Instant};

use procs::{Caller, Served, metric, store_with_key};
use voxgate_domain::call::ended_by_server::INSTANCE_LOST;
use voxgate_domain::call::{Call, CallStatus, TurnRole};
use voxgate_store::Store;
use voxgate_testkit::TestDb;

const HEARTBEAT_SECS: u64 = 1;
const LEASE_SECS: u64 = 5;
/// How long a lost instance's calls may take to be ended: the lease, the survivor's
/// own lease of unbroken heartbeats if it has just started, and a wide margin for a
/// loaded machine (the test only waits as long as it takes).
const CLOSED_WITHIN: Duration = Duration::from_secs(60);

/// A folder of its own (its log) for instance `id`.
fn folder(dir: &tempfile::TempDir, id: &str) -> std::path::PathBuf {
    let p = dir.path().join(id);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn env(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("INSTANCE_ID", id.to_string()),
        ("INSTANCE_HEARTBEAT_SECS", HEARTBEAT_SECS.to_string()),
        ("INSTANCE_LEASE_SECS", LEASE_SECS.to_string()),
    ]
}

/// The record of `id` once it has ended (polled).
async fn ended(store: &Store, id: &str, within: Duration) -> Call {
    let deadline = Instant::now() + within;
    loop {
        match store.get_call(id).await {
            Ok(c) if c.status == CallStatus::Ended => return c,
            other => assert!(
                Instant::now() < deadline,
                "call {id} not ended after {within:?}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn instance_ids(store: &Store) -> Vec<String> {
    store
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

fn user_turns(call: &Call) -> Vec<String> {
    call.turns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|t| t.role == TurnRole::User)
        .map(|t| t.text.clone())
        .collect()
}

/// Checks the record of a call that instance `a` held when it was killed, once ended.
async fn assert_lost(store: &Store, name: &str, id: &str, said: &str) {
    let call = ended(store, id, CLOSED_WITHIN).await;
    assert_eq!(
        call.ended_reason.as_deref(),
        Some(INSTANCE_LOST),
        "{name}: {call:?}"
    );
    assert_eq!(call.instance.as_deref(), Some("a"), "{name}");
    let ended_at = call.ended_at.expect("ended_at");
    assert_eq!(
        call.duration_ms,
        Some(ended_at - call.started_at),
        "{name}: {call:?}"
    );
    assert!(call.duration_ms.is_some_and(|d| d > 0), "{name}: {call:?}");
    assert_eq!(
        user_turns(&call),
        vec![said.to_string()],
        "{name}: the turn written before the kill is kept"
    );
}

/// The reproduction of the issue: instance `a` is killed with a call in progress and
/// its successor `b` has another id. `b` ends the call once it has refreshed its own
/// row for a lease and `a`'s row is older than the lease; `b`'s own call goes on.
#[tokio::test]
async fn a_successor_with_another_id_ends_the_calls_of_a_killed_instance() {
    let db = TestDb::chosen().await;
    let name = db.name;
    let dir = tempfile::tempdir().unwrap();
    let (store, key) = store_with_key(&db.url).await;

    let a = Served::start(&db.url, &folder(&dir, "a"), &env("a")).await;
    let assistant = a.assistant(&key).await;
    let mut on_a = Caller::open(&a.url, &key, &assistant).await;
    assert_eq!(on_a.say("hello from a").await["type"], "latency");
    assert_eq!(instance_ids(&store).await, vec!["a"], "{name}");
    // The turn is written (the record holds it) before the kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    while user_turns(&store.get_call(&on_a.id).await.unwrap()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{name}: the turn was not written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill9().await;

    let b = Served::start(&db.url, &folder(&dir, "b"), &env("b")).await;
    let mut on_b = Caller::open(&b.url, &key, &assistant).await;
    assert_lost(&store, name, &on_a.id, "hello from a").await;
    assert!(
        b.logs().contains("ended the calls of an instance lost"),
        "{name}: {}",
        b.logs()
    );
    assert_eq!(
        metric(&b.metrics(&key).await, "voxgate_instance_lost_calls_total"),
        1.0,
        "{name}"
    );
    // `a`'s row went with its calls; `b`'s call is untouched and still answered.
    assert_eq!(instance_ids(&store).await, vec!["b"], "{name}");
    assert_eq!(
        store.get_call(&on_b.id).await.unwrap().status,
        CallStatus::InProgress,
        "{name}"
    );
    assert_eq!(on_b.say("hello from b").await["type"], "latency", "{name}");
    let b_call = on_b.id.clone();
    on_b.end().await;
    // A clean stop removes the row: nobody has anything to sweep.
    b.stop().await;
    assert!(instance_ids(&store).await.is_empty(), "{name}");
    assert_eq!(
        ended(&store, &b_call, Duration::from_secs(5))
            .await
            .ended_reason
            .as_deref(),
        Some("customer-ended-call"),
        "{name}"
    );
}

/// Two instances serve calls side by side: a live one is never taken for dead, and
/// when one is SIGKILLed the survivor ends its calls and keeps its own.
#[tokio::test]
async fn the_survivor_ends_a_killed_peers_calls_and_never_a_live_peers() {
    let db = TestDb::chosen().await;
    let name = db.name;
    let dir = tempfile::tempdir().unwrap();
    let (store, key) = store_with_key(&db.url).await;

    let a = Served::start(&db.url, &folder(&dir, "a"), &env("a")).await;
    let b = Served::start(&db.url, &folder(&dir, "b"), &env("b")).await;
    let b_started = Instant::now();
    let assistant = a.assistant(&key).await;
    let mut on_a = Caller::open(&a.url, &key, &assistant).await;
    let mut on_b = Caller::open(&b.url, &key, &assistant).await;
    assert_eq!(on_a.say("hello from a").await["type"], "latency");
    assert_eq!(on_b.say("hello from b").await["type"], "latency");
    assert_eq!(instance_ids(&store).await, vec!["a", "b"], "{name}");

    // Each has been sweeping for a while (a lease of its own heartbeats, then more):
    // neither took the other, alive, for lost.
    tokio::time::sleep(
        (b_started + Duration::from_secs(3 * LEASE_SECS)).saturating_duration_since(Instant::now()),
    )
    .await;
    for c in [&on_a.id, &on_b.id] {
        assert_eq!(
            store.get_call(c).await.unwrap().status,
            CallStatus::InProgress,
            "{name}: {c}"
        );
    }
    assert_eq!(instance_ids(&store).await, vec!["a", "b"], "{name}");
    assert!(
        !b.logs().contains("ended the calls of an instance lost"),
        "{name}"
    );

    a.kill9().await;
    assert_lost(&store, name, &on_a.id, "hello from a").await;
    assert_eq!(instance_ids(&store).await, vec!["b"], "{name}");
    assert_eq!(
        store.get_call(&on_b.id).await.unwrap().status,
        CallStatus::InProgress,
        "{name}"
    );
    assert_eq!(on_b.say("still here").await["type"], "latency", "{name}");
    on_b.end().await;
    b.stop().await;
    assert!(instance_ids(&store).await.is_empty(), "{name}");
}

/// Two instances on one host and one database, both on port 0 with no
/// `INSTANCE_ID`: each is named by the port it bound, so neither takes the other's
/// calls for its own. (Named by the configured port, both were `host:0`, and the
/// second to start ended the first one's live calls as `server-restarted`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_port_0_are_named_by_the_port_they_bound() {
    use std::sync::Arc;
    use voxgate_server::config::ServeArgs;
    use voxgate_server::serve;
    use voxgate_server::session::providers::Fixed;

    let db = TestDb::chosen().await;
    let first = serve::start_with(ServeArgs::for_tests(&db.url), Arc::new(Fixed(common::scripted()))).await.expect("the first starts");
    let (store, key) = store_with_key(&db.url).await;
    let assistant: serde_json::Value = common::TestServer::http()
        .post(format!("{}/api/assistants", first.url()))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "Port 0", "firstMessageMode": "user-speaks-first", "firstMessage": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let assistant = assistant["id"].as_str().expect("the assistant is created").to_string();
    let mut call = Caller::open(&first.url(), &key, &assistant).await;
    let second = serve::start_with(ServeArgs::for_tests(&db.url), Arc::new(Fixed(common::scripted()))).await.expect("the second starts");

    let mut ids = instance_ids(&store).await;
    ids.sort();
    let mut expected: Vec<String> = [first.addr.port(), second.addr.port()].iter().map(|p| format!(":{p}")).collect();
    expected.sort();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for (id, port) in ids.iter().zip(&expected) {
        assert!(id.ends_with(port.as_str()), "{id} is named by its port ({ids:?})");
    }
    // The first instance's call was not taken for a restarted one's.
    let record = store.get_call(&call.id).await.unwrap();
    assert_eq!(record.status, CallStatus::InProgress, "{record:?}");
    call.send_text("still there?").await;
    let id = call.id.clone();
    let events = call.end().await;
    assert_eq!(events.last().unwrap()["reason"], "customer-ended-call");
    let record = ended(&store, &id, Duration::from_secs(15)).await;
    assert_eq!(record.ended_reason.as_deref(), Some("customer-ended-call"));
    second.drain().await.unwrap();
    first.drain().await.unwrap();
}
