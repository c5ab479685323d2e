//! Rate conversion between the transport and the pipeline: a browser sends 48 kHz, the
//! VAD and STT want 16 kHz, TTS speaks at 24 kHz, telephony runs at 8 kHz. One
//! [`Resampler`] sits on each such edge of a call and is fed 20 ms chunks (or any length)
//! as they arrive, keeping the filter history across chunks so the stream is seamless.
//!
//! # Why not `rubato`
//!
//! rubato 5.1 was the first choice and was read closely. Its synchronous `Fft` resampler
//! wants fixed-size chunks and delays the signal by half its FFT block (10 ms for a 20 ms
//! block at 16 -> 48 kHz), and plans its FFTs per instance; its `Async` sinc resampler
//! keeps a `sinc_len x oversampling` table per instance (128 KiB at the defaults), and its
//! polynomial mode has no anti-aliasing filter. Every pair of pipeline rates is a ratio of
//! small integers (at most 6:1), which is the textbook case for an exact polyphase FIR:
//! here it is one short file, delays the signal by ~1 ms, takes chunks of any length, shares
//! one coefficient table per rate pair across all calls (at most ~1 KiB each), and keeps
//! only its filter history (~32 samples) plus one chunk of scratch per instance.
//!
//! # The filter
//!
//! Conceptually the input is upsampled by `L` (zeros between samples), low-pass filtered
//! at `L * from` Hz, and every `M`-th sample is kept, with `L / M = to / from` in lowest
//! terms. The polyphase form computes only the kept samples: output `m` sits at time
//! `m * M` on the upsampled grid, which is input sample `i = m * M / L` and phase
//! `p = m * M % L`, and is the dot product of sub-filter `p` (every `L`-th tap) with the
//! last `K` input samples. The low-pass is a Kaiser-windowed sinc spanning 16 zero
//! crossings either side at the lower rate, cut off at 90% of the lower Nyquist: ~72 dB
//! stopband, flat to ~0.75 of Nyquist (6 kHz at 16 kHz), plenty for speech.

use std::sync::{Arc, OnceLock};

use crate::error::{AudioError, Result};
use crate::pcm::SampleRate;

/// Zero crossings of the sinc on each side, counted at the lower of the two rates.
const ZERO_CROSSINGS: usize = 16;
/// Cutoff as a fraction of the lower rate's Nyquist frequency.
const ROLLOFF: f64 = 0.9;
/// Kaiser window shape: ~72 dB stopband attenuation.
const KAISER_BETA: f64 = 7.0;
/// Largest coefficient table we build for an arbitrary rate pair (4 MiB of f32).
const MAX_COEFFS: usize = 1 << 20;

/// A streaming resampler from one rate to another, mono, `i16` in and out.
///
/// Feed chunks of any length with [`process`](Self::process); the output is the same,
/// sample for sample, however the input is split. The output is delayed by
/// [`delay`](Self::delay) output samples (about 1 ms); [`flush`](Self::flush) pushes the
/// last input through at the end of a stream.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// Upsampling factor `L` (the output rate over the gcd).
    up: usize,
    /// Downsampling factor `M` (the input rate over the gcd).
    down: usize,
    /// Taps per phase `K`; 0 when the rates are equal (pass-through).
    taps: usize,
    /// `up` sub-filters of `taps` coefficients each, time-reversed so that each output is a
    /// forward dot product over the input. Shared by every resampler of the same pair.
    filter: Arc<[f32]>,
    /// The last `taps - 1` input samples (the history), then the chunk being processed,
    /// kept at `i16` scale. Its capacity grows to the largest chunk once, then is reused.
    buf: Vec<f32>,
    /// Index of the newest input sample of the next output, relative to the next chunk.
    next_in: usize,
    /// Phase of the next output, in `0..up`.
    phase: usize,
}

impl Resampler {
    /// A resampler between two pipeline rates; its filter is built once per process and shared.
    pub fn new(from: SampleRate, to: SampleRate) -> Self {
        static SHARED: [OnceLock<Arc<[f32]>>; 16] = [const { OnceLock::new() }; 16];
        let index = |r: SampleRate| SampleRate::ALL.iter().position(|&x| x == r).unwrap_or(0);
        let slot = &SHARED[index(from) * 4 + index(to)];
        let (from, to) = (from.hz(), to.hz());
        let (up, down, taps) = Self::shape(from, to);
        let filter = slot
            .get_or_init(|| design(up, taps, from, to).into())
            .clone();
        Self::with_filter(from, to, up, down, taps, filter)
    }

    /// A resampler between any two rates from 1 kHz to 384 kHz (e.g. 22050 -> 16000 for a
    /// WAV file). The filter is built for this instance; prefer [`new`](Self::new) on hot paths.
    pub fn with_rates(from: u32, to: u32) -> Result<Self> {
        let err = |reason| AudioError::ResampleRates { from, to, reason };
        if !(1000..=384_000).contains(&from) || !(1000..=384_000).contains(&to) {
            return Err(err("rates must be between 1000 and 384000 Hz"));
        }
        let (up, down, taps) = Self::shape(from, to);
        if up.saturating_mul(taps) > MAX_COEFFS {
            return Err(err("the rates are too far from a simple ratio"));
        }
        let filter = design(up, taps, from, to).into();
        Ok(Self::with_filter(from, to, up, down, taps, filter))
    }

    fn shape(from: u32, to: u32) -> (usize, usize, usize) {
        let g = gcd(from, to);
        let (up, down) = ((to / g) as usize, (from / g) as usize);
        if from == to {
            return (1, 1, 0);
        }
        // The filter spans 2 * ZERO_CROSSINGS periods of the lower rate, in input samples.
        let low = from.min(to) as usize;
        let taps = (2 * ZERO_CROSSINGS * from as usize).div_ceil(low);
        (up, down, taps)
    }

    fn with_filter(
        from: u32,
        to: u32,
        up: usize,
        down: usize,
        taps: usize,
        filter: Arc<[f32]>,
    ) -> Self {
        let history = taps.saturating_sub(1);
        // Grows to history + the largest chunk on first use, then is reused.
        let buf = vec![0.0; history];
        Self {
            from,
            to,
            up,
            down,
            taps,
            filter,
            buf,
            next_in: 0,
            phase: 0,
        }
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to
    }

    /// Group delay of the filter in output samples (0 when the rates are equal).
    pub fn delay(&self) -> f64 {
        if self.taps == 0 {
            return 0.0;
        }
        (self.taps * self.up - 1) as f64 / (2 * self.down) as f64
    }

    /// The most samples one call to [`process`](Self::process) with `input_len` samples can append.
    pub fn max_output_len(&self, input_len: usize) -> usize {
        (input_len * self.up).div_ceil(self.down) + 1
    }

    /// Heap bytes held by this instance alone (not the shared filter).
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity() * size_of::<f32>()
    }

    /// Heap bytes of the coefficient table, shared by every resampler of this rate pair.
    pub fn filter_bytes(&self) -> usize {
        self.filter.len() * size_of::<f32>()
    }

    /// Resample a chunk, appending the output to `out`. Does not allocate once `buf` and
    /// `out` have grown to the chunk size.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.taps == 0 {
            out.extend_from_slice(input);
            return;
        }
        self.buf.extend(input.iter().map(|&s| f32::from(s)));
        self.run(out);
    }

    /// End of stream: push the last input through the filter, append the tail to `out`,
    /// and reset for a new stream.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        if self.taps == 0 {
            return;
        }
        // Half the filter of silence brings the last input sample to the filter's centre.
        let zeros = self.taps / 2 + 1;
        self.buf.resize(self.buf.len() + zeros, 0.0);
        self.run(out);
        self.reset();
    }

    /// Forget the stream: clear the history, as if newly built.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(self.taps.saturating_sub(1), 0.0);
        self.next_in = 0;
        self.phase = 0;
    }

    /// Compute every output whose newest input sample is in `buf`, then keep the history.
    /// Built twice: for AVX2 (chosen at run time, on a CPU that has it) and the baseline;
    /// the same operations in the same order (Rust never fuses a multiply and an add), so
    /// the same output to the bit.
    fn run(&mut self, out: &mut Vec<i16>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { self.run_avx2(out) };
            return;
        }
        self.run_inline(out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2(&mut self, out: &mut Vec<i16>) {
        self.run_inline(out);
    }

    #[inline(always)]
    fn run_inline(&mut self, out: &mut Vec<i16>) {
        let (taps, up) = (self.taps, self.up);
        // Each output advances `down` steps on the upsampled grid: `step` whole input
        // samples plus `carry` phases. Precomputed, so the loop has no division.
        let (step, carry) = (self.down / up, self.down % up);
        let history = taps - 1;
        let fresh = self.buf.len() - history;
        out.reserve(self.max_output_len(fresh));
        let (buf, filter) = (&self.buf[..], &self.filter[..]);
        let (mut i, mut p) = (self.next_in, self.phase);
        while i < fresh {
            let v = dot(&filter[p * taps..(p + 1) * taps], &buf[i..i + taps]);
            // Round half away from zero; `as` saturates, so overshoot clips, never wraps.
            out.push((v + 0.5f32.copysign(v)) as i16);
            i += step;
            p += carry;
            if p >= up {
                p -= up;
                i += 1;
            }
        }
        self.next_in = i - fresh;
        self.phase = p;
        self.buf.copy_within(fresh.., 0);
        self.buf.truncate(history);
    }
}

/// Resample a whole clip at once, with the filter delay trimmed so the output lines up
/// with the input and has `len * to / from` samples (rounded).
pub fn resample_all(from: u32, to: u32, input: &[i16]) -> Result<Vec<i16>> {
    let mut r = match (SampleRate::try_from(from), SampleRate::try_from(to)) {
        (Ok(f), Ok(t)) => Resampler::new(f, t),
        _ => Resampler::with_rates(from, to)?,
    };
    let want = (input.len() as u64 * u64::from(to) + u64::from(from) / 2) / u64::from(from);
    let mut out = Vec::with_capacity(r.max_output_len(input.len()) + r.taps * r.up / r.down + 2);
    r.process(input, &mut out);
    r.flush(&mut out);
    let skip = (r.delay().round() as usize).min(out.len());
    out.drain(..skip);
    out.resize(want as usize, 0);
    Ok(out)
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it
/// (it may not reorder a single floating-point sum). Same order for every call, so the
/// output does not depend on how the input was chunked.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// Build the `up` time-reversed sub-filters of `taps` coefficients for `from` -> `to`.
fn design(up: usize, taps: usize, from: u32, to: u32) -> Vec<f32> {
    if taps == 0 {
        return Vec::new();
    }
    let n = up * taps;
    let proto_rate = (up as f64) * f64::from(from);
    let cutoff = ROLLOFF * f64::from(from.min(to)) / 2.0 / proto_rate; // cycles per sample
    let centre = (n - 1) as f64 / 2.0;
    let i0_beta = bessel_i0(KAISER_BETA);
    let proto: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64 - centre;
            let x = 2.0 * cutoff * t;
            let sinc = if x == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            let r = if centre > 0.0 { t / centre } else { 0.0 };
            let window = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            2.0 * cutoff * sinc * window
        })
        .collect();
    // Unity gain at DC for every phase, so a constant input gives a constant output.
    let mut filter = vec![0.0f32; n];
    for p in 0..up {
        let gain: f64 = (0..taps).map(|k| proto[p + k * up]).sum();
        for k in 0..taps {
            filter[p * taps + (taps - 1 - k)] = (proto[p + k * up] / gain) as f32;
        }
    }
    filter
}

/// Modified Bessel function of the first kind, order 0 (power series; converges fast for x <= 20).
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, q) = (1.0, 1.0, x * x / 4.0);
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 build (what `process` runs here) and the baseline build give the same
    /// samples, to the bit, for every pair of pipeline rates.
    #[test]
    fn both_builds_resample_alike() {
        let mut seed = 0x9e37_79b9u32;
        let input: Vec<i16> = (0..4_800)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let tone = 12_000.0 * (i as f32 * 0.07).sin();
                (tone + (seed >> 20) as f32 - 2_048.0) as i16
            })
            .collect();
        for from in SampleRate::ALL {
            for to in SampleRate::ALL {
                let (mut a, mut b) = (Resampler::new(from, to), Resampler::new(from, to));
                let (mut x, mut y) = (Vec::new(), Vec::new());
                for chunk in input.chunks(from.hz() as usize / 50) {
                    a.process(chunk, &mut x);
                    if b.taps == 0 {
                        y.extend_from_slice(chunk);
                    } else {
                        b.buf.extend(chunk.iter().map(|&s| f32::from(s)));
                        b.run_inline(&mut y);
                    }
                }
                assert!(!x.is_empty());
                assert_eq!(x, y, "{from:?} -> {to:?}");
            }
        }
    }
}
