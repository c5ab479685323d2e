//! Token ids to text, from CTranslate2's `vocabulary.txt` (one token per line, line
//! number = id) holding GPT-2 byte-level BPE tokens. Only decoding is needed, so
//! this avoids the `tokenizers` crate: each token character stands for one byte
//! through GPT-2's `bytes_to_unicode` table.

use std::collections::HashMap;
use std::path::Path;

use crate::Error;

/// Largest `vocabulary.txt` accepted (tiny.en's is 420 KB).
const MAX_FILE_BYTES: u64 = 64 << 20;

pub struct Vocab {
    /// Byte sequences of the text tokens, indexed by id; special tokens are empty.
    tokens: Vec<Vec<u8>>,
    /// `<|...|>` tokens by name.
    special: HashMap<String, u32>,
}

/// GPT-2's byte-to-character table, inverted: character to byte.
fn char_to_byte() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("below the surrogates")
        };
        map.insert(c, b);
    }
    map
}

impl Vocab {
    pub fn read(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::Io { path: path.to_owned(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        let bad = |reason: String| Error::Vocabulary { path: path.to_owned(), reason };
        if size > MAX_FILE_BYTES {
            return Err(bad(format!("it is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        Self::parse(&text).map_err(bad)
    }

    /// Parses the text of a `vocabulary.txt`; the error says which line is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let map = char_to_byte();
        let mut tokens = Vec::new();
        let mut special = HashMap::new();
        for (id, line) in text.lines().enumerate() {
            if line.starts_with("<|") && line.ends_with("|>") {
                special.insert(line.to_owned(), id as u32);
                tokens.push(Vec::new());
                continue;
            }
            let bytes = line
                .chars()
                .map(|c| map.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| format!("line {} ({line:?}) is not a byte-level BPE token", id + 1))?;
            if bytes.is_empty() {
                return Err(format!("line {} is empty", id + 1));
            }
            tokens.push(bytes);
        }
        Ok(Self { tokens, special })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of a special token such as `<|endoftext|>`.
    pub fn special(&self, name: &str) -> Option<u32> {
        self.special.get(name).copied()
    }

    /// Text of the given ids, special tokens and unknown ids left out, trimmed.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> =
            ids.iter().filter_map(|&id| self.tokens.get(id as usize)).flatten().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let map = char_to_byte();
        assert_eq!(map.len(), 256);
        let mut seen = [false; 256];
        for &b in map.values() {
            seen[b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
    }

    #[test]
    fn decodes_and_skips_specials() {
        let v = Vocab::parse("Hello\nĠworld\n<|endoftext|>\nÃ©\n!").unwrap();
        assert_eq!(v.special("<|endoftext|>"), Some(2));
        assert_eq!(v.decode(&[0, 1, 2, 4]), "Hello world!");
        // "é" is the two bytes C3 A9, shown as "Ã©".
        assert_eq!(v.decode(&[3]), "é");
        assert_eq!(v.decode(&[99, 1]), "world");
    }

    #[test]
    fn rejects_non_bpe_lines() {
        assert!(Vocab::parse("a b").err().unwrap().contains("line 1"));
        assert!(Vocab::parse("a\n\nb").err().unwrap().contains("empty"));
    }
}
