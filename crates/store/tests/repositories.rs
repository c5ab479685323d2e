//! The repositories against every backend: SQLite always, PostgreSQL when configured.

use std::sync::Arc;

use serde_json::json;
use voxgate_domain::call::{Call, CallStatus, CallTurn, TurnError, TurnLatency, TurnRole};
use voxgate_domain::clock::{new_id, now_ms};
use voxgate_domain::key::{KeyKind, mint};
use voxgate_domain::{AssistantSpec, FileRecord, FileStatus};
use voxgate_store::calls::CallFilter;
use voxgate_store::{Store, StoreError};
use voxgate_testkit::TestDb;

fn spec(name: &str) -> AssistantSpec {
    serde_json::from_value(json!({ "name": name })).unwrap()
}

fn call(assistant: &str) -> Call {
    Call::start(assistant, None, "agent-1")
}

#[tokio::test]
async fn migrations_twice_change_nothing() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let before = store.applied_migrations().await.unwrap();
        store.migrate().await.unwrap();
        let again = Store::connect(&db.url, &Default::default()).await.unwrap();
        again.migrate().await.unwrap();
        assert_eq!(store.applied_migrations().await.unwrap(), before, "{}", db.name);
        assert!(!before.is_empty());
    }
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode() {
    let db = TestDb::sqlite();
    let _store = db.store().await;
    // Another connection sees the mode the store set on the file.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    pool.close().await;
}

#[tokio::test]
async fn assistants_crud_and_pagination() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let hostile = "Robert'); DROP TABLE assistants;-- \u{1F600} \u{202E}";
        let a = store.create_assistant(spec(hostile)).await.unwrap();
        assert_eq!(store.get_assistant(&a.id).await.unwrap().spec.name, hostile, "{}", db.name);

        let mut s2 = a.spec.clone();
        s2.system_prompt = "changed".into();
        let b = store.update_assistant(&a.id, s2).await.unwrap();
        assert_eq!(b.spec.system_prompt, "changed");
        assert_eq!(b.created_at, a.created_at);

        for n in 0..5 {
            store.create_assistant(spec(&format!("a{n}"))).await.unwrap();
        }
        let p1 = store.list_assistants(4, None).await.unwrap();
        assert_eq!(p1.items.len(), 4);
        let p2 = store.list_assistants(4, p1.next_cursor.as_deref()).await.unwrap();
        assert_eq!(p2.items.len(), 2, "{}", db.name);
        assert!(p2.next_cursor.is_none());
        assert_eq!(p1.items[0].spec.name, "a4", "newest first");

        store.delete_assistant(&a.id).await.unwrap();
        assert!(matches!(store.get_assistant(&a.id).await, Err(StoreError::NotFound)));
        assert!(matches!(store.delete_assistant(&a.id).await, Err(StoreError::NotFound)));
        assert!(matches!(store.update_assistant("nope", spec("x")).await, Err(StoreError::NotFound)));
    }
}

#[tokio::test]
async fn keys_hash_lookup_revoke_and_login_codes() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let m = mint("ci", KeyKind::Public, vec!["a1".into()]);
        store.insert_key(&m.key).await.unwrap();
        let found = store.key_by_hash(&m.key.hash).await.unwrap().unwrap();
        assert_eq!(found.assistant_ids, vec!["a1".to_string()]);
        assert_eq!(store.count_live_keys().await.unwrap(), 1);
        // The same hash twice is a conflict, not a crash.
        assert!(matches!(store.insert_key(&m.key).await, Err(StoreError::Conflict(_))), "{}", db.name);

        let revoked = store.revoke_key(&m.key.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(store.key_by_hash(&m.key.hash).await.unwrap().is_none());
        assert_eq!(store.count_live_keys().await.unwrap(), 0);

        store.create_login_code("h1", 60_000).await.unwrap();
        assert!(store.consume_login_code("h1").await.unwrap());
        assert!(!store.consume_login_code("h1").await.unwrap(), "a login code works once");
        store.create_login_code("h2", -1).await.unwrap();
        assert!(!store.consume_login_code("h2").await.unwrap(), "an expired code never works");

        store.create_call_token("t1", "asst", Some("key"), 60_000).await.unwrap();
        assert_eq!(store.consume_call_token("t1").await.unwrap(), Some(("asst".into(), Some("key".into()))));
        assert_eq!(store.consume_call_token("t1").await.unwrap(), None, "a call token works once");
        store.create_call_token("t2", "asst", None, -1).await.unwrap();
        assert_eq!(store.consume_call_token("t2").await.unwrap(), None, "an expired token never works");
    }
}

/// A turn with no latency, then turns with every kind of latency, on one call: a
/// statement first run with a NULL must take a number the next time (PostgreSQL
/// keeps the parameter types of a prepared statement).
#[tokio::test]
async fn turns_with_and_without_latency_follow_each_other() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let c = call("asst-1");
        store.create_call(&c).await.unwrap();
        let full = TurnLatency {
            endpointing_ms: Some(512.0),
            stt_ms: Some(31.4),
            llm_first_token_ms: Some(0.7),
            tts_first_audio_ms: Some(1.0),
            queue_wait_ms: Some(2.5),
            voice_to_voice_ms: Some(550.8),
            response_ms: Some(38.8),
            retrieval_ms: Some(14.2),
        };
        let latencies = [TurnLatency::default(), full.clone(), TurnLatency { queue_wait_ms: None, ..full.clone() }, TurnLatency::default(), full];
        for (idx, latency) in latencies.iter().enumerate() {
            let turn = CallTurn {
                idx: idx as i64,
                role: TurnRole::Assistant,
                text: format!("turn {idx}"),
                started_ms: idx as i64,
                interrupted: false,
                latency: latency.clone(),
                // Errors with and without, too: the same statement binds both.
                error: (idx % 3 == 1).then(|| TurnError {
                    code: "provider-failed".into(),
                    message: format!("turn {idx}: the provider said 'no' ; --"),
                }),
            };
            store.add_turn(&c.id, &turn).await.unwrap_or_else(|e| panic!("{}: turn {idx}: {e}", db.name));
        }
        let got = store.get_call(&c.id).await.unwrap().turns.unwrap();
        let errors: Vec<Option<String>> = got
            .iter()
            .map(|t| t.error.as_ref().map(|e| e.message.clone()))
            .collect();
        let want: Vec<Option<String>> = (0..latencies.len())
            .map(|idx| (idx % 3 == 1).then(|| format!("turn {idx}: the provider said 'no' ; --")))
            .collect();
        assert_eq!(errors, want, "{}", db.name);
        assert!(
            got.iter()
                .flat_map(|t| &t.error)
                .all(|e| e.code == "provider-failed"),
            "{}",
            db.name
        );
        let back: Vec<TurnLatency> = got.into_iter().map(|t| t.latency).collect();
        assert_eq!(back, latencies.to_vec(), "{}", db.name);
    }
}

#[tokio::test]
async fn calls_turns_and_filters() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let c1 = call("asst-1");
        let c2 = call("asst-2");
        store.create_call(&c1).await.unwrap();
        store.create_call(&c2).await.unwrap();
        let turn = CallTurn {
            idx: 0,
            role: TurnRole::Assistant,
            text: "héllo ' \" ; --".into(),
            started_ms: 12,
            interrupted: true,
            latency: TurnLatency { llm_first_token_ms: Some(81.5), voice_to_voice_ms: Some(420.0), ..Default::default() },
            error: None,
        };
        store.add_turn(&c1.id, &turn).await.unwrap();
        store.end_call(&c1.id, "customer-ended-call").await.unwrap();
        store.end_call(&c1.id, "second reason is ignored").await.unwrap();

        let got = store.get_call(&c1.id).await.unwrap();
        assert_eq!(got.status, CallStatus::Ended, "{}", db.name);
        assert_eq!(got.ended_reason.as_deref(), Some("customer-ended-call"));
        assert!(got.duration_ms.unwrap() >= 0);
        assert_eq!(got.turns.unwrap(), vec![turn]);

        let by_asst = store.list_calls(&CallFilter { assistant_id: Some("asst-2".into()), limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(by_asst.items.len(), 1);
        assert_eq!(by_asst.items[0].id, c2.id);
        let live = store.list_calls(&CallFilter { status: Some(CallStatus::InProgress), limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(live.items.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![c2.id.as_str()]);
        let none = store.list_calls(&CallFilter { started_before: Some(0), limit: 10, ..Default::default() }).await.unwrap();
        assert!(none.items.is_empty());
        let page = store.list_calls(&CallFilter { limit: 1, ..Default::default() }).await.unwrap();
        assert_eq!(page.items.len(), 1);
        assert!(page.next_cursor.is_some());

        assert_eq!(store.end_calls_of_instance("agent-1", "server-shutdown").await.unwrap(), 1);
    }
}

#[tokio::test]
async fn files_records() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let f = FileRecord {
            id: new_id(),
            name: "../../etc/passwd".into(),
            content_type: "text/plain".into(),
            size_bytes: 11,
            sha256: "00".repeat(32),
            purpose: "knowledge".into(),
            assistant_id: None,
            storage_path: "files/abc".into(),
            created_at: now_ms(),
            status: FileStatus::Ready,
            error: None,
            chunk_count: 0,
            processed_at: None,
        };
        store.insert_file(&f).await.unwrap();
        assert_eq!(store.get_file(&f.id).await.unwrap(), f);
        assert_eq!(store.list_files(10, None).await.unwrap().items.len(), 1);
        assert_eq!(store.delete_file(&f.id).await.unwrap().id, f.id);
        assert!(matches!(store.get_file(&f.id).await, Err(StoreError::NotFound)), "{}", db.name);
    }
}

/// 50 concurrent writers never see "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_writers() {
    for db in TestDb::all().await {
        let store = Arc::new(db.store().await);
        let mut tasks = Vec::new();
        for w in 0..50 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..10 {
                    let a = store.create_assistant(spec(&format!("w{w}-{n}"))).await?;
                    let c = call(&a.id);
                    store.create_call(&c).await?;
                    store.end_call(&c.id, "done").await?;
                    store.get_assistant(&a.id).await?;
                }
                Ok::<_, StoreError>(())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap_or_else(|e| panic!("{}: {e}", db.name));
        }
        let mut all = 0;
        let mut cursor = None;
        loop {
            let p = store.list_assistants(100, cursor.as_deref()).await.unwrap();
            all += p.items.len();
            cursor = p.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(all, 500, "{}", db.name);
    }
}

#[tokio::test]
async fn bad_database_urls_are_clear_errors() {
    let e = Store::connect("mysql://root:hunter2@h/db", &Default::default()).await.unwrap_err();
    assert!(e.to_string().contains("sqlite:// or postgres://"), "{e}");
    let e = Store::connect("postgres://u:hunter2@127.0.0.1:1/db", &voxgate_store::PoolOptions {
        acquire_timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
