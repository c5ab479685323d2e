//! Voice activity detection: the step after decoding and resampling to 16 kHz, before the
//! turn detector. A [`VoiceDetector`] scores fixed-size frames (how likely each is speech);
//! [`VadMachine`] buffers audio of any chunk length into those frames and turns the scores
//! into `SpeechStarted` / `SpeechStopped` events through an explicit quiet / starting /
//! speaking / stopping state machine. The events feed endpointing and barge-in.
//!
//! - [`earshot`]: [`EarshotDetector`], the default detector.
//! - [`machine`]: [`VadMachine`], [`VadParams`], [`VadState`], [`VadEvent`].

pub mod earshot;
pub mod machine;

pub use self::earshot::EarshotDetector;
pub use self::machine::{VadEvent, VadMachine, VadParams, VadState};

use crate::pcm::SampleRate;

/// Something that scores frames of audio for speech, frame by frame, keeping state
/// between frames (one instance per audio stream).
pub trait VoiceDetector: Send {
    /// Samples per frame that [`confidence`](Self::confidence) expects.
    fn frame_len(&self) -> usize;

    /// Rate of the audio it expects.
    fn sample_rate(&self) -> SampleRate;

    /// Speech probability of the next frame, in 0..=1. A frame of the wrong length scores 0.
    fn confidence(&mut self, frame: &[i16]) -> f32;

    /// Forget the stream, as if newly built.
    fn reset(&mut self);
}
