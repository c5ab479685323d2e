//! espeak-ng refusing a broken data folder. A failed start inside espeak-ng
//! leaves its globals half set, so it is final for the process: this runs in
//! its own test process.

mod common;

use voxgate_piper::Error;
use voxgate_piper::espeak::Espeak;

#[test]
fn broken_data_is_an_error_and_stays_one() {
    let src = common::paths().espeak;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("libespeak-ng.so"),
        dir.path().join("libespeak-ng.so"),
    )
    .unwrap();
    let data = dir.path().join("espeak-ng-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("phontab"), b"not phoneme tables").unwrap();

    let err = Espeak::load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::EspeakInit { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("espeak-ng-data") && msg.contains("voxgate models fetch"),
        "{msg}"
    );

    // Asking again gives the same error, and another folder is refused
    // rather than started on top of the half-started one.
    assert!(matches!(
        Espeak::load(dir.path()),
        Err(Error::EspeakInit { .. })
    ));
    assert!(matches!(
        Espeak::load(&src),
        Err(Error::EspeakAlreadyInitialized { .. })
    ));
}
