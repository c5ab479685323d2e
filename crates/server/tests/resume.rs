//! Resuming a call on a new socket (`/agent?call=<id>&resume=<token>`): the real
//! server on a free port, real WebSockets, a TCP connection dropped without a close
//! frame, and the call's record read back through the API. Providers are scripted
//! (typed text in, fixed words out, tone audio).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{START, TestServer, ended_call, next_event};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxgate_server::session::providers::Providers;
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_testkit::TestDb;

/// How long a call's record may take to show its end.
const ENDS_WITHIN: Duration = Duration::from_secs(15);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn providers(replies: &[&str]) -> Providers {
    Providers {
        stt: Arc::new(ScriptedStt::new(Vec::<String>::new(), Duration::ZERO)),
        llm: Arc::new(ScriptedLlm::new(replies.iter().map(|r| ScriptedLlm::words(r, Duration::from_millis(2))))),
        tts: Arc::new(ToneTts { rate: 24_000, ms_per_char: 5, chunk_ms: 20, first_delay: Duration::ZERO }),
        tools: None,
    }
}

async fn server(replies: &[&str], window_secs: Option<u64>) -> (TestServer, String) {
    // Test servers have resuming off by default; 30 s is the real default.
    let s = TestServer::start_with_providers(TestDb::chosen().await, providers(replies), |a| a.reconnect_window_secs = window_secs.unwrap_or(30)).await;
    let id = s.create_assistant(json!({"name": "Resumable", "firstMessageMode": "user-speaks-first"})).await;
    (s, id)
}

/// Opens a call with the admin key and returns the socket and `call-started`.
async fn open(s: &TestServer, assistant: &str) -> (Ws, Value) {
    let mut req = s.ws_url(&format!("assistantId={assistant}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.admin).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("the call opens");
    let started = common::start_call(&mut ws).await;
    (ws, started)
}

/// Tries to resume; the socket, or the refusal's status and body.
async fn try_resume(s: &TestServer, call: &str, token: &str) -> Result<Ws, (u16, Value)> {
    match tokio_tungstenite::connect_async(s.ws_url(&format!("call={call}&resume={token}"))).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let status = res.status().as_u16();
            let body = res.body().as_deref().map(|b| serde_json::from_slice(b).expect("a JSON error body")).unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("resume: {e}"),
    }
}

/// Resumes once the server has noticed the dropped socket (409 until then).
async fn resume(s: &TestServer, call: &str, token: &str) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_resume(s, call, token).await {
            Ok(ws) => return ws,
            Err((409, _)) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err((status, body)) => panic!("resume refused: {status} {body}"),
        }
    }
}

/// Waits for the event of `kind` (with `pred`), skipping others and audio.
async fn event(ws: &mut Ws, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let ev = next_event(ws).await.unwrap_or_else(|| panic!("the socket closed before {kind}"));
        if ev["type"] == kind && pred(&ev) {
            return ev;
        }
    }
}

async fn assistant_says(ws: &mut Ws, text: &str) {
    event(ws, "transcript", |v| v["role"] == "assistant" && v["text"] == text).await;
    event(ws, "bot-speech-stopped", |_| true).await;
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(json!({"type": "text", "text": text}).to_string().into())).await.unwrap();
}

fn turns(call: &Value) -> Vec<(String, String)> {
    call["turns"].as_array().unwrap().iter().map(|t| (t["role"].as_str().unwrap().to_owned(), t["text"].as_str().unwrap().to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_resumes_on_a_new_socket_and_goes_on() {
    let (mut s, assistant) = server(&["First answer.", "Second answer."], None).await;
    let (mut ws, started) = open(&s, &assistant).await;
    let call = started["callId"].as_str().unwrap().to_owned();
    let token = started["resumeToken"].as_str().expect("call-started carries a resume token").to_owned();
    assert!(token.len() >= 32, "{token}");

    send_text(&mut ws, "hello one").await;
    assistant_says(&mut ws, "First answer.").await;
    // The TCP connection goes away without a close frame.
    drop(ws);

    let mut ws = resume(&s, &call, &token).await;
    // Other formats on the new socket: 48 kHz in, 8 kHz out.
    ws.send(Message::Text(r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":48000,"outputSampleRate":8000}}"#.into())).await.unwrap();
    let resumed = event(&mut ws, "call-resumed", |_| true).await;
    assert_eq!(resumed["callId"], call.as_str());
    let next = resumed["resumeToken"].as_str().expect("a new token").to_owned();
    assert_ne!(next, token);
    assert_eq!(resumed["output"], json!({"encoding": "pcm16", "sampleRate": 8000}));
    assert_eq!(resumed["input"], json!({"encoding": "pcm16", "sampleRate": 48000}));

    // The conversation goes on, its audio in the new format (20 ms at 8 kHz).
    send_text(&mut ws, "hello two").await;
    let mut frames = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut ws)).await.unwrap().unwrap().unwrap();
        match m {
            Message::Binary(b) => frames.push(b.len()),
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "bot-speech-stopped" {
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(!frames.is_empty() && frames.iter().all(|&n| n == 320), "8 kHz PCM16 frames: {frames:?}");

    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    let ended = event(&mut ws, "call-ended", |_| true).await;
    assert_eq!(ended["reason"], "customer-ended-call");

    let record = ended_call(&s, &call, ENDS_WITHIN).await;
    assert_eq!(record["endedReason"], "customer-ended-call");
    let t = turns(&record);
    let expected = [("user", "hello one"), ("assistant", "First answer."), ("user", "hello two"), ("assistant", "Second answer.")];
    assert_eq!(t.iter().map(|(r, x)| (r.as_str(), x.as_str())).collect::<Vec<_>>(), expected, "turns from both sockets: {record}");
    // An ended call is not live any more.
    let (status, body) = try_resume(&s, &call, &next).await.map(|_| ()).expect_err("refused");
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let metrics = TestServer::http().get(s.at("/api/metrics")).bearer_auth(&s.admin).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("voxgate_call_resumes_total{outcome=\"resumed\"}")), "{metrics}");
    s.stop().await;
}

/// While no socket carries the call the pipeline runs on: a long greeting plays
/// into the void (its audio dropped, not queued; no `slow-client` end after the
/// writer's 2 s), and the call's maximum duration still ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_call_runs_on_until_its_maximum_duration() {
    let mut s = TestServer::start_with_providers(
        TestDb::chosen().await,
        Providers {
            stt: Arc::new(ScriptedStt::new(Vec::<String>::new(), Duration::ZERO)),
            llm: Arc::new(ScriptedLlm::default()),
            tts: Arc::new(ToneTts { rate: 24_000, ms_per_char: 50, chunk_ms: 20, first_delay: Duration::ZERO }),
            tools: None,
        },
        |a| a.reconnect_window_secs = 30,
    )
    .await;
    // About 20 s of greeting; the call may last 10 s.
    let greeting = "Welcome to the library. ".repeat(16);
    let assistant = s.create_assistant(json!({"name": "Long", "firstMessage": greeting, "maxDurationSecs": 10, "silenceTimeoutSecs": 0})).await;
    let (mut ws, started) = open(&s, &assistant).await;
    let call = started["callId"].as_str().unwrap().to_owned();
    event(&mut ws, "bot-speech-started", |_| true).await;
    drop(ws);
    let record = ended_call(&s, &call, ENDS_WITHIN).await;
    assert_eq!(record["endedReason"], "exceeded-max-duration", "{record}");
    let t = turns(&record);
    assert_eq!(t.len(), 1, "{record}");
    assert!(t[0].1.len() > 24 && t[0].1.len() < greeting.trim().len(), "more than the first sentence was played, not all: {:?}", t[0].1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_are_refused_with_a_wrong_or_used_token_an_unknown_call_or_a_live_socket() {
    let (mut s, assistant) = server(&[], None).await;
    let (ws, started) = open(&s, &assistant).await;
    let call = started["callId"].as_str().unwrap().to_owned();
    let token = started["resumeToken"].as_str().unwrap().to_owned();

    // The socket is still open: 409, with the right token; a wrong one is 401.
    let (status, body) = try_resume(&s, &call, &token).await.map(|_| ()).expect_err("refused");
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, body) = try_resume(&s, &call, "vg_rt_not-the-token").await.map(|_| ()).expect_err("refused");
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    // An unknown call on this instance, a malformed id, an oversized token, no token.
    let unknown = voxgate_domain::clock::new_id();
    let (status, body) = try_resume(&s, &unknown, &token).await.map(|_| ()).expect_err("refused");
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("on this instance"), "{body}");
    let (status, _) = try_resume(&s, "../../etc", &token).await.map(|_| ()).expect_err("refused");
    assert_eq!(status, 404);
    let (status, _) = try_resume(&s, &call, &"x".repeat(5000)).await.map(|_| ()).expect_err("refused");
    assert_eq!(status, 401);
    match tokio_tungstenite::connect_async(s.ws_url(&format!("call={call}"))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("a resume without a token: {other:?}"),
    }

    // Dropped: the right token resumes it, once.
    drop(ws);
    let mut ws = resume(&s, &call, &token).await;
    ws.send(Message::Text(START.into())).await.unwrap();
    let resumed = event(&mut ws, "call-resumed", |_| true).await;
    let next = resumed["resumeToken"].as_str().unwrap().to_owned();
    // The used token, with the new socket open or dropped: 401.
    let (status, _) = try_resume(&s, &call, &token).await.map(|_| ()).expect_err("refused");
    assert_eq!(status, 401);
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = try_resume(&s, &call, &token).await.map(|_| ()).expect_err("refused");
    assert_eq!(status, 401, "a used token stays used");

    // A resumed socket that never sends `start` gives its token back: the call
    // can still be resumed with it (the failed socket is closed with 4002).
    let ws = resume(&s, &call, &next).await;
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ws = loop {
        match try_resume(&s, &call, &next).await {
            Ok(ws) => break ws,
            Err((401, _)) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e:?}"),
        }
    };
    ws.send(Message::Text(START.into())).await.unwrap();
    event(&mut ws, "call-resumed", |_| true).await;
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    event(&mut ws, "call-ended", |_| true).await;
    assert_eq!(ended_call(&s, &call, ENDS_WITHIN).await["endedReason"], "customer-ended-call");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_not_resumed_within_the_window_ends_as_connection_lost() {
    let (mut s, assistant) = server(&["Noted."], Some(1)).await;
    let (mut ws, started) = open(&s, &assistant).await;
    let call = started["callId"].as_str().unwrap().to_owned();
    let token = started["resumeToken"].as_str().unwrap().to_owned();
    send_text(&mut ws, "remember this").await;
    assistant_says(&mut ws, "Noted.").await;
    drop(ws);
    let record = ended_call(&s, &call, ENDS_WITHIN).await;
    assert_eq!(record["endedReason"], "connection-lost");
    assert_eq!(turns(&record).len(), 2, "the turns before the drop are kept: {record}");
    let (status, _) = try_resume(&s, &call, &token).await.map(|_| ()).expect_err("refused");
    assert_eq!(status, 404);
    s.stop().await;

    // Resume off: no token, and a dropped socket ends the call at once.
    let (mut s, assistant) = server(&[], Some(0)).await;
    let (ws, started) = open(&s, &assistant).await;
    assert!(started.get("resumeToken").is_none(), "{started}");
    let call = started["callId"].as_str().unwrap().to_owned();
    drop(ws);
    assert_eq!(ended_call(&s, &call, ENDS_WITHIN).await["endedReason"], "connection-lost");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ended_by_the_caller_is_never_resumable() {
    let (mut s, assistant) = server(&[], None).await;
    for how in ["end message", "close frame"] {
        let (mut ws, started) = open(&s, &assistant).await;
        let call = started["callId"].as_str().unwrap().to_owned();
        let token = started["resumeToken"].as_str().unwrap().to_owned();
        if how == "end message" {
            ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
        } else {
            ws.close(None).await.unwrap();
        }
        while next_event(&mut ws).await.is_some() {}
        // 409 while the session winds down, then 404; never resumed.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = try_resume(&s, &call, &token).await.map(|_| ()).expect_err("an ended call is not resumed");
            if status == 404 {
                break;
            }
            assert_eq!(status, 409, "{how}: {body}");
            assert!(Instant::now() < deadline, "{how}: still 409");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ended_call(&s, &call, ENDS_WITHIN).await["endedReason"], "customer-ended-call", "{how}");
    }
    s.stop().await;
}
