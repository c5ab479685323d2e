//! Real processes for fault tests: the `voxgate serve` binary as a subprocess (that
//! a test may SIGKILL), a private PostgreSQL server the test may stop and start
//! (never the shared one other tests use), and live calls driven over the real
//! `/agent` WebSocket.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxgate_domain::key::{KeyKind, mint};
use voxgate_store::{PoolOptions, Store};

/// A migrated store on `url` with a new private key in it; returns the key's secret.
pub async fn store_with_key(url: &str) -> (Store, String) {
    let store = Store::connect(url, &PoolOptions::default()).await.expect("connect to the test database");
    store.migrate().await.expect("migrate");
    let m = mint("fault test", KeyKind::Private, vec![]);
    store.insert_key(&m.key).await.unwrap();
    (store, m.secret)
}

/// `voxgate serve` running as a child process, on loopback, with scripted providers.
pub struct Served {
    child: tokio::process::Child,
    pub url: String,
    /// Where its stderr (the logs) goes.
    pub log: PathBuf,
}

impl Served {
    /// Starts `voxgate serve --providers scripted` on `database_url` with `env` on
    /// top; `dir` holds its log (appended to, so a restart keeps the first run's).
    pub async fn start(database_url: &str, dir: &Path, env: &[(&str, String)]) -> Served {
        let log = dir.join("voxgate.log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxgate"));
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--providers", "scripted"]);
        for var in ["RUST_LOG", "ROLE", "BIND", "LOG_FORMAT", "ALLOWED_ORIGINS", "VOXGATE_KEY", "INSTANCE_ID", "CALL_WRITE_QUEUE"] {
            cmd.env_remove(var);
        }
        cmd.env("DATABASE_URL", database_url).env("RECORDINGS_DIR", dir.join("rec")).env("FILES_DIR", dir.join("files")).env("LOG_LEVEL", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(file)).kill_on_drop(true);
        let mut child = cmd.spawn().expect("the voxgate binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("voxgate prints where it listens within 60 s")
            .unwrap()
            .unwrap_or_else(|| panic!("voxgate exited at start; its log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
        let url = first
            .strip_prefix("voxgate is listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Served { child, url, log }
    }

    /// SIGKILL: no drain, no flush, nothing written on the way out.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.expect("the process dies").unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    /// SIGTERM, and waits for the drain to finish.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running") as i32;
        let ok = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success();
        assert!(ok);
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.expect("the drain ends within 60 s").unwrap();
        assert!(status.success(), "exit {status}");
    }

    /// The server's process id (to read its /proc entries).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/api/metrics` as text.
    pub async fn metrics(&self, key: &str) -> String {
        let res = crate::common::TestServer::http().get(format!("{}/api/metrics", self.url)).bearer_auth(key).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    }

    /// Creates an assistant that waits for the caller to speak first.
    pub async fn assistant(&self, key: &str) -> String {
        let res = crate::common::TestServer::http()
            .post(format!("{}/api/assistants", self.url))
            .bearer_auth(key)
            .json(&json!({"name": "Fault test", "firstMessageMode": "user-speaks-first", "firstMessage": null}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }
}

/// One metric's value (summed over its label sets) in `/api/metrics` text; 0 if absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A live call driven by typed text over the real `/agent` WebSocket.
pub struct Caller {
    tx: futures_util::stream::SplitSink<Ws, Message>,
    rx: futures_util::stream::SplitStream<Ws>,
    pub id: String,
    /// What this caller typed, each turn whose reply finished (its `latency` event came).
    pub completed: Vec<String>,
    /// Every event seen (audio skipped).
    pub events: Vec<Value>,
}

impl Caller {
    /// Opens a call to `assistant` on the server at `base` (`http://...`).
    pub async fn open(base: &str, key: &str, assistant: &str) -> Caller {
        let url = format!("{}/agent?assistantId={assistant}", base.replacen("http", "ws", 1));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("the call opens");
        let (mut tx, rx) = ws.split();
        tx.send(Message::Text(crate::common::START.into())).await.unwrap();
        let mut c = Caller { tx, rx, id: String::new(), completed: Vec::new(), events: Vec::new() };
        let started = c.until(|e| e["type"] == "call-started", Duration::from_secs(20)).await.expect("call-started");
        c.id = started["callId"].as_str().unwrap().to_string();
        c
    }

    /// Events until one matches (audio skipped); `None` if the socket closes first.
    pub async fn until(&mut self, done: impl Fn(&Value) -> bool, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.next())
                .await
                .unwrap_or_else(|_| panic!("no matching event within {within:?}; saw {:?}", self.events));
            match m {
                Some(Ok(Message::Text(t))) => {
                    let e: Value = serde_json::from_str(&t).unwrap();
                    self.events.push(e.clone());
                    if done(&e) {
                        return Some(e);
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Types `text` without waiting for the reply.
    pub async fn send_text(&mut self, text: &str) {
        self.tx.send(Message::Text(json!({"type": "text", "text": text}).to_string().into())).await.unwrap();
    }

    /// One typed turn, up to its `latency` event (the turn is over and handed to the
    /// call record) or an `error`; returns that event.
    pub async fn say(&mut self, text: &str) -> Value {
        self.send_text(text).await;
        let e = self
            .until(|e| e["type"] == "latency" || e["type"] == "error", Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("the call ended during a turn: {:?}", self.events));
        if e["type"] == "latency" {
            self.completed.push(text.to_string());
        }
        e
    }

    /// Hangs up and waits for `call-ended`.
    pub async fn end(mut self) -> Vec<Value> {
        self.tx.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
        self.until(|e| e["type"] == "call-ended", Duration::from_secs(30)).await;
        self.events
    }
}

/// A private PostgreSQL server in a temp folder on a free loopback port, started
/// with `scripts/pg.sh` (initdb, pg_ctl): the test may stop and start it at will.
pub struct PrivatePg {
    _dir: tempfile::TempDir,
    base: PathBuf,
    port: u16,
    pub url: String,
}

fn pg_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg.sh")
}

impl PrivatePg {
    pub fn start() -> PrivatePg {
        let dir = tempfile::tempdir().unwrap();
        // Run as root, pg.sh runs the server as the postgres user, who must reach the folder.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = dir.path().join("pg");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut pg = PrivatePg { _dir: dir, base, port, url: String::new() };
        pg.url = pg.run("start");
        pg
    }

    fn run(&self, what: &str) -> String {
        let out = std::process::Command::new("bash")
            .arg(pg_sh())
            .arg(what)
            .env("VOXGATE_PG_DIR", &self.base)
            .env("VOXGATE_PG_PORT", self.port.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("bash runs scripts/pg.sh");
        assert!(out.status.success(), "pg.sh {what}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string()
    }

    /// Stops the server (fast shutdown: its sessions are cut).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Starts it again on the same data and port.
    pub fn restart(&self) {
        let url = self.run("start");
        assert_eq!(url, self.url);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(pg_sh())
            .arg("stop")
            .env("VOXGATE_PG_DIR", &self.base)
            .env("VOXGATE_PG_PORT", self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Caller {
    /// Streams `samples` (16 kHz) in 20 ms messages in real time, reading events
    /// meanwhile, then waits for the turn's `latency` or an `error`; returns it.
    pub async fn speak(&mut self, samples: &[i16]) -> Value {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let is_end = |e: &Value| e["type"] == "latency" || e["type"] == "error";
        let mut chunks = samples.chunks(320);
        loop {
            tokio::select! {
                _ = tick.tick() => match chunks.next() {
                    Some(chunk) => self.tx.send(Message::Binary(crate::common::pcm_bytes(chunk).into())).await.unwrap(),
                    None => break,
                },
                m = self.rx.next() => match m {
                    Some(Ok(Message::Text(t))) => {
                        let e: Value = serde_json::from_str(&t).unwrap();
                        self.events.push(e.clone());
                        if is_end(&e) {
                            return e;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the socket closed: {other:?} after {:?}", self.events),
                },
            }
        }
        self.until(is_end, Duration::from_secs(30)).await.unwrap_or_else(|| panic!("the call ended during a turn: {:?}", self.events))
    }
}
