//! Missing and broken model files: each a clear error naming the file and the fix.

mod common;

use std::path::{Path, PathBuf};

use voxgate_piper::{Error, Piper, PiperOptions};

/// A voice folder in a temporary directory: `<dir>/voice.onnx` + `.onnx.json`.
struct Voice {
    dir: tempfile::TempDir,
}

impl Voice {
    fn new(onnx: &[u8], json: &[u8]) -> Voice {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("voice.onnx"), onnx).unwrap();
        std::fs::write(dir.path().join("voice.onnx.json"), json).unwrap();
        Voice { dir }
    }

    fn onnx(&self) -> PathBuf {
        self.dir.path().join("voice.onnx")
    }
}

fn real_json() -> Vec<u8> {
    std::fs::read(format!("{}.json", common::paths().voice.display())).unwrap()
}

fn load(voice: &Path) -> Result<Piper, Error> {
    let p = common::paths();
    Piper::load(voice, &p.onnxruntime, &p.espeak, PiperOptions::default())
}

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

#[test]
fn missing_voice_model() {
    let path = Path::new("/nonexistent/voice.onnx");
    let err = load(path).err().unwrap();
    assert!(matches!(err, Error::Missing { .. }), "{err}");
    assert_names(&err, path);
}

#[test]
fn missing_voice_config() {
    let voice = Voice::new(b"x", b"");
    std::fs::remove_file(voice.dir.path().join("voice.onnx.json")).unwrap();
    let err = load(&voice.onnx()).err().unwrap();
    assert!(matches!(err, Error::Missing { .. }), "{err}");
    assert_names(&err, &voice.dir.path().join("voice.onnx.json"));
}

#[test]
fn bad_json() {
    let real = real_json();
    let oversized = [b" ".repeat(5 * 1024 * 1024), real.clone()].concat();
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        real[..real.len() / 2].to_vec(),
        vec![0xff, 0xfe, 0x00],
        String::from_utf8(real.clone())
            .unwrap()
            .replace("\"phoneme_id_map\"", "\"other\"")
            .into_bytes(),
        String::from_utf8(real.clone())
            .unwrap()
            .replace("22050", "-1")
            .into_bytes(),
        oversized,
    ];
    for json in cases {
        let voice = Voice::new(b"x", &json);
        let err = load(&voice.onnx()).err().unwrap();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert_names(&err, &voice.dir.path().join("voice.onnx.json"));
    }
}

#[test]
fn corrupt_onnx() {
    let real = std::fs::read(common::paths().voice).unwrap();
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"garbage, not a protobuf".to_vec(),
        (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
        real[..real.len() / 3].to_vec(),
    ];
    for onnx in cases {
        let voice = Voice::new(&onnx, &real_json());
        let err = load(&voice.onnx()).err().unwrap();
        assert!(matches!(err, Error::Model { .. }), "{err}");
        assert_names(&err, &voice.onnx());
    }
}

#[test]
fn missing_onnxruntime() {
    let p = common::paths();
    let path = Path::new("/nonexistent/libonnxruntime.so");
    let err = Piper::load(&p.voice, path, &p.espeak, PiperOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Missing { .. }), "{err}");
    assert_names(&err, path);
}

#[test]
fn missing_espeak() {
    let p = common::paths();
    let empty = tempfile::tempdir().unwrap();
    let no_data = tempfile::tempdir().unwrap();
    std::fs::copy(
        p.espeak.join("libespeak-ng.so"),
        no_data.path().join("libespeak-ng.so"),
    )
    .unwrap();
    for (dir, named) in [
        (
            PathBuf::from("/nonexistent/espeak-ng"),
            PathBuf::from("/nonexistent/espeak-ng"),
        ),
        (
            empty.path().to_path_buf(),
            empty.path().join("libespeak-ng.so"),
        ),
        (
            no_data.path().to_path_buf(),
            no_data.path().join("espeak-ng-data"),
        ),
    ] {
        let err = Piper::load(&p.voice, &p.onnxruntime, &dir, PiperOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        let named = std::fs::canonicalize(named.parent().unwrap())
            .map(|d| d.join(named.file_name().unwrap()))
            .unwrap_or(named);
        assert_names(&err, &named);
    }
}

#[test]
fn bad_options() {
    let p = common::paths();
    for options in [
        PiperOptions {
            intra_threads: 0,
            sessions: 1,
        },
        PiperOptions {
            intra_threads: 1,
            sessions: 0,
        },
    ] {
        let err = Piper::load(&p.voice, &p.onnxruntime, &p.espeak, options)
            .err()
            .unwrap();
        assert!(matches!(err, Error::Options(_)), "{err}");
    }
}

/// Protobuf encoding, just enough to write a tiny ONNX model by hand.
fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = varint(number << 3 | 2);
    out.extend(varint(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

fn int_field(number: u64, value: u64) -> Vec<u8> {
    [varint(number << 3), varint(value)].concat()
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A valid ONNX model (y = Identity(x), float [1]) that is not a Piper voice.
fn identity_model() -> Vec<u8> {
    let tensor_type = field(
        1,
        &[int_field(1, 1), field(2, &field(1, &int_field(1, 1)))].concat(),
    );
    let value_info = |name: &str| {
        field(1, name.as_bytes())
            .into_iter()
            .chain(field(2, &tensor_type))
            .collect::<Vec<u8>>()
    };
    let node = [field(1, b"x"), field(2, b"y"), field(4, b"Identity")].concat();
    let graph = [
        field(1, &node),
        field(2, b"g"),
        field(11, &value_info("x")),
        field(12, &value_info("y")),
    ]
    .concat();
    let opset = [field(1, b""), int_field(2, 13)].concat();
    [int_field(1, 7), field(8, &opset), field(7, &graph)].concat()
}

#[test]
fn an_onnx_model_that_is_not_a_piper_voice() {
    let voice = Voice::new(&identity_model(), &real_json());
    let err = load(&voice.onnx()).err().unwrap();
    assert!(matches!(err, Error::Model { .. }), "{err}");
    assert!(err.to_string().contains("`input`"), "{err}");
    assert_names(&err, &voice.onnx());
}
