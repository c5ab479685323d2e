//! Chunking properties: coverage, overlap, limits, boundaries, Unicode.

use voxgate_knowledge::{Chunk, ChunkOptions, chunk};

fn chars(text: &str) -> Vec<char> {
    text.chars().collect()
}

/// The invariants every chunking must keep.
fn check(text: &str, options: &ChunkOptions) -> Vec<Chunk> {
    let chunks = chunk(text, options);
    let all = chars(text);
    let mut covered = vec![false; all.len()];
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i);
        assert!(!c.text.trim().is_empty(), "chunk {i} is blank");
        assert_eq!(c.text, all[c.start_char..c.end_char].iter().collect::<String>(), "chunk {i} offsets");
        assert!(c.text.chars().count() <= options.max_chars.max(1), "chunk {i} has {} chars", c.text.chars().count());
        assert!(c.text.split_whitespace().count() <= options.target_words.max(1), "chunk {i} too many words");
        if i > 0 {
            assert!(c.start_char > chunks[i - 1].start_char, "chunk {i} does not advance");
        }
        covered[c.start_char..c.end_char].iter_mut().for_each(|x| *x = true);
    }
    for (i, ch) in all.iter().enumerate() {
        assert!(covered[i] || ch.is_whitespace(), "char {i} ({ch:?}) is in no chunk");
    }
    chunks
}

fn sentence(i: usize) -> String {
    format!("Sentence number {i} talks about topic {} in exactly ten words.", i % 7)
}

#[test]
fn short_paragraphs_become_one_chunk_each_without_overlap() {
    let paragraphs: Vec<String> = (0..3).map(|p| (0..6).map(|s| sentence(p * 10 + s)).collect::<Vec<_>>().join(" ")).collect();
    let text = paragraphs.join("\n\n");
    let chunks = check(&text, &ChunkOptions { target_words: 100, overlap_words: 20, max_chars: 2_000 });
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, paragraphs.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn long_paragraphs_are_cut_at_sentence_ends_with_overlap() {
    let text = (0..40).map(sentence).collect::<Vec<_>>().join(" ");
    let options = ChunkOptions { target_words: 35, overlap_words: 12, max_chars: 5_000 };
    let chunks = check(&text, &options);
    assert!(chunks.len() >= 10, "{} chunks", chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        assert!(c.text.ends_with('.'), "chunk {i} ends mid-sentence: {:?}", c.text);
        assert!(c.text.starts_with("Sentence"), "chunk {i} starts mid-sentence: {:?}", c.text);
        if i > 0 {
            assert!(c.start_char < chunks[i - 1].end_char, "chunk {i} does not overlap the one before");
        }
    }
}

#[test]
fn no_overlap_when_asked_for_none() {
    let text = (0..40).map(sentence).collect::<Vec<_>>().join(" ");
    let chunks = check(&text, &ChunkOptions { target_words: 30, overlap_words: 0, max_chars: 5_000 });
    for pair in chunks.windows(2) {
        assert!(pair[1].start_char >= pair[0].end_char);
    }
}

#[test]
fn a_giant_word_is_still_split_within_the_character_limit() {
    let word = "x".repeat(5_000);
    let text = format!("start {word} end");
    let chunks = check(&text, &ChunkOptions { target_words: 50, overlap_words: 5, max_chars: 400 });
    assert!(chunks.len() >= 13, "{} chunks", chunks.len());
}

#[test]
fn unicode_text_is_never_split_inside_a_character() {
    let text = "Ünïcödé 😀 façade 日本語のテキストです。 ".repeat(300) + &"🎉".repeat(3_000) + " 末尾。";
    for (target, overlap, max_chars) in [(7, 3, 50), (1, 0, 1), (40, 39, 97), (0, 0, 0)] {
        let options = ChunkOptions { target_words: target, overlap_words: overlap, max_chars };
        check(&text, &options);
    }
}

#[test]
fn lines_count_as_boundaries_and_empty_text_gives_no_chunks() {
    assert!(chunk("", &ChunkOptions::default()).is_empty());
    assert!(chunk(" \n\t\n ", &ChunkOptions::default()).is_empty());
    let rows = (0..50).map(|i| format!("name: row{i}; city: Paris; price: {i}")).collect::<Vec<_>>().join("\n");
    let chunks = check(&rows, &ChunkOptions { target_words: 20, overlap_words: 0, max_chars: 1_000 });
    for c in &chunks {
        assert!(c.text.starts_with("name:"), "{:?}", c.text);
    }
    let one = check("just one line", &ChunkOptions::default());
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].start_char, one[0].end_char), (0, 13));
}

#[test]
fn defaults_keep_chunks_under_the_model_window() {
    let text = (0..2_000).map(sentence).collect::<Vec<_>>().join(" ");
    let chunks = check(&text, &ChunkOptions::default());
    assert!(chunks.iter().all(|c| c.text.split_whitespace().count() <= 120));
}
