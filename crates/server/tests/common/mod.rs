//! Test support: the real server on a free port of loopback, on a database of its
//! own, with real HTTP and WebSocket clients.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use voxgate_server::session::providers::{Fixed, ProviderFactory, Providers};
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_domain::key::{KeyKind, mint};
use voxgate_server::config::ServeArgs;
use voxgate_server::serve::{self, Running};
use voxgate_store::Store;
use voxgate_testkit::TestDb;

pub struct TestServer {
    /// `http://127.0.0.1:PORT` (or https under TLS).
    pub url: String,
    pub addr: std::net::SocketAddr,
    /// A private key.
    pub admin: String,
    pub store: Store,
    pub running: Option<Running>,
    pub login_code: Option<String>,
    pub db: TestDb,
}

impl TestServer {
    /// The default server on a fresh SQLite database.
    pub async fn start() -> TestServer {
        TestServer::start_with(TestDb::chosen().await, |_| {}).await
    }

    /// A server on `db`, with settings changed by `tweak`, and scripted providers.
    pub async fn start_with(db: TestDb, tweak: impl FnOnce(&mut ServeArgs)) -> TestServer {
        TestServer::start_with_providers(db, scripted(), tweak).await
    }

    /// A server with the given providers.
    pub async fn start_with_providers(db: TestDb, providers: Providers, tweak: impl FnOnce(&mut ServeArgs)) -> TestServer {
        TestServer::start_with_factory(db, Arc::new(Fixed(providers)), tweak).await
    }

    /// A server whose calls get their providers from `factory`.
    pub async fn start_with_factory(db: TestDb, factory: Arc<dyn ProviderFactory>, tweak: impl FnOnce(&mut ServeArgs)) -> TestServer {
        voxgate_server::init_crypto();
        let mut args = ServeArgs::for_tests(&db.url);
        args.drain_timeout = 5;
        tweak(&mut args);
        let running = serve::start_with(args, factory).await.expect("the server starts");
        let store = running.store.clone().expect("a role with a database");
        let login_code = running.login_code.clone();
        let m = mint("test admin", KeyKind::Private, vec![]);
        store.insert_key(&m.key).await.unwrap();
        TestServer { url: running.url(), addr: running.addr, admin: m.secret, store, running: Some(running), login_code, db }
    }

    pub fn http() -> reqwest::Client {
        voxgate_server::init_crypto();
        reqwest::Client::builder().build().unwrap()
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("{}/agent?{}", self.url.replacen("http", "ws", 1), query)
    }

    /// An `/agent` upgrade request with `key` in the `Authorization` header.
    pub fn ws_with_key(&self, query: &str, key: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = self.ws_url(query).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        req
    }

    /// Mints a key straight into the store and returns its secret.
    pub async fn key(&self, kind: KeyKind, assistants: &[&str]) -> String {
        let m = mint("test", kind, assistants.iter().map(|s| s.to_string()).collect());
        self.store.insert_key(&m.key).await.unwrap();
        m.secret
    }

    /// Creates an assistant from a JSON body through the API and returns its id.
    pub async fn create_assistant(&self, body: Value) -> String {
        let res = Self::http().post(self.at("/api/assistants")).bearer_auth(&self.admin).json(&body).send().await.unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Creates an assistant through the API and returns its id.
    pub async fn assistant(&self, name: &str) -> String {
        let res = Self::http()
            .post(self.at("/api/assistants"))
            .bearer_auth(&self.admin)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    /// Drains and stops the server.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.drain().await.unwrap();
        }
    }
}

/// Asserts the error shape and returns the code.
pub async fn error_code(res: reqwest::Response) -> (u16, String, Value) {
    let status = res.status().as_u16();
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = res.json().await.unwrap_or_else(|e| panic!("status {status}: body is not JSON ({ct}): {e}"));
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {body}")).to_string();
    assert!(body["error"]["message"].is_string(), "no error.message in {body}");
    (status, code, body)
}

/// Scripted providers: silence in, no words, an empty reply, tone audio out.
pub fn scripted() -> Providers {
    Providers {
        stt: Arc::new(ScriptedStt::new(Vec::<String>::new(), Duration::ZERO)),
        llm: Arc::new(ScriptedLlm::default()),
        tts: Arc::new(ToneTts::default()),
        tools: None,
    }
}

/// The client's first message: PCM16 at 16 kHz both ways.
pub const START: &str = r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":16000}}"#;

/// The next JSON event on a call, skipping audio; `None` when the socket closes.
pub async fn next_event<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an event within 10 s") {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("events are JSON")),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Sends `start` and returns the `call-started` event.
pub async fn start_call<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::Text(START.into())).await.expect("send start");
    loop {
        let ev = next_event(ws).await.expect("the call starts");
        if ev["type"] == "call-started" {
            return ev;
        }
    }
}

/// `text` spoken by espeak-ng into the WAV file `path` (22.05 kHz).
pub fn espeak(path: &std::path::Path, text: &str) {
    let status = std::process::Command::new("espeak-ng").arg("-w").arg(path).arg(text).status().expect("espeak-ng is installed (scripts/setup.sh)");
    assert!(status.success());
}

/// `text` spoken by espeak-ng, as 16 kHz PCM16 samples.
pub fn speech(text: &str) -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("say.wav");
    espeak(&wav, text);
    let audio = voxgate_audio::wav::read_wav_file(&wav).unwrap();
    voxgate_audio::resample::resample_all(audio.rate, 16_000, &audio.samples).unwrap()
}

/// PCM16 little-endian bytes, as the protocol's binary messages carry them.
pub fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// `voxgate_websocket_connections` as `/api/metrics` reports it now (0 if absent).
pub async fn live_gauge(s: &TestServer) -> f64 {
    let res = TestServer::http().get(s.at("/api/metrics")).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("voxgate_websocket_connections ") || l.starts_with("voxgate_websocket_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .unwrap_or(0.0)
}

/// Runs the real `voxgate` binary with `args` (none of the caller's voxgate or log
/// settings leak in) and waits for it, at most `limit`.
pub async fn run_voxgate(args: &[&str], limit: Duration) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxgate"));
    cmd.args(args).kill_on_drop(true);
    for var in ["VOXGATE_KEY", "RUST_LOG", "LOG_FORMAT", "LOG_LEVEL"] {
        cmd.env_remove(var);
    }
    tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("voxgate {} did not finish within {limit:?}", args.first().unwrap_or(&"")))
        .expect("the voxgate binary runs")
}

/// Opens a call to `assistant`, sends `start`, and returns the last `error` event
/// the server sent before it closed the socket.
pub async fn error_before_close(s: &TestServer, assistant: &str) -> Value {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = s.ws_url(&format!("assistantId={assistant}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.admin).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Text(START.into())).await.unwrap();
    let mut error = None;
    while let Some(e) = next_event(&mut ws).await {
        if e["type"] == "error" {
            error = Some(e);
        }
    }
    error.expect("an error event before the close")
}

/// The call's record once it has ended (polled: the record ends just after the socket).
pub async fn ended_call(s: &TestServer, call_id: &str, within: Duration) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let call: Value = TestServer::http().get(s.at(&format!("/api/calls/{call_id}"))).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
        if call["status"] == "ended" {
            return call;
        }
        assert!(std::time::Instant::now() < deadline, "call {call_id} has not ended after {within:?}: {call}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Opens a call with the admin key, types `text`, and returns every event from
/// `call-started` to the end of the call; the client hangs up once `replies`
/// replies have played (0: it waits for the server to end the call).
pub async fn typed_call(s: &TestServer, assistant: &str, text: &str, replies: usize) -> Vec<Value> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = s.ws_url(&format!("assistantId={assistant}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.admin).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut events = vec![start_call(&mut ws).await];
    ws.send(Message::Text(json!({ "type": "text", "text": text }).to_string().into())).await.unwrap();
    let mut stopped = 0;
    while let Some(e) = next_event(&mut ws).await {
        if e["type"] == "bot-speech-stopped" {
            stopped += 1;
            if stopped == replies {
                let _ = ws.send(Message::Text(r#"{"type":"end"}"#.into())).await;
            }
        }
        events.push(e);
    }
    events
}
