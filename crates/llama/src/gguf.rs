//! Our own check of a GGUF file before llama.cpp opens it.
//!
//! llama.cpp validates GGUF headers too, but parts of ggml abort the process on
//! malformed input, so [`inspect`] walks the whole header first: magic, version
//! (2 or 3), sane counts, every metadata value type, every tensor's dtype and shape,
//! and that the file is long enough for every tensor's data at the declared
//! alignment. Nothing is allocated from a length in the header before that length
//! has been checked against the bytes left in the file, so a hostile header cannot
//! cause a huge allocation.
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Most metadata entries we accept (SmolLM2 has about 40).
pub const MAX_METADATA: u64 = 1 << 16;
/// Most tensors we accept (large models have a few thousand).
pub const MAX_TENSORS: u64 = 1 << 20;
/// Longest metadata key or tensor name, in bytes (ggml's limit for names is 63).
pub const MAX_KEY_LEN: u64 = 1 << 16;
/// Longest string value kept in [`GgufInfo::metadata`]; longer ones are checked and skipped.
pub const MAX_KEPT_STRING: u64 = 1 << 20;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// ggml's `GGML_MAX_NAME` (names must be shorter).
const MAX_TENSOR_NAME: usize = 64;
const DEFAULT_ALIGNMENT: u64 = 32;
const MAGIC: &[u8; 4] = b"GGUF";

/// Why a GGUF file was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read GGUF file {path}: {source}; check the path and its permissions")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a GGUF file (magic {found:?}, expected \"GGUF\"); point to a .gguf model")]
    BadMagic { path: PathBuf, found: [u8; 4] },
    #[error("{path} is GGUF version {version}; only versions 2 and 3 are supported, re-convert the model with a current llama.cpp")]
    BadVersion { path: PathBuf, version: u32 },
    #[error("{path} is truncated: {what} needs bytes up to offset {needed} but the file has {len}; fetch it again (`voxgate models fetch`)")]
    Truncated { path: PathBuf, what: String, needed: u64, len: u64 },
    #[error("{path} declares {count} {what}, more than the limit of {limit}; the header is corrupt")]
    TooMany { path: PathBuf, what: &'static str, count: u64, limit: u64 },
    #[error("{path} has a {what} of {len} bytes, more than the limit of {limit}; the header is corrupt")]
    TooLong { path: PathBuf, what: String, len: u64, limit: u64 },
    #[error("{path}: metadata key {key:?} has unknown value type {ty}; the header is corrupt")]
    BadValueType { path: PathBuf, key: String, ty: u32 },
    #[error("{path}: tensor {tensor:?} has unknown ggml dtype {dtype}; the model needs a newer llama.cpp or is corrupt")]
    UnknownDtype { path: PathBuf, tensor: String, dtype: u32 },
    #[error("{path}: {what}; the file is corrupt, fetch it again (`voxgate models fetch`)")]
    Invalid { path: PathBuf, what: String },
}

/// A metadata value. Arrays keep only their element type and length.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    /// A string up to [`MAX_KEPT_STRING`] bytes (lossily decoded if not UTF-8).
    String(String),
    /// A longer string: checked, but its text is not kept.
    LongString { len: u64 },
    Array { element_type: u32, len: u64 },
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U64(v) => Some(v),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as text, if it is a kept string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    /// The ggml type id (`ggml_type`).
    pub dtype: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Size of the tensor's data in bytes.
    pub size: u64,
}

/// What [`inspect`] found in a valid GGUF file.
#[derive(Debug, Clone)]
pub struct GgufInfo {
    pub path: PathBuf,
    pub version: u32,
    pub file_len: u64,
    pub alignment: u64,
    /// Absolute offset of the (aligned) tensor data section.
    pub data_offset: u64,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
}

impl GgufInfo {
    /// `general.architecture`, e.g. `llama`.
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.get("general.architecture").and_then(MetaValue::as_str)
    }

    /// `general.name`, if present.
    pub fn name(&self) -> Option<&str> {
        self.metadata.get("general.name").and_then(MetaValue::as_str)
    }

    /// `<arch>.context_length`: the context the model was trained with.
    pub fn context_length(&self) -> Option<u64> {
        let key = format!("{}.context_length", self.architecture()?);
        self.metadata.get(&key).and_then(MetaValue::as_u64)
    }

    /// `tokenizer.chat_template` (a Jinja template), if present.
    pub fn chat_template(&self) -> Option<&str> {
        self.metadata.get("tokenizer.chat_template").and_then(MetaValue::as_str)
    }
}

/// Checks the GGUF file at `path` and returns its header. Reads only the header
/// (a few MB for SmolLM2); tensor data is bounds-checked against the file length.
pub fn inspect(path: &Path) -> Result<GgufInfo, GgufError> {
    let io = |source| GgufError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut r = Reader { inner: BufReader::with_capacity(1 << 16, file), pos: 0, len: file_len, path };

    let magic: [u8; 4] = r.array("the magic number")?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic { path: path.into(), found: magic });
    }
    let version = r.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::BadVersion { path: path.into(), version });
    }
    let n_tensors = r.u64("the tensor count")?;
    let n_kv = r.u64("the metadata count")?;
    r.limit("metadata entries", n_kv, MAX_METADATA)?;
    r.limit("tensors", n_tensors, MAX_TENSORS)?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r.string(&format!("metadata key {i}"), MAX_KEY_LEN)?;
        if key.is_empty() {
            return Err(r.invalid(format!("metadata key {i} is empty")));
        }
        let ty = r.u32(&format!("the type of {key:?}"))?;
        let value = r.value(&key, ty)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(r.invalid(format!("metadata key {key:?} appears twice")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U64(a)) if a.is_power_of_two() && *a <= u64::from(u32::MAX) => *a,
        Some(other) => return Err(r.invalid(format!("general.alignment is {other:?}, not a power of two u32"))),
    };

    let mut names = HashSet::new();
    let mut tensors = Vec::with_capacity(n_tensors.min(4096) as usize);
    for i in 0..n_tensors {
        let t = r.tensor_info(i)?;
        if !names.insert(t.name.clone()) {
            return Err(r.invalid(format!("tensor {:?} appears twice", t.name)));
        }
        tensors.push(t);
    }

    let data_offset = if n_tensors == 0 { r.pos } else { align(r.pos, alignment).ok_or_else(|| r.overflow("data offset"))? };
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(r.invalid(format!("tensor {:?} offset {} is not a multiple of the alignment {alignment}", t.name, t.offset)));
        }
        let end = data_offset.checked_add(t.offset).and_then(|o| o.checked_add(t.size)).ok_or_else(|| r.overflow(&t.name))?;
        if end > file_len {
            return Err(GgufError::Truncated {
                path: path.into(),
                what: format!("the data of tensor {:?}", t.name),
                needed: end,
                len: file_len,
            });
        }
    }
    Ok(GgufInfo { path: path.into(), version, file_len, alignment, data_offset, metadata, tensors })
}

fn align(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? / a * a)
}

/// A ggml dtype's (block size, bytes per block), if llama.cpp knows the type.
/// Taken from the bundled ggml itself so it always matches the engine.
fn dtype_layout(dtype: u32) -> Option<(u64, u64)> {
    if dtype >= llama_cpp_sys_2::GGML_TYPE_COUNT {
        return None;
    }
    // SAFETY: `dtype` is below GGML_TYPE_COUNT, so both look-ups index ggml's
    // static type table in bounds; they read nothing else.
    let (block, size) = unsafe { (llama_cpp_sys_2::ggml_blck_size(dtype as _), llama_cpp_sys_2::ggml_type_size(dtype as _)) };
    let block = u64::try_from(block).ok().filter(|b| *b > 0)?;
    let size = u64::try_from(size).ok().filter(|s| *s > 0)?;
    Some((block, size))
}

struct Reader<'p> {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
    path: &'p Path,
}

impl Reader<'_> {
    fn invalid(&self, what: String) -> GgufError {
        GgufError::Invalid { path: self.path.into(), what }
    }

    fn overflow(&self, what: &str) -> GgufError {
        self.invalid(format!("the size of {what} overflows"))
    }

    fn limit(&self, what: &'static str, count: u64, limit: u64) -> Result<(), GgufError> {
        if count > limit {
            return Err(GgufError::TooMany { path: self.path.into(), what, count, limit });
        }
        Ok(())
    }

    /// Fails unless `n` more bytes exist in the file.
    fn need(&self, n: u64, what: &str) -> Result<(), GgufError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            end => Err(GgufError::Truncated {
                path: self.path.into(),
                what: what.to_string(),
                needed: end.unwrap_or(u64::MAX),
                len: self.len,
            }),
        }
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, GgufError> {
        self.need(n, what)?;
        let mut buf = vec![0; n as usize];
        self.read_exact(&mut buf, what)?;
        Ok(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        self.need(buf.len() as u64, what)?;
        self.inner.read_exact(buf).map_err(|source| GgufError::Io { path: self.path.into(), source })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        self.need(n, what)?;
        let delta = i64::try_from(n).map_err(|_| self.overflow(what))?;
        self.inner.seek_relative(delta).map_err(|source| GgufError::Io { path: self.path.into(), source })?;
        self.pos += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut buf = [0; N];
        self.read_exact(&mut buf, what)?;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string_len(&mut self, what: &str, limit: u64) -> Result<u64, GgufError> {
        let len = self.u64(what)?;
        if len > limit {
            return Err(GgufError::TooLong { path: self.path.into(), what: what.to_string(), len, limit });
        }
        self.need(len, what)?;
        Ok(len)
    }

    fn string(&mut self, what: &str, limit: u64) -> Result<String, GgufError> {
        let len = self.string_len(what, limit)?;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes).map_err(|_| self.invalid(format!("{what} is not UTF-8")))
    }

    /// Size in bytes of a fixed-size value type, `None` for string/array, `Err` if unknown.
    fn scalar_size(&self, key: &str, ty: u32) -> Result<Option<u64>, GgufError> {
        Ok(match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            8 | 9 => None,
            _ => return Err(GgufError::BadValueType { path: self.path.into(), key: key.into(), ty }),
        })
    }

    fn value(&mut self, key: &str, ty: u32) -> Result<MetaValue, GgufError> {
        let what = format!("the value of {key:?}");
        Ok(match ty {
            0 => MetaValue::U64(u64::from(self.array::<1>(&what)?[0])),
            1 => MetaValue::I64(i64::from(self.array::<1>(&what)?[0] as i8)),
            2 => MetaValue::U64(u64::from(u16::from_le_bytes(self.array(&what)?))),
            3 => MetaValue::I64(i64::from(i16::from_le_bytes(self.array(&what)?))),
            4 => MetaValue::U64(u64::from(self.u32(&what)?)),
            5 => MetaValue::I64(i64::from(i32::from_le_bytes(self.array(&what)?))),
            6 => MetaValue::F64(f64::from(f32::from_le_bytes(self.array(&what)?))),
            7 => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.invalid(format!("{what} is a bool of value {b}"))),
            },
            8 => {
                let len = self.string_len(&what, u64::MAX)?;
                if len > MAX_KEPT_STRING {
                    self.skip(len, &what)?;
                    MetaValue::LongString { len }
                } else {
                    MetaValue::String(String::from_utf8_lossy(&self.bytes(len, &what)?).into_owned())
                }
            }
            9 => {
                let element_type = self.u32(&what)?;
                let len = self.u64(&what)?;
                match self.scalar_size(key, element_type)? {
                    Some(size) => {
                        let bytes = len.checked_mul(size).ok_or_else(|| self.overflow(&what))?;
                        self.skip(bytes, &what)?;
                    }
                    None if element_type == 8 => {
                        // Each string needs at least its 8-byte length: bounds the loop by the file size.
                        self.need(len.checked_mul(8).ok_or_else(|| self.overflow(&what))?, &what)?;
                        for _ in 0..len {
                            let n = self.string_len(&what, u64::MAX)?;
                            self.skip(n, &what)?;
                        }
                    }
                    None => return Err(self.invalid(format!("{what} is an array of arrays, which GGUF readers do not support"))),
                }
                MetaValue::Array { element_type, len }
            }
            10 => MetaValue::U64(self.u64(&what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            _ => return Err(GgufError::BadValueType { path: self.path.into(), key: key.into(), ty }),
        })
    }

    fn tensor_info(&mut self, i: u64) -> Result<TensorInfo, GgufError> {
        let name = self.string(&format!("the name of tensor {i}"), MAX_KEY_LEN)?;
        if name.len() >= MAX_TENSOR_NAME {
            return Err(self.invalid(format!("tensor name {name:?} is longer than {} bytes", MAX_TENSOR_NAME - 1)));
        }
        let what = format!("the shape of tensor {name:?}");
        let n_dims = self.u32(&what)?;
        if n_dims > MAX_DIMS {
            return Err(self.invalid(format!("tensor {name:?} has {n_dims} dimensions, more than {MAX_DIMS}")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(&what)?);
        }
        let dtype = self.u32(&format!("the dtype of tensor {name:?}"))?;
        let offset = self.u64(&format!("the offset of tensor {name:?}"))?;
        let (block, type_size) =
            dtype_layout(dtype).ok_or_else(|| GgufError::UnknownDtype { path: self.path.into(), tensor: name.clone(), dtype })?;
        let mut elements: u64 = 1;
        for &d in &dims {
            if d > i64::MAX as u64 {
                return Err(self.invalid(format!("tensor {name:?} has a negative dimension")));
            }
            elements = elements.checked_mul(d).filter(|e| *e <= i64::MAX as u64).ok_or_else(|| self.overflow(&what))?;
        }
        let row = dims.first().copied().unwrap_or(1);
        if row % block != 0 {
            return Err(self.invalid(format!("tensor {name:?} rows of {row} are not a multiple of its block size {block}")));
        }
        let size = (elements / block).checked_mul(type_size).ok_or_else(|| self.overflow(&what))?;
        Ok(TensorInfo { name, dims, dtype, offset, size })
    }
}
