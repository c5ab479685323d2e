//! What the platform adds to a turn served by an OpenAI-compatible server, and what
//! warming the connection pool at call start saves on the first turn; against the
//! fake OpenAI server on loopback (plain HTTP: warming saves a TCP set-up here; on
//! a real API it also saves DNS and the TLS handshake).
//!
//! - direct: the same provider requests made by hand with the same client: the
//!   chat streamed to its end (a one-clause reply), then speech to its first bytes.
//! - platform: a typed turn on a live `/agent` call, from sending the text to the
//!   first reply audio frame on the socket (chat and speech on the fake, through
//!   the pipeline, the clause aggregator, the paced output and the WebSocket).
//! - first turn, cold or warm: a new server (so a new connection pool) per round,
//!   the call's first turn with and without the warm-up at call start.
//!
//! `cargo bench -p voxgate --bench openai_turn` prints medians and p90 in ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxgate_domain::key::{KeyKind, mint};
use voxgate_fake_openai::Fake;
use voxgate_openai::{OpenAi, OpenAiConfig};
use voxgate_server::config::ServeArgs;
use voxgate_server::session::providers::{PerAssistant, Scripted};
use voxgate_services::llm::{ChatMessage, ChatRequest, LlmEvent, Role};

const ROUNDS: usize = 60;
const FIRST_TURN_ROUNDS: usize = 25;
const REPLY: &str = "Hello there.";

fn openai(fake: &Fake) -> OpenAi {
    OpenAi::with_own_client(OpenAiConfig { api_key: Some("sk-bench".into()), base_url: fake.base.clone(), ..OpenAiConfig::default() }).unwrap()
}

fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Chat to its end, then speech to its first bytes, by hand.
async fn direct_turn(ai: &OpenAi) -> Duration {
    let started = Instant::now();
    let request = ChatRequest {
        messages: vec![ChatMessage::new(Role::System, "You are brief."), ChatMessage::new(Role::User, "Hi?")],
        tools: vec![],
        temperature: 0.7,
        max_tokens: 100,
    };
    let mut text = String::new();
    let mut chat = ai.llm().chat(request);
    while let Some(event) = chat.next().await {
        match event.expect("the fake answers") {
            LlmEvent::Token(t) => text.push_str(&t),
            LlmEvent::Done => break,
            _ => {}
        }
    }
    let mut speech = ai.tts().synthesize(text);
    speech.next().await.expect("audio").expect("the fake speaks");
    started.elapsed()
}

struct Server {
    running: voxgate_server::serve::Running,
    key: String,
    assistant: String,
    _dir: tempfile::TempDir,
}

async fn server(factory: PerAssistant) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut args = ServeArgs::for_tests(&format!("sqlite://{}", dir.path().join("bench.db").display()));
    args.recordings_dir = dir.path().join("rec");
    let running = voxgate_server::serve::start_with(args, Arc::new(factory)).await.expect("the server starts");
    let m = mint("bench", KeyKind::Private, vec![]);
    running.store.as_ref().unwrap().insert_key(&m.key).await.unwrap();
    let body = json!({
        "name": "Cloud", "firstMessageMode": "user-speaks-first", "firstMessage": null,
        "transcriber": {"provider": "openai"}, "model": {"provider": "openai"}, "voice": {"provider": "openai"},
    });
    let res = reqwest::Client::new().post(format!("{}/api/assistants", running.url())).bearer_auth(&m.secret).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let assistant = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    Server { running, key: m.secret, assistant, _dir: dir }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_call(s: &Server) -> Ws {
    let url = format!("{}/agent?assistantId={}", s.running.url().replacen("http", "ws", 1), s.assistant);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.key).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Text(r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":16000}}"#.into())).await.unwrap();
    until_event(&mut ws, "call-started").await;
    ws
}

async fn until_event(ws: &mut Ws, kind: &str) {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            let e: Value = serde_json::from_str(&t).unwrap();
            assert_ne!(e["type"], "error", "{e}");
            if e["type"] == kind {
                return;
            }
        }
    }
    panic!("the call closed before {kind}");
}

/// A typed turn: text sent to the first reply audio frame; then waits for the reply's end.
async fn platform_turn(ws: &mut Ws) -> Duration {
    ws.send(Message::Text(json!({"type": "text", "text": "Hi?"}).to_string().into())).await.unwrap();
    let started = Instant::now();
    let first = loop {
        match ws.next().await {
            Some(Ok(Message::Binary(_))) => break started.elapsed(),
            Some(Ok(_)) => {}
            other => panic!("the call ended: {other:?}"),
        }
    };
    until_event(ws, "bot-speech-stopped").await;
    first
}

async fn first_turn(fake: &Fake, warm: bool) -> Duration {
    let mut factory = PerAssistant::new(Arc::new(Scripted), Ok(openai(fake)));
    if !warm {
        factory = factory.without_warming();
    }
    let s = server(factory).await;
    let mut ws = open_call(&s).await;
    // The warm-up runs in the background from call start; a person takes longer
    // than this to say their first words.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = platform_turn(&mut ws).await;
    let _ = ws.close(None).await;
    s.running.drain().await.unwrap();
    t
}

fn row(name: &str, xs: &mut [f64]) -> f64 {
    let p50 = quantile(xs, 0.5);
    println!("{name:<34} p50 {p50:7.2} ms   p90 {:7.2} ms   (n={})", quantile(xs, 0.9), xs.len());
    p50
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    voxgate_server::init_crypto();
    let fake = Fake::start().await;
    fake.set_normal(|n| {
        n.reply = REPLY.into();
        // 0.2 s of speech in one piece: the turn's audio plays out quickly.
        n.speech = vec![1000; 4800];
        n.speech_pieces = vec![9600];
        n.chat_pause = Duration::ZERO;
        n.speech_pause = Duration::ZERO;
    });

    let ai = openai(&fake);
    ai.warm().await.unwrap();
    let mut direct: Vec<f64> = Vec::new();
    for _ in 0..ROUNDS {
        direct.push(ms(direct_turn(&ai).await));
    }

    let s = server(PerAssistant::new(Arc::new(Scripted), Ok(openai(&fake)))).await;
    let mut ws = open_call(&s).await;
    platform_turn(&mut ws).await;
    let mut platform: Vec<f64> = Vec::new();
    for _ in 0..ROUNDS {
        platform.push(ms(platform_turn(&mut ws).await));
    }
    let _ = ws.close(None).await;
    s.running.drain().await.unwrap();

    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..FIRST_TURN_ROUNDS {
        cold.push(ms(first_turn(&fake, false).await));
        warm.push(ms(first_turn(&fake, true).await));
    }

    println!("OpenAI-compatible turn on the fake server (loopback), {ROUNDS} turns:");
    let d = row("direct (chat, then speech)", &mut direct);
    let p = row("through the platform", &mut platform);
    println!("platform overhead at p50: {:.2} ms ({:.2}x the direct time)", p - d, p / d);
    println!("first turn of a call on a new connection pool, {FIRST_TURN_ROUNDS} rounds:");
    let c = row("cold (no warm-up)", &mut cold);
    let w = row("warmed at call start", &mut warm);
    println!("warming saves {:.2} ms at p50 ({:.2}x)", c - w, c / w);
}
