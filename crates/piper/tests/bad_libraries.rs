//! Files that are not the libraries they claim to be. Loading a library is
//! process-wide, so this runs as one sequence in its own test process, and
//! ends by loading the real libraries: failures must leave nothing behind.

mod common;

use std::path::Path;

use voxgate_piper::{Error, Piper, PiperOptions};

fn assert_names(err: &Error, path: &Path) {
    eprintln!("{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{msg} does not name {}",
        path.display()
    );
    assert!(msg.contains("voxgate models fetch"), "{msg}");
}

/// An espeak-ng folder with the real data and `library` as its library.
fn espeak_dir_with(library: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("libespeak-ng.so"), library).unwrap();
    std::os::unix::fs::symlink(
        common::paths().espeak.join("espeak-ng-data"),
        dir.path().join("espeak-ng-data"),
    )
    .unwrap();
    dir
}

#[test]
fn libraries_that_are_not_what_they_claim() {
    let p = common::paths();
    let libm = std::fs::read("/lib/x86_64-linux-gnu/libm.so.6")
        .or_else(|_| std::fs::read("/usr/lib/x86_64-linux-gnu/libm.so.6"));
    let not_espeak = [
        b"not a library".to_vec(),
        Vec::new(),
        libm.expect("libm is there"),
    ];
    for library in not_espeak {
        let dir = espeak_dir_with(&library);
        let err = Piper::load(
            &p.voice,
            &p.onnxruntime,
            dir.path(),
            PiperOptions::default(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::EspeakLibrary { .. }), "{err}");
        assert_names(
            &err,
            &std::fs::canonicalize(dir.path())
                .unwrap()
                .join("libespeak-ng.so"),
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("libonnxruntime.so");
    std::fs::write(&garbage, b"\x7fELF but not really").unwrap();
    let other_library = p.espeak.join("libespeak-ng.so");
    for library in [garbage.as_path(), other_library.as_path()] {
        let err = Piper::load(&p.voice, library, &p.espeak, PiperOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::OnnxRuntime { .. }), "{err}");
        assert_names(&err, &std::fs::canonicalize(library).unwrap());
    }

    // After all that, the real libraries load and speak.
    let piper = Piper::load(&p.voice, &p.onnxruntime, &p.espeak, PiperOptions::default()).unwrap();
    assert!(!piper.synthesize("Hello.").unwrap().is_empty());

    // And a second ONNX Runtime from another file is refused, not loaded.
    let copy = tmp.path().join("copy-libonnxruntime.so");
    std::os::unix::fs::symlink(&other_library, &copy).unwrap();
    let err = Piper::load(&p.voice, &copy, &p.espeak, PiperOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::OnnxRuntimeAlreadyLoaded { .. }),
        "{err}"
    );
}
