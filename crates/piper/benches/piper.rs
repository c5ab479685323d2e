//! Piper speed on this machine: load time, real-time factor, and time to the
//! first audio of a two-sentence reply, streamed (first clause, first
//! sentence) versus the naive baseline (synthesize the whole reply, then play).
//!
//! `cargo bench -p voxgate-piper --bench piper` (release). Plain numbers, medians.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use voxgate_piper::{Chunking, Piper, PiperOptions};

const REPLY: &str =
    "Sure, I can help with that. Your appointment is booked for Tuesday at three in the afternoon.";
const REPS: usize = 9;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

/// Resident memory of this process, from /proc.
fn rss_mib() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.map_or("?".into(), |k| (k / 1024).to_string())
}

/// CPU time used so far by all threads of this process (ns on CPU, from
/// /proc/self/task/*/schedstat): compute cost, apart from waiting for a core.
fn cpu_seconds() -> f64 {
    let tasks = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten();
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    ns as f64 / 1e9
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

fn main() {
    let voice =
        voxgate_models::model_dir(voxgate_models::PIPER_VOICE).join("en_US-joe-medium.onnx");
    let onnxruntime =
        voxgate_models::model_dir(voxgate_models::ONNXRUNTIME).join("libonnxruntime.so");
    let espeak: PathBuf = voxgate_models::model_dir(voxgate_models::ESPEAK_NG);
    for p in [&voice, &onnxruntime, &espeak] {
        assert!(
            p.exists(),
            "{} is missing: run `voxgate models fetch`",
            p.display()
        );
    }
    println!("reply: {REPLY:?}");
    println!("repetitions: {REPS} (medians, milliseconds)");
    for threads in [1, 2] {
        let (load, piper) = timed(|| {
            Piper::load(
                &voice,
                &onnxruntime,
                &espeak,
                PiperOptions {
                    intra_threads: threads,
                    sessions: 1,
                },
            )
            .unwrap()
        });
        let rate = piper.sample_rate() as f64;
        // Warm-up: first runs allocate and tune.
        for _ in 0..2 {
            piper.synthesize(REPLY).unwrap();
        }
        let (mut whole, mut first_sentence, mut first_clause, mut phonemize) =
            (vec![], vec![], vec![], vec![]);
        let mut rtf = vec![];
        let mut audio_seconds = 0.0;
        let (mut cpu, mut audio_total) = (0.0, 0.0);
        for _ in 0..REPS {
            let cpu_before = cpu_seconds();
            let (t, pcm) = timed(|| piper.synthesize(REPLY).unwrap());
            cpu += cpu_seconds() - cpu_before;
            audio_seconds = pcm.len() as f64 / rate;
            audio_total += audio_seconds;
            rtf.push(Duration::from_secs_f64(t.as_secs_f64() / audio_seconds));
            whole.push(t);
            let (t, first) = timed(|| {
                piper
                    .stream(REPLY, Chunking::Sentence)
                    .next()
                    .unwrap()
                    .unwrap()
            });
            assert!(!first.is_empty());
            first_sentence.push(t);
            let (t, first) = timed(|| {
                piper
                    .stream(REPLY, Chunking::Clause)
                    .next()
                    .unwrap()
                    .unwrap()
            });
            assert!(!first.is_empty());
            first_clause.push(t);
            let (t, _) = timed(|| piper.phonemes(REPLY, Chunking::Sentence).unwrap());
            phonemize.push(t);
        }
        let baseline = median(whole);
        let sentence = median(first_sentence);
        let clause = median(first_clause);
        println!("\nintra_threads {threads}");
        println!("  load_ms {:.1}", load.as_secs_f64() * 1000.0);
        println!("  process_rss_mib {}", rss_mib());
        println!("  reply_audio_s {audio_seconds:.2}");
        println!("  phonemize_whole_reply_ms {:.2}", median(phonemize));
        println!("  baseline_first_audio_ms {baseline:.1}   (synthesize whole reply, then play)");
        println!(
            "  first_sentence_audio_ms {sentence:.1}   ratio_vs_baseline {:.2}",
            sentence / baseline
        );
        println!(
            "  first_clause_audio_ms {clause:.1}   ratio_vs_baseline {:.2}",
            clause / baseline
        );
        println!("  rtf {:.4}   (wall clock)", median(rtf) / 1000.0);
        println!(
            "  cpu_rtf {:.4}   (CPU seconds of all threads per second of audio)",
            cpu / audio_total
        );
        println!(
            "  load_average {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
}
