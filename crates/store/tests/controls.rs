//! Control messages queued for the instance that holds a call, against every
//! backend: SQLite always, PostgreSQL when configured.

use voxgate_testkit::TestDb;

/// Moves the queued messages whose `column` is `value` `ms` into the past.
async fn age(db: &TestDb, column: &str, value: &str, ms: i64) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE call_controls SET created_at = created_at - $1 WHERE {column} = $2")))
        .bind(ms)
        .bind(value)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn queued_messages_come_in_order_and_are_removed_once() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let first = store.queue_control("call-a", r#"{"type":"say","text":"one"}"#, 8).await.unwrap().unwrap();
        let other = store.queue_control("call-b", r#"{"type":"end"}"#, 8).await.unwrap().unwrap();
        let second = store.queue_control("call-a", r#"{"type":"say","text":"two"}"#, 8).await.unwrap().unwrap();
        // The queue's order, not the clock's: the first is made to look newer.
        age(&db, "id", &first, -10_000).await;
        assert_ne!(first, second);
        assert_eq!(store.calls_with_controls(60_000).await.unwrap(), ["call-a", "call-b"], "{}", db.name);

        let queued = store.queued_controls("call-a").await.unwrap();
        let got: Vec<_> = queued.iter().map(|c| (c.id.as_str(), c.call_id.as_str(), c.message.as_str())).collect();
        assert_eq!(
            got,
            [(first.as_str(), "call-a", r#"{"type":"say","text":"one"}"#), (second.as_str(), "call-a", r#"{"type":"say","text":"two"}"#)],
            "{}: in the order queued",
            db.name
        );
        assert!(store.remove_control(&first).await.unwrap());
        assert!(!store.remove_control(&first).await.unwrap(), "{}: removed once", db.name);
        assert!(!store.remove_control("no-such-id").await.unwrap());
        assert_eq!(store.queued_controls("call-a").await.unwrap().len(), 1);
        assert!(store.remove_control(&second).await.unwrap());
        assert!(store.queued_controls("call-a").await.unwrap().is_empty());
        assert_eq!(store.calls_with_controls(60_000).await.unwrap(), ["call-b"], "{}", db.name);
        assert_eq!(store.queued_controls("call-b").await.unwrap()[0].id, other);
    }
}

#[tokio::test]
async fn a_call_holds_at_most_max_messages() {
    for db in TestDb::all().await {
        let store = db.store().await;
        for i in 0..3 {
            assert!(store.queue_control("call-x", &format!(r#"{{"type":"say","text":"{i}"}}"#), 3).await.unwrap().is_some());
        }
        assert_eq!(store.queue_control("call-x", r#"{"type":"end"}"#, 3).await.unwrap(), None, "{}: full", db.name);
        assert!(store.queue_control("call-y", r#"{"type":"end"}"#, 3).await.unwrap().is_some(), "{}: per call", db.name);
        let first = store.queued_controls("call-x").await.unwrap().remove(0);
        assert!(store.remove_control(&first.id).await.unwrap());
        assert!(store.queue_control("call-x", r#"{"type":"end"}"#, 3).await.unwrap().is_some(), "{}: room again", db.name);
    }
}

#[tokio::test]
async fn two_removers_at_once_share_nothing() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let mut queued = Vec::new();
        for i in 0..20 {
            queued.push(store.queue_control("call-x", &format!(r#"{{"type":"say","text":"{i}"}}"#), 64).await.unwrap().unwrap());
        }
        let mut won = 0;
        for id in &queued {
            let (a, b) = tokio::join!(store.remove_control(id), store.remove_control(id));
            won += usize::from(a.unwrap()) + usize::from(b.unwrap());
        }
        assert_eq!(won, queued.len(), "{}: each message removed by exactly one", db.name);
    }
}

#[tokio::test]
async fn messages_nobody_takes_in_time_are_dropped() {
    for db in TestDb::all().await {
        let store = db.store().await;
        store.queue_control("call-old", r#"{"type":"end"}"#, 8).await.unwrap();
        store.queue_control("call-new", r#"{"type":"end"}"#, 8).await.unwrap();
        age(&db, "call_id", "call-old", 61_000).await;
        assert_eq!(store.calls_with_controls(60_000).await.unwrap(), ["call-new"], "{}", db.name);
        assert!(store.queued_controls("call-old").await.unwrap().is_empty(), "{}: deleted", db.name);
        assert_eq!(store.queued_controls("call-new").await.unwrap().len(), 1);
    }
}
