//! The last stage of a call's pipeline: reply audio out to the client, paced in
//! real time, and the events the client sees.
//!
//! Pacing: frame `n` of a reply is written at `start + n * 20 ms` (an absolute
//! schedule, so timer jitter does not accumulate). A frame more than `max_lag`
//! late (the TTS fell behind real time) restarts the schedule instead of bursting.
//! The stage paces inside [`Processor::process`], so while a chunk plays its
//! successors wait in the stage's data inbox, where an interruption flushes them;
//! an interruption therefore takes effect after at most the chunk in hand (TTS
//! chunks of 20-40 ms keep that within a frame or two).
//!
//! What it tells the rest of the pipeline:
//! - `BotStartedSpeaking`, both ways, right after the first frame of a reply is
//!   handed to the writer (the downstream copy tells the session, at the pipeline's
//!   end, when the first audio was written; [`OutputStage::first_audio`] gives the
//!   exact instant);
//! - `Spoken(text)` upstream once a `SpeechClause`'s audio has all been written,
//!   or, on an interruption, the part of the clause in progress that was played
//!   ([`truncate_to_played`]);
//! - `BotStoppedSpeaking`, both ways, when the reply's last frame has played (on
//!   `LlmResponseEnd`, `TtsStopped` or `End`) or on an interruption;
//! - `End(SlowClient)` downstream when the writer stays full for
//!   `slow_client_timeout`, after which nothing more is written; `End(ConnectionLost)`
//!   when the writer is gone.
//!
//! Every other frame is forwarded; `Metric` frames go on to the pipeline's end.
//! Client events sent here: `speech-started`, `speech-stopped`, `transcript` (user
//! transcripts passing by, assistant text as played), `tool-call`,
//! `bot-speech-started`, `bot-speech-stopped`, `interruption`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use voxgate_audio::pcm::FRAME_MS;
use voxgate_frames::{AudioFrame, Direction, EndReason, Frame, Stage};
use voxgate_pipeline::{Outlet, PipelineError, Processor};
use voxgate_services::context::truncate_to_played;

use crate::framer::Framer;
use crate::recording::{CallRecording, Side};
use crate::protocol::{AudioFormat, Role, ServerEvent};
use crate::wire::WireOut;

const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);

/// How the output stage behaves.
#[derive(Debug, Clone, Copy)]
pub struct OutputConfig {
    /// The client's output format (from `start`).
    pub format: AudioFormat,
    /// How long the writer may stay full before the call ends as `slow-client`.
    pub slow_client_timeout: Duration,
    /// How late a frame may be before the schedule restarts rather than catch up.
    pub max_lag: Duration,
    /// Speech duration per character, to estimate a clause's length before its
    /// audio has all arrived (replaced by the call's measured rate once known).
    pub time_per_char: Duration,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            format: AudioFormat::pcm16(voxgate_audio::SampleRate::Hz16000),
            slow_client_timeout: Duration::from_secs(2),
            max_lag: Duration::from_millis(100),
            // About 15 characters a second: a typical TTS voice.
            time_per_char: Duration::from_millis(65),
        }
    }
}

/// A clause of the current reply, in output-rate samples of the reply.
#[derive(Debug)]
struct Clause {
    text: String,
    start: u64,
    /// Known once the next clause starts or the reply ends.
    end: Option<u64>,
}

/// The real-time schedule of the reply being written.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    sent: u32,
}

impl Clock {
    fn slot(&self) -> Instant {
        self.start + FRAME * self.sent
    }
}

/// The pipeline's last stage: paces reply audio to the client (see the module doc).
pub struct OutputStage {
    cfg: OutputConfig,
    /// To the socket's writer task; small and bounded (see [`crate::wire::WRITER_CAPACITY`]).
    writer: mpsc::Sender<WireOut>,
    framer: Framer,
    clock: Option<Clock>,
    speaking: bool,
    /// Output-rate samples of the current reply written so far.
    written: u64,
    clauses: VecDeque<Clause>,
    /// After an interruption, audio is the old reply's until a new reply or clause.
    discarding: bool,
    /// The client stopped reading or the writer is gone: write nothing more.
    gone: bool,
    /// Measured speech rate: samples and characters of finished clauses.
    measured: (u64, u64),
    first_audio: watch::Sender<Option<Instant>>,
    /// When the caller's turn was decided over, until the reply's first frame is
    /// written: the reply's response time runs from it.
    turn_ended: Option<std::time::Instant>,
    /// The call's recording, when its assistant records: the frames as played.
    recording: Option<CallRecording>,
}

impl OutputStage {
    pub fn new(cfg: OutputConfig, writer: mpsc::Sender<WireOut>) -> OutputStage {
        OutputStage {
            cfg,
            writer,
            framer: Framer::new(cfg.format),
            clock: None,
            speaking: false,
            written: 0,
            clauses: VecDeque::new(),
            discarding: false,
            gone: false,
            measured: (0, 0),
            first_audio: watch::Sender::new(None),
            turn_ended: None,
            recording: None,
        }
    }

    /// Records every frame as it is played.
    pub fn with_recording(mut self, recording: Option<CallRecording>) -> OutputStage {
        self.recording = recording;
        self
    }

    /// When the first audio frame of the latest reply was handed to the writer.
    pub fn first_audio(&self) -> watch::Receiver<Option<Instant>> {
        self.first_audio.subscribe()
    }

    fn samples_to_duration(&self, samples: u64) -> Duration {
        Duration::from_nanos(samples * 1_000_000_000 / u64::from(self.cfg.format.rate.hz()))
    }

    /// Writes one message, waiting at most `slow_client_timeout` for room.
    async fn send(&mut self, msg: WireOut, out: &Outlet) -> Result<(), PipelineError> {
        if self.gone {
            return Ok(());
        }
        match tokio::time::timeout(self.cfg.slow_client_timeout, self.writer.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(msg);
                Ok(())
            }
            Ok(Err(_)) => {
                self.gone = true;
                self.framer.clear();
                out.down(Frame::End(EndReason::ConnectionLost)).await
            }
            Err(_) => {
                self.gone = true;
                self.framer.clear();
                metrics::counter!("voxgate_slow_clients_total").increment(1);
                tracing::warn!(timeout = ?self.cfg.slow_client_timeout, "the client stopped reading; ending the call");
                out.down(Frame::End(EndReason::SlowClient)).await
            }
        }
    }

    async fn event(&mut self, ev: ServerEvent, out: &Outlet) -> Result<(), PipelineError> {
        self.send(ev.to_wire(), out).await
    }

    /// Writes every whole frame held, each in its slot.
    async fn play(&mut self, out: &Outlet) -> Result<(), PipelineError> {
        while !self.gone {
            let Some(bytes) = self.framer.next_frame() else {
                break;
            };
            let now = Instant::now();
            let clock = self.clock.get_or_insert(Clock {
                start: now,
                sent: 0,
            });
            if now > clock.slot() + self.cfg.max_lag {
                *clock = Clock {
                    start: now,
                    sent: 0,
                };
            }
            tokio::time::sleep_until(clock.slot()).await;
            let first = !self.speaking;
            if first {
                self.speaking = true;
                self.first_audio.send_replace(Some(Instant::now()));
                out.up(Frame::BotStartedSpeaking).await?;
                out.down(Frame::BotStartedSpeaking).await?;
                self.event(ServerEvent::BotSpeechStarted, out).await?;
            }
            self.send(WireOut::Binary(bytes), out).await?;
            if let Some(r) = &self.recording
                && !self.gone
            {
                r.add(Side::Assistant, self.framer.last_frame_samples(), self.cfg.format.rate.hz());
            }
            if first && let Some(at) = self.turn_ended.take() {
                let value = Instant::now().into_std().saturating_duration_since(at);
                out.down(Frame::Metric { stage: Stage::Response, value }).await?;
            }
            if let Some(c) = &mut self.clock {
                c.sent += 1;
            }
            self.written += self.framer.frame_samples() as u64;
            self.report_played(out).await?;
        }
        Ok(())
    }

    /// Reports every clause whose audio has all been written.
    async fn report_played(&mut self, out: &Outlet) -> Result<(), PipelineError> {
        while let Some(c) = self.clauses.front() {
            match c.end {
                Some(end) if end <= self.written => {}
                _ => break,
            }
            let c = self.clauses.pop_front().expect("front exists");
            if c.end > Some(c.start) {
                self.spoken(c.text, out).await?;
            }
        }
        Ok(())
    }

    async fn spoken(&mut self, text: String, out: &Outlet) -> Result<(), PipelineError> {
        if text.trim().is_empty() {
            return Ok(());
        }
        out.up(Frame::Spoken(text.clone())).await?;
        self.event(
            ServerEvent::Transcript {
                role: Role::Assistant,
                text,
                is_final: true,
            },
            out,
        )
        .await
    }

    /// Closes the clause in progress at `at` (samples into the reply).
    fn close_clause(&mut self, at: u64) {
        if let Some(c) = self.clauses.back_mut()
            && c.end.is_none()
        {
            c.end = Some(at);
            let chars = c.text.chars().count() as u64;
            if at > c.start && chars > 0 {
                self.measured.0 += at - c.start;
                self.measured.1 += chars;
            }
        }
    }

    /// A clause's expected length when its audio has not all arrived.
    fn estimate(&self, text: &str, received: u64) -> u64 {
        let chars = text.chars().count() as u64;
        let by_rate = (chars * self.measured.0)
            .checked_div(self.measured.1)
            .unwrap_or_else(|| {
                chars
                    * u64::from(self.cfg.format.rate.hz())
                    * self.cfg.time_per_char.as_millis() as u64
                    / 1000
            });
        by_rate.max(received)
    }

    /// The reply is over: write what is held, wait until it has played, report.
    async fn finish_reply(&mut self, out: &Outlet) -> Result<(), PipelineError> {
        if self.gone || self.discarding {
            self.framer.clear();
        } else {
            self.framer.finish();
            self.play(out).await?;
        }
        if let (Some(c), false) = (self.clock, self.gone) {
            // The last frame written plays until its slot ends.
            tokio::time::sleep_until(c.slot()).await;
        }
        self.close_clause(self.written);
        self.report_played(out).await?;
        self.clauses.clear();
        self.stopped(out).await
    }

    async fn stopped(&mut self, out: &Outlet) -> Result<(), PipelineError> {
        self.clock = None;
        self.written = 0;
        if self.speaking {
            self.speaking = false;
            out.up(Frame::BotStoppedSpeaking).await?;
            out.down(Frame::BotStoppedSpeaking).await?;
            self.event(ServerEvent::BotSpeechStopped, out).await?;
        }
        Ok(())
    }

    async fn interrupt(&mut self, out: &Outlet) -> Result<(), PipelineError> {
        let received = self.written + self.framer.pending() as u64;
        // Tell the client to drop what it holds only if something was playing or
        // on its way (not, say, at the end of a call with the assistant silent).
        let cut = self.speaking || self.framer.pending() > 0 || !self.clauses.is_empty();
        self.framer.clear();
        self.discarding = true;
        if cut {
            self.event(ServerEvent::Interruption, out).await?;
        }
        // The clause in progress: the first one not wholly written.
        if let Some(c) = self
            .clauses
            .iter()
            .find(|c| c.end.is_none_or(|e| e > self.written))
            && c.start < self.written
        {
            let played = self.written - c.start;
            let total = match c.end {
                Some(end) => end - c.start,
                None => self.estimate(&c.text, received - c.start),
            };
            let heard = truncate_to_played(
                &c.text,
                self.samples_to_duration(played),
                self.samples_to_duration(total),
            )
            .to_owned();
            self.spoken(heard, out).await?;
        }
        self.clauses.clear();
        self.stopped(out).await
    }

    async fn audio(&mut self, frame: AudioFrame, out: &Outlet) -> Result<(), PipelineError> {
        if self.gone || self.discarding {
            return Ok(());
        }
        self.framer.push(&frame);
        self.play(out).await
    }
}

impl Processor for OutputStage {
    fn name(&self) -> &'static str {
        "output"
    }

    async fn process(
        &mut self,
        frame: Frame,
        dir: Direction,
        out: &Outlet,
    ) -> Result<(), PipelineError> {
        use Direction::Downstream as Down;
        match (frame, dir) {
            (Frame::OutputAudio(a), Down) => self.audio(a, out).await,
            (Frame::SpeechClause(text), Down) => {
                self.discarding = false;
                let at = self.written + self.framer.pending() as u64;
                self.close_clause(at);
                self.clauses.push_back(Clause {
                    text,
                    start: at,
                    end: None,
                });
                Ok(())
            }
            (Frame::TurnEnded(at), Down) => {
                self.turn_ended = Some(at);
                out.down(Frame::TurnEnded(at)).await
            }
            (Frame::LlmResponseStart, Down) => {
                self.discarding = false;
                out.down(Frame::LlmResponseStart).await
            }
            (f @ (Frame::LlmResponseEnd | Frame::TtsStopped | Frame::End(_)), Down) => {
                self.finish_reply(out).await?;
                out.down(f).await
            }
            (Frame::Interruption, dir) => {
                self.interrupt(out).await?;
                out.push(Frame::Interruption, dir).await
            }
            (f @ (Frame::UserStartedSpeaking | Frame::UserStoppedSpeaking), Down) => {
                let ev = if f == Frame::UserStartedSpeaking {
                    ServerEvent::SpeechStarted
                } else {
                    ServerEvent::SpeechStopped
                };
                self.event(ev, out).await?;
                out.down(f).await
            }
            (Frame::Transcript(t), Down) => {
                let ev = ServerEvent::Transcript {
                    role: Role::User,
                    text: t.text.clone(),
                    is_final: t.is_final,
                };
                self.event(ev, out).await?;
                out.down(Frame::Transcript(t)).await
            }
            (Frame::ToolCall(c), Down) => {
                let ev = ServerEvent::ToolCall {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                };
                self.event(ev, out).await?;
                out.down(Frame::ToolCall(c)).await
            }
            (Frame::Transfer(destination), Down) => {
                self.event(ServerEvent::Transfer { destination: destination.clone() }, out).await?;
                out.down(Frame::Transfer(destination)).await
            }
            (f, dir) => out.push(f, dir).await,
        }
    }
}
