//! The one GGUF reader of the workspace: header, key/value section and tensor table.
//!
//! Arrays are not decoded into values: an [`Array`] records where its elements lie, and the
//! accessors on [`Gguf`] read them on demand, so a 262,144-token vocabulary costs one pass over
//! its bytes and no allocation per token.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use crate::{Error, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC};

/// GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// A GGUF value type (`enum gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `GGUF_TYPE_UINT8` (0).
    U8,
    /// `GGUF_TYPE_INT8` (1).
    I8,
    /// `GGUF_TYPE_UINT16` (2).
    U16,
    /// `GGUF_TYPE_INT16` (3).
    I16,
    /// `GGUF_TYPE_UINT32` (4).
    U32,
    /// `GGUF_TYPE_INT32` (5).
    I32,
    /// `GGUF_TYPE_FLOAT32` (6).
    F32,
    /// `GGUF_TYPE_BOOL` (7).
    Bool,
    /// `GGUF_TYPE_STRING` (8).
    String,
    /// `GGUF_TYPE_ARRAY` (9).
    Array,
    /// `GGUF_TYPE_UINT64` (10).
    U64,
    /// `GGUF_TYPE_INT64` (11).
    I64,
    /// `GGUF_TYPE_FLOAT64` (12).
    F64,
}

impl ValueType {
    /// The type with GGUF id `id`.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The GGUF id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// gguf.cpp's name for it (`gguf_type_name`): `u32`, `f32`, `str`, `arr`, ...
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "str",
            Array => "arr",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Bytes per value; `None` for strings and arrays, whose size varies.
    pub fn fixed_size(self) -> Option<u64> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The smallest encoding of one value: a string is at least its 8-byte length.
    fn min_size(self) -> u64 {
        self.fixed_size().unwrap_or(8)
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value. Strings are kept as bytes (GGUF does not require UTF-8; see
/// [`Value::as_str`]); arrays are described, not decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// `str`, as stored.
    String(Vec<u8>),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
    /// `arr`: read its elements with [`Gguf::items`], [`Gguf::strings`], [`Gguf::f32s`] or
    /// [`Gguf::ints`].
    Array(Array),
}

impl Value {
    /// Its type (`Array` for arrays; see [`Array::elem`] for the element type).
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// The type as gguf.cpp prints it: `u32`, or `arr[f32,262144]` for an array.
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => format!("arr[{},{}]", a.elem.name(), a.len),
            v => v.value_type().name().to_owned(),
        }
    }

    /// The string, if this is a string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    /// The value, if this is a `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            Value::U32(v) => Some(*v),
            _ => None,
        }
    }

    /// The array, if this is one.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where an array's elements lie in [`Gguf`]'s buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Array {
    /// The element type (never `Array`: nested arrays are rejected).
    pub elem: ValueType,
    /// Number of elements.
    pub len: usize,
    bytes: Range<usize>,
}

/// One key/value pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// The encoded pair (key, type and value) in the buffer.
    raw: Range<usize>,
}

/// One tensor info record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// The shape in ggml order (`ne[0]`, the contiguous dimension, first); at most 4 entries.
    pub dims: Vec<u64>,
    /// The `ggml_type` id (not checked by the reader; see [`crate::ggml_type`]).
    pub ggml_type: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (`None` on overflow).
    pub fn n_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Size of the data in bytes (`None` for an unknown type, a shape that is not a whole number
    /// of blocks, or overflow).
    pub fn nbytes(&self) -> Option<u64> {
        crate::ggml_type(self.ggml_type)?.nbytes(self.n_elements()?)
    }
}

/// The metadata of a GGUF file: version, key/value pairs, tensor infos and the data-section
/// layout. It owns the metadata bytes (not the tensor data).
#[derive(Clone, Debug)]
pub struct Gguf {
    buf: Vec<u8>,
    version: u32,
    kvs: Vec<Kv>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
    file_size: u64,
}

impl Gguf {
    /// Reads the metadata of the file at `path`, reading no further into the file than the
    /// metadata goes.
    ///
    /// Errors: [`Error::Io`]; [`Error::Format`] for bad magic, an unsupported version,
    /// truncation, a count or length that does not fit in the file, an unknown value type, a
    /// nested array, a bool byte other than 0 or 1, a key or tensor name that is not UTF-8, more
    /// than 4 dimensions; [`Error::Key`] for an empty or duplicated key and an invalid
    /// `general.alignment`.
    pub fn open(path: &Path) -> Result<Gguf, Error> {
        let file = File::open(path).map_err(|source| Error::Io { action: "open", source })?;
        let len = file.metadata().map_err(|source| Error::Io { action: "stat", source })?.len();
        Parser { src: Source { buf: Vec::new(), file: Some(file), len }, pos: 0 }.parse()
    }

    /// Reads the metadata from `bytes`, a whole file or its beginning (its length is taken as
    /// the file size). Errors as [`Gguf::open`].
    pub fn parse(bytes: &[u8]) -> Result<Gguf, Error> {
        let len = bytes.len() as u64;
        Parser { src: Source { buf: bytes.to_vec(), file: None, len }, pos: 0 }.parse()
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key/value pairs in file order.
    pub fn kvs(&self) -> &[Kv] {
        &self.kvs
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).and_then(|&i| self.kvs.get(i)).map(|kv| &kv.value)
    }

    /// The encoded bytes of pair `kv` (key length, key, type, value), as in the file; for tools
    /// that rewrite headers.
    pub fn raw_kv(&self, kv: &Kv) -> &[u8] {
        self.buf.get(kv.raw.clone()).unwrap_or_default()
    }

    /// The tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section: the end of the tensor infos, padded to the
    /// alignment (as gguf.cpp does when there are tensors).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Where the data section ends as gguf.cpp computes it: the data offset plus every tensor's
    /// size padded to the alignment (`None` for an unknown type or on overflow).
    pub fn data_end(&self) -> Option<u64> {
        self.tensors.iter().try_fold(self.data_offset, |end, t| {
            let padded = t.nbytes()?.checked_next_multiple_of(self.alignment)?;
            end.checked_add(padded)
        })
    }

    fn elems(&self, a: &Array) -> &[u8] {
        self.buf.get(a.bytes.clone()).unwrap_or_default()
    }

    /// The encoded elements of an array as stored in the file (a string array's elements are
    /// each a little-endian `u64` length and that many bytes).
    pub fn array_bytes(&self, a: &Array) -> &[u8] {
        self.elems(a)
    }

    /// The elements of a string array, as stored (empty if `a` holds another type).
    pub fn strings<'a>(&'a self, a: &Array) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = if a.elem == ValueType::String { self.elems(a) } else { &[] };
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<8>()?;
            let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
            let (s, tail) = tail.split_at_checked(len)?;
            rest = tail;
            Some(s)
        })
    }

    /// The elements of an `f32` array (empty if `a` holds another type).
    pub fn f32s<'a>(&'a self, a: &Array) -> impl Iterator<Item = f32> + 'a {
        let bytes = if a.elem == ValueType::F32 { self.elems(a) } else { &[] };
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The elements of an integer array of any width and signedness, widened (empty for
    /// other types).
    pub fn ints<'a>(&'a self, a: &Array) -> impl Iterator<Item = i128> + 'a {
        let elem = a.elem;
        let size = match elem {
            ValueType::U8 | ValueType::I8 | ValueType::U16 | ValueType::I16 => elem.min_size(),
            ValueType::U32 | ValueType::I32 | ValueType::U64 | ValueType::I64 => elem.min_size(),
            _ => 0,
        };
        let bytes = if size == 0 { &[][..] } else { self.elems(a) };
        bytes.chunks_exact(size.max(1) as usize).map(move |c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            let u = u64::from_le_bytes(b);
            match elem {
                ValueType::I8 => i128::from(u as u8 as i8),
                ValueType::I16 => i128::from(u as u16 as i16),
                ValueType::I32 => i128::from(u as u32 as i32),
                ValueType::I64 => i128::from(u as i64),
                _ => i128::from(u),
            }
        })
    }

    /// The elements of any array as [`Value`]s (strings copied; arrays never nest).
    pub fn items<'a>(&'a self, a: &Array) -> Box<dyn Iterator<Item = Value> + 'a> {
        match a.elem {
            ValueType::String => Box::new(self.strings(a).map(|s| Value::String(s.to_vec()))),
            ValueType::Array => Box::new(std::iter::empty()),
            elem => {
                let size = elem.min_size() as usize;
                Box::new(self.elems(a).chunks_exact(size).filter_map(move |c| decode_fixed(elem, c)))
            }
        }
    }
}

/// Decodes one fixed-size value from exactly its bytes.
fn decode_fixed(ty: ValueType, c: &[u8]) -> Option<Value> {
    Some(match ty {
        ValueType::U8 => Value::U8(*c.first()?),
        ValueType::I8 => Value::I8(i8::from_le_bytes([*c.first()?])),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.try_into().ok()?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.try_into().ok()?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.try_into().ok()?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.try_into().ok()?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.try_into().ok()?)),
        ValueType::Bool => match c.first()? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => return None,
        },
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.try_into().ok()?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.try_into().ok()?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.try_into().ok()?)),
        ValueType::String | ValueType::Array => return None,
    })
}

/// The bytes read so far, extended from the file on demand and never past its end.
struct Source {
    buf: Vec<u8>,
    file: Option<File>,
    len: u64,
}

impl Source {
    /// Makes `buf` hold at least `end` bytes. The caller has checked `end <= len`.
    fn fill(&mut self, end: u64) -> Result<(), Error> {
        let have = self.buf.len() as u64;
        if end <= have {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(Error::Format { offset: have, reason: "unexpected end of file".into() });
        };
        // Grow geometrically (at least 256 KiB) so that a long metadata section takes few
        // reads, but never past the end of the file.
        let target = end.max(have.saturating_mul(2)).max(256 * 1024).min(self.len);
        let target = usize::try_from(target)
            .map_err(|_| Error::Format { offset: have, reason: "metadata larger than memory".into() })?;
        // Read into the spare capacity: no zeroing of what the read overwrites anyway.
        let want = target - self.buf.len();
        self.buf.reserve_exact(want);
        match file.take(want as u64).read_to_end(&mut self.buf) {
            Ok(n) if n == want => Ok(()),
            Ok(_) => Err(Error::Io {
                action: "read",
                source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while being read"),
            }),
            Err(source) => Err(Error::Io { action: "read", source }),
        }
    }
}

struct Parser {
    src: Source,
    pos: u64,
}

impl Parser {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::Format { offset: self.pos, reason: reason.into() }
    }

    fn remaining(&self) -> u64 {
        self.src.len.saturating_sub(self.pos)
    }

    /// Consumes `n` bytes and returns their range in the buffer.
    fn take(&mut self, n: u64) -> Result<Range<usize>, Error> {
        if n > self.remaining() {
            return Err(self.bad("unexpected end of file"));
        }
        let end = self.pos + n; // cannot overflow: bounded by the file size
        self.src.fill(end)?;
        // Both fit in usize: the buffer holds `end` bytes.
        let range = self.pos as usize..end as usize;
        self.pos = end;
        Ok(range)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let r = self.take(N as u64)?;
        self.src.buf.get(r).and_then(|s| s.try_into().ok()).ok_or_else(|| self.bad("unexpected end of file"))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Error> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }

    /// A count of items each at least `min_size` bytes long, bounded by the bytes left.
    fn count(&mut self, what: &str, min_size: u64) -> Result<usize, Error> {
        let at = self.pos;
        let n = self.u64()?;
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(Error::Format {
                offset: at,
                reason: format!("{what} count {n} does not fit in the file ({} bytes left)", self.remaining()),
            });
        }
        usize::try_from(n).map_err(|_| Error::Format { offset: at, reason: format!("{what} count {n} is too large") })
    }

    /// A length-prefixed string's byte range.
    fn string(&mut self, what: &str) -> Result<Range<usize>, Error> {
        let n = self.count(what, 1)?;
        self.take(n as u64)
    }

    /// Skips `n` length-prefixed strings (the elements of a string array) with the checks of
    /// [`string`](Self::string) on each, in one loop over the buffer: a vocabulary has hundreds
    /// of thousands.
    fn skip_strings(&mut self, n: usize) -> Result<(), Error> {
        let len = self.src.len;
        let mut pos = self.pos;
        for _ in 0..n {
            if len - pos < 8 {
                self.pos = pos;
                return Err(self.bad("unexpected end of file"));
            }
            if pos + 8 > self.src.buf.len() as u64 {
                self.src.fill(pos + 8)?;
            }
            let at = pos as usize; // within the buffer, which fits in memory
            let Some(&word) = self.src.buf.get(at..).and_then(|b| b.first_chunk::<8>()) else {
                self.pos = pos;
                return Err(self.bad("unexpected end of file"));
            };
            let n = u64::from_le_bytes(word);
            pos += 8;
            if n > len - pos {
                return Err(Error::Format {
                    offset: pos - 8,
                    reason: format!("string length count {n} does not fit in the file ({} bytes left)", len - pos),
                });
            }
            pos += n;
        }
        if pos > self.src.buf.len() as u64 {
            self.src.fill(pos)?;
        }
        self.pos = pos;
        Ok(())
    }

    fn utf8(&mut self, what: &str) -> Result<String, Error> {
        let at = self.pos;
        let r = self.string(what)?;
        let bytes = self.src.buf.get(r).unwrap_or_default();
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::Format { offset: at, reason: format!("{what} is not valid UTF-8: {bytes:02x?}") })
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType, Error> {
        let at = self.pos;
        let id = self.u32()?;
        ValueType::from_id(id)
            .ok_or_else(|| Error::Format { offset: at, reason: format!("key `{key}` has invalid GGUF type {id}") })
    }

    fn value(&mut self, key: &str, ty: ValueType) -> Result<Value, Error> {
        let at = self.pos;
        match ty {
            ValueType::String => {
                let r = self.string("string length")?;
                Ok(Value::String(self.src.buf.get(r).unwrap_or_default().to_vec()))
            }
            ValueType::Array => {
                let elem = self.value_type(key)?;
                if elem == ValueType::Array {
                    return Err(self.bad(format!("key `{key}` is an array of arrays, which GGUF does not allow")));
                }
                let len = self.count("array element", elem.min_size())?;
                let start = self.pos;
                if let Some(size) = elem.fixed_size() {
                    // `len * size` fits: count() bounded it by the bytes left.
                    self.take(len as u64 * size)?;
                    if elem == ValueType::Bool {
                        self.check_bools(key, start)?;
                    }
                } else {
                    self.skip_strings(len)?;
                }
                Ok(Value::Array(Array { elem, len, bytes: start as usize..self.pos as usize }))
            }
            _ => {
                let size = ty.min_size();
                let r = self.take(size)?;
                let c = self.src.buf.get(r).unwrap_or_default();
                decode_fixed(ty, c).ok_or_else(|| Error::Format {
                    offset: at,
                    reason: format!("key `{key}`: invalid bool byte {:#04x}", c.first().copied().unwrap_or(0)),
                })
            }
        }
    }

    fn check_bools(&self, key: &str, start: u64) -> Result<(), Error> {
        let bytes = self.src.buf.get(start as usize..self.pos as usize).unwrap_or_default();
        match bytes.iter().position(|&b| b > 1) {
            None => Ok(()),
            Some(i) => Err(Error::Format {
                offset: start + i as u64,
                reason: format!("key `{key}`: invalid bool byte {:#04x} in element {i}", bytes[i]),
            }),
        }
    }

    fn parse(mut self) -> Result<Gguf, Error> {
        if self.bytes::<4>().map_err(|_| self.bad("unexpected end of file before the 4-byte magic"))? != *GGUF_MAGIC {
            return Err(Error::Format { offset: 0, reason: "bad magic: not a GGUF file".into() });
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(Error::Format { offset: 4, reason: format!("unsupported GGUF version {version}") });
        }
        // A tensor info is at least 8 + 4 + 4 + 8 bytes, a key/value pair at least 8 + 1 + 4 + 1.
        let n_tensors = self.count("tensor", 24)?;
        let n_kv = self.count("key/value", 14)?;

        let mut kvs = Vec::with_capacity(n_kv);
        let mut index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let start = self.pos;
            let key = self.utf8("key")?;
            if key.is_empty() {
                return Err(Error::key("", format!("key {i} is empty")));
            }
            if index.contains_key(&key) {
                return Err(Error::key(&key, "appears twice (gguf.cpp rejects duplicate keys)"));
            }
            let ty = self.value_type(&key)?;
            let value = self.value(&key, ty)?;
            index.insert(key.clone(), kvs.len());
            kvs.push(Kv { key, value, raw: start as usize..self.pos as usize });
        }

        let alignment = match index.get("general.alignment").and_then(|&i| kvs.get(i)).map(|kv| &kv.value) {
            None => GGUF_DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(Value::U32(a)) => {
                return Err(Error::key("general.alignment", format!("{a} is not a power of two")));
            }
            Some(v) => {
                return Err(Error::key(
                    "general.alignment",
                    format!(
                        "has type {}, but gguf_get_val_u32 asserts u32 (a process abort in gguf_init)",
                        v.type_name()
                    ),
                ));
            }
        };

        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = self.utf8("tensor name")?;
            let at = self.pos;
            let n_dims = self.u32()?;
            if n_dims > MAX_DIMS {
                return Err(Error::Format {
                    offset: at,
                    reason: format!("tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.u64()?);
            }
            let ggml_type = self.u32()?;
            let offset = self.u64()?;
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }

        let data_offset = if tensors.is_empty() {
            self.pos
        } else {
            self.pos.checked_next_multiple_of(alignment).ok_or_else(|| self.bad("data offset overflows"))?
        };
        let mut buf = self.src.buf;
        // Keep only the metadata (a whole file given to `parse` included its data).
        buf.truncate(self.pos as usize);
        Ok(Gguf { buf, version, kvs, index, tensors, alignment, data_offset, file_size: self.src.len })
    }
}
