//! Speech to speech: one stage in place of speech-to-text, the model, the clause
//! aggregator and the voice, talking to an OpenAI Realtime session.
//!
//! Turn taking stays ours (the turn stage before this one: VAD, endpointing, the
//! interruption rule, silence and duration limits), so a realtime call behaves like
//! a cascaded one: the caller's audio is appended to the session as it comes
//! (resampled to 24 kHz), the end of a turn commits it and asks for a response,
//! and typed text becomes a user message. The response's audio goes on to the
//! paced output as 20 ms frames, its transcript as the clauses the output reports
//! as spoken, and the caller's words come back as a final transcript.
//!
//! On an interruption the response is cancelled and its item truncated at the
//! audio the caller heard (`conversation.item.truncate`, from the time the reply
//! started playing), so the model's memory of the conversation holds what was
//! played, as the cascaded pipeline's does.
//!
//! Per-turn latency: the time from the commit to the response's first audio is
//! reported as the turn's model time (`llmFirstTokenMs`); the output stage adds
//! the voice-to-voice and response times as for any turn.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use voxgate_audio::{Resampler, SampleRate};
use voxgate_frames::{AudioFrame, Direction, Frame, Stage, Transcript};
use voxgate_openai::realtime::SAMPLE_RATE;
use voxgate_openai::{RealtimeEvent, RealtimeEvents, RealtimeSender};
use voxgate_pipeline::{Outlet, PipelineError, Processor};

/// What the stage and its reader task share.
#[derive(Default)]
struct Shared {
    /// When the caller's turn was committed (or typed), until the first audio.
    asked: Option<Instant>,
    /// The response being played: its id and its audio item's id.
    response: Option<String>,
    item: Option<String>,
    /// A response cancelled by an interruption: its audio is dropped.
    cancelled: Option<String>,
    /// When the reply started playing (the output's `BotStartedSpeaking`), and how
    /// much audio of its item was sent on.
    playing_since: Option<Instant>,
    sent_ms: u64,
}

pub struct RealtimeStage {
    tx: RealtimeSender,
    events: Option<RealtimeEvents>,
    shared: Arc<Mutex<Shared>>,
    resampler: Resampler,
    buf: Vec<i16>,
    reader: CancellationToken,
}

impl RealtimeStage {
    pub fn new(tx: RealtimeSender, events: RealtimeEvents, input_rate: SampleRate) -> RealtimeStage {
        RealtimeStage {
            tx,
            events: Some(events),
            shared: Arc::default(),
            resampler: Resampler::new(input_rate, SampleRate::Hz24000),
            buf: Vec::new(),
            reader: CancellationToken::new(),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("realtime state lock")
    }

    /// Starts reading the session's events into the pipeline (once).
    fn start_reader(&mut self, out: &Outlet) {
        if let Some(events) = self.events.take() {
            let (shared, out, stop) = (self.shared.clone(), out.clone(), self.reader.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = read(events, shared, out) => {}
                }
            });
        }
    }

    async fn ask(&mut self, out: &Outlet, typed: Option<&str>) -> Result<(), PipelineError> {
        self.shared().asked = Some(Instant::now());
        let sent = match typed {
            Some(text) => self.tx.user_text(text).await,
            None => match self.tx.commit().await {
                Ok(()) => self.tx.create_response().await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = sent {
            e.log("the speech-to-speech request");
            return out.up(Frame::Error { code: e.code(), message: e.to_string(), fatal: true }).await;
        }
        Ok(())
    }
}

impl Drop for RealtimeStage {
    fn drop(&mut self) {
        self.reader.cancel();
    }
}

impl Processor for RealtimeStage {
    fn name(&self) -> &'static str {
        "realtime"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        self.start_reader(out);
        match (frame, dir) {
            (Frame::InputAudio(audio), Direction::Downstream) => {
                self.buf.clear();
                self.resampler.process(&audio.samples, &mut self.buf);
                if !self.buf.is_empty()
                    && let Err(e) = self.tx.append(&self.buf).await
                {
                    e.log("sending the caller's audio");
                    return out.up(Frame::Error { code: e.code(), message: e.to_string(), fatal: true }).await;
                }
                Ok(())
            }
            (Frame::EndOfTurn, Direction::Downstream) => {
                out.down(Frame::EndOfTurn).await?;
                self.ask(out, None).await
            }
            (Frame::UserText(text), Direction::Downstream) => {
                let typed = text.clone();
                out.down(Frame::UserText(text)).await?;
                self.ask(out, Some(&typed)).await
            }
            (Frame::Say(text), Direction::Downstream) => {
                // A fixed first message needs a voice of our own, which a
                // speech-to-speech call does not have: the model greets instead.
                tracing::debug!(%text, "a realtime call does not speak a fixed first message");
                Ok(())
            }
            (Frame::BotStartedSpeaking, Direction::Upstream) => {
                self.shared().playing_since = Some(Instant::now());
                out.up(Frame::BotStartedSpeaking).await
            }
            (Frame::BotStoppedSpeaking, Direction::Upstream) => {
                self.shared().playing_since = None;
                out.up(Frame::BotStoppedSpeaking).await
            }
            (Frame::End(reason), Direction::Downstream) => {
                let _ = self.tx.close().await;
                out.down(Frame::End(reason)).await
            }
            (frame, dir) => out.push(frame, dir).await,
        }
    }

    fn interrupted(&mut self) {
        let (response, item, played) = {
            let mut s = self.shared();
            let played = s.playing_since.take().map(|t| (t.elapsed().as_millis() as u64).min(s.sent_ms)).unwrap_or(0);
            s.cancelled = s.response.take();
            s.asked = None;
            (s.cancelled.clone(), s.item.take(), played)
        };
        if response.is_none() {
            return;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.cancel_response().await;
            if let Some(item) = item {
                let _ = tx.truncate(&item, played.min(u64::from(u32::MAX)) as u32).await;
            }
        });
    }
}

/// Whether `words` end a clause (a sentence, or a pause a voice makes).
fn ends_clause(words: &str) -> bool {
    words.trim_end().ends_with(['.', '!', '?', ',', ';', ':'])
}

/// The session's events into frames, until it ends.
async fn read(mut events: RealtimeEvents, shared: Arc<Mutex<Shared>>, out: Outlet) {
    let frame_len = SAMPLE_RATE as usize / 50;
    // The assistant's words not yet handed to the output with their audio.
    let mut words = String::new();
    let mut clause_sent = false;
    let lock = || shared.lock().expect("realtime state lock");
    while let Some(event) = events.next_event().await {
        let res = match event {
            Ok(RealtimeEvent::UserTranscript { text, .. }) if !text.trim().is_empty() => {
                out.down(Frame::Transcript(Transcript { text: text.trim().to_string(), is_final: true })).await
            }
            Ok(RealtimeEvent::ResponseStarted { response_id }) => {
                {
                    let mut s = lock();
                    s.response = Some(response_id);
                    s.sent_ms = 0;
                }
                words.clear();
                clause_sent = false;
                out.down(Frame::LlmResponseStart).await
            }
            Ok(RealtimeEvent::AssistantTranscriptDelta { text, .. }) => {
                words.push_str(&text);
                Ok(())
            }
            Ok(RealtimeEvent::Audio { response_id, item_id, pcm }) => {
                let asked = {
                    let mut s = lock();
                    if s.cancelled.as_deref() == Some(response_id.as_str()) {
                        continue;
                    }
                    s.item = Some(item_id);
                    s.sent_ms += pcm.len() as u64 * 1000 / u64::from(SAMPLE_RATE);
                    s.asked.take()
                };
                let mut res = match asked {
                    Some(t) => out.down(Frame::Metric { stage: Stage::LlmFirstToken, value: t.elapsed() }).await,
                    None => Ok(()),
                };
                // The words go to the output as clauses, each ahead of the audio that
                // follows it: the first words at once, then whole clauses.
                if res.is_ok() && !words.trim().is_empty() && (!clause_sent || ends_clause(&words)) {
                    clause_sent = true;
                    res = out.down(Frame::SpeechClause(std::mem::take(&mut words))).await;
                }
                for chunk in pcm.chunks(frame_len) {
                    if res.is_err() {
                        break;
                    }
                    res = out.down(Frame::OutputAudio(AudioFrame::new(chunk.to_vec(), SAMPLE_RATE))).await;
                }
                res
            }
            Ok(RealtimeEvent::AssistantTranscriptDone { text, .. }) => {
                // Words the audio did not carry (a transcript that ran ahead).
                let rest = std::mem::take(&mut words);
                let live = lock().response.is_some();
                if rest.trim().is_empty() || !live {
                    Ok(())
                } else {
                    tracing::trace!(%text, "realtime transcript done");
                    out.down(Frame::SpeechClause(rest)).await
                }
            }
            Ok(RealtimeEvent::ResponseDone { response_id, status }) => {
                let ours = {
                    let mut s = lock();
                    let ours = s.response.as_deref() == Some(response_id.as_str());
                    if ours {
                        s.response = None;
                    }
                    ours
                };
                if status == "failed" {
                    tracing::warn!(%response_id, "the realtime response failed");
                }
                if ours { out.down(Frame::LlmResponseEnd).await } else { Ok(()) }
            }
            Ok(RealtimeEvent::UserTranscriptFailed { code, message, .. }) => {
                // The caller hears why (as from the cascade's transcriber), and the turn
                // stays in the call's record, without words.
                tracing::warn!(%code, %message, "the realtime session could not transcribe the caller");
                let message = format!("realtime: {code}: {message}");
                match out.up(Frame::Error { code: "provider-failed", message: message.clone(), fatal: false }).await {
                    Ok(()) => out.down(Frame::TranscriptionFailed { code: "provider-failed", message }).await,
                    Err(e) => Err(e),
                }
            }
            Ok(RealtimeEvent::ServerError { code, message }) => {
                tracing::warn!(%code, %message, "the realtime session reported an error");
                out.up(Frame::Error { code: "provider-failed", message: format!("realtime: {code}: {message}"), fatal: false }).await
            }
            Ok(RealtimeEvent::Closed { code, reason }) => {
                let message = format!("the realtime session closed ({code} {reason})");
                let _ = out.up(Frame::Error { code: "provider-failed", message, fatal: true }).await;
                return;
            }
            Ok(_) => Ok(()),
            Err(e) => {
                e.log("the realtime session");
                let _ = out.up(Frame::Error { code: e.code(), message: e.to_string(), fatal: true }).await;
                return;
            }
        };
        if res.is_err() {
            return;
        }
    }
}
