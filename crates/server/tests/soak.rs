//! A short soak (issue 9; the long one is `bench/soak.sh`): the real binary runs
//! 200 calls, 20 at a time, through `voxgate bench` with scripted providers; after
//! they end, the server's open file descriptors and live tokio tasks are back to
//! exactly what they were before, and its memory to within a stated bound. A call
//! that leaked a task, a socket or a file would show here.

mod common;
#[path = "common/load.rs"]
mod load;
#[path = "common/procs.rs"]
mod procs;

use std::time::{Duration, Instant};

use procs::{Served, store_with_key};
use voxgate_server::config::{BenchArgs, Cli, Command};

fn bench_args(args: &[&str]) -> BenchArgs {
    use clap::Parser;
    let argv = ["voxgate", "bench"].into_iter().chain(args.iter().copied());
    match Cli::parse_from(argv).command {
        Command::Bench(a) => a,
        other => panic!("parsed {other:?}"),
    }
}

/// The server's open files and live tasks, once both have stopped changing for a
/// moment (a closed connection's task and socket go a little after the client's).
async fn settled(pid: u32, url: &str, key: &str) -> (usize, f64) {
    let mut last = (0, -1.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = (
            load::open_fds(pid),
            load::gauge(url, key, "voxgate_runtime_alive_tasks").await,
        );
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_leave_no_task_no_descriptor_and_no_memory_behind() {
    load::raise_fd_limit(2000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("voxgate.db").display());
    let (_store, key) = store_with_key(&url).await;
    let env: Vec<(&str, String)> = [
        ("RATE_LIMIT_CALLS", "off"),
        ("RATE_LIMIT_CALLS_IP", "off"),
        ("RATE_LIMIT_API", "off"),
        ("RATE_LIMIT_API_IP", "off"),
        ("LOG_LEVEL", "warn"),
        // A pool of a fixed size: its connections (three files each with SQLite) are
        // all open from the start, so the count of files does not depend on how
        // many the load happened to need.
        ("DB_MIN_CONNECTIONS", "4"),
        ("DB_MAX_CONNECTIONS", "4"),
    ]
    .iter()
    .map(|(k, v)| (*k, v.to_string()))
    .collect();
    let srv = Served::start(&url, dir.path(), &env).await;
    let pid = srv.pid();
    let res = common::TestServer::http()
        .post(format!("{}/api/assistants", srv.url))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "soak", "firstMessageMode": "user-speaks-first", "firstMessage": null, "endpointing": {"silenceMs": 200}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let assistant = res.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wav = dir.path().join("hello.wav");
    common::espeak(&wav, "hello");
    let wav = wav.to_str().unwrap().to_string();
    let run = |total: usize| {
        let args = bench_args(&[
            "--url",
            &srv.url,
            "--key",
            &key,
            "--assistant",
            &assistant,
            "--wav",
            &wav,
            "--silence-ms",
            "200",
            "--gap-ms",
            "100",
            "--turns",
            "1",
            "--calls",
            "20",
            "--total",
            &total.to_string(),
            "--server-pid",
            &pid.to_string(),
        ]);
        async move {
            let mut out = Vec::new();
            let report = voxgate_server::bench::run_with(args, &mut out)
                .await
                .expect("the bench runs");
            (report, String::from_utf8(out).unwrap())
        }
    };

    // Warm-up at the same concurrency: pools, caches and the allocator's arenas
    // reach their working size; then the baseline.
    let (warm, table) = run(40).await;
    assert_eq!(warm.problem(), None, "{table}");
    let (fds_before, tasks_before) = settled(pid, &srv.url, &key).await;
    let rss_before = load::rss_kib(pid);

    let started = Instant::now();
    let (report, table) = run(200).await;
    println!("{table}");
    assert_eq!(report.problem(), None, "{table}");
    assert_eq!(
        (report.calls, report.ended_normally, report.turns_ok),
        (200, 200, 200)
    );
    let usage = report.server.as_ref().expect("the server's usage");
    assert_eq!(usage.max_live, 20);

    let (fds_after, tasks_after) = settled(pid, &srv.url, &key).await;
    let rss_after = load::rss_kib(pid);
    println!(
        "soak: 200 calls in {:?}; fds {fds_before} -> {fds_after}, tasks {tasks_before} -> {tasks_after}, RSS {rss_before} -> {rss_after} KiB (peak {} KiB)",
        started.elapsed(),
        usage.rss_peak_kib
    );
    assert_eq!(
        fds_after, fds_before,
        "open file descriptors after the calls"
    );
    assert_eq!(
        tasks_after, tasks_before,
        "live tokio tasks after the calls"
    );
    // Freed memory is not all given back to the system at once (the allocator keeps
    // some for the next calls): within 10 % of the baseline, as the issue asks.
    assert!(
        rss_after * 10 <= rss_before * 11,
        "RSS {rss_after} KiB after the calls, {rss_before} KiB before (more than 10 % up)"
    );
    srv.stop().await;
}
