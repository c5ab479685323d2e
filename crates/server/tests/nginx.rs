//! The deploy files, run: real nginx (`/usr/sbin/nginx`) with
//! `deploy/nginx/single-domain.conf` or `multi-domain.conf` as written, rewritten
//! only to listen on loopback ports and to reach voxgate processes of the built
//! binary (`serve --role api|agent|ui --providers scripted`) on one shared database
//! (a SQLite file, or PostgreSQL with `VOXGATE_TEST_BACKEND=postgres`). Calls over
//! ws and wss, sticky routing by `?call=`, CORS and the WebSocket `Origin` check
//! across domains, and a drain behind the proxy.
//!
//! nginx is required: these tests fail, never skip, without it.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use voxgate_domain::key::{KeyKind, mint};
use voxgate_server::session::providers::Scripted;
use voxgate_store::{PoolOptions, Store};
use voxgate_testkit::TestDb;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const NGINX: &str = "/usr/sbin/nginx";
const SINGLE: &str = include_str!("../../../deploy/nginx/single-domain.conf");
const MULTI: &str = include_str!("../../../deploy/nginx/multi-domain.conf");

/// The names the deploy files serve, resolved to loopback by the clients here.
const SITE: &str = "voxgate.example.com";
const APP: &str = "app.example.com";
const API: &str = "api.example.com";
const WS: &str = "ws.example.com";

fn nginx_bin() -> &'static str {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} is missing: these tests run the deploy files in real nginx; install it with `bash scripts/setup.sh` (Debian package nginx)"
    );
    NGINX
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill").args([signal, &pid.to_string()]).stderr(Stdio::null()).status();
}

// --- voxgate processes --------------------------------------------------------

/// A `voxgate serve` process of the built binary, killed when dropped.
struct Voxgate {
    child: Child,
    name: String,
    addr: SocketAddr,
    log: PathBuf,
}

impl Voxgate {
    /// Starts `role` named `name` (its INSTANCE_ID) with none of the caller's
    /// environment, and waits for its `voxgate is listening on` line.
    async fn start(dir: &Path, name: &str, role: &str, db: Option<&str>, env: &[(&str, String)]) -> Voxgate {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .current_dir(dir)
            .env("ROLE", role)
            .env("BIND", "127.0.0.1:0")
            .env("VOXGATE_PROVIDERS", "scripted")
            .env("INSTANCE_ID", name)
            .env("TRUST_PROXY", "true")
            .env("RECORDINGS_DIR", dir.join("recordings"))
            .env("DRAIN_TIMEOUT", "5")
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if let Some(db) = db {
            cmd.env("DATABASE_URL", db);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the voxgate binary starts");
        let began = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let url = text.lines().find_map(|l| l.strip_prefix("voxgate is listening on ").and_then(|r| r.split_whitespace().next()));
            if let Some(url) = url {
                let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap_or_else(|e| panic!("{name}: listening on {url}: {e}"));
                return Voxgate { child, name: name.to_string(), addr, log };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("voxgate {name} (role {role}) exited with {status} before listening:\n{text}");
            }
            if began.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("voxgate {name} (role {role}) did not listen within 60 s:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&self) {
        kill(self.child.id(), "-TERM");
    }

    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let began = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(began.elapsed() < within, "{} still runs {within:?} after SIGTERM:\n{}", self.name, self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Voxgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- nginx --------------------------------------------------------------------

/// A self-signed certificate for every name the deploy files serve.
struct Cert {
    pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
}

impl Cert {
    fn new(dir: &Path) -> Cert {
        let names = [SITE, APP, API, WS, "localhost", "127.0.0.1"].map(String::from).to_vec();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        Cert { pem: ck.cert.pem(), der: ck.cert.der().clone(), cert, key }
    }

    /// A rustls client configuration that trusts this certificate only.
    fn rustls(&self) -> Arc<rustls::ClientConfig> {
        voxgate_server::init_crypto();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
    }
}

/// Where a rendered deploy file points.
struct Site<'a> {
    /// The `listen 443 ssl http2;` server: TLS, or plain HTTP on the same port.
    tls: bool,
    port: u16,
    /// The `listen 80;` server.
    http_port: u16,
    ui: SocketAddr,
    api: SocketAddr,
    agents: [SocketAddr; 2],
    cert: &'a Cert,
    logs: &'a Path,
}

/// The deploy file with its ports, upstreams, certificate and log paths moved to
/// loopback and `site`; IPv6 listeners dropped. Every other line is kept as is.
fn render(file: &str, template: &str, s: &Site) -> String {
    let mut out = String::new();
    let mut hits: HashMap<&str, usize> = HashMap::new();
    for line in template.lines() {
        let t = line.trim();
        let indent = &line[..line.len() - line.trim_start().len()];
        let mut hit = |what: &'static str| *hits.entry(what).or_default() += 1;
        let new = if t.starts_with("listen [::]") {
            continue;
        } else if t == "listen 443 ssl http2;" {
            hit("listen 443 ssl http2;");
            if s.tls { format!("listen 127.0.0.1:{} ssl http2;", s.port) } else { format!("listen 127.0.0.1:{};", s.port) }
        } else if t == "listen 80;" {
            hit("listen 80;");
            format!("listen 127.0.0.1:{};", s.http_port)
        } else if let Some(rest) = t.strip_prefix("server ui:5175") {
            hit("server ui:5175");
            format!("server {}{rest}", s.ui)
        } else if let Some(rest) = t.strip_prefix("server api:3010") {
            hit("server api:3010");
            format!("server {}{rest}", s.api)
        } else if let Some(rest) = t.strip_prefix("server agent-1:4010") {
            hit("server agent-1:4010");
            format!("server {}{rest}", s.agents[0])
        } else if let Some(rest) = t.strip_prefix("server agent-2:4010") {
            hit("server agent-2:4010");
            format!("server {}{rest}", s.agents[1])
        } else if t.starts_with("ssl_certificate ") {
            hit("ssl_certificate");
            format!("ssl_certificate {};", s.cert.cert.display())
        } else if t.starts_with("ssl_certificate_key ") {
            hit("ssl_certificate_key");
            format!("ssl_certificate_key {};", s.cert.key.display())
        } else if t.contains("/var/log/nginx/") {
            hit("/var/log/nginx/");
            t.replace("/var/log/nginx/", &format!("{}/", s.logs.display()))
        } else {
            t.to_string()
        };
        out.push_str(indent);
        out.push_str(&new);
        out.push('\n');
    }
    for what in [
        "listen 443 ssl http2;",
        "listen 80;",
        "server ui:5175",
        "server api:3010",
        "server agent-1:4010",
        "server agent-2:4010",
        "ssl_certificate",
        "ssl_certificate_key",
        "/var/log/nginx/",
    ] {
        assert!(hits.contains_key(what), "deploy/nginx/{file} has no `{what}` line any more: update render() in tests/nginx.rs");
    }
    out
}

/// nginx running a rendered deploy file in a folder of its own; stopped when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
    http_port: u16,
}

/// The main configuration around a site file: everything in `dir`, in the foreground.
fn main_conf(dir: &Path) -> PathBuf {
    let d = dir.display();
    // Worker processes may run as another user (nobody, when the tests run as root):
    // they must reach the temp folders.
    let _ = std::fs::set_permissions(dir, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755));
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

fn nginx_command(dir: &Path, conf: &Path) -> Command {
    let mut cmd = Command::new(nginx_bin());
    cmd.arg("-p").arg(dir).arg("-c").arg(conf).arg("-e").arg(dir.join("error.log"));
    cmd
}

impl Nginx {
    async fn start(dir: PathBuf, site: &str, port: u16, http_port: u16) -> Nginx {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("site.conf"), site).unwrap();
        let conf = main_conf(&dir);
        let out = std::fs::File::create(dir.join("nginx.out")).unwrap();
        let mut child = nginx_command(&dir, &conf).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().expect("nginx starts");
        let began = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() && TcpStream::connect(("127.0.0.1", http_port)).await.is_ok() {
                return Nginx { child, dir, port, http_port };
            }
            let log = || {
                format!(
                    "{}{}",
                    std::fs::read_to_string(dir.join("nginx.out")).unwrap_or_default(),
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                )
            };
            if let Some(status) = child.try_wait().unwrap() {
                panic!("nginx exited with {status}:\n{}\nconfiguration:\n{site}", log());
            }
            if began.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("nginx did not listen on {port} and {http_port} within 10 s:\n{}", log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits (SIGKILL would orphan them).
        kill(self.child.id(), "-TERM");
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- the cluster: api, two agents, ui ----------------------------------------

#[derive(Default)]
struct Opts {
    /// ALLOWED_ORIGINS of the api and agent instances.
    allowed_origins: String,
    /// DRAIN_TIMEOUT of agent-1 (default 5).
    drain_agent_1: Option<u64>,
    /// Extra environment of the ui instance.
    ui_env: Vec<(&'static str, String)>,
}

struct Cluster {
    api: Voxgate,
    agents: Vec<Voxgate>,
    ui: Voxgate,
    /// A private key.
    admin: String,
    cert: Cert,
    db: TestDb,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(opts: Opts) -> Cluster {
        voxgate_server::init_crypto();
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::chosen().await;
        let origins = ("ALLOWED_ORIGINS", opts.allowed_origins.clone());
        // The api first: it migrates the database the others then share.
        let api = Voxgate::start(dir.path(), "api-1", "api", Some(&db.url), std::slice::from_ref(&origins)).await;
        let agent_1_env = [origins.clone(), ("DRAIN_TIMEOUT", opts.drain_agent_1.unwrap_or(5).to_string())];
        let (a1, a2, ui) = tokio::join!(
            Voxgate::start(dir.path(), "agent-1", "agent", Some(&db.url), &agent_1_env),
            Voxgate::start(dir.path(), "agent-2", "agent", Some(&db.url), std::slice::from_ref(&origins)),
            Voxgate::start(dir.path(), "ui-1", "ui", None, &opts.ui_env),
        );
        let store = Store::connect(&db.url, &PoolOptions::default()).await.expect("connect to the shared database");
        let admin = mint("nginx test", KeyKind::Private, vec![]);
        store.insert_key(&admin.key).await.unwrap();
        store.close().await;
        let cert = Cert::new(dir.path());
        Cluster { api, agents: vec![a1, a2], ui, admin: admin.secret, cert, db, dir }
    }

    fn site<'a>(&'a self, tls: bool, port: u16, http_port: u16, logs: &'a Path) -> Site<'a> {
        Site { tls, port, http_port, ui: self.ui.addr, api: self.api.addr, agents: [self.agents[0].addr, self.agents[1].addr], cert: &self.cert, logs }
    }

    /// nginx running `template` (single- or multi-domain) in front of this cluster.
    async fn nginx(&self, name: &str, template: &str, tls: bool, ports: Option<(u16, u16)>) -> Nginx {
        self.nginx_with_agents(name, template, tls, ports, [self.agents[0].addr, self.agents[1].addr]).await
    }

    /// As [`Cluster::nginx`], with the agent upstream's two servers at `agents`.
    async fn nginx_with_agents(&self, name: &str, template: &str, tls: bool, ports: Option<(u16, u16)>, agents: [SocketAddr; 2]) -> Nginx {
        let (port, http_port) = ports.unwrap_or_else(|| (free_port(), free_port()));
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = if template == SINGLE { "single-domain.conf" } else { "multi-domain.conf" };
        let site = render(file, template, &Site { agents, ..self.site(tls, port, http_port, &dir) });
        Nginx::start(dir, &site, port, http_port).await
    }

    /// A public key for `assistant`.
    async fn public_key(&self, assistant: &str) -> String {
        let store = Store::connect(&self.db.url, &PoolOptions::default()).await.unwrap();
        let m = mint("browser", KeyKind::Public, vec![assistant.to_string()]);
        store.insert_key(&m.key).await.unwrap();
        store.close().await;
        m.secret
    }

    fn logs(&self) -> String {
        [&self.api, &self.agents[0], &self.agents[1], &self.ui].iter().map(|v| format!("--- {}:\n{}", v.name, v.output())).collect()
    }
}

/// An HTTP client that trusts the cluster's certificate and finds every site name
/// on loopback; it does not follow redirects.
fn http(cert: &Cert) -> reqwest::Client {
    voxgate_server::init_crypto();
    let lo = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap()])
        .redirect(reqwest::redirect::Policy::none());
    for name in [SITE, APP, API, WS] {
        b = b.resolve(name, lo);
    }
    b.build().unwrap()
}

/// Opens a WebSocket at `url` (whose host is one of the site names) through nginx
/// on `port`, with `headers`; over TLS trusting `cert`.
async fn ws_open(url: &str, port: u16, headers: &[(&'static str, String)], cert: &Cert) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, HeaderValue::from_str(v).unwrap());
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect to nginx");
    let connector = if url.starts_with("wss://") { Connector::Rustls(cert.rustls()) } else { Connector::Plain };
    tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(connector)).await
}

fn bearer(key: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {key}"))
}

/// The HTTP status of a refused upgrade.
fn refused(r: Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error>) -> u16 {
    match r {
        Ok((_, res)) => panic!("the upgrade was accepted ({})", res.status()),
        Err(tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

async fn create_assistant(http: &reqwest::Client, api_base: &str, admin: &str, body: Value) -> String {
    let res = http.post(format!("{api_base}/api/assistants")).bearer_auth(admin).json(&body).send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// An assistant that waits for the caller (no greeting).
fn quiet(name: &str) -> Value {
    json!({"name": name, "firstMessageMode": "user-speaks-first", "firstMessage": null})
}

/// The call record, once ended (fetched through nginx).
async fn ended_call(http: &reqwest::Client, api_base: &str, admin: &str, id: &str) -> Value {
    for _ in 0..200 {
        let res = http.get(format!("{api_base}/api/calls/{id}")).bearer_auth(admin).send().await.unwrap();
        assert_eq!(res.status(), 200, "GET /api/calls/{id}");
        let call: Value = res.json().await.unwrap();
        if call["status"] == "ended" {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("call {id} never ended");
}

/// The instance that holds (held) call `id`.
async fn instance_of(http: &reqwest::Client, api_base: &str, admin: &str, id: &str) -> String {
    let res = http.get(format!("{api_base}/api/calls/{id}")).bearer_auth(admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["instance"].as_str().expect("the call record names its instance").to_string()
}

/// Reads until the server closes: the `call-ended` reason on the way and the close code.
async fn ending(ws: &mut Ws, within: Duration) -> (Option<String>, Option<u16>) {
    let mut reason = None;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.unwrap_or_else(|_| panic!("the call did not close within {within:?}"));
        match m {
            Some(Ok(Message::Close(frame))) => return (reason, frame.map(|f| u16::from(f.code))),
            Some(Ok(Message::Text(t))) => {
                let ev: Value = serde_json::from_str(&t).expect("events are JSON");
                if ev["type"] == "call-ended" {
                    reason = ev["reason"].as_str().map(str::to_owned);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (reason, None),
        }
    }
}

/// Sends `end` and expects the normal close.
async fn hang_up(ws: &mut Ws) {
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    let (reason, code) = ending(ws, Duration::from_secs(10)).await;
    assert_eq!((reason.as_deref(), code), (Some("customer-ended-call"), Some(1000)));
}

const QUESTION: &str = "What are your opening hours?";

/// A whole call: start, a typed question, the spoken reply (audio frames and the
/// assistant's transcript), hang up. Returns the call id.
async fn full_call(ws: &mut Ws) -> String {
    let started = common::start_call(ws).await;
    let id = started["callId"].as_str().expect("callId").to_string();
    ws.send(Message::Text(json!({"type": "text", "text": QUESTION}).to_string().into())).await.unwrap();
    let (mut audio, mut spoke) = (0usize, false);
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next()).await.expect("the reply within 15 s");
        match m {
            Some(Ok(Message::Binary(b))) => {
                assert!(spoke, "audio before bot-speech-started");
                audio += b.len();
            }
            Some(Ok(Message::Text(t))) => {
                let ev: Value = serde_json::from_str(&t).unwrap();
                match ev["type"].as_str().unwrap() {
                    "bot-speech-started" => spoke = true,
                    "bot-speech-stopped" => break,
                    "call-ended" | "error" => panic!("the call failed: {ev}"),
                    _ => {}
                }
            }
            other => panic!("the socket closed before the reply ended: {other:?}"),
        }
    }
    // 16 kHz PCM16 out: 640 bytes per 20 ms frame, a whole number of frames.
    assert!(audio >= 640 * 25 && audio % 640 == 0, "{audio} bytes of reply audio");
    hang_up(ws).await;
    id
}

/// Checks a finished full call's record: ended by the caller, on one of the agents,
/// with the question and the scripted reply.
fn check_record(call: &Value) {
    assert_eq!(call["endedReason"], "customer-ended-call", "{call}");
    assert!(call["endedAt"].is_string(), "{call}");
    let instance = call["instance"].as_str().unwrap_or("");
    assert!(instance == "agent-1" || instance == "agent-2", "{call}");
    let turns = call["turns"].as_array().expect("turns");
    let text = |role: &str| turns.iter().filter(|t| t["role"] == role).map(|t| t["text"].as_str().unwrap().to_string()).collect::<Vec<_>>().join(" ");
    assert_eq!(text("user"), QUESTION, "{call}");
    assert_eq!(text("assistant"), Scripted::REPLY, "{call}");
}

// --- the tests ----------------------------------------------------------------

/// `nginx -t` on both deploy files as they are (names resolved, ports and paths
/// moved), and the limits they state match voxgate's defaults.
#[test]
fn the_deploy_files_pass_nginx_t() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Cert::new(dir.path());
    let lo = |p| SocketAddr::from(([127, 0, 0, 1], p));
    for (file, template) in [("single-domain.conf", SINGLE), ("multi-domain.conf", MULTI)] {
        for tls in [true, false] {
            let d = dir.path().join(format!("{file}-{tls}"));
            std::fs::create_dir_all(&d).unwrap();
            let site = Site { tls, port: free_port(), http_port: free_port(), ui: lo(5175), api: lo(3010), agents: [lo(4010), lo(4011)], cert: &cert, logs: &d };
            std::fs::write(d.join("site.conf"), render(file, template, &site)).unwrap();
            let conf = main_conf(&d);
            let out = nginx_command(&d, &conf).arg("-t").output().expect("nginx runs");
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "nginx -t refuses deploy/nginx/{file} (tls {tls}):\n{text}");
            assert!(!text.contains("[warn]") && !text.contains("[emerg]"), "deploy/nginx/{file}:\n{text}");
        }
        // Broken on purpose: the check can fail.
        let d = dir.path().join(format!("{file}-broken"));
        std::fs::create_dir_all(&d).unwrap();
        let site = Site { tls: true, port: free_port(), http_port: free_port(), ui: lo(1), api: lo(2), agents: [lo(3), lo(4)], cert: &cert, logs: &d };
        std::fs::write(d.join("site.conf"), render(file, template, &site).replace("proxy_read_timeout 3600s;", "proxy_read_timeout;")).unwrap();
        let conf = main_conf(&d);
        assert!(!nginx_command(&d, &conf).arg("-t").output().unwrap().status.success());

        // The body limits nginx enforces are voxgate's own defaults: BODY_LIMIT,
        // and UPLOAD_MAX_BYTES on uploads.
        let api = voxgate_server::config::ServeArgs::for_tests("sqlite::memory:").api_config().unwrap();
        let mb = |s: &str| s.trim_end_matches(';').strip_suffix('m').and_then(|n| n.parse::<usize>().ok()).map(|n| n * 1024 * 1024);
        let mut sizes: Vec<Option<usize>> = template.lines().filter_map(|l| l.trim().strip_prefix("client_max_body_size ")).map(mb).collect();
        sizes.sort();
        sizes.dedup();
        let mut limits = vec![Some(api.body_limit), Some(api.upload_limit)];
        limits.sort();
        limits.dedup();
        assert_eq!(sizes, limits, "deploy/nginx/{file}: client_max_body_size vs BODY_LIMIT and UPLOAD_MAX_BYTES");
    }
}

/// A whole call through nginx over ws and over wss (nginx terminating TLS), the
/// record read back through nginx; the web app, the redirect to HTTPS, HSTS and
/// the request id pass too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_nginx_over_ws_and_wss() {
    let c = Cluster::start(Opts::default()).await;
    let plain = c.nginx("plain", SINGLE, false, None).await;
    let tls = c.nginx("tls", SINGLE, true, None).await;
    let http = http(&c.cert);
    let https_base = format!("https://{SITE}:{}", tls.port);
    let assistant = create_assistant(&http, &https_base, &c.admin, quiet("Through nginx")).await;

    for (scheme, n) in [("ws", &plain), ("wss", &tls)] {
        let url = format!("{scheme}://{SITE}:{}/agent?assistantId={assistant}", n.port);
        let (mut ws, res) = ws_open(&url, n.port, &[bearer(&c.admin)], &c.cert).await.unwrap_or_else(|e| panic!("{scheme}: {e}\n{}\n{}", n.error_log(), c.logs()));
        assert_eq!(res.status(), 101);
        let id = full_call(&mut ws).await;
        let api_base = format!("{}://{SITE}:{}", if scheme == "ws" { "http" } else { "https" }, n.port);
        check_record(&ended_call(&http, &api_base, &c.admin, &id).await);
    }

    // The web app and its runtime configuration, from the ui instance.
    let res = http.get(format!("{https_base}/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(res.headers().get("strict-transport-security").is_some(), "HSTS from nginx over HTTPS");
    let cfg: Value = http.get(format!("{https_base}/config.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cfg["apiBase"], "/api", "{cfg}");

    // The client's request id is kept end to end; without one nginx makes one.
    let res = http.get(format!("{https_base}/api/health")).header("x-request-id", "nginx-test-4711").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "nginx-test-4711");
    let res = http.get(format!("{https_base}/api/health")).send().await.unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "nginx's $request_id: {id}");

    // Plain HTTP on the TLS layout's port 80: a redirect to HTTPS.
    let res = http.get(format!("http://{SITE}:{}/api/health", tls.http_port)).send().await.unwrap();
    assert_eq!(res.status(), 301);
    assert_eq!(res.headers()["location"], format!("https://{SITE}/api/health"));

    // A body over BODY_LIMIT is refused by nginx before voxgate reads it; uploads
    // may be larger, up to UPLOAD_MAX_BYTES.
    let post = |path: &str, len: usize| {
        http.post(format!("{https_base}{path}")).bearer_auth(&c.admin).header("content-type", "application/json").body("x".repeat(len)).send()
    };
    let api = voxgate_server::config::ServeArgs::for_tests("sqlite::memory:").api_config().unwrap();
    assert_eq!(post("/api/assistants", api.body_limit + 1).await.unwrap().status(), 413);
    assert_eq!(post("/api/files", api.upload_limit + 1).await.unwrap().status(), 413);
    // A whole multipart upload of twice BODY_LIMIT (a file voxgate cannot read):
    // nginx passes it, voxgate reads it and answers with its own error.
    let boundary = "voxgate-nginx-test";
    let mut body = format!("--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"blob.bin\"\r\ncontent-type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend(std::iter::repeat_n(0u8, api.body_limit * 2));
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let res = http
        .post(format!("{https_base}/api/files"))
        .bearer_auth(&c.admin)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not voxgate's answer: {text}\n{}", tls.error_log()));
    assert!(status.is_client_error() && status != 413 && answer["error"]["code"].is_string(), "{status}: {answer}");
}

/// Two agents behind the hash upstream: new calls spread over both; a call whose
/// connection drops is resumed through nginx (`?call=&resume=`) on the agent that
/// holds it, again and again, whichever agent its id hashes to; `/api` reaches
/// the api instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_reach_the_agent_that_holds_the_call() {
    let c = Cluster::start(Opts::default()).await;
    let n = c.nginx("tls", SINGLE, true, None).await;
    let http = http(&c.cert);
    let base = format!("https://{SITE}:{}", n.port);
    let assistant = create_assistant(&http, &base, &c.admin, quiet("Sticky")).await;
    let port = n.port;

    // One call: opened, dropped without a close frame and resumed twice, then ended.
    // Returns the instance that held it.
    let call = |_| {
        let (http, base, admin, cert) = (http.clone(), base.clone(), c.admin.clone(), &c.cert);
        let url = format!("wss://{SITE}:{port}/agent?assistantId={assistant}");
        async move {
            let (mut ws, _) = ws_open(&url, port, &[bearer(&admin)], cert).await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let started = common::start_call(&mut ws).await;
            let id = started["callId"].as_str().unwrap().to_string();
            let mut token = started["resumeToken"].as_str().expect("call-started carries resumeToken").to_string();
            let instance = instance_of(&http, &base, &admin, &id).await;
            for round in 0..2 {
                drop(ws);
                ws = resume(port, &id, &token, cert).await;
                ws.send(Message::Text(common::START.into())).await.unwrap();
                let resumed = loop {
                    let ev = common::next_event(&mut ws).await.unwrap_or_else(|| panic!("call {id}: closed before call-resumed (round {round})"));
                    if ev["type"] == "call-resumed" {
                        break ev;
                    }
                };
                assert_eq!(resumed["callId"], id.as_str());
                token = resumed["resumeToken"].as_str().expect("call-resumed carries the next token").to_string();
            }
            hang_up(&mut ws).await;
            let call = ended_call(&http, &base, &admin, &id).await;
            assert_eq!((call["endedReason"].as_str(), call["instance"].as_str()), (Some("customer-ended-call"), Some(instance.as_str())), "{call}");
            instance
        }
    };
    let held: HashSet<String> = join_all((0..16).map(call)).await.into_iter().collect();
    assert_eq!(held.len(), 2, "16 new calls all went to {held:?}");

    // nginx walked the ring for some resumes: the agent the call id hashes to said
    // 404 (not mine), the next one took it.
    let log = std::fs::read_to_string(n.dir.join("voxgate.access.log")).unwrap();
    assert!(log.lines().any(|l| l.contains("GET /agent ") && l.contains("upstream_status=404, 101")), "no resume passed from a 404 to its holder:\n{log}");

    // /api reaches the api instance (an agent answers 404 there).
    let res = http.get(format!("{base}/api/assistants")).bearer_auth(&c.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.unwrap();
    assert!(list.to_string().contains(&assistant), "{list}");
    let direct = reqwest::Client::new().get(format!("http://{}/api/assistants", c.agents[0].addr)).bearer_auth(&c.admin).send().await.unwrap();
    assert_eq!(direct.status(), 404, "an agent alone does not serve the API");
}

/// Resumes call `id` through nginx on `port`; retries while the server has not yet
/// seen the old socket drop (409).
async fn resume(port: u16, id: &str, token: &str, cert: &Cert) -> Ws {
    let url = format!("wss://{SITE}:{port}/agent?call={id}&resume={token}");
    for _ in 0..100 {
        match ws_open(&url, port, &[], cert).await {
            Ok((ws, _)) => return ws,
            Err(tungstenite::Error::Http(res)) if res.status() == 409 => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("resuming {id}: {e}"),
        }
    }
    panic!("resuming {id}: the old socket still counts as open after 2 s");
}

/// The multi-domain layout: CORS from the ui's origin through nginx, nothing for
/// another origin, and the agent's Origin check on the ws host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_domain_cors_and_origin_through_nginx() {
    let (port, http_port) = (free_port(), free_port());
    let app = format!("https://{APP}:{port}");
    let evil = format!("https://evil.example.com:{port}");
    let c = Cluster::start(Opts {
        allowed_origins: app.clone(),
        ui_env: vec![("PUBLIC_API_BASE", format!("https://{API}:{port}/api")), ("PUBLIC_AGENT_URL", format!("wss://{WS}:{port}/agent"))],
        ..Opts::default()
    })
    .await;
    let n = c.nginx("multi", MULTI, true, Some((port, http_port))).await;
    let http = http(&c.cert);
    let api = format!("https://{API}:{port}");

    // The web app on its own host tells itself where the API and the agent are.
    let cfg: Value = http.get(format!("{app}/config.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!((cfg["apiBase"].as_str(), cfg["agentUrl"].as_str()), (Some(format!("{api}/api").as_str()), Some(format!("wss://{WS}:{port}/agent").as_str())));

    let allow = |res: &reqwest::Response| res.headers().get_all("access-control-allow-origin").iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    let preflight = |origin: String| {
        http.request(reqwest::Method::OPTIONS, format!("{api}/api/assistants"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let res = preflight(app.clone()).await.unwrap();
    assert!(res.status().is_success(), "preflight: {}", res.status());
    assert_eq!(allow(&res), vec![app.clone()], "exactly one Access-Control-Allow-Origin, from voxgate");
    assert!(res.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let res = preflight(evil.clone()).await.unwrap();
    assert!(allow(&res).is_empty() && !res.headers().keys().any(|k| k.as_str().starts_with("access-control-")), "{:?}", res.headers());

    // Simple requests: the browser on the ui's origin reads them, a stranger does not.
    let res = http.post(format!("{api}/api/assistants")).header("origin", &app).bearer_auth(&c.admin).json(&quiet("Cross-origin")).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(allow(&res), vec![app.clone()]);
    let assistant = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let res = http.get(format!("{api}/api/assistants/{assistant}")).header("origin", &evil).bearer_auth(&c.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(allow(&res).is_empty());
    // A 401 is readable by the allowed origin too.
    let res = http.get(format!("{api}/api/assistants")).header("origin", &app).send().await.unwrap();
    assert_eq!((res.status().as_u16(), allow(&res)), (401, vec![app.clone()]));

    // Each host serves only its part.
    assert_eq!(http.get(format!("https://{WS}:{port}/api/assistants")).bearer_auth(&c.admin).send().await.unwrap().status(), 404);
    assert_eq!(http.get(format!("{api}/agent")).send().await.unwrap().status(), 404);

    // The agent: a browser's public key from the ui's origin opens a call...
    let public = c.public_key(&assistant).await;
    let url = format!("wss://{WS}:{port}/agent?assistantId={assistant}&key={public}");
    let (mut ws, res) = ws_open(&url, port, &[("origin", app.clone())], &c.cert).await.unwrap_or_else(|e| panic!("{e}\n{}\n{}", n.error_log(), c.logs()));
    assert_eq!(res.status(), 101);
    common::start_call(&mut ws).await;
    hang_up(&mut ws).await;
    // ...another origin is refused before the upgrade, and so is no origin with a public key.
    assert_eq!(refused(ws_open(&url, port, &[("origin", evil.clone())], &c.cert).await), 403);
    assert_eq!(refused(ws_open(&url, port, &[], &c.cert).await), 403);

    // The call-token flow: the page asks the API (cross-origin), then opens the token.
    let res = http.post(format!("{api}/api/calls")).header("origin", &app).bearer_auth(&c.admin).json(&json!({"assistantId": assistant})).send().await.unwrap();
    assert_eq!(allow(&res), vec![app.clone()]);
    let status = res.status();
    let token: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{status}: {token}");
    let path = token["agentPath"].as_str().unwrap();
    let (mut ws, _) = ws_open(&format!("wss://{WS}:{port}{path}"), port, &[("origin", app.clone())], &c.cert).await.unwrap();
    let id = full_call(&mut ws).await;
    check_record(&ended_call(&http, &api, &c.admin, &id).await);
    // A token from a stranger's page is refused by the Origin check.
    let res = http.post(format!("{api}/api/calls")).bearer_auth(&c.admin).json(&json!({"assistantId": assistant})).send().await.unwrap();
    let path = res.json::<Value>().await.unwrap()["agentPath"].as_str().unwrap().to_string();
    assert_eq!(refused(ws_open(&format!("wss://{WS}:{port}{path}"), port, &[("origin", evil.clone())], &c.cert).await), 403);
}

/// SIGTERM to an agent holding 20 calls behind nginx: it stops being ready, its
/// calls go on (ten end on their own, ten are closed with 1012 at DRAIN_TIMEOUT),
/// new calls for it go to the other agent, and every record is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_behind_nginx_finishes_every_call() {
    const DRAIN: u64 = 4;
    let mut c = Cluster::start(Opts { drain_agent_1: Some(DRAIN), ..Opts::default() }).await;
    let n = c.nginx("tls", SINGLE, true, None).await;
    let http = http(&c.cert);
    let base = format!("https://{SITE}:{}", n.port);
    let assistant = create_assistant(&http, &base, &c.admin, quiet("Drained")).await;
    let url = format!("wss://{SITE}:{}/agent?assistantId={assistant}", n.port);

    // 20 live calls on agent-1 (calls placed on agent-2 hang up at once).
    let mut live: Vec<(Ws, String)> = Vec::new();
    let mut elsewhere = 0;
    for k in 0.. {
        assert!(k < 400, "only {} of {k} calls reached agent-1", live.len());
        let (mut ws, _) = ws_open(&url, n.port, &[bearer(&c.admin)], &c.cert).await.unwrap();
        let id = common::start_call(&mut ws).await["callId"].as_str().unwrap().to_string();
        if instance_of(&http, &base, &c.admin, &id).await == "agent-1" {
            live.push((ws, id));
            if live.len() == 20 {
                break;
            }
        } else {
            elsewhere += 1;
            hang_up(&mut ws).await;
        }
    }
    assert!(elsewhere > 0, "every new call went to agent-1");

    c.agents[0].sigterm();
    // Not ready any more: 503, or no listener at all (the drain closes it).
    let a1 = c.agents[0].addr;
    let mut ready = true;
    for _ in 0..100 {
        match reqwest::Client::new().get(format!("http://{a1}/api/ready")).send().await {
            Ok(r) if r.status() == 200 => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(r) => {
                assert_eq!(r.status(), 503);
                ready = false;
                break;
            }
            Err(_) => {
                ready = false;
                break;
            }
        }
    }
    assert!(!ready, "agent-1 still ready 2 s after SIGTERM");

    // The live calls still answer, through nginx.
    for (i, (ws, id)) in live.iter_mut().enumerate() {
        ws.send(Message::Text(json!({"type": "ping", "id": i}).to_string().into())).await.unwrap();
        let pong = common::next_event(ws).await.unwrap_or_else(|| panic!("call {id} closed at SIGTERM"));
        assert_eq!(pong, json!({"type": "pong", "id": i}));
    }

    // New calls all land on agent-2: those whose random key hashes to agent-1
    // find its listener closed and nginx passes them on.
    for _ in 0..8 {
        let (mut ws, res) = ws_open(&url, n.port, &[bearer(&c.admin)], &c.cert).await.unwrap_or_else(|e| panic!("{e}\n{}", n.error_log()));
        assert_eq!(res.status(), 101);
        let id = common::start_call(&mut ws).await["callId"].as_str().unwrap().to_string();
        assert_eq!(instance_of(&http, &base, &c.admin, &id).await, "agent-2");
        hang_up(&mut ws).await;
    }

    // Ten callers hang up on their own; the other ten are closed at the deadline.
    let (mut own, mut cut): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for (i, call) in live.into_iter().enumerate() {
        if i % 2 == 0 { own.push(call) } else { cut.push(call) }
    }
    for (ws, _) in own.iter_mut() {
        hang_up(ws).await;
    }
    let endings = join_all(cut.iter_mut().map(|(ws, _)| ending(ws, Duration::from_secs(DRAIN + 15)))).await;
    for ((_, id), (reason, code)) in cut.iter().zip(endings) {
        assert_eq!((reason.as_deref(), code), (Some("server-shutdown"), Some(1012)), "call {id}");
    }
    let status = c.agents[0].wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "agent-1 exited with {status}:\n{}", c.agents[0].output());

    // Every record is complete, read through nginx from the api instance.
    for (calls, reason) in [(&own, "customer-ended-call"), (&cut, "server-shutdown")] {
        for (_, id) in calls.iter() {
            let call = ended_call(&http, &base, &c.admin, id).await;
            assert_eq!(call["endedReason"], reason, "{call}");
            assert_eq!(call["instance"], "agent-1", "{call}");
            assert!(call["endedAt"].is_string() && call["durationMs"].is_number(), "{call}");
        }
    }
}

/// An agent that is full (or draining): every `/agent` request gets 503 with
/// `Retry-After` before the upgrade, as admission control answers. Counts them.
async fn full_agent() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = r#"{"error":{"code":"unavailable","message":"this instance is full; connect again"}}"#;
                let res = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(res.as_bytes()).await;
            });
        }
    });
    (addr, hits)
}

/// An agent that answers 503 before the upgrade (full, or draining) passes each
/// call on to the next agent; when every agent is full the caller gets the 503
/// and its Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_agent_passes_calls_on() {
    use std::sync::atomic::Ordering;
    let c = Cluster::start(Opts::default()).await;
    let (full, hits) = full_agent().await;
    let n = c.nginx_with_agents("one-full", SINGLE, true, None, [c.agents[0].addr, full]).await;
    let http = http(&c.cert);
    let base = format!("https://{SITE}:{}", n.port);
    let assistant = create_assistant(&http, &base, &c.admin, quiet("Busy")).await;
    for _ in 0..16 {
        let url = format!("wss://{SITE}:{}/agent?assistantId={assistant}", n.port);
        let (mut ws, _) = ws_open(&url, n.port, &[bearer(&c.admin)], &c.cert).await.unwrap_or_else(|e| panic!("{url}: {e}\n{}", n.error_log()));
        let id = common::start_call(&mut ws).await["callId"].as_str().unwrap().to_string();
        hang_up(&mut ws).await;
        assert_eq!(instance_of(&http, &base, &c.admin, &id).await, "agent-1");
    }
    // Some new calls were placed on the full agent: it was asked, and said no.
    assert!(hits.load(Ordering::SeqCst) >= 1, "16 new calls never reached the full agent:\n{}", n.error_log());

    let (full_too, hits_too) = full_agent().await;
    let n = c.nginx_with_agents("all-full", SINGLE, true, None, [full, full_too]).await;
    let before = hits.load(Ordering::SeqCst);
    let url = format!("wss://{SITE}:{}/agent?assistantId={assistant}", n.port);
    match ws_open(&url, n.port, &[bearer(&c.admin)], &c.cert).await {
        Err(tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503);
            assert_eq!(res.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("2"), "{:?}", res.headers());
        }
        Err(e) => panic!("expected voxgate's 503, got {e}"),
        Ok(_) => panic!("a call opened with every agent full"),
    }
    // Both were tried, once each.
    assert_eq!((hits.load(Ordering::SeqCst) - before, hits_too.load(Ordering::SeqCst)), (1, 1));
}

/// docs/configuration.md names every environment variable the command line reads.
#[test]
fn the_configuration_document_names_every_variable() {
    use clap::CommandFactory;
    let doc = include_str!("../../../docs/configuration.md");
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.push(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut vars = Vec::new();
    walk(&voxgate_server::config::Cli::command(), &mut vars);
    assert!(vars.len() > 30, "{vars:?}");
    // Read by the code outside clap.
    vars.extend(["SUPABASE_DB_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "RUST_LOG", "VITE_SUPABASE_URL", "VITE_SUPABASE_ANON_KEY", "VOXGATE_PYTHON", "XDG_CACHE_HOME"].map(String::from));
    let missing: Vec<&String> = vars.iter().filter(|v| !doc.contains(&format!("`{v}`"))).collect();
    assert!(missing.is_empty(), "docs/configuration.md does not name {missing:?}");
}
