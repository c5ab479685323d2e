//! CTranslate2's `vocabulary.txt` (`voxgate_whisper::vocab::Vocab::parse`) and decoding
//! token ids with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_whisper::vocab::Vocab;

fuzz_target!(|data: &[u8]| {
    // `Vocab::read` refuses non-UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(vocab) = Vocab::parse(text) else { return };
    let _ = vocab.special("<|endoftext|>");
    let n = vocab.len() as u32;
    let ids: Vec<u32> = (0..n.min(64)).chain([n, u32::MAX]).collect();
    let _ = vocab.decode(&ids);
});
