#![allow(dead_code)]

use std::path::PathBuf;

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The SmolLM2 GGUF in the models folder; panics (fails the test) when missing.
pub fn model_path() -> PathBuf {
    let path = voxgate_models::model_dir(voxgate_models::SMOLLM2).join(MODEL_FILE);
    assert!(path.is_file(), "{} is missing: run `voxgate models fetch`", path.display());
    path
}
