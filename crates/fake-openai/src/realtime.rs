//! A fake Realtime endpoint: `GET /v1/realtime?model=...` upgraded to a WebSocket that
//! speaks OpenAI's Realtime wire format (GA `gpt-realtime` event names, or the older
//! beta ones), with a toy server VAD, scripted transcripts and replies, and faults.
//!
//! What it does with each client event:
//! - `session.update`: merges the session and answers `session.updated` with it;
//! - `input_audio_buffer.append`: decodes the PCM16 and, with `server_vad`, runs an
//!   energy VAD on 10 ms frames: a loud frame starts speech
//!   (`input_audio_buffer.speech_started`); `silence_duration_ms` of quiet ends it
//!   (`speech_stopped`, `committed`, the scripted user transcript as
//!   `conversation.item.input_audio_transcription.completed` (or `.failed`, see
//!   [`Script::transcription_error`]), then a response unless
//!   `create_response` is false). Speech during a response cancels it when
//!   `interrupt_response` is not false;
//! - `input_audio_buffer.commit` (manual turns): `committed` plus the transcript
//!   (an `error` when less than 100 ms of audio is buffered); `response.create`: a response;
//! - `response.cancel`: the audio stops and `response.done` says `cancelled`;
//! - `conversation.item.truncate`: answered with `conversation.item.truncated`;
//! - `conversation.item.create`: answered with `conversation.item.added` (beta: `created`).
//!
//! Every client event is recorded ([`FakeRealtime::events`]). Faults: [`Script::cut`]
//! ends the socket mid-response; [`FakeRealtime::push`] sends any frame (garbage
//! text, binary, an `error` event, a close, a dropped connection) to the live socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Shared;

/// The path of the endpoint.
pub const PATH: &str = "/v1/realtime";
/// The rate of `audio/pcm` in and out.
pub const SAMPLE_RATE: u32 = 24_000;
const FRAME: usize = 240; // 10 ms

/// Which event names the fake sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// `response.output_audio.delta`, `response.output_audio_transcript.delta`, ...
    Ga,
    /// `response.audio.delta`, `response.audio_transcript.delta`, ...
    Beta,
}

impl Names {
    pub fn audio_delta(self) -> &'static str {
        match self {
            Names::Ga => "response.output_audio.delta",
            Names::Beta => "response.audio.delta",
        }
    }
    fn audio_done(self) -> &'static str {
        match self {
            Names::Ga => "response.output_audio.done",
            Names::Beta => "response.audio.done",
        }
    }
    pub fn transcript_delta(self) -> &'static str {
        match self {
            Names::Ga => "response.output_audio_transcript.delta",
            Names::Beta => "response.audio_transcript.delta",
        }
    }
    fn transcript_done(self) -> &'static str {
        match self {
            Names::Ga => "response.output_audio_transcript.done",
            Names::Beta => "response.audio_transcript.done",
        }
    }
    fn item_added(self) -> &'static str {
        match self {
            Names::Ga => "conversation.item.added",
            Names::Beta => "conversation.item.created",
        }
    }
}

/// How a response is cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The TCP connection drops, no close frame.
    Drop,
    /// A close frame with this code and reason.
    Close { code: u16, reason: String },
}

/// How the fake behaves; read afresh by every connection and every response.
#[derive(Debug, Clone)]
pub struct Script {
    pub names: Names,
    /// When set, an upgrade without `Authorization: Bearer <this>` gets a 401 (with
    /// OpenAI's JSON error body) and no WebSocket.
    pub require_key: Option<String>,
    /// Send `session.created` on connect, as OpenAI does.
    pub send_session_created: bool,
    /// Answer `session.update` (false: stay silent, for set-up deadlines).
    pub answer_session_update: bool,
    /// What the caller said: the user transcript of every committed turn.
    pub transcript: String,
    /// The assistant's words (its audio transcript), sent as one delta per word.
    pub reply_text: String,
    /// The assistant's audio (PCM16 at 24 kHz), sent in chunks.
    pub reply_audio: Vec<i16>,
    /// Samples per audio delta.
    pub chunk_samples: usize,
    /// The pause after each audio delta.
    pub chunk_pause: Duration,
    /// The RMS (fraction of full scale) above which a 10 ms frame is speech.
    pub speech_rms: f64,
    /// End the socket after this many audio deltas of a response.
    pub cut: Option<(usize, Cut)>,
    /// When set (`code`, `message`), every committed turn's transcription fails:
    /// `conversation.item.input_audio_transcription.failed` instead of `completed`.
    pub transcription_error: Option<(String, String)>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            names: Names::Ga,
            require_key: None,
            send_session_created: true,
            answer_session_update: true,
            transcript: "What is the weather in Paris?".into(),
            reply_text: "It is sunny in Paris today.".into(),
            reply_audio: tone(440.0, 0.6, 8000.0),
            chunk_samples: 2400,
            chunk_pause: Duration::from_millis(5),
            speech_rms: 0.01,
            cut: None,
            transcription_error: None,
        }
    }
}

/// A sine tone at 24 kHz with a short fade in and out.
pub fn tone(hz: f64, seconds: f64, amplitude: f64) -> Vec<i16> {
    let n = (seconds * f64::from(SAMPLE_RATE)) as usize;
    let fade = 240.0_f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            let env = (i as f64 / fade).min((n - i) as f64 / fade).min(1.0);
            (amplitude * env * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16
        })
        .collect()
}

/// A frame to send to the live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame (the socket then waits for the client's reply).
    Close { code: u16, reason: String },
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// One upgrade request.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The `model` query parameter.
    pub model: Option<String>,
    pub authorization: Option<String>,
    /// Whether the upgrade was accepted (not refused for its key).
    pub accepted: bool,
}

#[derive(Default)]
pub(crate) struct RealtimeState {
    script: Mutex<Script>,
    connections: Mutex<Vec<Connection>>,
    events: Mutex<Vec<Value>>,
    live: Mutex<Option<mpsc::UnboundedSender<Out>>>,
}

/// The Realtime side of a [`crate::Fake`]: script it, push frames, see what came in.
#[derive(Clone)]
pub struct FakeRealtime {
    pub(crate) state: Arc<RealtimeState>,
}

impl FakeRealtime {
    /// Changes the script (for connections and responses from now on).
    pub fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.state.script.lock().unwrap());
    }

    pub fn script(&self) -> Script {
        self.state.script.lock().unwrap().clone()
    }

    /// Every upgrade request, in order.
    pub fn connections(&self) -> Vec<Connection> {
        self.state.connections.lock().unwrap().clone()
    }

    /// Every client event received (over all connections), in order.
    pub fn events(&self) -> Vec<Value> {
        self.state.events.lock().unwrap().clone()
    }

    /// The client events of one type, in order.
    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["type"] == kind).collect()
    }

    /// Waits (up to `timeout`) until `count` events of `kind` arrived; returns them.
    pub async fn wait_for(&self, kind: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let end = Instant::now() + timeout;
        loop {
            let seen = self.events_of(kind);
            if seen.len() >= count || Instant::now() >= end {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends a frame on the newest live connection; false when there is none.
    pub fn push(&self, frame: Push) -> bool {
        let live = self.state.live.lock().unwrap();
        live.as_ref().is_some_and(|tx| tx.send(Out::Push(frame)).is_ok())
    }
}

/// An `error` server event.
pub fn error_event(kind: &str, code: &str, message: &str) -> String {
    json!({"type": "error", "event_id": event_id(), "error": {"type": kind, "code": code, "message": message, "param": null, "event_id": null}}).to_string()
}

/// An audio delta carrying `b64` as its `delta` (which may be anything, for faults).
pub fn audio_delta_event(names: Names, response_id: &str, item_id: &str, b64: &str) -> String {
    json!({"type": names.audio_delta(), "event_id": event_id(), "response_id": response_id, "item_id": item_id,
        "output_index": 0, "content_index": 0, "delta": b64})
    .to_string()
}

/// Little-endian PCM16 bytes, base64.
pub fn pcm_b64(samples: &[i16]) -> String {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    B64.encode(bytes)
}

fn event_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("event_fake{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[derive(Debug)]
enum Out {
    Event(Value),
    Push(Push),
}

pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let state = shared.realtime.clone();
    let authorization = crate::header(&headers, "authorization");
    let required = state.script.lock().unwrap().require_key.clone();
    let accepted = required.as_ref().is_none_or(|key| authorization.as_deref() == Some(&format!("Bearer {key}")));
    state.connections.lock().unwrap().push(Connection { model: query.get("model").cloned(), authorization, accepted });
    if !accepted {
        let body = json!({"error": {"message": "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
        return (StatusCode::UNAUTHORIZED, [("content-type", "application/json")], body.to_string()).into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let model = query.get("model").cloned().unwrap_or_else(|| "gpt-realtime".into());
    ws.max_message_size(64 << 20).on_upgrade(move |socket| serve(socket, state, model))
}

/// The response being sent; the lock orders its deltas against a cancel.
struct Active {
    id: String,
    finished: bool,
}

struct Conn {
    state: Arc<RealtimeState>,
    tx: mpsc::UnboundedSender<Out>,
    session: Value,
    pos: u64,
    carry: Vec<i16>,
    buffered: u64,
    speech: Option<Speech>,
    items: u64,
    last_item: Option<String>,
    responses: u64,
    active: Option<Arc<Mutex<Active>>>,
}

struct Speech {
    item_id: String,
    quiet: u64,
}

struct Vad {
    prefix_ms: u64,
    silence_ms: u64,
    create_response: bool,
    interrupt_response: bool,
}

async fn serve(mut socket: WebSocket, state: Arc<RealtimeState>, model: String) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    *state.live.lock().unwrap() = Some(tx.clone());
    let session = json!({
        "object": "realtime.session", "type": "realtime", "id": "sess_fake", "model": model,
        "output_modalities": ["audio"], "instructions": "",
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "transcription": null, "noise_reduction": null,
                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
                    "create_response": true, "interrupt_response": true}},
            "output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "voice": "alloy", "speed": 1.0},
        },
        "max_output_tokens": "inf",
    });
    let mut conn = Conn { state: state.clone(), tx, session, pos: 0, carry: Vec::new(), buffered: 0, speech: None, items: 0, last_item: None, responses: 0, active: None };
    if state.script.lock().unwrap().send_session_created {
        conn.send("session.created", json!({"session": conn.session}));
    }
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => conn.handle(text.as_str()),
                Some(Ok(Message::Binary(_))) => conn.error("invalid_request_error", "invalid_value", "Binary frames are not supported; send JSON events as text."),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(out) = rx.recv() => {
                let message = match out {
                    Out::Event(value) => Message::Text(value.to_string().into()),
                    Out::Push(Push::Text(text)) => Message::Text(text.into()),
                    Out::Push(Push::Binary(bytes)) => Message::Binary(bytes.into()),
                    Out::Push(Push::Close { code, reason }) => Message::Close(Some(CloseFrame { code, reason: reason.into() })),
                    Out::Push(Push::Drop) => break,
                };
                if socket.send(message).await.is_err() {
                    break;
                }
            }
        }
    }
    conn.stop_response();
    let mut live = state.live.lock().unwrap();
    if live.as_ref().is_some_and(|tx| tx.same_channel(&conn.tx)) {
        *live = None;
    }
}

impl Conn {
    fn script(&self) -> Script {
        self.state.script.lock().unwrap().clone()
    }

    fn send(&self, kind: &str, mut body: Value) {
        body["type"] = json!(kind);
        body["event_id"] = json!(event_id());
        let _ = self.tx.send(Out::Event(body));
    }

    fn error(&self, kind: &str, code: &str, message: &str) {
        self.send("error", json!({"error": {"type": kind, "code": code, "message": message, "param": null, "event_id": null}}));
    }

    fn handle(&mut self, text: &str) {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            self.error("invalid_request_error", "invalid_json", "The event is not valid JSON.");
            return;
        };
        self.state.events.lock().unwrap().push(event.clone());
        match event["type"].as_str().unwrap_or("") {
            "session.update" => self.session_update(&event),
            "input_audio_buffer.append" => self.append(&event),
            "input_audio_buffer.commit" => self.commit(),
            "input_audio_buffer.clear" => {
                self.buffered = 0;
                self.send("input_audio_buffer.cleared", json!({}));
            }
            "response.create" => self.start_response(),
            "response.cancel" => {
                if !self.cancel("client_cancelled") {
                    self.error("invalid_request_error", "response_cancel_not_active", "Cancellation failed: no active response found");
                }
            }
            "conversation.item.truncate" => self.send(
                "conversation.item.truncated",
                json!({"item_id": event["item_id"], "content_index": event["content_index"], "audio_end_ms": event["audio_end_ms"]}),
            ),
            "conversation.item.create" => {
                self.items += 1;
                let mut item = event["item"].clone();
                item["id"] = json!(format!("item_fake_user{}", self.items));
                item["object"] = json!("realtime.item");
                item["status"] = json!("completed");
                let names = self.script().names;
                self.send(names.item_added(), json!({"previous_item_id": self.last_item, "item": item}));
                if names == Names::Ga {
                    self.send("conversation.item.done", json!({"previous_item_id": self.last_item, "item": item}));
                }
                self.last_item = item["id"].as_str().map(str::to_string);
            }
            other => self.error("invalid_request_error", "invalid_value", &format!("Invalid value: '{other}'. Supported values are client event types.")),
        }
    }

    fn session_update(&mut self, event: &Value) {
        let Some(update) = event.get("session").and_then(Value::as_object) else {
            self.error("invalid_request_error", "missing_required_parameter", "Missing required parameter: 'session'.");
            return;
        };
        merge(&mut self.session, &Value::Object(update.clone()));
        if self.script().answer_session_update {
            self.send("session.updated", json!({"session": self.session}));
        }
    }

    /// The server VAD settings, `None` for manual turns (GA or beta session shape).
    fn vad(&self) -> Option<Vad> {
        let td = match self.session.pointer("/audio/input/turn_detection") {
            Some(td) => td,
            None => self.session.get("turn_detection")?,
        };
        if td.is_null() {
            return None;
        }
        let ms = |name: &str, default: u64| td.get(name).and_then(Value::as_u64).unwrap_or(default);
        Some(Vad {
            prefix_ms: ms("prefix_padding_ms", 300),
            silence_ms: ms("silence_duration_ms", 500),
            create_response: td.get("create_response").and_then(Value::as_bool).unwrap_or(true),
            interrupt_response: td.get("interrupt_response").and_then(Value::as_bool).unwrap_or(true),
        })
    }

    fn append(&mut self, event: &Value) {
        let Some(bytes) = event["audio"].as_str().and_then(|a| B64.decode(a).ok()) else {
            self.error("invalid_request_error", "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.");
            return;
        };
        if bytes.len() % 2 != 0 {
            self.error("invalid_request_error", "invalid_value", "Invalid 'audio': PCM16 needs an even number of bytes.");
            return;
        }
        let samples = bytes.chunks_exact(2).map(|p| i16::from_le_bytes([p[0], p[1]]));
        self.carry.extend(samples);
        self.buffered += (bytes.len() / 2) as u64;
        let Some(vad) = self.vad() else {
            self.pos += self.carry.len() as u64;
            self.carry.clear();
            return;
        };
        let speech_rms = self.script().speech_rms;
        let carry = std::mem::take(&mut self.carry);
        let mut frames = carry.chunks_exact(FRAME);
        for frame in frames.by_ref() {
            let loud = rms(frame) > speech_rms;
            let start = self.pos;
            self.pos += FRAME as u64;
            self.vad_frame(&vad, loud, start);
        }
        self.carry = frames.remainder().to_vec();
    }

    fn vad_frame(&mut self, vad: &Vad, loud: bool, start: u64) {
        let ms = |samples: u64| samples * 1000 / u64::from(SAMPLE_RATE);
        match &mut self.speech {
            None if loud => {
                self.items += 1;
                let item_id = format!("item_fake_user{}", self.items);
                self.send("input_audio_buffer.speech_started", json!({"audio_start_ms": ms(start).saturating_sub(vad.prefix_ms), "item_id": item_id}));
                if vad.interrupt_response {
                    self.cancel("turn_detected");
                }
                self.speech = Some(Speech { item_id, quiet: 0 });
            }
            None => {}
            Some(speech) if loud => speech.quiet = 0,
            Some(speech) => {
                speech.quiet += FRAME as u64;
                if ms(speech.quiet) >= vad.silence_ms {
                    let item_id = speech.item_id.clone();
                    self.speech = None;
                    self.send("input_audio_buffer.speech_stopped", json!({"audio_end_ms": ms(self.pos), "item_id": item_id}));
                    self.committed(item_id);
                    if vad.create_response {
                        self.start_response();
                    }
                }
            }
        }
    }

    fn commit(&mut self) {
        if self.buffered < u64::from(SAMPLE_RATE) / 10 {
            let ms = self.buffered * 1000 / u64::from(SAMPLE_RATE);
            self.error(
                "invalid_request_error",
                "input_audio_buffer_commit_empty",
                &format!("Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer only has {ms}.00ms of audio."),
            );
            return;
        }
        self.items += 1;
        self.committed(format!("item_fake_user{}", self.items));
    }

    fn committed(&mut self, item_id: String) {
        self.buffered = 0;
        self.send("input_audio_buffer.committed", json!({"previous_item_id": self.last_item, "item_id": item_id}));
        let script = self.script();
        match script.transcription_error {
            Some((code, message)) => self.send(
                "conversation.item.input_audio_transcription.failed",
                json!({"item_id": item_id, "content_index": 0, "error": {"type": "transcription_error", "code": code, "message": message, "param": null}}),
            ),
            None => self.send(
                "conversation.item.input_audio_transcription.completed",
                json!({"item_id": item_id, "content_index": 0, "transcript": script.transcript}),
            ),
        }
        self.last_item = Some(item_id);
    }

    fn start_response(&mut self) {
        if self.active.as_ref().is_some_and(|a| !a.lock().unwrap().finished) {
            self.error("invalid_request_error", "conversation_already_has_active_response", "Conversation already has an active response in progress.");
            return;
        }
        self.responses += 1;
        let id = format!("resp_fake{}", self.responses);
        let active = Arc::new(Mutex::new(Active { id: id.clone(), finished: false }));
        self.active = Some(active.clone());
        let item_id = format!("item_fake_reply{}", self.responses);
        self.last_item = Some(item_id.clone());
        tokio::spawn(respond(self.tx.clone(), self.script(), active, id, item_id));
    }

    /// Cancels the active response; false when none is running.
    fn cancel(&mut self, reason: &str) -> bool {
        let Some(active) = &self.active else { return false };
        let mut active = active.lock().unwrap();
        if active.finished {
            return false;
        }
        active.finished = true;
        self.send("response.done", json!({"response": {"object": "realtime.response", "id": active.id, "status": "cancelled",
            "status_details": {"type": "cancelled", "reason": reason}, "output": []}}));
        true
    }

    fn stop_response(&mut self) {
        if let Some(active) = &self.active {
            active.lock().unwrap().finished = true;
        }
    }
}

/// Streams one response; stops quietly once `active` is finished (cancelled).
async fn respond(tx: mpsc::UnboundedSender<Out>, script: Script, active: Arc<Mutex<Active>>, id: String, item_id: String) {
    let names = script.names;
    let send = |kind: &str, mut body: Value| -> bool {
        let guard = active.lock().unwrap();
        if guard.finished {
            return false;
        }
        body["type"] = json!(kind);
        body["event_id"] = json!(event_id());
        tx.send(Out::Event(body)).is_ok()
    };
    let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": "in_progress", "content": []});
    let ids = json!({"response_id": id, "item_id": item_id, "output_index": 0, "content_index": 0});
    let with = |extra: Value| {
        let mut body = ids.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let opened = send("response.created", json!({"response": {"object": "realtime.response", "id": id, "status": "in_progress", "status_details": null, "output": []}}))
        && send("response.output_item.added", json!({"response_id": id, "output_index": 0, "item": item}))
        && send(names.item_added(), json!({"previous_item_id": null, "item": item}))
        && send("response.content_part.added", with(json!({"part": {"type": "audio", "transcript": ""}})));
    if !opened {
        return;
    }
    let words: Vec<&str> = script.reply_text.split_inclusive(' ').collect();
    let chunks: Vec<&[i16]> = script.reply_audio.chunks(script.chunk_samples.max(1)).collect();
    let mut next_word = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        if let Some(word) = words.get(next_word) {
            next_word += 1;
            if !send(names.transcript_delta(), with(json!({"delta": word}))) {
                return;
            }
        }
        if !send(names.audio_delta(), with(json!({"delta": pcm_b64(chunk)}))) {
            return;
        }
        if let Some((after, cut)) = &script.cut
            && i + 1 >= *after
        {
            let push = match cut {
                Cut::Drop => Push::Drop,
                Cut::Close { code, reason } => Push::Close { code: *code, reason: reason.clone() },
            };
            active.lock().unwrap().finished = true;
            let _ = tx.send(Out::Push(push));
            return;
        }
        tokio::time::sleep(script.chunk_pause).await;
    }
    for word in &words[next_word.min(words.len())..] {
        if !send(names.transcript_delta(), with(json!({"delta": word}))) {
            return;
        }
    }
    let done_item = json!({"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": "completed",
        "content": [{"type": "output_audio", "transcript": script.reply_text}]});
    let _ = send(names.audio_done(), ids.clone())
        && send(names.transcript_done(), with(json!({"transcript": script.reply_text})))
        && send("response.content_part.done", with(json!({"part": {"type": "audio", "transcript": script.reply_text}})))
        && send("response.output_item.done", json!({"response_id": id, "output_index": 0, "item": done_item}));
    let mut guard = active.lock().unwrap();
    if guard.finished {
        return;
    }
    guard.finished = true;
    let done = json!({"type": "response.done", "event_id": event_id(), "response": {"object": "realtime.response", "id": id, "status": "completed",
        "status_details": null, "output": [done_item], "usage": {"total_tokens": 42, "input_tokens": 20, "output_tokens": 22}}});
    let _ = tx.send(Out::Event(done));
}

/// RMS as a fraction of full scale.
fn rms(frame: &[i16]) -> f64 {
    let sum: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / frame.len().max(1) as f64).sqrt() / 32768.0
}

/// Deep-merges `update` into `target` (objects merge, anything else replaces).
fn merge(target: &mut Value, update: &Value) {
    match (target, update) {
        (Value::Object(t), Value::Object(u)) => {
            for (k, v) in u {
                match t.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, u) => *t = u.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_updates_merge_deeply() {
        let mut session = json!({"model": "m", "audio": {"input": {"format": {"type": "audio/pcm"}, "turn_detection": {"type": "server_vad"}}}});
        merge(&mut session, &json!({"instructions": "x", "audio": {"input": {"turn_detection": null}}}));
        assert_eq!(session, json!({"model": "m", "instructions": "x", "audio": {"input": {"format": {"type": "audio/pcm"}, "turn_detection": null}}}));
    }

    #[test]
    fn the_tone_is_loud_and_silence_is_not() {
        let t = tone(440.0, 0.1, 8000.0);
        assert_eq!(t.len(), 2400);
        assert!(rms(&t[240..480]) > 0.1);
        assert!(rms(&[0; 240]) < 0.01);
        assert_eq!(B64.decode(pcm_b64(&[1, -2])).unwrap(), vec![1, 0, 0xfe, 0xff]);
    }
}
