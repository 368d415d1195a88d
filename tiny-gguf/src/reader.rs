//! A small GGUF header reader: metadata, tensor infos and the data-section layout.
//!
//! It reads any GGUF v2/v3 file (not only this crate's), never panics on malformed input, and
//! bounds every length by the file size before allocating.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::spec::WeightType;
use crate::{Error, GGUF_ALIGNMENT, GGUF_MAGIC};

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// `GGUF_TYPE_UINT8`.
    U8(u8),
    /// `GGUF_TYPE_INT8`.
    I8(i8),
    /// `GGUF_TYPE_UINT16`.
    U16(u16),
    /// `GGUF_TYPE_INT16`.
    I16(i16),
    /// `GGUF_TYPE_UINT32`.
    U32(u32),
    /// `GGUF_TYPE_INT32`.
    I32(i32),
    /// `GGUF_TYPE_FLOAT32`.
    F32(f32),
    /// `GGUF_TYPE_BOOL`.
    Bool(bool),
    /// `GGUF_TYPE_STRING` (invalid UTF-8 is replaced).
    String(String),
    /// `GGUF_TYPE_UINT64`.
    U64(u64),
    /// `GGUF_TYPE_INT64`.
    I64(i64),
    /// `GGUF_TYPE_FLOAT64`.
    F64(f64),
    /// `GGUF_TYPE_ARRAY`: the element type id and the elements (all of that type).
    Array(u32, Vec<MetaValue>),
}

impl MetaValue {
    /// The GGUF type id of this value (`enum gguf_type`).
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(..) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }
}

/// One tensor info record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Shape in ggml order (`ne[0]`, the contiguous dimension, first).
    pub dims: Vec<u64>,
    /// `ggml_type` id.
    pub ggml_type: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (`None` on overflow).
    pub fn n_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Size of the data in bytes, for the types this crate knows (F32, F16, Q8_0, Q4_0).
    pub fn nbytes(&self) -> Option<u64> {
        let ty = WeightType::from_ggml_type(self.ggml_type)?;
        let n = self.n_elements()?;
        if n % ty.block_len() != 0 {
            return None;
        }
        ty.nbytes(n)
    }
}

/// The parsed header of a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    /// Format version (3 for files written by this crate).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment`, or 32 when absent.
    pub alignment: u64,
    /// Absolute file offset of the data section (the end of the tensor infos, padded).
    pub data_offset: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
}

impl GgufHeader {
    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key` if it is a `u32`.
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        match self.get(key)? {
            MetaValue::U32(v) => Some(*v),
            _ => None,
        }
    }

    /// The value of `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            MetaValue::String(v) => Some(v),
            _ => None,
        }
    }

    /// The tensor info named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Where the data section ends as llama.cpp computes it: the data offset plus every tensor's
    /// size padded to the alignment (`None` if a tensor type is unknown or on overflow).
    pub fn data_end(&self) -> Option<u64> {
        self.tensors.iter().try_fold(self.data_offset, |end, t| {
            let padded = t.nbytes()?.checked_next_multiple_of(self.alignment)?;
            end.checked_add(padded)
        })
    }
}

/// Position-tracking reader that refuses reads past the end of the file.
struct Cursor {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
    path: PathBuf,
}

impl Cursor {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::Format { path: self.path.clone(), offset: self.pos, reason: reason.into() }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        if self.len - self.pos < N as u64 {
            return Err(self.bad("unexpected end of file"));
        }
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).map_err(|source| Error::Io {
            action: "read",
            path: self.path.clone(),
            source,
        })?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, Error> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Error> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }

    /// A count of items each at least `min_size` bytes long, bounded by the remaining bytes.
    fn count(&mut self, what: &str, min_size: u64) -> Result<usize, Error> {
        let n = self.u64()?;
        if n.saturating_mul(min_size) > self.len - self.pos {
            return Err(self.bad(format!("{what} count {n} does not fit in the file")));
        }
        usize::try_from(n).map_err(|_| self.bad(format!("{what} count {n} is too large")))
    }

    fn string(&mut self) -> Result<String, Error> {
        let n = self.count("string length", 1)?;
        let mut buf = vec![0u8; n];
        self.inner.read_exact(&mut buf).map_err(|source| Error::Io {
            action: "read",
            path: self.path.clone(),
            source,
        })?;
        self.pos += n as u64;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn value(&mut self, ty: u32, in_array: bool) -> Result<MetaValue, Error> {
        Ok(match ty {
            0 => MetaValue::U8(self.bytes::<1>()?[0]),
            1 => MetaValue::I8(i8::from_le_bytes(self.bytes::<1>()?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.bytes::<2>()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.bytes::<2>()?)),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(i32::from_le_bytes(self.bytes::<4>()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.bytes::<4>()?)),
            7 => match self.bytes::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.bad(format!("invalid bool byte {b}"))),
            },
            8 => MetaValue::String(self.string()?),
            9 if !in_array => {
                let elem = self.u32()?;
                let min_size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => return Err(self.bad("nested arrays are not supported")),
                    t => return Err(self.bad(format!("invalid array element type {t}"))),
                };
                let n = self.count("array element", min_size)?;
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    values.push(self.value(elem, true)?);
                }
                MetaValue::Array(elem, values)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.bytes::<8>()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.bytes::<8>()?)),
            t => return Err(self.bad(format!("invalid value type {t}"))),
        })
    }
}

/// Reads the header of the GGUF file at `path`: version, metadata, tensor infos, alignment and
/// the data-section offset. Tensor data is not read.
///
/// Returns [`Error::Format`] (with the byte offset) for anything malformed: bad magic, a
/// version other than 2 or 3, truncation, invalid types, more than 4 dimensions, or an alignment
/// that is not a power of two.
pub fn read_header(path: &Path) -> Result<GgufHeader, Error> {
    let file = File::open(path).map_err(|source| Error::Io { action: "open", path: path.to_path_buf(), source })?;
    let len = file.metadata().map_err(|source| Error::Io { action: "stat", path: path.to_path_buf(), source })?.len();
    let mut r = Cursor { inner: BufReader::new(file), pos: 0, len, path: path.to_path_buf() };

    if &r.bytes::<4>()? != GGUF_MAGIC {
        return Err(Error::Format { path: r.path, offset: 0, reason: "bad magic: not a GGUF file".into() });
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(r.bad(format!("unsupported GGUF version {version}")));
    }
    // A tensor info is at least 8 + 4 + 4 + 8 bytes, a key/value pair at least 8 + 4 + 1.
    let n_tensors = r.count("tensor", 24)?;
    let n_kv = r.count("key/value", 13)?;

    let mut metadata = Vec::with_capacity(n_kv);
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, false)?;
        metadata.push((key, value));
    }

    let mut tensors = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > 4 {
            return Err(r.bad(format!("tensor {name:?} has {n_dims} dimensions (at most 4)")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64()?);
        }
        let ggml_type = r.u32()?;
        let offset = r.u64()?;
        tensors.push(TensorInfo { name, dims, ggml_type, offset });
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => GGUF_ALIGNMENT,
        Some((_, MetaValue::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => return Err(r.bad(format!("invalid general.alignment {v:?}"))),
    };
    let data_offset = r.pos.next_multiple_of(alignment);
    Ok(GgufHeader { version, metadata, tensors, alignment, data_offset, file_size: len })
}
