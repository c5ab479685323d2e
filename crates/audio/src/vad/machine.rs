//! The VAD state machine, between the detector and the turn detector. Audio at the
//! detector's rate arrives in chunks of any length; each full detector frame is scored and
//! judged voiced (confident enough and loud enough) or not, and the state moves:
//!
//! ```text
//!            voiced                 voiced for start_ms
//!   Quiet ----------> Starting ------------------------> Speaking  (SpeechStarted)
//!     ^                  | unvoiced                       |    ^
//!     +------------------+                       unvoiced |    | voiced
//!     |                                                   v    |
//!     +----------------------------------------------- Stopping
//!        unvoiced for stop_ms (SpeechStopped)
//! ```
//!
//! Time is audio time: samples fed so far, so the machine behaves the same in a test fed
//! a file at full speed as in a live call, and needs no clock.

use super::{EarshotDetector, VoiceDetector};
use crate::error::{AudioError, Result};
use crate::pcm::rms;

/// Tuning of the VAD state machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadParams {
    /// Detector score (0..=1) at or above which a frame may count as voiced.
    pub confidence: f32,
    /// Voiced time needed, without an unvoiced frame, before speech has started.
    pub start_ms: u32,
    /// Unvoiced time needed, without a voiced frame, before speech has stopped.
    pub stop_ms: u32,
    /// RMS volume floor (0..=1, see [`crate::pcm::rms`]); quieter frames are unvoiced
    /// whatever the detector says.
    pub min_volume: f32,
}

impl Default for VadParams {
    /// earshot's own suggested threshold (0.5); 200 ms to start, as Pipecat; 300 ms to
    /// stop, short because endpointing (the turn detector) adds its own silence on top;
    /// a volume floor of 0.01 (-40 dBFS), below any speech near a microphone.
    fn default() -> Self {
        Self {
            confidence: 0.5,
            start_ms: 200,
            stop_ms: 300,
            min_volume: 0.01,
        }
    }
}

impl VadParams {
    /// Check every field is in range.
    pub fn validate(&self) -> Result<()> {
        let unit = |name, value: f32| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(AudioError::VadParam {
                    name,
                    value: f64::from(value),
                    expected: "0..=1",
                })
            }
        };
        unit("confidence", self.confidence)?;
        unit("min_volume", self.min_volume)
    }
}

/// Where the machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VadState {
    /// No speech.
    Quiet,
    /// Voiced frames, but fewer than `start_ms` of them so far.
    Starting,
    /// Speech (a `SpeechStarted` was emitted).
    Speaking,
    /// Unvoiced frames after speech, but fewer than `stop_ms` of them so far.
    Stopping,
}

impl VadState {
    /// True between `SpeechStarted` and `SpeechStopped`.
    pub fn is_speaking(self) -> bool {
        matches!(self, Self::Speaking | Self::Stopping)
    }
}

/// A change the turn detector cares about, stamped with audio time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VadEvent {
    /// Speech started; `at_ms` is the audio time of the decision (end of the frame that
    /// completed `start_ms` of voiced audio).
    SpeechStarted { at_ms: u64 },
    /// Speech stopped; `at_ms` is the audio time of the decision (end of the frame that
    /// completed `stop_ms` of unvoiced audio).
    SpeechStopped { at_ms: u64 },
}

/// The VAD state machine over a [`VoiceDetector`], one per audio stream.
#[derive(Debug)]
pub struct VadMachine<D: VoiceDetector = EarshotDetector> {
    detector: D,
    params: VadParams,
    /// `params.start_ms` and `params.stop_ms` in samples at the detector's rate.
    start_samples: u64,
    stop_samples: u64,
    /// The frame being filled; allocated once, `detector.frame_len()` long.
    frame: Box<[i16]>,
    filled: usize,
    state: VadState,
    /// Voiced samples in a row while Starting, unvoiced samples in a row while Stopping.
    run: u64,
    /// Audio clock: samples fed so far.
    fed: u64,
    last_confidence: f32,
    last_volume: f32,
    /// Frames in a row under `min_volume`.
    quiet_frames: u32,
}

/// Frames under the volume floor still scored, so a short dip inside speech keeps
/// the detector's context; past them the detector is skipped (a frame under the
/// floor is never voiced, whatever its score: skipping is what makes a silent
/// caller nearly free) and reset, so speech after the silence meets a fresh one.
const SCORED_QUIET_FRAMES: u32 = 8;

impl VadMachine<EarshotDetector> {
    /// A machine over a fresh [`EarshotDetector`] (16 kHz audio).
    pub fn earshot(params: VadParams) -> Result<Self> {
        Self::new(EarshotDetector::new(), params)
    }
}

impl<D: VoiceDetector> VadMachine<D> {
    /// A machine over `detector`, fed audio at `detector.sample_rate()`.
    pub fn new(detector: D, params: VadParams) -> Result<Self> {
        params.validate()?;
        let frame_len = detector.frame_len();
        if frame_len == 0 {
            return Err(AudioError::Detector("frame length is 0"));
        }
        let mut machine = Self {
            detector,
            params,
            start_samples: 0,
            stop_samples: 0,
            frame: vec![0; frame_len].into_boxed_slice(),
            filled: 0,
            state: VadState::Quiet,
            run: 0,
            fed: 0,
            last_confidence: 0.0,
            last_volume: 0.0,
            quiet_frames: 0,
        };
        machine.set_params(params)?;
        Ok(machine)
    }

    /// Change the tuning mid-stream; the state and clock are kept.
    pub fn set_params(&mut self, params: VadParams) -> Result<()> {
        params.validate()?;
        let per_ms = u64::from(self.detector.sample_rate().hz()) / 1000;
        self.start_samples = u64::from(params.start_ms) * per_ms;
        self.stop_samples = u64::from(params.stop_ms) * per_ms;
        self.params = params;
        Ok(())
    }

    /// The current tuning.
    pub fn params(&self) -> VadParams {
        self.params
    }

    /// The current state.
    pub fn state(&self) -> VadState {
        self.state
    }

    /// Audio time fed so far, in milliseconds.
    pub fn audio_ms(&self) -> u64 {
        self.detector.sample_rate().ms_for_samples(self.fed)
    }

    /// Detector score of the last full frame.
    pub fn last_confidence(&self) -> f32 {
        self.last_confidence
    }

    /// RMS volume of the last full frame.
    pub fn last_volume(&self) -> f32 {
        self.last_volume
    }

    /// Heap bytes held by the machine itself (the frame buffer; not the detector's).
    pub fn heap_bytes(&self) -> usize {
        self.frame.len() * size_of::<i16>()
    }

    /// The detector.
    pub fn detector(&self) -> &D {
        &self.detector
    }

    /// Feed audio of any length at the detector's rate; events are appended to `events`.
    pub fn push(&mut self, mut audio: &[i16], events: &mut Vec<VadEvent>) {
        while !audio.is_empty() {
            let n = (self.frame.len() - self.filled).min(audio.len());
            self.frame[self.filled..self.filled + n].copy_from_slice(&audio[..n]);
            self.filled += n;
            self.fed += n as u64;
            audio = &audio[n..];
            if self.filled == self.frame.len() {
                self.filled = 0;
                if let Some(event) = self.step() {
                    events.push(event);
                }
            }
        }
    }

    /// Forget the stream: back to Quiet, clock at zero, detector reset.
    pub fn reset(&mut self) {
        self.detector.reset();
        self.filled = 0;
        self.state = VadState::Quiet;
        self.run = 0;
        self.fed = 0;
        self.last_confidence = 0.0;
        self.last_volume = 0.0;
        self.quiet_frames = 0;
    }

    /// Judge the full frame and move the state.
    fn step(&mut self) -> Option<VadEvent> {
        let volume = rms(&self.frame);
        let confidence = if volume >= self.params.min_volume {
            self.quiet_frames = 0;
            self.detector.confidence(&self.frame)
        } else {
            self.quiet_frames = self.quiet_frames.saturating_add(1);
            if self.quiet_frames <= SCORED_QUIET_FRAMES {
                self.detector.confidence(&self.frame)
            } else {
                if self.quiet_frames == SCORED_QUIET_FRAMES + 1 {
                    self.detector.reset();
                }
                0.0
            }
        };
        self.last_confidence = confidence;
        self.last_volume = volume;
        let voiced = confidence >= self.params.confidence && volume >= self.params.min_volume;
        let len = self.frame.len() as u64;
        let at_ms = self.detector.sample_rate().ms_for_samples(self.fed);
        match (self.state, voiced) {
            (VadState::Quiet, true) | (VadState::Starting, true) => {
                self.run = if self.state == VadState::Quiet {
                    len
                } else {
                    self.run + len
                };
                if self.run >= self.start_samples {
                    self.state = VadState::Speaking;
                    self.run = 0;
                    return Some(VadEvent::SpeechStarted { at_ms });
                }
                self.state = VadState::Starting;
            }
            (VadState::Starting, false) => {
                self.state = VadState::Quiet;
                self.run = 0;
            }
            (VadState::Speaking, false) | (VadState::Stopping, false) => {
                self.run = if self.state == VadState::Speaking {
                    len
                } else {
                    self.run + len
                };
                if self.run >= self.stop_samples {
                    self.state = VadState::Quiet;
                    self.run = 0;
                    return Some(VadEvent::SpeechStopped { at_ms });
                }
                self.state = VadState::Stopping;
            }
            (VadState::Stopping, true) => {
                self.state = VadState::Speaking;
                self.run = 0;
            }
            (VadState::Quiet, false) | (VadState::Speaking, true) => {}
        }
        None
    }
}
