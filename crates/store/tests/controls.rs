//! Control messages queued for the instance that holds a call, against every
//! backend: SQLite always, PostgreSQL when configured.

use voxgate_testkit::TestDb;

/// Moves every queued message of `call` `ms` into the past.
async fn age(db: &TestDb, call: &str, ms: i64) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE call_controls SET created_at = created_at - $1 WHERE call_id = $2")
        .bind(ms)
        .bind(call)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn queued_messages_are_taken_once_in_order() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let first = store.queue_control("call-a", r#"{"type":"say","text":"one"}"#).await.unwrap();
        let other = store.queue_control("call-b", r#"{"type":"end"}"#).await.unwrap();
        let second = store.queue_control("call-a", r#"{"type":"say","text":"two"}"#).await.unwrap();
        assert_ne!(first, second);
        assert_eq!(store.calls_with_controls(60_000).await.unwrap(), ["call-a", "call-b"], "{}", db.name);

        let taken = store.take_controls("call-a").await.unwrap();
        let got: Vec<_> = taken.iter().map(|c| (c.id.as_str(), c.call_id.as_str(), c.message.as_str())).collect();
        assert_eq!(
            got,
            [(first.as_str(), "call-a", r#"{"type":"say","text":"one"}"#), (second.as_str(), "call-a", r#"{"type":"say","text":"two"}"#)],
            "{}: oldest first",
            db.name
        );
        assert!(store.take_controls("call-a").await.unwrap().is_empty(), "{}: taken once", db.name);
        assert!(store.take_controls("no-such-call").await.unwrap().is_empty());
        assert_eq!(store.calls_with_controls(60_000).await.unwrap(), ["call-b"], "{}", db.name);
        assert_eq!(store.take_controls("call-b").await.unwrap()[0].id, other);
    }
}

#[tokio::test]
async fn two_takers_at_once_share_nothing() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let mut queued = Vec::new();
        for i in 0..40 {
            queued.push(store.queue_control("call-x", &format!(r#"{{"type":"say","text":"{i}"}}"#)).await.unwrap());
        }
        let (a, b) = tokio::join!(store.take_controls("call-x"), store.take_controls("call-x"));
        let mut got: Vec<String> = a.unwrap().into_iter().chain(b.unwrap()).map(|c| c.id).collect();
        got.sort();
        queued.sort();
        assert_eq!(got, queued, "{}: every message taken exactly once", db.name);
    }
}

#[tokio::test]
async fn messages_nobody_takes_in_time_are_dropped() {
    for db in TestDb::all().await {
        let store = db.store().await;
        store.queue_control("call-old", r#"{"type":"end"}"#).await.unwrap();
        store.queue_control("call-new", r#"{"type":"end"}"#).await.unwrap();
        age(&db, "call-old", 61_000).await;
        assert_eq!(store.calls_with_controls(60_000).await.unwrap(), ["call-new"], "{}", db.name);
        assert!(store.take_controls("call-old").await.unwrap().is_empty(), "{}: deleted", db.name);
        assert_eq!(store.take_controls("call-new").await.unwrap().len(), 1);
    }
}
