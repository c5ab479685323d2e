//! The GGUF check on crafted files (each malformation) and on the real model.

mod common;

use std::path::{Path, PathBuf};

use voxgate_llama::gguf::{self, GgufError, MetaValue};

/// Builds GGUF files byte by byte.
#[derive(Default, Clone)]
struct Gguf {
    bytes: Vec<u8>,
}

impl Gguf {
    fn header(magic: &[u8; 4], version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut g = Gguf::default();
        g.bytes.extend_from_slice(magic);
        g.u32(version).u64(n_tensors).u64(n_kv);
        g
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.bytes.extend_from_slice(s.as_bytes());
        self
    }
    fn kv_str(&mut self, key: &str, value: &str) -> &mut Self {
        self.str(key).u32(8).str(value)
    }
    fn kv_u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.str(key).u32(4).u32(value)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], dtype: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(dtype).u64(offset)
    }
    /// Pads to the 32-byte alignment and appends `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        while !self.bytes.len().is_multiple_of(32) {
            self.bytes.push(0);
        }
        self.bytes.extend(std::iter::repeat_n(7u8, n));
        self
    }
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.bytes).unwrap();
        path
    }
}

/// A small valid file: 2 metadata entries and two tensors (F32 [4, 2], Q4_1 [32]).
fn valid() -> Gguf {
    let mut g = Gguf::header(b"GGUF", 3, 2, 3);
    g.kv_str("general.architecture", "llama").kv_u32("llama.context_length", 128);
    g.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(2).str("a").str("bc");
    g.tensor("w", &[4, 2], 0, 0).tensor("q", &[32], 3, 32);
    g.data(32 + 20);
    g
}

fn check(g: &Gguf, name: &str) -> (PathBuf, Result<gguf::GgufInfo, GgufError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = g.write(dir.path(), name);
    let result = gguf::inspect(&path);
    if let Err(e) = &result {
        assert!(e.to_string().contains(path.to_str().unwrap()), "error does not name the file: {e}");
    }
    (path, result)
}

#[test]
fn a_crafted_valid_file_is_read() {
    let (_, info) = check(&valid(), "ok.gguf");
    let info = info.unwrap();
    assert_eq!(info.version, 3);
    assert_eq!(info.architecture(), Some("llama"));
    assert_eq!(info.context_length(), Some(128));
    assert_eq!(info.metadata["tokenizer.ggml.tokens"], MetaValue::Array { element_type: 8, len: 2 });
    assert_eq!(info.tensors.len(), 2);
    assert_eq!(info.tensors[0].size, 32);
    assert_eq!(info.tensors[1].size, 20);
    assert_eq!(info.data_offset % 32, 0);
    assert_eq!(info.data_offset + 32 + 20, info.file_len);
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    let full = valid();
    let dir = tempfile::tempdir().unwrap();
    for len in 0..full.bytes.len() {
        let cut = Gguf { bytes: full.bytes[..len].to_vec() };
        let path = cut.write(dir.path(), "cut.gguf");
        match gguf::inspect(&path) {
            Err(GgufError::Truncated { .. }) => {}
            other => panic!("cut at {len} of {}: {other:?}", full.bytes.len()),
        }
    }
}

#[test]
fn wrong_magic_is_refused() {
    let mut g = valid();
    g.bytes[..4].copy_from_slice(b"GGML");
    assert!(matches!(check(&g, "magic.gguf").1, Err(GgufError::BadMagic { found, .. }) if &found == b"GGML"));
}

#[test]
fn versions_other_than_2_and_3_are_refused() {
    for version in [0, 1, 4, u32::MAX] {
        let mut g = valid();
        g.bytes[4..8].copy_from_slice(&version.to_le_bytes());
        assert!(matches!(check(&g, "v.gguf").1, Err(GgufError::BadVersion { version: v, .. }) if v == version));
    }
    let mut g = valid();
    g.bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert!(check(&g, "v2.gguf").1.is_ok());
}

#[test]
fn absurd_counts_are_refused_before_allocating() {
    let g = Gguf::header(b"GGUF", 3, 0, u64::MAX);
    assert!(matches!(check(&g, "kv.gguf").1, Err(GgufError::TooMany { what: "metadata entries", .. })));
    let g = Gguf::header(b"GGUF", 3, 1 << 40, 0);
    assert!(matches!(check(&g, "t.gguf").1, Err(GgufError::TooMany { what: "tensors", .. })));
}

#[test]
fn absurd_lengths_are_refused_before_allocating() {
    // A key claiming 2^63 bytes.
    let mut g = Gguf::header(b"GGUF", 3, 0, 1);
    g.u64(1 << 63);
    assert!(matches!(check(&g, "key.gguf").1, Err(GgufError::TooLong { .. })));
    // A string value claiming 1 TB.
    let mut g = Gguf::header(b"GGUF", 3, 0, 1);
    g.str("k").u32(8).u64(1 << 40);
    assert!(matches!(check(&g, "val.gguf").1, Err(GgufError::Truncated { .. })));
    // An array of 2^62 u64 (the byte count overflows) and of 2^40 strings.
    let mut g = Gguf::header(b"GGUF", 3, 0, 1);
    g.str("k").u32(9).u32(10).u64(1 << 62);
    assert!(matches!(check(&g, "arr.gguf").1, Err(GgufError::Invalid { .. } | GgufError::Truncated { .. })));
    let mut g = Gguf::header(b"GGUF", 3, 0, 1);
    g.str("k").u32(9).u32(8).u64(1 << 40);
    assert!(matches!(check(&g, "arrs.gguf").1, Err(GgufError::Truncated { .. })));
    // A tensor whose shape overflows.
    let mut g = Gguf::header(b"GGUF", 3, 1, 0);
    g.tensor("w", &[u64::MAX / 2, 4], 0, 0).data(8);
    assert!(matches!(check(&g, "shape.gguf").1, Err(GgufError::Invalid { .. })));
}

#[test]
fn unknown_value_types_are_refused() {
    let mut g = Gguf::header(b"GGUF", 3, 0, 1);
    g.str("general.x").u32(13).u32(0);
    assert!(matches!(check(&g, "vt.gguf").1, Err(GgufError::BadValueType { ty: 13, .. })));
    let mut g = Gguf::header(b"GGUF", 3, 0, 1);
    g.str("general.x").u32(9).u32(99).u64(1);
    assert!(matches!(check(&g, "at.gguf").1, Err(GgufError::BadValueType { ty: 99, .. })));
    let mut g = Gguf::header(b"GGUF", 3, 0, 1);
    g.str("general.x").u32(7).bytes.push(2);
    assert!(matches!(check(&g, "bool.gguf").1, Err(GgufError::Invalid { .. })));
}

#[test]
fn unknown_dtypes_are_refused() {
    // 4 and 5 were removed from ggml; 43 is past the last type.
    for dtype in [4, 5, 43, u32::MAX] {
        let mut g = Gguf::header(b"GGUF", 3, 1, 0);
        g.tensor("w", &[32], dtype, 0).data(64);
        assert!(matches!(check(&g, "dt.gguf").1, Err(GgufError::UnknownDtype { dtype: d, .. }) if d == dtype));
    }
}

#[test]
fn malformed_tensor_infos_are_refused() {
    let cases: [(&str, Gguf); 5] = [
        ("5 dims", {
            let mut g = Gguf::header(b"GGUF", 3, 1, 0);
            g.tensor("w", &[1, 1, 1, 1, 1], 0, 0).data(4);
            g
        }),
        ("row not a multiple of the Q4_1 block", {
            let mut g = Gguf::header(b"GGUF", 3, 1, 0);
            g.tensor("w", &[16], 3, 0).data(64);
            g
        }),
        ("misaligned offset", {
            let mut g = Gguf::header(b"GGUF", 3, 1, 0);
            g.tensor("w", &[1], 0, 4).data(64);
            g
        }),
        ("duplicate tensor", {
            let mut g = Gguf::header(b"GGUF", 3, 2, 0);
            g.tensor("w", &[1], 0, 0).tensor("w", &[1], 0, 32).data(64);
            g
        }),
        ("name too long", {
            let mut g = Gguf::header(b"GGUF", 3, 1, 0);
            g.tensor(&"n".repeat(64), &[1], 0, 0).data(64);
            g
        }),
    ];
    for (what, g) in cases {
        assert!(matches!(check(&g, "t.gguf").1, Err(GgufError::Invalid { .. })), "{what}");
    }
}

#[test]
fn duplicate_keys_and_bad_alignment_are_refused() {
    let mut g = Gguf::header(b"GGUF", 3, 0, 2);
    g.kv_u32("a", 1).kv_u32("a", 2);
    assert!(matches!(check(&g, "dup.gguf").1, Err(GgufError::Invalid { .. })));
    for alignment in [0, 24] {
        let mut g = Gguf::header(b"GGUF", 3, 0, 1);
        g.kv_u32("general.alignment", alignment);
        assert!(matches!(check(&g, "al.gguf").1, Err(GgufError::Invalid { .. })), "{alignment}");
    }
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.gguf");
    let err = gguf::inspect(&path).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("absent.gguf"));
}

#[test]
fn the_real_model_passes_and_its_metadata_is_read() {
    let path = common::model_path();
    let info = gguf::inspect(&path).unwrap();
    assert_eq!(info.architecture(), Some("llama"));
    assert_eq!(info.context_length(), Some(8192));
    assert!(info.chat_template().unwrap().contains("<|im_start|>"));
    assert!(info.tensors.len() > 100, "{} tensors", info.tensors.len());
    let end = info.tensors.iter().map(|t| info.data_offset + t.offset + t.size).max().unwrap();
    assert!(end <= info.file_len);
}

#[test]
fn truncated_copies_of_the_real_model_are_refused() {
    let path = common::model_path();
    let bytes = std::fs::read(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    for len in [bytes.len() - 1, bytes.len() / 2, 3_000_000, 100] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        assert!(matches!(gguf::inspect(&cut), Err(GgufError::Truncated { .. })), "cut at {len}");
    }
}
