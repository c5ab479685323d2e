use std::path::PathBuf;

use crate::ct2::Ct2Error;

/// Everything that can go wrong loading the model or transcribing.
///
/// Messages name the file involved and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file could not be opened or read.
    #[error("cannot read {path}: {source}; check the path, or run `voxgate models fetch`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `model.bin` is not a well-formed CTranslate2 file.
    #[error("{path} is not a usable CTranslate2 model: {source}; run `voxgate models fetch` to replace it")]
    Ct2 {
        path: PathBuf,
        #[source]
        source: Ct2Error,
    },
    /// `model.bin` parsed, but it does not hold a Whisper model this crate can run.
    #[error("{path} does not hold a usable Whisper model: {reason}; run `voxgate models fetch` to replace it")]
    Model { path: PathBuf, reason: String },
    /// `config.json` is missing fields or holds wrong values.
    #[error("{path} is not a valid Whisper config: {reason}; run `voxgate models fetch` to replace it")]
    Config { path: PathBuf, reason: String },
    /// `vocabulary.txt` does not match the model.
    #[error("{path} is not a valid Whisper vocabulary: {reason}; run `voxgate models fetch` to replace it")]
    Vocabulary { path: PathBuf, reason: String },
    /// The audio is longer than [`crate::MAX_AUDIO_SECONDS`].
    #[error("the audio is {seconds:.1} s long, over the {max} s limit; split it into shorter pieces before transcribing")]
    AudioTooLong { seconds: f64, max: u32 },
    /// The tensor library failed while running the model (out of memory, for instance).
    #[error("Whisper inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}
