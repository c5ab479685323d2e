//! WAV reading (`voxgate_audio::wav::read_wav_bytes`), then what `voxgate call` does
//! with the audio: resampling from the file's own rate to 16 kHz.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_audio::{resample, wav};

fuzz_target!(|data: &[u8]| {
    let Ok(audio) = wav::read_wav_bytes(data) else { return };
    assert!(audio.rate > 0);
    if let Ok(out) = resample::resample_all(audio.rate, 16_000, &audio.samples) {
        // Within a few samples of the exact length.
        let exact = audio.samples.len() as u64 * 16_000 / u64::from(audio.rate);
        assert!((out.len() as u64).abs_diff(exact) <= 64, "{} -> {} samples", audio.samples.len(), out.len());
    }
});
