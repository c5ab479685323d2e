//! Speaking with the real Piper voice.

mod common;

use common::{piper, rms};
use voxgate_piper::{Chunking, Error, MAX_SYNTHESIZE_BYTES};

fn seconds(samples: usize) -> f64 {
    samples as f64 / piper().sample_rate() as f64
}

/// Speech, not silence and not noise: loud enough, rarely at full scale, and
/// with the quiet gaps between words that noise does not have.
fn assert_speech(pcm: &[i16]) {
    let level = rms(pcm);
    assert!(level > 300.0, "too quiet: rms {level}");
    let clipped = pcm.iter().filter(|s| s.unsigned_abs() >= 32_000).count();
    assert!(
        clipped * 1000 < pcm.len(),
        "{clipped} of {} samples clipped",
        pcm.len()
    );
    let frame = piper().sample_rate() as usize / 50;
    let frames: Vec<f64> = pcm.chunks(frame).map(rms).collect();
    let quiet = frames.iter().filter(|&&f| f < level / 4.0).count();
    assert!(
        quiet * 20 > frames.len(),
        "no pauses: {quiet} quiet of {} frames",
        frames.len()
    );
}

#[test]
fn sample_rate_is_the_voices() {
    assert_eq!(piper().sample_rate(), 22_050);
}

#[test]
fn a_sentence_sounds_like_a_sentence() {
    let pcm = piper()
        .synthesize("The capital of France is Paris.")
        .unwrap();
    let s = seconds(pcm.len());
    assert!((1.0..4.0).contains(&s), "{s} s");
    assert_speech(&pcm);
}

#[test]
fn longer_text_gives_longer_audio() {
    let short = piper().synthesize("Yes.").unwrap();
    let long = piper()
        .synthesize("Yes. I can book a table for four people at eight tonight, if you like.")
        .unwrap();
    assert!(!short.is_empty());
    assert!(
        long.len() > 3 * short.len(),
        "{} vs {}",
        long.len(),
        short.len()
    );
    assert_speech(&long);
}

#[test]
fn two_threads_at_once() {
    let texts = [
        "The capital of France is Paris.",
        "Your order will arrive on Tuesday morning.",
    ];
    let handles: Vec<_> = texts
        .into_iter()
        .map(|t| std::thread::spawn(move || piper().synthesize(t)))
        .collect();
    for h in handles {
        let pcm = h.join().expect("no panic").expect("synthesis works");
        assert_speech(&pcm);
    }
}

#[test]
fn stream_yields_each_sentence() {
    let text = "Sure, I can help with that. Your appointment is on Tuesday at three.";
    let sentences: Vec<Vec<i16>> = piper()
        .stream(text, Chunking::Sentence)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sentences.len(), 2);
    let clauses: Vec<Vec<i16>> = piper()
        .stream(text, Chunking::Clause)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(clauses.len(), 3);
    // The first clause ("Sure,") is much shorter than the first sentence.
    assert!(
        clauses[0].len() * 2 < sentences[0].len(),
        "{} vs {}",
        clauses[0].len(),
        sentences[0].len()
    );
    for pcm in sentences.iter().chain(&clauses[1..]) {
        assert_speech(pcm);
    }
    // synthesize() is the sentences with 0.2 s between them.
    let whole = piper().synthesize(text).unwrap();
    let gap = piper().sample_rate() as usize / 5;
    let expected = sentences.iter().map(Vec::len).sum::<usize>() + gap;
    // VITS durations are sampled (noise_w), so lengths vary a little.
    let diff = whole.len().abs_diff(expected) as f64 / expected as f64;
    assert!(diff < 0.25, "{} vs {expected}", whole.len());
}

#[test]
fn phonemes_are_pipers() {
    let p = piper()
        .phonemes("Hello, world! How are you?", Chunking::Sentence)
        .unwrap();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].ends_with('!') && p[0].contains(", "), "{p:?}");
    assert!(p[1].ends_with('?'), "{p:?}");
}

#[test]
fn nothing_to_say_is_empty_audio() {
    for text in [
        "",
        "   ",
        "...",
        "?!,;:",
        "\n\t\r",
        "\0\u{1}\u{1b}\u{7f}",
        "- - -",
    ] {
        let pcm = piper()
            .synthesize(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(pcm.is_empty(), "{text:?} gave {} samples", pcm.len());
    }
}

#[test]
fn hostile_text_never_panics() {
    let cases = [
        "😀🎉🔥",
        "Hello 😀 world",
        "a\0b\u{7}c",
        "\u{202e}evil\u{202c} text",
        "ﷺ ﷽ 𒐫",
        "日本語のテキスト",
        "<speak><break time='10s'/></speak>",
        "&amp; &#x41; &lt;",
        "1234567890123456789012345678901234567890",
        "http://example.com/a?b=c&d=e#f",
        "Z\u{0301}\u{0302}\u{0303}\u{0304}\u{0305}\u{0306}algo",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];
    for text in cases {
        match piper().synthesize(text) {
            Ok(pcm) => assert!(seconds(pcm.len()) < 30.0, "{text:?}"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn text_without_any_punctuation_is_cut_into_bounded_pieces() {
    // ~4 KB of words and no punctuation: no single inference gets all of it.
    let text = "hello there my friend ".repeat(180);
    assert!(text.len() <= MAX_SYNTHESIZE_BYTES);
    let phonemes = piper().phonemes(&text, Chunking::Sentence).unwrap();
    assert!(phonemes.len() > 1);
    assert!(phonemes.iter().all(|p| p.chars().count() <= 600));
    let mut stream = piper().stream(&text, Chunking::Sentence);
    assert_speech(&stream.next().unwrap().unwrap());
}

#[test]
fn fifty_kilobytes() {
    let text = "This is a sentence that goes on. ".repeat(1_600);
    assert!(text.len() >= 50_000);
    assert!(matches!(
        piper().synthesize(&text),
        Err(Error::TextTooLong { .. })
    ));
    // Streaming takes it, and the first pieces come without reading the rest.
    let mut stream = piper().stream(&text, Chunking::Sentence);
    for _ in 0..2 {
        assert_speech(&stream.next().unwrap().unwrap());
    }
}
