//! Fault injection with real processes (issue 9, item 3): the real `voxgate serve`
//! binary, real calls over `/agent`, a real database taken away.
//!
//! - The database goes away during 10 live calls (SQLite: another process holds its
//!   write lock; PostgreSQL: a private server is stopped): the calls go on, their
//!   turns wait in the write-behind queue and are all written when it returns.
//!   With a tiny queue (`CALL_WRITE_QUEUE`), what does not fit is counted in
//!   `voxgate_call_writes_dropped_total` and logged, exactly, and the calls go on.
//! - `kill -9` mid-call: the next start on the same database ends the calls left in
//!   progress as `server-restarted`, and every turn written before the kill is there.
//! - Provider faults (a hang, a reset mid-stream, garbage): see the `provider_`
//!   tests below.
//!
//! Each runs on the backend `VOXGATE_TEST_BACKEND` names (SQLite by default; for
//! PostgreSQL a private server started with `scripts/pg.sh`, so stopping it touches
//! no other test).

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::sync::Arc;
use std::time::Duration;

use procs::{Caller, PrivatePg, Served, metric, store_with_key};
use sqlx::Connection;
use voxgate_domain::call::{Call, CallStatus, TurnRole};
use voxgate_fake_openai::{Fake, Reply, Route, chat_events};
use voxgate_openai::{Deadlines, OpenAi, OpenAiConfig, StageDeadlines};
use voxgate_server::session::providers::{PerAssistant, Scripted};
use voxgate_store::Store;

/// The database of one test, and the way to take it away and bring it back.
enum Db {
    Sqlite { _dir: tempfile::TempDir, url: String, lock: Option<sqlx::SqliteConnection> },
    Postgres(PrivatePg),
}

impl Db {
    fn chosen() -> Db {
        match std::env::var("VOXGATE_TEST_BACKEND").as_deref() {
            Ok("postgres") => Db::Postgres(PrivatePg::start()),
            _ => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("voxgate.db").display());
                Db::Sqlite { _dir: dir, url, lock: None }
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Db::Sqlite { .. } => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    fn url(&self) -> String {
        match self {
            Db::Sqlite { url, .. } => url.clone(),
            Db::Postgres(pg) => pg.url.clone(),
        }
    }

    /// SQLite: another process... another connection takes the write lock and keeps
    /// it (every write of the server fails with "database is locked" after its busy
    /// timeout; reads go on, as WAL allows). PostgreSQL: the server stops (its
    /// sessions are cut, new connections refused).
    async fn take_away(&mut self) {
        match self {
            Db::Sqlite { url, lock, .. } => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut c).await.unwrap();
                *lock = Some(c);
            }
            Db::Postgres(pg) => pg.stop(),
        }
    }

    async fn bring_back(&mut self) {
        match self {
            Db::Sqlite { lock, .. } => {
                let mut c = lock.take().expect("taken away");
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            Db::Postgres(pg) => pg.restart(),
        }
    }
}

const REPLY: &str = Scripted::REPLY;

/// The user and assistant turns of a call's record, as texts.
fn said(call: &Call, role: TurnRole) -> Vec<String> {
    call.turns.as_deref().unwrap_or_default().iter().filter(|t| t.role == role).map(|t| t.text.clone()).collect()
}

/// The record of `id` once it has ended (polled).
async fn ended(store: &Store, id: &str, within: Duration) -> Call {
    let deadline = std::time::Instant::now() + within;
    loop {
        match store.get_call(id).await {
            Ok(c) if c.status == CallStatus::Ended => return c,
            other => assert!(std::time::Instant::now() < deadline, "call {id} not ended after {within:?}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `turns` typed turns on each caller at once; each must be answered.
async fn talk(callers: Vec<Caller>, turns: usize, tag: &'static str) -> Vec<Caller> {
    let tasks: Vec<_> = callers
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                for t in 0..turns {
                    let e = c.say(&format!("{tag} call {i} turn {t}")).await;
                    assert_eq!(e["type"], "latency", "call {i}: the turn was answered: {e}");
                }
                c
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("a caller task"));
    }
    out
}

/// Settings that make the database's absence show at once: a write waits 300 ms
/// for a lock (SQLite) or a connection, and the key is checked every second (a
/// failed check must not end the call).
fn impatient(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> =
        vec![("DB_STATEMENT_TIMEOUT_MS", "300".into()), ("DB_ACQUIRE_TIMEOUT_MS", "500".into()), ("AUTH_CACHE_TTL", "1".into())];
    v.extend(extra.iter().map(|(k, val)| (*k, val.to_string())));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_goes_away_during_ten_live_calls_and_every_turn_is_written_when_it_returns() {
    let mut db = Db::chosen();
    let name = db.name();
    let dir = tempfile::tempdir().unwrap();
    let (store, key) = store_with_key(&db.url()).await;
    let srv = Served::start(&db.url(), dir.path(), &impatient(&[])).await;
    let assistant = srv.assistant(&key).await;

    let mut callers = Vec::new();
    for _ in 0..10 {
        callers.push(Caller::open(&srv.url, &key, &assistant).await);
    }
    let callers = talk(callers, 1, "before").await;

    db.take_away().await;
    let mut callers = talk(callers, 3, "away").await;
    // Half the calls hang up while the database is away.
    let leaving: Vec<Caller> = callers.drain(..5).collect();
    let mut done: Vec<(String, Vec<String>)> = Vec::new();
    for c in leaving {
        let (id, completed) = (c.id.clone(), c.completed.clone());
        let events = c.end().await;
        assert!(events.iter().all(|e| e["type"] != "error"), "{name}: {events:?}");
        done.push((id, completed));
    }
    match &db {
        // Reads still work beside the held lock: nothing said while away is written.
        Db::Sqlite { .. } => {
            let c = store.get_call(&done[0].0).await.unwrap();
            assert_eq!(c.status, CallStatus::InProgress, "{name}: the end waits for the database");
            assert_eq!(said(&c, TurnRole::User), ["before call 0 turn 0"], "{name}: the turns while away wait in the queue");
        }
        Db::Postgres(_) => assert!(store.get_call(&done[0].0).await.is_err(), "{name}: the database is away"),
    }
    if name == "sqlite" {
        // The queue holds them (the API still reads beside the lock; with PostgreSQL
        // away it cannot check the key).
        let metrics = srv.metrics(&key).await;
        assert!(metric(&metrics, "voxgate_call_write_queue") >= 1.0, "{name}: {metrics}");
    }

    db.bring_back().await;
    let callers = talk(callers, 1, "after").await;
    for c in callers {
        let (id, completed) = (c.id.clone(), c.completed.clone());
        c.end().await;
        done.push((id, completed));
    }

    // Every completed turn of every call is in its record, and every record ended.
    let mut turns = 0;
    for (id, completed) in &done {
        let call = ended(&store, id, Duration::from_secs(60)).await;
        assert_eq!(call.ended_reason.as_deref(), Some("customer-ended-call"), "{name}: {call:?}");
        assert!(call.ended_at.is_some() && call.duration_ms.is_some(), "{name}: {call:?}");
        assert_eq!(&said(&call, TurnRole::User), completed, "{name}: call {id}");
        assert_eq!(said(&call, TurnRole::Assistant), vec![REPLY.to_string(); completed.len()], "{name}: call {id}");
        turns += completed.len();
    }
    assert_eq!(turns, 10 * 4 + 5, "{name}: every turn was answered");
    let metrics = srv.metrics(&key).await;
    assert_eq!(metric(&metrics, "voxgate_call_writes_dropped_total"), 0.0, "{name}: nothing dropped");
    assert!(srv.logs().contains("retrying"), "{name}: the failed writes were retried (and logged)");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_drops_what_does_not_fit_counts_and_logs_it_and_the_calls_go_on() {
    let mut db = Db::chosen();
    let name = db.name();
    let dir = tempfile::tempdir().unwrap();
    let (store, key) = store_with_key(&db.url()).await;
    let srv = Served::start(&db.url(), dir.path(), &impatient(&[("CALL_WRITE_QUEUE", "4")])).await;
    let assistant = srv.assistant(&key).await;
    let mut callers = Vec::new();
    for _ in 0..10 {
        callers.push(Caller::open(&srv.url, &key, &assistant).await);
    }
    let callers = talk(callers, 1, "before").await;

    db.take_away().await;
    // 10 calls x 3 turns: 60 turn writes for a queue of 4. Every turn is still answered.
    let callers = talk(callers, 3, "away").await;
    db.bring_back().await;
    let callers = talk(callers, 1, "after").await;

    let mut expected = 0usize;
    let mut present = 0usize;
    let mut ids = Vec::new();
    for c in callers {
        let (id, completed) = (c.id.clone(), c.completed.clone());
        c.end().await;
        ids.push((id, completed));
    }
    for (id, completed) in &ids {
        let call = ended(&store, id, Duration::from_secs(60)).await;
        assert_eq!(call.ended_reason.as_deref(), Some("customer-ended-call"), "{name}: {call:?}");
        let users = said(&call, TurnRole::User);
        // What was kept is in order, the turns before and after the outage whole.
        assert_eq!(users.first().map(String::as_str), Some(completed[0].as_str()), "{name}: {users:?}");
        assert_eq!(users.last(), completed.last(), "{name}: {users:?}");
        assert!(users.iter().all(|u| completed.contains(u)), "{name}: {users:?}");
        assert!(users.windows(2).all(|w| completed.iter().position(|c| *c == w[0]) < completed.iter().position(|c| *c == w[1])));
        expected += 2 * completed.len();
        present += call.turns.as_ref().unwrap().len();
    }
    let lost = expected - present;
    let metrics = srv.metrics(&key).await;
    let dropped = metric(&metrics, "voxgate_call_writes_dropped_total");
    eprintln!("{name}: {lost} of {expected} turn writes lost with a queue of 4; {dropped} counted");
    assert!(lost > 0, "{name}: 60 turns did not fit in 4 places");
    assert_eq!(dropped, lost as f64, "{name}: every lost write is counted, and only those");
    let logs = srv.logs();
    assert!(logs.contains("dropped"), "{name}: the drops are logged");
    srv.stop().await;
}

/// Polls until the record of `id` holds `users` user turns (and as many replies).
async fn written(store: &Store, id: &str, users: &[String]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let call = store.get_call(id).await.unwrap();
        if said(&call, TurnRole::User) == users && said(&call, TurnRole::Assistant).len() == users.len() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not written after 30 s: {call:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_call_and_the_next_start_ends_the_calls_and_keeps_every_written_turn() {
    let db = Db::chosen();
    let name = db.name();
    let dir = tempfile::tempdir().unwrap();
    let (store, key) = store_with_key(&db.url()).await;
    // The same instance restarted: on port 0 the default id (host and bound port)
    // would change with the port, so it is named, as a deployment names it.
    let same = [("INSTANCE_ID", "kill-9-test".to_string())];
    let srv = Served::start(&db.url(), dir.path(), &same).await;
    let assistant = srv.assistant(&key).await;

    let mut callers = Vec::new();
    for _ in 0..6 {
        callers.push(Caller::open(&srv.url, &key, &assistant).await);
    }
    let mut callers = talk(callers, 2, "early").await;
    // Written: the record holds them (what "completed" means behind a write-behind queue).
    for c in &callers {
        written(&store, &c.id, &c.completed).await;
    }
    let durable: Vec<(String, Vec<String>)> = callers.iter().map(|c| (c.id.clone(), c.completed.clone())).collect();

    // Mid-call: half the calls are in the middle of a reply, the other half have
    // just heard theirs end (its latency event just came) when the process dies.
    for (i, c) in callers.iter_mut().enumerate() {
        c.send_text(&format!("last call {i}")).await;
    }
    let mut just_done = Vec::new();
    for (i, c) in callers.iter_mut().enumerate() {
        let want = if i % 2 == 0 { "bot-speech-started" } else { "latency" };
        c.until(|e| e["type"] == want, Duration::from_secs(30)).await.expect("the turn goes on");
        if want == "latency" {
            just_done.push((c.id.clone(), format!("last call {i}")));
        }
    }
    srv.kill9().await;
    drop(callers);

    // The next start on the same database.
    let srv = Served::start(&db.url(), dir.path(), &same).await;
    assert!(srv.logs().contains("ended calls left in progress by an earlier run"), "{name}");
    let mut lost_fresh = 0;
    for (id, durable_turns) in &durable {
        let call = store.get_call(id).await.unwrap();
        assert_eq!(call.status, CallStatus::Ended, "{name}: {call:?}");
        assert_eq!(call.ended_reason.as_deref(), Some("server-restarted"), "{name}: {call:?}");
        assert!(call.ended_at.is_some() && call.duration_ms.is_some_and(|d| d > 0), "{name}: {call:?}");
        let users = said(&call, TurnRole::User);
        assert_eq!(&users[..durable_turns.len()], &durable_turns[..], "{name}: every written turn is kept");
        if let Some((_, last)) = just_done.iter().find(|(j, _)| j == id)
            && !users.contains(last)
        {
            lost_fresh += 1;
        }
    }
    eprintln!("{name}: of {} turns whose latency event had just come at the kill, {lost_fresh} were not written", just_done.len());
    // The server took calls again.
    let c = Caller::open(&srv.url, &key, &assistant).await;
    let events = talk(vec![c], 1, "new").await;
    events.into_iter().next().unwrap().end().await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Provider faults: an OpenAI-compatible server (the fake, real HTTP, real wire
// format) that hangs, resets the connection mid-reply, or answers garbage, on each
// stage. No local fallback (`--providers cloud`), so the fault reaches the caller:
// the turn ends with an `error` event within the stage's deadline, and the next
// turn, the fault gone, is answered on the same call.

const ANSWER: &str = "It is sunny in Paris today.";
const HEARD: &str = "What is the weather in Paris?";
/// Each stage's deadlines in these tests: a hang ends the turn after two attempts.
const FIRST_BYTE: Duration = Duration::from_millis(1500);

fn cloud(fake: &Fake) -> OpenAi {
    let mut config = OpenAiConfig { api_key: Some("sk-test-faults-0123".into()), base_url: fake.base.clone(), ..OpenAiConfig::default() };
    config.retry.transient_pause = Duration::from_millis(5);
    let d = Deadlines { first_byte: FIRST_BYTE, idle: FIRST_BYTE, total: Duration::from_secs(5) };
    config.deadlines = StageDeadlines { stt: d, llm: d, tts: d, warm: Duration::from_secs(2) };
    OpenAi::with_own_client(config).unwrap()
}

async fn cloud_server(fake: &Fake) -> (common::TestServer, String) {
    let factory = Arc::new(PerAssistant::cloud_only(Ok(cloud(fake))));
    let s = common::TestServer::start_with_factory(voxgate_testkit::TestDb::chosen().await, factory, |_| {}).await;
    let id = s
        .create_assistant(serde_json::json!({
            "name": "Cloud only",
            "firstMessageMode": "user-speaks-first",
            "firstMessage": null,
            "transcriber": {"provider": "openai", "model": "gpt-4o-transcribe", "language": "en"},
            "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.2, "maxTokens": 80},
            "voice": {"provider": "openai", "model": "gpt-4o-mini-tts", "voice": "coral"},
        }))
        .await;
    (s, id)
}

/// The faults of one stage: a name, the reply (scripted for every attempt of the
/// turn), and what the error message must say.
fn faults(route: Route) -> Vec<(&'static str, Reply, &'static str)> {
    let html = Reply::garbage("text/html; charset=utf-8", b"<!doctype html><html><body><h1>Sign in to the Wi-Fi</h1></body></html>");
    let mut v = vec![("hang", Reply::hang(), "deadline")];
    match route {
        Route::Chat => {
            let events = chat_events(ANSWER);
            v.extend([
                ("reset mid-stream", Reply::sse(&events[..3], Duration::from_millis(1), true), "broke off"),
                ("not an event stream", Reply::garbage("text/event-stream", b"Hello! I am not an event stream.\nNor am I JSON.\n"), "before [DONE]"),
                ("a chunk that is not JSON", Reply::garbage("text/event-stream", b"data: {\"choices\": [{\"delta\": {\"content\": oops\n\n"), "not JSON"),
                ("JSON instead of a stream", Reply::garbage("application/json", br#"{"object":"chat.completion","choices":[]}"#), "not an event stream"),
                ("an HTML page", html, "an HTML page, not an event stream"),
            ]);
        }
        Route::Speech => v.extend([
            (
                "reset mid-stream",
                Reply::Raw {
                    status: 200,
                    content_type: "audio/pcm".into(),
                    before: Duration::ZERO,
                    between: Duration::from_millis(1),
                    pieces: vec![vec![1; 4800], vec![2; 4800]],
                    cut: true,
                },
                "broke off",
            ),
            ("JSON instead of audio", Reply::garbage("application/json", br#"{"audio": null}"#), "expected PCM audio"),
            ("an HTML page", html, "expected PCM audio"),
        ]),
        Route::Transcriptions => v.extend([
            (
                "reset mid-reply",
                Reply::Raw {
                    status: 200,
                    content_type: "application/json".into(),
                    before: Duration::ZERO,
                    between: Duration::ZERO,
                    pieces: vec![br#"{"text": "What is"#.to_vec()],
                    cut: true,
                },
                "broke off",
            ),
            ("invalid JSON", Reply::garbage("application/json", br#"{"text": What is the weather"#), "malformed"),
            ("plain text", Reply::garbage("text/plain", HEARD.as_bytes()), "malformed"),
            ("an HTML page", html, "an HTML page, not a transcription"),
        ]),
        Route::Models => {}
    }
    v
}

/// One call through every fault of `route`'s stage, each followed by a normal turn.
async fn provider_faults(route: Route) {
    let fake = Fake::start_resetting().await;
    fake.set_normal(|n| {
        n.transcript = HEARD.into();
        n.reply = ANSWER.into();
    });
    let (mut s, assistant) = cloud_server(&fake).await;
    let mut call = Caller::open(&s.url, &s.admin, &assistant).await;
    let spoken = if route == Route::Transcriptions {
        let mut audio = vec![0i16; 16_000 * 3 / 10];
        audio.extend(common::speech("what is the weather in paris"));
        audio.extend(vec![0i16; 16_000 * 2]);
        Some(audio)
    } else {
        None
    };
    let mut turn = 0;
    let mut expected_users = Vec::new();
    let mut expected_errors = Vec::new();
    let mut expected_assistants = Vec::new();
    // Fault turns whose reply had begun (kept in the record as said).
    let mut partial = 0;
    for (name, reply, says) in faults(route) {
        // Enough for every attempt of the turn; what is left is cleared after it.
        fake.script(route, [reply.clone(), reply.clone(), reply]);
        let before = fake.seen(route).len();
        let from = call.events.len();
        let began = std::time::Instant::now();
        let text = format!("question {turn}");
        let end = match &spoken {
            Some(audio) => call.speak(audio).await,
            None => call.say(&text).await,
        };
        let took = began.elapsed();
        fake.clear(route);
        assert_eq!(end["type"], "error", "{name}: the turn ends with an error: {end}");
        assert_eq!(end["code"], "provider-failed", "{name}: {end}");
        let message = end["message"].as_str().unwrap();
        assert!(message.contains(says), "{name}: the message names the fault ({says}): {message}");
        assert!(!message.contains("sk-test-faults"), "{name}: the key leaked: {message}");
        assert!(fake.seen(route).len() > before, "{name}: the request reached the provider");
        eprintln!("{route:?} {name}: error after {took:?}: {message}");
        // A reply cut after its first words or audio still plays what came: its
        // audio may start before or after the error event, and its turn ends (its
        // latency event) before the next turn begins, else that event would be
        // taken for the next turn's.
        if route != Route::Transcriptions && name == "reset mid-stream" {
            call.until(|e| e["type"] == "latency", Duration::from_secs(30)).await.expect("the partial reply ends");
            assert!(call.events[from..].iter().any(|e| e["type"] == "bot-speech-started"), "{name}: the words before the reset are spoken");
            partial += 1;
        }
        if route != Route::Transcriptions {
            expected_users.push(text.clone());
        } else {
            // The turn is kept without words, with the error the caller was sent.
            expected_users.push(String::new());
            expected_errors.push(message.to_string());
        }
        turn += 1;

        // The fault is gone: the next turn on the same call is answered.
        let text = format!("question {turn}");
        let end = match &spoken {
            Some(audio) => call.speak(audio).await,
            None => call.say(&text).await,
        };
        assert_eq!(end["type"], "latency", "{name}: the call goes on: {end} after {:?}", call.events);
        expected_users.push(if spoken.is_some() { HEARD.to_string() } else { text });
        expected_assistants.push(ANSWER.to_string());
        turn += 1;
    }
    let id = call.id.clone();
    let events = call.end().await;
    assert_eq!(events.last().unwrap()["reason"], "customer-ended-call");
    let record = ended(&s.store, &id, Duration::from_secs(30)).await;
    assert_eq!(said(&record, TurnRole::User), expected_users, "{route:?}: the record has every turn the caller took");
    let errors: Vec<String> = record
        .turns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.error.as_ref())
        .map(|e| {
            assert_eq!(e.code, "provider-failed", "{route:?}: {e:?}");
            e.message.clone()
        })
        .collect();
    assert_eq!(errors, expected_errors, "{route:?}: the untranscribed turns say why");
    let replies = said(&record, TurnRole::Assistant);
    // Every answered turn, and each fault turn whose reply had begun, kept as said.
    assert_eq!(replies.len(), expected_assistants.len() + partial, "{route:?}: every answered turn is in the record: {replies:?}");
    assert!(replies.iter().filter(|t| *t == ANSWER).count() >= expected_assistants.len(), "{route:?}: {replies:?} events {events:?}");
    if route == Route::Chat {
        // The words said before the reset are kept as that turn's reply.
        assert!(said(&record, TurnRole::Assistant).iter().any(|t| t.trim() == "It is"), "{route:?}: {:?}", record.turns);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_faults_on_the_language_model_end_the_turn_and_the_call_goes_on() {
    provider_faults(Route::Chat).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_faults_on_speech_end_the_turn_and_the_call_goes_on() {
    provider_faults(Route::Speech).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_faults_on_transcription_end_the_turn_and_the_call_goes_on() {
    provider_faults(Route::Transcriptions).await;
}
