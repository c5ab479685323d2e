//! Spoken calls with the local offline models, end to end: espeak-ng speaks a
//! question into a WAV, the real `voxgate call` binary streams it into a real
//! server whose calls run Whisper, SmolLM2 and Piper from the models folder
//! (`voxgate models fetch`), and the reply audio is transcribed again to check that
//! it is speech that answers the question.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{TestServer, espeak};
use serde_json::{Value, json};
use voxgate_providers::local::LocalOptions;
use voxgate_server::session::Local;
use voxgate_testkit::TestDb;

/// The spoken questions: the words the caller's transcript must hold, and the
/// answers (any one of them) the assistant's spoken reply must hold.
const QUESTIONS: &[(&str, &[&str], &[&str])] = &[
    ("What is the capital of France?", &["capital", "france"], &["paris"]),
    ("How many days are there in a week?", &["days", "week"], &["seven", "7"]),
    ("What is the capital of Italy?", &["capital", "italy"], &["rome"]),
];

async fn server() -> (TestServer, String) {
    let dir = voxgate_models::dir();
    voxgate_models::check(&dir, voxgate_models::PACKAGES).unwrap_or_else(|e| panic!("{e}"));
    let local = Arc::new(Local::start_loading(voxgate_models::Paths::new(&dir), LocalOptions::default()));
    local.ready().await.expect("the local models load");
    let s = TestServer::start_with_factory(TestDb::chosen().await, local, |_| {}).await;
    let id = s
        .create_assistant(json!({
            "name": "Offline helper",
            "systemPrompt": "You are a helpful voice assistant. Answer the question in one short sentence.",
            "firstMessageMode": "user-speaks-first",
            "firstMessage": null,
            "model": {"temperature": 0.0, "maxTokens": 60}
        }))
        .await;
    (s, id)
}

/// Whisper, loaded once per test process, to hear the replies.
fn whisper() -> &'static voxgate_whisper::Whisper {
    static W: OnceLock<voxgate_whisper::Whisper> = OnceLock::new();
    W.get_or_init(|| voxgate_whisper::Whisper::load(&voxgate_models::Paths::new(&voxgate_models::dir()).whisper).expect("Whisper loads"))
}

async fn voxgate(args: &[&str]) -> Output {
    common::run_voxgate(args, Duration::from_secs(120)).await
}

/// What one spoken call gave: the events printed, and the reply audio.
struct Spoken {
    events: Vec<Value>,
    reply: voxgate_audio::wav::WavAudio,
}

async fn ask(s: &TestServer, assistant: &str, question: &str, dir: &Path, name: &str) -> Spoken {
    let wav = dir.join(format!("{name}-question.wav"));
    espeak(&wav, question);
    let reply = dir.join(format!("{name}-reply.wav"));
    let o = voxgate(&[
        "call", "--url", &s.url, "--key", &s.admin, "--assistant", assistant,
        // Quiet for 8 s before hanging up: on a loaded 2-core machine the first
        // event of the reply can come seconds after the question ends.
        "--wav", wav.to_str().unwrap(), "--wait", "8", "--json",
        "--out", reply.to_str().unwrap(),
    ])
    .await;
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{question}: exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}", o.status);
    let events: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let reply = voxgate_audio::wav::read_wav_file(&reply).expect("the reply is a WAV");
    Spoken { events, reply }
}

fn final_user_transcript(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "transcript" && e["role"] == "user" && e["final"] == true)
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn said(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "transcript" && e["role"] == "assistant")
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reply is speech: long enough, loud enough, and Whisper hears words in it.
fn heard_in_reply(reply: &voxgate_audio::wav::WavAudio, context: &str) -> String {
    let seconds = reply.samples.len() as f64 / f64::from(reply.rate);
    assert!(seconds > 0.5, "{context}: only {seconds:.2} s of reply audio");
    let rms = voxgate_audio::pcm::rms(&reply.samples);
    assert!(rms > 0.02, "{context}: the reply is near silence (rms {rms})");
    let mut at_16k = Vec::new();
    let mut r = voxgate_audio::resample::Resampler::with_rates(reply.rate, 16_000).unwrap();
    r.process(&reply.samples, &mut at_16k);
    r.flush(&mut at_16k);
    let pcm: Vec<f32> = at_16k.iter().map(|&s| f32::from(s) / 32768.0).collect();
    let heard = whisper().transcribe(&pcm).expect("the reply transcribes").to_lowercase();
    assert!(heard.split_whitespace().count() >= 2, "{context}: Whisper hears no words in the reply: {heard:?}");
    heard
}

fn holds_any(text: &str, words: &[&str]) -> bool {
    let text = text.to_lowercase();
    words.iter().any(|w| text.contains(w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoken_questions_get_spoken_answers_from_the_local_models() {
    let (mut s, id) = server().await;
    let dir = tempfile::tempdir().unwrap();
    for (i, (question, key_words, answers)) in QUESTIONS.iter().enumerate() {
        let spoken = ask(&s, &id, question, dir.path(), &format!("q{i}")).await;
        let heard = final_user_transcript(&spoken.events).to_lowercase();
        for w in *key_words {
            assert!(heard.contains(w), "{question}: the transcript {heard:?} lacks {w:?}");
        }
        let text = said(&spoken.events);
        assert!(holds_any(&text, answers), "{question}: the assistant said {text:?}, not one of {answers:?}");
        let in_audio = heard_in_reply(&spoken.reply, question);
        assert!(holds_any(&in_audio, answers), "{question}: the reply audio says {in_audio:?}, not one of {answers:?}");

        let latency = spoken.events.iter().find(|e| e["type"] == "latency").unwrap_or_else(|| panic!("{question}: no latency event"));
        for stage in ["sttMs", "llmFirstTokenMs", "ttsFirstAudioMs", "voiceToVoiceMs"] {
            assert!(latency[stage].as_f64().is_some_and(|ms| ms > 0.0), "{question}: {stage} missing in {latency}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_spoken_calls_both_complete() {
    let (mut s, id) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tokio::join!(
        ask(&s, &id, QUESTIONS[0].0, dir.path(), "a"),
        ask(&s, &id, QUESTIONS[1].0, dir.path(), "b"),
    );
    for (spoken, (question, key_words, _)) in [(a, QUESTIONS[0]), (b, QUESTIONS[1])] {
        let heard = final_user_transcript(&spoken.events).to_lowercase();
        assert!(key_words.iter().all(|w| heard.contains(w)), "{question}: transcript {heard:?}");
        assert!(!said(&spoken.events).trim().is_empty(), "{question}: the assistant said nothing");
        heard_in_reply(&spoken.reply, question);
        assert_eq!(spoken.events.last().unwrap()["type"], "summary");
        assert_eq!(spoken.events.last().unwrap()["ok"], true, "{question}: {}", spoken.events.last().unwrap());
    }
    s.stop().await;
}
