//! The espeak-ng binding against the real library and data.

mod common;

use voxgate_piper::Error;
use voxgate_piper::espeak::{Espeak, Terminator};

fn espeak() -> Espeak {
    Espeak::load(&common::paths().espeak).expect("espeak-ng starts")
}

#[test]
fn hello_has_h_and_l() {
    let clauses = espeak().phonemize("hello", "en-us").unwrap();
    assert_eq!(clauses.len(), 1);
    let p = &clauses[0].phonemes;
    assert!(p.contains('h') && p.contains('l'), "{p}");
    // IPA, not espeak's ASCII mnemonics: a stress mark is there.
    assert!(p.contains('ˈ'), "{p}");
}

#[test]
fn clauses_keep_their_punctuation() {
    let clauses = espeak()
        .phonemize("Hello, world! How are you? Fine; thanks: ok.", "en-us")
        .unwrap();
    let terminators: Vec<_> = clauses.iter().map(|c| c.terminator).collect();
    assert_eq!(
        terminators,
        vec![
            Some(Terminator::Comma),
            Some(Terminator::Exclamation),
            Some(Terminator::Question),
            Some(Terminator::Semicolon),
            Some(Terminator::Colon),
            Some(Terminator::Period),
        ]
    );
    assert!(clauses.iter().all(|c| !c.phonemes.is_empty()));
}

#[test]
fn no_punctuation_no_terminator() {
    let clauses = espeak().phonemize("just some words", "en-us").unwrap();
    assert_eq!(clauses.len(), 1);
    assert_eq!(clauses[0].terminator, None);
}

#[test]
fn hostile_text_does_not_crash() {
    let e = espeak();
    for text in [
        "",
        "...",
        "?!,;:",
        "\0\0\u{1}\u{7f}\n\t",
        "😀🎉",
        "\u{202e}abc",
        "a\0b",
        "<speak>x</speak>",
        "&amp;",
    ] {
        let clauses = e.phonemize(text, "en-us").unwrap();
        for c in clauses {
            assert!(!c.phonemes.contains('\0'));
        }
    }
    // 50 KB with and without punctuation: every clause comes back, bounded.
    for text in ["word ".repeat(10_000), "Word, and more. ".repeat(3_200)] {
        let clauses = e.phonemize(&text, "en-us").unwrap();
        assert!(clauses.len() > 10, "{}", clauses.len());
        assert!(clauses.iter().all(|c| c.phonemes.chars().count() < 5_000));
    }
}

#[test]
fn unknown_voice_is_an_error() {
    let e = espeak();
    assert!(matches!(
        e.phonemize("hi", "xx-nope"),
        Err(Error::EspeakVoice { .. })
    ));
    assert!(matches!(
        e.phonemize("hi", "../../etc"),
        Err(Error::EspeakVoice { .. })
    ));
    // The engine still works afterwards.
    assert!(
        !e.phonemize("hello", "en-us").unwrap()[0]
            .phonemes
            .is_empty()
    );
}

#[test]
fn threads_share_espeak() {
    let e = espeak();
    let reference = e.phonemize("The quick brown fox.", "en-us").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| e.phonemize("The quick brown fox.", "en-us").unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for got in h.join().unwrap() {
            assert_eq!(got, reference);
        }
    }
}

#[test]
fn second_start_from_another_folder_is_an_error() {
    let first = espeak();
    let copy = tempfile::tempdir().unwrap();
    let src = common::paths().espeak;
    std::fs::copy(
        src.join("libespeak-ng.so"),
        copy.path().join("libespeak-ng.so"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        src.join("espeak-ng-data"),
        copy.path().join("espeak-ng-data"),
    )
    .unwrap();
    let err = Espeak::load(copy.path()).unwrap_err();
    assert!(
        matches!(err, Error::EspeakAlreadyInitialized { .. }),
        "{err}"
    );
    // The same folder again is fine, also through another spelling of it.
    Espeak::load(&src.join(".")).unwrap();
    assert!(!first.phonemize("ok", "en-us").unwrap().is_empty());
}

#[test]
fn no_leftovers_between_texts() {
    // espeak-ng reads one character past a clause and keeps it for the next
    // call: a text ending right after a clause must not leak into the next text.
    let e = espeak();
    let reference = e.phonemize("The quick brown fox.", "en-us").unwrap();
    let cut = e.phonemize("Hello, w", "en-us").unwrap();
    assert_eq!(cut.len(), 2, "{cut:?}");
    assert!(!cut[1].phonemes.is_empty(), "{cut:?}");
    assert_eq!(
        e.phonemize("The quick brown fox.", "en-us").unwrap(),
        reference
    );
    // An iterator dropped half-way leaves nothing behind either.
    let long = "First part, second part. ".repeat(100);
    let mut clauses = e.clauses(&long, "en-us").unwrap();
    clauses.next().unwrap().unwrap();
    drop(clauses);
    assert_eq!(
        e.phonemize("The quick brown fox.", "en-us").unwrap(),
        reference
    );
}
