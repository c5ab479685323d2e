//! Signal helpers shared by the integration tests.
#![allow(dead_code)]

use std::f64::consts::TAU;

/// A sine of `freq` Hz, `secs` long at `rate`, at `amp` of full scale.
pub fn sine(freq: f64, rate: u32, secs: f64, amp: f64) -> Vec<i16> {
    let n = (f64::from(rate) * secs).round() as usize;
    (0..n)
        .map(|i| (amp * 32767.0 * (TAU * freq * i as f64 / f64::from(rate)).sin()).round() as i16)
        .collect()
}

/// Goertzel power at `freq`, relative to the signal's total power (1.0 = a pure tone).
pub fn tone_fraction(samples: &[i16], rate: u32, freq: f64) -> f64 {
    let n = samples.len() as f64;
    let w = TAU * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2; // |X(f)|^2
    let tone_energy = 2.0 * power / n; // energy of a real tone = 2 |X|^2 / N
    let total: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if total == 0.0 {
        0.0
    } else {
        tone_energy / total
    }
}

/// Upward zero crossings per second.
pub fn crossings_per_sec(samples: &[i16], rate: u32) -> f64 {
    let ups = samples.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    ups as f64 * f64::from(rate) / samples.len() as f64
}

/// Deterministic white noise at `amp` of full scale.
pub fn noise(n: usize, amp: f64, mut seed: u64) -> Vec<i16> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            (u * amp * 32767.0) as i16
        })
        .collect()
}
