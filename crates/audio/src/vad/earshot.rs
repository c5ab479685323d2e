//! The default [`VoiceDetector`]: the earshot model, a small neural VAD (16 kHz audio,
//! 256-sample frames), computed here.
//!
//! The model is the `earshot` crate's (version 1.2, by Carson M, MIT OR Apache-2.0): its
//! weights (`earshot-weights.bin`, copied unchanged from the crate), its features (the
//! power spectrum of the last 768 pre-emphasised samples, Hann-windowed and zero-padded to
//! 1,024, in 40 log-mel bands, normalised) and its network (three small convolutions over
//! the last three frames' bands, two minGRU layers in Q15, a sigmoid). The crate's own
//! code took about 7 µs a frame, a third of the server's CPU at 1,000 calls
//! (`bench/README.md`). This computes the same model faster:
//! - the spectrum is realfft's, whose FFT picks SSE or AVX code at run time;
//! - the last 768 samples are a ring of three frames, not a buffer moved every frame;
//! - the FFT's buffers (12 KiB) are one set per thread, not per call: a call holds about
//!   3.8 KiB, and the buffers stay in cache from one call's frame to the next's;
//! - every layer loops over its outputs innermost, so it vectorises, while each output
//!   adds its terms in the crate's order (so rounds the same); and the network is
//!   compiled a second time for AVX2, chosen at run time, where the minGRU's integer
//!   products are AVX2 instructions written out (`dots_avx2`: integer sums, so
//!   exactly the baseline build's).
//!
//! The weights file is the crate's, under its MIT license (`earshot-weights.LICENSE`):
//! its copyright and permission notice go with it.
//!
//! The FFT's rounding differs from the crate's, so scores differ in the last digits; the
//! crate stays a dev-dependency, and `tests/vad.rs` holds these scores to its on real
//! speech and noise.

use std::cell::RefCell;
use std::sync::{Arc, LazyLock};

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::VoiceDetector;
use crate::pcm::SampleRate;

/// Samples per earshot frame (16 ms at 16 kHz).
pub const EARSHOT_FRAME: usize = 256;

const WINDOW: usize = 3 * EARSHOT_FRAME;
const FFT_SIZE: usize = 1024;
const BINS: usize = FFT_SIZE / 2 + 1;
const MELS: usize = 40;
const CONTEXT: usize = 3;
const PRE_EMPHASIS: f32 = 0.97;
const POWER_SCALE: f32 = 1.0 / (32768.0 * 32768.0);
/// Channels of the convolutions, hidden units of each minGRU layer.
const CHANNELS: usize = 16;
const HIDDEN: usize = 64;
/// The mel filter bank's corners (FFT bins): band `b` rises from 0 at `MEL_POINTS[b]`
/// to 1 at `MEL_POINTS[b + 1]` and falls back to 0 at `MEL_POINTS[b + 2]`. With the
/// slopes computed in f32 these are exactly the crate's tables.
const MEL_POINTS: [usize; MELS + 2] = [
    4, 7, 10, 13, 17, 21, 25, 29, 33, 38, 43, 48, 54, 60, 66, 73, 80, 87, 95, 103, 112, 122, 132, 142, 153, 165, 178, 191,
    205, 220, 236, 253, 270, 289, 309, 330, 353, 376, 402, 428, 456, 486,
];

/// The weights file: f32 tensors, then the Q9 minGRU and output weights as i16, little-endian.
static WEIGHTS: &[u8] = include_bytes!("earshot-weights.bin");

/// The model's constants, read once.
struct Model {
    norm: [f32; MELS],
    l1_kernel: [f32; 9],
    l1_weight: [f32; CHANNELS],
    l1_bias: [f32; CHANNELS],
    l2_kernel: [f32; CHANNELS * 3],
    /// Pointwise weights transposed to `[in][out]`, so the output channel is innermost.
    l2_weight_t: [f32; CHANNELS * CHANNELS],
    l2_bias: [f32; CHANNELS],
    l3_kernel: [f32; CHANNELS * 3],
    l3_weight_t: [f32; CHANNELS * CHANNELS],
    /// `[2 * HIDDEN][80]` and `[2 * HIDDEN][HIDDEN]`: candidate rows, then gate rows.
    rnn1: Box<[i16]>,
    rnn2: Box<[i16]>,
    output: [i16; 2 * HIDDEN],
    hann: [f32; WINDOW],
    /// Per band: its first bin and its coefficients.
    mel: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn RealToComplex<f32>>,
}

static MODEL: LazyLock<Model> = LazyLock::new(Model::load);

impl Model {
    fn load() -> Model {
        assert_eq!(WEIGHTS.len(), 39_940, "earshot-weights.bin is the crate's file");
        let f32_at = |i: usize| f32::from_le_bytes(WEIGHTS[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let i16_at = |i: usize| i16::from_le_bytes(WEIGHTS[i * 2..i * 2 + 2].try_into().expect("2 bytes"));
        fn floats<const N: usize>(at: impl Fn(usize) -> f32, offset: usize) -> [f32; N] {
            std::array::from_fn(|i| at(offset + i))
        }
        let transpose = |w: [f32; CHANNELS * CHANNELS]| -> [f32; CHANNELS * CHANNELS] {
            std::array::from_fn(|i| w[(i % CHANNELS) * CHANNELS + i / CHANNELS])
        };
        // Offsets in f32 units, as the crate lays the file out; the i16 tensors start
        // at f32 offset 705.
        let q = 705 * 2;
        let mel = (0..MELS)
            .map(|b| {
                let (start, peak, end) = (MEL_POINTS[b], MEL_POINTS[b + 1], MEL_POINTS[b + 2]);
                let coeffs = (start..end)
                    .map(|k| {
                        if k <= peak {
                            (k - start) as f32 / (peak - start) as f32
                        } else {
                            (end - k) as f32 / (end - peak) as f32
                        }
                    })
                    .collect();
                (start, coeffs)
            })
            .collect();
        Model {
            norm: floats(f32_at, 0),
            l1_kernel: floats(f32_at, 40),
            l1_weight: floats(f32_at, 49),
            l1_bias: floats(f32_at, 65),
            l2_kernel: floats(f32_at, 81),
            l2_weight_t: transpose(floats(f32_at, 129)),
            l2_bias: floats(f32_at, 385),
            l3_kernel: floats(f32_at, 401),
            l3_weight_t: transpose(floats(f32_at, 449)),
            rnn1: (0..2 * HIDDEN * 80).map(|i| i16_at(q + i)).collect(),
            rnn2: (0..2 * HIDDEN * HIDDEN).map(|i| i16_at(q + 10_240 + i)).collect(),
            output: std::array::from_fn(|i| i16_at(q + 10_240 + 8_192 + i)),
            // The periodic Hann window of 768, sin²(πn / 768), rounded as the crate's
            // table was (each step to f32): exactly its values.
            hann: std::array::from_fn(|n| {
                let angle = (f64::from(std::f32::consts::PI) * n as f64 / WINDOW as f64) as f32;
                let sin = f64::from(angle).sin() as f32;
                sin * sin
            }),
            mel,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(FFT_SIZE),
        }
    }
}

/// A thread's buffers for the spectrum: any detector on the thread uses them for a frame.
struct Work {
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
}

impl Work {
    fn new() -> Work {
        let fft = &MODEL.fft;
        Work {
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            power: vec![0.0; BINS],
        }
    }
}

thread_local! {
    static WORK: RefCell<Work> = RefCell::new(Work::new());
}

/// One stream's state: what carries from frame to frame.
struct State {
    /// Pre-emphasised samples of the last three frames, one 256-sample slot each.
    ring: [f32; WINDOW],
    /// The slot the next frame goes into: the oldest.
    slot: usize,
    /// The last raw sample (pre-emphasis carries across frames).
    prev: f32,
    /// The last three frames' normalised bands, oldest first.
    features: [f32; MELS * CONTEXT],
    /// The two minGRU layers' hidden units, Q15.
    hidden: [i16; 2 * HIDDEN],
}

/// [`VoiceDetector`] over the earshot model (see the module doc).
pub struct EarshotDetector {
    state: Box<State>,
}

impl EarshotDetector {
    /// A fresh detector.
    pub fn new() -> Self {
        Self {
            state: Box::new(State {
                ring: [0.0; WINDOW],
                slot: 0,
                prev: 0.0,
                features: [0.0; MELS * CONTEXT],
                hidden: [0; 2 * HIDDEN],
            }),
        }
    }

    /// Heap bytes held by this detector.
    pub fn heap_bytes(&self) -> usize {
        size_of::<State>()
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
        self.confidence_by(frame, score)
    }

    fn reset(&mut self) {
        let s = &mut *self.state;
        s.ring.fill(0.0);
        s.slot = 0;
        s.prev = 0.0;
        s.features.fill(0.0);
        s.hidden.fill(0);
    }
}

impl EarshotDetector {
    /// [`VoiceDetector::confidence`], scored by `scorer` (the tests pin both builds).
    fn confidence_by(&mut self, frame: &[i16], scorer: fn(&mut State, &mut Work) -> f32) -> f32 {
        if frame.len() != EARSHOT_FRAME {
            return 0.0;
        }
        let s = &mut *self.state;
        let slot = &mut s.ring[s.slot * EARSHOT_FRAME..(s.slot + 1) * EARSHOT_FRAME];
        slot[0] = f32::from(frame[0]) - PRE_EMPHASIS * s.prev;
        for (e, pair) in slot[1..].iter_mut().zip(frame.windows(2)) {
            *e = f32::from(pair[1]) - PRE_EMPHASIS * f32::from(pair[0]);
        }
        s.prev = f32::from(frame[EARSHOT_FRAME - 1]);
        s.slot = (s.slot + 1) % CONTEXT;
        WORK.with_borrow_mut(|w| scorer(s, w)).clamp(0.0, 1.0)
    }
}

/// Proof that the CPU runs AVX2 instructions: only [`Avx2::detect`] makes one.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Avx2(());

impl Avx2 {
    fn detect() -> Option<Avx2> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Avx2(()));
        }
        None
    }
}

/// The score of the frame just added to `s`: the AVX2 build of [`score_inline`] on a CPU
/// that has it, the baseline build otherwise.
fn score(s: &mut State, w: &mut Work) -> f32 {
    match Avx2::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU has AVX2.
        Some(avx2) => unsafe { score_avx2(s, w, avx2) },
        _ => score_inline(s, w, None),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn score_avx2(s: &mut State, w: &mut Work, avx2: Avx2) -> f32 {
    score_inline(s, w, Some(avx2))
}

/// The score; with `avx2`, the minGRU's products are AVX2 instructions.
#[inline(always)]
fn score_inline(s: &mut State, w: &mut Work, avx2: Option<Avx2>) -> f32 {
    let m = &*MODEL;
    // The window, oldest slot first, then zeros to the FFT's size.
    let start = s.slot * EARSHOT_FRAME;
    let first = WINDOW - start;
    for ((x, r), h) in w.input[..first].iter_mut().zip(&s.ring[start..]).zip(&m.hann[..first]) {
        *x = r * h;
    }
    for ((x, r), h) in w.input[first..WINDOW].iter_mut().zip(&s.ring[..start]).zip(&m.hann[first..]) {
        *x = r * h;
    }
    w.input[WINDOW..].fill(0.0);
    if m.fft.process_with_scratch(&mut w.input, &mut w.spectrum, &mut w.scratch).is_err() {
        return 0.0; // only for buffers of the wrong length, which these never are
    }
    for (p, c) in w.power.iter_mut().zip(&w.spectrum) {
        *p = c.norm_sqr() * POWER_SCALE;
    }

    s.features.copy_within(MELS.., 0);
    let bands = &mut s.features[MELS * (CONTEXT - 1)..];
    for (band, (start, coeffs)) in bands.iter_mut().zip(&m.mel) {
        let mut sum = 0.0;
        for (p, c) in w.power[*start..].iter().zip(coeffs) {
            sum += p * c;
        }
        *band = (sum + 1e-20).ln();
    }
    let inv_rms = (bands.iter().map(|x| x * x).sum::<f32>() / MELS as f32).sqrt().recip();
    for (v, n) in bands.iter_mut().zip(&m.norm) {
        *v = n * *v * inv_rms;
    }

    let l1 = layer1(m, &s.features);
    let l2 = layer2(m, &l1);
    let l3 = layer3(m, &l2);
    let (h1, h2) = s.hidden.split_at_mut(HIDDEN);
    mingru::<80>(&l3, h1, &m.rnn1, avx2);
    mingru::<HIDDEN>(h1, h2, &m.rnn2, avx2);
    let mut out = 0i32;
    for (h, w) in s.hidden.iter().zip(&m.output) {
        out = out.wrapping_add(i32::from(*h) * i32::from(*w)); // Q15 * Q9 = Q24
    }
    let x = out as f32 / 16_777_216.0;
    1.0 / (1.0 + (-x).exp())
}

/// A 3x3 convolution over the three frames' bands (one row of 38), then per channel a
/// scale and bias, ReLU and a max-pool of 3 by 2: `[16][18]`.
#[inline(always)]
fn layer1(m: &Model, features: &[f32; MELS * CONTEXT]) -> [f32; CHANNELS * 18] {
    const COLS: usize = MELS - 2;
    let mut row = [0.0f32; COLS];
    for kh in 0..3 {
        for kw in 0..3 {
            let k = m.l1_kernel[kh * 3 + kw];
            for (r, f) in row.iter_mut().zip(&features[kh * MELS + kw..]) {
                *r += f * k;
            }
        }
    }
    let mut out = [0.0f32; CHANNELS * 18];
    for c in 0..CHANNELS {
        let (scale, bias) = (m.l1_weight[c], m.l1_bias[c]);
        let mut scaled = [0.0f32; COLS];
        for (s, r) in scaled.iter_mut().zip(&row) {
            *s = r * scale + bias;
        }
        for (q, o) in out[c * 18..(c + 1) * 18].iter_mut().enumerate() {
            *o = o.max(scaled[2 * q]).max(scaled[2 * q + 1]).max(scaled[2 * q + 2]);
        }
    }
    out
}

/// A depthwise convolution of 3 (stride 2, padding 1) per channel, then the pointwise
/// 16x16 with bias and ReLU: `[16][18]` to `[16][9]`.
#[inline(always)]
fn layer2(m: &Model, input: &[f32; CHANNELS * 18]) -> [f32; CHANNELS * 9] {
    let dw = depthwise::<18, 9>(input, &m.l2_kernel);
    let mut out = [0.0f32; CHANNELS * 9];
    for ox in 0..9 {
        let acc = pointwise(&dw, ox, 9, &m.l2_weight_t);
        for oc in 0..CHANNELS {
            out[oc * 9 + ox] = (acc[oc] + m.l2_bias[oc]).max(0.0);
        }
    }
    out
}

/// The same shape of layer without bias or ReLU, `[16][9]` to `[5][16]`, quantised to Q15.
#[inline(always)]
fn layer3(m: &Model, input: &[f32; CHANNELS * 9]) -> [i16; 5 * CHANNELS] {
    let dw = depthwise::<9, 5>(input, &m.l3_kernel);
    let mut out = [0i16; 5 * CHANNELS];
    for ox in 0..5 {
        let acc = pointwise(&dw, ox, 5, &m.l3_weight_t);
        for (o, a) in out[ox * CHANNELS..(ox + 1) * CHANNELS].iter_mut().zip(&acc) {
            *o = (a * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
    }
    out
}

/// Per channel, a convolution of 3 with stride 2 and padding 1: `[16][IN]` to `[16][OUT]`
/// (in the first `16 * OUT` of the result).
#[inline(always)]
fn depthwise<const IN: usize, const OUT: usize>(input: &[f32], kernel: &[f32; CHANNELS * 3]) -> [f32; CHANNELS * 9] {
    let mut dw = [0.0f32; CHANNELS * 9];
    for c in 0..CHANNELS {
        for ox in 0..OUT {
            let mut sum = 0.0;
            for kw in 0..3 {
                let Some(ix) = (2 * ox + kw).checked_sub(1).filter(|&ix| ix < IN) else { continue };
                sum += input[c * IN + ix] * kernel[c * 3 + kw];
            }
            dw[c * OUT + ox] = sum;
        }
    }
    dw
}

/// Column `ox` of `dw` (`[16][cols]`) through the 16x16 weights `[in][out]`: each output
/// sums over the inputs in order, all outputs at once.
#[inline(always)]
fn pointwise(dw: &[f32], ox: usize, cols: usize, weight_t: &[f32; CHANNELS * CHANNELS]) -> [f32; CHANNELS] {
    let mut acc = [0.0f32; CHANNELS];
    for c in 0..CHANNELS {
        let x = dw[c * cols + ox];
        for (a, w) in acc.iter_mut().zip(&weight_t[c * CHANNELS..(c + 1) * CHANNELS]) {
            *a += x * w;
        }
    }
    acc
}

/// One minGRU step in fixed point: candidate and gate from `x` (Q15) and the Q9 weights
/// (`[2 * HIDDEN][N]`), then `h = (1 - g) h + g c`, back to Q15.
#[inline(always)]
fn mingru<const N: usize>(x: &[i16], h: &mut [i16], weight: &[i16], avx2: Option<Avx2>) {
    let x = &x[..N];
    let mut pre = [0i32; 2 * HIDDEN];
    match avx2 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU has AVX2.
        Some(avx2) => unsafe { dots_avx2(avx2, x, weight, &mut pre) },
        _ => {
            for (p, row) in pre.iter_mut().zip(weight.chunks_exact(N)) {
                let mut o = 0i32;
                for (a, b) in x.iter().zip(row) {
                    o = o.wrapping_add(i32::from(*a) * i32::from(*b)); // Q15 * Q9 = Q24
                }
                *p = o;
            }
        }
    }
    for (i, h) in h.iter_mut().enumerate().take(HIDDEN) {
        // The gate is scaled by 4 and clamped to [0, 1] in Q24.
        let g = i64::from(pre[HIDDEN + i].wrapping_shl(2).clamp(0, 16_777_215));
        let y = (16_777_215 - g) * (i64::from(*h) << 9) + g * i64::from(pre[i]); // Q48
        *h = (y >> 33).clamp(-32768, 32767) as i16;
    }
}

/// `pre[d]` = row `d` of `weight` (`[2 * HIDDEN][x.len()]`) dot `x`, for a length that
/// is a multiple of 16: 16 products at a time (`vpmaddwd` adds them in pairs, `vpaddd`
/// the pairs; both wrap, as the scalar sums do, and wrapping sums are exact in any
/// order), and eight rows' sums gathered into one vector at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_avx2(_: Avx2, x: &[i16], weight: &[i16], pre: &mut [i32; 2 * HIDDEN]) {
    use std::arch::x86_64::*;
    let n = x.len();
    debug_assert!(n.is_multiple_of(16) && n <= 80 && weight.len() == 2 * HIDDEN * n);
    let load = |v: &[i16]| {
        let v: &[i16; 16] = v.try_into().expect("16 lanes");
        // SAFETY: `v` is 16 readable i16 (32 bytes); the load is unaligned.
        unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
    };
    let mut xs = [_mm256_setzero_si256(); 5];
    for (v, c) in xs.iter_mut().zip(x.chunks_exact(16)) {
        *v = load(c);
    }
    let xs = &xs[..n / 16];
    for (rows, out) in weight.chunks_exact(8 * n).zip(pre.chunks_exact_mut(8)) {
        let mut acc = [_mm256_setzero_si256(); 8];
        for (a, row) in acc.iter_mut().zip(rows.chunks_exact(n)) {
            for (xv, w) in xs.iter().zip(row.chunks_exact(16)) {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(*xv, load(w)));
            }
        }
        // Lanes of acc[r]: r's partial sums. hadd pairs them within each 128-bit half.
        let s01 = _mm256_hadd_epi32(acc[0], acc[1]);
        let s23 = _mm256_hadd_epi32(acc[2], acc[3]);
        let s45 = _mm256_hadd_epi32(acc[4], acc[5]);
        let s67 = _mm256_hadd_epi32(acc[6], acc[7]);
        let s0123 = _mm256_hadd_epi32(s01, s23);
        let s4567 = _mm256_hadd_epi32(s45, s67);
        // Rows 0-3 then 4-7, each half of the sum in one 128-bit lane: add the lanes.
        let low = _mm256_permute2x128_si256::<0x20>(s0123, s4567);
        let high = _mm256_permute2x128_si256::<0x31>(s0123, s4567);
        let sums = _mm256_add_epi32(low, high);
        let out: &mut [i32; 8] = out.try_into().expect("8 rows");
        // SAFETY: `out` is 8 writable i32 (32 bytes); the store is unaligned.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), sums) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 build and the baseline build add the same terms in the same order, with
    /// no fused multiply-add (Rust never fuses on its own): the same scores, to the bit.
    #[test]
    fn both_builds_score_alike() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut audio: Vec<i16> = (0..256 * 400)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Bursts of a swept tone over noise, and stretches of near-silence.
                let t = i as f64 / 16_000.0;
                let tone = if (i / 4_000) % 2 == 0 { 9_000.0 * (std::f64::consts::TAU * (200.0 + 300.0 * t) * t).sin() } else { 0.0 };
                (tone + (seed >> 52) as f64 - 2_048.0) as i16
            })
            .collect();
        audio.extend(std::iter::repeat_n(i16::MAX, 1024));
        let (mut a, mut b) = (EarshotDetector::new(), EarshotDetector::new());
        let mut voiced = 0;
        for (i, frame) in audio.chunks_exact(EARSHOT_FRAME).enumerate() {
            let (x, y) = (a.confidence_by(frame, score), b.confidence_by(frame, |s, w| score_inline(s, w, None)));
            assert_eq!(x.to_bits(), y.to_bits(), "frame {i}: {x} against {y}");
            voiced += usize::from(x >= 0.5);
        }
        assert!(voiced > 0 && voiced < 400, "{voiced} of 400 frames voiced: the signal tests nothing");
    }
}
