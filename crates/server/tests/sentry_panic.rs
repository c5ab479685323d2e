//! A panic inside a call's pipeline (here, a language model that panics) ends that
//! call with 1011 and a finished record, leaves the server up for the next call,
//! and is reported to Sentry. The Sentry server is a fake on loopback receiving
//! the real envelope; Sentry's client is process-wide, so this is a binary of its own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxgate_server::session::providers::Providers;
use voxgate_services::ServiceError;
use voxgate_services::llm::{ChatRequest, Llm, LlmEvent};
use voxgate_services::scripted::{ScriptedStt, ToneTts};
use voxgate_testkit::TestDb;

/// A model that panics on its first request and answers the next ones.
struct Fragile(Mutex<u32>);

impl Llm for Fragile {
    fn chat(&self, _: ChatRequest) -> BoxStream<'static, Result<LlmEvent, ServiceError>> {
        let n = {
            let mut g = self.0.lock().unwrap();
            *g += 1;
            *g
        };
        if n == 1 {
            panic!("the model blew up (test)");
        }
        futures_util::stream::iter([Ok(LlmEvent::Token("Fine.".into())), Ok(LlmEvent::Done)]).boxed()
    }
}

#[test]
fn a_panicking_stage_ends_only_its_call_and_is_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let guard = voxgate_server::telemetry::init_sentry(Some(&format!("http://public@127.0.0.1:{port}/1"))).unwrap().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let (first, second) = rt.block_on(async {
        let got = received.clone();
        let fake = axum::Router::new().route(
            "/api/{project}/envelope/",
            axum::routing::post(move |body: Bytes| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move { axum::serve(listener, fake).await.unwrap() });

        let providers = Providers {
            stt: Arc::new(ScriptedStt::new(Vec::<String>::new(), Duration::ZERO)),
            llm: Arc::new(Fragile(Mutex::new(0))),
            tts: Arc::new(ToneTts { rate: 16_000, ms_per_char: 20, chunk_ms: 20, first_delay: Duration::ZERO }),
            tools: None,
        };
        let mut s = common::TestServer::start_with_providers(TestDb::chosen().await, providers, |_| {}).await;
        // The caller speaks first: the first reply is the model's.
        let id = s.create_assistant(json!({"name": "Fragile", "firstMessageMode": "user-speaks-first", "firstMessage": null})).await;
        let mut ends = Vec::new();
        for _ in 0..2 {
            let mut req = s.ws_url(&format!("assistantId={id}")).into_client_request().unwrap();
            req.headers_mut().insert("authorization", format!("Bearer {}", s.admin).parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("the call opens");
            let started = common::start_call(&mut ws).await;
            ws.send(Message::Text(json!({"type": "text", "text": "hello"}).to_string().into())).await.unwrap();
            let mut close = None;
            let mut ended = None;
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                match m {
                    Ok(Message::Text(t)) => {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        if v["type"] == "call-ended" {
                            ended = v["reason"].as_str().map(str::to_owned);
                        }
                        // The second call answers; then hang up.
                        if v["type"] == "transcript" && v["role"] == "assistant" {
                            ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
                        }
                    }
                    Ok(Message::Close(c)) => {
                        close = c.map(|c| u16::from(c.code));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let call_id = started["callId"].as_str().unwrap().to_string();
            let mut record = None;
            for _ in 0..100 {
                let c = s.store.get_call(&call_id).await.unwrap();
                if c.status == voxgate_domain::CallStatus::Ended {
                    record = c.ended_reason;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ends.push((ended, close, record));
        }
        s.stop().await;
        (ends[0].clone(), ends[1].clone())
    });
    assert_eq!(first, (Some("pipeline-error".into()), Some(1011), Some("pipeline-error".into())), "the call whose model panicked");
    assert_eq!(second, (Some("customer-ended-call".into()), Some(1000), Some("customer-ended-call".into())), "the next call");

    let client = sentry::Hub::current().client().expect("a Sentry client");
    assert!(client.flush(Some(Duration::from_secs(5))));
    let mut found = false;
    for _ in 0..50 {
        found = received.lock().unwrap().iter().any(|e| e.contains("the model blew up (test)"));
        if found {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(found, "the panic reached Sentry; got {:?}", received.lock().unwrap());
    drop(guard);
    rt.shutdown_timeout(Duration::from_secs(2));
}
