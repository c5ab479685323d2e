//! The streaming resampler against the properties the pipeline relies on: right length,
//! frequency kept, chunking invisible, aliasing removed, delay small.

mod common;

use common::{crossings_per_sec, sine, tone_fraction};
use voxgate_audio::resample::resample_all;
use voxgate_audio::{AudioError, Resampler, SampleRate};

fn run_chunked(r: &mut Resampler, input: &[i16], chunk: usize) -> Vec<i16> {
    let mut out = Vec::new();
    for c in input.chunks(chunk) {
        r.process(c, &mut out);
    }
    out
}

#[test]
fn output_length_follows_the_rate_ratio_for_every_pair() {
    for from in SampleRate::ALL {
        for to in SampleRate::ALL {
            let input = sine(440.0, from.hz(), 1.0, 0.5);
            let mut r = Resampler::new(from, to);
            let out = run_chunked(&mut r, &input, from.frame_samples());
            assert_eq!(out.len(), to.hz() as usize, "{from} -> {to}");
            if from == to {
                assert_eq!(out, input, "equal rates are the identity");
                assert_eq!(r.delay(), 0.0);
            }
            // The tail comes out on flush.
            let mut tail = Vec::new();
            r.flush(&mut tail);
            assert!(
                tail.len() as f64 >= r.delay().floor(),
                "{from} -> {to}: tail {}",
                tail.len()
            );
        }
    }
}

#[test]
fn a_440_hz_tone_keeps_its_frequency_through_a_chain() {
    let chain = [
        SampleRate::Hz16000,
        SampleRate::Hz48000,
        SampleRate::Hz8000,
        SampleRate::Hz24000,
        SampleRate::Hz16000,
    ];
    let mut audio = sine(440.0, 16000, 2.0, 0.5);
    for pair in chain.windows(2) {
        let mut r = Resampler::new(pair[0], pair[1]);
        audio = run_chunked(&mut r, &audio, pair[0].frame_samples());
        // Skip the first 50 ms (filter warm-up) before measuring.
        let steady = &audio[pair[1].samples_for_ms(50)..];
        let rate = pair[1].hz();
        let fraction = tone_fraction(steady, rate, 440.0);
        assert!(
            fraction > 0.99,
            "{} -> {}: 440 Hz holds {fraction:.4} of the energy",
            pair[0],
            pair[1]
        );
        let zc = crossings_per_sec(steady, rate);
        assert!(
            (zc - 440.0).abs() < 2.0,
            "{} -> {}: {zc} crossings/s",
            pair[0],
            pair[1]
        );
        assert!(tone_fraction(steady, rate, 480.0) < 0.01);
    }
    // The level survives too (passband is flat at 440 Hz).
    let rms =
        |s: &[i16]| (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    let level = rms(&audio[800..]) / (0.5 * 32767.0 / 2f64.sqrt());
    assert!((level - 1.0).abs() < 0.02, "level after the chain: {level}");
}

#[test]
fn chunking_does_not_change_the_output() {
    for (from, to) in [
        (SampleRate::Hz16000, SampleRate::Hz48000),
        (SampleRate::Hz48000, SampleRate::Hz16000),
        (SampleRate::Hz24000, SampleRate::Hz16000),
        (SampleRate::Hz8000, SampleRate::Hz24000),
        (SampleRate::Hz48000, SampleRate::Hz8000),
    ] {
        let input = sine(1234.5, from.hz(), 0.5, 0.7);
        let one_shot = run_chunked(&mut Resampler::new(from, to), &input, input.len());
        for chunk in [1, 7, 100, from.frame_samples(), 333] {
            let chunked = run_chunked(&mut Resampler::new(from, to), &input, chunk);
            assert_eq!(
                chunked.len(),
                one_shot.len(),
                "{from} -> {to}, chunks of {chunk}"
            );
            let max_diff = chunked
                .iter()
                .zip(&one_shot)
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .max();
            assert!(
                max_diff <= Some(1),
                "{from} -> {to}, chunks of {chunk}: max diff {max_diff:?}"
            );
        }
        // Irregular chunk sizes as a network delivers them.
        let mut r = Resampler::new(from, to);
        let (mut out, mut at, mut n) = (Vec::new(), 0, 1);
        while at < input.len() {
            let end = (at + n).min(input.len());
            r.process(&input[at..end], &mut out);
            at = end;
            n = n * 7 % 500 + 1;
        }
        assert_eq!(out, one_shot, "{from} -> {to}, irregular chunks");
    }
}

#[test]
fn downsampling_removes_what_would_alias() {
    // 12 kHz at 48 kHz would fold to 4 kHz at 16 kHz; the filter must remove it.
    let input = sine(12_000.0, 48000, 0.5, 0.9);
    let out = run_chunked(
        &mut Resampler::new(SampleRate::Hz48000, SampleRate::Hz16000),
        &input,
        960,
    );
    let peak = out[160..]
        .iter()
        .map(|s| s.unsigned_abs())
        .max()
        .unwrap_or(0);
    // -60 dB of 0.9 full scale is ~30.
    assert!(peak < 30, "aliased 12 kHz leaks through at {peak}");
    // Same for 6 kHz at 24 kHz -> 8 kHz (Nyquist 4 kHz).
    let input = sine(6_000.0, 24000, 0.5, 0.9);
    let out = run_chunked(
        &mut Resampler::new(SampleRate::Hz24000, SampleRate::Hz8000),
        &input,
        480,
    );
    let peak = out[80..]
        .iter()
        .map(|s| s.unsigned_abs())
        .max()
        .unwrap_or(0);
    assert!(peak < 30, "aliased 6 kHz leaks through at {peak}");
}

#[test]
fn group_delay_is_about_one_millisecond() {
    for (from, to) in [
        (SampleRate::Hz16000, SampleRate::Hz48000),
        (SampleRate::Hz48000, SampleRate::Hz16000),
        (SampleRate::Hz24000, SampleRate::Hz16000),
        (SampleRate::Hz8000, SampleRate::Hz16000),
    ] {
        // A low tone burst's envelope peak shows the delay; an impulse's peak does too.
        let mut input = vec![0i16; from.samples_for_ms(40)];
        let at = from.samples_for_ms(10);
        input[at] = 30000;
        let out = run_chunked(&mut Resampler::new(from, to), &input, from.frame_samples());
        let peak = out
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.unsigned_abs())
            .map(|(i, _)| i)
            .unwrap();
        let expected_at = at as f64 * f64::from(to.hz()) / f64::from(from.hz());
        let measured = peak as f64 - expected_at;
        let r = Resampler::new(from, to);
        println!(
            "{from} -> {to}: delay {:.1} output samples ({:.2} ms), measured peak at +{measured}",
            r.delay(),
            r.delay() * 1000.0 / f64::from(to.hz())
        );
        assert!(
            (measured - r.delay()).abs() <= 1.0,
            "{from} -> {to}: measured {measured}, reported {}",
            r.delay()
        );
        assert!(
            r.delay() * 1000.0 / f64::from(to.hz()) <= 2.0,
            "{from} -> {to}: delay over 2 ms"
        );
    }
}

#[test]
fn flush_emits_the_tail_and_resets() {
    let from = SampleRate::Hz16000;
    let to = SampleRate::Hz48000;
    let input = sine(300.0, 16000, 0.1, 0.5);
    let mut r = Resampler::new(from, to);
    let mut out = Vec::new();
    r.process(&input, &mut out);
    let before = out.len();
    r.flush(&mut out);
    assert!(
        out.len() as f64 >= before as f64 + r.delay(),
        "flush added {}",
        out.len() - before
    );
    // Reset: the same input again gives the same output.
    let mut again = Vec::new();
    r.process(&input, &mut again);
    assert_eq!(again, out[..before]);
}

#[test]
fn resample_all_lines_up_with_the_input() {
    let input = sine(440.0, 16000, 0.5, 0.5);
    let out = resample_all(16000, 48000, &input).unwrap();
    assert_eq!(out.len(), input.len() * 3);
    // Aligned: output sample j is the input sine at time j / 48000, up to the half sample
    // left over from rounding the 47.5-sample delay to a whole number.
    let shift = 48.0 - Resampler::new(SampleRate::Hz16000, SampleRate::Hz48000).delay();
    for j in (6000..6300).step_by(7) {
        let t = (j as f64 + shift) / 48000.0;
        let want = 0.5 * 32767.0 * (std::f64::consts::TAU * 440.0 * t).sin();
        assert!(
            (f64::from(out[j]) - want).abs() < 40.0,
            "sample {j}: {} vs {want:.0}",
            out[j]
        );
    }
}

#[test]
fn arbitrary_rates_for_files_and_clear_errors() {
    // espeak-ng and CD audio rates.
    for from in [22050, 44100, 11025] {
        let input = sine(440.0, from, 1.0, 0.5);
        let out = resample_all(from, 16000, &input).unwrap();
        assert_eq!(out.len(), 16000);
        assert!(
            tone_fraction(&out[800..], 16000, 440.0) > 0.99,
            "{from} -> 16000"
        );
    }
    for (from, to) in [(0, 16000), (16000, 500), (16000, 1_000_000)] {
        let err = Resampler::with_rates(from, to).unwrap_err();
        assert!(matches!(err, AudioError::ResampleRates { .. }), "{err}");
    }
    assert!(
        Resampler::with_rates(383_999, 1009).is_err(),
        "absurd ratios are refused, not built"
    );
}

#[test]
fn extreme_input_does_not_panic_or_wrap() {
    let square: Vec<i16> = (0..4800)
        .map(|i| {
            if (i / 24) % 2 == 0 {
                i16::MAX
            } else {
                i16::MIN
            }
        })
        .collect();
    for to in SampleRate::ALL {
        let mut out = Vec::new();
        let mut r = Resampler::new(SampleRate::Hz48000, to);
        r.process(&square, &mut out);
        r.process(&[], &mut out);
        r.flush(&mut out);
        // Gibbs overshoot clips instead of wrapping around.
        assert!(
            out.iter().any(|&s| s > 30000) && out.iter().any(|&s| s < -30000),
            "48k -> {to}"
        );
    }
}
