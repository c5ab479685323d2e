//! Whisper's log-mel front end: 80 Slaney mel bands over a 400-point STFT with a
//! 160-sample hop at 16 kHz, computed like `whisper.audio.log_mel_spectrogram`
//! (centred frames with reflect padding, periodic Hann window, power spectrum,
//! log10, floor at max - 8, then (x + 4) / 4).

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
const N_BINS: usize = N_FFT / 2 + 1;

/// Slaney mel scale, as librosa's `hz_to_mel(htk=False)`.
fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ { min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep } else { hz / F_SP }
}

fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel { MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp() } else { F_SP * mel }
}

/// The `[n_mels][N_FFT / 2 + 1]` filterbank librosa's
/// `filters.mel(sr=16000, n_fft=400, n_mels)` returns (Slaney scale and area norm),
/// which is what Whisper's `mel_filters.npz` holds.
pub fn filters(n_mels: usize) -> Vec<f32> {
    let fmax = SAMPLE_RATE as f64 / 2.0;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(fmax));
    let mel_f: Vec<f64> =
        (0..n_mels + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64)).collect();
    let fft_f: Vec<f64> = (0..N_BINS).map(|k| fmax * k as f64 / (N_BINS - 1) as f64).collect();
    let mut out = vec![0f32; n_mels * N_BINS];
    for m in 0..n_mels {
        let (left, centre, right) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let norm = 2.0 / (right - left);
        for (k, &f) in fft_f.iter().enumerate() {
            let rise = (f - left) / (centre - left);
            let fall = (right - f) / (right - centre);
            out[m * N_BINS + k] = (rise.min(fall).max(0.0) * norm) as f32;
        }
    }
    out
}

/// Computes log-mel spectrograms; built once, shared by threads.
pub struct Mel {
    n_mels: usize,
    filters: Vec<f32>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl Mel {
    pub fn new(n_mels: usize) -> Self {
        let window = (0..N_FFT)
            .map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32)
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Self { n_mels, filters: filters(n_mels), window, fft }
    }

    /// The normalised log-mel of `samples`, `[n_mels][n_frames]` row-major, with
    /// `n_frames = samples.len() / HOP` (as Whisper, which drops the last STFT frame).
    /// Returns no frames for input too short to reflect-pad (under 201 samples).
    pub fn log_mel(&self, samples: &[f32]) -> (Vec<f32>, usize) {
        let pad = N_FFT / 2;
        let n = samples.len();
        if n <= pad {
            return (Vec::new(), 0);
        }
        let n_frames = n / HOP;
        // Centred frames: reflect-pad by N_FFT / 2 on both sides (numpy "reflect": no edge repeat).
        let at = |i: isize| -> f32 {
            let j = if i < 0 {
                (-i) as usize
            } else if i as usize >= n {
                2 * (n - 1) - i as usize
            } else {
                i as usize
            };
            samples[j]
        };
        let mut mel = vec![0f32; self.n_mels * n_frames];
        let mut frame = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; N_BINS];
        for t in 0..n_frames {
            let start = (t * HOP) as isize - pad as isize;
            for (k, x) in frame.iter_mut().enumerate() {
                *x = at(start + k as isize) * self.window[k];
            }
            self.fft
                .process_with_scratch(&mut frame, &mut spec, &mut scratch)
                .expect("buffers come from the plan");
            for (p, c) in power.iter_mut().zip(&spec) {
                *p = c.norm_sqr();
            }
            for m in 0..self.n_mels {
                let row = &self.filters[m * N_BINS..(m + 1) * N_BINS];
                let e: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
                mel[m * n_frames + t] = e.max(1e-10).log10();
            }
        }
        let max = mel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in &mut mel {
            *v = (v.max(max - 8.0) + 4.0) / 4.0;
        }
        (mel, n_frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of Whisper's own `mel_filters.npz` (`mel_80`), copied from the file in
    /// the openai-whisper package, as (mel band, FFT bin, value).
    const REFERENCE: &[(usize, usize, f32)] = &[
        (0, 1, 0.024_862_59),
        (1, 1, 0.001_990_82),
        (1, 2, 0.022_871_77),
        (10, 10, 0.019_908_22),
        (10, 11, 0.004_954_37),
        (40, 42, 0.005_411_10),
        (40, 43, 0.014_735_57),
        (40, 44, 0.006_518_19),
        (79, 186, 0.000_366_74),
        (79, 189, 0.001_765_73),
    ];

    #[test]
    fn filters_match_whisper_reference() {
        let f = filters(80);
        for &(m, k, want) in REFERENCE {
            let got = f[m * N_BINS + k];
            assert!((got - want).abs() < 1e-6, "band {m} bin {k}: {got} vs {want}");
        }
        // Band 0 only touches bin 1; band 40 only bins 42..=44.
        assert_eq!(f[..N_BINS].iter().filter(|&&v| v > 0.0).count(), 1);
        assert_eq!(f[40 * N_BINS..41 * N_BINS].iter().filter(|&&v| v > 0.0).count(), 3);
    }

    #[test]
    fn log_mel_shape_and_range() {
        let mel = Mel::new(80);
        let tone: Vec<f32> =
            (0..16_000).map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin() * 0.5).collect();
        let (m, frames) = mel.log_mel(&tone);
        assert_eq!(frames, 100);
        assert_eq!(m.len(), 80 * 100);
        let max = m.iter().copied().fold(f32::MIN, f32::max);
        let min = m.iter().copied().fold(f32::MAX, f32::min);
        assert!(max - min <= 2.0 + 1e-6, "floor at max - 8 in log10 is 2 after /4");
        // 440 Hz is FFT bin 11 (40 Hz per bin), which bands 10 and 11 cover.
        let loudest = (0..80).max_by(|&a, &b| m[a * 100 + 50].total_cmp(&m[b * 100 + 50])).unwrap();
        assert!((10..=11).contains(&loudest), "loudest band {loudest}");
    }

    #[test]
    fn tiny_input_gives_no_frames() {
        let mel = Mel::new(80);
        assert_eq!(mel.log_mel(&[]).1, 0);
        assert_eq!(mel.log_mel(&[0.1; 200]).1, 0);
        assert_eq!(mel.log_mel(&[0.1; 320]).1, 2);
    }
}
