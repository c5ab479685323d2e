//! A reader of CTranslate2's `model.bin` format.
//!
//! Layout (little-endian): u32 binary version; the spec name (string) and u32 spec
//! revision; u32 variable count; per variable: name (string), u8 rank, u32 per dim,
//! u8 dtype, u32 byte count, data; then u32 alias count and per alias two strings
//! (alias, target). A string is a u16 length followed by that many bytes, the last
//! of which is a NUL. Every count and length is checked against the bytes left
//! before anything is allocated, so a hostile header cannot make us allocate more
//! than the file's own size.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use crate::Error;

/// Oldest binary version with this layout (dtype byte and byte count came in 4).
pub const MIN_VERSION: u32 = 4;
/// Newest binary version known to this reader.
pub const MAX_VERSION: u32 = 6;
/// Largest rank accepted; CTranslate2 itself writes at most 4.
pub const MAX_RANK: usize = 8;
/// Largest `model.bin` this reader opens (Whisper tiny.en in fp16 is 76 MB).
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Element types of CTranslate2 variables (its `DataType` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// Why a `model.bin` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ct2Error {
    #[error("the file ends early, inside {what} at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("binary version {0} is not supported (this reader handles {MIN_VERSION} to {MAX_VERSION})")]
    Version(u32),
    #[error("variable `{name}` has unknown data type id {id}")]
    UnknownDType { name: String, id: u8 },
    #[error("variable `{name}` has rank {rank}, over the limit of {MAX_RANK}")]
    Rank { name: String, rank: usize },
    #[error("variable `{name}` declares {found} bytes, but its dims {dims:?} of {dtype:?} need {expected}")]
    ByteCount {
        name: String,
        dims: Vec<usize>,
        dtype: DType,
        expected: u64,
        found: u64,
    },
    #[error("{what} is not valid UTF-8 or is empty at byte {offset}")]
    BadString { what: &'static str, offset: usize },
    #[error("variable `{0}` appears twice")]
    Duplicate(String),
    #[error("alias `{alias}` points at `{target}`, which is not a variable")]
    DanglingAlias { alias: String, target: String },
    #[error("{0} unexpected bytes after the last alias")]
    TrailingBytes(usize),
    #[error("the file is {0} bytes, over the {MAX_FILE_BYTES}-byte limit")]
    TooLarge(u64),
}

/// One variable's header and where its data lies in the file.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: DType,
    range: Range<usize>,
}

impl Variable {
    /// Number of elements (1 for a scalar).
    pub fn len(&self) -> usize {
        // A zero dim first: the product of the others may overflow (the byte count
        // check lets `[u32::MAX, u32::MAX, u32::MAX, 0]` through, rightly: it is empty).
        // Without a zero dim the parser has checked that the product fits.
        if self.dims.contains(&0) { 0 } else { self.dims.iter().product() }
    }

    /// True when a dim is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed `model.bin`: the file's bytes and an index of its variables.
pub struct Model {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    variables: Vec<Variable>,
    by_name: HashMap<String, usize>,
    bytes: Vec<u8>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("version", &self.version)
            .field("spec", &self.spec)
            .field("revision", &self.revision)
            .field("variables", &self.variables.len())
            .finish()
    }
}

impl Model {
    /// Reads and parses a `model.bin`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::Io { path: path.to_owned(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_FILE_BYTES {
            return Err(Error::Ct2 { path: path.to_owned(), source: Ct2Error::TooLarge(size) });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::parse(bytes).map_err(|source| Error::Ct2 { path: path.to_owned(), source })
    }

    /// Parses the bytes of a `model.bin`.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, Ct2Error> {
        let mut c = Cursor { bytes: &bytes, pos: 0 };
        let version = c.u32("the binary version")?;
        if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
            return Err(Ct2Error::Version(version));
        }
        let spec = c.string("the spec name")?;
        let revision = c.u32("the spec revision")?;
        let count = c.u32("the variable count")? as usize;
        // Each variable takes at least 8 header bytes: never reserve more than fits.
        let mut variables = Vec::with_capacity(count.min(c.remaining() / 8));
        let mut by_name = HashMap::new();
        for _ in 0..count {
            let var = c.variable()?;
            if by_name.insert(var.name.clone(), variables.len()).is_some() {
                return Err(Ct2Error::Duplicate(var.name));
            }
            variables.push(var);
        }
        let aliases = c.u32("the alias count")? as usize;
        for _ in 0..aliases {
            let alias = c.string("an alias name")?;
            let target = c.string("an alias target")?;
            let Some(&index) = by_name.get(&target) else {
                return Err(Ct2Error::DanglingAlias { alias, target });
            };
            if by_name.insert(alias.clone(), index).is_some() {
                return Err(Ct2Error::Duplicate(alias));
            }
        }
        if c.remaining() != 0 {
            return Err(Ct2Error::TrailingBytes(c.remaining()));
        }
        Ok(Self { version, spec, revision, variables, by_name, bytes })
    }

    /// The variables in file order (aliases not repeated).
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// A variable by name or alias.
    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.by_name.get(name).map(|&i| &self.variables[i])
    }

    /// The raw little-endian bytes of a variable of this model.
    pub fn data(&self, var: &Variable) -> &[u8] {
        &self.bytes[var.range.clone()]
    }

    /// An integer scalar (i8, i16 or i32), e.g. `encoder/num_heads`.
    pub fn scalar_int(&self, name: &str) -> Option<i64> {
        let var = self.get(name)?;
        if var.len() != 1 {
            return None;
        }
        let d = self.data(var);
        Some(match var.dtype {
            DType::I8 => i64::from(d[0] as i8),
            DType::I16 => i64::from(i16::from_le_bytes([d[0], d[1]])),
            DType::I32 => i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]])),
            _ => return None,
        })
    }

    /// A floating-point variable converted to f32, or `None` for integer types.
    pub fn to_f32(&self, var: &Variable) -> Option<Vec<f32>> {
        let d = self.data(var);
        Some(match var.dtype {
            DType::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            DType::F16 => d
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => d
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::I8 | DType::I16 | DType::I32 => return None,
        })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<Range<usize>, Ct2Error> {
        if n > self.remaining() {
            return Err(Ct2Error::Truncated { what, offset: self.pos });
        }
        let r = self.pos..self.pos + n;
        self.pos += n;
        Ok(r)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ct2Error> {
        let r = self.take(1, what)?;
        Ok(self.bytes[r.start])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ct2Error> {
        let r = self.take(2, what)?;
        Ok(u16::from_le_bytes(self.bytes[r].try_into().expect("2 bytes")))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Ct2Error> {
        let r = self.take(4, what)?;
        Ok(u32::from_le_bytes(self.bytes[r].try_into().expect("4 bytes")))
    }

    fn string(&mut self, what: &'static str) -> Result<String, Ct2Error> {
        let len = self.u16(what)? as usize;
        let offset = self.pos;
        let r = self.take(len, what)?;
        let raw = &self.bytes[r];
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        match std::str::from_utf8(raw) {
            Ok(s) if !s.is_empty() && !s.contains('\0') => Ok(s.to_owned()),
            _ => Err(Ct2Error::BadString { what, offset }),
        }
    }

    fn variable(&mut self) -> Result<Variable, Ct2Error> {
        let name = self.string("a variable name")?;
        let rank = self.u8("a variable rank")? as usize;
        if rank > MAX_RANK {
            return Err(Ct2Error::Rank { name, rank });
        }
        let mut dims = Vec::with_capacity(rank);
        for _ in 0..rank {
            dims.push(self.u32("a variable dim")? as usize);
        }
        let id = self.u8("a variable data type")?;
        let Some(dtype) = DType::from_id(id) else {
            return Err(Ct2Error::UnknownDType { name, id });
        };
        let found = u64::from(self.u32("a variable byte count")?);
        // u64 arithmetic: 8 dims of u32 can overflow, so saturate; a mismatch is an error anyway.
        let expected = dims
            .iter()
            .fold(dtype.size() as u64, |acc, &d| acc.saturating_mul(d as u64));
        if expected != found {
            return Err(Ct2Error::ByteCount { name, dims, dtype, expected, found });
        }
        let range = self.take(found as usize, "variable data")?;
        Ok(Variable { name, dims, dtype, range })
    }
}
