//! The first and last step of the audio path: the transport hands us PCM16 little-endian
//! bytes from the client and takes them back for the speaker. This module turns those
//! bytes into `i16` samples and back, converts to and from `f32` for DSP, measures a
//! frame's volume for the VAD, and names the sample rates the pipeline carries.

use std::fmt;

use crate::error::{AudioError, Result};

/// Length of one pipeline audio frame, in milliseconds.
pub const FRAME_MS: u32 = 20;

/// A sample rate the pipeline carries. Anything else is converted at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleRate {
    /// 8 kHz: telephony (G.711).
    Hz8000,
    /// 16 kHz: the VAD's and most STT models' rate.
    Hz16000,
    /// 24 kHz: common TTS output.
    Hz24000,
    /// 48 kHz: browsers' native rate.
    Hz48000,
}

impl SampleRate {
    /// Every supported rate, lowest first.
    pub const ALL: [SampleRate; 4] = [Self::Hz8000, Self::Hz16000, Self::Hz24000, Self::Hz48000];

    /// The rate in Hz.
    pub const fn hz(self) -> u32 {
        match self {
            Self::Hz8000 => 8000,
            Self::Hz16000 => 16000,
            Self::Hz24000 => 24000,
            Self::Hz48000 => 48000,
        }
    }

    /// Samples in `ms` milliseconds (every supported rate is a whole number of samples per ms).
    pub const fn samples_for_ms(self, ms: u32) -> usize {
        (self.hz() / 1000) as usize * ms as usize
    }

    /// Samples in one 20 ms frame: 160, 320, 480 or 960.
    pub const fn frame_samples(self) -> usize {
        self.samples_for_ms(FRAME_MS)
    }

    /// Bytes in one 20 ms mono PCM16 frame.
    pub const fn frame_bytes(self) -> usize {
        self.frame_samples() * 2
    }

    /// Milliseconds of audio in `samples` samples, rounded down.
    pub const fn ms_for_samples(self, samples: u64) -> u64 {
        samples * 1000 / self.hz() as u64
    }
}

impl TryFrom<u32> for SampleRate {
    type Error = AudioError;

    fn try_from(hz: u32) -> Result<Self> {
        match hz {
            8000 => Ok(Self::Hz8000),
            16000 => Ok(Self::Hz16000),
            24000 => Ok(Self::Hz24000),
            48000 => Ok(Self::Hz48000),
            other => Err(AudioError::UnsupportedRate(other)),
        }
    }
}

impl From<SampleRate> for u32 {
    fn from(rate: SampleRate) -> u32 {
        rate.hz()
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.hz())
    }
}

/// Decode PCM16 little-endian bytes into samples, appending to `out` (which is not cleared).
///
/// An odd byte count is an error and leaves `out` untouched.
pub fn decode_pcm16le_into(bytes: &[u8], out: &mut Vec<i16>) -> Result<()> {
    if !bytes.len().is_multiple_of(2) {
        return Err(AudioError::OddByteCount(bytes.len()));
    }
    out.extend(
        bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]])),
    );
    Ok(())
}

/// Decode PCM16 little-endian bytes into a new vector of samples.
pub fn decode_pcm16le(bytes: &[u8]) -> Result<Vec<i16>> {
    let mut out = Vec::with_capacity(bytes.len() / 2);
    decode_pcm16le_into(bytes, &mut out)?;
    Ok(out)
}

/// Encode samples as PCM16 little-endian, appending to `out` (which is not cleared).
pub fn encode_pcm16le_into(samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// Encode samples as PCM16 little-endian bytes.
pub fn encode_pcm16le(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    encode_pcm16le_into(samples, &mut out);
    out
}

/// One sample to `f32` in [-1, 1).
#[inline]
pub fn i16_to_f32(sample: i16) -> f32 {
    sample as f32 / 32768.0
}

/// One `f32` sample to `i16`, rounded, clipped to the `i16` range; NaN becomes 0.
#[inline]
pub fn f32_to_i16(sample: f32) -> i16 {
    // `as` saturates and maps NaN to 0, so no input can panic here.
    (sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Convert a slice of samples to `f32`, writing into `out` (lengths are zipped).
pub fn i16_slice_to_f32(samples: &[i16], out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(samples) {
        *o = i16_to_f32(*s);
    }
}

/// Convert a slice of `f32` samples to `i16`, writing into `out` (lengths are zipped).
pub fn f32_slice_to_i16(samples: &[f32], out: &mut [i16]) {
    for (o, s) in out.iter_mut().zip(samples) {
        *o = f32_to_i16(*s);
    }
}

/// RMS volume of a frame, normalised so that a full-scale square wave is 1.0; an empty
/// frame is 0.0.
pub fn rms(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return 0.0;
    }
    // Exact: a square is at most 2^30, so two fit in a u32 (the shape x86's
    // multiply-add of 16-bit pairs computes), and the u64 total holds any frame
    // shorter than 2^34 samples. Half the time of squaring each sample into an i64.
    let square = |s: i16| (i32::from(s) * i32::from(s)) as u32;
    let mut pairs = frame.chunks_exact(2);
    let mut sum: u64 = (&mut pairs).map(|p| u64::from(square(p[0]) + square(p[1]))).sum();
    sum += pairs.remainder().iter().map(|&s| u64::from(square(s))).sum::<u64>();
    let mean = sum as f64 / frame.len() as f64;
    ((mean.sqrt() / 32768.0) as f32).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_size_frames() {
        for (hz, frame) in [(8000, 160), (16000, 320), (24000, 480), (48000, 960)] {
            let rate = SampleRate::try_from(hz).unwrap();
            assert_eq!(rate.hz(), hz);
            assert_eq!(rate.frame_samples(), frame);
            assert_eq!(rate.frame_bytes(), frame * 2);
            assert_eq!(rate.ms_for_samples(frame as u64), 20);
        }
        let err = SampleRate::try_from(22050).unwrap_err();
        assert!(matches!(err, AudioError::UnsupportedRate(22050)));
        assert!(err.to_string().contains("22050"));
        assert!(SampleRate::try_from(0).is_err());
    }

    #[test]
    fn pcm16_round_trips_and_rejects_odd_lengths() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN, 1234, -4321];
        let bytes = encode_pcm16le(&samples);
        assert_eq!(bytes[..4], [0, 0, 1, 0]);
        assert_eq!(bytes[4..6], [0xFF, 0xFF]);
        assert_eq!(decode_pcm16le(&bytes).unwrap(), samples);

        let mut out = vec![7];
        let err = decode_pcm16le_into(&bytes[..3], &mut out).unwrap_err();
        assert!(matches!(err, AudioError::OddByteCount(3)));
        assert_eq!(out, [7], "a failed decode leaves the output untouched");
        assert_eq!(decode_pcm16le(&[]).unwrap(), Vec::<i16>::new());
    }

    #[test]
    fn float_conversion_clips_and_round_trips() {
        for s in [i16::MIN, -1, 0, 1, 12345, i16::MAX] {
            assert_eq!(f32_to_i16(i16_to_f32(s)), s);
        }
        assert_eq!(f32_to_i16(2.0), i16::MAX);
        assert_eq!(f32_to_i16(-2.0), i16::MIN);
        assert_eq!(f32_to_i16(f32::NAN), 0);
        assert_eq!(f32_to_i16(f32::INFINITY), i16::MAX);
        let mut f = [0.0; 3];
        i16_slice_to_f32(&[-16384, 0, 16384], &mut f);
        assert_eq!(f, [-0.5, 0.0, 0.5]);
        let mut i = [0i16; 3];
        f32_slice_to_i16(&f, &mut i);
        assert_eq!(i, [-16384, 0, 16384]);
    }

    #[test]
    fn rms_is_normalised() {
        assert_eq!(rms(&[]), 0.0);
        assert_eq!(rms(&[0; 320]), 0.0);
        let square: Vec<i16> = (0..320)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        assert!((rms(&square) - 1.0).abs() < 1e-4);
        // A full-scale sine has RMS 1/sqrt(2).
        let sine: Vec<i16> = (0..1600)
            .map(|i| (32767.0 * (i as f32 * 440.0 * std::f32::consts::TAU / 16000.0).sin()) as i16)
            .collect();
        assert!((rms(&sine) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-3);
    }

    /// The pairwise sum is exact: the same value as squaring each sample into an
    /// i64, at full scale (two i16::MIN squared fill a u32 to 2^31) and for odd lengths.
    #[test]
    fn rms_sums_exactly_at_full_scale_and_odd_lengths() {
        let reference = |f: &[i16]| {
            let sum: i64 = f.iter().map(|&s| i64::from(s) * i64::from(s)).sum();
            ((((sum as f64) / f.len() as f64).sqrt() / 32768.0) as f32).min(1.0)
        };
        assert_eq!(rms(&[i16::MIN; 320]), 1.0);
        assert_eq!(rms(&[i16::MIN]), 1.0);
        let mut x = 0x2545_f491_u32;
        for len in [1, 2, 3, 255, 256, 257, 961] {
            let frame: Vec<i16> = (0..len)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if i % 7 == 0 { i16::MIN } else { x as i16 }
                })
                .collect();
            assert_eq!(rms(&frame), reference(&frame), "length {len}");
        }
    }
}
