//! The webhook outbox against every backend: SQLite always, PostgreSQL when configured.

use std::collections::HashSet;

use voxgate_domain::clock::{new_id, now_ms};
use voxgate_store::outbox::{NewOutboxEvent, OutboxFilter, OutboxState};
use voxgate_store::{Store, StoreError};
use voxgate_testkit::TestDb;

fn event(call: Option<&str>, kind: &str, at: i64) -> NewOutboxEvent {
    NewOutboxEvent {
        id: new_id(),
        event_type: kind.into(),
        call_id: call.map(str::to_string),
        assistant_id: None,
        url: "http://127.0.0.1:9/hook".into(),
        body: format!(r#"{{"message":{{"type":"{kind}"}}}}"#),
        created_at: at,
    }
}

async fn enqueue(store: &Store, call: Option<&str>, kind: &str, at: i64) -> String {
    let e = event(call, kind, at);
    store.enqueue_webhook(&e).await.unwrap();
    e.id
}

#[tokio::test]
async fn enqueue_claim_lease_deliver() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let now = now_ms();
        let hostile = "Robert'); DROP TABLE webhook_outbox;-- \u{1F600}";
        let mut e = event(Some(hostile), "status-update", now);
        e.assistant_id = Some("a-1".into());
        store.enqueue_webhook(&e).await.unwrap();
        let stored = store.get_webhook(&e.id).await.unwrap();
        assert_eq!(stored.call_id.as_deref(), Some(hostile), "{}", db.name);
        assert_eq!(stored.body, e.body);
        assert_eq!((stored.state, stored.attempts, stored.lease_until), (OutboxState::Pending, 0, None));
        assert_eq!(stored.next_attempt_at, now);
        // The same id twice is a conflict, not a second event.
        assert!(matches!(store.enqueue_webhook(&e).await, Err(StoreError::Conflict(_))), "{}", db.name);

        // Not due before its time.
        assert!(store.claim_webhooks(10, now - 1, now + 1000).await.unwrap().is_empty());
        let lease = now + 30_000;
        let claimed = store.claim_webhooks(10, now, lease).await.unwrap();
        assert_eq!(claimed.len(), 1, "{}", db.name);
        assert_eq!(claimed[0].lease_until, Some(lease));
        // Leased: nobody else takes it until the lease runs out.
        assert!(store.claim_webhooks(10, now + 1, now + 2000).await.unwrap().is_empty());
        let again = store.claim_webhooks(10, lease, lease + 30_000).await.unwrap();
        assert_eq!(again.len(), 1, "an expired lease is claimable");
        let lease = lease + 30_000;

        // A failure under a stale lease is refused; under the current one it counts.
        assert!(!store.record_webhook_failure(&e.id, now + 30_000, Some(500), "x", Some(now)).await.unwrap());
        let long = "é".repeat(400);
        assert!(store.record_webhook_failure(&e.id, lease, Some(500), &long, Some(now + 50)).await.unwrap());
        let after = store.get_webhook(&e.id).await.unwrap();
        assert_eq!((after.attempts, after.last_status, after.lease_until), (1, Some(500), None));
        assert_eq!(after.next_attempt_at, now + 50);
        assert!(after.last_error.as_ref().unwrap().len() <= voxgate_store::outbox::MAX_ERROR_LEN);

        let c = store.claim_webhooks(10, now + 50, now + 1000).await.unwrap();
        assert_eq!(c.len(), 1);
        assert!(store.mark_webhook_delivered(&e.id, 204, now + 60).await.unwrap());
        assert!(!store.mark_webhook_delivered(&e.id, 204, now + 61).await.unwrap(), "only once");
        let done = store.get_webhook(&e.id).await.unwrap();
        assert_eq!(done.state, OutboxState::Delivered);
        assert_eq!((done.attempts, done.delivered_at, done.last_status, done.last_error), (2, Some(now + 60), Some(204), None));
        assert!(store.claim_webhooks(10, now + 10_000_000, now + 10_001_000).await.unwrap().is_empty());
        assert_eq!(store.count_pending_webhooks().await.unwrap(), 0);
        assert!(matches!(store.get_webhook("nope").await, Err(StoreError::NotFound)));
    }
}

#[tokio::test]
async fn give_up_list_and_retry() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let now = now_ms();
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(enqueue(&store, Some("call-a"), "transcript", now + i).await);
        }
        let other = enqueue(&store, Some("call-b"), "end-of-call-report", now).await;
        assert_eq!(store.count_pending_webhooks().await.unwrap(), 6);

        // Oldest due first, and no more than asked.
        let lease = now + 1000;
        let claimed = store.claim_webhooks(3, now + 10, lease).await.unwrap();
        assert_eq!(claimed.len(), 3, "{}", db.name);
        assert!(claimed.windows(2).all(|w| w[0].next_attempt_at <= w[1].next_attempt_at));
        let gone = &claimed[0].id;
        assert!(store.record_webhook_failure(gone, lease, None, "cannot connect", None).await.unwrap());
        let failed = store.get_webhook(gone).await.unwrap();
        assert_eq!((failed.state, failed.attempts), (OutboxState::Failed, 1));
        assert_eq!(failed.last_status, None);
        assert_eq!(store.count_pending_webhooks().await.unwrap(), 5);

        let f = |call: Option<&str>, state: Option<OutboxState>| OutboxFilter {
            call_id: call.map(str::to_string),
            state,
            limit: 100,
            ..Default::default()
        };
        let listed = store.list_webhooks(&f(None, Some(OutboxState::Failed))).await.unwrap();
        assert_eq!(listed.items.iter().map(|e| &e.id).collect::<Vec<_>>(), vec![gone], "{}", db.name);
        assert_eq!(store.list_webhooks(&f(Some("call-a"), None)).await.unwrap().items.len(), 5);
        assert_eq!(store.list_webhooks(&f(Some("call-b"), Some(OutboxState::Pending))).await.unwrap().items[0].id, other);
        assert!(store.list_webhooks(&f(Some("call-b"), Some(OutboxState::Failed))).await.unwrap().items.is_empty());
        let by_type = OutboxFilter { event_type: Some("end-of-call-report".into()), limit: 10, ..Default::default() };
        assert_eq!(store.list_webhooks(&by_type).await.unwrap().items.len(), 1);

        // Pages, newest first, every event once.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let p = store.list_webhooks(&OutboxFilter { cursor: cursor.clone(), limit: 4, ..Default::default() }).await.unwrap();
            seen.extend(p.items.into_iter().map(|e| e.id));
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut all: Vec<String> = ids.iter().chain([&other]).cloned().collect();
        all.sort();
        all.reverse();
        assert_eq!(seen, all, "{}", db.name);

        // A manual retry puts a failed event back; only failed ones.
        store.retry_webhook(gone, now + 20).await.unwrap();
        let back = store.get_webhook(gone).await.unwrap();
        assert_eq!((back.state, back.attempts, back.next_attempt_at), (OutboxState::Pending, 0, now + 20));
        assert!(matches!(store.retry_webhook(gone, now).await, Err(StoreError::NotFound)));

        // Leases given back (shutdown) make events claimable at once; a stale lease changes nothing.
        let lease = now + 60_000;
        let held = store.claim_webhooks(100, now + 30, lease).await.unwrap();
        assert_eq!(held.len(), 4, "2 still leased from the first claim, 4 free: {}", db.name);
        let back: Vec<(String, i64)> = held.iter().map(|e| (e.id.clone(), lease)).chain([(ids[4].clone(), 1)]).collect();
        assert_eq!(store.release_webhook_leases(&back).await.unwrap(), 4);
        assert_eq!(store.claim_webhooks(100, now + 30, lease).await.unwrap().len(), 4);
    }
}

/// Two instances on one database claim disjoint sets, however they interleave.
#[tokio::test]
async fn concurrent_claims_never_overlap() {
    for db in TestDb::all().await {
        let a = db.store().await;
        let b = Store::connect(&db.url, &Default::default()).await.unwrap();
        let now = now_ms();
        for _ in 0..200 {
            enqueue(&a, None, "status-update", now).await;
        }
        let claimer = |s: Store| async move {
            let mut got = Vec::new();
            loop {
                let batch = s.claim_webhooks(7, now, now + 60_000).await.unwrap();
                if batch.is_empty() {
                    break got;
                }
                got.extend(batch.into_iter().map(|e| e.id));
            }
        };
        let (x, y) = tokio::join!(tokio::spawn(claimer(a.clone())), tokio::spawn(claimer(b.clone())));
        let (x, y) = (x.unwrap(), y.unwrap());
        let xs: HashSet<_> = x.iter().collect();
        let ys: HashSet<_> = y.iter().collect();
        assert_eq!(xs.len(), x.len());
        assert!(xs.is_disjoint(&ys), "{}: both claimed {:?}", db.name, xs.intersection(&ys).next());
        assert_eq!(x.len() + y.len(), 200, "{}", db.name);
    }
}
