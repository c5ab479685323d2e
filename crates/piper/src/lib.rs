//! Local text-to-speech: a [Piper](https://github.com/rhasspy/piper) VITS voice
//! run through ONNX Runtime, with phonemes from espeak-ng. Both native
//! libraries are loaded at run time from the models folder (`voxgate models
//! fetch` provides them); nothing is linked at build time.
//!
//! ```no_run
//! # use std::path::Path;
//! # fn main() -> Result<(), voxgate_piper::Error> {
//! use voxgate_piper::{Chunking, Piper, PiperOptions};
//! let piper = Piper::load(
//!     Path::new("models/piper-joe-medium/en_US-joe-medium.onnx"),
//!     Path::new("models/onnxruntime/libonnxruntime.so"),
//!     Path::new("models/espeak-ng"),
//!     PiperOptions::default(),
//! )?;
//! let pcm: Vec<i16> = piper.synthesize("The capital of France is Paris.")?;
//! for chunk in piper.stream("Sure. Your table is booked for eight.", Chunking::Sentence) {
//!     let pcm = chunk?; // play each sentence as soon as it is ready
//! #   let _ = pcm;
//! }
//! # let _ = pcm;
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
pub mod espeak;
mod text;
mod voice;

use std::path::{Path, PathBuf};

pub use config::VoiceConfig;
pub use error::Error;
use espeak::Espeak;

/// The longest text [`Piper::synthesize`] takes, in bytes; longer text goes through [`Piper::stream`].
pub const MAX_SYNTHESIZE_BYTES: usize = 4096;

/// Silence put between sentences by [`Piper::synthesize`], as Piper does.
const SENTENCE_SILENCE_SECONDS: f32 = 0.2;

/// How [`Piper::load`] sets up inference.
#[derive(Clone, Debug)]
pub struct PiperOptions {
    /// Threads ONNX Runtime uses inside one inference (intra-op). Default 1.
    pub intra_threads: usize,
    /// Sessions kept loaded, i.e. how many inferences can run at the same
    /// time; more callers wait. Each costs the model's memory again. Default 1.
    pub sessions: usize,
}

impl Default for PiperOptions {
    fn default() -> Self {
        PiperOptions {
            intra_threads: 1,
            sessions: 1,
        }
    }
}

/// How [`Piper::stream`] cuts text into pieces of audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// One piece per sentence (ends at `.`, `?`, `!`): Piper's own unit, best prosody.
    Sentence,
    /// One piece per clause (also ends at `,`, `;`, `:`): the first audio comes sooner.
    Clause,
}

/// A loaded Piper voice. Load once per process and share it (`Send + Sync`,
/// every call takes `&self`); calls beyond [`PiperOptions::sessions`] wait for
/// a free session, and espeak-ng is serialised process-wide.
pub struct Piper {
    espeak: Espeak,
    config: VoiceConfig,
    model: voice::Model,
}

impl Piper {
    /// Loads the voice `voice_onnx` (with its config `<voice_onnx>.json` beside
    /// it), the ONNX Runtime library `onnxruntime_lib`, and espeak-ng from
    /// `espeak_dir` (the folder holding `libespeak-ng.so` and `espeak-ng-data/`).
    ///
    /// ONNX Runtime and espeak-ng are loaded once per process: later loads must
    /// name the same library file and folder, or they fail.
    pub fn load(
        voice_onnx: &Path,
        onnxruntime_lib: &Path,
        espeak_dir: &Path,
        options: PiperOptions,
    ) -> Result<Piper, Error> {
        if !(1..=64).contains(&options.intra_threads) {
            return Err(Error::Options(format!(
                "intra_threads must be 1 to 64, not {}",
                options.intra_threads
            )));
        }
        if !(1..=16).contains(&options.sessions) {
            return Err(Error::Options(format!(
                "sessions must be 1 to 16, not {}",
                options.sessions
            )));
        }
        if !voice_onnx.is_file() {
            return Err(Error::Missing {
                what: "the Piper voice model",
                path: voice_onnx.to_path_buf(),
            });
        }
        let mut config_path = PathBuf::from(voice_onnx).into_os_string();
        config_path.push(".json");
        let config = VoiceConfig::load(Path::new(&config_path))?;
        let espeak = Espeak::load(espeak_dir)?;
        // Fail now, not on the first sentence, if espeak-ng lacks the voice.
        espeak
            .clauses("a", &config.espeak_voice)?
            .next()
            .transpose()?;
        let model = voice::Model::load(
            voice_onnx,
            onnxruntime_lib,
            &config,
            options.sessions,
            options.intra_threads,
        )?;
        Ok(Piper {
            espeak,
            config,
            model,
        })
    }

    /// Output sample rate in Hz (22,050 for medium voices). Audio is mono PCM16.
    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// The voice's validated config.
    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    /// Speaks `text` (a sentence or a short reply, at most
    /// [`MAX_SYNTHESIZE_BYTES`]) and returns all of its audio. Sentences are
    /// joined with 0.2 s of silence. Text with nothing to say (empty, only
    /// punctuation) gives empty audio.
    pub fn synthesize(&self, text: &str) -> Result<Vec<i16>, Error> {
        if text.len() > MAX_SYNTHESIZE_BYTES {
            return Err(Error::TextTooLong {
                len: text.len(),
                max: MAX_SYNTHESIZE_BYTES,
            });
        }
        let gap = (self.config.sample_rate as f32 * SENTENCE_SILENCE_SECONDS) as usize;
        let mut audio = Vec::new();
        for chunk in self.stream(text, Chunking::Sentence) {
            let chunk = chunk?;
            if !audio.is_empty() {
                audio.resize(audio.len() + gap, 0);
            }
            audio.extend_from_slice(&chunk);
        }
        Ok(audio)
    }

    /// Speaks `text` of any length piece by piece: each item is the audio of
    /// the next sentence (or clause), phonemized and synthesized only when
    /// asked for, so the first audio is ready after the first piece alone.
    pub fn stream(&self, text: &str, chunking: Chunking) -> Speech<'_> {
        let utterances = self
            .espeak
            .clauses(text, &self.config.espeak_voice)
            .map(|c| text::Utterances::new(c, chunking));
        match utterances {
            Ok(u) => Speech {
                piper: self,
                utterances: Some(u),
                error: None,
            },
            Err(e) => Speech {
                piper: self,
                utterances: None,
                error: Some(e),
            },
        }
    }

    /// The IPA phonemes of each utterance of `text`, as the model will get them.
    pub fn phonemes(&self, text: &str, chunking: Chunking) -> Result<Vec<String>, Error> {
        text::Utterances::new(
            self.espeak.clauses(text, &self.config.espeak_voice)?,
            chunking,
        )
        .collect()
    }

    fn speak(&self, phonemes: &str) -> Result<Vec<i16>, Error> {
        let ids = self.config.ids(phonemes);
        let audio = self.model.infer(ids)?;
        Ok(voice::to_pcm16(&audio))
    }
}

/// Audio of a text, one sentence or clause at a time; see [`Piper::stream`].
/// Ends after the first error.
pub struct Speech<'a> {
    piper: &'a Piper,
    utterances: Option<text::Utterances>,
    error: Option<Error>,
}

impl Iterator for Speech<'_> {
    type Item = Result<Vec<i16>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let result = match self.utterances.as_mut()?.next()? {
            Ok(phonemes) => self.piper.speak(&phonemes),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.utterances = None;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piper_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Piper>();
        check::<Espeak>();
    }
}
