//! The CTranslate2 reader against crafted files (truncated, malformed, hostile) and
//! the real Whisper tiny.en file.

use std::path::{Path, PathBuf};

use voxgate_whisper::ct2::{Ct2Error, DType, MAX_RANK, Model};
use voxgate_whisper::Error;

/// Writes a model.bin field by field.
#[derive(Default, Clone)]
struct File(Vec<u8>);

impl File {
    fn header(version: u32, spec: &str, revision: u32, count: u32) -> Self {
        let mut f = Self::default();
        f.u32(version).string(spec).u32(revision).u32(count);
        f
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn string(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    fn var(&mut self, name: &str, dims: &[u32], dtype: u8, bytes: u32, data: &[u8]) -> &mut Self {
        self.string(name);
        self.0.push(dims.len() as u8);
        for d in dims {
            self.u32(*d);
        }
        self.0.push(dtype);
        self.u32(bytes);
        self.0.extend_from_slice(data);
        self
    }
    fn f16_var(&mut self, name: &str, dims: &[u32], values: &[f32]) -> &mut Self {
        let data: Vec<u8> = values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        self.var(name, dims, 4, data.len() as u32, &data)
    }
    /// A valid file: two variables, one alias.
    fn valid() -> Self {
        let mut f = Self::header(6, "WhisperSpec", 3, 3);
        f.f16_var("a/weight", &[2, 3], &[1.0, -2.0, 0.5, 0.0, 3.25, -0.125]);
        f.var("a/heads", &[], 2, 2, &6i16.to_le_bytes());
        f.var("b/f32", &[2], 0, 8, &[0, 0, 128, 63, 0, 0, 0, 64]);
        f.u32(1).string("alias/weight").string("a/weight");
        f
    }
}

fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("model.bin");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn parse_err(bytes: &[u8]) -> Ct2Error {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), bytes);
    match Model::read(&path) {
        Err(Error::Ct2 { path: p, source }) => {
            assert_eq!(p, path);
            source
        }
        other => panic!("expected a CTranslate2 format error, got {other:?}"),
    }
}

#[test]
fn reads_a_crafted_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::read(&write(dir.path(), &File::valid().0)).unwrap();
    assert_eq!((model.version, model.spec.as_str(), model.revision), (6, "WhisperSpec", 3));
    assert_eq!(model.variables().len(), 3);
    let w = model.get("a/weight").unwrap();
    assert_eq!((w.dims.as_slice(), w.dtype), (&[2usize, 3][..], DType::F16));
    assert_eq!(model.to_f32(w).unwrap(), vec![1.0, -2.0, 0.5, 0.0, 3.25, -0.125]);
    assert_eq!(model.get("alias/weight").unwrap().name, "a/weight");
    assert_eq!(model.scalar_int("a/heads"), Some(6));
    assert_eq!(model.to_f32(model.get("b/f32").unwrap()).unwrap(), vec![1.0, 2.0]);
    assert!(model.to_f32(model.get("a/heads").unwrap()).is_none(), "integers are not floats");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = File::valid().0;
    for len in 0..bytes.len() {
        match parse_err(&bytes[..len]) {
            Ct2Error::Truncated { offset, .. } => assert!(offset <= len),
            other => panic!("cut at {len}: {other:?}"),
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut f = File::valid();
    f.0.extend_from_slice(b"junk");
    assert_eq!(parse_err(&f.0), Ct2Error::TrailingBytes(4));
}

#[test]
fn wrong_versions_are_refused() {
    for version in [0, 1, 3, 7, u32::MAX] {
        let mut f = File::valid();
        f.0[..4].copy_from_slice(&version.to_le_bytes());
        assert_eq!(parse_err(&f.0), Ct2Error::Version(version));
    }
}

#[test]
fn unknown_dtype_is_refused() {
    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.var("x", &[1], 9, 1, &[0]).u32(0);
    assert_eq!(parse_err(&f.0), Ct2Error::UnknownDType { name: "x".into(), id: 9 });
}

#[test]
fn byte_count_must_match_dims() {
    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.var("x", &[2, 3], 4, 10, &[0; 10]).u32(0);
    match parse_err(&f.0) {
        Ct2Error::ByteCount { expected: 12, found: 10, .. } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn absurd_headers_allocate_nothing() {
    // Dims whose product overflows u64, with a small byte count.
    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.var("x", &[u32::MAX; 8], 0, 16, &[0; 16]).u32(0);
    assert!(matches!(parse_err(&f.0), Ct2Error::ByteCount { .. }));
    // A rank over the limit.
    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.var("x", &[1; MAX_RANK + 1], 0, 4, &[0; 4]).u32(0);
    assert_eq!(parse_err(&f.0), Ct2Error::Rank { name: "x".into(), rank: MAX_RANK + 1 });
    // Four billion variables in a file of a few bytes: truncated, not out of memory.
    let f = File::header(6, "WhisperSpec", 3, u32::MAX);
    assert!(matches!(parse_err(&f.0), Ct2Error::Truncated { .. }));
    // A 4 GiB byte count that matches its dims but not the file.
    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.var("x", &[1 << 30], 0, u32::MAX - 3, &[]);
    assert!(matches!(parse_err(&f.0), Ct2Error::ByteCount { .. }));
    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.var("x", &[(1 << 30) - 1], 0, u32::MAX - 3, &[]);
    assert!(matches!(parse_err(&f.0), Ct2Error::Truncated { .. }));
    // Four billion aliases.
    let mut f = File::header(6, "WhisperSpec", 3, 0);
    f.u32(u32::MAX);
    assert!(matches!(parse_err(&f.0), Ct2Error::Truncated { .. }));
}

/// Found by fuzzing (fuzz target `ct2`): a variable with a zero dim after dims
/// whose product overflows passes the byte-count check (0 bytes, rightly), and its
/// element count then overflowed (a panic in debug builds).
#[test]
fn an_empty_variable_with_huge_dims_has_no_elements() {
    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.var("x", &[u32::MAX, u32::MAX, u32::MAX, 0], 0, 0, &[]).u32(0);
    let model = Model::parse(f.0).unwrap();
    let x = model.get("x").unwrap();
    assert_eq!((x.len(), x.is_empty()), (0, true));
    assert_eq!(model.to_f32(x).unwrap(), Vec::<f32>::new());
    assert_eq!(model.scalar_int("x"), None);
}

#[test]
fn bad_names_and_aliases_are_refused() {
    let mut f = File::header(6, "WhisperSpec", 3, 2);
    f.var("x", &[], 1, 1, &[0]).var("x", &[], 1, 1, &[0]).u32(0);
    assert_eq!(parse_err(&f.0), Ct2Error::Duplicate("x".into()));

    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.var("x", &[], 1, 1, &[0]).u32(1).string("y").string("missing");
    assert_eq!(parse_err(&f.0), Ct2Error::DanglingAlias { alias: "y".into(), target: "missing".into() });

    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.0.extend_from_slice(&3u16.to_le_bytes());
    f.0.extend_from_slice(&[0xff, 0xfe, 0]);
    assert!(matches!(parse_err(&f.0), Ct2Error::BadString { .. }));

    let mut f = File::header(6, "WhisperSpec", 3, 1);
    f.0.extend_from_slice(&1u16.to_le_bytes());
    f.0.push(0);
    assert!(matches!(parse_err(&f.0), Ct2Error::BadString { .. }), "an empty name");
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let err = Model::read(&path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    let msg = err.to_string();
    assert!(msg.contains("model.bin") && msg.contains("voxgate models fetch"), "{msg}");
}

#[test]
fn crafted_file_is_not_a_whisper_model() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &File::valid().0);
    std::fs::write(dir.path().join("vocabulary.txt"), "a\n").unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    match voxgate_whisper::Whisper::load(dir.path()) {
        Err(Error::Model { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

fn real_model_dir() -> PathBuf {
    let dir = voxgate_models::model_dir(voxgate_models::WHISPER);
    assert!(
        dir.join("model.bin").is_file(),
        "{} is missing: run `voxgate models fetch`",
        dir.join("model.bin").display()
    );
    dir
}

#[test]
fn reads_the_real_whisper_file() {
    let model = Model::read(&real_model_dir().join("model.bin")).unwrap();
    assert_eq!(model.spec, "WhisperSpec");
    let embed = model.get("decoder/embeddings/weight").unwrap();
    assert_eq!((embed.dims.as_slice(), embed.dtype), (&[51_864usize, 384][..], DType::F16));
    // The output projection is stored once, as an alias of the embeddings.
    assert_eq!(model.get("decoder/projection/weight").unwrap().name, "decoder/embeddings/weight");
    assert_eq!(model.scalar_int("encoder/num_heads"), Some(6));
    assert_eq!(model.get("decoder/layer_0/self_attention/linear_0/weight").unwrap().dims, vec![1152, 384]);
    assert_eq!(model.get("decoder/layer_0/attention/linear_1/weight").unwrap().dims, vec![768, 384]);
    let layers = (0..).take_while(|i| model.get(&format!("encoder/layer_{i}/ffn/linear_0/bias")).is_some()).count();
    assert_eq!(layers, 4);
    // The weights are sane numbers.
    let w = model.to_f32(embed).unwrap();
    assert!(w.iter().all(|v| v.is_finite() && v.abs() < 100.0));
}

/// candle computes the encoder's sinusoidal position table itself instead of loading
/// it: check that the table stored in the file is that same function.
#[test]
fn stored_encoder_positions_are_whisper_sinusoids() {
    let model = Model::read(&real_model_dir().join("model.bin")).unwrap();
    let var = model.get("encoder/position_encodings/encodings").unwrap();
    let (len, channels) = (var.dims[0], var.dims[1]);
    let stored = model.to_f32(var).unwrap();
    let half_c = channels / 2;
    let step = 10_000f64.ln() / (half_c - 1) as f64;
    for pos in [0, 1, 7, 150, len - 1] {
        for c in 0..half_c {
            let t = pos as f64 * (-(c as f64) * step).exp();
            let (sin, cos) = (stored[pos * channels + c], stored[pos * channels + half_c + c]);
            assert!((sin as f64 - t.sin()).abs() < 2e-3, "pos {pos} ch {c}");
            assert!((cos as f64 - t.cos()).abs() < 2e-3, "pos {pos} ch {c}");
        }
    }
}
