//! Webhooks through the real server: a call's events (status updates, final
//! transcripts, the end-of-call report) go to the assistant's server URL, signed,
//! through the persistent outbox. The receiver in the test fails, then the server
//! restarts, then the receiver recovers: every event arrives, exactly once after
//! deduplication by its id, each with a valid signature; the API shows it all.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use serde_json::{Value, json};
use voxgate_server::config::ServeArgs;
use voxgate_server::session::providers::Providers;
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_testkit::TestDb;

const SECRET: &str = "whsec-test-0123456789abcdef";

#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    /// Every request, accepted or not.
    raw: AtomicUsize,
    /// Requests whose signature did not verify.
    bad_signatures: AtomicUsize,
    /// Accepted events by id: (how many times, the body).
    accepted: Mutex<HashMap<String, (usize, Value)>>,
}

async fn receiver() -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(|State(r): State<Arc<Receiver>>, headers: HeaderMap, body: axum::body::Bytes| async move {
                r.raw.fetch_add(1, Ordering::SeqCst);
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                let signature = headers.get(voxgate_webhooks::headers::SIGNATURE).and_then(|v| v.to_str().ok());
                if voxgate_webhooks::verify(SECRET.as_bytes(), signature, &body, now, 300).is_err() {
                    r.bad_signatures.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::UNAUTHORIZED;
                }
                if !r.up.load(Ordering::SeqCst) {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let id = headers.get(voxgate_webhooks::headers::EVENT_ID).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let body: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["id"], id.as_str(), "the header and the body name the same event");
                r.accepted.lock().unwrap().entry(id).or_insert((0, body)).0 += 1;
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

fn providers() -> Providers {
    Providers {
        stt: Arc::new(ScriptedStt::new(Vec::<String>::new(), Duration::ZERO)),
        llm: Arc::new(ScriptedLlm::repeating(ScriptedLlm::words("The pool opens at six.", Duration::ZERO))),
        tts: Arc::new(ToneTts::default()),
        tools: None,
    }
}

fn webhook_settings(a: &mut ServeArgs) {
    a.webhook_secret = Some(SECRET.into());
    a.webhook_retry_base_ms = 50;
    a.webhook_max_attempts = 100;
}

/// A call: one typed question, its reply played, then the caller hangs up.
async fn call(s: &TestServer, assistant: &str, text: &str) -> String {
    let events = typed_call(s, assistant, text, 1).await;
    events[0]["callId"].as_str().unwrap().to_string()
}

async fn deliveries(s: &TestServer, query: &str) -> Vec<Value> {
    let res = TestServer::http().get(s.at(&format!("/api/webhooks?limit=100{query}"))).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
}

/// Waits until `check` holds for the call's deliveries.
async fn wait_for(s: &TestServer, call: &str, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = deliveries(s, &format!("&callId={call}")).await;
        if check(&d) {
            return d;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {d:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const CALL_EVENTS: usize = 5; // in-progress, 2 transcripts, ended, end-of-call-report

#[tokio::test]
async fn events_survive_a_failing_receiver_and_a_restart_and_arrive_once_each_signed() {
    let (url, rx) = receiver().await;
    let mut first = TestServer::start_with_providers(TestDb::chosen().await, providers(), webhook_settings).await;
    let assistant = first
        .create_assistant(json!({ "name": "pool", "firstMessageMode": "user-speaks-first", "serverUrl": url }))
        .await;

    // The receiver is down: the events wait in the outbox, retried.
    let call_1 = call(&first, &assistant, "When does the pool open?").await;
    wait_for(&first, &call_1, "the first call's events, tried and failed", |d| {
        d.len() == CALL_EVENTS && d.iter().all(|e| e["state"] == "pending" && e["attempts"].as_i64().unwrap() >= 1)
    })
    .await;
    assert!(rx.raw.load(Ordering::SeqCst) >= CALL_EVENTS);
    assert!(rx.accepted.lock().unwrap().is_empty());

    // The server restarts on the same database while the receiver is still down.
    first.stop().await;
    let db = first.db;
    let s = TestServer::start_with_providers(db, providers(), webhook_settings).await;
    // Then the receiver comes back: what was queued is delivered by the new process.
    rx.up.store(true, Ordering::SeqCst);
    let first_events = wait_for(&s, &call_1, "the first call's events, delivered after the restart", |d| d.iter().all(|e| e["state"] == "delivered")).await;
    assert_eq!(first_events.len(), CALL_EVENTS);
    assert!(first_events.iter().all(|e| e["attempts"].as_i64().unwrap() > 1), "{first_events:#?}");

    // A call while all is well.
    let call_2 = call(&s, &assistant, "And on Sunday?").await;
    let second_events = wait_for(&s, &call_2, "the second call's events", |d| d.len() == CALL_EVENTS && d.iter().all(|e| e["state"] == "delivered")).await;

    // Exactly once each after deduplication, every one signed, nothing unknown.
    let accepted = rx.accepted.lock().unwrap().clone();
    let mut outbox_ids: Vec<String> = first_events.iter().chain(&second_events).map(|e| e["id"].as_str().unwrap().to_string()).collect();
    outbox_ids.sort();
    let mut got_ids: Vec<String> = accepted.keys().cloned().collect();
    got_ids.sort();
    assert_eq!(got_ids, outbox_ids, "the receiver saw exactly the outbox's events");
    assert_eq!(rx.bad_signatures.load(Ordering::SeqCst), 0);
    assert!(rx.raw.load(Ordering::SeqCst) > accepted.len(), "the failures were real attempts");

    // What the events say.
    let of_call = |call: &str, kind: &str| -> Vec<Value> {
        accepted.values().map(|(_, b)| b.clone()).filter(|b| b["message"]["call"]["id"] == call && b["message"]["type"] == kind).collect()
    };
    for c in [&call_1, &call_2] {
        let statuses: Vec<String> = of_call(c, "status-update").iter().map(|b| b["message"]["status"].as_str().unwrap().to_string()).collect();
        assert!(statuses.contains(&"in-progress".to_string()) && statuses.contains(&"ended".to_string()), "{statuses:?}");
        let transcripts = of_call(c, "transcript");
        assert_eq!(transcripts.len(), 2);
        assert!(transcripts.iter().any(|t| t["message"]["role"] == "assistant" && t["message"]["transcript"] == "The pool opens at six."));
        let report = of_call(c, "end-of-call-report").pop().expect("an end-of-call report");
        let m = &report["message"];
        assert_eq!(m["endedReason"], "customer-ended-call");
        assert_eq!(m["assistant"]["id"], assistant.as_str());
        assert!(m["durationMs"].as_i64().unwrap() > 0, "{m}");
        let transcript = m["transcript"].as_str().unwrap();
        assert!(transcript.contains("AI: The pool opens at six."), "{transcript}");
        assert!(transcript.starts_with("User: "), "{transcript}");
        assert_eq!(m["messages"].as_array().unwrap().len(), 2);
        assert!(m["latency"]["voiceToVoiceMs"]["p50"].is_number(), "{m}");
    }

    // One event in full, with the body it was sent with.
    let id = first_events[0]["id"].as_str().unwrap();
    let one: Value = TestServer::http().get(s.at(&format!("/api/webhooks/{id}"))).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["body"]["id"], id);
    assert_eq!(one["state"], "delivered");
    assert_eq!(one["lastStatus"], 204);
}

#[tokio::test]
async fn the_webhook_api_refuses_bad_input() {
    let s = TestServer::start_with(TestDb::chosen().await, webhook_settings).await;
    for (query, status) in [("?state=lost", 400), ("?callId=../../x", 400), ("?limit=0", 400), ("?cursor=abc", 400), ("?bogus=1", 400), ("?type=", 400)] {
        let res = TestServer::http().get(s.at(&format!("/api/webhooks{query}"))).bearer_auth(&s.admin).send().await.unwrap();
        let (got, _, body) = error_code(res).await;
        assert_eq!(got, status, "{query}: {body}");
    }
    for path in ["/api/webhooks/nope", "/api/webhooks/0190d5f4-0000-7000-8000-000000000000"] {
        let res = TestServer::http().get(s.at(path)).bearer_auth(&s.admin).send().await.unwrap();
        assert_eq!(error_code(res).await.0, 404, "{path}");
    }
    let res = TestServer::http().post(s.at("/api/webhooks/0190d5f4-0000-7000-8000-000000000000/retry")).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(error_code(res).await.0, 404);
    let res = TestServer::http().get(s.at("/api/webhooks")).send().await.unwrap();
    assert_eq!(error_code(res).await.0, 401);
}

#[tokio::test]
async fn an_event_given_up_on_can_be_retried_by_hand() {
    let (url, rx) = receiver().await;
    let s = TestServer::start_with_providers(TestDb::chosen().await, providers(), |a| {
        webhook_settings(a);
        a.webhook_max_attempts = 2;
    })
    .await;
    let assistant = s.create_assistant(json!({ "name": "x", "firstMessageMode": "user-speaks-first", "serverUrl": url })).await;
    let c = call(&s, &assistant, "Hello?").await;
    let failed = wait_for(&s, &c, "events given up on", |d| d.len() == CALL_EVENTS && d.iter().all(|e| e["state"] == "failed")).await;
    assert!(failed.iter().all(|e| e["attempts"] == 2 && e["lastStatus"] == 500 && e["lastError"].is_string()), "{failed:#?}");
    let listed = deliveries(&s, "&state=failed").await;
    assert_eq!(listed.len(), CALL_EVENTS);

    rx.up.store(true, Ordering::SeqCst);
    for e in &failed {
        let res = TestServer::http().post(s.at(&format!("/api/webhooks/{}/retry", e["id"].as_str().unwrap()))).bearer_auth(&s.admin).send().await.unwrap();
        assert_eq!(res.status(), 202);
    }
    wait_for(&s, &c, "retried events delivered", |d| d.iter().all(|e| e["state"] == "delivered")).await;
    assert_eq!(rx.accepted.lock().unwrap().len(), CALL_EVENTS);
}
