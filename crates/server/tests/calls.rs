//! Whole calls through the real server and real WebSockets: barge-in, a dropped
//! connection, 100 concurrent calls, a client that stops reading, the silence
//! timeout, the maximum duration and an end-call phrase. The caller's voice is
//! espeak-ng streamed in real time (silence is zeros); the VAD, turn taking, the
//! paced output, the store and the call records are the real ones; only the models
//! are scripted (`ScriptedStt`, `ScriptedLlm`, `ToneTts`).

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, ended_call, pcm_bytes, speech};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxgate_server::config::Rate0;
use voxgate_server::session::providers::Providers;
use voxgate_services::llm::Role;
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_testkit::TestDb;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---- audio ----


/// The caller's microphone: 20 ms messages of 16 kHz PCM16 in real time, silence
/// (zeros) unless something was given to [`Mic::say`].
struct Mic {
    say: mpsc::UnboundedSender<(Vec<i16>, oneshot::Sender<Instant>)>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<SplitSink<Ws, Message>>,
}

impl Mic {
    fn start(mut tx: SplitSink<Ws, Message>) -> Mic {
        let (say, mut said) = mpsc::unbounded_channel::<(Vec<i16>, oneshot::Sender<Instant>)>();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut queue: VecDeque<(VecDeque<i16>, Option<oneshot::Sender<Instant>>)> = VecDeque::new();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut dead = false;
            loop {
                tokio::select! {
                    _ = &mut stopped => return tx,
                    _ = tick.tick() => {}
                }
                while let Ok((samples, done)) = said.try_recv() {
                    queue.push_back((samples.into(), Some(done)));
                }
                let mut chunk = Vec::with_capacity(320);
                while chunk.len() < 320 {
                    let Some((front, done)) = queue.front_mut() else { break };
                    while chunk.len() < 320
                        && let Some(s) = front.pop_front()
                    {
                        chunk.push(s);
                    }
                    if front.is_empty() {
                        if let Some(done) = done.take() {
                            let _ = done.send(Instant::now());
                        }
                        queue.pop_front();
                    }
                }
                chunk.resize(320, 0);
                if !dead && tx.send(Message::Binary(pcm_bytes(&chunk).into())).await.is_err() {
                    // The server closed the call; keep the sink for the test.
                    dead = true;
                }
            }
        });
        Mic { say, stop, task }
    }

    /// Queues `samples`; the receiver fires when their last message has been sent.
    fn say(&self, samples: Vec<i16>) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        self.say.send((samples, tx)).unwrap();
        rx
    }

    async fn stop(self) -> SplitSink<Ws, Message> {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

// ---- what the client receives ----

#[derive(Debug, Clone)]
enum In {
    Event(Value),
    /// A binary message of this many bytes.
    Audio(usize),
    /// The socket ended: a close frame (with its code), or none.
    Closed(Option<u16>),
}

/// Everything the server sends on one call, with arrival times, read by a task of
/// its own (so the client always reads promptly).
struct Inbox {
    rx: mpsc::UnboundedReceiver<(Instant, In)>,
    log: Vec<(Instant, In)>,
    reader: JoinHandle<()>,
}

impl Inbox {
    fn spawn(mut stream: SplitStream<Ws>) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let m = stream.next().await;
                let now = Instant::now();
                let item = match m {
                    Some(Ok(Message::Text(t))) => In::Event(serde_json::from_str(&t).expect("events are JSON")),
                    Some(Ok(Message::Binary(b))) => In::Audio(b.len()),
                    Some(Ok(Message::Close(c))) => In::Closed(c.map(|c| u16::from(c.code))),
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => In::Closed(None),
                };
                let end = matches!(item, In::Closed(_));
                let _ = tx.send((now, item));
                if end {
                    return;
                }
            }
        });
        Inbox { rx, log: Vec::new(), reader }
    }

    fn types(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|(_, m)| match m {
                In::Event(v) => Some(v["type"].as_str().unwrap_or("?").to_string()),
                In::Closed(c) => Some(format!("closed({c:?})")),
                In::Audio(_) => None,
            })
            .collect()
    }

    /// Waits (at most `within`) for an event of type `ty` matching `pred`; returns
    /// its index in the log, its arrival time and the event.
    async fn until(&mut self, ty: &str, pred: impl Fn(&Value) -> bool, within: Duration) -> (usize, Instant, Value) {
        let deadline = Instant::now() + within;
        loop {
            let got = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {ty} within {within:?}; got {:?}", self.types()));
            let Some((at, m)) = got else { panic!("the socket ended before {ty}; got {:?}", self.types()) };
            self.log.push((at, m.clone()));
            match m {
                In::Event(v) if v["type"] == ty && pred(&v) => return (self.log.len() - 1, at, v),
                In::Closed(_) => panic!("the socket ended before {ty}; got {:?}", self.types()),
                _ => {}
            }
        }
    }

    async fn event(&mut self, ty: &str) -> (usize, Instant, Value) {
        self.until(ty, |_| true, Duration::from_secs(20)).await
    }

    /// Reads on until the socket ends.
    async fn until_closed(&mut self, within: Duration) -> Option<u16> {
        let deadline = Instant::now() + within;
        loop {
            let got = tokio::time::timeout_at(deadline, self.rx.recv()).await.unwrap_or_else(|_| panic!("the socket is still open after {within:?}; got {:?}", self.types()));
            let (at, m) = got?;
            self.log.push((at, m.clone()));
            if let In::Closed(c) = m {
                return c;
            }
        }
    }

    /// Binary messages in the log between two indices (exclusive).
    fn audio_between(&self, from: usize, to: usize) -> usize {
        self.log[from + 1..to].iter().filter(|(_, m)| matches!(m, In::Audio(_))).count()
    }

    /// Events of type `ty` in the log from index `from`.
    fn events_from(&self, from: usize, ty: &str) -> Vec<Value> {
        self.log[from..]
            .iter()
            .filter_map(|(_, m)| match m {
                In::Event(v) if v["type"] == ty => Some(v.clone()),
                _ => None,
            })
            .collect()
    }
}

// ---- the server side ----

async fn assistant(s: &TestServer, body: Value) -> String {
    s.create_assistant(body).await
}

fn request(s: &TestServer, assistant_id: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = s.ws_url(&format!("assistantId={assistant_id}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.admin).parse().unwrap());
    req
}

async fn connect(s: &TestServer, assistant_id: &str) -> Ws {
    tokio_tungstenite::connect_async(request(s, assistant_id)).await.expect("the call opens").0
}

/// Opens a call, sends `start`, and returns its microphone and inbox, with the
/// `call-started` event.
async fn open(s: &TestServer, assistant_id: &str) -> (Mic, Inbox, Value) {
    let ws = connect(s, assistant_id).await;
    let (mut tx, rx) = ws.split();
    tx.send(Message::Text(common::START.into())).await.unwrap();
    let mut inbox = Inbox::spawn(rx);
    let (_, _, started) = inbox.event("call-started").await;
    (Mic::start(tx), inbox, started)
}

fn turns(call: &Value) -> Vec<(String, String, bool)> {
    call["turns"]
        .as_array()
        .unwrap_or_else(|| panic!("no turns in {call}"))
        .iter()
        .map(|t| (t["role"].as_str().unwrap().to_string(), t["text"].as_str().unwrap().to_string(), t["interrupted"].as_bool().unwrap()))
        .collect()
}


fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// Whether `part`'s words are the first words of `whole`.
fn is_word_prefix(part: &str, whole: &str) -> bool {
    let (p, w) = (words(part), words(whole));
    p.len() <= w.len() && p == w[..p.len()]
}

/// The words of `text` that lie wholly within its first `chars` characters.
fn whole_words_within(text: &str, chars: usize) -> Vec<&str> {
    let mut end = 0;
    text.split_inclusive(' ')
        .take_while(|w| {
            end += w.chars().count();
            end - (w.len() - w.trim_end().len()) <= chars
        })
        .map(str::trim)
        .collect()
}

fn providers(stt: &[&str], llm: ScriptedLlm, tts: ToneTts) -> Providers {
    Providers { stt: Arc::new(ScriptedStt::new(stt.iter().copied(), Duration::from_millis(30))), llm: Arc::new(llm), tts: Arc::new(tts), tools: None }
}

/// A tone voice, `ms_per_char` a character, in 20 ms chunks (one output frame, so
/// the output stage's "chunk in hand" is one frame), at once.
fn tone(ms_per_char: u32) -> ToneTts {
    ToneTts { rate: 24_000, ms_per_char, chunk_ms: 20, first_delay: Duration::ZERO }
}

const FIRST_CLAUSE: &str = "Hello and welcome.";
const SECOND_CLAUSE: &str = "Today I would like to tell you everything about our opening hours, our prices and the many events we hold every week.";

fn greeting() -> String {
    format!("{FIRST_CLAUSE} {SECOND_CLAUSE}")
}

// ---- 1. barge-in ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_barges_in_and_the_history_keeps_only_what_was_played() {
    let llm = ScriptedLlm::new([ScriptedLlm::words("Okay.", Duration::from_millis(5))]);
    let requests = llm.requests.clone();
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers(&["stop please"], llm, tone(100)), |_| {}).await;
    // About 13 s of greeting at 100 ms a character: the assistant speaks first.
    let id = assistant(&s, json!({"name": "Library", "firstMessage": greeting()})).await;
    let (mic, mut inbox, started) = open(&s, &id).await;

    // The greeting starts; its first clause plays whole (its transcript arrives once
    // its last frame was written), and half a second of the second one.
    let (bot_started, _, _) = inbox.event("bot-speech-started").await;
    let (first_said, _, said) = inbox.event("transcript").await;
    assert_eq!((said["role"].as_str(), said["text"].as_str()), (Some("assistant"), Some(FIRST_CLAUSE)));
    let first_frames = inbox.audio_between(bot_started, first_said);
    // 18 characters at 100 ms: 90 frames of 20 ms.
    assert!((88..=92).contains(&first_frames), "{first_frames} frames for the first clause");
    while inbox.audio_between(first_said, inbox.log.len()) < 25 {
        let m = tokio::time::timeout(Duration::from_secs(5), inbox.rx.recv()).await.expect("audio keeps coming").expect("the call goes on");
        inbox.log.push(m);
    }

    // The caller talks over it, in real time.
    let voice = speech("stop please");
    let spoke_ms = voice.len() as u64 * 1000 / 16_000;
    let said_it = mic.say(voice);
    let (user_started, _, _) = inbox.event("speech-started").await;
    let (interrupted, _, _) = inbox.event("interruption").await;
    let (played, _, cut) = inbox.until("transcript", |v| v["role"] == "assistant", Duration::from_secs(5)).await;
    let (stopped, _, _) = inbox.event("bot-speech-stopped").await;
    assert!(interrupted < played && played < stopped, "interruption, the text as played, then bot-speech-stopped: {:?}", inbox.types());

    // The caller's words become a turn, and the model answers.
    let (_, _, heard) = inbox.until("transcript", |v| v["role"] == "user", Duration::from_secs(10)).await;
    assert_eq!((heard["text"].as_str(), heard["final"].as_bool()), (Some("stop please"), Some(true)));
    let (answer_started, _, _) = inbox.event("bot-speech-started").await;
    let (_, _, answer) = inbox.until("transcript", |v| v["role"] == "assistant", Duration::from_secs(5)).await;
    assert_eq!(answer["text"], "Okay.");
    inbox.event("bot-speech-stopped").await;
    // The answer's latency: the response time from the end-of-turn decision to its
    // first frame, and voice-to-voice made of endpointing and that.
    let (_, _, lat) = inbox.until("latency", |v| v["endpointingMs"].is_number(), Duration::from_secs(5)).await;
    let (endpointing, response, v2v) = (lat["endpointingMs"].as_f64().unwrap(), lat["responseMs"].as_f64().unwrap(), lat["voiceToVoiceMs"].as_f64().unwrap());
    assert!(response > 0.0 && response < 2000.0, "{lat}");
    assert!((v2v - (endpointing + response)).abs() <= 1.0, "voice-to-voice is endpointing plus the response time: {lat}");
    said_it.await.unwrap();
    let mut tx = mic.stop().await;
    tx.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    let (_, _, ended) = inbox.event("call-ended").await;
    assert_eq!(ended["reason"], "customer-ended-call");

    // The flush. Events and audio share one ordered writer queue (4 messages), so
    // the frames that were already in flight when the server decided to yield
    // arrive *before* `interruption`; any frame of the old reply after it would
    // have been written after the flush. So: none between the interruption and
    // the answer's bot-speech-started.
    let after = inbox.audio_between(interrupted, answer_started);
    assert_eq!(after, 0, "{after} frames of the interrupted reply after `interruption`");
    // And the reply stops promptly once the caller speaks: the VAD reports
    // speech-started after its 200 ms start time; the rule needs 300 ms voiced
    // (about 100 ms more, 5 frames), then the flush takes at most the frame in hand
    // (1), plus the VAD's detector-frame granularity (1-2). 10 frames is 200 ms.
    let overlap = inbox.audio_between(user_started, interrupted);
    assert!(overlap <= 10, "{overlap} frames of reply after the caller started speaking (spoke {spoke_ms} ms)");

    // What was played of the second clause: all frames since the first clause's
    // transcript, at 100 ms a character (5 frames a character).
    let frames2 = inbox.audio_between(first_said, interrupted);
    let chars2 = frames2 * 20 / 100;
    let cut_text = cut["text"].as_str().unwrap();
    assert!(is_word_prefix(cut_text, SECOND_CLAUSE) && !cut_text.is_empty(), "played {cut_text:?} of {SECOND_CLAUSE:?}");
    // Truncation keeps a word if at least half of it was played: within a word of
    // the characters played.
    let played_chars = cut_text.chars().count();
    assert!(played_chars + 10 >= chars2 && played_chars <= chars2 + 10, "{cut_text:?} ({played_chars} chars) for {frames2} frames ({chars2} chars) played");

    // Every frame is 20 ms of PCM16 at 16 kHz.
    assert!(inbox.log.iter().all(|(_, m)| !matches!(m, In::Audio(n) if *n != 640)), "frames of 640 bytes");

    // The record: the greeting as played and interrupted, the caller, the answer.
    let call = ended_call(&s, started["callId"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(call["endedReason"], "customer-ended-call");
    let t = turns(&call);
    assert_eq!(t.len(), 3, "{t:?}");
    let (role, text, was_cut) = &t[0];
    assert_eq!((role.as_str(), *was_cut), ("assistant", true), "{t:?}");
    assert_eq!(text, &format!("{FIRST_CLAUSE} {cut_text}"));
    assert!(is_word_prefix(text, &greeting()) && words(text).len() < words(&greeting()).len(), "{text:?} is not a strict prefix of the greeting");
    assert_eq!(t[1], ("user".into(), "stop please".into(), false));
    assert_eq!(t[2], ("assistant".into(), "Okay.".into(), false));

    // The model was asked with the history as heard: only the played greeting.
    let reqs = requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    let history: Vec<(Role, String)> = reqs[0].messages.iter().filter(|m| m.role != Role::System).map(|m| (m.role, m.content.clone())).collect();
    assert_eq!(history, vec![(Role::Assistant, text.clone()), (Role::User, "stop please".into())]);

    // The call shows in the metrics: each stage's latency, the interruption, the
    // frames the flush dropped, the journal's queue.
    let metrics = TestServer::http().get(s.at("/api/metrics")).bearer_auth(&s.admin).send().await.unwrap().text().await.unwrap();
    let sample = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in the metrics:\n{metrics}"))
    };
    for stage in ["endpointing", "stt", "llm_first_token", "tts_first_audio", "voice_to_voice", "response"] {
        assert!(sample(&format!("voxgate_turn_latency_seconds_count{{stage=\"{stage}\"}}")) >= 1.0, "{stage}");
    }
    assert!(sample("voxgate_interruptions_total") >= 1.0);
    assert!(sample("voxgate_pipeline_flushed_frames_total") >= 1.0);
    assert!(sample("voxgate_call_write_queue") >= 0.0);
    s.stop().await;
}

// ---- 2. a dropped connection ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_reply_leaves_a_finished_record() {
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers(&[], ScriptedLlm::default(), tone(50)), |_| {}).await;
    let id = assistant(&s, json!({"name": "Library", "firstMessage": greeting()})).await;
    let (mic, mut inbox, started) = open(&s, &id).await;
    let (_, _, said) = inbox.event("transcript").await;
    assert_eq!(said["text"], FIRST_CLAUSE);
    let first_said = inbox.log.len() - 1;
    // A second into the second clause (50 frames, 20 characters at 50 ms).
    while inbox.audio_between(first_said, inbox.log.len()) < 50 {
        let m = tokio::time::timeout(Duration::from_secs(5), inbox.rx.recv()).await.expect("audio keeps coming").expect("the call goes on");
        inbox.log.push(m);
    }
    let frames2 = inbox.audio_between(first_said, inbox.log.len());

    // The TCP connection drops: no close frame.
    let tx = mic.stop().await;
    inbox.reader.abort();
    let _ = inbox.reader.await;
    drop(tx);

    let call = ended_call(&s, started["callId"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(call["endedReason"], "connection-lost");
    let t = turns(&call);
    assert_eq!(t.len(), 1, "{t:?}");
    let (role, text, _) = &t[0];
    assert_eq!(role, "assistant");
    assert!(is_word_prefix(text, &greeting()) && words(text).len() < words(&greeting()).len(), "{text:?} is not a strict prefix of the greeting");
    // What was played: the first clause, and the words of the second that the client
    // received whole (the server may have written a few frames more before it saw
    // the connection go).
    let heard = whole_words_within(SECOND_CLAUSE, frames2 * 20 / 50);
    assert!(heard.len() >= 2, "{heard:?}");
    let least = format!("{FIRST_CLAUSE} {}", heard.join(" "));
    assert!(
        words(text).len() >= words(&least).len(),
        "the record keeps {text:?}, but the caller heard at least {least:?} ({frames2} frames of the second clause)"
    );
    s.stop().await;
}

// ---- 3. 100 calls at once ----

/// The next event matching `pred` on call `n`; no `error` events on the way.
async fn wait_for(ws: &mut Ws, n: usize, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let ev = common::next_event(ws).await.unwrap_or_else(|| panic!("call {n}: the socket closed early"));
        assert_ne!(ev["type"], "error", "call {n}: {ev}");
        if pred(&ev) {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_calls_each_get_their_answer_and_record() {
    const CALLS: usize = 100;
    let llm = ScriptedLlm::new((0..CALLS).map(|_| ScriptedLlm::words("Hello there.", Duration::ZERO)));
    let s = TestServer::start_with_providers(TestDb::chosen().await, providers(&[], llm, tone(10)), |args| {
        args.rate_limit_calls = Rate0(None);
        args.rate_limit_calls_ip = Rate0(None);
        args.rate_limit_api = Rate0(None);
        args.rate_limit_api_ip = Rate0(None);
    })
    .await;
    let id = assistant(&s, json!({"name": "Front desk", "firstMessage": "Hi."})).await;
    let s = Arc::new(s);
    let began = Instant::now();
    let calls: Vec<_> = (0..CALLS)
        .map(|n| {
            let (s, id) = (s.clone(), id.clone());
            tokio::spawn(async move {
                let mut ws = connect(&s, &id).await;
                let started = common::start_call(&mut ws).await;
                wait_for(&mut ws, n, |ev| ev["type"] == "bot-speech-started").await;
                ws.send(Message::Text(json!({"type": "text", "text": "hi"}).to_string().into())).await.unwrap();
                wait_for(&mut ws, n, |ev| ev["type"] == "transcript" && ev["role"] == "assistant" && ev["text"] == "Hello there.").await;
                ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
                let ended = wait_for(&mut ws, n, |ev| ev["type"] == "call-ended").await;
                assert_eq!(ended["reason"], "customer-ended-call", "call {n}");
                started["callId"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for c in calls {
        ids.push(tokio::time::timeout(Duration::from_secs(60), c).await.expect("every call finishes within 60 s").unwrap());
    }
    let took = began.elapsed();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), CALLS, "one call id per call");
    for call_id in &ids {
        let call = ended_call(&s, call_id, Duration::from_secs(10)).await;
        assert_eq!(call["endedReason"], "customer-ended-call", "{call}");
        let mut t = turns(&call);
        // The typed text may come while the short greeting still plays: turns are
        // written in the order they complete.
        t.sort();
        assert_eq!(
            t,
            vec![("assistant".into(), "Hello there.".into(), false), ("assistant".into(), "Hi.".into(), false), ("user".into(), "hi".into(), false)],
            "{call_id}"
        );
    }
    eprintln!("{CALLS} calls in {took:?}");
    let mut s = Arc::try_unwrap(s).ok().expect("the calls are done");
    s.stop().await;
}

// ---- 4. a client that stops reading ----

/// The state and send queue of the server's side of a loopback connection, from
/// /proc/net/tcp (Linux): `(state, tx_queue bytes)`; `None` once it is gone.
fn server_socket(server_port: u16, client_port: u16) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{server_port:04X}");
    let remote = format!("0100007F:{client_port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&remote.as_str()) {
            let state = u8::from_str_radix(f[3], 16).ok()?;
            let tx = u64::from_str_radix(f[4].split(':').next()?, 16).ok()?;
            Some((state, tx))
        } else {
            None
        }
    })
}

const TCP_ESTABLISHED: u8 = 1;

/// Sets `TCP_MAXSEG` before connecting (the MSS the client announces); false where
/// that is not available.
#[cfg(target_os = "linux")]
fn set_mss(sock: &tokio::net::TcpSocket, mss: i32) -> bool {
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
    }
    const IPPROTO_TCP: i32 = 6;
    const TCP_MAXSEG: i32 = 2;
    // SAFETY: a valid socket, a pointer to an i32 and its size.
    unsafe { setsockopt(sock.as_raw_fd(), IPPROTO_TCP, TCP_MAXSEG, (&raw const mss).cast(), 4) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn set_mss(_: &tokio::net::TcpSocket, _: i32) -> bool {
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_as_slow() {
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers(&[], ScriptedLlm::default(), tone(100)), |_| {}).await;
    // 2000 characters at 100 ms: over three minutes of greeting, far more than any
    // buffer on the way holds.
    let long = "This is a very long greeting that goes on and on. ".repeat(40);
    let id = assistant(&s, json!({"name": "Talker", "firstMessage": long.trim_end()})).await;
    let before = common::live_gauge(&s).await;

    // A client with a small receive buffer and a small MSS, so that the kernel's
    // buffers on the way hold seconds of audio, not minutes: on loopback the server's
    // send buffer is sized from the peer's MSS (2 x 10 segments), about 2.6 MB for
    // the 64 KiB loopback MSS (27 s of 48 kHz audio), about 40 KB for 1000 bytes.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let small_mss = set_mss(&sock, 1000);
    let tcp = sock.connect(s.addr).await.unwrap();
    let client_port = tcp.local_addr().unwrap().port();
    let (mut ws, _) = tokio_tungstenite::client_async(request(&s, &id), MaybeTlsStream::Plain(tcp)).await.unwrap();
    let began = Instant::now();
    ws.send(Message::Text(r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":16000,"outputSampleRate":48000}}"#.into())).await.unwrap();
    // From here on the client never reads (nor sends). The greeting is 48 kHz PCM16:
    // 1920 bytes a frame, 96 kB a second. What the way holds before the server's
    // writer blocks: the client's receive buffer (4 KiB, doubled by the kernel), the
    // server's send buffer (on loopback the kernel sizes it from the MSS: about
    // 2 x 10 segments of 64 KiB, at most tcp_wmem's maximum), the WebSocket
    // library's write buffer (128 KiB) and the 4-message writer queue. Then the
    // output stage waits its 2 s slow_client_timeout; then the session's teardown
    // gives `call-ended` and the close 0.5 s each and the writer 2 s before the
    // record ends.
    let wmem_max: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").ok().and_then(|t| t.split_whitespace().nth(2)?.parse().ok()).unwrap_or(4 << 20);
    let per_segment: u64 = if small_mss { 8192 } else { 131_072 };
    let buffered = 8192 + (20 * per_segment).min(wmem_max).max(16_384) + 131_072 + 4 * 1924;
    let bound = Duration::from_secs(2) + Duration::from_millis(buffered * 1000 / 96_000) + Duration::from_secs(3);
    eprintln!("at most {buffered} bytes buffered: slow-client expected within {bound:?}");

    let call = loop {
        let list: Value = TestServer::http().get(s.at("/api/calls")).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
        let c = list["items"].as_array().and_then(|a| a.first()).cloned();
        if let Some(c) = c.filter(|c| c["status"] == "ended") {
            break c;
        }
        assert!(began.elapsed() < bound + Duration::from_secs(2), "the call is still live after {:?}: {:?}", began.elapsed(), server_socket(s.addr.port(), client_port));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = began.elapsed();
    eprintln!("slow-client after {took:?}");
    assert_eq!(call["endedReason"], "slow-client", "{call}");
    assert!(took >= Duration::from_secs(2), "ended after {took:?}, before the slow-client timeout could pass");
    // The live-calls gauge is back where it was.
    let deadline = Instant::now() + Duration::from_secs(3);
    while common::live_gauge(&s).await != before {
        assert!(Instant::now() < deadline, "voxgate_websocket_connections is {}, was {before}", common::live_gauge(&s).await);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // The call is over, so the server must not keep its socket (and the task that
    // writes to it) alive for as long as this client stays connected without reading.
    if cfg!(target_os = "linux") && server_socket(s.addr.port(), client_port).is_some() {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = server_socket(s.addr.port(), client_port);
            if state.is_none_or(|(st, _)| st != TCP_ESTABLISHED) {
                break;
            }
            assert!(Instant::now() < deadline, "5 s after the call ended as slow-client, the server still holds the connection open: {state:?} (state, bytes queued)");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Now read what was buffered: bounded, then the end of the connection.
    let mut bytes = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("the connection ends") {
            Some(Ok(Message::Binary(b))) => bytes += b.len() as u64,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    eprintln!("{bytes} bytes of audio were buffered on the way");
    assert!(bytes <= buffered + 65_536, "{bytes} bytes of audio buffered for a client that stopped reading (bound {buffered})");
    s.stop().await;
}

// ---- 5. silence timeout ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_prompts_then_ends_the_call() {
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers(&[], ScriptedLlm::default(), tone(20)), |_| {}).await;
    let id = assistant(&s, json!({"name": "Quiet", "firstMessageMode": "user-speaks-first", "firstMessage": null, "silenceTimeoutSecs": 1})).await;
    let (mic, mut inbox, started) = open(&s, &id).await;
    let t0 = inbox.log[0].0;
    // The caller's microphone sends silence all along.
    let (_, prompt_at, _) = inbox.event("bot-speech-started").await;
    let (_, _, prompt) = inbox.until("transcript", |v| v["role"] == "assistant", Duration::from_secs(5)).await;
    assert_eq!(prompt["text"], "Are you still there?");
    let (_, stopped_at, _) = inbox.event("bot-speech-stopped").await;
    let (_, ended_at, ended) = inbox.event("call-ended").await;
    assert_eq!(ended["reason"], "silence-timed-out");
    let ms = |d: Duration| d.as_millis();
    let prompt_after = prompt_at - t0;
    assert!((1000..1600).contains(&ms(prompt_after)), "the prompt after {prompt_after:?} of silence");
    let end_after = ended_at - stopped_at;
    assert!((950..1600).contains(&ms(end_after)), "the call ended {end_after:?} after the prompt");
    assert!(inbox.events_from(0, "speech-started").is_empty(), "silence is not speech");
    let _ = mic.stop().await;
    let call = ended_call(&s, started["callId"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(call["endedReason"], "silence-timed-out");
    assert_eq!(turns(&call), vec![("assistant".into(), "Are you still there?".into(), false)]);
    s.stop().await;
}

// ---- 6. maximum duration ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maximum_duration_ends_the_call_even_mid_reply() {
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers(&[], ScriptedLlm::default(), tone(100)), |_| {}).await;
    // The API's minimum is 10 s; the greeting (13.6 s) is still playing then.
    let id = assistant(&s, json!({"name": "Brief", "firstMessage": greeting(), "maxDurationSecs": 10, "silenceTimeoutSecs": 0})).await;
    let (mic, mut inbox, started) = open(&s, &id).await;
    let t0 = inbox.log[0].0;
    let (_, ended_at, ended) = inbox.until("call-ended", |_| true, Duration::from_secs(20)).await;
    assert_eq!(ended["reason"], "exceeded-max-duration");
    let after = ended_at - t0;
    assert!(after >= Duration::from_millis(9900) && after < Duration::from_millis(10_800), "the call ended after {after:?}; the maximum is 10 s");
    let _ = mic.stop().await;
    let call = ended_call(&s, started["callId"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(call["endedReason"], "exceeded-max-duration");
    let t = turns(&call);
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(is_word_prefix(&t[0].1, &greeting()) && words(&t[0].1).len() < words(&greeting()).len(), "{:?}", t[0]);
    s.stop().await;
}

// ---- 7. an end-call phrase ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_call_phrase_ends_the_call_after_it_plays() {
    let llm = ScriptedLlm::new([ScriptedLlm::words("Goodbye, talk soon.", Duration::from_millis(5))]);
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers(&[], llm, tone(40)), |_| {}).await;
    let id = assistant(&s, json!({"name": "Polite", "firstMessageMode": "user-speaks-first", "firstMessage": null, "endCallPhrases": ["talk soon"]})).await;
    let (mic, mut inbox, started) = open(&s, &id).await;
    let mut tx = mic.stop().await;
    tx.send(Message::Text(json!({"type": "text", "text": "that is all, thanks"}).to_string().into())).await.unwrap();
    let (bot_started, _, _) = inbox.event("bot-speech-started").await;
    let (_, _, said) = inbox.until("transcript", |v| v["role"] == "assistant", Duration::from_secs(5)).await;
    assert_eq!(said["text"], "Goodbye, talk soon.");
    let (stopped, _, _) = inbox.event("bot-speech-stopped").await;
    let (ended, _, ev) = inbox.event("call-ended").await;
    assert_eq!(ev["reason"], "assistant-said-end-call-phrase");
    // All of it played first: 19 characters at 40 ms, 38 frames, plus at most one
    // for the resampler's tail (padded to a whole frame) at the end of the reply;
    // and one reply: nothing more is played between the goodbye and the end.
    let frames = inbox.audio_between(bot_started, ended);
    let replies = inbox.events_from(0, "bot-speech-started").len();
    assert!((37..=39).contains(&frames) && replies == 1, "{frames} frames in {replies} bot utterances for the goodbye: {:?}", inbox.types());
    assert!(stopped < ended);
    assert_eq!(inbox.until_closed(Duration::from_secs(5)).await, Some(1000));
    assert!(inbox.events_from(0, "interruption").is_empty(), "nothing was interrupted: {:?}", inbox.types());
    let call = ended_call(&s, started["callId"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(call["endedReason"], "assistant-said-end-call-phrase");
    assert_eq!(turns(&call), vec![("user".into(), "that is all, thanks".into(), false), ("assistant".into(), "Goodbye, talk soon.".into(), false)]);
    drop(tx);
    s.stop().await;
}

// ---- 8. a recording of both sides ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_keeps_both_sides_in_a_stereo_wav() {
    let llm = ScriptedLlm::new([ScriptedLlm::words("Okay.", Duration::ZERO)]);
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers(&["stop please"], llm, tone(50)), |_| {}).await;
    let id = assistant(&s, json!({"name": "Recorded", "firstMessage": "Hello there.", "recordingEnabled": true})).await;
    let (mic, mut inbox, started) = open(&s, &id).await;
    let call_id = started["callId"].as_str().unwrap().to_string();
    // The greeting plays whole, then the caller speaks and is answered.
    inbox.event("bot-speech-stopped").await;
    let voice = speech("stop please");
    let said_it = mic.say(voice);
    let (_, _, heard) = inbox.until("transcript", |v| v["role"] == "user", Duration::from_secs(10)).await;
    assert_eq!(heard["text"], "stop please");
    inbox.until("transcript", |v| v["role"] == "assistant" && v["text"] == "Okay.", Duration::from_secs(5)).await;
    inbox.event("bot-speech-stopped").await;
    said_it.await.unwrap();
    let mut tx = mic.stop().await;
    tx.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    inbox.event("call-ended").await;

    let call = ended_call(&s, &call_id, Duration::from_secs(10)).await;
    let url = call["recordingUrl"].as_str().unwrap_or_else(|| panic!("no recordingUrl: {call}")).to_string();
    assert_eq!(url, format!("/api/calls/{call_id}/recording"));
    let res = TestServer::http().get(s.at(&url)).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "audio/wav");
    let bytes = res.bytes().await.unwrap();
    let mut r = hound::WavReader::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    assert_eq!((r.spec().channels, r.spec().sample_rate, r.spec().bits_per_sample), (2, 16_000, 16));
    let samples: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let (left, right): (Vec<i16>, Vec<i16>) = samples.chunks(2).map(|c| (c[0], c[1])).unzip();
    // Loudness per 100 ms window on each side.
    let windows = |x: &[i16]| x.chunks(1600).map(|w| (w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt()).collect::<Vec<f64>>();
    let (l, r) = (windows(&left), windows(&right));
    let loud = |w: &[f64]| w.iter().filter(|&&v| v > 500.0).count();
    // The greeting (12 characters at 50 ms) and "Okay." (5): about 0.85 s of tone on
    // the assistant's side; the caller's words on the caller's side.
    assert!((6..=12).contains(&loud(&r)), "assistant windows: {r:?}");
    assert!(loud(&l) >= 3, "caller windows: {l:?}");
    // The caller spoke after the greeting and before the answer.
    let first_caller = l.iter().position(|&v| v > 500.0).unwrap();
    let first_bot = r.iter().position(|&v| v > 500.0).unwrap();
    let last_bot = r.iter().rposition(|&v| v > 500.0).unwrap();
    assert!(first_bot < first_caller && first_caller < last_bot, "greeting {first_bot}, caller {first_caller}, answer ends {last_bot}");
    // The whole call, about as long as it lasted.
    let secs = left.len() as f64 / 16_000.0;
    let lasted = call["durationMs"].as_f64().unwrap() / 1000.0;
    assert!((secs - lasted).abs() < 1.0, "{secs} s of recording for a {lasted} s call");

    // A call without recording has none.
    let plain = assistant(&s, json!({"name": "Plain", "firstMessage": "Hi."})).await;
    let (mic, mut inbox, started) = open(&s, &plain).await;
    inbox.event("bot-speech-stopped").await;
    let mut tx = mic.stop().await;
    tx.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    inbox.event("call-ended").await;
    let plain_id = started["callId"].as_str().unwrap();
    let call = ended_call(&s, plain_id, Duration::from_secs(10)).await;
    assert!(call["recordingUrl"].is_null(), "{call}");
    let res = TestServer::http().get(s.at(&format!("/api/calls/{plain_id}/recording"))).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    s.stop().await;
    // The test server's recordings folder (ServeArgs::for_tests) is this process's.
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("voxgate-test-recordings-{}", std::process::id())));
}

// ---- 9. the word rule for interruptions ----

/// The caller talks over the greeting of an assistant that yields only after
/// `minWords: 3`; returns the user transcripts (text, final) seen before the
/// interruption, or panics if there is none.
async fn talk_over(stt: ScriptedStt) -> Vec<(String, bool)> {
    let p = Providers { stt: Arc::new(stt), llm: Arc::new(ScriptedLlm::new([ScriptedLlm::words("Okay.", Duration::ZERO)])), tts: Arc::new(tone(100)), tools: None };
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, p, |_| {}).await;
    let id = assistant(&s, json!({"name": "Patient", "firstMessage": greeting(), "interruption": {"minVoicedMs": 100, "minWords": 3}})).await;
    let (mic, mut inbox, _) = open(&s, &id).await;
    inbox.event("bot-speech-started").await;
    let said_it = mic.say(speech("please stop talking about the library now"));
    let (interrupted, _, _) = inbox.until("interruption", |_| true, Duration::from_secs(10)).await;
    let before: Vec<(String, bool)> = inbox.log[..interrupted]
        .iter()
        .filter_map(|(_, m)| match m {
            In::Event(v) if v["type"] == "transcript" && v["role"] == "user" => Some((v["text"].as_str().unwrap().to_string(), v["final"].as_bool().unwrap())),
            _ => None,
        })
        .collect();
    said_it.await.unwrap();
    let _ = mic.stop().await;
    s.stop().await;
    before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_streaming_transcriber_the_caller_interrupts_after_enough_words() {
    // A word per 150 ms of audio: the bot yields once three words were heard.
    let stt = ScriptedStt::new(["please stop talking about the library now"], Duration::from_millis(30)).streaming(Duration::from_millis(150));
    let partials = talk_over(stt).await;
    let last = partials.last().unwrap_or_else(|| panic!("no partial transcript before the interruption"));
    assert!(!last.1 && last.0.split_whitespace().count() >= 3, "{partials:?}");
    assert!(partials.iter().all(|(t, fin)| !fin && t.split_whitespace().count() <= 4), "{partials:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_batch_transcriber_the_word_rule_gives_way_to_the_voiced_rule() {
    // No partials ever come: minWords would keep the bot talking forever.
    let partials = talk_over(ScriptedStt::new(["please stop talking about the library now"], Duration::from_millis(30))).await;
    assert!(partials.is_empty(), "{partials:?}");
}

// ---- 10. a key revoked mid-call ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_key_ends_its_live_calls_with_1008() {
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers(&[], ScriptedLlm::default(), tone(50)), |args| args.auth_cache_ttl = 1).await;
    let id = assistant(&s, json!({"name": "Guarded", "firstMessage": "Hello.", "silenceTimeoutSecs": 0})).await;
    let http = TestServer::http();
    let key: Value = http.post(s.at("/api/keys")).bearer_auth(&s.admin).json(&json!({"name": "leaked", "kind": "private"})).send().await.unwrap().json().await.unwrap();
    let (secret, key_id) = (key["secret"].as_str().unwrap().to_string(), key["key"]["id"].as_str().unwrap().to_string());
    // A call on the key to revoke, and one on another key that must go on.
    let mut req = s.ws_url(&format!("assistantId={id}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {secret}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let (mut tx, rx) = ws.split();
    tx.send(Message::Text(common::START.into())).await.unwrap();
    let mut doomed = Inbox::spawn(rx);
    let (_, _, started) = doomed.event("call-started").await;
    let (other_mic, other, _) = open(&s, &id).await;
    doomed.event("bot-speech-stopped").await;

    let res = http.delete(s.at(&format!("/api/keys/{key_id}"))).bearer_auth(&s.admin).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let revoked = Instant::now();
    let (_, _, ended) = doomed.until("call-ended", |_| true, Duration::from_secs(5)).await;
    assert_eq!(ended["reason"], "key-revoked");
    assert_eq!(doomed.until_closed(Duration::from_secs(5)).await, Some(1008));
    assert!(revoked.elapsed() < Duration::from_secs(3), "ended {:?} after the revocation", revoked.elapsed());
    let call = ended_call(&s, started["callId"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(call["endedReason"], "key-revoked");
    // The other call is still live.
    assert!(other.events_from(0, "call-ended").is_empty(), "{:?}", other.types());
    let _ = other_mic.stop().await;
    drop(tx);
    s.stop().await;
}

// ---- 11. the end-call tool over the socket ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_call_tool_shows_as_a_tool_call_and_ends_the_call() {
    use voxgate_services::scripted::Step;
    let llm = ScriptedLlm::new([vec![
        Step::Token("Goodbye.".into(), Duration::ZERO),
        Step::Tool { name: "hang_up".into(), arguments: r#"{"reason":"done"}"#.into(), delay: Duration::from_millis(5) },
    ]]);
    let mut s = TestServer::start_with_providers(TestDb::chosen().await, providers(&[], llm, tone(40)), |_| {}).await;
    let id = assistant(
        &s,
        json!({"name": "Closer", "firstMessageMode": "user-speaks-first", "firstMessage": null,
               "tools": [{"type": "end-call", "name": "hang_up", "description": "Ends the call"}]}),
    )
    .await;
    let (mic, mut inbox, started) = open(&s, &id).await;
    let mut tx = mic.stop().await;
    tx.send(Message::Text(json!({"type": "text", "text": "that is all"}).to_string().into())).await.unwrap();
    let (_, _, tool) = inbox.until("tool-call", |_| true, Duration::from_secs(5)).await;
    assert_eq!((tool["name"].as_str(), &tool["arguments"]), (Some("hang_up"), &json!({"reason": "done"})), "{tool}");
    let (_, _, ended) = inbox.until("call-ended", |_| true, Duration::from_secs(10)).await;
    assert_eq!(ended["reason"], "assistant-ended-call-with-tool");
    // The goodbye played before the end.
    let said: Vec<Value> = inbox.events_from(0, "transcript");
    assert!(said.iter().any(|v| v["role"] == "assistant" && v["text"] == "Goodbye."), "{:?}", inbox.types());
    let call = ended_call(&s, started["callId"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(call["endedReason"], "assistant-ended-call-with-tool");
    drop(tx);
    s.stop().await;
}
