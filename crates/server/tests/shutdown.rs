//! Graceful shutdown: readiness turns 503 while draining, an in-flight request
//! finishes, idle connections close, new connections are refused, live calls get
//! the deadline and are then closed with 1012 and their records ended, and a drain
//! whose calls end on their own returns without waiting out the deadline.

mod common;

use std::time::Duration;

use common::{TestServer, error_code};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use voxgate_store::calls::CallFilter;
use voxgate_store::{PoolOptions, Store};
use voxgate_testkit::TestDb;

/// An HTTP/1.1 answer read off a raw socket.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("status {}: body is not JSON: {e}: {:?}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response (Content-Length or chunked) from `s`.
async fn read_response(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.expect("read the response head");
        assert!(n > 0, "the connection closed before a response head; got {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("an ASCII head");
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if let Some(len) = find("content-length") {
        let len: usize = len.parse().unwrap();
        while rest.len() < len {
            let n = s.read(&mut chunk).await.expect("read the body");
            assert!(n > 0, "the connection closed mid-body");
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            // Make sure a whole size line is buffered.
            while !rest.windows(2).any(|w| w == b"\r\n") {
                let n = s.read(&mut chunk).await.expect("read a chunk size");
                assert!(n > 0, "the connection closed mid-chunk");
                rest.extend_from_slice(&chunk[..n]);
            }
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
            rest.drain(..eol + 2);
            while rest.len() < size + 2 {
                let n = s.read(&mut chunk).await.expect("read a chunk");
                assert!(n > 0, "the connection closed mid-chunk");
                rest.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
            if size == 0 {
                break body;
            }
        }
    } else {
        // Until EOF.
        s.read_to_end(&mut rest).await.unwrap();
        rest
    };
    RawResponse { status, headers, body }
}

/// True once the peer has closed `s` (EOF or reset), within `within`.
async fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(tokio::time::timeout(within, s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A second store on the test database (the server's own is closed by the drain).
async fn fresh_store(db: &TestDb) -> Store {
    Store::connect(&db.url, &PoolOptions::default()).await.expect("reconnect to the test database")
}

#[tokio::test]
async fn drain_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    let mut s = TestServer::start().await;
    let drain_timeout = Duration::from_secs(5); // TestServer's default

    // An idle keep-alive connection that has served one request.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /api/ready HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let ready = read_response(&mut idle).await;
    assert_eq!(ready.status, 200, "{}", String::from_utf8_lossy(&ready.body));
    assert_eq!(ready.json()["status"], "ready");

    // A create whose body is half sent.
    let body = br#"{"name":"Drained but delivered","firstMessage":"Hello from the drain test"}"#;
    let half = body.len() / 2;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/assistants HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.admin,
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..half]).await.unwrap();
    slow.flush().await.unwrap();
    // Let the server parse the head and enter the handler (which waits for the body).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = s.running.take().unwrap();
    let lifecycle = r.lifecycle.clone();
    assert!(!lifecycle.is_draining());
    let drain = tokio::spawn(r.drain());
    wait_until("the lifecycle reports draining", || lifecycle.is_draining()).await;

    // The idle keep-alive connection is closed rather than holding the drain up.
    assert!(closed_by_peer(&mut idle, Duration::from_secs(3)).await, "an idle keep-alive connection stays open during the drain");

    // New connections are refused once the listener stops.
    let mut refused = false;
    for _ in 0..100 {
        match TcpStream::connect(s.addr).await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(mut c) => {
                // Accepted by the kernel's backlog before the listener closed: it must
                // not be served.
                let _ = c.write_all(b"GET /api/health HTTP/1.1\r\nHost: test\r\n\r\n").await;
                let mut b = [0u8; 16];
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await {
                    assert_eq!(n, 0, "a new connection was served during the drain: {:?}", String::from_utf8_lossy(&b[..n]));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "new connections are still accepted during the drain");
    assert!(!drain.is_finished(), "the drain ended with a request in flight");

    // The rest of the body: the request completes normally.
    slow.write_all(&body[half..]).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), read_response(&mut slow)).await.expect("an answer to the in-flight request");
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    assert!(res.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{:?}", res.headers);
    let created = res.json();
    assert_eq!(created["name"], "Drained but delivered");
    assert_eq!(created["firstMessage"], "Hello from the drain test");
    let id = created["id"].as_str().expect("an id").to_string();
    // No more requests on a draining connection.
    assert!(closed_by_peer(&mut slow, Duration::from_secs(3)).await, "the in-flight connection stays open after its answer");

    tokio::time::timeout(drain_timeout + Duration::from_secs(5), drain)
        .await
        .expect("the drain finishes within DRAIN_TIMEOUT")
        .expect("the drain task does not panic")
        .expect("the drain succeeds");

    // The assistant was stored, not just answered.
    let store = fresh_store(&s.db).await;
    assert_eq!(store.get_assistant(&id).await.expect("the created assistant is stored").spec.name, "Drained but delivered");
}

#[tokio::test]
async fn readiness_is_503_while_draining_and_new_calls_are_refused() {
    let mut s = TestServer::start().await;
    let http = TestServer::http();

    let res = http.get(s.at("/api/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");

    // Draining, still serving: not ready, come back later.
    let lifecycle = s.running.as_ref().unwrap().lifecycle.clone();
    lifecycle.start_draining();
    let res = http.get(s.at("/api/ready")).send().await.unwrap();
    let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    let retry: u64 = retry.expect("Retry-After on a draining 503").parse().expect("Retry-After in whole seconds");
    assert!(retry >= 1);
    // Liveness is unaffected: the process is fine, just leaving.
    assert_eq!(http.get(s.at("/api/health")).send().await.unwrap().status(), 200);

    // And no new calls are admitted while draining.
    let id = s.assistant("Draining").await;
    let err = tokio_tungstenite::connect_async(s.ws_with_key(&format!("assistantId={id}"), &s.admin)).await.expect_err("a call opened while draining");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status(), 503),
        other => panic!("expected an HTTP 503 refusal, got {other}"),
    }

    s.stop().await;
}

#[tokio::test]
async fn readiness_is_503_when_the_database_is_unreachable() {
    let mut s = TestServer::start().await;
    let http = TestServer::http();
    assert_eq!(http.get(s.at("/api/ready")).send().await.unwrap().status(), 200);

    // The server's pools are the test's pools: closing them takes the database away
    // from the running server.
    s.store.close().await;
    let res = http.get(s.at("/api/ready")).send().await.unwrap();
    let has_retry = res.headers().contains_key("retry-after");
    let (status, code, body) = error_code(res).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"), "{body}");
    assert!(has_retry, "Retry-After on a 503");
    assert_eq!(http.get(s.at("/api/health")).send().await.unwrap().status(), 200, "liveness does not depend on the database");

    s.stop().await;
}

async fn open_call(s: &TestServer, assistant: &str) -> (tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_with_key(&format!("assistantId={assistant}"), &s.admin)).await.unwrap();
    let hello = common::start_call(&mut ws).await;
    assert_eq!(hello["type"], "call-started");
    (ws, hello["callId"].as_str().unwrap().to_string())
}

/// Reads until the close frame (skipping audio and events) and returns its code
/// (None: closed without one).
async fn close_code_of(ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>) -> Option<u16> {
    ending_of(ws).await.1
}

/// Reads until the server closes: the `reason` of the `call-ended` event on the way
/// (if any) and the close code (None: closed without a close frame).
async fn ending_of(ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>) -> (Option<String>, Option<u16>) {
    let mut ended = None;
    while let Some(m) = ws.next().await {
        match m {
            Ok(Message::Close(frame)) => return (ended, frame.map(|f| u16::from(f.code))),
            Ok(Message::Text(t)) => {
                let ev: Value = serde_json::from_str(&t).expect("events are JSON");
                if ev["type"] == "call-ended" {
                    ended = ev["reason"].as_str().map(str::to_owned);
                }
            }
            Ok(_) => continue,
            Err(_) => return (ended, None),
        }
    }
    (ended, None)
}

#[tokio::test]
async fn drain_deadline_closes_live_calls_with_1012_and_ends_their_records() {
    let mut s = TestServer::start_with(TestDb::chosen().await, |a| a.drain_timeout = 1).await;
    let assistant = s.assistant("Long talker").await;
    let mut calls = Vec::new();
    for _ in 0..5 {
        calls.push(open_call(&s, &assistant).await);
    }
    let live = s.store.list_calls(&CallFilter { assistant_id: Some(assistant.clone()), limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(live.items.len(), 5);
    assert!(live.items.iter().all(|c| c.status == voxgate_domain::CallStatus::InProgress));

    let r = s.running.take().unwrap();
    let drain = tokio::spawn(r.drain());

    // The calls are not cut at once: they get the deadline.
    let mut ws0 = calls.remove(0);
    ws0.0.send(Message::Text(r#"{"type":"ping","id":1}"#.into())).await.unwrap();
    // The greeting's audio and events come first; the pong follows, before any close.
    loop {
        let ev = common::next_event(&mut ws0.0).await.expect("a live call still answers during the drain, but it closed");
        assert_ne!(ev["type"], "call-ended", "a live call still answers during the drain, got {ev}");
        if ev["type"] == "pong" {
            assert_eq!(ev["id"], 1);
            break;
        }
    }
    calls.insert(0, ws0);

    for (ws, id) in calls.iter_mut() {
        let (ended, code) = tokio::time::timeout(Duration::from_secs(10), ending_of(ws)).await.expect("the call closes after the deadline");
        assert_eq!(code, Some(u16::from(CloseCode::Restart)), "call {id} closed with {code:?}, not 1012");
        assert_eq!(ended.as_deref(), Some("server-shutdown"), "call {id}: call-ended before the close");
    }
    tokio::time::timeout(Duration::from_secs(1 + 15), drain)
        .await
        .expect("the drain returns after closing the calls")
        .unwrap()
        .expect("the drain succeeds");

    let store = fresh_store(&s.db).await;
    let page = store.list_calls(&CallFilter { assistant_id: Some(assistant.clone()), limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.len(), 5);
    for c in &page.items {
        assert_eq!(c.status, voxgate_domain::CallStatus::Ended, "{c:?}");
        assert_eq!(c.ended_reason.as_deref(), Some("server-shutdown"), "{c:?}");
        assert!(c.ended_at.is_some(), "{c:?}");
    }
    let ids: std::collections::HashSet<_> = page.items.iter().map(|c| c.id.clone()).collect();
    assert!(calls.iter().all(|(_, id)| ids.contains(id)));
}

#[tokio::test]
async fn drain_returns_once_calls_end_on_their_own() {
    // A deadline far longer than the test may run: the drain must not wait it out.
    let mut s = TestServer::start_with(TestDb::chosen().await, |a| a.drain_timeout = 120).await;
    let assistant = s.assistant("Short talker").await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(open_call(&s, &assistant).await);
    }

    let r = s.running.take().unwrap();
    let lifecycle = r.lifecycle.clone();
    let drain = tokio::spawn(r.drain());
    wait_until("draining", || lifecycle.is_draining()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!drain.is_finished(), "the drain returned while calls were live");

    for (ws, id) in calls.iter_mut() {
        ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
        let code = tokio::time::timeout(Duration::from_secs(5), close_code_of(ws)).await.expect("the call closes");
        assert_eq!(code, Some(1000), "call {id}");
    }
    tokio::time::timeout(Duration::from_secs(20), drain)
        .await
        .expect("the drain returns once the last call has ended, well before its deadline")
        .unwrap()
        .expect("the drain succeeds");

    let store = fresh_store(&s.db).await;
    let page = store.list_calls(&CallFilter { assistant_id: Some(assistant), limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.len(), 3);
    for c in &page.items {
        assert_eq!(c.status, voxgate_domain::CallStatus::Ended, "{c:?}");
        assert_eq!(c.ended_reason.as_deref(), Some("customer-ended-call"), "{c:?}");
    }
}
