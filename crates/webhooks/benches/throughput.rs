//! Throughput of the outbox and the delivery loop against a local receiver, and the
//! cost of signing. Prints plain numbers. SQLite always; PostgreSQL too when
//! `VOXGATE_TEST_POSTGRES_URL` is set.
//!
//! `CARGO_TARGET_DIR=/work/targets/webhooks cargo bench -p voxgate-webhooks --bench throughput`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Mode, Receiver, SECRET};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use voxgate_testkit::TestDb;
use voxgate_webhooks::{Event, Options, Webhooks, kinds, sign, verify};

const EVENTS: usize = 2000;

#[tokio::main]
async fn main() {
    let body = json!({ "transcript": "x".repeat(2000) }).to_string();
    let n = 20_000;
    let t = Instant::now();
    let mut last = String::new();
    for i in 0..n {
        last = sign(SECRET.as_bytes(), 1_733_000_000 + i, body.as_bytes());
    }
    println!("sign, 2 KB body: {:.2} us per signature", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        verify(SECRET.as_bytes(), Some(&last), body.as_bytes(), 1_733_000_000 + n - 1, 300).unwrap();
    }
    println!("verify, 2 KB body: {:.2} us per check", t.elapsed().as_secs_f64() * 1e6 / n as f64);

    let rx = Receiver::start(Mode::Ok).await;
    for db in TestDb::all().await {
        let store = db.store().await;
        let opts = Options { poll_interval: Duration::from_millis(100), ..Options::default() };
        let w = Webhooks::new(store.clone(), SECRET, opts.clone()).unwrap();
        let event = |i: usize| Event::new(kinds::TRANSCRIPT, Some("call"), Some("asst"), &rx.url(), json!({ "transcript": format!("turn {i} {}", "w".repeat(300)) }));

        // Enqueue alone (no worker): one durable insert per event.
        let t = Instant::now();
        for i in 0..EVENTS {
            w.enqueue(event(i)).await.unwrap();
        }
        let enq = t.elapsed();
        println!(
            "{}: enqueue {EVENTS} events: {:.0} events/s, {:.3} ms each",
            db.name,
            EVENTS as f64 / enq.as_secs_f64(),
            enq.as_secs_f64() * 1e3 / EVENTS as f64
        );

        // Drain the backlog: claim, sign, POST, mark delivered.
        let stop = CancellationToken::new();
        let t = Instant::now();
        let run = tokio::spawn(w.clone().run(stop.clone()));
        while store.count_pending_webhooks().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drain = t.elapsed();
        println!(
            "{}: deliver a backlog of {EVENTS} (concurrency {}, batch {}): {:.0} events/s",
            db.name,
            opts.concurrency,
            opts.batch_size,
            EVENTS as f64 / drain.as_secs_f64()
        );

        // Latency with the worker idle: enqueue one, wait until the receiver has it.
        let mut lat = Vec::new();
        for i in 0..50 {
            let before = rx.seen().len();
            let t = Instant::now();
            w.enqueue(event(i)).await.unwrap();
            while rx.seen().len() == before {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lat.sort_by(f64::total_cmp);
        println!("{}: enqueue to receiver, idle worker: p50 {:.2} ms, p95 {:.2} ms (50 events)", db.name, lat[25], lat[47]);
        stop.cancel();
        run.await.unwrap();
    }
}
