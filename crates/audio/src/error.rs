//! The one error type of the audio layer. Every malformed input that reaches this
//! crate from outside (client bytes, WAV files, configuration) ends here, never in a panic.

use thiserror::Error;

/// Everything that can go wrong in the audio layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AudioError {
    /// PCM16 needs two bytes per sample.
    #[error("PCM16 audio must have an even number of bytes, got {0}")]
    OddByteCount(usize),

    /// A sample rate that the pipeline does not carry.
    #[error("unsupported sample rate {0} Hz: supported rates are 8000, 16000, 24000 and 48000")]
    UnsupportedRate(u32),

    /// A resampler was asked for a rate pair it cannot build a filter for.
    #[error("cannot resample {from} Hz -> {to} Hz: {reason}")]
    ResampleRates {
        from: u32,
        to: u32,
        reason: &'static str,
    },

    /// The bytes are not a WAV file we can read, or the file is cut short.
    #[error("invalid WAV: {0}")]
    Wav(#[from] hound::Error),

    /// A WAV file that parses but that we do not decode (e.g. 0 channels, 12-bit float).
    #[error("unsupported WAV format: {0}")]
    UnsupportedWav(String),

    /// A VAD parameter out of its range.
    #[error("invalid VAD parameter `{name}`: {value} (expected {expected})")]
    VadParam {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },

    /// A voice detector that cannot be driven (frame length of zero).
    #[error("invalid voice detector: {0}")]
    Detector(&'static str),
}

/// The crate's result type.
pub type Result<T, E = AudioError> = std::result::Result<T, E>;
