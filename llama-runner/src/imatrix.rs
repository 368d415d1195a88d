//! Importance matrices for [`quantize`](crate::quantize::quantize): llama-imatrix's files (the
//! GGUF format, tensors `NAME.in_sum2` and `NAME.counts` with `imatrix.*` metadata, and the
//! legacy binary `.dat` format), read and normalised exactly as llama-quantize's `--imatrix`
//! reads them (`common_imatrix_load` and `load_imatrix` at the pinned commit): GGUF sums divided
//! by the count of their expert's rows (a value of 1 where the count is 0), legacy sums divided
//! by their number of calls.
//!
//! Everything is checked while reading, before llama.cpp sees the values: sizes against the file,
//! sums and counts paired and of compatible sizes, values finite (llama.cpp refuses a non-finite
//! one, but only after reading the whole model).

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An importance matrix: per weight tensor, one value per input column (per expert for a 3-D
/// tensor), as `llama_model_quantize` takes them.
#[derive(Debug, Clone)]
pub struct ImportanceMatrix {
    /// The file it was read from, as given (llama-quantize records it in the output).
    file: PathBuf,
    /// Tensor name and values, sorted by name.
    entries: Vec<(CString, Vec<f32>)>,
    datasets: Vec<String>,
    chunk_count: i32,
}

impl PartialEq for ImportanceMatrix {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        self.file == other.file
            && self.datasets == other.datasets
            && self.chunk_count == other.chunk_count
            && self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|((a, x), (b, y))| a == b && bits(x) == bits(y))
    }
}

// Bitwise equality of the values (as `PartialEq` compares them) is an equivalence.
impl Eq for ImportanceMatrix {}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::Imatrix { path: path.to_path_buf(), problem: problem.into() }
}

impl ImportanceMatrix {
    /// Reads `path`: a GGUF importance matrix, or (when the file is not GGUF) the legacy format.
    ///
    /// Errors: [`Error::Imatrix`] naming the file and what is wrong (unreadable, truncated, no
    /// entries, a GGUF matrix without llama-imatrix's metadata, sums without counts, sizes that
    /// do not divide, non-finite values).
    pub fn load(path: impl AsRef<Path>) -> Result<ImportanceMatrix> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read it: {e}")))?;
        let mut m = if bytes.starts_with(llama_gguf::GGUF_MAGIC) {
            Self::from_gguf(path, &bytes)?
        } else {
            Self::from_legacy(path, &bytes)?
        };
        m.entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, values) in &m.entries {
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(bad(
                    path,
                    format!("entry `{}` has the value {v} (llama.cpp refuses it)", name.to_string_lossy()),
                ));
            }
        }
        Ok(m)
    }

    fn from_gguf(path: &Path, bytes: &[u8]) -> Result<ImportanceMatrix> {
        let g = llama_gguf::Gguf::parse(bytes).map_err(|e| bad(path, format!("not a readable GGUF file: {e}")))?;
        if g.tensors().is_empty() {
            return Err(bad(path, "it has no entries (no tensors)"));
        }
        // llama-quantize requires all three (`has_metadata`).
        let datasets = match g.get("imatrix.datasets") {
            Some(v) => match v.as_array() {
                Some(a) => g.strings(a).map(|s| String::from_utf8_lossy(s).into_owned()).collect(),
                None => return Err(bad(path, "imatrix.datasets is not an array of strings")),
            },
            None => return Err(bad(path, "missing imatrix metadata (imatrix.datasets), as llama-quantize requires")),
        };
        let u32_key = |key: &str| match g.get(key) {
            Some(llama_gguf::Value::U32(v)) => Ok(*v),
            Some(_) => Err(bad(path, format!("{key} is not a u32"))),
            None => Err(bad(path, format!("missing imatrix metadata ({key}), as llama-quantize requires"))),
        };
        let chunk_count = u32_key("imatrix.chunk_count")?;
        u32_key("imatrix.chunk_size")?;
        let mut pairs: std::collections::BTreeMap<&str, [Option<&llama_gguf::TensorInfo>; 2]> = Default::default();
        for t in g.tensors() {
            if let Some(name) = t.name.strip_suffix(".in_sum2") {
                pairs.entry(name).or_default()[0] = Some(t);
            } else if let Some(name) = t.name.strip_suffix(".counts") {
                pairs.entry(name).or_default()[1] = Some(t);
            }
        }
        let floats = |t: &llama_gguf::TensorInfo| -> Result<Vec<f32>> {
            if t.ggml_type != 0 {
                return Err(bad(path, format!("tensor `{}` is not f32", t.name)));
            }
            let n = t.n_elements().and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0);
            let start = usize::try_from(g.data_offset().saturating_add(t.offset)).ok();
            let range = n.zip(start).and_then(|(n, s)| Some(s..s.checked_add(n.checked_mul(4)?)?));
            let data = range
                .and_then(|r| bytes.get(r))
                .ok_or_else(|| bad(path, format!("tensor `{}` lies outside the file", t.name)))?;
            Ok(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        let mut entries = Vec::with_capacity(pairs.len());
        for (name, pair) in pairs {
            let [Some(sums), Some(counts)] = pair else {
                return Err(bad(
                    path,
                    format!(
                        "mismatched sums and counts for `{name}` (one of {name}.in_sum2, {name}.counts is missing)"
                    ),
                ));
            };
            let (sums, counts) = (floats(sums)?, floats(counts)?);
            if sums.len() % counts.len() != 0 {
                return Err(bad(
                    path,
                    format!("`{name}`: {} sums do not split into {} experts", sums.len(), counts.len()),
                ));
            }
            let ne0 = sums.len() / counts.len();
            let mut values = vec![0.0f32; sums.len()];
            for (j, &count) in counts.iter().enumerate() {
                // llama.cpp rounds the stored count to an integer first.
                let count = count.round() as i64 as f32;
                for i in 0..ne0 {
                    values[j * ne0 + i] = if count > 0.0 { sums[j * ne0 + i] / count } else { 1.0 };
                }
            }
            entries.push((entry_name(path, name)?, values));
        }
        Ok(ImportanceMatrix { file: path.to_path_buf(), entries, datasets, chunk_count: chunk_count as i32 })
    }

    fn from_legacy(path: &Path, bytes: &[u8]) -> Result<ImportanceMatrix> {
        let mut r = Legacy { path, bytes, at: 0 };
        let n_entries = r.i32("the entry count")?;
        if n_entries < 1 {
            return Err(bad(path, "neither GGUF nor a legacy importance matrix with entries"));
        }
        let mut entries = Vec::new();
        for i in 0..n_entries {
            let len = r.i32("a name's length")?;
            let name = r.take(usize::try_from(len).ok(), 1, &format!("entry {}: a name of {len} bytes", i + 1))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let ncall = r.i32("a call count")?;
            let nval = r.i32("a value count")?;
            let values =
                r.take(usize::try_from(nval).ok().filter(|&n| n > 0), 4, &format!("entry `{name}`: {nval} values"))?;
            let sums = values.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            let values = if ncall > 0 { sums.map(|s| s / ncall as f32).collect() } else { sums.collect() };
            entries.push((entry_name(path, &name)?, values));
        }
        // Optional: the chunk count and the dataset's name.
        let mut chunk_count = 0;
        let mut datasets = Vec::new();
        if let Ok(n) = r.i32("the chunk count") {
            chunk_count = n;
            if let Ok(len) = r.i32("the dataset's length")
                && let Ok(d) = r.take(usize::try_from(len).ok().filter(|&l| l > 0), 1, "the dataset")
            {
                // The tool reads it as a C string.
                let d = d.split(|&c| c == 0).next().unwrap_or_default();
                datasets.push(String::from_utf8_lossy(d).into_owned());
            }
        }
        Ok(ImportanceMatrix { file: path.to_path_buf(), entries, datasets, chunk_count })
    }

    /// Keeps the entries whose name contains one of `include` (all when it is empty), then
    /// drops those whose name contains one of `exclude`: llama-quantize's
    /// `--include-weights` and `--exclude-weights` (which apply the exclusions first; the
    /// result is the same).
    pub fn retain(&mut self, include: &[String], exclude: &[String]) {
        self.entries.retain(|(name, _)| {
            let name = name.to_string_lossy();
            (include.is_empty() || include.iter().any(|i| name.contains(i.as_str())))
                && !exclude.iter().any(|e| name.contains(e.as_str()))
        });
    }

    /// The file it was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The tensor names with values, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.to_str().unwrap_or_default())
    }

    /// The values for tensor `name`.
    pub fn values(&self, name: &str) -> Option<&[f32]> {
        self.entries.iter().find(|(n, _)| n.to_bytes() == name.as_bytes()).map(|(_, v)| v.as_slice())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none (after [`retain`](Self::retain), say).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The datasets it was computed on, as the file names them.
    pub fn datasets(&self) -> &[String] {
        &self.datasets
    }

    /// The chunks it was computed on (0 when the file does not say).
    pub fn chunk_count(&self) -> i32 {
        self.chunk_count
    }

    pub(crate) fn entries(&self) -> &[(CString, Vec<f32>)] {
        &self.entries
    }
}

fn entry_name(path: &Path, name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| bad(path, format!("entry name {name:?} contains a NUL byte")))
}

/// A reader over a legacy file that reports truncation instead of panicking.
struct Legacy<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Legacy<'a> {
    /// `n` items of `size` bytes (`None`: a count that is negative or too large).
    fn take(&mut self, n: Option<usize>, size: usize, what: &str) -> Result<&'a [u8]> {
        let end = n.and_then(|n| n.checked_mul(size)).and_then(|len| self.at.checked_add(len));
        let slice = end.and_then(|e| self.bytes.get(self.at..e));
        let Some(slice) = slice else {
            return Err(bad(
                self.path,
                format!("{what} at offset {} do not fit the file ({} bytes)", self.at, self.bytes.len()),
            ));
        };
        self.at += slice.len();
        Ok(slice)
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(Some(1), 4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
