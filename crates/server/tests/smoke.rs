//! The whole server, end to end, on every backend: sign in with the first-start
//! login code, create an assistant, open a call, read the call back.

mod common;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use voxgate_testkit::TestDb;

#[tokio::test]
async fn first_start_login_assistant_call_and_record() {
    for db in TestDb::all().await {
        let name = db.name;
        let mut s = TestServer::start_with(db, |_| {}).await;
        let http = TestServer::http();

        // First start on an empty database: a one-time login code.
        let code = s.login_code.clone().expect("a login code on first start");
        let res = http.post(s.at("/api/auth/login")).json(&json!({ "code": code })).send().await.unwrap();
        assert_eq!(res.status(), 201, "{name}");
        let key = res.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_string();
        let again = http.post(s.at("/api/auth/login")).json(&json!({ "code": code })).send().await.unwrap();
        assert_eq!(again.status(), 401, "the code works once");

        let res = http.post(s.at("/api/assistants")).bearer_auth(&key).json(&json!({"name": "Front desk"})).send().await.unwrap();
        assert_eq!(res.status(), 201);
        let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

        let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_with_key(&format!("assistantId={id}"), &key)).await.unwrap();
        ws.send(Message::Text(r#"{"type":"ping","id":7}"#.into())).await.unwrap();
        assert_eq!(common::next_event(&mut ws).await.unwrap(), json!({"type": "pong", "id": 7}), "ping works before start");
        let hello = common::start_call(&mut ws).await;
        let call_id = hello["callId"].as_str().unwrap().to_string();
        assert_eq!(hello["protocol"], "voxgate.v1");
        ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }

        // The record is ended (the session ends it right after the close).
        let mut call = Value::Null;
        for _ in 0..50 {
            call = http.get(s.at(&format!("/api/calls/{call_id}"))).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
            if call["status"] == "ended" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(call["status"], "ended", "{name}: {call}");
        assert_eq!(call["endedReason"], "customer-ended-call");
        assert_eq!(call["assistantId"], id.as_str());
        let list: Value = http.get(s.at(&format!("/api/calls?assistantId={id}"))).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        s.stop().await;
    }
}
