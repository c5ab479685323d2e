//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong loading a voice or speaking text.
///
/// Messages name the file involved and, where the cause is a missing or
/// broken model file, the fix (`voxgate models fetch`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder that should be there is not.
    #[error("{what} not found at {path}: run `voxgate models fetch`")]
    Missing { what: &'static str, path: PathBuf },

    /// A file could not be read.
    #[error("could not read {what} {path}: {source}; run `voxgate models fetch`")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The espeak-ng library could not be opened, or is not espeak-ng.
    #[error("{path} is not a usable libespeak-ng: {reason}; run `voxgate models fetch`")]
    EspeakLibrary { path: PathBuf, reason: String },

    /// espeak-ng refused its data folder (wrong version, corrupt files).
    #[error(
        "espeak-ng could not start with the data in {path}: {reason}; run `voxgate models fetch`"
    )]
    EspeakInit { path: PathBuf, reason: String },

    /// espeak-ng holds process-wide state: it is started once, from one folder.
    #[error(
        "espeak-ng is already running in this process from {current}; it cannot be started again from {requested}"
    )]
    EspeakAlreadyInitialized {
        current: PathBuf,
        requested: PathBuf,
    },

    /// espeak-ng does not know the voice that the Piper config asks for.
    #[error("espeak-ng has no voice {voice:?} (error code {code}); check the voice's .onnx.json")]
    EspeakVoice { voice: String, code: i32 },

    /// espeak-ng failed on a piece of text.
    #[error("espeak-ng could not phonemize the text: {0}")]
    Phonemize(String),

    /// The ONNX Runtime library could not be loaded (missing, not ONNX Runtime, too old).
    #[error("could not load ONNX Runtime from {path}: {reason}; run `voxgate models fetch`")]
    OnnxRuntime { path: PathBuf, reason: String },

    /// ONNX Runtime is loaded once per process, from one file.
    #[error(
        "ONNX Runtime is already loaded in this process from {current}; it cannot be loaded again from {requested}"
    )]
    OnnxRuntimeAlreadyLoaded {
        current: PathBuf,
        requested: PathBuf,
    },

    /// The voice's `.onnx.json` is not a valid Piper config.
    #[error("bad Piper voice config {path}: {reason}; run `voxgate models fetch`")]
    Config { path: PathBuf, reason: String },

    /// The voice's `.onnx` could not be loaded as a Piper model.
    #[error("bad Piper voice model {path}: {reason}; run `voxgate models fetch`")]
    Model { path: PathBuf, reason: String },

    /// The model failed while speaking.
    #[error("Piper inference failed: {0}")]
    Inference(String),

    /// [`crate::Piper::synthesize`] speaks one sentence or a short reply; longer text goes through
    /// [`crate::Piper::stream`].
    #[error(
        "text of {len} bytes is too long to synthesize at once (at most {max}); use Piper::stream"
    )]
    TextTooLong { len: usize, max: usize },

    /// Bad [`crate::PiperOptions`].
    #[error("invalid Piper options: {0}")]
    Options(String),
}

/// An error and its causes, as one line ("dlopen failed: <reason>").
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
