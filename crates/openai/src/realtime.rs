//! Speech to speech over OpenAI's Realtime WebSocket API
//! (`wss://<host>/v1/realtime?model=<model>`).
//!
//! [`OpenAi::realtime`] opens a session under a deadline and configures it
//! (`session.update`, GA shape); it gives a [`RealtimeSender`] (cheap to clone) that
//! sends audio and commands, and [`RealtimeEvents`], a stream of what the server
//! says, parsed from the GA event names (`response.output_audio.delta`, ...) and
//! the older beta ones (`response.audio.delta`, ...).
//!
//! Audio is PCM16 mono at [`SAMPLE_RATE`] (24 kHz) both ways.
//!
//! Two tasks run per session: one writer (fed through a bounded channel: a sender
//! waits when it is full) and one reader (feeding a bounded channel: the socket is
//! not read while the consumer lags). An `Err` item on [`RealtimeEvents`] is final:
//! the stream ends after it. A close, by either side, ends it with
//! [`RealtimeEvent::Closed`]. Dropping every [`RealtimeSender`] closes the session.
//!
//! Metrics:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `voxgate_openai_realtime_sessions` | gauge: open sessions | |
//! | `voxgate_openai_realtime_connects_total` | counter | `outcome` (ok, unauthorized, rate_limited, transient, invalid) |
//! | `voxgate_openai_realtime_connect_seconds` | histogram: connect + `session.updated` | |
//! | `voxgate_openai_realtime_events_in_total` | counter | `type` (the server event type when known, else `unknown`, `malformed`, `binary`) |
//! | `voxgate_openai_realtime_events_out_total` | counter | `type` (the client event type) |

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use voxgate_services::ServiceError;

use crate::OpenAi;
use crate::call::{ErrorBody, error_chain, retry_after};
use crate::endpoint::{Endpoint, display_url};

/// The rate of `audio/pcm`, in and out.
pub const SAMPLE_RATE: u32 = 24_000;

pub const SESSIONS: &str = "voxgate_openai_realtime_sessions";
pub const CONNECTS: &str = "voxgate_openai_realtime_connects_total";
pub const CONNECT_SECONDS: &str = "voxgate_openai_realtime_connect_seconds";
pub const EVENTS_IN: &str = "voxgate_openai_realtime_events_in_total";
pub const EVENTS_OUT: &str = "voxgate_openai_realtime_events_out_total";

/// Samples per `input_audio_buffer.append` at most (0.5 s); longer input is split.
const APPEND_SAMPLES: usize = 12_000;
/// Client events queued for the writer at most.
const SEND_QUEUE: usize = 64;
/// Server events queued for the consumer at most.
const EVENT_QUEUE: usize = 256;
/// How long one write may wait for the socket.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a close waits for the server's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Malformed server events tolerated (skipped) per session before giving up on it.
const MAX_MALFORMED: u64 = 100;
/// Responses remembered as cancelled (their late audio is dropped).
const CANCELLED_KEPT: usize = 8;

/// How a Realtime session is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeConfig {
    /// Sent as the `model` query parameter and in `session.update`.
    pub model: String,
    /// The output voice (`alloy`, `marin`, `cedar`, ...); fixed once audio was sent.
    pub voice: String,
    /// The system instructions (may be empty).
    pub instructions: String,
    pub turn_detection: TurnDetection,
    /// The model transcribing the caller's audio (`UserTranscript` events); `None`:
    /// no transcripts of the caller.
    pub transcription_model: Option<String>,
    /// Sent as `session.temperature` only when set. GA models (`gpt-realtime`) do not
    /// take it and answer with an `error` (which fails the set-up); for beta-era servers.
    pub temperature: Option<f64>,
    /// `session.max_output_tokens` (1 to 4096); `None` leaves the server's `inf`.
    pub max_output_tokens: Option<u32>,
    /// Connecting plus waiting for `session.updated`.
    pub setup_deadline: Duration,
    /// The largest server message accepted; a larger one ends the session (`Transient`).
    pub max_message_bytes: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            model: "gpt-realtime".into(),
            voice: "alloy".into(),
            instructions: String::new(),
            turn_detection: TurnDetection::default(),
            transcription_model: Some("gpt-4o-mini-transcribe".into()),
            temperature: None,
            max_output_tokens: None,
            setup_deadline: Duration::from_secs(10),
            max_message_bytes: 8 << 20,
        }
    }
}

/// Who decides that the caller finished speaking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TurnDetection {
    /// OpenAI's `server_vad`: it detects speech, commits the turn after `silence_ms`
    /// of quiet, answers by itself (`create_response`) and cancels its answer when
    /// the caller speaks over it (`interrupt_response`).
    Server {
        /// Activation threshold, 0.0 to 1.0 (higher needs louder speech).
        threshold: f64,
        /// Audio kept before the detected start of speech.
        prefix_padding_ms: u32,
        silence_ms: u32,
    },
    /// `turn_detection: null`: the caller commits ([`RealtimeSender::commit`]) and
    /// asks for answers ([`RealtimeSender::create_response`]) itself.
    Manual,
}

impl Default for TurnDetection {
    fn default() -> Self {
        TurnDetection::Server { threshold: 0.5, prefix_padding_ms: 300, silence_ms: 500 }
    }
}

/// What the server says, in the order it said it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RealtimeEvent {
    /// Server VAD heard speech start (`input_audio_buffer.speech_started`); the
    /// moment to stop playing the assistant (barge-in).
    SpeechStarted { item_id: String, audio_start_ms: u64 },
    /// Server VAD heard speech end (`input_audio_buffer.speech_stopped`).
    SpeechStopped { item_id: String, audio_end_ms: u64 },
    /// The input buffer became a user item (`input_audio_buffer.committed`).
    Committed { item_id: String },
    /// What the caller said (`conversation.item.input_audio_transcription.completed`).
    /// May come after the answer started.
    UserTranscript { item_id: String, text: String },
    /// The caller's audio of a turn could not be transcribed
    /// (`conversation.item.input_audio_transcription.failed`); `message` says why.
    /// The session stays open.
    UserTranscriptFailed { item_id: String, code: String, message: String },
    /// An answer started (`response.created`).
    ResponseStarted { response_id: String },
    /// Answer audio, PCM16 at 24 kHz (`response.output_audio.delta`, beta
    /// `response.audio.delta`). None arrives for a response after
    /// [`RealtimeSender::cancel_response`] cancelled it.
    Audio { response_id: String, item_id: String, pcm: Vec<i16> },
    /// Part of the words of the answer audio (`response.output_audio_transcript.delta`,
    /// beta `response.audio_transcript.delta`).
    AssistantTranscriptDelta { item_id: String, text: String },
    /// All the words of one answer item (`...transcript.done`).
    AssistantTranscriptDone { item_id: String, text: String },
    /// An answer ended (`response.done`): `status` is `completed`, `cancelled`,
    /// `incomplete` or `failed`.
    ResponseDone { response_id: String, status: String },
    /// The server confirmed a [`RealtimeSender::truncate`] (`conversation.item.truncated`).
    Truncated { item_id: String, audio_end_ms: u64 },
    /// An `error` event. Not fatal: the session stays open; the server sends it for a
    /// bad client event too.
    ServerError { code: String, message: String },
    /// The session ended with a close frame (the server's, or the answer to
    /// [`RealtimeSender::close`]). The last item.
    Closed { code: u16, reason: String },
}

/// Counts of what the reader saw in one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RealtimeStats {
    /// Text messages received.
    pub received: u64,
    /// Events of a type this client does not know (skipped).
    pub unknown: u64,
    /// Messages that are not JSON, lack a field, or carry bad base64 (skipped).
    pub malformed: u64,
    /// Binary frames (skipped: the API sends none).
    pub binary: u64,
    /// Audio deltas dropped because their response was cancelled.
    pub dropped_after_cancel: u64,
}

/// What the sender, the events and the two tasks of one session share.
struct Session {
    provider: &'static str,
    ep: Endpoint,
    session_id: Mutex<Option<String>>,
    /// The response in progress, and the last ones cancelled.
    responses: Mutex<Responses>,
    received: AtomicU64,
    unknown: AtomicU64,
    malformed: AtomicU64,
    binary: AtomicU64,
    dropped: AtomicU64,
    /// Set by the writer: the client closes, or writing failed (with `failure`).
    phase: watch::Sender<Phase>,
    failure: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Closing,
    Failed,
}

#[derive(Default)]
struct Responses {
    active: Option<String>,
    cancelled: VecDeque<String>,
}

impl Session {
    fn transient(&self, message: String) -> ServiceError {
        ServiceError::Transient { provider: self.provider, message: self.ep.redact(&message) }
    }

    fn stats(&self) -> RealtimeStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RealtimeStats {
            received: get(&self.received),
            unknown: get(&self.unknown),
            malformed: get(&self.malformed),
            binary: get(&self.binary),
            dropped_after_cancel: get(&self.dropped),
        }
    }
}

/// Sends audio and commands to one session. Cheap to clone (a channel handle and
/// an `Arc`); `Send + Sync`. Every method waits while the send queue is full and
/// fails with `Transient` once the session is closed.
#[derive(Clone)]
pub struct RealtimeSender {
    tx: mpsc::Sender<Outgoing>,
    session: Arc<Session>,
}

impl std::fmt::Debug for RealtimeSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeSender").field("provider", &self.session.provider).field("closed", &self.tx.is_closed()).finish()
    }
}

enum Outgoing {
    Event(&'static str, String),
    Close,
}

impl RealtimeSender {
    async fn send(&self, kind: &'static str, event: Value) -> Result<(), ServiceError> {
        self.tx
            .send(Outgoing::Event(kind, event.to_string()))
            .await
            .map_err(|_| self.session.transient(format!("realtime: cannot send {kind}: the session is closed")))
    }

    /// Appends caller audio, PCM16 mono at 24 kHz, to the server's input buffer
    /// (`input_audio_buffer.append`, base64; long input goes as several events).
    pub async fn append(&self, pcm24k: &[i16]) -> Result<(), ServiceError> {
        for piece in pcm24k.chunks(APPEND_SAMPLES) {
            let mut bytes = Vec::with_capacity(piece.len() * 2);
            for s in piece {
                bytes.extend_from_slice(&s.to_le_bytes());
            }
            self.send("input_audio_buffer.append", json!({"type": "input_audio_buffer.append", "audio": B64.encode(&bytes)})).await?;
        }
        Ok(())
    }

    /// Ends the caller's turn (`input_audio_buffer.commit`): for [`TurnDetection::Manual`].
    pub async fn commit(&self) -> Result<(), ServiceError> {
        self.send("input_audio_buffer.commit", json!({"type": "input_audio_buffer.commit"})).await
    }

    /// Asks for an answer (`response.create`).
    pub async fn create_response(&self) -> Result<(), ServiceError> {
        self.send("response.create", json!({"type": "response.create"})).await
    }

    /// Cancels the answer in progress (`response.cancel`). Its audio still in flight
    /// is dropped here; `ResponseDone` with status `cancelled` follows. The server
    /// answers an `error` event when nothing is in progress.
    pub async fn cancel_response(&self) -> Result<(), ServiceError> {
        let active = {
            let mut responses = self.session.responses.lock().unwrap();
            let active = responses.active.clone();
            if let Some(id) = &active {
                if responses.cancelled.len() >= CANCELLED_KEPT {
                    responses.cancelled.pop_front();
                }
                responses.cancelled.push_back(id.clone());
            }
            active
        };
        let mut event = json!({"type": "response.cancel"});
        if let Some(id) = active {
            event["response_id"] = json!(id);
        }
        self.send("response.cancel", event).await
    }

    /// Tells the server how much of an answer item the caller heard
    /// (`conversation.item.truncate`, content index 0), so its memory of the
    /// conversation matches what was played.
    pub async fn truncate(&self, item_id: &str, audio_end_ms: u32) -> Result<(), ServiceError> {
        self.send(
            "conversation.item.truncate",
            json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}),
        )
        .await
    }

    /// Adds a typed user message (`conversation.item.create` with `input_text`) and
    /// asks for an answer (`response.create`).
    pub async fn user_text(&self, text: &str) -> Result<(), ServiceError> {
        let item = json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]});
        self.send("conversation.item.create", json!({"type": "conversation.item.create", "item": item})).await?;
        self.create_response().await
    }

    /// Closes the session: a close frame after the queued events; the events end with
    /// `Closed`. `Ok` when it already was closed.
    pub async fn close(&self) -> Result<(), ServiceError> {
        let _ = self.tx.send(Outgoing::Close).await;
        Ok(())
    }

    /// Whether the session is closed (nothing more can be sent).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The events of one session: a `Stream` of `Result<RealtimeEvent, ServiceError>`.
/// An `Err` is the last item; so is [`RealtimeEvent::Closed`].
pub struct RealtimeEvents {
    rx: mpsc::Receiver<Result<RealtimeEvent, ServiceError>>,
    session: Arc<Session>,
}

impl std::fmt::Debug for RealtimeEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeEvents").field("provider", &self.session.provider).field("stats", &self.stats()).finish()
    }
}

impl RealtimeEvents {
    /// The next event; `None` after the last.
    pub async fn next_event(&mut self) -> Option<Result<RealtimeEvent, ServiceError>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next item, skipping audio of responses cancelled by this client (also
    /// what was queued before the cancel).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RealtimeEvent, ServiceError>>> {
        loop {
            let item = std::task::ready!(self.rx.poll_recv(cx));
            if let Some(Ok(RealtimeEvent::Audio { response_id, .. })) = &item
                && self.session.responses.lock().unwrap().cancelled.contains(response_id)
            {
                self.session.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            return Poll::Ready(item);
        }
    }

    /// What the reader saw and skipped so far.
    pub fn stats(&self) -> RealtimeStats {
        self.session.stats()
    }

    /// The server's session id (`sess_...`), once known.
    pub fn session_id(&self) -> Option<String> {
        self.session.session_id.lock().unwrap().clone()
    }
}

impl Stream for RealtimeEvents {
    type Item = Result<RealtimeEvent, ServiceError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_event(cx)
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl OpenAi {
    /// Opens a Realtime session: connects, sends `session.update` and waits for
    /// `session.updated`, all within `config.setup_deadline`.
    ///
    /// Fails with `Unauthorized` (401/403 on the upgrade: the key), `RateLimited`
    /// (429), `Invalid` (a bad configuration, a 4xx, or an `error` event answering
    /// the session), `Transient` (no connection, a 5xx, the deadline, a close during
    /// set-up). Counted in `voxgate_openai_realtime_connects_total`.
    pub async fn realtime(&self, config: &RealtimeConfig) -> Result<(RealtimeSender, RealtimeEvents), ServiceError> {
        let ep = &self.inner.ep;
        let started = Instant::now();
        let result = match check(config) {
            Err(message) => Err(ServiceError::Invalid { provider: ep.name, message: format!("realtime: {message}") }),
            Ok(()) => {
                let key = self.inner.config.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty());
                match timeout(config.setup_deadline, open(ep, key, config)).await {
                    Ok(result) => result,
                    Err(_) => Err(ServiceError::Transient {
                        provider: ep.name,
                        message: format!(
                            "realtime: no session from {} within {:?} (RealtimeConfig::setup_deadline)",
                            shown(ep),
                            config.setup_deadline
                        ),
                    }),
                }
            }
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ServiceError::Unauthorized { .. }) => "unauthorized",
            Err(ServiceError::RateLimited { .. }) => "rate_limited",
            Err(ServiceError::Transient { .. }) => "transient",
            Err(ServiceError::Invalid { .. }) => "invalid",
        };
        metrics::counter!(CONNECTS, "outcome" => outcome).increment(1);
        match &result {
            Ok(_) => metrics::histogram!(CONNECT_SECONDS).record(started.elapsed().as_secs_f64()),
            Err(e) => tracing::debug!("{e}"),
        }
        result
    }
}

fn check(config: &RealtimeConfig) -> Result<(), String> {
    let bad_name = |s: &str| s.trim().is_empty() || s.chars().any(char::is_control);
    if bad_name(&config.model) {
        return Err("the model name is empty or holds control characters; name one, e.g. gpt-realtime".into());
    }
    if bad_name(&config.voice) {
        return Err("the voice is empty; name one, e.g. alloy".into());
    }
    if config.transcription_model.as_deref().is_some_and(bad_name) {
        return Err("the transcription model name is empty; name one (e.g. gpt-4o-mini-transcribe) or give None".into());
    }
    if let Some(n) = config.max_output_tokens
        && !(1..=4096).contains(&n)
    {
        return Err(format!("max_output_tokens {n} is outside 1 to 4096"));
    }
    if let TurnDetection::Server { threshold, .. } = config.turn_detection
        && !(0.0..=1.0).contains(&threshold)
    {
        return Err(format!("the server VAD threshold {threshold} is outside 0.0 to 1.0"));
    }
    if config.temperature.is_some_and(|t| !t.is_finite()) {
        return Err("the temperature is not a number".into());
    }
    if config.max_message_bytes < 64 << 10 {
        return Err("max_message_bytes is below 64 KiB; audio deltas would not fit".into());
    }
    Ok(())
}

/// The WebSocket URL of the Realtime endpoint under an API root.
fn realtime_url(base: &str, model: &str) -> Result<String, String> {
    let mut url = reqwest::Url::parse(&format!("{base}/realtime")).map_err(|e| e.to_string())?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => return Err(format!("the scheme {other} has no WebSocket counterpart")),
    };
    url.set_scheme(scheme).map_err(|()| format!("cannot use {scheme} with this URL"))?;
    url.query_pairs_mut().append_pair("model", model);
    Ok(url.to_string())
}

fn shown(ep: &Endpoint) -> String {
    match realtime_url(ep.base(), "m") {
        Ok(url) => display_url(&url),
        Err(_) => ep.shown("realtime"),
    }
}

/// The session configuration in the GA shape.
fn session_update(config: &RealtimeConfig) -> Value {
    let pcm = json!({"type": "audio/pcm", "rate": SAMPLE_RATE});
    let turn_detection = match config.turn_detection {
        TurnDetection::Server { threshold, prefix_padding_ms, silence_ms } => json!({
            "type": "server_vad", "threshold": threshold, "prefix_padding_ms": prefix_padding_ms,
            "silence_duration_ms": silence_ms, "create_response": true, "interrupt_response": true,
        }),
        TurnDetection::Manual => Value::Null,
    };
    let transcription = match &config.transcription_model {
        Some(model) => json!({"model": model}),
        None => Value::Null,
    };
    let mut session = json!({
        "type": "realtime",
        "model": config.model,
        "instructions": config.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": pcm, "transcription": transcription, "turn_detection": turn_detection},
            "output": {"format": pcm, "voice": config.voice},
        },
    });
    if let Some(n) = config.max_output_tokens {
        session["max_output_tokens"] = json!(n);
    }
    if let Some(t) = config.temperature {
        session["temperature"] = json!(t);
    }
    json!({"type": "session.update", "session": session})
}

/// The TLS set-up of every `wss` connection: ring, and the platform's verifier (as
/// the HTTP client has).
fn tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static TLS: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_platform_verifier()
            .map_err(|e| e.to_string())?
            .with_no_client_auth();
        Ok(Arc::new(config))
    })
    .clone()
}

/// Connects and configures a session (the caller bounds it with the set-up deadline).
async fn open(ep: &Endpoint, key: Option<&str>, config: &RealtimeConfig) -> Result<(RealtimeSender, RealtimeEvents), ServiceError> {
    let provider = ep.name;
    let at = shown(ep);
    let invalid = |message: String| ServiceError::Invalid { provider, message: ep.redact(&message) };
    let transient = |message: String| ServiceError::Transient { provider, message: ep.redact(&message) };
    let url = realtime_url(ep.base(), &config.model).map_err(|e| invalid(format!("realtime: the base URL cannot carry a WebSocket: {e}")))?;
    let mut request = url.as_str().into_client_request().map_err(|e| invalid(format!("realtime: {at}: {e}")))?;
    if let Some(key) = key {
        // The key was checked (ASCII, no control characters) when the endpoint was made.
        let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| invalid("realtime: the API key cannot go in a header".into()))?;
        value.set_sensitive(true);
        request.headers_mut().insert("authorization", value);
    }
    request.headers_mut().insert("user-agent", HeaderValue::from_static(concat!("voxgate/", env!("CARGO_PKG_VERSION"))));
    let connector = if url.starts_with("wss:") {
        Connector::Rustls(tls().map_err(|e| transient(format!("realtime: TLS set-up failed: {e}")))?)
    } else {
        Connector::Plain
    };
    // A 16 KiB read buffer (tungstenite's default is 128 KiB, zero-filled before
    // every read, for events of a few KiB); larger events span several reads.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
        .read_buffer_size(16 * 1024);
    let (mut ws, _) = match tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), true, Some(connector)).await {
        Ok(connected) => connected,
        Err(WsError::Http(response)) => return Err(refused(ep, &at, &response)),
        Err(e) => return Err(transient(format!("realtime: connecting to {at} failed: {}", error_chain(&e)))),
    };
    let update = session_update(config);
    ws.send(Message::Text(update.to_string().into())).await.map_err(|e| transient(format!("realtime: sending session.update to {at} failed: {e}")))?;
    metrics::counter!(EVENTS_OUT, "type" => "session.update").increment(1);

    let (phase, phase_rx) = watch::channel(Phase::Open);
    let session = Arc::new(Session {
        provider,
        ep: ep.clone(),
        session_id: Mutex::new(None),
        responses: Mutex::new(Responses::default()),
        received: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        malformed: AtomicU64::new(0),
        binary: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        phase,
        failure: Mutex::new(None),
    });
    let mut parser = Parser::default();
    let mut early = Vec::new();
    loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(read_error(&session, &e, config.max_message_bytes)),
            None => return Err(transient(format!("realtime: {at} ended the connection during set-up"))),
        };
        match message {
            Message::Text(text) => {
                let value = serde_json::from_str::<Value>(text.as_str()).ok();
                match value.as_ref().and_then(|v| v["type"].as_str()) {
                    Some("session.updated") => {
                        session.received.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(EVENTS_IN, "type" => "session.updated").increment(1);
                        note_session(&session, value.as_ref());
                        break;
                    }
                    Some("error") => {
                        let value = value.unwrap_or_default();
                        let error = &value["error"];
                        let message = format!(
                            "realtime: {at} refused the session: {} ({})",
                            text_of(&error["message"]),
                            text_of(if error["code"].is_null() { &error["type"] } else { &error["code"] })
                        );
                        let code = text_of(&error["code"]);
                        if code.contains("api_key") || code.contains("auth") {
                            return Err(ServiceError::Unauthorized { provider, message: ep.redact(&message) });
                        }
                        return Err(invalid(message));
                    }
                    _ => {
                        if let Some(event) = parser.parse(&session, text.as_str())? {
                            early.push(event);
                        }
                    }
                }
            }
            Message::Close(frame) => {
                let (code, reason) = close_parts(frame);
                return Err(transient(format!("realtime: {at} closed the connection during set-up ({code}: {reason})")));
            }
            Message::Binary(_) => {
                session.binary.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    let (sink, stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel(SEND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let (ended_tx, ended_rx) = watch::channel(false);
    let open = Arc::new(OpenGauge::new());
    tokio::spawn(write_loop(sink, out_rx, session.clone(), ended_rx, open.clone()));
    tokio::spawn(read_loop(stream, event_tx, session.clone(), parser, early, phase_rx, ended_tx, config.max_message_bytes, open));
    Ok((RealtimeSender { tx: out_tx, session: session.clone() }, RealtimeEvents { rx: event_rx, session }))
}

/// The error for an upgrade the server answered with a status instead of 101.
fn refused(ep: &Endpoint, at: &str, response: &tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>) -> ServiceError {
    let provider = ep.name;
    let status = response.status().as_u16();
    let body = response.body().as_deref().unwrap_or_default();
    let parsed = ErrorBody::parse(&body[..body.len().min(64 << 10)], status);
    let hint = match status {
        401 | 403 => "; check the API key (OPENAI_API_KEY) and that it may use the Realtime API",
        404 => "; check the base URL and the model name",
        _ => "",
    };
    let message = ep.redact(&format!("realtime: GET {at} answered {status} instead of a WebSocket: {}{hint}", parsed.message));
    match status {
        401 | 403 => ServiceError::Unauthorized { provider, message },
        429 if parsed.quota => ServiceError::Unauthorized { provider, message },
        429 => ServiceError::RateLimited { provider, retry_after: retry_after(response.headers(), std::time::SystemTime::now()) },
        408 | 409 | 425 => ServiceError::Transient { provider, message },
        s if !(400..500).contains(&s) => ServiceError::Transient { provider, message },
        _ => ServiceError::Invalid { provider, message },
    }
}

fn read_error(session: &Session, error: &WsError, max: usize) -> ServiceError {
    match error {
        WsError::Capacity(e) => session.transient(format!(
            "realtime: the server sent a message over the limit of {max} bytes ({e}; RealtimeConfig::max_message_bytes)"
        )),
        WsError::Protocol(e) => session.transient(format!("realtime: the connection broke: {e}")),
        WsError::Utf8(e) => session.transient(format!("realtime: the server sent a text frame that is not UTF-8 ({e})")),
        e => session.transient(format!("realtime: reading from the server failed: {}", error_chain(e))),
    }
}

fn close_parts(frame: Option<CloseFrame>) -> (u16, String) {
    match frame {
        Some(frame) => (u16::from(frame.code), frame.reason.as_str().chars().take(200).collect()),
        None => (u16::from(CloseCode::Status), String::new()),
    }
}

fn note_session(session: &Session, value: Option<&Value>) {
    if let Some(id) = value.and_then(|v| v["session"]["id"].as_str()) {
        *session.session_id.lock().unwrap() = Some(id.chars().take(100).collect());
    }
}

/// Counts an open session until both tasks end.
struct OpenGauge;

impl OpenGauge {
    fn new() -> OpenGauge {
        metrics::gauge!(SESSIONS).increment(1.0);
        OpenGauge
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!(SESSIONS).decrement(1.0);
    }
}

async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
    session: Arc<Session>,
    mut ended: watch::Receiver<bool>,
    _open: Arc<OpenGauge>,
) {
    let close_frame = || Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }));
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = ended.changed() => {
                // The reader is done (the server closed, or nobody reads the events).
                let _ = timeout(CLOSE_WAIT, sink.send(close_frame())).await;
                break;
            }
        };
        let failure = match next {
            Some(Outgoing::Event(kind, text)) => match timeout(WRITE_DEADLINE, sink.send(Message::Text(text.into()))).await {
                Ok(Ok(())) => {
                    metrics::counter!(EVENTS_OUT, "type" => kind).increment(1);
                    continue;
                }
                Ok(Err(e)) => format!("realtime: sending {kind} failed: {e}"),
                Err(_) => format!("realtime: the server took no data for {WRITE_DEADLINE:?}"),
            },
            Some(Outgoing::Close) | None => {
                let _ = session.phase.send(Phase::Closing);
                let _ = timeout(CLOSE_WAIT, sink.send(close_frame())).await;
                break;
            }
        };
        *session.failure.lock().unwrap() = Some(failure);
        let _ = session.phase.send(Phase::Failed);
        break;
    }
    rx.close();
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    mut stream: SplitStream<Ws>,
    tx: mpsc::Sender<Result<RealtimeEvent, ServiceError>>,
    session: Arc<Session>,
    mut parser: Parser,
    early: Vec<RealtimeEvent>,
    mut phase: watch::Receiver<Phase>,
    ended: watch::Sender<bool>,
    max: usize,
    _open: Arc<OpenGauge>,
) {
    let closed_here = || RealtimeEvent::Closed { code: u16::from(CloseCode::Normal), reason: "closed by the client".into() };
    'events: {
        for event in early {
            if tx.send(Ok(event)).await.is_err() {
                break 'events;
            }
        }
        let last: Result<RealtimeEvent, ServiceError> = loop {
            let now = *phase.borrow_and_update();
            let next = match now {
                Phase::Failed => {
                    let failure = session.failure.lock().unwrap().clone().unwrap_or_default();
                    break Err(session.transient(failure));
                }
                Phase::Closing => match timeout(CLOSE_WAIT, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        break Ok(closed_here());
                    }
                },
                Phase::Open => tokio::select! {
                    next = stream.next() => next,
                    _ = phase.changed() => continue,
                },
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(_)) | None if now == Phase::Closing => {
                    break Ok(closed_here());
                }
                Some(Err(e)) => {
                    break Err(read_error(&session, &e, max));
                }
                None => {
                    break Err(session.transient("realtime: the server ended the connection without a close frame".into()));
                }
            };
            match message {
                Message::Text(text) => match parser.parse(&session, text.as_str()) {
                    Ok(Some(event)) => {
                        if tx.send(Ok(event)).await.is_err() {
                            break 'events;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        break Err(e);
                    }
                },
                Message::Binary(bytes) => {
                    session.binary.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(EVENTS_IN, "type" => "binary").increment(1);
                    tracing::warn!(provider = session.provider, "realtime: skipped a binary frame of {} bytes (the API sends JSON text)", bytes.len());
                }
                Message::Close(frame) => {
                    let (code, reason) = close_parts(frame);
                    break Ok(RealtimeEvent::Closed { code, reason: session.ep.redact(&reason) });
                }
                _ => {}
            }
        };
        let _ = tx.send(last).await;
    }
    let _ = ended.send(true);
}

/// Turns server messages into events.
#[derive(Default)]
struct Parser {
    /// The odd byte of an audio delta, with its item, waiting for the next delta.
    carry: Option<(String, u8)>,
}

impl Parser {
    /// `Ok(None)` for what is skipped (known but not needed, unknown, malformed);
    /// `Err` once the server has sent too much that is malformed.
    fn parse(&mut self, session: &Session, text: &str) -> Result<Option<RealtimeEvent>, ServiceError> {
        session.received.fetch_add(1, Ordering::Relaxed);
        let value = match serde_json::from_str::<Value>(text) {
            Ok(value) if value["type"].is_string() => value,
            Ok(_) => return self.malformed(session, "an event without a type".into()),
            Err(e) => return self.malformed(session, format!("not JSON ({e})")),
        };
        let kind = value["type"].as_str().unwrap_or_default();
        let label = label(kind);
        metrics::counter!(EVENTS_IN, "type" => label).increment(1);
        let s = |v: &Value| v.as_str().map(str::to_string);
        let item_id = || s(&value["item_id"]).unwrap_or_default();
        let response_id = || s(&value["response_id"]).unwrap_or_default();
        let ms = |name: &str| value[name].as_u64().unwrap_or(0);
        let event = match kind {
            "input_audio_buffer.speech_started" => RealtimeEvent::SpeechStarted { item_id: item_id(), audio_start_ms: ms("audio_start_ms") },
            "input_audio_buffer.speech_stopped" => RealtimeEvent::SpeechStopped { item_id: item_id(), audio_end_ms: ms("audio_end_ms") },
            "input_audio_buffer.committed" => RealtimeEvent::Committed { item_id: item_id() },
            "conversation.item.input_audio_transcription.completed" => {
                let Some(text) = s(&value["transcript"]) else { return self.malformed(session, format!("{kind} without a transcript")) };
                RealtimeEvent::UserTranscript { item_id: item_id(), text }
            }
            "conversation.item.input_audio_transcription.failed" => RealtimeEvent::UserTranscriptFailed {
                item_id: item_id(),
                code: s(&value["error"]["code"]).unwrap_or_else(|| "input_audio_transcription_failed".into()),
                message: session.ep.redact(&format!("the caller's audio was not transcribed: {}", text_of(&value["error"]["message"]))),
            },
            "response.created" => {
                let Some(id) = s(&value["response"]["id"]) else { return self.malformed(session, format!("{kind} without response.id")) };
                session.responses.lock().unwrap().active = Some(id.clone());
                RealtimeEvent::ResponseStarted { response_id: id }
            }
            "response.output_audio.delta" | "response.audio.delta" => return self.audio(session, &value, response_id(), item_id()),
            "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
                let Some(text) = s(&value["delta"]) else { return self.malformed(session, format!("{kind} without a delta")) };
                RealtimeEvent::AssistantTranscriptDelta { item_id: item_id(), text }
            }
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                RealtimeEvent::AssistantTranscriptDone { item_id: item_id(), text: s(&value["transcript"]).unwrap_or_default() }
            }
            "response.done" => {
                let response = &value["response"];
                let id = s(&response["id"]).unwrap_or_default();
                {
                    let mut responses = session.responses.lock().unwrap();
                    if responses.active.as_deref() == Some(id.as_str()) {
                        responses.active = None;
                    }
                }
                if self.carry.take().is_some() {
                    tracing::warn!(provider = session.provider, "realtime: an answer's audio ended in half a sample; dropped it");
                }
                RealtimeEvent::ResponseDone { response_id: id, status: s(&response["status"]).unwrap_or_else(|| "unknown".into()) }
            }
            "conversation.item.truncated" => RealtimeEvent::Truncated { item_id: item_id(), audio_end_ms: ms("audio_end_ms") },
            "error" => {
                let error = &value["error"];
                let code = s(&error["code"]).or_else(|| s(&error["type"])).unwrap_or_else(|| "error".into());
                RealtimeEvent::ServerError { code, message: session.ep.redact(&text_of(&error["message"])) }
            }
            "session.created" | "session.updated" => {
                note_session(session, Some(&value));
                return Ok(None);
            }
            _ if label == "unknown" => {
                session.unknown.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(provider = session.provider, "realtime: skipped an event of unknown type {:?}", kind.chars().take(60).collect::<String>());
                return Ok(None);
            }
            _ => return Ok(None),
        };
        Ok(Some(event))
    }

    fn audio(&mut self, session: &Session, value: &Value, response_id: String, item_id: String) -> Result<Option<RealtimeEvent>, ServiceError> {
        let Some(b64) = value["delta"].as_str() else { return self.malformed(session, "an audio delta without a delta".into()) };
        let mut bytes = match B64.decode(b64) {
            Ok(bytes) => bytes,
            Err(e) => return self.malformed(session, format!("an audio delta that is not base64 ({e})")),
        };
        match self.carry.take() {
            Some((item, byte)) if item == item_id => bytes.insert(0, byte),
            Some(_) => tracing::warn!(provider = session.provider, "realtime: dropped half a sample left over from another item"),
            None => {}
        }
        if bytes.len() % 2 == 1 {
            self.carry = bytes.pop().map(|byte| (item_id.clone(), byte));
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        let pcm = bytes.chunks_exact(2).map(|p| i16::from_le_bytes([p[0], p[1]])).collect();
        Ok(Some(RealtimeEvent::Audio { response_id, item_id, pcm }))
    }

    fn malformed(&mut self, session: &Session, what: String) -> Result<Option<RealtimeEvent>, ServiceError> {
        metrics::counter!(EVENTS_IN, "type" => "malformed").increment(1);
        let count = session.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if count > MAX_MALFORMED {
            return Err(session.transient(format!("realtime: the server sent more than {MAX_MALFORMED} malformed events; the last: {what}")));
        }
        tracing::warn!(provider = session.provider, "realtime: skipped a malformed server event: {what}");
        Ok(None)
    }
}

/// A JSON value as text for a message (strings unquoted, at most 400 characters).
fn text_of(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    text.chars().filter(|c| !c.is_control()).take(400).collect()
}

/// The metric label of a server event type: the type itself when known (a fixed
/// set, so a server cannot make labels without end), else `unknown`.
fn label(kind: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "error",
        "session.created",
        "session.updated",
        "conversation.created",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.deleted",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.input_audio_transcription.failed",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.text.delta",
        "response.text.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.audio.delta",
        "response.audio.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "rate_limits.updated",
    ];
    KNOWN.iter().find(|k| **k == kind).copied().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_base_scheme() {
        assert_eq!(realtime_url("https://api.openai.com/v1", "gpt-realtime").unwrap(), "wss://api.openai.com/v1/realtime?model=gpt-realtime");
        assert_eq!(realtime_url("http://127.0.0.1:8080/v1", "a b&c").unwrap(), "ws://127.0.0.1:8080/v1/realtime?model=a+b%26c");
    }

    #[test]
    fn bad_configs_are_refused() {
        let ok = RealtimeConfig::default();
        assert!(check(&ok).is_ok());
        for bad in [
            RealtimeConfig { model: " ".into(), ..ok.clone() },
            RealtimeConfig { voice: String::new(), ..ok.clone() },
            RealtimeConfig { max_output_tokens: Some(0), ..ok.clone() },
            RealtimeConfig { turn_detection: TurnDetection::Server { threshold: 1.5, prefix_padding_ms: 0, silence_ms: 0 }, ..ok.clone() },
            RealtimeConfig { temperature: Some(f64::NAN), ..ok.clone() },
            RealtimeConfig { transcription_model: Some(String::new()), ..ok.clone() },
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<RealtimeSender>();
        send_sync::<RealtimeEvents>();
        send_sync::<RealtimeConfig>();
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(label("response.output_audio.delta"), "response.output_audio.delta");
        assert_eq!(label(&"x".repeat(5000)), "unknown");
    }
}
