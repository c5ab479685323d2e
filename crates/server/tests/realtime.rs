//! Speech-to-speech calls: an assistant with `realtime` set talks to an OpenAI
//! Realtime session, here the fake one in the test over a real WebSocket. Typed and
//! spoken turns (our VAD ends the turn, the session is committed and asked for a
//! response), the reply's audio and words through the paced output, per-turn
//! latency and the call record, and a barge-in that cancels the response and
//! truncates it at the audio played.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, pcm_bytes, speech};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxgate_fake_openai::Fake;
use voxgate_fake_openai::realtime::tone;
use voxgate_openai::{OpenAi, OpenAiConfig};
use voxgate_server::session::providers::{PerAssistant, Scripted};
use voxgate_testkit::TestDb;

const HEARD: &str = "What is the capital of France?";
const ANSWER: &str = "The capital of France is Paris.";

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn server(fake: &Fake) -> (TestServer, String) {
    let openai = OpenAi::with_own_client(OpenAiConfig { api_key: Some("sk-rt-test".into()), base_url: fake.base.clone(), ..OpenAiConfig::default() }).unwrap();
    let factory = Arc::new(PerAssistant::new(Arc::new(Scripted), Ok(openai)));
    let s = TestServer::start_with_factory(TestDb::chosen().await, factory, |_| {}).await;
    let id = s
        .create_assistant(json!({
            "name": "Realtime",
            "systemPrompt": "Answer in one short sentence.",
            "firstMessageMode": "user-speaks-first",
            "firstMessage": null,
            "model": {"provider": "openai", "maxTokens": 200},
            "realtime": {"model": "gpt-realtime", "voice": "marin"},
        }))
        .await;
    (s, id)
}

async fn open(s: &TestServer, id: &str) -> Ws {
    let mut req = s.ws_url(&format!("assistantId={id}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.admin).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Text(common::START.into())).await.unwrap();
    until(&mut ws, |e| e["type"] == "call-started").await;
    ws
}

/// Events until one matches (counting audio messages); panics if the call ends first.
async fn until(ws: &mut Ws, done: impl Fn(&Value) -> bool) -> (Vec<Value>, usize) {
    let (mut events, mut audio) = (Vec::new(), 0);
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("an event within 20 s") {
            Some(Ok(Message::Text(t))) => {
                let e: Value = serde_json::from_str(&t).unwrap();
                assert!(e["type"] != "call-ended" || done(&e), "the call ended: {events:?} {e}");
                let stop = done(&e);
                events.push(e);
                if stop {
                    return (events, audio);
                }
            }
            Some(Ok(Message::Binary(_))) => audio += 1,
            Some(Ok(_)) => {}
            other => panic!("the socket closed: {other:?} after {events:?}"),
        }
    }
}

fn said(events: &[Value], role: &str) -> String {
    let all: Vec<String> = events.iter().filter(|e| e["type"] == "transcript" && e["role"] == role).map(|e| e["text"].as_str().unwrap().to_string()).collect();
    all.join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The newest call's record, once it is ended (or after 5 s, as it is then).
async fn last_call_ended(s: &TestServer) -> Value {
    let http = TestServer::http();
    let mut call = Value::Null;
    for _ in 0..50 {
        let list: Value = http.get(s.at("/api/calls")).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
        let id = list["items"][0]["id"].as_str().unwrap().to_string();
        call = http.get(s.at(&format!("/api/calls/{id}"))).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
        if call["status"] == "ended" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    call
}

/// Streams `samples` (16 kHz) in real time, 20 ms a message.
async fn stream(ws: &mut Ws, samples: &[i16]) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for chunk in samples.chunks(320) {
        tick.tick().await;
        ws.send(Message::Binary(pcm_bytes(chunk).into())).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_spoken_turns_are_answered_by_the_realtime_model() {
    let fake = Fake::start().await;
    let rt = fake.realtime();
    rt.set(|s| {
        s.transcript = HEARD.into();
        s.reply_text = ANSWER.into();
        s.reply_audio = tone(440.0, 0.6, 8000.0);
    });
    let (mut s, id) = server(&fake).await;
    let mut ws = open(&s, &id).await;

    // The session as configured: our turn detection, the prompt, the voice.
    let update = rt.wait_for("session.update", 1, Duration::from_secs(5)).await.remove(0);
    let session = &update["session"];
    assert_eq!(session["instructions"], "Answer in one short sentence.", "{update}");
    assert!(session.to_string().contains("marin"), "{update}");
    assert!(session["audio"]["input"]["turn_detection"].is_null(), "our turn detection: {update}");
    assert_eq!(rt.connections()[0].model.as_deref(), Some("gpt-realtime"));

    // A typed turn.
    ws.send(Message::Text(json!({"type": "text", "text": "Hello there?"}).to_string().into())).await.unwrap();
    let (events, audio) = until(&mut ws, |e| e["type"] == "bot-speech-stopped").await;
    assert_eq!(said(&events, "assistant"), ANSWER, "{events:?}");
    assert!(audio >= 25, "0.6 s of reply in 20 ms frames, got {audio} messages");
    let typed = rt.events_of("conversation.item.create");
    assert!(typed[0].to_string().contains("Hello there?"), "{typed:?}");
    let (events, _) = until(&mut ws, |e| e["type"] == "latency").await;
    let latency = events.last().unwrap();
    assert!(latency["llmFirstTokenMs"].as_f64().is_some(), "{latency}");

    // A spoken turn: our VAD ends it; the session is committed and asked.
    let mut audio_in = speech("What is the capital of France?");
    audio_in.extend(vec![0i16; 16_000]);
    stream(&mut ws, &audio_in).await;
    let (events, _) = until(&mut ws, |e| e["type"] == "bot-speech-stopped").await;
    assert_eq!(said(&events, "user"), HEARD, "{events:?}");
    assert_eq!(said(&events, "assistant"), ANSWER, "{events:?}");
    assert_eq!(rt.events_of("input_audio_buffer.commit").len(), 1);
    assert_eq!(rt.events_of("response.create").len(), 2, "one response for each turn");
    let appended: usize = rt
        .events_of("input_audio_buffer.append")
        .iter()
        .map(|e| e["audio"].as_str().unwrap().len() * 3 / 4 / 2)
        .sum();
    // The caller's audio at 24 kHz (1.5x the 16 kHz samples), give or take the filter.
    let expected = audio_in.len() * 3 / 2;
    assert!(appended.abs_diff(expected) < 24_000, "appended {appended} samples, expected about {expected}");

    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    until(&mut ws, |e| e["type"] == "call-ended").await;

    // The record: both turns of each side, the model's time on the assistant's turns.
    let call = last_call_ended(&s).await;
    let turns: Vec<(String, String)> = call["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["role"].as_str().unwrap().to_string(), t["text"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(String, String)> =
        [("user", "Hello there?"), ("assistant", ANSWER), ("user", HEARD), ("assistant", ANSWER)].iter().map(|(r, t)| (r.to_string(), t.to_string())).collect();
    assert_eq!(turns, expected, "{call}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barge_in_cancels_the_response_and_truncates_it_at_the_audio_played() {
    let fake = Fake::start().await;
    let rt = fake.realtime();
    rt.set(|s| {
        s.transcript = "stop please".into();
        s.reply_text = "Here is a very long answer that goes on and on for many seconds.".into();
        // Five seconds of reply, sent faster than real time.
        s.reply_audio = tone(440.0, 5.0, 8000.0);
        s.chunk_pause = Duration::from_millis(2);
    });
    let (mut s, id) = server(&fake).await;
    let mut ws = open(&s, &id).await;

    ws.send(Message::Text(json!({"type": "text", "text": "Tell me a story."}).to_string().into())).await.unwrap();
    until(&mut ws, |e| e["type"] == "bot-speech-started").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The caller talks over it.
    let mut audio_in = speech("stop please, stop");
    audio_in.extend(vec![0i16; 16_000]);
    let (tx_done, mut events) = {
        let (mut sink, mut source) = ws.split();
        let talker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for chunk in audio_in.chunks(320) {
                tick.tick().await;
                sink.send(Message::Binary(pcm_bytes(chunk).into())).await.unwrap();
            }
            sink
        });
        let mut seen = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), source.next()).await {
            if let Message::Text(t) = m {
                let e: Value = serde_json::from_str(&t).unwrap();
                let stop = e["type"] == "interruption";
                seen.push(e);
                if stop {
                    break;
                }
            }
        }
        (talker.await.unwrap().reunite(source).unwrap(), seen)
    };
    ws = tx_done;
    assert!(events.iter().any(|e| e["type"] == "interruption"), "{events:?}");

    let cancel = rt.wait_for("response.cancel", 1, Duration::from_secs(5)).await;
    assert_eq!(cancel.len(), 1);
    let truncate = rt.wait_for("conversation.item.truncate", 1, Duration::from_secs(5)).await.remove(0);
    let at = truncate["audio_end_ms"].as_u64().unwrap();
    assert!((500..4000).contains(&at), "truncated at {at} ms of a reply interrupted after about 1 s of play");
    assert_eq!(truncate["content_index"], 0);

    // What was played is what the record keeps: a part of the reply.
    if said(&events, "assistant").is_empty() {
        let (more, _) = until(&mut ws, |e| e["type"] == "transcript" && e["role"] == "assistant").await;
        events.extend(more);
    }
    let spoken = said(&events, "assistant");
    assert!(!spoken.is_empty() && spoken.len() < "Here is a very long answer that goes on and on for many seconds.".len(), "{spoken:?}");
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    until(&mut ws, |e| e["type"] == "call-ended").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_the_session_could_not_transcribe_is_told_and_kept_in_the_record() {
    let fake = Fake::start().await;
    let rt = fake.realtime();
    rt.set(|s| {
        s.transcription_error = Some(("audio_unintelligible".into(), "The audio could not be transcribed.".into()));
        s.reply_text = ANSWER.into();
        s.reply_audio = tone(440.0, 0.4, 8000.0);
    });
    let (mut s, id) = server(&fake).await;
    let mut ws = open(&s, &id).await;
    let mut audio_in = speech("What is the capital of France?");
    audio_in.extend(vec![0i16; 16_000]);
    stream(&mut ws, &audio_in).await;
    // The caller is told, and the model (which heard the audio itself) still answers.
    let (events, _) = until(&mut ws, |e| e["type"] == "bot-speech-stopped").await;
    let error = events.iter().find(|e| e["type"] == "error").unwrap_or_else(|| panic!("no error event: {events:?}"));
    assert_eq!(error["code"], "provider-failed", "{error}");
    assert!(error["message"].as_str().unwrap().contains("The audio could not be transcribed."), "{error}");
    assert_eq!(said(&events, "user"), "", "{events:?}");
    assert_eq!(said(&events, "assistant"), ANSWER, "{events:?}");
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    until(&mut ws, |e| e["type"] == "call-ended").await;

    // The record keeps the turn, without words and with why.
    let call = last_call_ended(&s).await;
    let turns = call["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{call}");
    assert_eq!((turns[0]["role"].as_str(), turns[0]["text"].as_str()), (Some("user"), Some("")), "{call}");
    assert_eq!(turns[0]["error"]["code"], "provider-failed", "{call}");
    assert!(turns[0]["error"]["message"].as_str().unwrap().contains("audio_unintelligible"), "{call}");
    assert_eq!((turns[1]["role"].as_str(), turns[1]["text"].as_str()), (Some("assistant"), Some(ANSWER)), "{call}");
    assert!(turns[1].get("error").is_none(), "{call}");
    s.stop().await;
}

#[tokio::test]
async fn a_realtime_session_that_cannot_start_ends_the_call_saying_why() {
    let fake = Fake::start().await;
    fake.realtime().set(|s| s.require_key = Some("sk-another-key".into()));
    let (mut s, id) = server(&fake).await;
    let error = common::error_before_close(&s, &id).await;
    assert_eq!(error["code"], "providers-unavailable", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("speech-to-speech") && !message.contains("sk-rt-test"), "{message}");
    s.stop().await;
}
