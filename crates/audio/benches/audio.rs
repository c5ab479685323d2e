//! Per-frame cost of the audio layer on the hot path of a call: resampling, mu-law, and
//! the earshot VAD, each per 20 ms frame, against a plain copy of the same frame measured
//! in the same run; plus the memory one call's VAD and resampler state holds.
//!
//! `cargo bench -p voxgate-audio` (plain `Instant`, no harness).

use std::hint::black_box;
use std::time::Instant;

use voxgate_audio::{
    EarshotDetector, Resampler, SampleRate, VadMachine, VadParams, VoiceDetector, mulaw,
};

/// Median over `rounds` of the mean ns per call over `iters` calls.
fn ns_per_call(iters: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 + 1 {
        f();
    }
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

/// Speech-like test audio: a few harmonics plus noise, `secs` long at `rate`.
fn signal(rate: SampleRate, secs: f32) -> Vec<i16> {
    let n = (rate.hz() as f32 * secs) as usize;
    let mut seed = 0x1234_5678u32;
    (0..n)
        .map(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (seed >> 16) as f32 / 65536.0 - 0.5;
            let t = i as f32 / rate.hz() as f32;
            let v = (t * 180.0 * std::f32::consts::TAU).sin() * 0.3
                + (t * 720.0 * std::f32::consts::TAU).sin() * 0.15
                + (t * 2400.0 * std::f32::consts::TAU).sin() * 0.05
                + noise * 0.05;
            (v * 32767.0) as i16
        })
        .collect()
}

fn copy_baseline(frame: &[i16]) -> f64 {
    let mut dst = vec![0i16; frame.len()];
    ns_per_call(200_000, || {
        dst.copy_from_slice(black_box(frame));
        black_box(&mut dst);
    })
}

fn row(name: &str, ns: f64, baseline: f64) {
    println!(
        "{name:<42} {ns:>10.0} ns/frame  {:>8.1}x copy  {:>6.3}% of a core per stream",
        ns / baseline,
        ns / 20_000_000.0 * 100.0
    );
}

fn main() {
    let s16 = signal(SampleRate::Hz16000, 2.0);
    let s48 = signal(SampleRate::Hz48000, 2.0);
    let s8 = signal(SampleRate::Hz8000, 2.0);
    let frames16: Vec<&[i16]> = s16.chunks_exact(320).collect();
    let frames48: Vec<&[i16]> = s48.chunks_exact(960).collect();
    let frames8: Vec<&[i16]> = s8.chunks_exact(160).collect();

    let copy160 = copy_baseline(frames8[3]);
    let copy320 = copy_baseline(frames16[3]);
    let copy960 = copy_baseline(frames48[3]);
    println!(
        "baseline: copy of a 20 ms frame: 160 samples {copy160:.1} ns, 320 samples {copy320:.1} ns, 960 samples {copy960:.1} ns\n"
    );

    let mut out = Vec::with_capacity(2048);
    let mut up = Resampler::new(SampleRate::Hz16000, SampleRate::Hz48000);
    let mut k = 0;
    let ns = ns_per_call(20_000, || {
        out.clear();
        up.process(black_box(frames16[k % frames16.len()]), &mut out);
        black_box(&out);
        k += 1;
    });
    row("resample 16k -> 48k (320 -> 960)", ns, copy320);

    let mut down = Resampler::new(SampleRate::Hz48000, SampleRate::Hz16000);
    let ns = ns_per_call(20_000, || {
        out.clear();
        down.process(black_box(frames48[k % frames48.len()]), &mut out);
        black_box(&out);
        k += 1;
    });
    row("resample 48k -> 16k (960 -> 320)", ns, copy960);

    let mut tts = Resampler::new(SampleRate::Hz24000, SampleRate::Hz48000);
    let s24 = signal(SampleRate::Hz24000, 1.0);
    let frames24: Vec<&[i16]> = s24.chunks_exact(480).collect();
    let ns = ns_per_call(20_000, || {
        out.clear();
        tts.process(black_box(frames24[k % frames24.len()]), &mut out);
        black_box(&out);
        k += 1;
    });
    row("resample 24k -> 48k (480 -> 960)", ns, copy960);

    let mut bytes = [0u8; 160];
    let ns = ns_per_call(200_000, || {
        mulaw::encode_into(black_box(frames8[k % frames8.len()]), &mut bytes);
        black_box(&mut bytes);
        k += 1;
    });
    row("mu-law encode 8k (160 samples)", ns, copy160);

    let coded = mulaw::encode(&s8);
    let mut pcm = [0i16; 160];
    let ns = ns_per_call(200_000, || {
        let i = (k % frames8.len()) * 160;
        mulaw::decode_into(black_box(&coded[i..i + 160]), &mut pcm);
        black_box(&mut pcm);
        k += 1;
    });
    row("mu-law decode 8k (160 samples)", ns, copy160);

    // The earshot model: the crate's own code (the baseline), then ours, one detector
    // each, and ours again over 1,000 detectors in turn, as a server's calls use them.
    let frames256: Vec<&[i16]> = s16.chunks_exact(256).collect();
    let mut theirs = earshot::Detector::default_boxed();
    let crate_ns = ns_per_call(5_000, || {
        black_box(theirs.predict_i16(black_box(frames256[k % frames256.len()])));
        k += 1;
    });
    println!("{:<42} {crate_ns:>10.0} ns/call   (one 16 ms frame; the baseline of the next two)", "earshot crate predict_i16 (256 samples)");
    let mut detector = EarshotDetector::new();
    let ns = ns_per_call(5_000, || {
        black_box(detector.confidence(black_box(frames256[k % frames256.len()])));
        k += 1;
    });
    println!("{:<42} {ns:>10.0} ns/call   x{:.2} of the crate's", "EarshotDetector (256 samples)", ns / crate_ns);
    let mut many: Vec<EarshotDetector> = (0..1000).map(|_| EarshotDetector::new()).collect();
    let ns = ns_per_call(20_000, || {
        let d = &mut many[k % 1000];
        black_box(d.confidence(black_box(frames256[(k / 1000) % frames256.len()])));
        k += 1;
    });
    println!("{:<42} {ns:>10.0} ns/call   x{:.2} of the crate's", "EarshotDetector, 1,000 in turn", ns / crate_ns);

    let mut vad = VadMachine::earshot(VadParams::default()).expect("default params are valid");
    let mut events = Vec::with_capacity(4);
    let ns = ns_per_call(5_000, || {
        events.clear();
        vad.push(black_box(frames16[k % frames16.len()]), &mut events);
        black_box(&events);
        k += 1;
    });
    row("VAD machine + earshot, 16k (320 samples)", ns, copy320);

    // Memory: what one call holds for inbound 48k -> 16k + VAD and outbound 24k -> 48k.
    let vad_bytes = size_of::<VadMachine>() + vad.heap_bytes() + vad.detector().heap_bytes();
    let res_bytes = |r: &Resampler| size_of::<Resampler>() + r.heap_bytes();
    println!("\nmemory per instance (size_of + heap):");
    println!(
        "  VadMachine<EarshotDetector>: {vad_bytes} B (inline {} + frame {} + earshot state {})",
        size_of::<VadMachine>(),
        vad.heap_bytes(),
        vad.detector().heap_bytes()
    );
    println!(
        "  Resampler 48k -> 16k: {} B (+ {} B filter shared by all calls)",
        res_bytes(&down),
        down.filter_bytes()
    );
    println!(
        "  Resampler 16k -> 48k: {} B (+ {} B filter shared by all calls)",
        res_bytes(&up),
        up.filter_bytes()
    );
    println!(
        "  Resampler 24k -> 48k: {} B (+ {} B filter shared by all calls)",
        res_bytes(&tts),
        tts.filter_bytes()
    );
    println!(
        "  one call (VAD + 48k->16k in + 24k->48k out): {:.1} KiB",
        (vad_bytes + res_bytes(&down) + res_bytes(&tts)) as f64 / 1024.0
    );
    println!(
        "  resampler delay: 16k->48k {:.1} out samples ({:.2} ms), 48k->16k {:.1} ({:.2} ms)",
        up.delay(),
        up.delay() / 48.0,
        down.delay(),
        down.delay() / 16.0
    );
}
