//! Whisper tiny.en timings: model load, and one 3-second spoken utterance with the
//! trimmed encoder window against Whisper's usual 30-second window, in one run.
//!
//! `CARGO_TARGET_DIR=/work/targets/whisper cargo bench -p voxgate-whisper --bench whisper`

use std::time::{Duration, Instant};

use voxgate_whisper::{Whisper, Window};

const SENTENCE: &str = "Could you tell me what the weather will be like in Paris tomorrow?";
const REPS: usize = 7;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn speak(text: &str) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    let ok = std::process::Command::new("espeak-ng").arg("-w").arg(&wav).arg(text).status().unwrap().success();
    assert!(ok, "espeak-ng failed");
    let mut reader = hound::WavReader::open(&wav).unwrap();
    let rate = reader.spec().sample_rate;
    let pcm: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let pcm = voxgate_audio::resample::resample_all(rate, 16_000, &pcm).unwrap();
    pcm.iter().map(|&s| f32::from(s) / 32_768.0).collect()
}

fn main() {
    let dir = voxgate_models::model_dir(voxgate_models::WHISPER);
    assert!(dir.join("model.bin").is_file(), "{} is missing: run `voxgate models fetch`", dir.display());

    let mut loads = Vec::new();
    let mut whisper = None;
    for _ in 0..3 {
        let start = Instant::now();
        whisper = Some(Whisper::load(&dir).expect("the model loads"));
        loads.push(start.elapsed());
    }
    let whisper = whisper.unwrap();
    println!("load_ms_median {:.1}", median(loads));

    let pcm = speak(SENTENCE);
    println!("utterance_s {:.2}", pcm.len() as f64 / 16_000.0);
    let trimmed_text = whisper.transcribe(&pcm).unwrap();
    let full_text = whisper.transcribe_with(&pcm, Window::Full).unwrap();
    println!("trimmed_text {trimmed_text:?}");
    println!("full_text {full_text:?}");

    let (mut trimmed, mut full) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        let start = Instant::now();
        whisper.transcribe(&pcm).unwrap();
        trimmed.push(start.elapsed());
        let start = Instant::now();
        whisper.transcribe_with(&pcm, Window::Full).unwrap();
        full.push(start.elapsed());
    }
    let (t, f) = (median(trimmed), median(full));
    println!("trimmed_ms_median {t:.1}");
    println!("full_30s_ms_median {f:.1}");
    println!("speedup {:.2}", f / t);
    println!("trimmed_rtf {:.3}", t / 1e3 / (pcm.len() as f64 / 16_000.0));
}
