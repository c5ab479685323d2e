//! Delivery over real HTTP from the real outbox: SQLite (a temp file) always,
//! PostgreSQL when `VOXGATE_TEST_POSTGRES_URL` is set.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{Mode, Receiver, SECRET, eventually, fast_options};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use voxgate_store::Store;
use voxgate_store::outbox::{OutboxFilter, OutboxState};
use voxgate_testkit::TestDb;
use voxgate_webhooks::{Event, Options, WebhookDelivery, WebhookError, Webhooks, kinds};

async fn enqueue_n(w: &Webhooks, url: &str, call: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let e = Event::new(kinds::TRANSCRIPT, Some(call), Some("asst"), url, json!({ "transcript": format!("turn {i}") }));
        ids.push(w.enqueue(e).await.unwrap());
    }
    ids
}

async fn all_tried(store: &Store, ids: &[String]) -> bool {
    for id in ids {
        if store.get_webhook(id).await.unwrap().attempts < 1 {
            return false;
        }
    }
    true
}

/// The scenario: the receiver fails (500, then dropped connections), the
/// server restarts in between, the receiver recovers; every event arrives, signed,
/// exactly once as the receiver sees it (by event id), and the outbox says so.
#[tokio::test]
async fn failing_receiver_restart_and_recovery_lose_nothing() {
    for db in TestDb::all().await {
        let mut rx = Receiver::start(Mode::Status(500, "down for maintenance".into())).await;
        let url = rx.url();
        let store = db.store().await;
        let w1 = Webhooks::new(store.clone(), SECRET, fast_options()).unwrap();
        let stop1 = CancellationToken::new();
        let run1 = tokio::spawn(w1.clone().run(stop1.clone()));

        // Before: answered 500.
        let before = enqueue_n(&w1, &url, "call-1", 6).await;
        eventually(10, "first attempts (500)", || all_tried(&store, &before)).await;
        // During: the port drops every connection.
        rx.drop_connections().await;
        let during = enqueue_n(&w1, &url, "call-1", 6).await;
        eventually(10, "first attempts (dropped)", || all_tried(&store, &during)).await;

        // Restart: the worker stops, its process's store goes away.
        stop1.cancel();
        run1.await.unwrap();
        drop(w1);
        store.close().await;
        let store = Store::connect(&db.url, &Default::default()).await.unwrap();
        let w2 = Webhooks::new(store.clone(), SECRET, fast_options()).unwrap();
        // Enqueued while no worker runs.
        let offline = enqueue_n(&w2, &url, "call-2", 4).await;
        let stop2 = CancellationToken::new();
        let run2 = tokio::spawn(w2.clone().run(stop2.clone()));
        eventually(10, "the new worker tries what was left", || all_tried(&store, &offline)).await;

        rx.recover(Mode::Ok).await;
        let after = enqueue_n(&w2, &url, "call-2", 4).await;
        eventually(20, "everything delivered", || async { store.count_pending_webhooks().await.unwrap() == 0 }).await;
        stop2.cancel();
        run2.await.unwrap();

        let seen = rx.seen();
        assert!(seen.iter().all(|s| s.signature_ok), "{}: a request without a valid signature", db.name);
        let accepted: Vec<_> = seen.iter().filter(|s| s.status == 200).collect();
        let unique: HashSet<&str> = accepted.iter().map(|s| s.id.as_str()).collect();
        let all: HashSet<&str> = before.iter().chain(&during).chain(&offline).chain(&after).map(String::as_str).collect();
        assert_eq!(unique, all, "{}: every event arrives", db.name);
        assert!(accepted.len() >= all.len());
        assert!(seen.iter().any(|s| s.status == 500), "the failures happened");

        for s in &accepted {
            let stored = store.get_webhook(&s.id).await.unwrap();
            assert_eq!(s.body, stored.body, "the body signed and sent is the one stored");
            assert_eq!(s.kind, "transcript");
            let v: serde_json::Value = serde_json::from_str(&s.body).unwrap();
            assert_eq!(v["id"], s.id.as_str());
            assert_eq!(v["message"]["call"]["id"], stored.call_id.clone().unwrap().as_str());
            assert!(s.timestamp_header.parse::<i64>().is_ok());
        }
        for id in &all {
            let e = store.get_webhook(id).await.unwrap();
            assert_eq!(e.state, OutboxState::Delivered, "{}", db.name);
            assert!(e.delivered_at.is_some());
            assert_eq!(e.last_status, Some(200));
        }
        for id in before.iter().chain(&during).chain(&offline) {
            assert!(store.get_webhook(id).await.unwrap().attempts > 1, "{}: {id} met the failures", db.name);
        }
        let delivered = store
            .list_webhooks(&OutboxFilter { call_id: Some("call-2".into()), state: Some(OutboxState::Delivered), limit: 100, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(delivered.items.len(), offline.len() + after.len());
        // The API's view: camelCase, RFC 3339 times, the body only when asked for.
        let view = serde_json::to_value(WebhookDelivery::from_event(delivered.items[0].clone(), false)).unwrap();
        assert_eq!(view["state"], "delivered");
        assert_eq!(view["type"], "transcript");
        assert!(view["deliveredAt"].as_str().unwrap().ends_with('Z'));
        assert!(view["nextAttemptAt"].is_null());
        assert!(view.get("body").is_none());
        let with_body = serde_json::to_value(WebhookDelivery::from_event(delivered.items[0].clone(), true)).unwrap();
        assert_eq!(with_body["body"]["message"]["type"], "transcript");
    }
}

/// A worker that dies mid-attempt (no clean shutdown) leaves its claims leased; the
/// next worker takes them once the lease runs out, not before, and delivers them.
#[tokio::test]
async fn a_crashed_worker_s_claims_are_taken_over_after_the_lease() {
    for db in TestDb::all().await {
        let rx = Receiver::start(Mode::Hang(Duration::from_secs(30))).await;
        let store = db.store().await;
        // The lease is raised to timeout + 1 s = 2 s; the timeout is long enough that
        // the first worker is gone before its attempts could time out.
        let opts = Options { timeout: Duration::from_secs(1), lease: Duration::ZERO, ..fast_options() };
        let w1 = Webhooks::new(store.clone(), SECRET, opts.clone()).unwrap();
        let ids = enqueue_n(&w1, &rx.url(), "c", 3).await;
        let run1 = tokio::spawn(w1.clone().run(CancellationToken::new()));
        eventually(10, "the first attempts are in flight", || leased(&store, &ids)).await;
        run1.abort();
        let _ = run1.await;
        rx.set_mode(Mode::Ok);

        let mut leases = HashMap::new();
        for id in &ids {
            leases.insert(id.clone(), store.get_webhook(id).await.unwrap().lease_until.unwrap());
        }
        let w2 = Webhooks::new(store.clone(), SECRET, opts).unwrap();
        let stop = CancellationToken::new();
        let run2 = tokio::spawn(w2.run(stop.clone()));
        eventually(10, "taken over and delivered", || async { store.count_pending_webhooks().await.unwrap() == 0 }).await;
        stop.cancel();
        run2.await.unwrap();
        for id in &ids {
            let e = store.get_webhook(id).await.unwrap();
            assert_eq!(e.state, OutboxState::Delivered, "{}", db.name);
            assert_eq!(e.attempts, 1, "the cut attempt was never recorded");
            assert!(e.delivered_at.unwrap() >= leases[id], "{}: taken before the lease ran out", db.name);
        }
        let ok: HashSet<_> = rx.seen().into_iter().filter(|s| s.status == 200).map(|s| s.id).collect();
        assert_eq!(ok, ids.iter().cloned().collect());
    }
}

async fn leased(store: &Store, ids: &[String]) -> bool {
    for id in ids {
        if store.get_webhook(id).await.unwrap().lease_until.is_none() {
            return false;
        }
    }
    true
}

/// A receiver that never answers: the per-attempt timeout fires, the attempt is
/// counted as failed, and the next attempt delivers.
#[tokio::test]
async fn a_hanging_receiver_times_out_and_is_retried() {
    for db in TestDb::all().await {
        let rx = Receiver::start(Mode::Hang(Duration::from_secs(30))).await;
        let store = db.store().await;
        let opts = Options { timeout: Duration::from_millis(300), ..fast_options() };
        let w = Webhooks::new(store.clone(), SECRET, opts).unwrap();
        let id = w.enqueue(Event::new(kinds::END_OF_CALL_REPORT, Some("c"), None, &rx.url(), json!({}))).await.unwrap();

        let t = Instant::now();
        assert_eq!(w.deliver_due().await.unwrap(), 1);
        assert!(t.elapsed() < Duration::from_secs(10), "the attempt did not wait for the receiver");
        let e = store.get_webhook(&id).await.unwrap();
        assert_eq!((e.state, e.attempts, e.last_status), (OutboxState::Pending, 1, None), "{}", db.name);
        let err = e.last_error.unwrap();
        assert!(err.contains("300 ms") || err.contains("timed out"), "{err}");
        assert!(e.next_attempt_at > voxgate_domain::clock::now_ms() - 1000);

        rx.set_mode(Mode::Ok);
        eventually(10, "the retry", || async {
            w.deliver_due().await.unwrap();
            store.get_webhook(&id).await.unwrap().state == OutboxState::Delivered
        })
        .await;
        let e = store.get_webhook(&id).await.unwrap();
        assert_eq!((e.attempts, e.last_error), (2, None));
        let seen: Vec<_> = rx.seen().into_iter().filter(|s| s.status == 200).collect();
        assert_eq!(seen.len(), 1, "the hung request never answered; the retry did");
    }
}

/// Attempts run out: the event is `failed`, listed as such, with the last answer.
#[tokio::test]
async fn giving_up_after_max_attempts_and_on_410() {
    for db in TestDb::all().await {
        let secretish = "x".repeat(5000);
        let rx = Receiver::start(Mode::Status(503, format!("busy\n\u{1b}[31m{secretish}"))).await;
        let store = db.store().await;
        let opts = Options { max_attempts: 3, ..fast_options() };
        let w = Webhooks::new(store.clone(), SECRET, opts).unwrap();
        let id = w.enqueue(Event::new(kinds::STATUS_UPDATE, Some("c1"), None, &rx.url(), json!({}))).await.unwrap();
        eventually(10, "three attempts", || async {
            w.deliver_due().await.unwrap();
            store.get_webhook(&id).await.unwrap().state == OutboxState::Failed
        })
        .await;
        let e = store.get_webhook(&id).await.unwrap();
        assert_eq!((e.attempts, e.last_status), (3, Some(503)), "{}", db.name);
        let err = e.last_error.clone().unwrap();
        assert!(err.starts_with("HTTP 503: busy"), "{err}");
        assert!(err.len() < 600 && !err.contains('\u{1b}'), "{err}");
        assert!(!err.contains(SECRET) && !err.contains("token=abc"));
        assert_eq!(rx.seen().len(), 3, "no attempt after giving up");
        w.deliver_due().await.unwrap();
        assert_eq!(rx.seen().len(), 3);

        let failed = store.list_webhooks(&OutboxFilter { state: Some(OutboxState::Failed), limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(failed.items.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec![id.as_str()]);
        let view = serde_json::to_value(WebhookDelivery::from_event(failed.items[0].clone(), false)).unwrap();
        assert_eq!((view["state"].as_str(), view["attempts"].as_i64(), view["lastStatus"].as_i64()), (Some("failed"), Some(3), Some(503)));

        // A manual retry sends it again.
        rx.set_mode(Mode::Ok);
        store.retry_webhook(&id, voxgate_domain::clock::now_ms()).await.unwrap();
        w.deliver_due().await.unwrap();
        assert_eq!(store.get_webhook(&id).await.unwrap().state, OutboxState::Delivered);

        // 410 Gone gives up at once.
        rx.set_mode(Mode::Status(410, "gone".into()));
        let gone = w.enqueue(Event::new(kinds::STATUS_UPDATE, None, None, &rx.url(), json!({}))).await.unwrap();
        w.deliver_due().await.unwrap();
        let e = store.get_webhook(&gone).await.unwrap();
        assert_eq!((e.state, e.attempts, e.last_status), (OutboxState::Failed, 1, Some(410)), "{}", db.name);
    }
}

/// A redirect is not followed (the signed body would go to another host); it counts
/// as a failed attempt.
#[tokio::test]
async fn redirects_are_not_followed() {
    let db = TestDb::sqlite();
    let elsewhere = Receiver::start(Mode::Ok).await;
    let rx = Receiver::start(Mode::Redirect(elsewhere.url())).await;
    let store = db.store().await;
    let w = Webhooks::new(store.clone(), SECRET, fast_options()).unwrap();
    let id = w.enqueue(Event::new(kinds::TOOL_CALLS, None, None, &rx.url(), json!({"toolCalls": []}))).await.unwrap();
    w.deliver_due().await.unwrap();
    let e = store.get_webhook(&id).await.unwrap();
    assert_eq!((e.state, e.attempts, e.last_status), (OutboxState::Pending, 1, Some(307)));
    assert!(elsewhere.seen().is_empty());
}

/// Two workers (two instances) on one database: no event is sent twice.
#[tokio::test]
async fn two_workers_on_one_database_never_send_the_same_event() {
    for db in TestDb::all().await {
        let rx = Receiver::start(Mode::Hang(Duration::from_millis(15))).await;
        let a = db.store().await;
        let b = Store::connect(&db.url, &Default::default()).await.unwrap();
        let opts = Options { lease: Duration::from_secs(30), batch_size: 5, concurrency: 5, ..fast_options() };
        let wa = Webhooks::new(a.clone(), SECRET, opts.clone()).unwrap();
        let wb = Webhooks::new(b.clone(), SECRET, opts).unwrap();
        // Enqueued before either runs, so both start with the whole backlog.
        let ids = enqueue_n(&wa, &rx.url(), "c", 60).await;
        let stop = CancellationToken::new();
        let ra = tokio::spawn(wa.clone().run(stop.clone()));
        let rb = tokio::spawn(wb.clone().run(stop.clone()));
        let more = enqueue_n(&wb, &rx.url(), "c", 20).await;
        eventually(30, "all delivered", || async { a.count_pending_webhooks().await.unwrap() == 0 }).await;
        stop.cancel();
        ra.await.unwrap();
        rb.await.unwrap();

        let mut per_id: HashMap<String, usize> = HashMap::new();
        for s in rx.seen() {
            assert!(s.signature_ok);
            *per_id.entry(s.id).or_default() += 1;
        }
        assert_eq!(per_id.len(), ids.len() + more.len(), "{}", db.name);
        let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{}: sent more than once: {twice:?}", db.name);
    }
}

#[tokio::test]
async fn bad_input_is_refused_before_the_outbox() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    assert!(matches!(Webhooks::new(store.clone(), "", Options::default()), Err(WebhookError::NoSecret)));
    let w = Webhooks::new(store.clone(), SECRET, Options { max_body_bytes: 1000, ..Options::default() }).unwrap();
    assert!(!format!("{w:?}").contains(SECRET), "Debug hides the secret");
    for url in ["", "not a url", "/relative/path", "ftp://example.test/x", "file:///etc/passwd", "http://", "javascript:alert(1)", "http:// spaced.test/", "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/"] {
        let r = w.enqueue(Event::new("x", None, None, url, json!({}))).await;
        assert!(matches!(r, Err(WebhookError::BadUrl(_))), "{url:?}: {r:?}");
    }
    let big = Event::new("x", None, None, "http://127.0.0.1:9/", json!({ "t": "a".repeat(2000) }));
    let r = w.enqueue(big).await;
    assert!(matches!(r, Err(WebhookError::TooLarge { max: 1000, .. })), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("1000"));
    assert_eq!(store.count_pending_webhooks().await.unwrap(), 0);
}
