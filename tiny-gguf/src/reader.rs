//! A small GGUF header reader: metadata, tensor infos and the data-section layout.
//!
//! It reads any GGUF v2/v3 file (not only this crate's) through `llama-gguf`, the workspace's one
//! GGUF reader, which never panics on malformed input and bounds every length by the file size
//! before allocating.

use std::path::Path;

use crate::Error;
use crate::spec::WeightType;

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

/// Reads the header of the GGUF file at `path`: version, metadata, tensor infos, alignment and
/// the data-section offset. Tensor data is not read.
///
/// The parsing is `llama_gguf::Gguf::open`'s (the workspace's one GGUF reader); this converts
/// its result into owned values. Returns [`Error::Format`] (with the byte offset where known) for
/// anything malformed: bad magic, a version other than 2 or 3, truncation, invalid types, more
/// than 4 dimensions, or an alignment that is not a power of two.
pub fn read_header(path: &Path) -> Result<GgufHeader, Error> {
    let g = llama_gguf::Gguf::open(path).map_err(|e| match e {
        llama_gguf::Error::Io { action, source } => Error::Io { action, path: path.to_path_buf(), source },
        llama_gguf::Error::Format { offset, reason } => Error::Format { path: path.to_path_buf(), offset, reason },
        other => Error::Format { path: path.to_path_buf(), offset: 0, reason: other.to_string() },
    })?;
    let metadata = g.kvs().iter().map(|kv| (kv.key.clone(), convert(&g, &kv.value))).collect();
    let tensors = g
        .tensors()
        .iter()
        .map(|t| TensorInfo { name: t.name.clone(), dims: t.dims.clone(), ggml_type: t.ggml_type, offset: t.offset })
        .collect();
    Ok(GgufHeader {
        version: g.version(),
        metadata,
        tensors,
        alignment: g.alignment(),
        data_offset: g.data_offset(),
        file_size: g.file_size(),
    })
}

fn convert(g: &llama_gguf::Gguf, v: &llama_gguf::Value) -> MetaValue {
    use llama_gguf::Value as V;
    match v {
        V::U8(x) => MetaValue::U8(*x),
        V::I8(x) => MetaValue::I8(*x),
        V::U16(x) => MetaValue::U16(*x),
        V::I16(x) => MetaValue::I16(*x),
        V::U32(x) => MetaValue::U32(*x),
        V::I32(x) => MetaValue::I32(*x),
        V::F32(x) => MetaValue::F32(*x),
        V::Bool(x) => MetaValue::Bool(*x),
        V::String(s) => MetaValue::String(String::from_utf8_lossy(s).into_owned()),
        V::U64(x) => MetaValue::U64(*x),
        V::I64(x) => MetaValue::I64(*x),
        V::F64(x) => MetaValue::F64(*x),
        V::Array(a) => MetaValue::Array(a.elem.id(), g.items(a).map(|item| convert(g, &item)).collect()),
    }
}
