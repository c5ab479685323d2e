//! A call's session: the pipeline between the `/agent` WebSocket and the services,
//! and the call's record.
//!
//! The session reads the client's `start`, builds the pipeline for the assistant
//! (turn taking, STT, LLM, clauses, TTS, the paced output), feeds it from the
//! socket, and watches both of its ends: downstream for transcripts, stage metrics
//! and the end of the call; upstream for what was played and when. Each finished
//! turn is written to the store at once, and its latency is sent to the client.
//!
//! - [`providers`]: which STT, LLM and TTS a call uses.
//! - [`recorder`]: frames into turn records.
//! - [`socket`]: axum's WebSocket as the transport's stream and sink.
//! - [`tools`]: the assistant's tools (HTTP functions, knowledge queries).
//! - [`events`]: webhook events about the call.
//! - [`registry`]: the live calls of this process, to resume or control them.
//! - [`control`]: control messages from the API, here or through PostgreSQL.
//!
//! A call that may be resumed (`RECONNECT_WINDOW_SECS` > 0) outlives its socket:
//! when the connection drops without the caller ending the call, the session
//! detaches the socket from the call's writer (a [`voxgate_transport::relay`],
//! which then drops what the pipeline writes) and waits for a resumed socket
//! through the [`registry`], up to the window. The pipeline runs on meanwhile.

pub mod control;
pub mod events;
pub mod journal;
pub mod keys;
pub mod providers;
pub mod realtime;
pub mod recorder;
pub mod registry;
pub mod socket;
pub mod tools;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use voxgate_api::control::{ControlMessage, MessageRole};
use voxgate_domain::assistant::{FirstMessageMode, ToolKind};
use voxgate_domain::call::{Call, CallTurn, TurnRole};
use voxgate_domain::Assistant;
use voxgate_frames::{EndReason, Frame};
use voxgate_pipeline::{Capacity, Pipeline};
use voxgate_services::llm::{ChatMessage, Role as ChatRole, ToolSpec};
use voxgate_services::processors::clauses::ClauseStage;
use voxgate_services::processors::llm::{LlmConfig, LlmStage};
use voxgate_services::processors::stt::SttStage;
use voxgate_services::processors::tts::TtsStage;
use voxgate_services::turn::{TurnConfig, TurnProcessor};
use voxgate_store::Store;
use voxgate_transport::close::{Close, close_for, code};
use voxgate_transport::input::{InputDecoder, InputEnd, await_start, pump_input};
use voxgate_transport::output::{OutputConfig, OutputStage};
use voxgate_transport::protocol::{Limits, PROTOCOL, ServerEvent, TurnLatency};
use voxgate_transport::recording::{CallRecording, RecordTap};
use voxgate_transport::relay::{BoxSink, Link, Reframe, relay};
use voxgate_transport::wire::{WireOut, writer_channel};

pub use providers::{Local, ProviderFactory, Providers};
use recorder::TurnRecorder;
use registry::{Command, Registration};

/// How long the end of a call waits for the output stage to report what was
/// played of a reply it cut.
const WIND_DOWN: Duration = Duration::from_millis(500);

/// What every session shares.
#[derive(Clone)]
pub struct SessionDeps {
    pub store: Store,
    /// Where finished turns and call ends are written, behind the calls.
    pub journal: journal::Journal,
    pub providers: Arc<dyn ProviderFactory>,
    /// Cancelled when the drain deadline passes.
    pub hard_stop: CancellationToken,
    pub max_message: usize,
    /// Where recordings go (absolute).
    pub recordings: std::path::PathBuf,
    /// How often a live call checks that the key which opened it still stands:
    /// the answers, shared by the calls, are reused for half of it.
    pub key_checks: Arc<keys::KeyChecks>,
    /// Knowledge-base search, for assistants that have one.
    pub knowledge: Option<crate::knowledge::Knowledge>,
    /// The webhook outbox (`WEBHOOK_SECRET` set), and where events go by default.
    pub webhooks: Option<voxgate_webhooks::Webhooks>,
    pub webhook_url: Option<String>,
    /// The client tool calls go out on, and the secret that signs them.
    pub http: reqwest::Client,
    pub signing_secret: Option<Arc<str>>,
    /// This call's webhook events (set by [`run`] for the call).
    pub notifier: Option<events::Notifier>,
    /// How long a call whose connection dropped waits to be resumed (zero: it
    /// ends at once, `connection-lost`).
    pub reconnect_window: Duration,
    /// How long a new socket has to send `start` (`AGENT_START_TIMEOUT_SECS`).
    pub start_timeout: Duration,
    /// How often sockets are pinged (`WS_PING_SECS`; see [`socket`]); `None`: never.
    pub ws_ping: Option<Duration>,
}

/// Why a call ended, as recorded and sent in `call-ended`.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEnd {
    /// The pipeline's (or the socket's) reason.
    Reason(EndReason),
    /// `POST /api/calls/{id}/control` with `{"type":"end"}`.
    Api,
}

/// The `endedReason` of a call ended through the API.
pub const API_ENDED: &str = "api-ended-call";

impl CallEnd {
    pub fn as_str(&self) -> &str {
        match self {
            CallEnd::Reason(r) => r.as_str(),
            CallEnd::Api => API_ENDED,
        }
    }

    fn close(&self) -> Option<Close> {
        match self {
            CallEnd::Reason(r) => close_for(r),
            CallEnd::Api => Some(Close::new(code::NORMAL, API_ENDED)),
        }
    }
}

impl From<EndReason> for CallEnd {
    fn from(r: EndReason) -> CallEnd {
        CallEnd::Reason(r)
    }
}

impl SessionDeps {
    /// Where a call's webhook events go, if anywhere.
    pub fn notifier_for(&self, call: &Call, assistant: &Assistant) -> Option<events::Notifier> {
        events::Notifier::for_call(self.webhooks.as_ref(), self.webhook_url.as_deref(), call, assistant.spec.server_url.as_deref())
    }
}

/// The turn-taking settings of an assistant.
pub fn turn_config(a: &Assistant) -> TurnConfig {
    let s = &a.spec;
    let mut cfg = TurnConfig::default();
    cfg.vad.confidence = s.endpointing.vad_confidence as f32;
    cfg.vad.start_ms = s.endpointing.vad_start_ms;
    cfg.vad.min_volume = s.endpointing.min_volume as f32;
    // `silenceMs` is the whole silence that ends a turn; the VAD's own stop time is part of it.
    cfg.vad.stop_ms = cfg.vad.stop_ms.min(s.endpointing.silence_ms);
    cfg.endpointing_ms = s.endpointing.silence_ms - cfg.vad.stop_ms;
    cfg.interruptions_enabled = s.interruption.enabled;
    cfg.min_voiced_ms = s.interruption.min_voiced_ms;
    cfg.min_words = s.interruption.min_words;
    cfg.backoff_ms = s.interruption.backoff_ms;
    cfg.silence_timeout = (s.silence_timeout_secs > 0).then(|| Duration::from_secs(s.silence_timeout_secs as u64));
    cfg.max_duration = Some(Duration::from_secs(s.max_duration_secs as u64));
    cfg
}

/// The model settings of an assistant.
pub fn llm_config(a: &Assistant) -> LlmConfig {
    let s = &a.spec;
    LlmConfig {
        system_prompt: s.system_prompt.clone(),
        tools: s
            .tools
            .iter()
            .map(|t| ToolSpec { name: t.name.clone(), description: t.description.clone(), parameters: t.parameters.clone() })
            .collect(),
        end_call_tool: s.tools.iter().find(|t| t.kind == ToolKind::EndCall).map(|t| t.name.clone()),
        transfer_tools: s
            .tools
            .iter()
            .filter(|t| t.kind == ToolKind::TransferCall)
            .filter_map(|t| Some((t.name.clone(), t.destination.clone()?)))
            .collect(),
        retriever: None,
        retrieval_budget: Duration::from_millis(s.knowledge_base.as_ref().map_or(300, |kb| kb.budget_ms as u64)),
        temperature: s.model.temperature,
        max_tokens: s.model.max_tokens,
        end_call_phrases: s.end_call_phrases.clone(),
        tool_timeout: s.tools.iter().map(|t| Duration::from_millis(t.timeout_ms as u64)).max().unwrap_or(Duration::from_secs(5)),
    }
}

/// Runs one call on `socket` until it ends; returns why. The call's record exists
/// already; its turns are written here as they finish; the caller ends the record.
/// With a `registration`, the call takes control messages, and resumed sockets
/// when `deps.reconnect_window` is not zero.
pub async fn run(socket: WebSocket, call: &Call, assistant: &Assistant, deps: &SessionDeps, mut registration: Option<Registration>) -> CallEnd {
    let deps = &SessionDeps { notifier: deps.notifier_for(call, assistant), ..deps.clone() };
    let resumable = !deps.reconnect_window.is_zero() && registration.is_some();
    let (sink, mut stream) = socket::split(socket, deps.max_message, deps.ws_ping);
    let (wtx, wrx) = writer_channel();
    // The writer outlives a socket when the call may be resumed (see the module doc).
    let (links, links_rx) = mpsc::channel::<Link<axum::Error>>(4);
    let (lost_tx, mut lost) = mpsc::unbounded_channel();
    let sink: BoxSink<axum::Error> = Box::pin(sink);
    let writer = tokio::spawn(relay(wrx, links_rx, Some((0, sink)), lost_tx, resumable, deps.ws_ping));
    let d = Limits::default();
    let limits = Limits { max_audio_bytes: deps.max_message.min(d.max_audio_bytes), max_text_bytes: deps.max_message.min(d.max_text_bytes) };
    let mut decoder = InputDecoder::new(limits);

    let started = tokio::select! {
        _ = deps.hard_stop.cancelled() => Err(InputEnd::Protocol(voxgate_transport::close::ProtocolError::Frame("server restarting".into()))),
        r = await_start(&mut stream, &mut decoder, &wtx, deps.start_timeout) => r,
    };
    let negotiated = match started {
        Ok(n) => n,
        Err(end) => {
            let reason = if deps.hard_stop.is_cancelled() { EndReason::ServerShutdown } else { end.reason() };
            let close = if deps.hard_stop.is_cancelled() { close_for(&reason) } else { end.close() };
            finish(&wtx, reason.as_str(), close).await;
            drop(wtx);
            writer_done(writer).await;
            return reason.into();
        }
    };

    // A realtime assistant's session, or else the cascade's services.
    let services = match deps.providers.speech_to_speech(assistant) {
        Some(session) => session.await.map(|s| (None, Some(s))),
        None => deps.providers.providers(assistant).await.map(|p| (Some(p), None)),
    };
    let (mut providers, speech_to_speech) = match services {
        Ok(s) => s,
        Err(message) => {
            tracing::error!(%message, "no models for this assistant's call");
            let _ = wtx.send(ServerEvent::Error { code: "providers-unavailable".into(), message: message.clone() }.to_wire()).await;
            let reason = EndReason::PipelineError(message);
            finish(&wtx, reason.as_str(), Some(Close::new(code::INTERNAL, "the assistant's models are not available"))).await;
            drop(wtx);
            writer_done(writer).await;
            return reason.into();
        }
    };

    let mut turn_cfg = turn_config(assistant);
    if turn_cfg.min_words > 0 && !providers.as_ref().is_some_and(|p| p.stt.streams()) {
        // Words are counted from partial transcripts, which only a streaming
        // transcriber gives: without one the rule could never pass, and the caller
        // could never interrupt. The voiced-duration rule decides alone.
        tracing::warn!(min_words = turn_cfg.min_words, "the transcriber does not stream; interruptions ignore minWords");
        turn_cfg.min_words = 0;
    }
    let turn = match TurnProcessor::new(turn_cfg) {
        Ok(t) => t,
        Err(e) => {
            let reason = EndReason::PipelineError(e.to_string());
            finish(&wtx, reason.as_str(), Some(Close::new(code::INTERNAL, "bad turn-taking settings"))).await;
            drop(wtx);
            writer_done(writer).await;
            return reason.into();
        }
    };
    let recording = if assistant.spec.recording_enabled {
        match CallRecording::start(&deps.recordings, &call.id) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, dir = %deps.recordings.display(), "cannot record this call; it goes on unrecorded");
                None
            }
        }
    } else {
        None
    };
    let output = OutputStage::new(OutputConfig { format: negotiated.output, ..OutputConfig::default() }, wtx.clone())
        .with_recording(recording.clone());
    let cancel = CancellationToken::new();
    let mut pipeline = Pipeline::new(Capacity::default());
    if let Some(r) = &recording {
        pipeline = pipeline.stage(RecordTap::new(r.clone()));
    }
    pipeline = pipeline.stage(turn);
    let mut llm_cfg = llm_config(assistant);
    if let (Some(k), Some(kb)) = (&deps.knowledge, &assistant.spec.knowledge_base) {
        llm_cfg.retriever = Some(k.retriever(kb));
    }
    if let Some(p) = providers.as_mut()
        && p.tools.is_none()
        && !assistant.spec.tools.is_empty()
    {
        p.tools = Some(Arc::new(tools::CallTools::new(deps.http.clone(), deps.signing_secret.clone(), &call.id, assistant, deps.knowledge.clone())));
    }
    // The conversation, for system messages added through the API.
    let mut conversation = None;
    pipeline = match (providers, speech_to_speech) {
        (Some(providers), _) => {
            let llm = LlmStage::new(providers.llm, providers.tools, llm_cfg);
            conversation = Some(llm.conversation());
            pipeline
                .stage(SttStage::new(providers.stt, voxgate_transport::input::PIPELINE_RATE.hz()))
                .stage(llm)
                .stage(ClauseStage::default())
                .stage(TtsStage::new(providers.tts))
        }
        (None, Some((tx, events))) => pipeline.stage(realtime::RealtimeStage::new(tx, events, voxgate_transport::input::PIPELINE_RATE)),
        (None, None) => unreachable!("a call has the cascade's services or a speech-to-speech session"),
    };
    let mut io = pipeline.stage(output).spawn(cancel.clone());

    let hello = ServerEvent::CallStarted {
        call_id: call.id.clone(),
        assistant_id: call.assistant_id.clone(),
        protocol: PROTOCOL.into(),
        input: negotiated.input,
        output: negotiated.output,
    };
    let token = if resumable { registration.as_ref().map(|r| r.entry.issue_token()) } else { None };
    let _ = wtx.send(hello.to_wire_with_resume_token(token.as_deref())).await;
    if let Some(n) = &deps.notifier {
        n.in_progress();
    }
    let _ = io.head.send(Frame::Start).await;
    if assistant.spec.first_message_mode == FirstMessageMode::AssistantSpeaksFirst
        && let Some(greeting) = assistant.spec.first_message.clone().filter(|m| !m.trim().is_empty())
    {
        let _ = io.head.send(Frame::Say(greeting)).await;
    }
    let mut input = Some(tokio::spawn(pump_input(stream, decoder, io.head.clone(), wtx.clone())));
    // The socket carrying the call (its writer reports losses by this id), and the
    // deadline of a resume while none does.
    let mut link = 0u64;
    let mut window: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;

    // The call's hard limit. The turn stage ends the call at its maximum too, but
    // behind the audio already queued; this cuts a reply that is still playing.
    let max_duration = tokio::time::sleep(Duration::from_secs(assistant.spec.max_duration_secs.max(1) as u64));
    tokio::pin!(max_duration);
    let key_check = key_revoked(deps, call.key_id.as_deref());
    tokio::pin!(key_check);
    let mut recorder = TurnRecorder::new(Instant::now());
    let acks = Acks::start(wtx.clone());
    let mut latency_turn = 0u32;
    let (reason, close): (CallEnd, Option<Close>) = loop {
        tokio::select! {
            _ = deps.hard_stop.cancelled() => break (EndReason::ServerShutdown.into(), None),
            _ = &mut max_duration => break (EndReason::MaxDuration.into(), None),
            _ = &mut key_check => break (EndReason::KeyRevoked.into(), None),
            end = input_end(&mut input) => {
                input = None;
                if end == InputEnd::ConnectionLost && resumable {
                    window = Some(detach(&links, registration.as_ref(), deps.reconnect_window));
                    continue;
                }
                break (end.reason().into(), end.close());
            }
            Some(id) = lost.recv() => {
                // A write to the current socket failed (stale reports are ignored).
                if id == link && window.is_none() {
                    if let Some(h) = input.take() {
                        h.abort();
                    }
                    window = Some(detach(&links, registration.as_ref(), deps.reconnect_window));
                }
            }
            _ = expired(&mut window) => {
                metrics::counter!("voxgate_call_resumes_total", "outcome" => "expired").increment(1);
                tracing::info!("no resume within the reconnect window");
                break (EndReason::ConnectionLost.into(), None);
            }
            cmd = next_command(&mut registration) => match cmd {
                Command::Control(ControlMessage::End {}) => {
                    tracing::info!("ended through the API");
                    break (CallEnd::Api, None);
                }
                Command::Control(msg) => control(msg, &io.head, conversation.as_ref()).await,
                Command::Resume(r) => {
                    if window.is_none() {
                        // A socket carries the call again already (admission checks
                        // this; a race could still bring one): refuse this one.
                        r.claim.restore();
                        continue;
                    }
                    let Some(entry) = registration.as_ref().map(|r| r.entry.clone()) else { continue };
                    link += 1;
                    let resumed = ServerEvent::CallResumed {
                        call_id: call.id.clone(),
                        resume_token: entry.issue_token(),
                        input: r.negotiated.input,
                        output: r.negotiated.output,
                    };
                    let attach = Link::Attach {
                        id: link,
                        sink: r.sink,
                        first: vec![resumed.to_wire()],
                        convert: Reframe::new(negotiated.output, r.negotiated.output).map(Box::new),
                    };
                    if links.send(attach).await.is_err() {
                        break (EndReason::PipelineError("the call's writer stopped".into()).into(), None);
                    }
                    input = Some(tokio::spawn(pump_input(r.stream, r.decoder, io.head.clone(), wtx.clone())));
                    window = None;
                    entry.set_attached(true);
                    metrics::counter!("voxgate_call_resumes_total", "outcome" => "resumed").increment(1);
                    tracing::info!(link, "call resumed on a new socket");
                }
            },
            got = io.downstream.recv() => match got {
                Some((Frame::End(r), _)) => break (r.into(), None),
                Some((Frame::Error { message, fatal: true, .. }, _)) => break (EndReason::PipelineError(message).into(), None),
                Some((f @ (Frame::Metric { .. } | Frame::Transcript(_) | Frame::TranscriptionFailed { .. } | Frame::UserText(_) | Frame::UserStoppedSpeaking), _)) => {
                    record(&mut recorder, &f, deps, call, &acks, &mut latency_turn).await;
                }
                Some((Frame::ToolCall(c), _)) => {
                    if let Some(n) = &deps.notifier {
                        n.tool_call(&c.id, &c.name, &c.arguments);
                    }
                }
                Some(_) => {}
                None => break (EndReason::PipelineError("the pipeline stopped".into()).into(), None),
            },
            got = io.upstream.recv() => match got {
                Some((Frame::Error { message, fatal: true, .. }, _)) => break (EndReason::PipelineError(message).into(), None),
                Some((Frame::Error { code, message, .. }, _)) => {
                    let _ = wtx.try_send(ServerEvent::Error { code: code.into(), message }.to_wire());
                }
                Some((f @ (Frame::BotStartedSpeaking | Frame::BotStoppedSpeaking | Frame::Spoken(_) | Frame::Interruption), _)) => {
                    record(&mut recorder, &f, deps, call, &acks, &mut latency_turn).await;
                }
                Some(_) => {}
                None => break (EndReason::PipelineError("the pipeline stopped".into()).into(), None),
            },
        }
    };
    if let Some(h) = input.take() {
        h.abort();
    }
    // Frames still on their way up (what was played, the end of a reply) or down
    // (a final transcript) when the call ended belong in the record, and a reply
    // cut by the end of the call (a dropped connection, a hang-up, a drain) is a
    // turn with what was played of it. An interruption fed to the output stage from
    // below makes it report how far into its clause the audio got, then travels up
    // behind everything it and the stages above had sent: a barrier.
    wind_down(&mut io, &mut recorder, deps, call, &acks, &mut latency_turn).await;
    if let Some(t) = recorder.finish_reply() {
        // The journal's `end` below waits for this write; nobody else does.
        drop(persist(deps, call, &t).await);
    }
    acks.finish().await;
    let _ = io.shutdown().await;
    if let Some(r) = recording {
        save_recording(r, deps, call).await;
    }
    let close = close.or_else(|| reason.close());
    finish(&wtx, reason.as_str(), close).await;
    drop(wtx);
    writer_done(writer).await;
    reason
}

/// How long the call's writer may go on with what it holds once the call has let
/// go of it: a write stuck on a client that stopped reading is given up then.
const WRITER_GRACE: Duration = Duration::from_secs(2);

/// Waits for the call's writer (its senders dropped) to write what it holds, for
/// [`WRITER_GRACE`] at most: a client that stops reading would hold it (and the
/// socket) forever. The writer's result, or `None` when it was given up.
pub(crate) async fn writer_done<T>(mut writer: JoinHandle<T>) -> Option<T> {
    match tokio::time::timeout(WRITER_GRACE, &mut writer).await {
        Ok(done) => done.ok(),
        Err(_) => {
            writer.abort();
            None
        }
    }
}

/// How the input pump ended; never while there is none (the socket is detached).
async fn input_end(input: &mut Option<JoinHandle<InputEnd>>) -> InputEnd {
    match input {
        Some(h) => h.await.unwrap_or(InputEnd::ConnectionLost),
        None => std::future::pending().await,
    }
}

/// The next command from outside; never for a call that is not registered.
async fn next_command(registration: &mut Option<Registration>) -> Command {
    match registration {
        Some(r) => match r.commands.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Resolves when the reconnect window passes; never while a socket is attached.
async fn expired(window: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match window {
        Some(w) => w.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The call's socket is gone: let the writer drop it, and open the window in which
/// the client may resume.
fn detach(links: &mpsc::Sender<Link<axum::Error>>, registration: Option<&Registration>, window: Duration) -> std::pin::Pin<Box<tokio::time::Sleep>> {
    // Not awaited: the writer may be stuck on the dead socket, and the link queue
    // only ever holds a message or two.
    let _ = links.try_send(Link::Detach);
    if let Some(r) = registration {
        r.entry.set_attached(false);
    }
    tracing::info!(window_secs = window.as_secs_f64(), "connection lost; the call waits for a resume");
    Box::pin(tokio::time::sleep(window))
}

/// Acts on a control message (other than `end`).
async fn control(msg: ControlMessage, head: &voxgate_pipeline::runner::Feeder, conversation: Option<&Arc<std::sync::Mutex<voxgate_services::context::Conversation>>>) {
    let frame = match msg {
        ControlMessage::End {} => return,
        ControlMessage::Say { text } => Frame::Say(text),
        ControlMessage::AddMessage { role: MessageRole::User, content } => Frame::UserText(content),
        ControlMessage::AddMessage { role: MessageRole::System, content } => {
            match conversation {
                Some(c) => c.lock().expect("conversation lock").push(ChatMessage::new(ChatRole::System, content)),
                None => tracing::warn!("a system message for a speech-to-speech call is ignored"),
            }
            return;
        }
    };
    tracing::info!(frame = frame.name(), "control message");
    if tokio::time::timeout(Duration::from_secs(1), head.send(frame)).await.is_err() {
        tracing::warn!("the pipeline did not take a control message within a second; dropped");
    }
}

/// Returns once the key that opened the call is revoked or gone (see
/// [`keys::KeyChecks`]: within `key_check`); never for a call opened without a
/// key. A database that does not answer is not a revocation: the call goes on.
async fn key_revoked(deps: &SessionDeps, key_id: Option<&str>) {
    let Some(id) = key_id else { return std::future::pending().await };
    loop {
        tokio::time::sleep(deps.key_checks.fresh()).await;
        if deps.key_checks.revoked(&deps.store, id).await {
            tracing::warn!(key = id, "the call's key was revoked; ending the call");
            return;
        }
    }
}

/// Writes the call's recording and notes it on the record.
async fn save_recording(r: CallRecording, deps: &SessionDeps, call: &Call) {
    let path = deps.recordings.join(format!("{}.wav", call.id));
    let target = path.clone();
    match tokio::task::spawn_blocking(move || r.finish(&target)).await {
        Ok(Ok(samples)) => {
            tracing::info!(path = %path.display(), seconds = samples / u64::from(voxgate_transport::recording::RATE), "call recorded");
            if let Err(e) = deps.store.set_recording(&call.id, &path.to_string_lossy()).await {
                tracing::error!(error = %e, "could not note the call's recording");
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "could not write the call's recording"),
        Err(e) => tracing::error!(error = %e, "the recording task failed"),
    }
}

/// Collects the frames in flight when a call ends (see the caller).
async fn wind_down(
    io: &mut voxgate_pipeline::PipelineIo,
    recorder: &mut TurnRecorder,
    deps: &SessionDeps,
    call: &Call,
    acks: &Acks,
    latency_turn: &mut u32,
) {
    let deadline = tokio::time::Instant::now() + WIND_DOWN;
    if tokio::time::timeout_at(deadline, io.tail.send(Frame::Interruption)).await.is_ok() {
        loop {
            match tokio::time::timeout_at(deadline, io.upstream.recv()).await {
                Ok(Some((Frame::Interruption, _))) | Ok(None) | Err(_) => break,
                Ok(Some((f @ (Frame::BotStartedSpeaking | Frame::BotStoppedSpeaking | Frame::Spoken(_)), _))) => {
                    record(recorder, &f, deps, call, acks, latency_turn).await;
                }
                Ok(Some(_)) => {}
            }
        }
    }
    while let Ok((f, _)) = io.downstream.try_recv() {
        if matches!(
            f,
            Frame::Metric { .. } | Frame::Transcript(_) | Frame::TranscriptionFailed { .. } | Frame::UserText(_) | Frame::UserStoppedSpeaking
        ) {
            record(recorder, &f, deps, call, acks, latency_turn).await;
        }
    }
}

/// Feeds the recorder; writes a finished turn and tells the client its latency.
async fn record(recorder: &mut TurnRecorder, frame: &Frame, deps: &SessionDeps, call: &Call, acks: &Acks, latency_turn: &mut u32) {
    let Some(turn) = recorder.on_frame(frame, Instant::now()) else { return };
    let written = persist(deps, call, &turn).await;
    if turn.role == TurnRole::Assistant {
        let l = &turn.latency;
        observe(l);
        let ms = |v: Option<f64>| v.map(|v| v.round() as u64);
        let ev = ServerEvent::Latency(TurnLatency {
            turn: *latency_turn,
            endpointing_ms: ms(l.endpointing_ms),
            stt_ms: ms(l.stt_ms),
            llm_first_token_ms: ms(l.llm_first_token_ms),
            tts_first_audio_ms: ms(l.tts_first_audio_ms),
            queue_wait_ms: ms(l.queue_wait_ms),
            retrieval_ms: ms(l.retrieval_ms),
            voice_to_voice_ms: ms(l.voice_to_voice_ms),
            response_ms: l.response_ms.map(|v| (v * 10.0).round() / 10.0),
        });
        *latency_turn += 1;
        acks.send_when_written(written, ev.to_wire());
    }
}

/// How long a `latency` event waits for its turn to reach the database.
const WRITE_ACK_WAIT: Duration = Duration::from_secs(2);

/// Sends each turn's `latency` event once the turn is in the database, in order: the
/// event tells the caller the exchange is over, so a crash after it must not lose
/// the turn. A database that is away holds an event back [`WRITE_ACK_WAIT`] at
/// most (the turn waits in the journal's queue meanwhile). The call's loop never
/// waits for a write: a task per call does.
struct Acks {
    tx: mpsc::UnboundedSender<(tokio::sync::oneshot::Receiver<bool>, WireOut)>,
    task: JoinHandle<()>,
}

impl Acks {
    fn start(wtx: mpsc::Sender<WireOut>) -> Acks {
        let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::sync::oneshot::Receiver<bool>, WireOut)>();
        let task = tokio::spawn(async move {
            while let Some((written, event)) = rx.recv().await {
                let _ = tokio::time::timeout(WRITE_ACK_WAIT, written).await;
                let _ = wtx.try_send(event);
            }
        });
        Acks { tx, task }
    }

    fn send_when_written(&self, written: tokio::sync::oneshot::Receiver<bool>, event: WireOut) {
        let _ = self.tx.send((written, event));
    }

    /// Sends what is still waiting (each up to [`WRITE_ACK_WAIT`]), before the call's
    /// last events.
    async fn finish(self) {
        drop(self.tx);
        let mut task = self.task;
        if tokio::time::timeout(WRITE_ACK_WAIT * 2, &mut task).await.is_err() {
            task.abort();
        }
    }
}

fn observe(l: &voxgate_domain::call::TurnLatency) {
    for (stage, v) in [
        ("endpointing", l.endpointing_ms),
        ("stt", l.stt_ms),
        ("llm_first_token", l.llm_first_token_ms),
        ("tts_first_audio", l.tts_first_audio_ms),
        ("queue_wait", l.queue_wait_ms),
        ("retrieval", l.retrieval_ms),
        ("voice_to_voice", l.voice_to_voice_ms),
        ("response", l.response_ms),
    ] {
        if let Some(ms) = v {
            metrics::histogram!("voxgate_turn_latency_seconds", "stage" => stage).record(ms / 1000.0);
        }
    }
}

async fn persist(deps: &SessionDeps, call: &Call, turn: &CallTurn) -> tokio::sync::oneshot::Receiver<bool> {
    let written = deps.journal.turn(&call.id, turn.clone()).await;
    if let Some(n) = &deps.notifier {
        n.transcript(turn);
    }
    written
}

/// Tells the client the call is over and closes the socket.
async fn finish(wtx: &tokio::sync::mpsc::Sender<WireOut>, reason: &str, close: Option<Close>) {
    let ended = ServerEvent::CallEnded { reason: reason.into() }.to_wire();
    let _ = tokio::time::timeout(Duration::from_millis(500), wtx.send(ended)).await;
    let close = close.unwrap_or_else(|| Close::new(code::NORMAL, reason));
    let _ = tokio::time::timeout(Duration::from_millis(500), wtx.send(WireOut::Close(close))).await;
}
