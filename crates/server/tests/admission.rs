//! Admission control: an instance holds at most `MAX_CALLS` live calls; the next is
//! refused before the upgrade with 503, `Retry-After` and a JSON reason, and a
//! place that frees up is taken again.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use voxgate_testkit::TestDb;

async fn connect(s: &TestServer, assistant: &str) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, WsError> {
    let mut req = s.ws_url(&format!("assistantId={assistant}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.admin).parse().unwrap());
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

#[tokio::test]
async fn a_full_instance_refuses_the_next_call_with_503_and_retry_after() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.max_calls = 2).await;
    let assistant = s.assistant("full").await;
    let mut a = connect(&s, &assistant).await.unwrap();
    start_call(&mut a).await;
    let mut b = connect(&s, &assistant).await.unwrap();
    start_call(&mut b).await;

    match connect(&s, &assistant).await {
        Err(WsError::Http(res)) => {
            assert_eq!(res.status(), 503);
            assert_eq!(res.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
            let body: serde_json::Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
            assert!(body["error"]["message"].as_str().unwrap().contains("MAX_CALLS"), "{body}");
        }
        other => panic!("a third call was not refused: {:?}", other.map(|_| ())),
    }
    // A refused attempt left no call record.
    let calls = s.store.list_calls(&voxgate_store::calls::CallFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(calls.items.len(), 2);

    // One call ends: its place is free again.
    a.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    while next_event(&mut a).await.is_some() {}
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut c = loop {
        match connect(&s, &assistant).await {
            Ok(ws) => break ws,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(e) => panic!("the freed place was not given back: {e}"),
        }
    };
    start_call(&mut c).await;
    drop(b);
}
