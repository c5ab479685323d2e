//! Splitting text into overlapping chunks that fit the embedder, cut at paragraph,
//! then sentence (UAX #29, unicode-segmentation), then word boundaries.

use unicode_segmentation::UnicodeSegmentation;

/// How [`chunk`] sizes its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Words per chunk, at most (default 120: about 160 MiniLM tokens, under its
    /// 256-token window).
    pub target_words: usize,
    /// Words a chunk repeats from the end of the one before when it had to cut
    /// inside a paragraph (default 20). No overlap after a paragraph break.
    pub overlap_words: usize,
    /// Characters per chunk, at most (default 1,000); a longer "word" (a URL, a
    /// run of text without spaces) is cut between characters.
    pub max_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions { target_words: 120, overlap_words: 20, max_chars: 1_000 }
    }
}

/// A piece of a text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    /// Position in the sequence, from 0.
    pub index: usize,
    /// The text of the chunk, exactly `text[start_char..end_char]` counted in chars.
    pub text: String,
    /// Offset of the first character in the whole text, in Unicode scalar values
    /// (chars), not bytes.
    pub start_char: usize,
    /// Offset just past the last character, in chars.
    pub end_char: usize,
}

/// Breaks before a word, weakest to strongest.
const GLUED: u8 = 0;
const SPACE: u8 = 1;
const SENTENCE: u8 = 2;
const PARAGRAPH: u8 = 3;

struct Word {
    start: usize,
    end: usize,
    start_char: usize,
    end_char: usize,
    /// How strong the boundary before this word is.
    brk: u8,
}

/// Splits `text` into chunks of at most `target_words` words and `max_chars`
/// characters, ending at the strongest boundary (paragraph, then sentence or line,
/// then word) in the second half of the window. Every non-whitespace character of
/// the text is in at least one chunk; no chunk is empty or only whitespace; chunks
/// never split a character. Zero options are treated as 1.
pub fn chunk(text: &str, options: &ChunkOptions) -> Vec<Chunk> {
    let target = options.target_words.max(1);
    let max_chars = options.max_chars.max(1);
    let words = words(text, (max_chars / 4).max(1));
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut e = i + 1;
        while e < words.len() && e - i < target && words[e].end_char - words[i].start_char <= max_chars {
            e += 1;
        }
        if e < words.len() {
            let min_end = i + ((e - i) / 2).max(1);
            let best = (min_end..=e).max_by_key(|&k| words[k].brk).unwrap_or(e);
            if words[best].brk > SPACE || words[e].brk == GLUED {
                e = best;
            }
        }
        let (first, last) = (&words[i], &words[e - 1]);
        chunks.push(Chunk {
            index: chunks.len(),
            text: text[first.start..last.end].to_string(),
            start_char: first.start_char,
            end_char: last.end_char,
        });
        if e == words.len() {
            break;
        }
        i = if words[e].brk == PARAGRAPH || options.overlap_words == 0 {
            e
        } else {
            let from = e.saturating_sub(options.overlap_words).max(i + 1);
            (from..e).find(|&k| words[k].brk >= SENTENCE).or_else(|| (from..e).find(|&k| words[k].brk > GLUED)).unwrap_or(e)
        };
    }
    chunks
}

/// The words of `text` (runs of non-whitespace, longer ones cut every `max_word`
/// chars) with byte and char offsets and the boundary before each.
fn words(text: &str, max_word: usize) -> Vec<Word> {
    let mut sentence_starts = text
        .split_sentence_bound_indices()
        .filter_map(|(at, s)| s.char_indices().find(|(_, c)| !c.is_whitespace()).map(|(o, _)| at + o))
        .peekable();
    let mut words: Vec<Word> = Vec::new();
    let mut current: Option<Word> = None;
    let mut gap_newlines = 0;
    let mut chars_in_word = 0;
    for (char_index, (byte, c)) in text.char_indices().enumerate() {
        if c.is_whitespace() {
            if let Some(w) = current.take() {
                words.push(w);
            }
            if c == '\n' {
                gap_newlines += 1;
            }
        } else {
            let split_long = current.is_some() && chars_in_word >= max_word;
            if split_long && let Some(w) = current.take() {
                words.push(w);
            }
            match current.as_mut() {
                Some(w) => {
                    w.end = byte + c.len_utf8();
                    w.end_char = char_index + 1;
                    chars_in_word += 1;
                }
                None => {
                    while sentence_starts.next_if(|&s| s < byte).is_some() {}
                    let brk = if words.is_empty() {
                        PARAGRAPH
                    } else if split_long {
                        GLUED
                    } else if gap_newlines >= 2 {
                        PARAGRAPH
                    } else if gap_newlines == 1 || sentence_starts.peek() == Some(&byte) {
                        SENTENCE
                    } else {
                        SPACE
                    };
                    current = Some(Word { start: byte, end: byte + c.len_utf8(), start_char: char_index, end_char: char_index + 1, brk });
                    chars_in_word = 1;
                    gap_newlines = 0;
                }
            }
        }
    }
    words.extend(current);
    words
}
