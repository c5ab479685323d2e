//! `voxgate call` against the real server: the real binary streams an espeak-ng WAV
//! into `/agent`, prints the events, writes the reply audio; the VAD, endpointing,
//! pacing and call record are the real ones, only the models are scripted. Then the
//! ways a call can fail before it starts, each with a clear message.

mod common;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, espeak};
use serde_json::{Value, json};
use voxgate_server::call::{self, CallArgs};
use voxgate_server::config::Target;
use voxgate_server::session::providers::Providers;
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_testkit::TestDb;

const HEARD: &str = "what time is it";
const ANSWER: &str = "It is noon. Anything else?";
const MS_PER_CHAR: u32 = 20;

fn providers() -> Providers {
    Providers {
        stt: Arc::new(ScriptedStt::new([HEARD], Duration::from_millis(30))),
        llm: Arc::new(ScriptedLlm::new([ScriptedLlm::words(ANSWER, Duration::from_millis(10))])),
        tts: Arc::new(ToneTts { rate: 24_000, ms_per_char: MS_PER_CHAR, chunk_ms: 40, first_delay: Duration::from_millis(20) }),
        tools: None,
    }
}

async fn server() -> (TestServer, String) {
    let s = TestServer::start_with_providers(TestDb::chosen().await, providers(), |_| {}).await;
    let id = s.create_assistant(json!({"name": "Clock", "firstMessageMode": "user-speaks-first", "firstMessage": null})).await;
    (s, id)
}

async fn voxgate(args: &[&str]) -> Output {
    common::run_voxgate(args, Duration::from_secs(60)).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wav_call_prints_every_event_and_saves_the_reply() {
    let (mut s, id) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("question.wav");
    espeak(&wav, HEARD);
    let reply = dir.path().join("reply.wav");
    let o = voxgate(&[
        "call", "--url", &s.url, "--key", &s.admin, "--assistant", &id,
        "--wav", wav.to_str().unwrap(), "--speed", "4", "--wait", "2", "--json",
        "--out", reply.to_str().unwrap(),
    ])
    .await;
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}", o.status);

    // Every line is JSON: the server's events, then the summary.
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let (summary, events) = lines.split_last().expect("some output");
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["ok"], true);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let pos = |t: &str| types.iter().position(|x| *x == t).unwrap_or_else(|| panic!("no {t} in {types:?}"));
    assert_eq!(pos("call-started"), 0, "{types:?}");
    assert!(pos("call-started") < pos("speech-started"));
    assert!(pos("speech-started") < pos("bot-speech-started"));
    assert!(pos("bot-speech-started") < pos("bot-speech-stopped"));
    assert!(types.contains(&"latency"), "{types:?}");
    assert_eq!(types.last(), Some(&"call-ended"));
    assert_eq!(events.last().unwrap()["reason"], "customer-ended-call");
    let user = events.iter().find(|e| e["type"] == "transcript" && e["role"] == "user" && e["final"] == true).expect("the caller's transcript");
    assert_eq!(user["text"], HEARD);
    let said: Vec<&str> = events.iter().filter(|e| e["type"] == "transcript" && e["role"] == "assistant").map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(said.join(" "), ANSWER);
    let call_id = events[0]["callId"].as_str().unwrap();
    assert_eq!(summary["callId"], call_id);
    assert_eq!(summary["endedReason"], "customer-ended-call");
    assert_eq!(summary["closeCode"], 1000);

    // The reply: the tone, 20 ms a character (spaces between sentences are not spoken).
    let audio = voxgate_audio::wav::read_wav_file(&reply).expect("reply.wav is a WAV");
    assert_eq!(audio.rate, 16_000, "the default --output-rate");
    let expected_ms = ANSWER.split(". ").map(|s| s.len() as u64 + 1).sum::<u64>().saturating_sub(1) * u64::from(MS_PER_CHAR);
    let got_ms = audio.samples.len() as u64 * 1000 / 16_000;
    assert!(got_ms + 60 >= expected_ms && got_ms <= expected_ms + 100, "{got_ms} ms of reply for about {expected_ms} ms");
    assert!(voxgate_audio::pcm::rms(&audio.samples) > 0.05, "the reply is the tone, not silence");
    assert_eq!(summary["replyAudioMs"], got_ms);

    // The record: both turns.
    let mut record = Value::Null;
    for _ in 0..100 {
        record = TestServer::http().get(s.at(&format!("/api/calls/{call_id}"))).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
        if record["status"] == "ended" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(record["endedReason"], "customer-ended-call");
    let turns = record["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!((turns[0]["role"].as_str(), turns[0]["text"].as_str()), (Some("user"), Some(HEARD)));
    assert_eq!((turns[1]["role"].as_str(), turns[1]["text"].as_str()), (Some("assistant"), Some(ANSWER)));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_text_in_process_prints_a_readable_transcript() {
    let (mut s, id) = server().await;
    let args = CallArgs {
        target: Target { url: s.url.replacen("http", "ws", 1), key: Some(s.admin.clone()), assistant: id },
        wav: None,
        speed: 1.0,
        wait: 1.0,
        text: Some("hello there".into()),
        out: None,
        output_rate: 24_000,
        json: false,
    };
    let mut out = Vec::new();
    let outcome = call::run_with(args, &mut out).await.unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert_eq!(outcome.problem(), None, "{printed}");
    assert_eq!(outcome.ended_reason.as_deref(), Some("customer-ended-call"));
    assert_eq!(outcome.output_rate, 24_000);
    assert!(printed.contains("caller (typed): hello there"), "{printed}");
    // The assistant's words as played, a sentence at a time.
    assert!(printed.contains("assistant: It is noon.") && printed.contains("assistant: Anything else?"), "{printed}");
    assert!(printed.contains("voice-to-voice"), "{printed}");
    assert!(printed.contains("call ended: customer-ended-call"), "{printed}");
    assert_eq!(outcome.latencies.len(), 1, "{printed}");
    assert!(outcome.reply_ms() >= 400, "{printed}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_exit_non_zero_with_the_servers_message() {
    let (mut s, id) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("q.wav");
    espeak(&wav, "hi");
    let w = wav.to_str().unwrap();

    // A bad key: 401 and the server's message.
    let o = voxgate(&["call", "--url", &s.url, "--key", "vg_not_a_real_key", "--assistant", &id, "--wav", w]).await;
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("refused the call: HTTP 401 Unauthorized: ") && err.contains("(unauthorized)"), "{err}");
    assert!(o.stdout.is_empty(), "nothing on stdout: {}", text(&o.stdout));
    // The key through VOXGATE_KEY works the same as --key; here, no key at all.
    let o = voxgate(&["call", "--url", &s.url, "--assistant", &id, "--wav", w]).await;
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("HTTP 401"), "{}", text(&o.stderr));

    // An unknown assistant: 404 and its message.
    let o = voxgate(&["call", "--url", &s.url, "--key", &s.admin, "--assistant", "01NOSUCHASSISTANT0000000000", "--wav", w]).await;
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("refused the call: HTTP 404 Not Found: assistant not found"), "{err}");

    // Nothing listening.
    let o = voxgate(&["call", "--url", "http://127.0.0.1:1", "--key", &s.admin, "--assistant", &id, "--wav", w]).await;
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("cannot connect to ws://127.0.0.1:1/agent"), "{}", text(&o.stderr));
    s.stop().await;
}

#[tokio::test]
async fn bad_input_files_are_named_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1: if the client tried to connect, the error would be about that instead.
    let url = "http://127.0.0.1:1";

    let missing = dir.path().join("nowhere.wav");
    let o = voxgate(&["call", "--url", url, "--key", "k", "--assistant", "a", "--wav", missing.to_str().unwrap()]).await;
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("nowhere.wav") && err.contains("No such file"), "{err}");

    let garbage = dir.path().join("garbage.wav");
    std::fs::write(&garbage, b"this is not a RIFF file at all, just text").unwrap();
    let o = voxgate(&["call", "--url", url, "--key", "k", "--assistant", "a", "--wav", garbage.to_str().unwrap()]).await;
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("garbage.wav is not a WAV file voxgate can read: invalid WAV"), "{err}");

    // A WAV cut short after its header.
    let short = dir.path().join("short.wav");
    espeak(&short, "hello");
    let bytes = std::fs::read(&short).unwrap();
    std::fs::write(&short, &bytes[..20]).unwrap();
    let o = voxgate(&["call", "--url", url, "--key", "k", "--assistant", "a", "--wav", short.to_str().unwrap()]).await;
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("short.wav"), "{}", text(&o.stderr));

    // Flags out of range.
    let o = voxgate(&["call", "--url", url, "--assistant", "a", "--speed", "-1"]).await;
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--speed"), "{}", text(&o.stderr));
    let o = voxgate(&["call", "--url", url, "--assistant", "a", "--output-rate", "44100"]).await;
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("44100"), "{}", text(&o.stderr));
    let o = voxgate(&["call", "--url", "ftp://x", "--assistant", "a"]).await;
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("unsupported scheme"), "{}", text(&o.stderr));
}
