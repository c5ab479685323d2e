//! The real `voxgate serve` process: it prints where it listens, serves, and on
//! SIGTERM drains and exits 0. And each role alone serves only its part.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use voxgate_server::config::Role;
use voxgate_testkit::TestDb;

/// Starts `voxgate serve` with `args` on a SQLite file in `dir` (or the given
/// `DATABASE_URL`), none of the caller's settings, and `env` on top; stdout piped.
fn serve(dir: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
    cmd.arg("serve").args(args).args(["--bind", "127.0.0.1:0"]);
    for var in ["RUST_LOG", "ROLE", "BIND", "LOG_FORMAT", "ALLOWED_ORIGINS"] {
        cmd.env_remove(var);
    }
    cmd.env("DATABASE_URL", format!("sqlite://{}", dir.join("v.db").display()))
        .env("RECORDINGS_DIR", dir.join("rec"))
        .env("LOG_LEVEL", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("the binary starts")
}

/// The URL in a `voxgate is listening on URL (...)` line.
fn listening(line: &str) -> Option<String> {
    line.strip_prefix("voxgate is listening on ").and_then(|r| r.split_whitespace().next()).map(str::to_owned)
}

#[tokio::test]
async fn serve_prints_its_url_and_a_sigterm_drains_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(dir.path(), &[], &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    let url = listening(&first).unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    // First start on an empty database: a one-time sign-in link.
    let rest: Vec<String> = lines.by_ref().take(2).map(Result::unwrap).collect();
    assert!(rest[1].trim().starts_with(&format!("{url}/login#code=")), "{rest:?}");

    let http = TestServer::http();
    assert_eq!(http.get(format!("{url}/api/health")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{url}/api/ready")).send().await.unwrap().status(), 200);

    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let began = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(began.elapsed() < Duration::from_secs(15), "still running 15 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(http.get(format!("{url}/api/health")).send().await.is_err(), "nothing listens after the exit");
}

async fn get(s: &TestServer, path: &str) -> u16 {
    TestServer::http().get(s.at(path)).bearer_auth(&s.admin).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_api_and_agent_roles_alone_serve_only_their_part() {
    // (role, /api/health, /api/assistants, /agent without an upgrade, /)
    let cases = [(Role::Api, 200, 200, 404, 404), (Role::Agent, 200, 404, 400, 404)];
    for (role, health, api, agent, ui) in cases {
        let mut s = TestServer::start_with(TestDb::chosen().await, |a| a.role = role).await;
        let got = (get(&s, "/api/health").await, get(&s, "/api/assistants").await, get(&s, "/agent").await, get(&s, "/").await);
        assert_eq!(got, (health, api, agent, ui), "{role:?}: (health, api, agent, ui)");
        s.stop().await;
    }
}

#[tokio::test]
async fn the_ui_role_alone_needs_no_database_and_serves_only_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    // A database URL that cannot work: the ui role never opens it.
    let mut child = serve(dir.path(), &["--role", "ui"], &[("DATABASE_URL", format!("sqlite://{}/no/such/dir/v.db", dir.path().display()))]);
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().expect("a first line").unwrap();
    let url = listening(&first).unwrap_or_else(|| panic!("{first:?}"));
    let http = TestServer::http();
    let status = |p: &str| {
        let (http, url) = (http.clone(), url.clone());
        let p = p.to_string();
        async move { http.get(format!("{url}{p}")).send().await.unwrap().status().as_u16() }
    };
    let got = (status("/").await, status("/api/health").await, status("/api/assistants").await, status("/agent").await);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let exit = child.wait().unwrap();
    assert_eq!(got, (200, 200, 404, 404), "(ui, health, api, agent)");
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn json_logs_carry_the_request_id_of_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(dir.path(), &[], &[("LOG_FORMAT", "json".into()), ("LOG_LEVEL", "debug,sqlx=warn,hyper=warn".into())]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Log lines (JSON) come before the listening line on the same stream.
    let mut before = Vec::new();
    let url = loop {
        let line = lines.next().expect("the server prints where it listens").unwrap();
        if let Some(url) = listening(&line) {
            break url;
        }
        before.push(line);
    };
    assert!(!before.is_empty() && before.iter().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{before:?}");
    let res = TestServer::http().get(format!("{url}/api/assistants")).header("x-request-id", "req-test-4711").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["x-request-id"], "req-test-4711");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success());
    let tagged: Vec<serde_json::Value> = rest
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["span"]["request_id"] == "req-test-4711")
        .collect();
    assert!(!tagged.is_empty(), "no log line carries the request id: {rest:#?}");
    assert!(tagged.iter().all(|v| v["span"]["path"] == "/api/assistants" && v["timestamp"].is_string() && v["level"].is_string()), "{tagged:#?}");
}

/// The open files (soft) limit of process `pid`, from `/proc/<pid>/limits`.
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("an open files line");
    let n: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1])
}

/// Started under a soft limit of 256 open files (a thousand calls need a thousand
/// sockets), the server raises its soft limit to the hard one.
#[tokio::test]
async fn serve_raises_its_open_files_limit_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" serve --bind 127.0.0.1:0", env!("CARGO_BIN_EXE_voxgate")])
        .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("v.db").display()))
        .env("RECORDINGS_DIR", dir.path().join("rec"))
        .env("LOG_LEVEL", "warn")
        .env_remove("BIND")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    assert!(listening(&first).is_some(), "{first}");
    let (soft, hard) = open_files_limits(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(hard > 256, "the hard limit here is {hard}: nothing to raise");
    assert_eq!(soft, hard, "the soft limit was raised from 256");
}

/// `OPENAI_*_DEADLINES` reach the OpenAI providers: a malformed value leaves them
/// unusable, and `GET /api/providers` says which variable and why (the rest of the
/// server runs).
#[tokio::test]
async fn a_malformed_openai_deadline_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("v.db").display());
    let created = Command::new(env!("CARGO_BIN_EXE_voxgate")).args(["keys", "create", "--name", "t"]).env("DATABASE_URL", &db).output().unwrap();
    assert!(created.status.success());
    let key = String::from_utf8(created.stdout).unwrap().trim_end().lines().last().unwrap().to_owned();
    let http = TestServer::http();
    for (value, error) in [
        ("100,15,90", Some("OPENAI_LLM_DEADLINES: the first byte (100 s) and idle (15 s) deadlines cannot be longer than the total (90 s)")),
        ("30,15,120", None),
    ] {
        let mut child = serve(
            dir.path(),
            &["--providers", "cloud"],
            &[("OPENAI_LLM_DEADLINES", value.into()), ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1".into())],
        );
        let first = BufReader::new(child.stdout.take().unwrap()).lines().next().expect("a first line").unwrap();
        let url = listening(&first).unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let info: serde_json::Value = http.get(format!("{url}/api/providers")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        assert_eq!(info["openai"]["error"].as_str(), error, "{value}: {info}");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(child.wait().unwrap().success());
    }
}
