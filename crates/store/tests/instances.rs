//! Agent instances and the sweep of a lost one's calls, against every backend:
//! SQLite always, PostgreSQL when configured.

use voxgate_domain::call::ended_by_server::INSTANCE_LOST;
use voxgate_domain::call::{Call, CallStatus};
use voxgate_domain::clock::now_ms;
use voxgate_store::Store;
use voxgate_store::instances::Sweep;
use voxgate_testkit::TestDb;

const LEASE_MS: i64 = 60_000;

/// Moves `id`'s last heartbeat `ms` into the past (as if it had stopped then).
async fn age(db: &TestDb, id: &str, ms: i64) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let done = sqlx::query("UPDATE instances SET seen_at = seen_at - $1 WHERE id = $2")
        .bind(ms)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "{id} has a row");
    pool.close().await;
}

async fn call_on(store: &Store, instance: Option<&str>) -> Call {
    let mut c = Call::start("asst-1", None, "unused");
    c.instance = instance.map(str::to_string);
    // Started a while ago, so a duration is visibly `ended_at - started_at`.
    c.started_at -= 5_000;
    store.create_call(&c).await.unwrap();
    c
}

async fn status(store: &Store, c: &Call) -> (CallStatus, Option<String>) {
    let got = store.get_call(&c.id).await.unwrap();
    (got.status, got.ended_reason)
}

fn ids(store_rows: Vec<voxgate_store::instances::InstanceRow>) -> Vec<String> {
    store_rows.into_iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn heartbeats_use_milliseconds_and_a_lost_row_is_written_again() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let before = now_ms();
        store.register_instance("agent-a").await.unwrap();
        let rows = store.instances().await.unwrap();
        assert_eq!(rows.len(), 1, "{}", db.name);
        let row = &rows[0];
        assert_eq!(row.id, "agent-a");
        assert_eq!(row.started_at, row.seen_at);
        // The database's clock, in Unix milliseconds (the test database is on this host).
        assert!(
            (row.seen_at - before).abs() < 60_000,
            "{}: seen_at {} vs now {before}",
            db.name,
            row.seen_at
        );

        age(&db, "agent-a", 10_000).await;
        assert!(
            store.refresh_instance("agent-a").await.unwrap(),
            "{}: the row was there",
            db.name
        );
        let again = &store.instances().await.unwrap()[0];
        assert!(
            again.seen_at > row.seen_at - 10_000 + 5_000,
            "{}: refreshed: {again:?}",
            db.name
        );
        assert_eq!(
            again.started_at, row.started_at,
            "{}: a refresh keeps started_at",
            db.name
        );

        // Another instance took it for dead and removed its row: the next heartbeat
        // says so and writes the row again.
        store.remove_instance("agent-a").await.unwrap();
        assert!(store.instances().await.unwrap().is_empty());
        assert!(
            !store.refresh_instance("agent-a").await.unwrap(),
            "{}",
            db.name
        );
        assert_eq!(
            ids(store.instances().await.unwrap()),
            vec!["agent-a"],
            "{}",
            db.name
        );

        // A restart with the same id takes the row over.
        age(&db, "agent-a", 120_000).await;
        store.register_instance("agent-a").await.unwrap();
        let restarted = &store.instances().await.unwrap()[0];
        assert_eq!(restarted.started_at, restarted.seen_at, "{}", db.name);
        assert!((restarted.seen_at - now_ms()).abs() < 60_000, "{}", db.name);
    }
}

#[tokio::test]
async fn the_sweep_ends_only_a_lost_instances_calls_once() {
    for db in TestDb::all().await {
        let name = db.name;
        let store = db.store().await;
        for id in ["own", "live", "dead"] {
            store.register_instance(id).await.unwrap();
        }
        let live = call_on(&store, Some("live")).await;
        let dead1 = call_on(&store, Some("dead")).await;
        let dead2 = call_on(&store, Some("dead")).await;
        let dead_done = call_on(&store, Some("dead")).await;
        store
            .end_call(&dead_done.id, "customer-ended-call")
            .await
            .unwrap();
        let done_before = store.get_call(&dead_done.id).await.unwrap();
        let mine = call_on(&store, Some("own")).await;
        // Calls of an instance with no row (made before the table existed) and with no
        // instance at all.
        let unregistered = call_on(&store, Some("old-agent")).await;
        let nowhere = call_on(&store, None).await;

        // Nobody is late yet: nothing happens.
        assert_eq!(
            store
                .end_calls_of_lost_instances("own", LEASE_MS, INSTANCE_LOST)
                .await
                .unwrap(),
            Sweep::default(),
            "{name}"
        );

        // "live" is late but within the lease; "dead" is past it.
        age(&db, "live", LEASE_MS / 2).await;
        age(&db, "dead", LEASE_MS + 1_000).await;
        let before = now_ms();
        let sweep = store
            .end_calls_of_lost_instances("own", LEASE_MS, INSTANCE_LOST)
            .await
            .unwrap();
        let after = now_ms();
        assert_eq!(sweep.ended, vec![("dead".to_string(), 2)], "{name}");
        assert_eq!(sweep.removed, vec!["dead".to_string()], "{name}");
        assert_eq!(sweep.calls(), 2);

        for c in [&dead1, &dead2] {
            let got = store.get_call(&c.id).await.unwrap();
            assert_eq!(
                (got.status, got.ended_reason.as_deref()),
                (CallStatus::Ended, Some(INSTANCE_LOST)),
                "{name}: {got:?}"
            );
            let ended_at = got.ended_at.expect("ended_at");
            assert!((before..=after).contains(&ended_at), "{name}: {got:?}");
            assert_eq!(
                got.duration_ms,
                Some(ended_at - c.started_at),
                "{name}: {got:?}"
            );
        }
        // A call of the lost instance that had ended keeps its record.
        assert_eq!(
            store.get_call(&dead_done.id).await.unwrap(),
            done_before,
            "{name}"
        );
        for c in [&live, &mine, &unregistered, &nowhere] {
            assert_eq!(
                status(&store, c).await,
                (CallStatus::InProgress, None),
                "{name}: {:?}",
                c.instance
            );
        }
        assert_eq!(
            ids(store.instances().await.unwrap()),
            vec!["live", "own"],
            "{name}"
        );

        // Again: nothing more to do, and the ended records are not touched.
        let first = store.get_call(&dead1.id).await.unwrap();
        assert_eq!(
            store
                .end_calls_of_lost_instances("own", LEASE_MS, INSTANCE_LOST)
                .await
                .unwrap(),
            Sweep::default(),
            "{name}"
        );
        assert_eq!(store.get_call(&dead1.id).await.unwrap(), first, "{name}");

        // A sweeper never sweeps itself, however late its own row looks.
        age(&db, "own", 10 * LEASE_MS).await;
        assert_eq!(
            store
                .end_calls_of_lost_instances("own", LEASE_MS, INSTANCE_LOST)
                .await
                .unwrap(),
            Sweep::default(),
            "{name}"
        );
        assert_eq!(
            status(&store, &mine).await,
            (CallStatus::InProgress, None),
            "{name}"
        );
        // ...but another instance does.
        let sweep = store
            .end_calls_of_lost_instances("live", LEASE_MS, INSTANCE_LOST)
            .await
            .unwrap();
        assert_eq!(
            (sweep.ended, sweep.removed),
            (vec![("own".to_string(), 1)], vec!["own".to_string()]),
            "{name}"
        );
        assert_eq!(
            status(&store, &live).await,
            (CallStatus::InProgress, None),
            "{name}"
        );
        assert_eq!(
            status(&store, &unregistered).await,
            (CallStatus::InProgress, None),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_lost_instance_without_calls_loses_its_row() {
    for db in TestDb::all().await {
        let store = db.store().await;
        store.register_instance("own").await.unwrap();
        store.register_instance("idle").await.unwrap();
        age(&db, "idle", 2 * LEASE_MS).await;
        let sweep = store
            .end_calls_of_lost_instances("own", LEASE_MS, INSTANCE_LOST)
            .await
            .unwrap();
        assert_eq!(
            (sweep.calls(), sweep.removed),
            (0, vec!["idle".to_string()]),
            "{}",
            db.name
        );
        assert_eq!(
            ids(store.instances().await.unwrap()),
            vec!["own"],
            "{}",
            db.name
        );
    }
}

/// Two instances sweep the same lost instance at the same moment, each through its
/// own pool (as two processes would): every call is ended exactly once.
#[tokio::test]
async fn two_sweeps_at_once_end_each_call_once() {
    for db in TestDb::all().await {
        let name = db.name;
        let store = db.store().await;
        let other = Store::connect(&db.url, &Default::default()).await.unwrap();
        for id in ["b", "c", "dead"] {
            store.register_instance(id).await.unwrap();
        }
        let mut calls = Vec::new();
        for _ in 0..40 {
            calls.push(call_on(&store, Some("dead")).await);
        }
        age(&db, "dead", 2 * LEASE_MS).await;
        for round in 0..3 {
            let (x, y) = tokio::join!(
                store.end_calls_of_lost_instances("b", LEASE_MS, INSTANCE_LOST),
                other.end_calls_of_lost_instances("c", LEASE_MS, INSTANCE_LOST),
            );
            let (x, y) = (x.unwrap(), y.unwrap());
            let want = if round == 0 { 40 } else { 0 };
            assert_eq!(
                x.calls() + y.calls(),
                want,
                "{name} round {round}: {x:?} {y:?}"
            );
            if round == 0 {
                assert_eq!(
                    x.removed.len() + y.removed.len(),
                    1,
                    "{name}: the row is removed once: {x:?} {y:?}"
                );
            }
        }
        for c in &calls {
            assert_eq!(
                status(&store, c).await,
                (CallStatus::Ended, Some(INSTANCE_LOST.to_string())),
                "{name}"
            );
        }
        assert_eq!(
            ids(store.instances().await.unwrap()),
            vec!["b", "c"],
            "{name}"
        );
        other.close().await;
    }
}
