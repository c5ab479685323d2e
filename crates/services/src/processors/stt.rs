//! The speech-to-text stage: keeps a short pre-roll of the caller's audio, captures
//! the utterance from `UserStartedSpeaking` to `EndOfTurn`, transcribes it, and
//! sends the transcript ahead of the `EndOfTurn` it belongs to.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use voxgate_frames::{Direction, Frame, Stage, Transcript};
use voxgate_pipeline::{Outlet, PipelineError, Processor};

use crate::stt::Stt;

/// Audio kept from before the VAD decided speech started (it decides late by design).
const PREROLL: Duration = Duration::from_millis(300);
/// The longest utterance kept; beyond it audio is dropped (bounded memory per call).
const MAX_UTTERANCE: Duration = Duration::from_secs(60);

pub struct SttStage {
    stt: Arc<dyn Stt>,
    rate: u32,
    preroll: VecDeque<i16>,
    utterance: Vec<i16>,
    capturing: bool,
}

impl SttStage {
    /// `rate` is the pipeline's input rate (16 kHz).
    pub fn new(stt: Arc<dyn Stt>, rate: u32) -> SttStage {
        SttStage { stt, rate, preroll: VecDeque::new(), utterance: Vec::new(), capturing: false }
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
                    self.utterance.extend_from_slice(&a.samples[..a.samples.len().min(room)]);
                } else {
                    let keep = self.samples(PREROLL);
                    self.preroll.extend(a.samples.iter().copied());
                    let excess = self.preroll.len().saturating_sub(keep);
                    self.preroll.drain(..excess);
                }
                Ok(())
            }
            (Frame::UserStartedSpeaking, Direction::Downstream) => {
                if !self.capturing {
                    self.capturing = true;
                    self.utterance.clear();
                    self.utterance.extend(self.preroll.drain(..));
                }
                out.down(Frame::UserStartedSpeaking).await
            }
            (Frame::EndOfTurn, Direction::Downstream) => {
                self.capturing = false;
                let audio = std::mem::take(&mut self.utterance);
                if !audio.is_empty() {
                    let started = Instant::now();
                    match self.stt.transcribe(audio, self.rate).await {
                        Ok(text) => {
                            out.down(Frame::Metric { stage: Stage::Stt, value: started.elapsed() }).await?;
                            let text = text.trim().to_string();
                            if !text.is_empty() {
                                out.down(Frame::Transcript(Transcript { text, is_final: true })).await?;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "transcription failed");
                            out.up(Frame::Error { message: e.to_string(), fatal: false }).await?;
                        }
                    }
                }
                out.down(Frame::EndOfTurn).await
            }
            (frame, dir) => out.push(frame, dir).await,
        }
    }
}
