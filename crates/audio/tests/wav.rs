//! WAV read and write against real files: what we write, what hound writes in other
//! formats, what espeak-ng writes, and garbage.

mod common;

use std::io::Cursor;

use common::{noise, sine};
use hound::{SampleFormat, WavSpec, WavWriter};
use voxgate_audio::AudioError;
use voxgate_audio::wav::{read_wav_bytes, read_wav_file, wav_bytes, write_wav_file};

/// Write `frames` (one Vec per frame, one value per channel) with hound in the given format.
fn hound_wav(channels: u16, bits: u16, format: SampleFormat, frames: &[Vec<f64>]) -> Vec<u8> {
    let spec = WavSpec {
        channels,
        sample_rate: 24000,
        bits_per_sample: bits,
        sample_format: format,
    };
    let mut cursor = Cursor::new(Vec::new());
    let mut w = WavWriter::new(&mut cursor, spec).unwrap();
    for frame in frames {
        for &v in frame {
            match format {
                SampleFormat::Float => w.write_sample(v as f32).unwrap(),
                SampleFormat::Int => {
                    let scale = f64::from(1u32 << (bits - 1)) - 1.0;
                    w.write_sample((v * scale).round() as i32).unwrap()
                }
            }
        }
    }
    w.finalize().unwrap();
    cursor.into_inner()
}

#[test]
fn mono_pcm16_round_trips_through_bytes_and_files() {
    let samples = sine(440.0, 16000, 0.25, 0.8);
    let bytes = wav_bytes(&samples, 16000).unwrap();
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(bytes.len(), 44 + samples.len() * 2);
    let back = read_wav_bytes(&bytes).unwrap();
    assert_eq!(back.rate, 16000);
    assert_eq!(back.samples, samples);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.wav");
    write_wav_file(&path, &samples, 8000).unwrap();
    let back = read_wav_file(&path).unwrap();
    assert_eq!((back.rate, back.samples), (8000, samples));
    // Long enough to span several write chunks, and empty.
    let long = noise(10_000, 0.5, 7);
    assert_eq!(
        read_wav_bytes(&wav_bytes(&long, 48000).unwrap())
            .unwrap()
            .samples,
        long
    );
    assert!(
        read_wav_bytes(&wav_bytes(&[], 48000).unwrap())
            .unwrap()
            .samples
            .is_empty()
    );
}

#[test]
fn other_formats_and_stereo_mix_to_mono_i16() {
    let values = [0.0, 0.5, -0.5, 0.25, -1.0, 0.999];
    let mono: Vec<Vec<f64>> = values.iter().map(|&v| vec![v]).collect();
    for (bits, format) in [
        (8, SampleFormat::Int),
        (16, SampleFormat::Int),
        (24, SampleFormat::Int),
        (32, SampleFormat::Int),
        (32, SampleFormat::Float),
    ] {
        let audio = read_wav_bytes(&hound_wav(1, bits, format, &mono)).unwrap();
        assert_eq!(audio.rate, 24000);
        assert_eq!(audio.samples.len(), values.len());
        // 8-bit keeps 8 bits of precision; the rest are exact to a step of 16-bit.
        let tolerance = if bits == 8 { 300 } else { 2 };
        for (got, want) in audio.samples.iter().zip(values) {
            let want = want * 32767.0;
            assert!(
                (f64::from(*got) - want).abs() <= f64::from(tolerance),
                "{bits}-bit {format:?}: {got} vs {want}"
            );
        }
    }
    // Stereo: left and right are averaged.
    let stereo: Vec<Vec<f64>> = vec![vec![0.5, -0.5], vec![0.5, 0.0], vec![-1.0, -1.0]];
    for (bits, format) in [
        (16, SampleFormat::Int),
        (24, SampleFormat::Int),
        (32, SampleFormat::Float),
    ] {
        let audio = read_wav_bytes(&hound_wav(2, bits, format, &stereo)).unwrap();
        assert_eq!(audio.samples.len(), 3);
        assert!(audio.samples[0].abs() <= 1, "{:?}", audio.samples);
        assert!(
            (i32::from(audio.samples[1]) - 8192).abs() <= 1,
            "{:?}",
            audio.samples
        );
        assert!(audio.samples[2] <= -32766, "{:?}", audio.samples);
    }
}

#[test]
fn garbage_is_a_clear_error() {
    for bytes in [
        &b""[..],
        b"hello",
        b"RIFF",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        &[0xFF; 100],
    ] {
        let err = read_wav_bytes(bytes).unwrap_err();
        assert!(matches!(err, AudioError::Wav(_)), "{err}");
        assert!(err.to_string().starts_with("invalid WAV"), "{err}");
    }
    // Random bytes, and real headers with random bodies, never panic.
    let real = wav_bytes(&sine(440.0, 16000, 0.05, 0.5), 16000).unwrap();
    for seed in 1..300u64 {
        let junk: Vec<u8> = noise(200, 1.0, seed)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let _ = read_wav_bytes(&junk);
        let mut mutated = real.clone();
        let at = (seed as usize * 7) % 44;
        mutated[at] = junk[0];
        mutated[(at + 13) % 44] = junk[1];
        let _ = read_wav_bytes(&mutated);
    }
}

#[test]
fn a_truncated_file_is_an_error_not_a_short_read() {
    let real = wav_bytes(&sine(440.0, 16000, 0.1, 0.5), 16000).unwrap();
    // Cut inside the header, and mid-sample inside the data.
    for cut in [10, 30, 43, 44 + 101] {
        let err = read_wav_bytes(&real[..cut]).unwrap_err();
        assert!(matches!(err, AudioError::Wav(_)), "cut at {cut}: {err}");
    }
    // Cut on a sample boundary: the header promises more data than there is.
    let err = read_wav_bytes(&real[..44 + 200]).unwrap_err();
    assert!(matches!(err, AudioError::Wav(_)), "{err}");
    // Stereo cut between the channels of a frame.
    let stereo = hound_wav(2, 16, SampleFormat::Int, &[vec![0.1, 0.2], vec![0.3, 0.4]]);
    assert!(read_wav_bytes(&stereo[..stereo.len() - 2]).is_err());
}

#[test]
fn espeak_output_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.wav");
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&path)
        .arg("hello")
        .status();
    let Ok(status) = status else {
        panic!("espeak-ng is needed for this test (apt-get install espeak-ng)");
    };
    assert!(status.success());
    let audio = read_wav_file(&path).unwrap();
    assert_eq!(audio.rate, 22050);
    assert!(
        audio.samples.len() > 22050 / 4,
        "{} samples",
        audio.samples.len()
    );
    assert!(read_wav_file(dir.path().join("missing.wav")).is_err());
}
