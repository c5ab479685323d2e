//! A real HTTP receiver for the tests (axum on 127.0.0.1), which checks every
//! request's signature and answers as told: 2xx, an error, a hang, or nothing at all
//! (the port accepts connections and drops them at once).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use voxgate_webhooks::{Options, headers, verify};

pub const SECRET: &str = "whsec_test_0123456789abcdef";

/// How the receiver answers.
#[derive(Debug, Clone)]
pub enum Mode {
    Ok,
    Status(u16, String),
    /// Waits this long, then answers 200.
    Hang(Duration),
    /// 307 to another URL.
    Redirect(String),
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: String,
    pub kind: String,
    pub body: String,
    pub timestamp_header: String,
    pub signature_ok: bool,
    /// What it answered (200 in `Hang` counts only if the answer was written).
    pub status: u16,
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<Mode>>,
    seen: Mutex<Vec<Seen>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

async fn handle(State(shared): State<Arc<Shared>>, h: HeaderMap, body: Bytes) -> Response {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let now = voxgate_domain::clock::now_ms() / 1000;
    let signature = h.get(headers::SIGNATURE).and_then(|v| v.to_str().ok());
    let signature_ok = verify(SECRET.as_bytes(), signature, &body, now, 300).is_ok()
        && get("content-type") == "application/json"
        && signature.is_some_and(|s| s.starts_with(&format!("t={},", get(headers::TIMESTAMP))));
    let mode = shared.mode.lock().unwrap().clone().unwrap_or(Mode::Ok);
    let (status, response) = match mode {
        Mode::Ok => (200, StatusCode::OK.into_response()),
        Mode::Status(s, text) => (s, (StatusCode::from_u16(s).unwrap(), text).into_response()),
        Mode::Hang(d) => {
            tokio::time::sleep(d).await;
            (200, StatusCode::OK.into_response())
        }
        Mode::Redirect(to) => (307, (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response()),
    };
    shared.seen.lock().unwrap().push(Seen {
        id: get(headers::EVENT_ID),
        kind: get(headers::EVENT_TYPE),
        body: String::from_utf8_lossy(&body).into_owned(),
        timestamp_header: get(headers::TIMESTAMP),
        signature_ok,
        status,
    });
    response
}

impl Receiver {
    pub async fn start(mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut r = Receiver { addr, shared: Arc::default(), running: None };
        r.set_mode(mode);
        r.serve(listener);
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook?token=abc", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = Some(mode);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new().route("/hook", axum::routing::post(handle)).with_state(self.shared.clone());
        let token = CancellationToken::new();
        let stop = token.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await.unwrap();
        });
        self.running = Some((token, task));
    }

    async fn stop(&mut self) {
        if let Some((token, mut task)) = self.running.take() {
            token.cancel();
            if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// The port accepts connections and closes them without a word.
    pub async fn drop_connections(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let token = CancellationToken::new();
        let stop = token.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Ok((sock, _)) = listener.accept() => drop(sock),
                }
            }
        });
        self.running = Some((token, task));
    }

    /// Back to HTTP on the same port, answering as `mode`.
    pub async fn recover(&mut self, mode: Mode) {
        self.stop().await;
        self.set_mode(mode);
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

/// Small timings for tests over real HTTP.
pub fn fast_options() -> Options {
    Options {
        timeout: Duration::from_millis(400),
        max_attempts: 1000,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(100),
        batch_size: 8,
        concurrency: 4,
        lease: Duration::from_secs(3),
        shutdown_grace: Duration::from_millis(500),
        ..Options::default()
    }
}

/// Polls `check` until it holds or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
