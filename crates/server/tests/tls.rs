//! HTTPS and WSS from `TLS_CERT`/`TLS_KEY`: a self-signed certificate for
//! localhost, a real round trip over each, HSTS only under TLS, and clear errors
//! for missing or garbage files.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use voxgate_server::config::ServeArgs;
use voxgate_store::calls::CallFilter;
use voxgate_testkit::TestDb;

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files.
struct Cert {
    dir: tempfile::TempDir,
    pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl Cert {
    fn new() -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Cert { pem: ck.cert.pem(), der: ck.cert.der().clone(), dir }
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
    /// An HTTPS client that trusts this certificate only.
    fn http(&self) -> reqwest::Client {
        voxgate_server::init_crypto();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()])
            .build()
            .unwrap()
    }
    /// A rustls client configuration that trusts this certificate only.
    fn rustls(&self) -> Arc<rustls::ClientConfig> {
        voxgate_server::init_crypto();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
    }
}

async fn tls_server(cert: &Cert) -> TestServer {
    let (c, k) = (cert.cert(), cert.key());
    TestServer::start_with(TestDb::chosen().await, move |args| {
        args.tls_cert = Some(c);
        args.tls_key = Some(k);
    })
    .await
}

#[tokio::test]
async fn https_round_trip_with_hsts() {
    let cert = Cert::new();
    let mut s = tls_server(&cert).await;
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let http = cert.http();

    let res = http.get(s.at("/api/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let hsts = res.headers().get("strict-transport-security").expect("HSTS under TLS").to_str().unwrap().to_string();
    assert!(hsts.contains("max-age="), "{hsts}");

    // A write and a read back, over TLS, by the name in the certificate too.
    let res = http.post(s.at("/api/assistants")).bearer_auth(&s.admin).json(&json!({"name": "Over TLS"})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert!(res.headers().contains_key("strict-transport-security"));
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let by_name = format!("https://localhost:{}/api/assistants/{id}", s.addr.port());
    let res = http.get(&by_name).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "Over TLS");

    // The UI too carries HSTS.
    let res = http.get(s.at("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("strict-transport-security"));

    // A client that does not trust the certificate is refused at the handshake.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(Cert::new().pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    assert!(untrusting.get(s.at("/api/health")).send().await.is_err());

    // Plain HTTP to the TLS port gets no answer from the app (and the server survives it).
    let plain = TestServer::http().get(format!("http://127.0.0.1:{}/api/health", s.addr.port())).send().await;
    assert!(plain.as_ref().map_or(true, |r| !r.status().is_success()), "{plain:?}");
    assert_eq!(http.get(s.at("/api/health")).send().await.unwrap().status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn no_hsts_on_plain_http() {
    let mut s = TestServer::start().await;
    assert!(s.url.starts_with("http://"));
    let http = TestServer::http();
    for path in ["/api/health", "/", "/api/assistants"] {
        let res = http.get(s.at(path)).send().await.unwrap();
        assert!(!res.headers().contains_key("strict-transport-security"), "{path}: {:?}", res.headers());
    }
    s.stop().await;
}

#[tokio::test]
async fn wss_round_trip_on_agent() {
    let cert = Cert::new();
    let mut s = tls_server(&cert).await;
    // (TestServer::assistant's client does not trust our certificate.)
    let res = cert.http().post(s.at("/api/assistants")).bearer_auth(&s.admin).json(&json!({"name": "Secure line"})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let url = s.ws_url(&format!("assistantId={id}"));
    assert!(url.starts_with("wss://"), "{url}");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", s.admin)).unwrap());
    let connector = tokio_tungstenite::Connector::Rustls(cert.rustls());
    let (mut ws, res) = tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector)).await.unwrap();
    assert_eq!(res.status(), 101);
    assert!(res.headers().contains_key("strict-transport-security"));

    let hello = common::start_call(&mut ws).await;
    assert_eq!(hello["type"], "call-started");
    let call_id = hello["callId"].as_str().unwrap().to_string();
    ws.send(Message::Text(r#"{"type":"ping","id":"tls"}"#.into())).await.unwrap();
    // Skips the greeting's audio and events, which arrive interleaved.
    let pong = loop {
        let ev = common::next_event(&mut ws).await.expect("a pong before the socket closes");
        if ev["type"] == "pong" {
            break ev;
        }
    };
    assert_eq!(pong, json!({"type": "pong", "id": "tls"}));
    ws.send(Message::Binary(vec![0u8; 640].into())).await.unwrap();
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    let mut close = None;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(f) = m {
            close = f;
            break;
        }
    }
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1000));

    let call = ended_call(&s, &call_id).await;
    assert_eq!(call.ended_reason.as_deref(), Some("customer-ended-call"));

    // A WSS client that does not trust the certificate is refused, and no call is recorded for it.
    let mut req = s.ws_url(&format!("assistantId={id}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", s.admin)).unwrap());
    let stranger = tokio_tungstenite::Connector::Rustls(Cert::new().rustls());
    assert!(tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(stranger)).await.is_err());
    let calls = s.store.list_calls(&CallFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(calls.items.len(), 1);
    s.stop().await;
}

async fn ended_call(s: &TestServer, id: &str) -> voxgate_domain::Call {
    for _ in 0..100 {
        let call = s.store.get_call(id).await.unwrap();
        if call.status == voxgate_domain::CallStatus::Ended {
            return call;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("call {id} never ended");
}

/// Starts with the given files; expects an error that names `expect_named`.
async fn start_fails(cert: &Path, key: &Path, expect_named: &Path) {
    voxgate_server::init_crypto();
    let db = TestDb::chosen().await;
    let mut args = ServeArgs::for_tests(&db.url);
    args.tls_cert = Some(cert.to_path_buf());
    args.tls_key = Some(key.to_path_buf());
    match voxgate_server::serve::start(args).await {
        Ok(r) => {
            let url = r.url();
            r.drain().await.unwrap();
            panic!("started at {url} with cert {} and key {}", cert.display(), key.display());
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains(&expect_named.display().to_string()), "the error does not name {}: {msg}", expect_named.display());
        }
    }
}

#[tokio::test]
async fn missing_or_garbage_tls_files_are_a_clear_error() {
    let cert = Cert::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n\0\x01\x02").unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();

    start_fails(&missing, &cert.key(), &missing).await;
    start_fails(&cert.cert(), &missing, &missing).await;
    start_fails(&garbage, &cert.key(), &garbage).await;
    start_fails(&cert.cert(), &garbage, &garbage).await;
    start_fails(&empty, &cert.key(), &empty).await;
    start_fails(&cert.cert(), &empty, &empty).await;
    // The key where the certificate goes, and the reverse.
    start_fails(&cert.key(), &cert.cert(), &cert.key()).await;
}
