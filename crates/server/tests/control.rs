//! Call control through the API (`POST /api/calls/{id}/control`): the real server
//! on a free port, a real WebSocket call, the control requests over real HTTP. In
//! one process (the `all` role) the message goes straight to the call; with
//! PostgreSQL, an `api` instance reaches a call held by an `agent` instance through
//! LISTEN/NOTIFY. Providers are scripted (fixed words out, tone audio).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestServer, ended_call, error_code, next_event};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxgate_domain::key::KeyKind;
use voxgate_server::config::{Role, ServeArgs};
use voxgate_server::serve;
use voxgate_server::session::providers::{Fixed, Providers};
use voxgate_services::llm::{ChatRequest, Role as ChatRole};
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_testkit::TestDb;

/// How long a call's record may take to show its end.
const ENDS_WITHIN: Duration = Duration::from_secs(15);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn providers(replies: &[&str]) -> (Providers, Arc<Mutex<Vec<ChatRequest>>>) {
    let llm = ScriptedLlm::new(replies.iter().map(|r| ScriptedLlm::words(r, Duration::from_millis(2))));
    let requests = llm.requests.clone();
    let p = Providers {
        stt: Arc::new(ScriptedStt::new(Vec::<String>::new(), Duration::ZERO)),
        llm: Arc::new(llm),
        tts: Arc::new(ToneTts { rate: 24_000, ms_per_char: 5, chunk_ms: 20, first_delay: Duration::ZERO }),
        tools: None,
    };
    (p, requests)
}

/// Opens a call at `base` (an agent's URL) with `key`; the socket and its call id.
async fn open(base: &str, key: &str, assistant: &str) -> (Ws, String) {
    let url = format!("{}/agent?assistantId={assistant}", base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("the call opens");
    let started = common::start_call(&mut ws).await;
    (ws, started["callId"].as_str().unwrap().to_owned())
}

async fn control(s: &TestServer, call: &str, body: Value) -> reqwest::Response {
    TestServer::http().post(s.at(&format!("/api/calls/{call}/control"))).bearer_auth(&s.admin).json(&body).send().await.unwrap()
}

async fn accepted(s: &TestServer, call: &str, body: Value) -> Value {
    let res = control(s, call, body.clone()).await;
    let status = res.status();
    let answer: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{body} -> {answer}");
    answer
}

/// Waits for the event of `kind` (with `pred`), skipping others and audio;
/// returns it and the types of the events seen before it.
async fn event(ws: &mut Ws, kind: &str, pred: impl Fn(&Value) -> bool) -> (Value, Vec<String>) {
    let mut seen = Vec::new();
    loop {
        let ev = next_event(ws).await.unwrap_or_else(|| panic!("the socket closed before {kind} (saw {seen:?})"));
        if ev["type"] == kind && pred(&ev) {
            return (ev, seen);
        }
        seen.push(ev["type"].as_str().unwrap_or("").to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn say_add_message_and_end_reach_a_call_in_this_process() {
    let (p, requests) = providers(&["We open at nine."]);
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, p, |_| {}).await;
    let assistant = s.create_assistant(json!({"name": "Controlled", "firstMessageMode": "user-speaks-first"})).await;
    let (mut ws, call) = open(&s.url, &s.admin, &assistant).await;

    // `say`: spoken verbatim, with the usual events.
    let answer = accepted(&s, &call, json!({"type": "say", "text": "Please hold the line."})).await;
    assert_eq!(answer, json!({"callId": call, "type": "say", "delivery": "local"}));
    let (_, before) = event(&mut ws, "transcript", |v| v["role"] == "assistant" && v["text"] == "Please hold the line.").await;
    assert!(before.contains(&"bot-speech-started".to_string()), "{before:?}");
    event(&mut ws, "bot-speech-stopped", |_| true).await;

    // `add-message`: a system message guides the reply to a user message.
    accepted(&s, &call, json!({"type": "add-message", "role": "system", "content": "The caller is a member."})).await;
    accepted(&s, &call, json!({"type": "add-message", "role": "user", "content": "When do you open?"})).await;
    event(&mut ws, "transcript", |v| v["role"] == "assistant" && v["text"] == "We open at nine.").await;
    event(&mut ws, "bot-speech-stopped", |_| true).await;
    let request = requests.lock().unwrap().last().cloned().expect("the model was asked");
    let said: Vec<(ChatRole, &str)> = request.messages.iter().map(|m| (m.role, m.content.as_str())).collect();
    assert!(said.contains(&(ChatRole::System, "The caller is a member.")), "{said:?}");
    assert!(said.contains(&(ChatRole::Assistant, "Please hold the line.")), "{said:?}");
    assert_eq!(said.last(), Some(&(ChatRole::User, "When do you open?")), "{said:?}");

    // Hostile requests, each with the JSON error shape.
    let http = TestServer::http();
    let url = s.at(&format!("/api/calls/{call}/control"));
    for (body, status) in [
        (json!({"type": "hangup"}), 422),
        (json!({"type": "say"}), 422),
        (json!({"type": "say", "text": 5}), 422),
        (json!({"type": "say", "text": "  "}), 422),
        (json!({"type": "say", "text": "x".repeat(4001)}), 422),
        (json!({"type": "say", "text": "a\u{0}b"}), 422),
        (json!({"type": "end", "now": true}), 422),
        (json!({"type": "add-message", "role": "assistant", "content": "I am a bot"}), 422),
        (json!(["end"]), 422),
        (json!({"text": "no type"}), 422),
    ] {
        let (got, _, err) = error_code(control(&s, &call, body.clone()).await).await;
        assert_eq!(got, status, "{body} -> {err}");
    }
    let (got, code, _) = error_code(http.post(&url).bearer_auth(&s.admin).header("content-type", "application/json").body("{\"type\":").send().await.unwrap()).await;
    assert_eq!((got, code.as_str()), (400, "invalid_json"));
    let (got, _, _) = error_code(http.post(&url).bearer_auth(&s.admin).json(&json!({"type": "say", "text": "x".repeat(2_000_000)})).send().await.unwrap()).await;
    assert_eq!(got, 413);
    let (got, _, _) = error_code(http.post(&url).json(&json!({"type": "end"})).send().await.unwrap()).await;
    assert_eq!(got, 401);
    let public = s.key(KeyKind::Public, &[&assistant]).await;
    let (got, _, _) = error_code(http.post(&url).bearer_auth(&public).json(&json!({"type": "end"})).send().await.unwrap()).await;
    assert_eq!(got, 403, "a public key cannot control calls");
    let unknown = voxgate_domain::clock::new_id();
    for id in [unknown.as_str(), "not-an-id", "%2e%2e"] {
        let (got, code, _) = error_code(control(&s, id, json!({"type": "end"})).await).await;
        assert_eq!((got, code.as_str()), (404, "not_found"), "{id}");
    }

    // `end`: the call ends at once, with its own reason.
    accepted(&s, &call, json!({"type": "end"})).await;
    let (ended, _) = event(&mut ws, "call-ended", |_| true).await;
    assert_eq!(ended["reason"], "api-ended-call");
    let record = ended_call(&s, &call, ENDS_WITHIN).await;
    assert_eq!(record["endedReason"], "api-ended-call");
    let (got, code, _) = error_code(control(&s, &call, json!({"type": "say", "text": "too late"})).await).await;
    assert_eq!((got, code.as_str()), (409, "conflict"), "an ended call");
    s.stop().await;
}

/// An `api` instance and an `agent` instance on one PostgreSQL database (the
/// model answers `replies`), and an assistant; `None` without PostgreSQL (SQLite is
/// one process: nothing to test).
async fn api_and_agent(replies: &[&str]) -> Option<(TestServer, serve::Running, String)> {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("not run: cross-instance control needs PostgreSQL (set VOXGATE_TEST_POSTGRES_URL); SQLite is one process");
        return None;
    };
    let url = db.url.clone();
    let (p, _) = providers(replies);
    let api = TestServer::start_with_providers(db, p.clone(), |a| a.role = Role::Api).await;
    let mut args = ServeArgs::for_tests(&url);
    args.role = Role::Agent;
    args.drain_timeout = 5;
    let agent = serve::start_with(args, Arc::new(Fixed(p))).await.expect("the agent starts");
    let assistant = api.create_assistant(json!({"name": "Far away", "firstMessageMode": "user-speaks-first"})).await;
    Some((api, agent, assistant))
}

/// An `api` instance and an `agent` instance on one PostgreSQL database: the call
/// is on the agent, the control request goes to the API, and reaches the call
/// through LISTEN/NOTIFY. Needs `VOXGATE_TEST_POSTGRES_URL` (required in CI); on
/// SQLite there is one process, so there is nothing to test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_only_control_reaches_a_call_on_another_instance() {
    let Some((mut api, agent, assistant)) = api_and_agent(&["Relayed answer."]).await else { return };
    let (mut ws, call) = open(&agent.url(), &api.admin, &assistant).await;

    let answer = accepted(&api, &call, json!({"type": "say", "text": "Hello from the other side."})).await;
    assert_eq!(answer["delivery"], "notified");
    event(&mut ws, "transcript", |v| v["role"] == "assistant" && v["text"] == "Hello from the other side.").await;
    event(&mut ws, "bot-speech-stopped", |_| true).await;
    accepted(&api, &call, json!({"type": "add-message", "role": "user", "content": "Anything new?"})).await;
    event(&mut ws, "transcript", |v| v["role"] == "assistant" && v["text"] == "Relayed answer.").await;

    accepted(&api, &call, json!({"type": "end"})).await;
    let (ended, _) = event(&mut ws, "call-ended", |_| true).await;
    assert_eq!(ended["reason"], "api-ended-call");
    assert_eq!(ended_call(&api, &call, ENDS_WITHIN).await["endedReason"], "api-ended-call");
    agent.drain().await.unwrap();
    api.stop().await;
}

/// A message queued for a call on another instance whose announcement never came
/// (the agent's listening connection was down, or the `NOTIFY` failed) still
/// reaches the call, from the agent's rescan of the queue, and only once. Needs
/// PostgreSQL (`VOXGATE_TEST_POSTGRES_URL`, required in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_only_a_control_message_whose_announcement_was_lost_arrives_once() {
    let Some((mut api, agent, assistant)) = api_and_agent(&[]).await else { return };
    let (mut ws, call) = open(&agent.url(), &api.admin, &assistant).await;

    // Queued as the API queues it, with no announcement.
    api.store.queue_control(&call, r#"{"type":"say","text":"Queued while nobody listened."}"#, 16).await.unwrap().expect("room");
    let heard = tokio::time::timeout(
        voxgate_server::session::control::RESCAN * 3,
        event(&mut ws, "transcript", |v| v["role"] == "assistant" && v["text"] == "Queued while nobody listened."),
    )
    .await;
    assert!(heard.is_ok(), "the agent's rescan found the message");
    assert!(api.store.calls_with_controls(60_000).await.unwrap().is_empty(), "taken from the queue");

    // Two more rescans: nothing is said again.
    tokio::time::sleep(voxgate_server::session::control::RESCAN * 2).await;
    accepted(&api, &call, json!({"type": "end"})).await;
    let mut again = 0;
    loop {
        let ev = next_event(&mut ws).await.expect("the call ends with call-ended");
        if ev["type"] == "transcript" && ev["text"] == "Queued while nobody listened." {
            again += 1;
        }
        if ev["type"] == "call-ended" {
            break;
        }
    }
    assert_eq!(again, 0, "said once");
    let record = ended_call(&api, &call, ENDS_WITHIN).await;
    let said = record["turns"].as_array().unwrap().iter().filter(|t| t["text"] == "Queued while nobody listened.").count();
    assert_eq!(said, 1, "{record}");
    agent.drain().await.unwrap();
    api.stop().await;
}
