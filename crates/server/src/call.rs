//! `voxgate call`: a caller on the command line. Opens `/agent` like any client
//! (docs/agent-protocol.md), streams a WAV file as the caller's voice in 20 ms
//! messages (in real time, or `--speed` times faster), keeps sending silence until
//! the assistant has been quiet for `--wait` seconds, then hangs up with `end`.
//! Prints a transcript (or every event as JSON with `--json`) and can write the
//! reply audio to a WAV file. Tests and scripts use it; [`run`] is the same thing
//! in-process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Response, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use voxgate_audio::{pcm, resample, wav};
use voxgate_transport::protocol::{AudioSpec, ClientMessage, Encoding, Role, ServerEvent, TurnLatency};

pub use crate::config::CallArgs;

/// The rate the caller's audio is sent at.
const INPUT_RATE: u32 = 16_000;
/// Samples in one 20 ms message at [`INPUT_RATE`].
const FRAME_SAMPLES: usize = 320;
const FRAME: Duration = Duration::from_millis(20);
/// How long to wait for the WebSocket upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for `call-started` after `start`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server to close after `end` or `call-ended`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply that says it is still speaking but sends nothing for this long past
/// `--wait` no longer holds the call open.
const STUCK_SPEAKING: Duration = Duration::from_secs(5);

/// `endedReason`s of a call that ended as it should: the caller or the assistant
/// hung up, or one of the assistant's configured limits ended it.
pub const NORMAL_ENDS: &[&str] = &[
    "customer-ended-call",
    "assistant-ended-call",
    "assistant-said-end-call-phrase",
    "assistant-ended-call-with-tool",
    "silence-timed-out",
    "exceeded-max-duration",
];

/// What happened on a call that connected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOutcome {
    /// From `call-started`; `None` if the call never started.
    pub call_id: Option<String>,
    /// From `call-ended`.
    pub ended_reason: Option<String>,
    /// The close frame's code and reason, if the server sent one.
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    /// Final transcripts in order: the caller's words and the assistant's as played.
    pub transcript: Vec<(Role, String)>,
    /// One entry per `latency` event.
    pub latencies: Vec<TurnLatency>,
    /// `error` events: (code, message).
    pub errors: Vec<(String, String)>,
    /// Server events received (JSON messages).
    pub events: usize,
    /// Milliseconds of caller audio sent (the file and the silence after it).
    pub audio_sent_ms: u64,
    /// Reply audio received, in samples at `output_rate`.
    pub reply_samples: usize,
    pub output_rate: u32,
    /// Where the reply audio was written.
    pub out: Option<PathBuf>,
    /// Why the connection failed, when it did without a close frame.
    pub transport_error: Option<String>,
}

impl CallOutcome {
    /// Milliseconds of reply audio received.
    pub fn reply_ms(&self) -> u64 {
        if self.output_rate == 0 {
            return 0;
        }
        self.reply_samples as u64 * 1000 / u64::from(self.output_rate)
    }

    /// Whether the call ended normally (see [`NORMAL_ENDS`]).
    pub fn ended_normally(&self) -> bool {
        self.ended_reason.as_deref().is_some_and(|r| NORMAL_ENDS.contains(&r))
    }

    /// `None` when the call ended normally, else what went wrong, in a sentence.
    pub fn problem(&self) -> Option<String> {
        if self.ended_normally() {
            return None;
        }
        let close = match (self.close_code, self.close_reason.as_deref()) {
            (Some(code), Some(r)) if !r.is_empty() => format!("close code {code}: {r}"),
            (Some(code), _) => format!("close code {code}"),
            (None, _) => "no close frame".to_string(),
        };
        let last_error = self.errors.last().map(|(c, m)| format!("; last error event `{c}`: {m}")).unwrap_or_default();
        Some(match (&self.ended_reason, &self.transport_error) {
            (Some(reason), _) => format!("the call ended abnormally: {reason} ({close}){last_error}"),
            (None, Some(e)) => format!("the connection failed before the call ended: {e} ({close}){last_error}"),
            (None, None) if self.close_code.is_some() => format!("the server closed the call: {close}{last_error}"),
            (None, None) => format!("the connection closed before the call ended ({close}){last_error}"),
        })
    }

    fn summary(&self) -> Value {
        json!({
            "type": "summary",
            "ok": self.ended_normally(),
            "callId": self.call_id,
            "endedReason": self.ended_reason,
            "closeCode": self.close_code,
            "closeReason": self.close_reason,
            "problem": self.problem(),
            "transcript": self.transcript.iter().map(|(role, text)| json!({"role": role, "text": text})).collect::<Vec<_>>(),
            "latency": self.latencies,
            "errors": self.errors.iter().map(|(c, m)| json!({"code": c, "message": m})).collect::<Vec<_>>(),
            "events": self.events,
            "audioSentMs": self.audio_sent_ms,
            "replyAudioMs": self.reply_ms(),
            "outputSampleRate": self.output_rate,
            "out": self.out.as_ref().map(|p| p.display().to_string()),
        })
    }
}

/// Runs `voxgate call`, printing to standard output. `Err` when the call could not
/// be made (bad arguments, an unreadable WAV, a refused upgrade); otherwise the
/// outcome, whose [`CallOutcome::problem`] says whether it ended normally.
pub async fn run(args: CallArgs) -> anyhow::Result<CallOutcome> {
    let mut out = std::io::stdout();
    run_with(args, &mut out).await
}

/// [`run`], printing to `out`.
pub async fn run_with(args: CallArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<CallOutcome> {
    crate::init_crypto();
    if !args.speed.is_finite() || args.speed < 0.0 {
        bail!("--speed must be 0 (as fast as possible) or a positive number, not {}", args.speed);
    }
    if !args.wait.is_finite() || args.wait < 0.0 || args.wait > 86_400.0 {
        bail!("--wait must be a number of seconds from 0 to 86400, not {}", args.wait);
    }
    if args.target.assistant.trim().is_empty() {
        bail!("--assistant is empty");
    }
    let audio = match &args.wav {
        Some(path) => load_wav(path)?,
        None => Vec::new(),
    };
    let url = agent_url(&args.target.url, &args.target.assistant)?;
    let ws = connect(&url, args.target.key.as_deref()).await?;
    let mut call = Call::new(&args, audio, out);
    call.run(ws).await?;
    call.finish()
}

/// The WAV file as 16 kHz mono PCM16, with errors that name the file.
pub(crate) fn load_wav(path: &Path) -> anyhow::Result<Vec<i16>> {
    let shown = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read the WAV file {shown}"))?;
    if meta.is_dir() {
        bail!("cannot read the WAV file {shown}: it is a directory");
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot read the WAV file {shown}"))?;
    // The audio error already names its cause; chaining it would print the cause twice.
    let audio = wav::read_wav(std::io::BufReader::new(file)).map_err(|e| anyhow!("{shown} is not a WAV file voxgate can read: {e}"))?;
    if audio.samples.is_empty() {
        bail!("the WAV file {shown} holds no audio");
    }
    resample::resample_all(audio.rate, INPUT_RATE, &audio.samples).with_context(|| format!("cannot convert {shown} ({} Hz) to 16 kHz", audio.rate))
}

/// What `--url` takes (http, https, ws or wss): whether it is secure, and the rest
/// after `://`, without trailing slashes.
pub(crate) fn split_url(base: &str) -> anyhow::Result<(bool, &str)> {
    let base = base.trim();
    let (scheme, rest) = base.split_once("://").ok_or_else(|| anyhow!("--url {base:?}: expected http://, https://, ws:// or wss://"))?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => false,
        "https" | "wss" => true,
        other => bail!("--url {base:?}: unsupported scheme {other:?}; use http, https, ws or wss"),
    };
    Ok((secure, rest.trim_end_matches('/')))
}

/// `ws(s)://host/agent?assistantId=ID` from an http(s) or ws(s) base URL.
pub(crate) fn agent_url(base: &str, assistant: &str) -> anyhow::Result<String> {
    let base = base.trim();
    let (secure, rest) = split_url(base)?;
    let scheme = if secure { "wss" } else { "ws" };
    if rest.contains(['?', '#']) {
        bail!("--url {base:?}: give the server's address without a query; --assistant names the assistant");
    }
    if rest.is_empty() {
        bail!("--url {base:?}: no host");
    }
    let path = if rest.ends_with("/agent") { String::new() } else { "/agent".to_string() };
    Ok(format!("{scheme}://{rest}{path}?assistantId={}", encode_query(assistant)))
}

pub(crate) fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// TCP_NODELAY on the call's socket. With Nagle's algorithm a 20 ms audio message
/// waits for the ACK of the one before, which the server delays (up to 40 ms) while
/// it has nothing to send back: the caller's audio reached the server in bursts.
const NO_NAGLE: bool = true;

/// The socket's read buffer: a few reply messages (640 bytes of 16 kHz audio each).
/// The buffer is zero-filled before every read: at tungstenite's 128 KiB default,
/// that memset was 38 % of `voxgate bench`'s CPU at 600 calls.
const READ_BUFFER: usize = 2 * 1024;

pub(crate) async fn connect(url: &str, key: Option<&str>) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request().with_context(|| format!("--url: {url} is not a valid WebSocket URL"))?;
    if let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) {
        let value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| anyhow!("--key holds characters an HTTP header cannot carry"))?;
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async_with_config(req, Some(WebSocketConfig::default().read_buffer_size(READ_BUFFER)), NO_NAGLE)).await {
        Err(_) => bail!("no answer from {url} within {} s", CONNECT_TIMEOUT.as_secs()),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(res))) => Err(anyhow!(refused(&res))),
        Ok(Err(e)) => Err(anyhow!("cannot connect to {url}: {e}")),
    }
}

/// A refused upgrade, in a sentence: the status and the server's error message.
fn refused(res: &Response<Option<Vec<u8>>>) -> String {
    let status = res.status();
    let status = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let body = res.body().as_deref().unwrap_or_default();
    let detail = match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["error"]["message"].is_string() => {
            let message = v["error"]["message"].as_str().unwrap_or_default();
            match v["error"]["code"].as_str() {
                Some(code) => format!("{message} ({code})"),
                None => message.to_string(),
            }
        }
        _ => String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string(),
    };
    let retry = res.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(|s| format!("; retry after {s} s")).unwrap_or_default();
    if detail.is_empty() {
        format!("the server refused the call: HTTP {}{retry}", status.trim())
    } else {
        format!("the server refused the call: HTTP {}: {detail}{retry}", status.trim())
    }
}

/// Where the caller is in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `start` sent; waiting for `call-started`.
    Starting,
    /// Streaming the file.
    Audio,
    /// Sending silence until the assistant is quiet, then the text.
    BeforeText,
    /// Sending silence until the assistant is quiet, then `end`.
    Listening,
    /// `end` sent, or the server ended the call: waiting for the close.
    Closing,
}

struct Call<'a> {
    json: bool,
    wait: Duration,
    /// Time between messages: of the file, and of the silence after it.
    file_period: Duration,
    silence_period: Duration,
    audio: Vec<i16>,
    text: Option<String>,
    out_path: Option<PathBuf>,
    out: &'a mut (dyn Write + Send),
    outcome: CallOutcome,
    reply: Vec<i16>,
    phase: Phase,
    /// Samples of the file sent.
    pos: usize,
    /// The pacing clock: message `sent_since_base` is due at `base + n × period`.
    base: Instant,
    sent_since_base: u32,
    /// The last thing heard from the assistant's side, and whether a reply is playing.
    last_activity: Instant,
    bot_speaking: bool,
    /// Deadline of the current wait (call-started, or the close).
    deadline: Instant,
    started_at: Option<Instant>,
}

impl<'a> Call<'a> {
    fn new(args: &CallArgs, audio: Vec<i16>, out: &'a mut (dyn Write + Send)) -> Call<'a> {
        let now = Instant::now();
        let (file_period, silence_period) = if args.speed > 0.0 {
            let p = FRAME.div_f64(args.speed);
            (p, p)
        } else {
            (Duration::ZERO, FRAME)
        };
        Call {
            json: args.json,
            wait: Duration::from_secs_f64(args.wait),
            file_period,
            silence_period,
            audio,
            text: args.text.clone(),
            out_path: args.out.clone(),
            out,
            outcome: CallOutcome { output_rate: args.output_rate, ..CallOutcome::default() },
            reply: Vec::new(),
            phase: Phase::Starting,
            pos: 0,
            base: now,
            sent_since_base: 0,
            last_activity: now,
            bot_speaking: false,
            deadline: now + START_TIMEOUT,
            started_at: None,
        }
    }

    fn say(&mut self, line: impl std::fmt::Display) {
        // A closed stdout (e.g. piped into `head`) must not end the call.
        let _ = writeln!(self.out, "{line}");
    }

    /// A line of the readable transcript (not printed with `--json`).
    fn show(&mut self, line: impl std::fmt::Display) {
        if !self.json {
            self.say(line);
        }
    }

    async fn run(&mut self, ws: Ws) -> anyhow::Result<()> {
        let (mut tx, mut rx) = ws.split();
        let start = ClientMessage::Start {
            audio: AudioSpec { encoding: Encoding::Pcm16, sample_rate: INPUT_RATE, output_sample_rate: Some(self.outcome.output_rate) },
        };
        tx.send(text_message(&start)).await.context("sending start")?;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut interrupted = false;
        let tick = tokio::time::sleep_until(self.deadline);
        tokio::pin!(tick);
        loop {
            let sending = matches!(self.phase, Phase::Audio | Phase::BeforeText | Phase::Listening);
            let next = if sending { self.next_send_at() } else { self.deadline };
            if tick.deadline() != next {
                tick.as_mut().reset(next);
            }
            tokio::select! {
                msg = rx.next() => match msg {
                    Some(Ok(msg)) => {
                        if self.on_message(msg) == Some(true) {
                            self.phase = if !self.audio.is_empty() { Phase::Audio } else { Phase::Listening };
                            self.restart_clock();
                            if self.phase == Phase::Listening {
                                self.send_text(&mut tx).await;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        if self.outcome.close_code.is_none() && self.outcome.ended_reason.is_none() {
                            self.outcome.transport_error = Some(e.to_string());
                        }
                        break;
                    }
                    None => break,
                },
                () = &mut tick => {
                    if !sending {
                        match self.phase {
                            Phase::Starting => bail!("the server did not start the call within {} s", START_TIMEOUT.as_secs()),
                            _ => {
                                self.outcome.transport_error.get_or_insert_with(|| format!("the server did not close the call within {} s", CLOSE_TIMEOUT.as_secs()));
                                break;
                            }
                        }
                    }
                    if let Err(e) = self.send_next(&mut tx).await {
                        // The server went away; the reader sees why.
                        tracing::debug!("send failed: {e}");
                        self.phase = Phase::Closing;
                        self.deadline = Instant::now() + CLOSE_TIMEOUT;
                    }
                }
                r = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    if r.is_ok() && self.phase != Phase::Closing {
                        self.show("(hanging up)");
                        self.hang_up(&mut tx).await;
                    }
                }
            }
        }
        let _ = tx.close().await;
        Ok(())
    }

    fn restart_clock(&mut self) {
        self.base = Instant::now();
        self.sent_since_base = 0;
    }

    fn period(&self) -> Duration {
        if self.phase == Phase::Audio { self.file_period } else { self.silence_period }
    }

    fn next_send_at(&self) -> Instant {
        self.base + self.period() * self.sent_since_base
    }

    /// Sends the next message of the current phase, and moves on when it is time.
    async fn send_next<S>(&mut self, tx: &mut S) -> Result<(), tungstenite::Error>
    where
        S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
    {
        let now = Instant::now();
        // Far behind schedule (a stalled machine): start over rather than burst.
        if now.saturating_duration_since(self.next_send_at()) > Duration::from_millis(200) {
            self.restart_clock();
        }
        match self.phase {
            Phase::Audio => {
                let end = (self.pos + FRAME_SAMPLES).min(self.audio.len());
                let bytes = pcm::encode_pcm16le(&self.audio[self.pos..end]);
                self.outcome.audio_sent_ms += ((end - self.pos) as u64 * 1000) / u64::from(INPUT_RATE);
                self.pos = end;
                self.sent_since_base += 1;
                tx.send(Message::Binary(bytes.into())).await?;
                if self.pos >= self.audio.len() {
                    self.phase = if self.text.is_some() { Phase::BeforeText } else { Phase::Listening };
                    self.last_activity = Instant::now();
                    self.restart_clock();
                }
            }
            Phase::BeforeText | Phase::Listening => {
                if self.quiet(now) {
                    if self.phase == Phase::BeforeText {
                        self.phase = Phase::Listening;
                        self.send_text(tx).await;
                    } else {
                        self.hang_up(tx).await;
                        return Ok(());
                    }
                }
                self.outcome.audio_sent_ms += 20;
                self.sent_since_base += 1;
                tx.send(Message::Binary(vec![0u8; FRAME_SAMPLES * 2].into())).await?;
            }
            Phase::Starting | Phase::Closing => {}
        }
        Ok(())
    }

    /// The assistant has been quiet for `--wait`.
    fn quiet(&self, now: Instant) -> bool {
        let need = if self.bot_speaking { self.wait + STUCK_SPEAKING } else { self.wait };
        now.saturating_duration_since(self.last_activity) >= need
    }

    async fn send_text<S>(&mut self, tx: &mut S)
    where
        S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
    {
        if let Some(text) = self.text.take() {
            self.show(format!("caller (typed): {text}"));
            self.outcome.transcript.push((Role::User, text.clone()));
            let _ = tx.send(text_message(&ClientMessage::Text { text })).await;
            self.last_activity = Instant::now();
        }
    }

    async fn hang_up<S>(&mut self, tx: &mut S)
    where
        S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
    {
        let _ = tx.send(text_message(&ClientMessage::End {})).await;
        self.phase = Phase::Closing;
        self.deadline = Instant::now() + CLOSE_TIMEOUT;
    }

    /// Handles one message from the server. `Some(true)` when the call just started.
    fn on_message(&mut self, msg: Message) -> Option<bool> {
        match msg {
            Message::Text(text) => {
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    tracing::warn!("the server sent a text message that is not JSON: {text}");
                    return None;
                };
                self.outcome.events += 1;
                if self.json {
                    let line = serde_json::to_string(&value).unwrap_or_default();
                    self.say(line);
                }
                // Unknown event types are ignored, as the protocol asks.
                let event = serde_json::from_value::<ServerEvent>(value).ok()?;
                return Some(self.on_event(event));
            }
            Message::Binary(bytes) => {
                self.last_activity = Instant::now();
                let even = bytes.len() & !1;
                let mut samples = Vec::new();
                let _ = pcm::decode_pcm16le_into(&bytes[..even], &mut samples);
                self.outcome.reply_samples += samples.len();
                if self.out_path.is_some() {
                    self.reply.extend_from_slice(&samples);
                }
            }
            Message::Close(frame) => {
                if let Some(f) = frame {
                    self.outcome.close_code = Some(u16::from(f.code));
                    self.outcome.close_reason = Some(f.reason.to_string());
                } else {
                    self.outcome.close_code = Some(1005);
                }
                if self.phase != Phase::Closing {
                    self.phase = Phase::Closing;
                    self.deadline = Instant::now() + CLOSE_TIMEOUT;
                }
            }
            _ => {}
        }
        None
    }

    /// Handles one event; `true` for `call-started`.
    fn on_event(&mut self, event: ServerEvent) -> bool {
        let now = Instant::now();
        if !matches!(event, ServerEvent::Pong { .. } | ServerEvent::Error { .. }) {
            self.last_activity = now;
        }
        match event {
            ServerEvent::CallStarted { call_id, assistant_id, output, input, .. } => {
                self.show(format!(
                    "call {call_id} to assistant {assistant_id} started (sending {} at {}, receiving {} at {})",
                    encoding(input.encoding),
                    input.rate,
                    encoding(output.encoding),
                    output.rate
                ));
                self.outcome.call_id = Some(call_id);
                self.outcome.output_rate = output.rate.hz();
                self.started_at = Some(now);
                return self.phase == Phase::Starting;
            }
            // Partial transcripts may still change: only final ones are shown.
            ServerEvent::Transcript { role, text, is_final: true } => {
                let who = match role {
                    Role::User => "caller",
                    Role::Assistant => "assistant",
                };
                let at = self.started_at.map(|t| format!("[{:6.2} s] ", now.saturating_duration_since(t).as_secs_f64())).unwrap_or_default();
                self.show(format!("{at}{who}: {text}"));
                self.outcome.transcript.push((role, text));
            }
            ServerEvent::BotSpeechStarted => self.bot_speaking = true,
            ServerEvent::BotSpeechStopped => self.bot_speaking = false,
            ServerEvent::Interruption => self.show("  (the caller interrupted the assistant)"),
            ServerEvent::Latency(l) => {
                self.show(format!("  {}", latency_line(&l)));
                self.outcome.latencies.push(l);
            }
            ServerEvent::ToolCall { name, arguments, .. } => self.show(format!("  (tool call: {name} {arguments})")),
            ServerEvent::Error { code, message } => {
                self.show(format!("  (server error `{code}`: {message})"));
                self.outcome.errors.push((code, message));
            }
            ServerEvent::CallEnded { reason } => {
                self.show(format!("call ended: {reason}"));
                self.outcome.ended_reason = Some(reason);
                self.phase = Phase::Closing;
                self.deadline = now + CLOSE_TIMEOUT;
            }
            _ => {}
        }
        false
    }

    /// Writes the reply audio and the summary.
    fn finish(mut self) -> anyhow::Result<CallOutcome> {
        // Written whenever the call started, even if it then failed: what was heard.
        if let (Some(path), Some(_)) = (self.out_path.clone(), &self.outcome.call_id) {
            wav::write_wav_file(&path, &self.reply, self.outcome.output_rate).with_context(|| format!("writing the reply audio to {}", path.display()))?;
            self.outcome.out = Some(path);
        }
        if self.json {
            let summary = self.outcome.summary().to_string();
            self.say(summary);
        } else {
            let mut line = format!(
                "{} transcript line(s), {:.1} s of caller audio sent, {:.1} s of reply audio received",
                self.outcome.transcript.len(),
                self.outcome.audio_sent_ms as f64 / 1000.0,
                self.outcome.reply_ms() as f64 / 1000.0
            );
            if let Some(p) = &self.outcome.out {
                line.push_str(&format!(" (written to {})", p.display()));
            }
            self.say(line);
        }
        let _ = self.out.flush();
        Ok(self.outcome)
    }
}

fn text_message(m: &ClientMessage) -> Message {
    Message::Text(serde_json::to_string(m).unwrap_or_default().into())
}

fn encoding(e: Encoding) -> &'static str {
    match e {
        Encoding::Pcm16 => "PCM16",
        Encoding::Mulaw => "mu-law",
    }
}

fn latency_line(l: &TurnLatency) -> String {
    let mut parts = Vec::new();
    for (name, v) in [("endpointing", l.endpointing_ms), ("STT", l.stt_ms), ("LLM first token", l.llm_first_token_ms), ("TTS first audio", l.tts_first_audio_ms)] {
        if let Some(ms) = v {
            parts.push(format!("{name} {ms} ms"));
        }
    }
    let total = l.voice_to_voice_ms.map(|ms| format!("{ms} ms voice-to-voice")).unwrap_or_else(|| "no voice-to-voice time".into());
    if parts.is_empty() { format!("latency, turn {}: {total}", l.turn) } else { format!("latency, turn {}: {total} ({})", l.turn, parts.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nagle's algorithm off on the caller's socket (see [`NO_NAGLE`]), and a small
    /// read buffer (see [`READ_BUFFER`]).
    #[tokio::test]
    async fn the_call_socket_sends_without_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/agent", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(tcp).await.unwrap()
        });
        let ws = connect(&url, None).await.unwrap();
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() else {
            panic!("a ws:// URL opens a plain TCP stream");
        };
        assert!(tcp.nodelay().unwrap());
        assert_eq!(ws.get_config().read_buffer_size, READ_BUFFER);
        drop(server.await.unwrap());
    }

    #[test]
    fn urls_become_agent_urls() {
        assert_eq!(agent_url("http://127.0.0.1:3010", "a1").unwrap(), "ws://127.0.0.1:3010/agent?assistantId=a1");
        assert_eq!(agent_url("https://x.example/", "a1").unwrap(), "wss://x.example/agent?assistantId=a1");
        assert_eq!(agent_url("wss://x.example/agent", "a b").unwrap(), "wss://x.example/agent?assistantId=a%20b");
        assert_eq!(agent_url("ws://h:4010/base", "a").unwrap(), "ws://h:4010/base/agent?assistantId=a");
        assert!(agent_url("ftp://x", "a").is_err());
        assert!(agent_url("localhost:3010", "a").is_err());
        assert!(agent_url("http://", "a").is_err());
        assert!(agent_url("http://h/agent?assistantId=b", "a").is_err());
    }

    #[test]
    fn problems_name_the_reason_and_the_close_code() {
        let ok = CallOutcome { ended_reason: Some("customer-ended-call".into()), close_code: Some(1000), ..Default::default() };
        assert_eq!(ok.problem(), None);
        let bad = CallOutcome {
            ended_reason: Some("protocol-error".into()),
            close_code: Some(1007),
            close_reason: Some("unknown field".into()),
            errors: vec![("bad-message".into(), "unknown field".into())],
            ..Default::default()
        };
        let p = bad.problem().unwrap();
        assert!(p.contains("protocol-error") && p.contains("1007") && p.contains("bad-message"), "{p}");
        let dropped = CallOutcome { transport_error: Some("reset".into()), ..Default::default() };
        assert!(dropped.problem().unwrap().contains("reset"));
    }
}
