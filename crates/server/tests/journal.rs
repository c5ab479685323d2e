//! The call-record journal on a real database (SQLite, and PostgreSQL when
//! configured): turns from many calls written behind them in batches, in order,
//! a call's end after its turns, and a write the database refuses dropping only
//! itself.

use std::time::Duration;

use voxgate_domain::call::{Call, CallStatus, CallTurn, TurnLatency, TurnRole};
use voxgate_domain::clock::new_id;
use voxgate_server::session::journal::Journal;
use voxgate_testkit::TestDb;

fn call() -> Call {
    Call::start(new_id(), None, "journal-test")
}

fn turn(idx: i64) -> CallTurn {
    CallTurn {
        idx,
        role: if idx % 2 == 0 { TurnRole::User } else { TurnRole::Assistant },
        text: format!("turn {idx}"),
        started_ms: idx * 1000,
        interrupted: false,
        latency: if idx % 2 == 0 { TurnLatency::default() } else { TurnLatency { response_ms: Some(idx as f64), ..Default::default() } },
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_of_many_calls_are_written_in_order_and_each_end_after_its_turns() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let (journal, writer) = Journal::start(store.clone());
        let calls: Vec<Call> = (0..50).map(|_| call()).collect();
        for c in &calls {
            store.create_call(c).await.unwrap();
        }
        // 50 calls at once, 6 turns each, then their ends.
        let tasks: Vec<_> = calls
            .iter()
            .map(|c| {
                let (journal, id) = (journal.clone(), c.id.clone());
                tokio::spawn(async move {
                    for i in 0..6 {
                        journal.turn(&id, turn(i)).await;
                        tokio::task::yield_now().await;
                    }
                    journal.end(&id, "customer-ended-call", Duration::from_secs(20)).await
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap(), "{}: the end is written", db.name);
        }
        for c in &calls {
            let got = store.get_call(&c.id).await.unwrap();
            assert_eq!(got.status, CallStatus::Ended, "{}", db.name);
            let turns = got.turns.unwrap();
            assert_eq!(turns, (0..6).map(turn).collect::<Vec<_>>(), "{}", db.name);
        }
        // Everything written: a flush returns at once; dropping the journal ends the writer.
        assert!(journal.flush(Duration::from_secs(5)).await);
        drop(journal);
        tokio::time::timeout(Duration::from_secs(5), writer).await.expect("the writer ends").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_drops_only_itself() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let (journal, _writer) = Journal::start(store.clone());
        let (a, b) = (call(), call());
        store.create_call(&a).await.unwrap();
        store.create_call(&b).await.unwrap();
        // Turn 0 of call a twice (the second breaks the primary key), and turns of b
        // around it, all likely in one batch.
        journal.turn(&a.id, turn(0)).await;
        journal.turn(&b.id, turn(0)).await;
        journal.turn(&a.id, CallTurn { text: "again".into(), ..turn(0) }).await;
        journal.turn(&b.id, turn(1)).await;
        journal.turn(&a.id, turn(1)).await;
        assert!(journal.end(&b.id, "customer-ended-call", Duration::from_secs(20)).await, "{}", db.name);
        assert!(journal.flush(Duration::from_secs(20)).await);
        let a_turns = store.get_call(&a.id).await.unwrap().turns.unwrap();
        assert_eq!(a_turns, vec![turn(0), turn(1)], "{}: the duplicate alone is dropped", db.name);
        let b_call = store.get_call(&b.id).await.unwrap();
        assert_eq!(b_call.turns.unwrap(), vec![turn(0), turn(1)], "{}", db.name);
        assert_eq!(b_call.status, CallStatus::Ended);
    }
}
