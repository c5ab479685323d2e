//! Everything `voxgate_knowledge::ingest` does to an upload before embedding: the
//! declared name cleaned (`safe_file_name`), the type sniffed, the text extracted
//! (text, Markdown, CSV, HTML, PDF) under the server's limits, and chunked; and the
//! stored vector blobs read back (`decode_vector`).
//!
//! Input: one byte N, then N bytes of declared name (lossy UTF-8), then the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_knowledge::{ChunkOptions, Limits, MAX_FILE_NAME_CHARS, chunk, decode_vector, extract, safe_file_name};

/// The names the sniffing gives a meaning to, picked by the name's first byte when
/// the name is a single byte: so the fuzzer reaches every text format cheaply.
const NAMES: [&str; 8] = ["notes.txt", "readme.md", "table.csv", "table.tsv", "page.html", "doc.pdf", "upload", "x.xhtml"];

fuzz_target!(|data: &[u8]| {
    voxgate_fuzz::contain_third_party_panics();
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n).min(rest.len());
    let (name, bytes) = rest.split_at(n);
    let name = match name {
        [b] => NAMES[usize::from(*b) % NAMES.len()].to_string(),
        _ => String::from_utf8_lossy(name).into_owned(),
    };

    let clean = safe_file_name(&name);
    assert!(!clean.is_empty() && clean.chars().count() <= MAX_FILE_NAME_CHARS, "{clean:?}");
    assert!(!clean.contains(['/', '\\', '\0']), "{clean:?}");

    let _ = decode_vector(bytes);

    // The server's limits (UPLOAD_MAX_BYTES is 10 MiB by default).
    let limits = Limits { max_input_bytes: 10 * 1024 * 1024, ..Limits::default() };
    match extract(bytes, &name, &limits) {
        Ok(doc) => {
            assert!(!doc.text.trim().is_empty());
            assert_eq!(doc.name, clean);
            let total = doc.text.chars().count();
            for options in [ChunkOptions::default(), ChunkOptions { target_words: 3, overlap_words: 1, max_chars: 16 }] {
                let chunks = chunk(&doc.text, &options);
                assert!(!chunks.is_empty());
                for (i, c) in chunks.iter().enumerate() {
                    assert_eq!(c.index, i);
                    assert!(c.start_char < c.end_char && c.end_char <= total, "{c:?} of {total}");
                    assert!(!c.text.trim().is_empty());
                    assert!(c.text.chars().count() <= options.max_chars);
                }
            }
        }
        Err(e) => {
            // Every refusal is the client's to fix: a 4xx.
            assert!((400..500).contains(&e.http_status()), "{e:?}");
            let _ = (e.code(), e.to_string());
        }
    }
});
