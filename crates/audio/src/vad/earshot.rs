//! The default [`VoiceDetector`]: the `earshot` crate, a small pure-Rust neural VAD
//! (16 kHz, 256-sample frames). Its weights are a static in the binary, so each call
//! holds only the detector's ~8 KiB of state, boxed so moving it is cheap.

use super::VoiceDetector;
use crate::pcm::SampleRate;

/// Samples per earshot frame (16 ms at 16 kHz).
pub const EARSHOT_FRAME: usize = 256;

/// [`VoiceDetector`] over `earshot::Detector`.
pub struct EarshotDetector {
    inner: Box<earshot::Detector>,
}

impl EarshotDetector {
    /// A fresh detector.
    pub fn new() -> Self {
        Self {
            inner: earshot::Detector::default_boxed(),
        }
    }

    /// Heap bytes held by this detector.
    pub fn heap_bytes(&self) -> usize {
        size_of::<earshot::Detector>()
    }
}

impl Default for EarshotDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EarshotDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarshotDetector").finish_non_exhaustive()
    }
}

impl VoiceDetector for EarshotDetector {
    fn frame_len(&self) -> usize {
        EARSHOT_FRAME
    }

    fn sample_rate(&self) -> SampleRate {
        SampleRate::Hz16000
    }

    fn confidence(&mut self, frame: &[i16]) -> f32 {
        // earshot debug-asserts the length; never hand it anything else.
        if frame.len() != EARSHOT_FRAME {
            return 0.0;
        }
        self.inner.predict_i16(frame).clamp(0.0, 1.0)
    }

    fn reset(&mut self) {
        self.inner.reset();
    }
}
