//! Spoken calls through the real server: espeak-ng speaks the caller's words into
//! the real `/agent` socket in real time; the VAD, endpointing, the paced output and
//! the call record are the real ones; only the models are scripted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, pcm_bytes, speech};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxgate_server::session::providers::Providers;
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_testkit::TestDb;


/// Streams `samples` in 20 ms messages, in real time.
async fn stream_audio<S>(tx: &mut S, samples: &[i16])
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for chunk in samples.chunks(320) {
        tick.tick().await;
        tx.send(Message::Binary(pcm_bytes(chunk).into())).await.unwrap();
    }
}

async fn assistant(s: &TestServer, body: Value) -> String {
    let res = TestServer::http().post(s.at("/api/assistants")).bearer_auth(&s.admin).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_question_gets_a_spoken_answer_and_a_record() {
    let providers = Providers {
        stt: Arc::new(ScriptedStt::new(["what time is it"], Duration::from_millis(30))),
        llm: Arc::new(ScriptedLlm::new([ScriptedLlm::words("It is noon. Anything else?", Duration::from_millis(10))])),
        tts: Arc::new(ToneTts { rate: 24_000, ms_per_char: 20, chunk_ms: 40, first_delay: Duration::from_millis(20) }),
        tools: None,
    };
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers, |_| {}).await;
    let id = assistant(&s, json!({"name": "Clock", "firstMessageMode": "user-speaks-first", "firstMessage": null})).await;
    let mut req = s.ws_url(&format!("assistantId={id}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.admin).parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::Text(common::START.into())).await.unwrap();

    // Read everything the server sends until the call ends.
    let reader = tokio::spawn(async move {
        let mut events: Vec<Value> = Vec::new();
        let mut audio_frames = 0usize;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), rx.next()).await {
            match m {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    let done = v["type"] == "call-ended";
                    events.push(v);
                    if done {
                        break;
                    }
                }
                Message::Binary(b) => {
                    assert_eq!(b.len(), 640, "20 ms of PCM16 at 16 kHz per message");
                    audio_frames += 1;
                }
                _ => {}
            }
        }
        (events, audio_frames)
    });

    // The caller: a breath of silence, the question, then silence while the answer plays.
    let mut audio = vec![0i16; 16_000 * 3 / 10];
    audio.extend(speech("what time is it"));
    audio.extend(vec![0i16; 16_000 * 3]);
    stream_audio(&mut tx, &audio).await;
    tx.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    let (events, audio_frames) = reader.await.unwrap();

    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let pos = |t: &str| types.iter().position(|x| *x == t).unwrap_or_else(|| panic!("no {t} in {types:?}"));
    assert!(pos("call-started") < pos("speech-started"));
    assert!(pos("speech-started") < pos("speech-stopped"));
    assert!(pos("speech-stopped") < pos("bot-speech-started"));
    assert!(pos("bot-speech-started") < pos("bot-speech-stopped"));
    assert_eq!(types.last(), Some(&"call-ended"));
    assert_eq!(events.last().unwrap()["reason"], "customer-ended-call");
    let user = events.iter().find(|e| e["type"] == "transcript" && e["role"] == "user").expect("the caller's transcript");
    assert_eq!((user["text"].as_str(), user["final"].as_bool()), (Some("what time is it"), Some(true)));
    let said: Vec<&str> = events.iter().filter(|e| e["type"] == "transcript" && e["role"] == "assistant").map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(said.join(" "), "It is noon. Anything else?");
    let latency = events.iter().find(|e| e["type"] == "latency").expect("a latency event");
    for k in ["endpointingMs", "sttMs", "llmFirstTokenMs", "ttsFirstAudioMs", "voiceToVoiceMs"] {
        assert!(latency[k].is_u64(), "{k} missing in {latency}");
    }
    // The tone lasts 20 ms a character: the whole answer was played, in 20 ms frames.
    let expected = "It is noon.".len() * 20 / 20 + "Anything else?".len() * 20 / 20;
    assert!((expected - 2..=expected + 4).contains(&audio_frames), "{audio_frames} frames for {expected}");

    // The record: both turns, the answer as played, the latency breakdown.
    let mut call = Value::Null;
    for _ in 0..100 {
        call = TestServer::http().get(s.at(&format!("/api/calls/{}", events[0]["callId"].as_str().unwrap()))).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
        if call["status"] == "ended" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(call["endedReason"], "customer-ended-call");
    let turns = call["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!((turns[0]["role"].as_str(), turns[0]["text"].as_str()), (Some("user"), Some("what time is it")));
    assert_eq!((turns[1]["role"].as_str(), turns[1]["text"].as_str()), (Some("assistant"), Some("It is noon. Anything else?")));
    assert_eq!(turns[1]["interrupted"], false);
    let l = &turns[1]["latency"];
    let v2v = l["voiceToVoiceMs"].as_f64().unwrap();
    let endpointing = l["endpointingMs"].as_f64().unwrap();
    // The assistant's 500 ms of silence is inside endpointing, and endpointing, STT
    // (30 ms scripted) and the first audio are inside voice-to-voice.
    assert!(endpointing >= 500.0, "endpointing {endpointing} ms");
    assert!(v2v >= endpointing + 30.0, "voice-to-voice {v2v} ms, endpointing {endpointing} ms");
    s.stop().await;
}
