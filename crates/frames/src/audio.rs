//! Audio as it moves between stages: mono PCM16 samples with their rate. Codecs,
//! resampling and VAD live in `voxgate-audio`; this is only the carrier.

use std::sync::Arc;
use std::time::Duration;

/// A chunk of mono PCM16 audio. Samples are shared, so fanning a frame out (to the
/// recorder and the STT, say) does not copy it.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    pub samples: Arc<[i16]>,
    pub rate: u32,
}

impl AudioFrame {
    pub fn new(samples: impl Into<Arc<[i16]>>, rate: u32) -> AudioFrame {
        AudioFrame { samples: samples.into(), rate }
    }

    /// `ms` milliseconds of silence.
    pub fn silence(rate: u32, ms: u32) -> AudioFrame {
        AudioFrame::new(vec![0i16; (rate as usize * ms as usize) / 1000], rate)
    }

    /// How long the frame plays.
    pub fn duration(&self) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.samples.len() as u64 * 1_000_000_000 / self.rate as u64)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(AudioFrame::silence(16_000, 20).duration(), Duration::from_millis(20));
        assert_eq!(AudioFrame::silence(8_000, 20).len(), 160);
        assert_eq!(AudioFrame::new(vec![1i16; 10], 0).duration(), Duration::ZERO);
    }
}
