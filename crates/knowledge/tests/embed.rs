//! The real all-MiniLM-L6-v2 model: shape, normalisation, known similarities,
//! batching, edge inputs.

mod common;

use std::sync::OnceLock;

use voxgate_knowledge::{DIMENSIONS, EmbedError, Embedder, dot};

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| Embedder::load(&common::minilm_dir()).unwrap_or_else(|e| panic!("{e}")))
}

fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

#[test]
fn vectors_have_384_unit_dimensions() {
    let v = embedder().embed(&["How do I reset my password?", "a"]).unwrap();
    assert_eq!(v.len(), 2);
    for x in &v {
        assert_eq!(x.len(), DIMENSIONS);
        assert!((norm(x) - 1.0).abs() < 1e-4, "norm {}", norm(x));
        assert!(x.iter().all(|f| f.is_finite()));
    }
}

/// The similarities sentence-transformers documents for this model
/// ("The weather is lovely today." etc.: 0.6660, 0.1046, 0.1411).
#[test]
fn matches_the_published_sentence_transformers_similarities() {
    let v = embedder().embed(&["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]).unwrap();
    let got = [dot(&v[0], &v[1]), dot(&v[0], &v[2]), dot(&v[1], &v[2])];
    for (g, want) in got.iter().zip([0.6660f32, 0.1046, 0.1411]) {
        assert!((g - want).abs() < 0.005, "similarities {got:?}, published [0.6660, 0.1046, 0.1411]");
    }
}

#[test]
fn paraphrases_are_much_closer_than_unrelated_sentences() {
    let v = embedder()
        .embed(&["How do I reset my password?", "Steps to change a forgotten password", "The weather is sunny in Madrid"])
        .unwrap();
    let paraphrase = dot(&v[0], &v[1]);
    let unrelated = dot(&v[0], &v[2]);
    assert!(paraphrase > 0.5, "paraphrase {paraphrase}");
    assert!(paraphrase - unrelated > 0.4, "paraphrase {paraphrase}, unrelated {unrelated}");
}

#[test]
fn a_batch_gives_the_same_vectors_as_one_at_a_time() {
    let texts: Vec<String> = (0..37)
        .map(|i| format!("Text {i}: {}", "the quick brown fox jumps over the lazy dog ".repeat(i % 9 + 1)))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batched = embedder().embed(&refs).unwrap();
    for (i, text) in refs.iter().enumerate() {
        let single = &embedder().embed(&[text]).unwrap()[0];
        let worst = batched[i].iter().zip(single).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "text {i}: batched and single differ by {worst}");
    }
}

#[test]
fn empty_and_very_long_inputs_are_embedded() {
    let e = embedder();
    assert!(e.embed(&[]).unwrap().is_empty());
    let empty = &e.embed(&[""]).unwrap()[0];
    assert!((norm(empty) - 1.0).abs() < 1e-4);

    // Past 256 tokens the rest is ignored: a long text and the same text with a
    // different tail embed alike.
    let head = "Refunds are paid within fourteen days of the return of the goods. ".repeat(40);
    let a = format!("{head} The tail says one thing about shipping to Canada.");
    let b = format!("{head} Completely different words at the very end about cats.");
    let v = e.embed(&[&a, &b]).unwrap();
    assert!(dot(&v[0], &v[1]) > 0.9999, "{}", dot(&v[0], &v[1]));
    let huge = "word ".repeat(200_000);
    assert_eq!(e.embed(&[&huge]).unwrap()[0].len(), DIMENSIONS);
}

#[test]
fn a_missing_model_folder_says_to_fetch_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let err = Embedder::load(dir.path()).unwrap_err();
    assert!(matches!(err, EmbedError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("voxgate models fetch"), "{err}");
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    std::fs::write(dir.path().join("model.safetensors"), "xx").unwrap();
    let err = Embedder::load(dir.path()).unwrap_err();
    assert!(matches!(&err, EmbedError::BadFile { path, .. } if path.ends_with("config.json")), "{err}");
}

#[test]
fn the_embedder_is_shared_across_threads() {
    let e = embedder().clone();
    let want = e.embed(&["shared"]).unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| assert_eq!(e.embed(&["shared"]).unwrap(), want));
        }
    });
}
