//! `voxgate bench` against the real server: concurrent calls through the real
//! protocol, VAD, endpointing, pipeline and pacing, with instant scripted models;
//! the report counts every turn and holds plausible latencies. Then a wrong key,
//! which must fail clearly, not hang or report zeros as a success.

mod common;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::{TestServer, espeak};
use serde_json::{Value, json};
use voxgate_server::bench::{self, BenchArgs, DERIVED_RESPONSE};
use voxgate_server::config::{Cli, Command};
use voxgate_server::session::providers::{Providers, Scripted};
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_testkit::TestDb;

/// Instant models with a short reply (10 ms of tone a character), to keep the test fast.
fn providers() -> Providers {
    Providers {
        stt: Arc::new(ScriptedStt::repeating(Scripted::HEARD, Duration::ZERO)),
        llm: Arc::new(ScriptedLlm::repeating(ScriptedLlm::words(Scripted::REPLY, Duration::ZERO))),
        tts: Arc::new(ToneTts { ms_per_char: 10, ..ToneTts::default() }),
        tools: None,
    }
}

async fn server() -> (TestServer, String) {
    let s = TestServer::start_with_providers(TestDb::chosen().await, providers(), |_| {}).await;
    let id = s.create_assistant(json!({"name": "Bench", "firstMessageMode": "user-speaks-first", "endpointing": {"silenceMs": 500}})).await;
    (s, id)
}

fn bench_args(args: &[&str]) -> BenchArgs {
    let argv = ["voxgate", "bench"].into_iter().chain(args.iter().copied());
    match Cli::parse_from(argv).command {
        Command::Bench(a) => a,
        other => panic!("parsed {other:?}"),
    }
}

async fn voxgate(args: &[&str]) -> Output {
    common::run_voxgate(args, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_calls_of_two_turns_are_measured() {
    let (mut s, id) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("phrase.wav");
    espeak(&wav, "hello there");
    let pid = std::process::id().to_string();
    let args = bench_args(&[
        "--url", &s.url, "--key", &s.admin, "--assistant", &id, "--calls", "3", "--turns", "2",
        "--ramp", "0.2", "--gap-ms", "200", "--wav", wav.to_str().unwrap(), "--server-pid", &pid, "--json",
    ]);
    let mut out = Vec::new();
    let report = tokio::time::timeout(Duration::from_secs(60), bench::run_with(args, &mut out)).await.expect("the bench finishes").expect("the bench runs");

    assert_eq!(report.problem(), None, "{report:#?}");
    assert_eq!((report.connected, report.connect_failed, report.ended_normally), (3, 0, 3));
    assert_eq!((report.turns_ok, report.turns_failed), (6, 0));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.silence_ms, 500, "read from the assistant");
    let overhead = report.overhead_ms.expect("overhead measured");
    assert_eq!(overhead.n, 6);
    assert!(overhead.p50 > 0.0 && overhead.max < 2000.0, "{overhead:?}");
    for field in ["endpointingMs", "voiceToVoiceMs", DERIVED_RESPONSE] {
        let st = report.server_latency_ms.get(field).unwrap_or_else(|| panic!("no {field} in {:?}", report.server_latency_ms));
        assert_eq!(st.n, 6, "{field}");
    }
    let response = report.server_latency_ms[DERIVED_RESPONSE];
    assert!(response.p50 >= 0.0 && response.max < 2000.0, "{response:?}");
    let jitter = report.jitter_ms.expect("reply frames timed");
    assert!(jitter.n >= 6 * 10 && jitter.p50 < 20.0, "{jitter:?}");
    let server = report.server.clone().expect("the server's usage (this process)");
    assert!(server.rss_baseline_kib > 0 && server.rss_peak_kib >= server.rss_baseline_kib, "{server:?}");
    assert_eq!(server.max_live, 3);

    // --json prints the same report as one object.
    let printed: Value = serde_json::from_slice(&out).expect("one JSON object");
    assert_eq!(printed["turnsOk"], 6);
    assert_eq!(printed["overheadMs"]["n"], 6);
    assert!(printed["serverLatencyMs"]["endpointingMs"]["p99"].is_number(), "{printed}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_clearly() {
    let (mut s, id) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("phrase.wav");
    espeak(&wav, "hello");
    let wav = wav.to_str().unwrap();

    // The assistant cannot be read: stops before any call, saying which flag to fix.
    let o = voxgate(&["bench", "--url", &s.url, "--key", "vg_sk_wrong", "--assistant", &id, "--calls", "2", "--turns", "1", "--wav", wav]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 401") && stderr.contains("--key"), "{stderr}");

    // Given the silence, it tries the calls: each refused, in the report and the exit status.
    let o = voxgate(&["bench", "--url", &s.url, "--key", "vg_sk_wrong", "--assistant", &id, "--calls", "2", "--turns", "1", "--wav", wav, "--silence-ms", "500"]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("0 connected, 2 failed to connect") && stdout.contains("0 ok, 2 failed"), "{stdout}");
    assert!(stdout.contains("401"), "the refusal is shown: {stdout}");
    assert!(stderr.contains("2 of 2 calls failed to connect") && stderr.contains("401"), "{stderr}");
    s.stop().await;
}

/// The load generator runs on one thread unless told otherwise; zero threads is
/// refused by the parser, and the multi-threaded runtime works as the default does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_count_is_checked_and_honoured() {
    assert_eq!(bench_args(&["--assistant", "a1"]).threads, 1);
    assert_eq!(bench_args(&["--assistant", "a1", "--threads", "3"]).threads, 3);
    for bad in ["0", "257", "-1", "two"] {
        let argv = ["voxgate", "bench", "--assistant", "a1", "--threads", bad];
        assert!(Cli::try_parse_from(argv).is_err(), "--threads {bad} must be refused");
    }

    let (mut s, id) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("phrase.wav");
    espeak(&wav, "hello");
    let wav = wav.to_str().unwrap();
    let o = voxgate(&["bench", "--url", &s.url, "--key", "vg_sk_wrong", "--assistant", &id, "--calls", "2", "--turns", "1", "--wav", wav, "--silence-ms", "500", "--threads", "3"]).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("0 connected, 2 failed to connect"), "{stdout}");
    s.stop().await;
}
