//! Grouping espeak-ng clauses into the utterances that the model speaks one at a time.

use std::collections::VecDeque;

use crate::Chunking;
use crate::error::Error;
use crate::espeak::{Clause, Clauses};

/// Once an utterance holds this many phonemes it ends at the next clause boundary.
const SOFT_MAX_PHONEMES: usize = 400;
/// No utterance is longer than this: longer ones are cut at word boundaries.
/// VITS attention cost grows with the square of the length.
pub(crate) const HARD_MAX_PHONEMES: usize = 600;

/// Yields the phonemes of each utterance, Piper's way: clause phonemes followed
/// by the clause's punctuation, a new utterance after `.`, `?` or `!` (or after
/// every clause with [`Chunking::Clause`]). Utterances with nothing to say
/// (only punctuation) are skipped.
pub(crate) struct Utterances {
    clauses: Clauses,
    chunking: Chunking,
    pending: VecDeque<String>,
}

impl Utterances {
    pub(crate) fn new(clauses: Clauses, chunking: Chunking) -> Self {
        Utterances {
            clauses,
            chunking,
            pending: VecDeque::new(),
        }
    }
}

impl Iterator for Utterances {
    type Item = Result<String, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(next) = self.pending.pop_front() {
                return Some(Ok(next));
            }
            let mut current = String::new();
            let mut count = 0;
            let mut exhausted = true;
            for clause in self.clauses.by_ref() {
                let Clause {
                    phonemes,
                    terminator,
                } = match clause {
                    Ok(clause) => clause,
                    Err(e) => return Some(Err(e)),
                };
                current.push_str(&phonemes);
                if let Some(t) = terminator {
                    current.push_str(t.phonemes());
                }
                count += phonemes.chars().count();
                let boundary = match self.chunking {
                    Chunking::Clause => true,
                    Chunking::Sentence => terminator.is_some_and(|t| t.ends_sentence()),
                };
                if boundary || count >= SOFT_MAX_PHONEMES {
                    exhausted = false;
                    break;
                }
            }
            let trimmed = current.trim_end();
            if trimmed.chars().any(char::is_alphabetic) {
                self.pending.extend(split_long(trimmed, HARD_MAX_PHONEMES));
            }
            if exhausted && self.pending.is_empty() {
                return None;
            }
        }
    }
}

/// Cuts `phonemes` into pieces of at most `max` characters, at spaces where possible.
pub(crate) fn split_long(phonemes: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest: Vec<char> = phonemes.chars().collect();
    while rest.len() > max {
        let cut = rest[..max]
            .iter()
            .rposition(|c| *c == ' ')
            .filter(|&i| i > 0)
            .unwrap_or(max);
        let piece: String = rest[..cut].iter().collect();
        pieces.push(piece.trim().to_string());
        rest.drain(..cut);
    }
    let last: String = rest.into_iter().collect();
    pieces.push(last.trim().to_string());
    pieces.retain(|p| p.chars().any(char::is_alphabetic));
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_phoneme_strings_are_cut_at_spaces() {
        let text = "abc def ghi jkl";
        assert_eq!(split_long(text, 8), vec!["abc def", "ghi jkl"]);
        assert_eq!(split_long("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(split_long("short", 10), vec!["short"]);
        assert!(split_long(" . , ", 10).is_empty());
        for piece in split_long(&"ab ".repeat(1000), 50) {
            assert!(piece.chars().count() <= 50);
        }
    }
}
