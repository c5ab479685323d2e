//! Transcription of real speech (espeak-ng) with the real Whisper tiny.en model.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use voxgate_whisper::{Error, Whisper, Window};

fn model_dir() -> PathBuf {
    let dir = voxgate_models::model_dir(voxgate_models::WHISPER);
    for file in ["model.bin", "config.json", "vocabulary.txt"] {
        assert!(dir.join(file).is_file(), "{} is missing: run `voxgate models fetch`", dir.join(file).display());
    }
    dir
}

/// One model for the whole test binary, as a server would hold it.
fn whisper() -> &'static Whisper {
    static MODEL: OnceLock<Whisper> = OnceLock::new();
    MODEL.get_or_init(|| Whisper::load(&model_dir()).expect("the model loads"))
}

/// `text` spoken by espeak-ng, as 16 kHz f32 samples.
fn speak(text: &str) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng runs (apt-get install espeak-ng)");
    assert!(status.success());
    read_wav(&wav)
}

fn read_wav(path: &Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.bits_per_sample), (1, 16));
    let pcm: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let pcm = voxgate_audio::resample::resample_all(spec.sample_rate, 16_000, &pcm).unwrap();
    pcm.iter().map(|&s| f32::from(s) / 32_768.0).collect()
}

/// Each entry is a key word, or alternatives split by `|` (Whisper writes numbers as digits).
fn assert_words(transcript: &str, words: &[&str]) {
    let lower = transcript.to_lowercase();
    for word in words {
        assert!(word.split('|').any(|w| lower.contains(w)), "{word:?} is missing from {transcript:?}");
    }
}

const SENTENCES: &[(&str, &[&str])] = &[
    ("What is the capital of France?", &["capital", "france"]),
    // espeak-ng's "book" comes out as "look" or "work", even with the 30 s window.
    ("Please book a table for two at seven.", &["table", "seven|7"]),
    ("How is the weather today?", &["weather", "today"]),
    ("I would like to cancel my appointment on Monday.", &["cancel", "appointment", "monday"]),
];

#[test]
fn transcribes_spoken_sentences() {
    for (text, words) in SENTENCES {
        let transcript = whisper().transcribe(&speak(text)).unwrap();
        assert_words(&transcript, words);
        assert!(transcript.len() < 3 * text.len(), "runaway output: {transcript:?}");
    }
}

/// The trimmed window must not change what is heard, compared with Whisper's 30 s window.
#[test]
fn trimmed_window_matches_full_window() {
    for (text, words) in SENTENCES {
        let pcm = speak(text);
        let full = whisper().transcribe_with(&pcm, Window::Full).unwrap();
        let trimmed = whisper().transcribe(&pcm).unwrap();
        assert_words(&full, words);
        assert_words(&trimmed, words);
    }
}

#[test]
fn silence_gives_no_text() {
    let w = whisper();
    assert_eq!(w.transcribe(&vec![0.0; 48_000]).unwrap(), "");
    // Faint noise just above the silence gate goes through the model: the
    // no-speech rule must still drop it.
    let mut seed = 1u32;
    let noise: Vec<f32> = (0..48_000)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 0.004 - 0.002
        })
        .collect();
    let text = w.transcribe(&noise).unwrap();
    assert!(text.split_whitespace().count() <= 1, "noise gave {text:?}");
}

#[test]
fn empty_and_tiny_audio_give_no_text() {
    let w = whisper();
    assert_eq!(w.transcribe(&[]).unwrap(), "");
    assert_eq!(w.transcribe(&[0.5]).unwrap(), "");
    assert_eq!(w.transcribe(&[0.3; 800]).unwrap(), "");
}

#[test]
fn hostile_samples_do_not_panic() {
    let w = whisper();
    let mut pcm = speak("What is the capital of France?");
    // NaN and infinities sprinkled through speech: read as silence and clipped.
    for i in (0..pcm.len()).step_by(997) {
        pcm[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3];
    }
    assert_words(&w.transcribe(&pcm).unwrap(), &["capital", "france"]);
    for bad in [f32::NAN, f32::INFINITY, 1e30, -1e30, f32::MAX] {
        let text = w.transcribe(&vec![bad; 32_000]).unwrap();
        assert!(text.len() < 200, "{bad}: {text:?}");
    }
    // Loud speech far outside [-1, 1] is clipped, still transcribed without a panic.
    let loud: Vec<f32> = speak("How is the weather today?").iter().map(|s| s * 1e6).collect();
    w.transcribe(&loud).unwrap();
}

#[test]
fn concurrent_calls_are_both_right() {
    let w = whisper();
    let a = speak(SENTENCES[0].0);
    let b = speak(SENTENCES[1].0);
    std::thread::scope(|s| {
        let ta = s.spawn(|| w.transcribe(&a).unwrap());
        let tb = s.spawn(|| w.transcribe(&b).unwrap());
        assert_words(&ta.join().unwrap(), SENTENCES[0].1);
        assert_words(&tb.join().unwrap(), SENTENCES[1].1);
    });
}

#[test]
fn long_audio_is_transcribed_in_pieces() {
    let w = whisper();
    let first = speak("What is the capital of France?");
    let second = speak("How is the weather today?");
    // 28 s of silence between them pushes the second sentence past the 30 s mark.
    let mut pcm = first;
    pcm.extend(std::iter::repeat_n(0.0, 28 * 16_000));
    pcm.extend(&second);
    assert!(pcm.len() > 30 * 16_000);
    let text = w.transcribe(&pcm).unwrap();
    assert_words(&text, &["capital", "france", "weather", "today"]);
}

#[test]
fn too_long_audio_is_refused() {
    let pcm = vec![0.0; (voxgate_whisper::MAX_AUDIO_SECONDS as usize + 1) * 16_000];
    let err = whisper().transcribe(&pcm).unwrap_err();
    assert!(matches!(err, Error::AudioTooLong { .. }), "{err}");
}

#[test]
fn broken_model_folders_fail_with_clear_errors() {
    let src = model_dir();
    let dir = tempfile::tempdir().unwrap();
    // A truncated model.bin.
    let bytes = std::fs::read(src.join("model.bin")).unwrap();
    std::fs::write(dir.path().join("model.bin"), &bytes[..bytes.len() / 2]).unwrap();
    let err = Whisper::load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Ct2 { .. }), "{err}");
    assert!(err.to_string().contains("voxgate models fetch"), "{err}");

    // A good model.bin with a vocabulary of the wrong size.
    std::fs::write(dir.path().join("model.bin"), &bytes).unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::write(dir.path().join("vocabulary.txt"), "a\nb\n").unwrap();
    assert!(matches!(Whisper::load(dir.path()).unwrap_err(), Error::Vocabulary { .. }));

    // A config whose suppressed ids are out of range.
    std::fs::copy(src.join("vocabulary.txt"), dir.path().join("vocabulary.txt")).unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"suppress_ids": [99999999], "suppress_ids_begin": []}"#)
        .unwrap();
    let err = Whisper::load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    std::fs::write(dir.path().join("config.json"), "not json").unwrap();
    assert!(matches!(Whisper::load(dir.path()).unwrap_err(), Error::Config { .. }));

    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    Whisper::load(dir.path()).expect("the repaired folder loads");
}
