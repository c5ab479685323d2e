//! Model paths for the tests. Missing models fail the test (never skip).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use voxgate_piper::{Piper, PiperOptions};

pub struct Paths {
    pub voice: PathBuf,
    pub onnxruntime: PathBuf,
    pub espeak: PathBuf,
}

pub fn paths() -> Paths {
    let paths = Paths {
        voice: voxgate_models::model_dir(voxgate_models::PIPER_VOICE).join("en_US-joe-medium.onnx"),
        onnxruntime: voxgate_models::model_dir(voxgate_models::ONNXRUNTIME)
            .join("libonnxruntime.so"),
        espeak: voxgate_models::model_dir(voxgate_models::ESPEAK_NG),
    };
    for p in [
        &paths.voice,
        &paths.onnxruntime,
        &paths.espeak.join("libespeak-ng.so"),
    ] {
        assert!(
            p.exists(),
            "model file {} is missing: run `voxgate models fetch`",
            p.display()
        );
    }
    paths
}

/// One voice per test process, shared by its tests.
pub fn piper() -> &'static Piper {
    static PIPER: OnceLock<Piper> = OnceLock::new();
    PIPER.get_or_init(|| {
        let p = paths();
        Piper::load(
            &p.voice,
            &p.onnxruntime,
            &p.espeak,
            PiperOptions {
                intra_threads: 2,
                sessions: 2,
            },
        )
        .unwrap_or_else(|e| panic!("loading the voice failed: {e}"))
    })
}

pub fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    (pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
}
