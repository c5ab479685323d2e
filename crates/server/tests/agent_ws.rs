//! `/agent` under hostile input: refusals before the upgrade are 4xx JSON; bad input
//! after it closes the socket with a code and a reason; every call record ends with
//! a reason, whatever the client does and when the server drains.

mod common;

use std::time::Duration;

use common::{TestServer, error_code};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxgate_domain::key::KeyKind;
use voxgate_domain::{Call, CallStatus};
use voxgate_store::calls::CallFilter;
use voxgate_testkit::TestDb;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `voxgate_websocket_connections` is one gauge for the whole process: tests that
/// open calls hold this for reading; the test that reads the gauge holds it alone.
static LIVE_CALLS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const APP: &str = "https://app.example.com";

async fn connect(s: &TestServer, query: &str, headers: &[(&str, &str)]) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut req = s.ws_url(query).into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    tokio_tungstenite::connect_async(req).await
}

/// Expects the upgrade to be refused; returns the status, the error code and the headers.
async fn refused(s: &TestServer, query: &str, headers: &[(&str, &str)]) -> (u16, String, tungstenite::http::HeaderMap) {
    match connect(s, query, headers).await {
        Ok(_) => panic!("{query}: the upgrade was accepted"),
        Err(tungstenite::Error::Http(res)) => {
            let status = res.status().as_u16();
            let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            assert!(ct.starts_with("application/json"), "{query}: {status} with content-type {ct:?}");
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{query}: {status}: body is not JSON: {e}"));
            let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {body}")).to_string();
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
            assert!(res.headers().contains_key("x-request-id"), "{query}: no x-request-id");
            (status, code, res.headers().clone())
        }
        Err(e) => panic!("{query}: expected an HTTP refusal, got {e}"),
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Opens a call with the admin key and sends `start`; returns the socket and the call id.
async fn open_call(s: &TestServer, assistant: &str) -> (Ws, String) {
    let (mut ws, res) = connect(s, &format!("assistantId={assistant}"), &[("authorization", &bearer(&s.admin))]).await.unwrap();
    assert_eq!(res.status(), 101);
    let hello = common::start_call(&mut ws).await;
    assert_eq!(hello["type"], "call-started", "{hello}");
    assert_eq!(hello["protocol"], "voxgate.v1");
    assert_eq!(hello["input"], json!({"encoding": "pcm16", "sampleRate": 16000}), "{hello}");
    assert_eq!(hello["output"], json!({"encoding": "pcm16", "sampleRate": 16000}), "{hello}");
    (ws, hello["callId"].as_str().unwrap().to_string())
}

/// The next event of type `ty`, skipping audio and the other events (the greeting is
/// spoken at once, so its events interleave with the replies); fails if the socket closes.
async fn event_of(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let ev = common::next_event(ws).await.unwrap_or_else(|| panic!("the socket closed before a {ty} event"));
        if ev["type"] == ty {
            return ev;
        }
    }
}

/// How the server ended a call: the `error` and `call-ended` events it sent before
/// closing, and the close frame.
#[derive(Debug, Default)]
struct Ending {
    /// The last `error` event.
    error: Option<Value>,
    /// The `reason` of `call-ended`.
    ended: Option<String>,
    /// `Some((code, reason))` for a close frame, `None` when the connection just ended.
    close: Option<(u16, String)>,
}

/// Reads until the server closes, noting the `error` and `call-ended` events on the
/// way. Fails after 10 s.
async fn ending_of(ws: &mut Ws) -> Ending {
    ending_within(ws, Duration::from_secs(10)).await
}

async fn ending_within(ws: &mut Ws, within: Duration) -> Ending {
    tokio::time::timeout(within, async {
        let mut e = Ending::default();
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => {
                    e.close = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return e;
                }
                Some(Ok(Message::Text(t))) => {
                    let ev: Value = serde_json::from_str(&t).unwrap_or_else(|err| panic!("an event that is not JSON: {err}: {t}"));
                    assert!(e.ended.is_none(), "an event after call-ended: {ev}");
                    match ev["type"].as_str() {
                        Some("error") => e.error = Some(ev),
                        Some("call-ended") => e.ended = Some(ev["reason"].as_str().expect("a reason").to_string()),
                        _ => {}
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return e,
            }
        }
    })
    .await
    .expect("the server closes the socket")
}

/// Reads until the server closes: `Some((code, reason))` for a close frame, `None`
/// when the connection just ended. Fails after 10 s.
async fn close_of(ws: &mut Ws) -> Option<(u16, String)> {
    ending_of(ws).await.close
}

/// Expects a fatal protocol error: an `error` event with `code`, `call-ended` with
/// `protocol-error`, then a close frame with `close_code` and a reason. Returns the reason.
async fn fatal(ws: &mut Ws, what: &str, code: &str, close_code: u16) -> String {
    let e = ending_of(ws).await;
    let (got, reason) = e.close.clone().unwrap_or_else(|| panic!("{what}: no close frame: {e:?}"));
    assert_eq!(got, close_code, "{what}: {reason}");
    assert!(!reason.is_empty(), "{what}: a close reason");
    let error = e.error.as_ref().unwrap_or_else(|| panic!("{what}: no error event before the close: {e:?}"));
    assert_eq!(error["code"], code, "{what}: {error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {error}");
    assert_eq!(e.ended.as_deref(), Some("protocol-error"), "{what}: {e:?}");
    reason
}

/// Waits for the record to end and returns it.
async fn ended(store: &voxgate_store::Store, id: &str) -> Call {
    let mut call = None;
    for _ in 0..250 {
        let c = store.get_call(id).await.unwrap();
        if c.status == CallStatus::Ended {
            assert!(c.ended_at.is_some(), "{c:?}");
            return c;
        }
        call = Some(c);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the call record never ended: {call:?}");
}

async fn all_calls(s: &TestServer) -> Vec<Call> {
    s.store.list_calls(&CallFilter { limit: 100, ..Default::default() }).await.unwrap().items
}

#[tokio::test]
async fn refusals_before_the_upgrade_are_json() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    let other = s.assistant("Back office").await;
    let public = s.key(KeyKind::Public, &[&other]).await;
    let admin = bearer(&s.admin);

    // No key at all.
    let (status, code, _) = refused(&s, &format!("assistantId={id}"), &[]).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    // Bad keys: a near miss of a real one, garbage, an empty bearer, and in the query.
    let mut near_miss = s.admin.clone();
    let last = near_miss.pop().unwrap();
    near_miss.push(if last == 'a' { 'b' } else { 'a' });
    for (q, h) in [
        (format!("assistantId={id}"), bearer(&near_miss)),
        (format!("assistantId={id}"), "Bearer not-a-key".to_string()),
        (format!("assistantId={id}"), "Bearer ".to_string()),
        (format!("assistantId={id}"), "Basic dXNlcjpwYXNz".to_string()),
    ] {
        let (status, code, _) = refused(&s, &q, &[("authorization", &h)]).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{h}");
    }
    let (status, _, _) = refused(&s, &format!("assistantId={id}&key={near_miss}"), &[]).await;
    assert_eq!(status, 401);
    // A private key in the URL (which reaches proxy logs): refused, even a valid one,
    // with a message that says where it goes instead; nothing of it is recorded.
    let calls_before = all_calls(&s).await.len();
    let Err(tungstenite::Error::Http(res)) = connect(&s, &format!("assistantId={id}&key={}", s.admin), &[]).await else {
        panic!("a private key in the URL opened a call");
    };
    let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default().to_string();
    assert_eq!((res.status().as_u16(), body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(message.contains("Authorization") && message.contains("token"), "{message}");
    assert!(!message.contains(&s.admin), "{message}");
    assert_eq!(all_calls(&s).await.len(), calls_before, "no call is opened");

    // A public key may only call the assistants it lists.
    let (status, code, _) = refused(&s, &format!("assistantId={id}&key={public}"), &[]).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));

    // assistantId missing, empty, unknown, malformed.
    let (status, code, _) = refused(&s, "", &[("authorization", &admin)]).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    let (status, _, _) = refused(&s, "assistantId=", &[("authorization", &admin)]).await;
    assert!(status == 400 || status == 404, "empty assistantId: {status}");
    let unknown = voxgate_domain::clock::new_id();
    let (status, code, _) = refused(&s, &format!("assistantId={unknown}"), &[("authorization", &admin)]).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    for bad in ["nope", "..%2F..%2Fetc", "%00", "x%27%20OR%201%3D1"] {
        let (status, _, _) = refused(&s, &format!("assistantId={bad}"), &[("authorization", &admin)]).await;
        assert_eq!(status, 404, "{bad}");
    }
    // A deleted assistant takes no calls.
    let res = TestServer::http().delete(s.at(&format!("/api/assistants/{other}"))).bearer_auth(&s.admin).send().await.unwrap();
    assert!(res.status().is_success());
    let (status, _, _) = refused(&s, &format!("assistantId={other}"), &[("authorization", &admin)]).await;
    assert_eq!(status, 404);

    // A plain GET (no upgrade headers), with everything else right.
    let http = TestServer::http();
    let res = http.get(s.at(&format!("/agent?assistantId={id}"))).bearer_auth(&s.admin).send().await.unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    // Other methods: a 4xx JSON answer too.
    let res = http.post(s.at(&format!("/agent?assistantId={id}"))).bearer_auth(&s.admin).send().await.unwrap();
    let (status, _, _) = error_code(res).await;
    assert!((400..500).contains(&status), "POST /agent: {status}");

    // No refusal left a record behind.
    assert!(all_calls(&s).await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn bad_messages_close_with_1007_and_end_the_record() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;

    let cases: Vec<(&str, Message, &str)> = vec![
        ("malformed JSON", Message::Text("{\"type\": \"ping\"".into()), "invalid-json"),
        ("not JSON at all", Message::Text("hello there".into()), "invalid-json"),
        ("JSON but not an object", Message::Text("[1,2,3]".into()), "bad-message"),
        ("no type", Message::Text(r#"{"id":1}"#.into()), "bad-message"),
        ("unknown type", Message::Text(r#"{"type":"launch-missiles"}"#.into()), "bad-message"),
        ("unknown field", Message::Text(r#"{"type":"ping","id":1,"extra":true}"#.into()), "bad-message"),
        ("a field of the wrong type", Message::Text(r#"{"type":"text","text":42}"#.into()), "bad-message"),
        ("odd-length audio", Message::Binary(vec![0u8; 641].into()), "odd-byte-count"),
        ("one byte of audio", Message::Binary(vec![7u8].into()), "odd-byte-count"),
    ];
    for (what, msg, error) in cases {
        let (mut ws, call_id) = open_call(&s, &id).await;
        // Good audio and a ping first: the call works until the bad message.
        ws.send(Message::Binary(vec![0u8; 320].into())).await.unwrap();
        ws.send(Message::Text(r#"{"type":"ping","id":"x"}"#.into())).await.unwrap();
        let pong = event_of(&mut ws, "pong").await;
        assert_eq!(pong, json!({"type": "pong", "id": "x"}), "{what}");

        ws.send(msg).await.unwrap();
        fatal(&mut ws, what, error, 1007).await;
        let call = ended(&s.store, &call_id).await;
        assert_eq!(call.ended_reason.as_deref(), Some("protocol-error"), "{what}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_close_reason_from_a_huge_bad_message_stays_valid() {
    // serde's message quotes the input; the close reason must still fit and be UTF-8.
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    let (mut ws, call_id) = open_call(&s, &id).await;
    let weird = format!(r#"{{"type":"{}"}}"#, "é".repeat(200));
    ws.send(Message::Text(weird.into())).await.unwrap();
    let reason = fatal(&mut ws, "a long unknown type", "bad-message", 1007).await;
    assert!(reason.len() <= 123, "{}", reason.len());
    assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("protocol-error"));
    s.stop().await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start_with(TestDb::chosen().await, |args| args.ws_max_message = 4096).await;
    let id = s.assistant("Front desk").await;

    for big in [Message::Binary(vec![0u8; 64 * 1024].into()), Message::Text(format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(8000)).into())] {
        let (mut ws, call_id) = open_call(&s, &id).await;
        // Just under the limit is fine.
        ws.send(Message::Binary(vec![0u8; 4000].into())).await.unwrap();
        ws.send(Message::Text(r#"{"type":"ping","id":1}"#.into())).await.unwrap();
        let pong = event_of(&mut ws, "pong").await;
        assert_eq!(pong, json!({"type": "pong", "id": 1}));

        let _ = ws.send(big).await; // the server may cut us off mid-send
        // A close frame, if it gets through before the connection goes, says 1009,
        // after an error event that says why.
        let e = ending_of(&mut ws).await;
        if let Some((code, reason)) = &e.close {
            assert_eq!(*code, 1009, "{reason}");
            assert_eq!(e.error.as_ref().map(|ev| ev["code"].clone()), Some(json!("message-too-big")), "{e:?}");
        }
        let call = ended(&s.store, &call_id).await;
        assert_eq!(call.ended_reason.as_deref(), Some("protocol-error"));
    }
    s.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_ends_the_record_as_connection_lost() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;

    // The client vanishes: TCP closed without a closing handshake.
    let (ws, call_id) = open_call(&s, &id).await;
    drop(ws);
    assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("connection-lost"));

    // Mid-message: half a frame, then gone.
    let (mut ws, call_id) = open_call(&s, &id).await;
    ws.send(Message::Text(r#"{"type":"ping","id":1}"#.into())).await.unwrap();
    event_of(&mut ws, "pong").await;
    let MaybeTlsStream::Plain(tcp) = ws.get_mut() else { panic!("plain TCP") };
    use tokio::io::AsyncWriteExt;
    tcp.write_all(&[0x82, 0xFE, 0x10, 0x00, 1, 2, 3, 4, 0, 0]).await.unwrap(); // a masked binary frame header, 4096 bytes announced
    drop(ws);
    assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("connection-lost"));

    // A reset (RST), as when a phone drops off the network and the stack gives up.
    let (ws, call_id) = open_call(&s, &id).await;
    let MaybeTlsStream::Plain(tcp) = ws.get_ref() else { panic!("plain TCP") };
    tcp.set_zero_linger().unwrap();
    drop(ws);
    assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("connection-lost"));
    s.stop().await;
}

#[tokio::test]
async fn a_public_key_from_an_allowed_origin_works_in_the_query() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start_with(TestDb::chosen().await, |args| args.allowed_origins = APP.into()).await;
    let id = s.assistant("Widget").await;
    let public = s.key(KeyKind::Public, &[&id]).await;

    let (mut ws, res) = connect(&s, &format!("assistantId={id}&key={public}"), &[("origin", APP)]).await.unwrap();
    assert_eq!(res.status(), 101);
    let hello = common::start_call(&mut ws).await;
    assert_eq!(hello["type"], "call-started");
    assert_eq!(hello["assistantId"], id.as_str());
    let call_id = hello["callId"].as_str().unwrap().to_string();
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    let e = ending_of(&mut ws).await;
    assert_eq!(e.close.as_ref().map(|c| c.0), Some(1000), "{e:?}");
    assert_eq!(e.ended.as_deref(), Some("customer-ended-call"), "{e:?}");
    assert!(e.error.is_none(), "{e:?}");
    let call = ended(&s.store, &call_id).await;
    assert_eq!(call.ended_reason.as_deref(), Some("customer-ended-call"));
    assert!(call.key_id.is_some(), "the call records which key opened it");

    // The same key from another origin: refused.
    let (status, code, _) = refused(&s, &format!("assistantId={id}&key={public}"), &[("origin", "https://evil.example.com")]).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    // And with no Origin at all (not a browser): refused too.
    let (status, code, _) = refused(&s, &format!("assistantId={id}&key={public}"), &[]).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    // A public key cannot use the API.
    let res = TestServer::http().get(s.at("/api/assistants")).bearer_auth(&public).send().await.unwrap();
    assert!(matches!(res.status().as_u16(), 401 | 403), "{}", res.status());
    s.stop().await;
}


async fn gauge_reaches(s: &TestServer, want: f64) {
    let mut got = 0.0;
    for _ in 0..150 {
        got = common::live_gauge(s).await;
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("voxgate_websocket_connections is {got}, expected {want}");
}

#[tokio::test]
async fn the_live_connections_gauge_follows_calls() {
    let _g = LIVE_CALLS.write().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // calls of earlier tests finish their teardown
    let base = common::live_gauge(&s).await;

    let (mut a, a_id) = open_call(&s, &id).await;
    gauge_reaches(&s, base + 1.0).await;
    let (b, b_id) = open_call(&s, &id).await;
    gauge_reaches(&s, base + 2.0).await;

    a.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    let _ = close_of(&mut a).await;
    ended(&s.store, &a_id).await;
    gauge_reaches(&s, base + 1.0).await;

    drop(b); // a lost connection counts down too
    ended(&s.store, &b_id).await;
    gauge_reaches(&s, base).await;

    // A protocol error as well.
    let (mut c, _) = open_call(&s, &id).await;
    gauge_reaches(&s, base + 1.0).await;
    c.send(Message::Binary(vec![1u8; 3].into())).await.unwrap();
    let _ = close_of(&mut c).await;
    gauge_reaches(&s, base).await;

    // Refused upgrades never count.
    let _ = refused(&s, &format!("assistantId={id}"), &[]).await;
    assert_eq!(common::live_gauge(&s).await, base);
    s.stop().await;
}

#[tokio::test]
async fn draining_refuses_new_calls_and_closes_live_ones_with_1012() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start_with(TestDb::chosen().await, |args| args.drain_timeout = 1).await;
    let id = s.assistant("Front desk").await;
    let (mut ws, call_id) = open_call(&s, &id).await;

    s.running.as_ref().unwrap().lifecycle.start_draining();

    // New calls: 503 with Retry-After, before any record.
    let (status, code, headers) = refused(&s, &format!("assistantId={id}"), &[("authorization", &bearer(&s.admin))]).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    let retry: u64 = headers.get("retry-after").expect("Retry-After").to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(all_calls(&s).await.len(), 1);

    // The live call still works while the drain waits for it.
    ws.send(Message::Text(r#"{"type":"ping","id":"still here"}"#.into())).await.unwrap();
    let pong = event_of(&mut ws, "pong").await;
    assert_eq!(pong["id"], "still here");

    // The deadline passes: the call is closed with 1012 and its record ended.
    let reader = tokio::spawn(async move { ending_of(&mut ws).await });
    let started = std::time::Instant::now();
    s.stop().await;
    assert!(started.elapsed() < Duration::from_secs(15), "the drain took {:?}", started.elapsed());
    let e = reader.await.unwrap();
    let (code, reason) = e.close.clone().expect("a close frame");
    assert_eq!(code, 1012, "{reason}");
    assert!(!reason.is_empty());
    assert_eq!(e.ended.as_deref(), Some("server-shutdown"), "{e:?}");

    let store = s.db.store().await; // the server closed its own pool
    let call = ended(&store, &call_id).await;
    assert_eq!(call.ended_reason.as_deref(), Some("server-shutdown"));
}

#[tokio::test]
async fn an_upgrade_during_drain_gets_503_even_with_bad_input() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start_with(TestDb::chosen().await, |args| args.drain_timeout = 1).await;
    let running = s.running.take().unwrap();
    running.lifecycle.start_draining();
    let (status, code, headers) = refused(&s, "assistantId=whatever", &[]).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    assert!(headers.contains_key("retry-after"));
    // Readiness says so too, so a load balancer stops sending calls here.
    let res = TestServer::http().get(s.at("/api/ready")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    running.drain().await.unwrap();
}

/// Opens a socket with the admin key, without sending `start`.
async fn open_unstarted(s: &TestServer, assistant: &str) -> Ws {
    let (ws, res) = connect(s, &format!("assistantId={assistant}"), &[("authorization", &bearer(&s.admin))]).await.unwrap();
    assert_eq!(res.status(), 101);
    ws
}

/// The only call's id (the record is written before the upgrade).
async fn only_call(s: &TestServer) -> String {
    let calls = all_calls(s).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls[0].id.clone()
}

#[tokio::test]
async fn before_start_only_ping_and_end_are_served() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    let mut ws = open_unstarted(&s, &id).await;

    // Nothing is sent before start: the first event is the answer to a ping.
    ws.send(Message::Text(r#"{"type":"ping","id":1}"#.into())).await.unwrap();
    assert_eq!(common::next_event(&mut ws).await, Some(json!({"type": "pong", "id": 1})), "no event precedes start");

    // Audio is dropped and reported once, not per message; the call goes on.
    for _ in 0..3 {
        ws.send(Message::Binary(vec![0u8; 640].into())).await.unwrap();
    }
    let ev = common::next_event(&mut ws).await.expect("an error event");
    assert_eq!((ev["type"].as_str(), ev["code"].as_str()), (Some("error"), Some("audio-before-start")), "{ev}");
    // Text is answered with not-started (mute: see the test below).
    ws.send(Message::Text(r#"{"type":"text","text":"hello"}"#.into())).await.unwrap();
    let ev = common::next_event(&mut ws).await.expect("an error event");
    assert_eq!((ev["type"].as_str(), ev["code"].as_str()), (Some("error"), Some("not-started")), "{ev}");
    ws.send(Message::Text(r#"{"type":"ping","id":2}"#.into())).await.unwrap();
    assert_eq!(common::next_event(&mut ws).await, Some(json!({"type": "pong", "id": 2})), "one audio-before-start error only");

    // Then start: the call begins; a second start is refused, not fatal.
    let hello = common::start_call(&mut ws).await;
    let call_id = hello["callId"].as_str().unwrap().to_string();
    assert_eq!(call_id, only_call(&s).await);
    ws.send(Message::Text(r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":48000}}"#.into())).await.unwrap();
    let ev = event_of(&mut ws, "error").await;
    assert_eq!(ev["code"], "already-started", "{ev}");
    ws.send(Message::Text(r#"{"type":"ping","id":3}"#.into())).await.unwrap();
    assert_eq!(event_of(&mut ws, "pong").await, json!({"type": "pong", "id": 3}));

    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    let e = ending_of(&mut ws).await;
    assert_eq!(e.close.as_ref().map(|c| c.0), Some(1000), "{e:?}");
    assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("customer-ended-call"));
    s.stop().await;
}

#[tokio::test]
async fn mute_before_start_is_answered_not_started() {
    // docs/agent-protocol.md: "`text`, `mute` are answered with `error` code `not-started`".
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    let mut ws = open_unstarted(&s, &id).await;
    ws.send(Message::Text(r#"{"type":"mute"}"#.into())).await.unwrap();
    ws.send(Message::Text(r#"{"type":"ping","id":1}"#.into())).await.unwrap();
    let ev = common::next_event(&mut ws).await.expect("an event");
    assert_eq!((ev["type"].as_str(), ev["code"].as_str()), (Some("error"), Some("not-started")), "mute before start: {ev}");
    assert_eq!(common::next_event(&mut ws).await, Some(json!({"type": "pong", "id": 1})));
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    assert_eq!(close_of(&mut ws).await.map(|c| c.0), Some(1000));
    s.stop().await;
}

#[tokio::test]
async fn end_before_start_ends_the_call() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    let mut ws = open_unstarted(&s, &id).await;
    let call_id = only_call(&s).await;
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    let e = ending_of(&mut ws).await;
    assert_eq!(e.close.as_ref().map(|c| c.0), Some(1000), "{e:?}");
    assert_eq!(e.ended.as_deref(), Some("customer-ended-call"), "{e:?}");
    assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("customer-ended-call"));
    s.stop().await;
}

#[tokio::test]
async fn an_unsupported_audio_format_closes_with_4001() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    for (what, start) in [
        ("44.1 kHz", r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":44100}}"#),
        ("an output rate of 11025", r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":16000,"outputSampleRate":11025}}"#),
        ("mulaw at 16 kHz", r#"{"type":"start","audio":{"encoding":"mulaw","sampleRate":16000}}"#),
    ] {
        let before: std::collections::HashSet<String> = all_calls(&s).await.into_iter().map(|c| c.id).collect();
        let mut ws = open_unstarted(&s, &id).await;
        let call_id = all_calls(&s).await.into_iter().map(|c| c.id).find(|c| !before.contains(c)).expect("a record");
        ws.send(Message::Text(start.into())).await.unwrap();
        fatal(&mut ws, what, "unsupported-audio-format", 4001).await;
        assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("protocol-error"), "{what}");
    }
    s.stop().await;
}

#[tokio::test]
async fn no_start_within_10_s_closes_with_4002() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    let mut ws = open_unstarted(&s, &id).await;
    let call_id = only_call(&s).await;
    let opened = std::time::Instant::now();
    // Pings do not count as a start.
    ws.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(common::next_event(&mut ws).await, Some(json!({"type": "pong"})));
    let e = ending_within(&mut ws, Duration::from_secs(15)).await;
    assert!(opened.elapsed() >= Duration::from_secs(9), "closed after {:?}", opened.elapsed());
    let (code, _) = e.close.clone().unwrap_or_else(|| panic!("no close frame: {e:?}"));
    assert_eq!(code, 4002, "{e:?}");
    assert_eq!(e.error.as_ref().map(|ev| ev["code"].clone()), Some(json!("start-timeout")), "{e:?}");
    assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("protocol-error"));
    s.stop().await;
}

#[tokio::test]
async fn the_documented_message_limits_hold_on_a_default_server() {
    // docs/agent-protocol.md: text messages up to 16 KiB, audio up to 64 KiB; over
    // either is `message-too-big`, close 1009 (whatever the WebSocket limit, which is larger).
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    let ping_of = |len: usize| {
        let bare = r#"{"type":"ping","id":""}"#.len();
        let m = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(len - bare));
        assert_eq!(m.len(), len);
        m
    };
    for (what, at_limit, over) in [
        ("text", Message::Text(ping_of(16 * 1024).into()), Message::Text(ping_of(16 * 1024 + 1).into())),
        ("audio", Message::Binary(vec![0u8; 64 * 1024].into()), Message::Binary(vec![0u8; 64 * 1024 + 2].into())),
    ] {
        let (mut ws, call_id) = open_call(&s, &id).await;
        let is_text = at_limit.is_text();
        ws.send(at_limit).await.unwrap();
        ws.send(Message::Text(r#"{"type":"ping","id":"alive"}"#.into())).await.unwrap();
        if is_text {
            let big = event_of(&mut ws, "pong").await;
            assert_eq!(big["id"].as_str().map(str::len), Some(16 * 1024 - r#"{"type":"ping","id":""}"#.len()), "{what}: at the limit is answered");
        }
        assert_eq!(event_of(&mut ws, "pong").await["id"], "alive", "{what}: at the limit is fine");
        let over_len = over.len();
        ws.send(over).await.unwrap();
        // A ping behind it must not be answered: the call is over.
        let _ = ws.send(Message::Text(r#"{"type":"ping","id":"after"}"#.into())).await;
        let e = ending_of_or_pong(&mut ws).await.unwrap_or_else(|| panic!("{what}: {over_len} bytes were accepted (the call answered a ping after it)"));
        let (code, reason) = e.close.clone().unwrap_or_else(|| panic!("{what}: no close frame: {e:?}"));
        assert_eq!(code, 1009, "{what}: {reason}");
        assert_eq!(e.error.as_ref().map(|ev| ev["code"].clone()), Some(json!("message-too-big")), "{what}: {e:?}");
        assert_eq!(e.ended.as_deref(), Some("protocol-error"), "{what}: {e:?}");
        assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("protocol-error"), "{what}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_close_frame_from_the_client_ends_the_call_as_customer_ended() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    let (mut ws, call_id) = open_call(&s, &id).await;
    ws.close(None).await.unwrap();
    // The server answers the closing handshake.
    while let Some(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("the server closes") {}
    assert_eq!(ended(&s.store, &call_id).await.ended_reason.as_deref(), Some("customer-ended-call"));
    s.stop().await;
}

/// Like [`ending_of`], but `None` as soon as a `pong` with id `"after"` arrives.
async fn ending_of_or_pong(ws: &mut Ws) -> Option<Ending> {
    let mut e = Ending::default();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message within 10 s") {
            Some(Ok(Message::Close(f))) => {
                e.close = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                return Some(e);
            }
            Some(Ok(Message::Text(t))) => {
                let ev: Value = serde_json::from_str(&t).expect("events are JSON");
                match ev["type"].as_str() {
                    Some("pong") if ev["id"] == "after" => return None,
                    Some("error") => e.error = Some(ev),
                    Some("call-ended") => e.ended = ev["reason"].as_str().map(str::to_owned),
                    _ => {}
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Some(e),
        }
    }
}

#[tokio::test]
async fn a_call_token_opens_one_call_for_its_assistant() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start_with(TestDb::chosen().await, |args| args.allowed_origins = APP.into()).await;
    let id = s.assistant("Token desk").await;
    let other = s.assistant("Other desk").await;
    let http = TestServer::http();
    let mint = |body: Value, key: String| http.post(s.at("/api/calls")).bearer_auth(key).json(&body).send();

    let res = mint(json!({ "assistantId": id }), s.admin.clone()).await.unwrap();
    assert_eq!(res.status(), 201);
    let t: Value = res.json().await.unwrap();
    let token = t["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("vg_ct_"), "{t}");
    assert_eq!(t["agentPath"], format!("/agent?token={token}"));

    // A browser on an allowed origin opens the call with the token alone.
    let (mut ws, res) = connect(&s, &format!("token={token}"), &[("origin", APP)]).await.unwrap();
    assert_eq!(res.status(), 101);
    let hello = common::start_call(&mut ws).await;
    assert_eq!(hello["assistantId"], id.as_str());
    let call = s.store.get_call(hello["callId"].as_str().unwrap()).await.unwrap();
    assert!(call.key_id.is_some(), "the call records the key that minted its token");
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();

    // Once only; not from another origin; not for another assistant; never forged.
    let (status, code, _) = refused(&s, &format!("token={token}"), &[("origin", APP)]).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let t2: Value = mint(json!({ "assistantId": id }), s.admin.clone()).await.unwrap().json().await.unwrap();
    let t2 = t2["token"].as_str().unwrap();
    let (status, _, _) = refused(&s, &format!("token={t2}"), &[("origin", "https://evil.example.com")]).await;
    assert_eq!(status, 403);
    let t3: Value = mint(json!({ "assistantId": id }), s.admin.clone()).await.unwrap().json().await.unwrap();
    let t3 = t3["token"].as_str().unwrap();
    let (status, _, _) = refused(&s, &format!("token={t3}&assistantId={other}"), &[]).await;
    assert_eq!(status, 403);
    for forged in ["vg_ct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "' OR 1=1 --", &"x".repeat(5000)] {
        let (status, _, _) = refused(&s, &format!("token={}", urlencode(forged)), &[]).await;
        assert!(matches!(status, 400 | 401 | 414 | 431), "{status} for a forged token");
    }

    // Minting: private keys only, for an assistant that exists.
    let public = s.key(KeyKind::Public, &[&id]).await;
    assert_eq!(mint(json!({ "assistantId": id }), public).await.unwrap().status(), 403);
    let res = mint(json!({ "assistantId": "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b" }), s.admin.clone()).await.unwrap();
    let (status, code, body) = error_code(res).await;
    assert_eq!((status, code.as_str()), (422, "validation_failed"), "{body}");
    assert_eq!(mint(json!({ "assistantId": id, "extra": 1 }), s.admin.clone()).await.unwrap().status(), 422);
    s.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[tokio::test]
async fn a_client_that_closes_first_gets_the_closing_handshake_answered() {
    let _g = LIVE_CALLS.read().await;
    let mut s = TestServer::start().await;
    let id = s.assistant("Front desk").await;
    let (mut ws, call_id) = open_call(&s, &id).await;
    ws.send(Message::Text(r#"{"type":"ping","id":1}"#.into())).await.unwrap();
    event_of(&mut ws, "pong").await;
    // The client starts the closing handshake; the server must answer with its
    // close frame (a reset, 1006 in a browser, would mean it did not).
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("{e}")),
                None => return Err("the connection ended without a close frame".into()),
            }
        }
    })
    .await
    .expect("an answer within 5 s");
    assert_eq!(answered, Ok(()), "the server did not answer the close");
    let call = ended(&s.store, &call_id).await;
    assert!(call.ended_reason.is_some(), "{call:?}");
    s.stop().await;
}
