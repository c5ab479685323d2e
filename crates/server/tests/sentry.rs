//! Error tracking: a real 5xx is answered without internals and reported to Sentry
//! with its request id and route, and without the caller's key. The Sentry server
//! is a fake (a real HTTP server on loopback) receiving the real envelope.
//!
//! Sentry's client is process-wide, so this is its own test binary, and like
//! `main.rs` it starts Sentry before the runtime. Panics are not covered: no route
//! panics on any input, and we add no test-only routes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::HeaderMap;
use common::{TestServer, error_code};
use voxgate_domain::clock::new_id;

/// What the fake Sentry received: (project id, content-encoding, body).
type Received = Arc<Mutex<Vec<(String, Option<String>, Vec<u8>)>>>;

/// Envelope bodies as text. The reqwest transport of sentry 0.49 sends them
/// uncompressed; anything else must be decoded before the checks mean anything.
fn envelopes(received: &Received) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|(project, encoding, body)| {
            assert_eq!(project, "1", "the project id of the DSN");
            match encoding.as_deref() {
                None | Some("identity") => String::from_utf8_lossy(body).into_owned(),
                Some(other) => panic!("the Sentry transport now sends {other}-encoded envelopes; decode them here"),
            }
        })
        .collect()
}

#[test]
fn a_server_error_is_reported_with_its_request_id_and_route_and_no_secrets() {
    // The fake Sentry's port must be known before Sentry starts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();

    // As in main.rs: Sentry first, on the main thread, then the runtime.
    let guard = voxgate_server::telemetry::init_sentry(Some(&format!("http://public@127.0.0.1:{port}/1")))
        .expect("a valid DSN")
        .expect("Sentry is on with a DSN");
    assert!(voxgate_server::telemetry::init_sentry(Some("not a dsn")).is_err());
    assert!(voxgate_server::telemetry::init_sentry(None).unwrap().is_none());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let received: Received = Arc::default();
    let (key, request_id, not_reported_id, raw_id) = rt.block_on(async {
        let got = received.clone();
        let fake = axum::Router::new().route(
            "/api/{project}/envelope/",
            axum::routing::post(move |Path(project): Path<String>, headers: HeaderMap, body: Bytes| {
                let got = got.clone();
                async move {
                    let encoding = headers.get("content-encoding").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    got.lock().unwrap().push((project, encoding, body.to_vec()));
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move { axum::serve(listener, fake).await.unwrap() });

        let s = TestServer::start().await;
        let http = TestServer::http();

        // A client error is not reported.
        let res = http.get(s.at(&format!("/api/assistants/{}", new_id()))).bearer_auth(&s.admin).send().await.unwrap();
        let not_reported_id = res.headers().get("x-request-id").expect("x-request-id").to_str().unwrap().to_string();
        assert_eq!(error_code(res).await.0, 404);

        // A stored assistant whose spec is not JSON: reading it is a server error.
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&s.db.url).await.expect("connect to the test database");
        let id = new_id();
        sqlx::query("INSERT INTO assistants (id, name, spec, created_at, updated_at) VALUES ($1, 'x', '{not json', 0, 0)")
            .bind(&id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let res = http.get(s.at(&format!("/api/assistants/{id}"))).bearer_auth(&s.admin).send().await.unwrap();
        let request_id = res.headers().get("x-request-id").expect("an x-request-id on the 500").to_str().unwrap().to_string();
        assert!(!request_id.is_empty());
        let (status, code, body) = error_code(res).await;
        assert_eq!((status, code.as_str()), (500, "internal"), "{body}");
        let text = body.to_string().to_lowercase();
        for leak in ["json", "expected", "sqlx", "corrupt", "assistants.spec", ".rs", "/src/", "line ", "column"] {
            assert!(!text.contains(leak), "the 500 leaks {leak:?}: {body}");
        }
        (s.admin.clone(), request_id, not_reported_id, id)
    });

    // Flushing blocks; the fake server lives on the runtime's workers meanwhile.
    let client = sentry::Hub::current().client().expect("a Sentry client on the main hub");
    assert!(client.flush(Some(Duration::from_secs(5))), "Sentry flushed its queue");
    let mut found = None;
    for _ in 0..50 {
        found = envelopes(&received).into_iter().find(|e| e.contains(&request_id));
        if found.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let all = envelopes(&received);
    let envelope = found.unwrap_or_else(|| panic!("no envelope carries request id {request_id}; received {}: {all:#?}", all.len()));

    // The envelope: a header line, then item header and payload lines.
    let event = envelope
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("tags").is_some())
        .unwrap_or_else(|| panic!("no event in {envelope}"));
    assert_eq!(event["tags"]["request_id"], request_id.as_str(), "{event}");
    assert_eq!(event["tags"]["route"], "/api/assistants/{id}", "{event}");
    assert_eq!(event["tags"]["status"], "500", "{event}");
    // Sentry omits the level when it is the default, error.
    assert!(event.get("level").is_none_or(|l| l == "error"), "{}", event["level"]);
    assert_eq!(event["message"], "GET /api/assistants/{id} answered 500");
    assert!(event.get("request").is_none(), "the request (headers, query) is not attached: {event}");

    for e in &all {
        assert!(!e.contains(&key), "an envelope carries the bearer key");
        assert!(!e.contains(&key[key.len() - 12..]), "an envelope carries part of the bearer key");
        assert!(!e.contains(&not_reported_id), "a 404 was reported");
    }
    let reports = all.iter().filter(|e| e.contains(&request_id)).count();
    assert_eq!(reports, 1, "the 500 is reported once");
    // The route template is reported, not the path with its id.
    assert!(!envelope.contains(&raw_id), "the raw path is in the event");
    drop(guard);
    rt.shutdown_timeout(Duration::from_secs(2));
}
