//! Calls whose assistant runs on an OpenAI-compatible server: a fake one in the
//! test, speaking the real wire format over real HTTP. A spoken call through the
//! real `voxgate call` binary with all three stages on it; the local provider
//! taking over the turns it fails while the call goes on; a refused key ending the
//! turn with a configuration error; the key never shown; the pool's metrics.

mod common;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, espeak};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxgate_fake_openai::{Fake, Reply, Route, chat_events};
use voxgate_openai::{OpenAi, OpenAiConfig};
use voxgate_server::session::providers::{Fixed, PerAssistant, ProviderFactory, Providers};
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_testkit::TestDb;

const KEY: &str = "sk-proj-test-9f8e7d6c5b4a";
const QUESTION: &str = "What is the capital of France?";
const ANSWER: &str = "The capital of France is Paris.";
const LOCAL_ANSWER: &str = "Here is the local model speaking.";

fn openai(fake: &Fake) -> OpenAi {
    let mut config = OpenAiConfig { api_key: Some(KEY.into()), base_url: fake.base.clone(), ..OpenAiConfig::default() };
    config.retry.transient_pause = Duration::from_millis(5);
    OpenAi::with_own_client(config).unwrap()
}

/// The local stand-in: scripted, so that what it says is known.
fn local(llm: ScriptedLlm) -> Arc<dyn ProviderFactory> {
    Arc::new(Fixed(Providers {
        stt: Arc::new(ScriptedStt::new(["heard by the local model"], Duration::ZERO)),
        llm: Arc::new(llm),
        tts: Arc::new(ToneTts { rate: 22_050, ms_per_char: 20, chunk_ms: 40, first_delay: Duration::ZERO }),
        tools: None,
    }))
}

async fn server(fake: &Fake, local_llm: ScriptedLlm) -> (TestServer, String) {
    let factory = Arc::new(PerAssistant::new(local(local_llm), Ok(openai(fake))));
    let s = TestServer::start_with_factory(TestDb::chosen().await, factory, |_| {}).await;
    let id = s
        .create_assistant(json!({
            "name": "Cloud helper",
            "firstMessageMode": "user-speaks-first",
            "firstMessage": null,
            "transcriber": {"provider": "openai", "model": "gpt-4o-transcribe", "language": "en"},
            "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.2, "maxTokens": 80},
            "voice": {"provider": "openai", "model": "gpt-4o-mini-tts", "voice": "coral"},
        }))
        .await;
    (s, id)
}

async fn voxgate(args: &[&str]) -> Output {
    common::run_voxgate(args, Duration::from_secs(60)).await
}

async fn get_json(s: &TestServer, path: &str) -> Value {
    let res = TestServer::http().get(s.at(path)).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

/// The newest call's record, once it has ended.
async fn last_call(s: &TestServer) -> Value {
    for _ in 0..100 {
        let calls = get_json(s, "/api/calls").await;
        let id = calls["items"][0]["id"].as_str().map(str::to_string);
        if let Some(id) = id {
            let call = get_json(s, &format!("/api/calls/{id}")).await;
            if call["status"] == "ended" {
                return call;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no ended call");
}

fn turns(call: &Value, role: &str) -> Vec<String> {
    call["turns"].as_array().unwrap().iter().filter(|t| t["role"] == role).map(|t| t["text"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_call_through_voxgate_call_runs_every_stage_on_the_openai_server() {
    let fake = Fake::start().await;
    // The fake's voice: espeak-ng speaking the answer, at OpenAI's 24 kHz.
    let dir = tempfile::tempdir().unwrap();
    let answer_wav = dir.path().join("answer.wav");
    espeak(&answer_wav, ANSWER);
    let answer = voxgate_audio::wav::read_wav_file(&answer_wav).unwrap();
    let voice = voxgate_audio::resample::resample_all(answer.rate, 24_000, &answer.samples).unwrap();
    let voice_len = voice.len();
    fake.set_normal(|n| {
        n.transcript = QUESTION.into();
        n.reply = ANSWER.into();
        n.speech = voice;
    });
    let (mut s, id) = server(&fake, ScriptedLlm::default()).await;

    let question = dir.path().join("question.wav");
    espeak(&question, QUESTION);
    let reply = dir.path().join("reply.wav");
    let o = voxgate(&[
        "call", "--url", &s.url, "--key", &s.admin, "--assistant", &id, "--wav", question.to_str().unwrap(),
        "--speed", "2", "--wait", "3", "--json", "--out", reply.to_str().unwrap(),
    ])
    .await;
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}", o.status);
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "the provider key reached the caller");
    let events: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().all(|e| e["type"] != "error"), "{events:?}");
    assert!(events.iter().any(|e| e["type"] == "transcript" && e["role"] == "user" && e["text"] == QUESTION), "{events:?}");
    assert!(events.iter().any(|e| e["type"] == "transcript" && e["role"] == "assistant" && e["text"] == ANSWER), "{events:?}");
    let latency = events.iter().find(|e| e["type"] == "latency").expect("a latency event");
    for field in ["sttMs", "llmFirstTokenMs", "ttsFirstAudioMs", "voiceToVoiceMs"] {
        assert!(latency[field].as_f64().is_some(), "{field} missing in {latency}");
    }

    // What the OpenAI server was asked: the caller's audio, the conversation, the answer's words.
    let stt = fake.seen(Route::Transcriptions);
    assert_eq!(stt.len(), 1);
    assert_eq!(stt[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(stt[0].fields.get("model").map(String::as_str), Some("gpt-4o-transcribe"));
    assert_eq!(stt[0].fields.get("language").map(String::as_str), Some("en"));
    let (_, _, wav) = stt[0].file.clone().expect("the audio file");
    let heard = voxgate_audio::wav::read_wav_bytes(&wav).expect("a WAV upload");
    let seconds = heard.samples.len() as f64 / f64::from(heard.rate);
    let spoken = voxgate_audio::wav::read_wav_file(&question).unwrap();
    let question_seconds = spoken.samples.len() as f64 / f64::from(spoken.rate);
    assert!(seconds > question_seconds * 0.6 && seconds < question_seconds + 2.0, "uploaded {seconds:.2} s of a {question_seconds:.2} s question");
    let chat = fake.seen(Route::Chat);
    assert_eq!(chat.len(), 1);
    let body = chat[0].json.clone().unwrap();
    assert_eq!(body["model"], "gpt-4.1-mini");
    assert_eq!(body["stream"], true);
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["role"].as_str(), last["content"].as_str()), (Some("user"), Some(QUESTION)), "{body}");
    let speech = fake.seen(Route::Speech);
    let said: Vec<String> = speech.iter().map(|r| r.json.as_ref().unwrap()["input"].as_str().unwrap().to_string()).collect();
    assert_eq!(said.join(" "), ANSWER);
    assert_eq!(speech[0].json.as_ref().unwrap()["voice"], "coral");
    assert_eq!(speech[0].json.as_ref().unwrap()["response_format"], "pcm");

    // The reply audio the caller got is the fake's voice, whole.
    let got = voxgate_audio::wav::read_wav_file(&reply).unwrap();
    let expected = voice_len as f64 / 24_000.0;
    let played = got.samples.len() as f64 / f64::from(got.rate);
    assert!(played >= expected * 0.95, "played {played:.2} s of {expected:.2} s");

    // The record, and the API's view of the assistant: no key anywhere.
    let call = last_call(&s).await;
    assert_eq!(turns(&call, "user"), [QUESTION]);
    assert_eq!(turns(&call, "assistant"), [ANSWER]);
    let assistant = get_json(&s, &format!("/api/assistants/{id}")).await;
    assert!(!call.to_string().contains(KEY) && !assistant.to_string().contains(KEY));
    s.stop().await;
}

/// A live call driven by typed text: sends `text`, returns the events up to the turn's latency.
struct Live {
    tx: futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, Message>,
    rx: futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>,
}

impl Live {
    async fn open(s: &TestServer, id: &str) -> Live {
        let mut req = s.ws_url(&format!("assistantId={id}")).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {}", s.admin).parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let (mut tx, rx) = ws.split();
        tx.send(Message::Text(common::START.into())).await.unwrap();
        let mut live = Live { tx, rx };
        let started = live.until(|e| e["type"] == "call-started").await;
        assert!(started.last().is_some());
        live
    }

    /// Events until one matches (audio skipped); panics if the call ends first.
    async fn until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), self.rx.next()).await.expect("an event within 20 s");
            match m {
                Some(Ok(Message::Text(t))) => {
                    let e: Value = serde_json::from_str(&t).unwrap();
                    let stop = done(&e);
                    assert!(stop || e["type"] != "call-ended", "the call ended: {events:?} {e}");
                    events.push(e);
                    if stop {
                        return events;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the socket closed: {other:?} after {events:?}"),
            }
        }
    }

    /// One typed turn, up to the reply's end.
    async fn say(&mut self, text: &str) -> Vec<Value> {
        self.tx.send(Message::Text(json!({"type": "text", "text": text}).to_string().into())).await.unwrap();
        self.until(|e| e["type"] == "bot-speech-stopped" || e["type"] == "error").await
    }

    async fn end(mut self) {
        self.tx.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
        self.until(|e| e["type"] == "call-ended").await;
    }
}

fn assistant_said(events: &[Value]) -> String {
    events.iter().filter(|e| e["type"] == "transcript" && e["role"] == "assistant").map(|e| e["text"].as_str().unwrap().to_string()).collect::<Vec<_>>().join(" ")
}

fn server_error() -> Reply {
    Reply::error(500, "server_error", "The server had an error while processing your request.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_provider_takes_over_the_turns_openai_fails_and_the_call_goes_on() {
    let fake = Fake::start().await;
    fake.set_normal(|n| n.reply = ANSWER.into());
    let local_llm = ScriptedLlm::new([
        ScriptedLlm::words(LOCAL_ANSWER, Duration::ZERO),
        ScriptedLlm::words("and the rest from here.", Duration::ZERO),
    ]);
    let (mut s, id) = server(&fake, local_llm.clone()).await;
    let mut live = Live::open(&s, &id).await;

    // Turn 1: the chat fails twice (a try and its retry): the local model answers.
    fake.script(Route::Chat, [server_error(), server_error()]);
    let events = live.say("First question?").await;
    assert_eq!(assistant_said(&events), LOCAL_ANSWER, "{events:?}");
    assert!(events.iter().all(|e| e["type"] != "error"), "a turn the fallback answered is no error: {events:?}");

    // Turn 2: OpenAI is back.
    let events = live.say("Second question?").await;
    assert_eq!(assistant_said(&events), ANSWER, "{events:?}");

    // Turn 3: the stream is cut after three words; they are kept, and the local model goes on.
    let cut = chat_events("It is sunny in Paris today.");
    fake.script(Route::Chat, [Reply::sse(&cut[..4], Duration::from_millis(1), true)]);
    let events = live.say("Third question?").await;
    assert_eq!(assistant_said(&events), "It is sunny and the rest from here.", "{events:?}");
    let requests = local_llm.requests.lock().unwrap().clone();
    let last = requests[1].messages.last().unwrap();
    assert_eq!(last.content, "It is sunny ", "the local model saw what was said");

    // Turn 4: speech fails twice: the local voice speaks the clause, resampled.
    fake.script(Route::Speech, [server_error(), server_error()]);
    let events = live.say("Fourth question?").await;
    assert_eq!(assistant_said(&events), ANSWER, "{events:?}");
    live.end().await;

    let call = last_call(&s).await;
    assert_eq!(call["endedReason"], "customer-ended-call", "{call}");
    assert_eq!(turns(&call, "assistant"), [LOCAL_ANSWER, ANSWER, "It is sunny and the rest from here.", ANSWER], "{call}");

    // The takeovers and the pool are in the metrics.
    let metrics = TestServer::http().get(s.at("/api/metrics")).bearer_auth(&s.admin).send().await.unwrap().text().await.unwrap();
    let value = |name: &str, labels: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} with {labels} in\n{metrics}"))
    };
    assert_eq!(value("voxgate_provider_fallbacks_total", "stage=\"llm\""), 2.0);
    assert_eq!(value("voxgate_provider_fallbacks_total", "stage=\"tts\""), 1.0);
    let requests: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("voxgate_openai_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(requests >= 8.0, "{requests} requests counted:\n{metrics}");
    assert!(metrics.contains("voxgate_openai_connections_opened_total"), "{metrics}");
    assert!(!metrics.contains(KEY));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_ends_the_turn_with_a_configuration_error_and_the_call_goes_on() {
    let fake = Fake::start().await;
    fake.set_normal(|n| n.reply = ANSWER.into());
    let local_llm = ScriptedLlm::new([ScriptedLlm::words(LOCAL_ANSWER, Duration::ZERO)]);
    let (mut s, id) = server(&fake, local_llm.clone()).await;
    let mut live = Live::open(&s, &id).await;

    fake.script(Route::Chat, [Reply::EchoKey]);
    live.tx.send(Message::Text(json!({"type": "text", "text": "Hello?"}).to_string().into())).await.unwrap();
    let events = live.until(|e| e["type"] == "error").await;
    let error = events.last().unwrap();
    assert_eq!(error["code"], "provider-unauthorized", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("401") || message.to_lowercase().contains("not authorized"), "{message}");
    assert!(!message.contains(KEY) && !message.contains("9f8e7d6c"), "the key leaked: {message}");
    assert!(local_llm.requests.lock().unwrap().is_empty(), "a refused key is not hidden behind the fallback");
    assert_eq!(fake.seen(Route::Chat).len(), 1, "a refused key is not retried");

    // The call is still up, and the next turn is answered.
    let events = live.say("Are you there?").await;
    assert_eq!(assistant_said(&events), ANSWER, "{events:?}");
    live.end().await;
    s.stop().await;
}

#[tokio::test]
async fn an_assistant_whose_openai_settings_are_unusable_cannot_start_a_call_and_says_why() {
    let fake = Fake::start().await;
    let (mut s, _) = server(&fake, ScriptedLlm::default()).await;
    let id = s
        .create_assistant(json!({
            "name": "Bad base URL",
            "firstMessageMode": "user-speaks-first",
            "firstMessage": null,
            "model": {"provider": "openai", "baseUrl": "https://models.internal/v1?token=abc"},
        }))
        .await;
    let error = common::error_before_close(&s, &id).await;
    assert_eq!(error["code"], "providers-unavailable", "{error}");
    assert!(error["message"].as_str().unwrap().contains("base URL"), "{error}");
    s.stop().await;
}
