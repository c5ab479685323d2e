//! The audio layer of the voice pipeline. Audio arrives from the transport as PCM16
//! (or mu-law) bytes, is decoded and resampled here to the rate the VAD and STT want,
//! and the VAD state machine turns it into speech-started / speech-stopped events for
//! the turn detector. On the way out, TTS audio is resampled and encoded here for the
//! transport. WAV files (for `voxgate call`, recordings and tests) are read and written
//! here too. Nothing in this crate does I/O beyond WAV files, nor knows about frames,
//! channels or tasks: it is plain, synchronous sample processing.
//!
//! # Layout
//!
//! - [`error`]: [`AudioError`], the one error type of the crate.
//! - [`pcm`]: [`SampleRate`], PCM16 little-endian bytes <-> `i16`, `i16` <-> `f32`, RMS volume,
//!   20 ms frame sizes.
//! - [`mulaw`]: G.711 mu-law encode and decode.
//! - [`resample`]: [`Resampler`], a streaming polyphase FIR resampler that keeps its state
//!   across chunks.
//! - [`wav`]: read any common WAV into mono `i16`, write mono PCM16 WAV.
//! - [`vad`]: the [`VoiceDetector`] trait, [`EarshotDetector`], and [`VadMachine`], the
//!   quiet / starting / speaking / stopping state machine.

pub mod error;
pub mod mulaw;
pub mod pcm;
pub mod resample;
pub mod vad;
pub mod wav;

pub use error::AudioError;
pub use pcm::SampleRate;
pub use resample::Resampler;
pub use vad::{EarshotDetector, VadEvent, VadMachine, VadParams, VadState, VoiceDetector};
pub use wav::WavAudio;
