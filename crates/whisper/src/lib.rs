//! Local speech-to-text with Whisper tiny.en.
//!
//! The weights come from a CTranslate2 `model.bin` (read by [`ct2`]), are renamed
//! into candle's Whisper layout and widened to f32, and run on the CPU with
//! `candle-transformers`. The encoder sees only the audio plus a little silence
//! rather than Whisper's usual 30-second window (see [`Window`]), which is what makes
//! a short utterance fast. Decoding is greedy, without timestamps.
//!
//! ```no_run
//! # fn main() -> Result<(), voxgate_whisper::Error> {
//! let whisper = voxgate_whisper::Whisper::load(std::path::Path::new("/models/whisper-tiny.en"))?;
//! let text = whisper.transcribe(&vec![0.0f32; 16_000])?;
//! # Ok(()) }
//! ```

pub mod ct2;
mod convert;
mod decode;
mod decoder;
mod error;
pub mod mel;
/// Public for the fuzz targets (`fuzz/`); the loader is its only user here.
pub mod vocab;

pub use decode::{Window, MAX_AUDIO_SECONDS};
pub use error::Error;

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::model;

use crate::decode::Tokens;
use crate::decoder::Decoder;
use crate::mel::Mel;
use crate::vocab::Vocab;

/// A loaded Whisper model. Load it once per process and share it (`&Whisper` or
/// `Arc<Whisper>`) between threads: it is `Send + Sync`, [`Whisper::transcribe`] takes
/// `&self`, and calls may run at the same time. Each call clones candle's encoder
/// (reference-counted tensors, no weight copies) and keeps its own decoder cache.
pub struct Whisper {
    /// candle's model; only its encoder runs.
    model: model::Whisper,
    decoder: Decoder,
    mel: Mel,
    vocab: Vocab,
    tokens: Tokens,
}

impl std::fmt::Debug for Whisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whisper").field("config", &self.model.config).finish_non_exhaustive()
    }
}

impl Whisper {
    /// Loads `model.bin`, `config.json` and `vocabulary.txt` from `dir` (a CTranslate2
    /// conversion of an English-only Whisper model such as tiny.en).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let bin = dir.join("model.bin");
        let ct2 = ct2::Model::read(&bin)?;
        let (config, tensors) = convert::to_candle(&ct2, &bin)?;
        drop(ct2);
        let vocab_path = dir.join("vocabulary.txt");
        let vocab = Vocab::read(&vocab_path)?;
        if vocab.len() != config.vocab_size {
            return Err(Error::Vocabulary {
                path: vocab_path,
                reason: format!("it has {} tokens, the model {}", vocab.len(), config.vocab_size),
            });
        }
        let tokens = Tokens::new(&vocab, &vocab_path, &dir.join("config.json"), config.vocab_size)?;
        let bad = |e: candle_core::Error| Error::Model { path: bin.clone(), reason: e.to_string() };
        let decoder =
            Decoder::new(&tensors, config.decoder_layers, config.decoder_attention_heads).map_err(bad)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = model::Whisper::load(&vb, config).map_err(bad)?;
        let mel = Mel::new(model.config.num_mel_bins);
        Ok(Self { model, decoder, mel, vocab, tokens })
    }

    /// Transcribes mono 16 kHz audio (samples in [-1, 1]) with the default [`Window`].
    ///
    /// Returns an empty string for empty, very short (under 0.1 s) or silent audio.
    /// NaN is read as 0 and samples outside [-1, 1] are clipped. Audio over 30 s is
    /// transcribed in pieces of at most 30 s cut at quiet points, joined by spaces;
    /// audio over [`MAX_AUDIO_SECONDS`] is refused with [`Error::AudioTooLong`].
    pub fn transcribe(&self, pcm_16k: &[f32]) -> Result<String, Error> {
        self.transcribe_with(pcm_16k, Window::default())
    }

    /// [`Whisper::transcribe`] with a chosen encoder window ([`Window::Full`] is the
    /// 30-second window Whisper normally uses; slower, kept for comparison).
    pub fn transcribe_with(&self, pcm_16k: &[f32], window: Window) -> Result<String, Error> {
        decode::transcribe(self, pcm_16k, window)
    }
}

const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Whisper>();
};
