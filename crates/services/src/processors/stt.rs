//! The speech-to-text stage: keeps a short pre-roll of the caller's audio, captures
//! the utterance from `UserStartedSpeaking` to `EndOfTurn`, transcribes it, and
//! sends the transcript ahead of the `EndOfTurn` it belongs to.
//!
//! With a provider that streams ([`Stt::stream`]), the utterance goes to a
//! recognition session as it is spoken: its partial transcripts go downstream (to
//! the client) and upstream (to the turn stage, whose interruption rule counts
//! words), and at `EndOfTurn` the session is finished and its final transcript
//! used. A session that fails falls back to transcribing the captured utterance.
//!
//! With a batch provider that allows it ([`Stt::speculative`]), the utterance is
//! transcribed as soon as the caller stops speaking (`UserStoppedSpeaking`), while
//! the turn detector still waits out its endpointing silence: at `EndOfTurn` the
//! transcript is ready or nearly so, and the caller waits only for what is left of
//! it. Speech that resumes before the end of the turn throws that transcription
//! away (the turn goes on, and is transcribed whole later). The audio captured
//! after the stop is silence to the VAD, so the early transcript is the turn's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use voxgate_frames::{Direction, Frame, Stage, Transcript};
use voxgate_pipeline::{Outlet, PipelineError, Processor};

use super::TaskSlot;
use crate::ServiceError;
use crate::stt::{Stt, SttEvent, SttSession};

/// How long `EndOfTurn` waits for a streaming session's final transcript.
const FINAL_WAIT: Duration = Duration::from_secs(5);

/// A streaming recognition in progress.
struct Streaming {
    session: Box<dyn SttSession>,
    /// Final transcripts (and failures) from the reader task.
    finals: mpsc::Receiver<Result<String, String>>,
    reader: TaskSlot,
}

/// Audio kept from before the VAD decided speech started (it decides late by design).
const PREROLL: Duration = Duration::from_millis(300);
/// The longest utterance kept; beyond it audio is dropped (bounded memory per call).
const MAX_UTTERANCE: Duration = Duration::from_secs(60);

/// A transcription started when the caller stopped speaking (see the module doc);
/// aborted when dropped.
struct Early(tokio::task::JoinHandle<Result<String, ServiceError>>);

impl Drop for Early {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct SttStage {
    stt: Arc<dyn Stt>,
    rate: u32,
    preroll: VecDeque<i16>,
    utterance: Vec<i16>,
    capturing: bool,
    streaming: Option<Streaming>,
    early: Option<Early>,
}

impl SttStage {
    /// `rate` is the pipeline's input rate (16 kHz).
    pub fn new(stt: Arc<dyn Stt>, rate: u32) -> SttStage {
        SttStage { stt, rate, preroll: VecDeque::new(), utterance: Vec::new(), capturing: false, streaming: None, early: None }
    }

    /// The transcript of an early transcription, or `None` if it failed to run (a
    /// panic, an abort): the caller then transcribes the utterance itself.
    async fn early_transcript(early: &mut Early) -> Option<Result<String, ServiceError>> {
        (&mut early.0).await.ok()
    }

    /// Opens a streaming session, if the provider streams, primed with `preroll`.
    fn open_stream(&mut self, preroll: &[i16], out: &Outlet) {
        let mut session = match self.stt.stream(self.rate) {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not start streaming recognition; transcribing at the end of the turn");
                return;
            }
        };
        if let Err(e) = session.push(preroll) {
            tracing::warn!(error = %e, "streaming recognition failed; transcribing at the end of the turn");
            return;
        }
        let mut events = session.events();
        let (tx, finals) = mpsc::channel(4);
        let out = out.clone();
        let mut reader = TaskSlot::default();
        let up = out.clone();
        reader.set(super::spawn_worker("speech recognition", up, async move {
            while let Some(ev) = events.next().await {
                let res = match ev {
                    Ok(SttEvent::Partial(text)) if !text.trim().is_empty() => {
                        let t = Transcript { text: text.trim().to_string(), is_final: false };
                        match out.up(Frame::Transcript(t.clone())).await {
                            Ok(()) => out.down(Frame::Transcript(t)).await,
                            Err(e) => Err(e),
                        }
                    }
                    Ok(SttEvent::Partial(_)) => Ok(()),
                    Ok(SttEvent::Final(text)) => {
                        let _ = tx.send(Ok(text)).await;
                        Ok(())
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string())).await;
                        return;
                    }
                };
                if res.is_err() {
                    return;
                }
            }
        }));
        self.streaming = Some(Streaming { session, finals, reader });
    }

    /// The turn's transcript: the streaming session's final one, or else the
    /// captured utterance transcribed.
    async fn transcript(&mut self, audio: Vec<i16>) -> Result<String, ServiceError> {
        if let Some(mut s) = self.streaming.take() {
            let res: Result<String, String> = match s.session.finish() {
                Ok(()) => match tokio::time::timeout(FINAL_WAIT, s.finals.recv()).await {
                    Ok(Some(r)) => r,
                    Ok(None) => Err("the recognition session ended without a final transcript".into()),
                    Err(_) => Err("no final transcript in time".into()),
                },
                Err(e) => Err(e.to_string()),
            };
            s.reader.cancel();
            match res {
                Ok(text) => return Ok(text),
                Err(e) => tracing::warn!(error = %e, "streaming recognition failed; transcribing the utterance"),
            }
        }
        if audio.is_empty() {
            return Ok(String::new());
        }
        self.stt.transcribe(audio, self.rate).await
    }

    fn samples(&self, d: Duration) -> usize {
        (self.rate as u128 * d.as_millis() / 1000) as usize
    }
}

impl Processor for SttStage {
    fn name(&self) -> &'static str {
        "stt"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        match (frame, dir) {
            (Frame::InputAudio(a), Direction::Downstream) => {
                if self.capturing {
                    let room = self.samples(MAX_UTTERANCE).saturating_sub(self.utterance.len());
                    let take = &a.samples[..a.samples.len().min(room)];
                    self.utterance.extend_from_slice(take);
                    if let Some(s) = &mut self.streaming
                        && let Err(e) = s.session.push(take)
                    {
                        tracing::warn!(error = %e, "streaming recognition failed; transcribing at the end of the turn");
                        self.streaming = None;
                    }
                } else {
                    let keep = self.samples(PREROLL);
                    self.preroll.extend(a.samples.iter().copied());
                    let excess = self.preroll.len().saturating_sub(keep);
                    self.preroll.drain(..excess);
                }
                Ok(())
            }
            (Frame::UserStartedSpeaking, Direction::Downstream) => {
                // The caller goes on: an early transcript would miss these words.
                self.early = None;
                if !self.capturing {
                    self.capturing = true;
                    self.utterance.clear();
                    self.utterance.extend(self.preroll.drain(..));
                    let preroll = std::mem::take(&mut self.utterance);
                    self.open_stream(&preroll, out);
                    self.utterance = preroll;
                }
                out.down(Frame::UserStartedSpeaking).await
            }
            (Frame::UserStoppedSpeaking, Direction::Downstream) => {
                if self.capturing && self.streaming.is_none() && self.stt.speculative() && !self.utterance.is_empty() {
                    self.early = Some(Early(tokio::spawn(self.stt.transcribe(self.utterance.clone(), self.rate))));
                }
                out.down(Frame::UserStoppedSpeaking).await
            }
            (Frame::EndOfTurn, Direction::Downstream) => {
                self.capturing = false;
                let audio = std::mem::take(&mut self.utterance);
                let early = self.early.take();
                if !audio.is_empty() || self.streaming.is_some() || early.is_some() {
                    // Timed from the end of the turn: what the caller waits for.
                    let started = Instant::now();
                    let ready = match early {
                        Some(mut e) => Self::early_transcript(&mut e).await,
                        None => None,
                    };
                    let result = match ready {
                        Some(r) => r,
                        None => self.transcript(audio).await,
                    };
                    match result {
                        Ok(text) => {
                            out.down(Frame::Metric { stage: Stage::Stt, value: started.elapsed() }).await?;
                            if let Some(wait) = self.stt.take_queue_wait().filter(|w| !w.is_zero()) {
                                out.down(Frame::Metric { stage: Stage::QueueWait, value: wait }).await?;
                            }
                            let text = text.trim().to_string();
                            if !text.is_empty() {
                                out.down(Frame::Transcript(Transcript { text, is_final: true })).await?;
                            }
                        }
                        Err(e) => {
                            e.log("transcription");
                            let message = e.to_string();
                            out.up(Frame::Error { code: e.code(), message: message.clone(), fatal: false }).await?;
                            // The turn happened: its record keeps it, without words.
                            out.down(Frame::TranscriptionFailed { code: e.code(), message }).await?;
                        }
                    }
                }
                out.down(Frame::EndOfTurn).await
            }
            (frame, dir) => out.push(frame, dir).await,
        }
    }
}
