//! LoRA adapters ([`LoraAdapter`]) and control vectors ([`ControlVector`]).
//!
//! ```no_run
//! use llama_runner::{Backend, Context, ContextOptions, ControlVector, LoraAdapter, Model, ModelOptions};
//!
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! // Adapters are declared before the context: a context keeps the adapters set on it
//! // borrowed until it is dropped.
//! let style = LoraAdapter::load(&model, "style.gguf")?;
//! let facts = LoraAdapter::load(&model, "facts.gguf")?;
//! let mut ctx = Context::new(&model, &ContextOptions::default())?;
//! ctx.set_loras(&[(&style, 1.0), (&facts, 0.5)])?;
//! ctx.set_loras(&[(&facts, 0.5)])?; // `style` removed
//! ctx.clear_loras();
//!
//! let happy = ControlVector::load_scaled(&[("happy.gguf", 0.8), ("calm.gguf", 0.2)])?;
//! ctx.set_control_vector(&happy, None)?; // every layer, as llama.cpp's default
//! ctx.set_control_vector(&happy, Some(1..=4))?;
//! ctx.clear_control_vector();
//! # Ok(()) }
//! ```
//!
//! # What is checked before llama.cpp sees an adapter file
//!
//! `llama_adapter_lora_init` refuses most bad files with an error (it throws inside and returns
//! null; its log lines end up in [`AdapterError::Load`]), but it reads metadata with typed
//! getters that `GGML_ASSERT` the type (a `general.type` that is not a string, an
//! `adapter.lora.alpha` that is not an `f32`, abort the process), `gguf_init_from_file` divides
//! by a tensor's dimensions (a zero dimension is a SIGFPE), and its shape check leaves out what
//! the compute graph asserts on at the first decode: the rank of A and B agreeing for
//! `token_embd`, the trailing (expert) dimensions, and a tensor type the CPU can multiply.
//! [`LoraAdapter::load`] checks all of it first, from the metadata of the adapter and of the
//! model, and names the key or tensor that does not fit ([`AdapterError`]).
//!
//! # Lifetimes
//!
//! A [`LoraAdapter`] borrows its [`Model`] (llama.cpp frees the adapters still loaded when the
//! model is freed, so none may outlive it), and [`Context::set_loras`] borrows the adapters for
//! the whole life of the context (`&'m LoraAdapter<'m>`, the context's own lifetime): llama.cpp
//! keeps only pointers to them, so an adapter set on a context cannot be dropped (freed) before
//! that context. Clearing the adapters does not end the borrow; a context that must outlive
//! an adapter never gets it set. In practice: declare (load) the adapters before the context,
//! since variables are dropped in reverse order at the end of a scope and on an early return
//! (`?`), and a context declared first would outlive them there.
//!
//! ```compile_fail,E0505
//! # use llama_runner::{Backend, Context, ContextOptions, LoraAdapter, Model, ModelOptions};
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let lora = LoraAdapter::load(&model, "lora.gguf")?;
//! let mut ctx = Context::new(&model, &ContextOptions::default())?;
//! ctx.set_loras(&[(&lora, 1.0)])?;
//! drop(lora); // freed while set on the context: refused
//! ctx.clear();
//! # Ok(()) }
//! ```
//!
//! Its twin, which drops the context first, compiles:
//!
//! ```no_run
//! # use llama_runner::{Backend, Context, ContextOptions, LoraAdapter, Model, ModelOptions};
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let lora = LoraAdapter::load(&model, "lora.gguf")?;
//! let mut ctx = Context::new(&model, &ContextOptions::default())?;
//! ctx.set_loras(&[(&lora, 1.0)])?;
//! drop(ctx);
//! drop(lora);
//! # Ok(()) }
//! ```
//!
//! An adapter cannot outlive its model:
//!
//! ```compile_fail,E0505
//! # use llama_runner::{Backend, LoraAdapter, Model, ModelOptions};
//! # fn main() -> llama_runner::Result<()> {
//! let model = Model::load(Backend::get()?, "model.gguf", &ModelOptions::default())?;
//! let lora = LoraAdapter::load(&model, "lora.gguf")?;
//! drop(model);
//! println!("{}", lora.alpha());
//! # Ok(()) }
//! ```
//!
//! # Control vectors
//!
//! [`ControlVector::load_scaled`] reads files as llama.cpp's `common_control_vector_load` does
//! (`common/common.cpp`): F32 tensors `direction.<layer>` (layers from 1) of one common width,
//! each scaled by its file's strength, summed over files and over tensors of the same layer.
//! Stricter than common: the layer must be all digits (`std::stoi` takes `direction.3x` as 3),
//! values and strengths must be finite, and an unreadable or malformed file is an error, not a
//! warning. [`Context::set_control_vector`] then adds the direction of layer `il` to the output
//! of block `il` for the layers in range; llama.cpp has directions for blocks 1 to
//! `n_layer - 1` (block 0 never gets one).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::RwLock;

use llama_gguf::{Gguf, TensorInfo, Value};
use llama_sys as sys;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::Model;

/// Why an adapter or control vector cannot be loaded or applied ([`Error::Adapter`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The file does not exist.
    #[error("{} does not exist", path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("{} cannot be read", path.display())]
    Unreadable {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed GGUF.
    #[error("{} is not a GGUF file llama.cpp can read", path.display())]
    Malformed {
        /// The path given.
        path: PathBuf,
        /// What is wrong, naming the byte offset, key or tensor.
        #[source]
        problem: Box<llama_gguf::Error>,
    },
    /// `general.type` is not `adapter` (a model file, for one), or `adapter.type` not `lora`.
    #[error("{} is not a LoRA adapter: {key} is {found}, llama.cpp needs `{expected}`", path.display())]
    NotLora {
        /// The path given.
        path: PathBuf,
        /// The key (`general.type`, `adapter.type`).
        key: &'static str,
        /// What the file has (`missing`, `"model"`, `a u32`).
        found: String,
        /// What llama.cpp requires.
        expected: &'static str,
    },
    /// The adapter is for another architecture than the model's.
    #[error("{} is an adapter for architecture `{adapter}`, the model is `{model}`", path.display())]
    Architecture {
        /// The path given.
        path: PathBuf,
        /// The adapter's `general.architecture`.
        adapter: String,
        /// The model's.
        model: String,
    },
    /// A metadata value llama.cpp would misread or abort on.
    #[error("{}: key `{key}`: {reason}", path.display())]
    Key {
        /// The path given.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of the file does not fit the model (not in the model, wrong shape, no partner
    /// tensor, a type the graph cannot multiply, a name llama.cpp does not read).
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    Tensor {
        /// The path given.
        path: PathBuf,
        /// The tensor (of the file).
        tensor: String,
        /// What does not match.
        reason: String,
    },
    /// llama.cpp refused the adapter (what it logged).
    #[error("llama.cpp could not load the adapter {}{}", path.display(), log_suffix(.log))]
    Load {
        /// The path given.
        path: PathBuf,
        /// The errors llama.cpp logged.
        log: Vec<String>,
    },
    /// An adapter was set on a context of another model than the one it was loaded for.
    #[error("the adapter {} was loaded for another model than the context's", path.display())]
    OtherModel {
        /// The adapter's path.
        path: PathBuf,
    },
    /// The same adapter appears twice in one [`Context::set_loras`] call.
    #[error("the adapter {} is listed twice (give it one scale)", path.display())]
    Duplicate {
        /// The adapter's path.
        path: PathBuf,
    },
    /// A scale or strength that is not a finite number.
    #[error("the scale of {what} is {scale}, not a finite number")]
    Scale {
        /// The adapter or control-vector file.
        what: String,
        /// The scale.
        scale: f32,
    },
    /// No control-vector files were given.
    #[error("no control-vector files were given")]
    NoControlVectors,
    /// A control vector whose width is not the model's `n_embd`, or files whose widths differ.
    #[error("the control vector is {n_embd} wide, {what} is {expected}")]
    Width {
        /// The control vector's width.
        n_embd: usize,
        /// What it was compared with (`the model's n_embd`, a file).
        what: String,
        /// That width.
        expected: usize,
    },
    /// A layer range the model does not have.
    #[error("control-vector layer range {start}..={end} is not within 1..={n_layer} (start <= end)")]
    LayerRange {
        /// First layer.
        start: u32,
        /// Last layer.
        end: u32,
        /// The model's layer count.
        n_layer: u32,
    },
    /// A control-vector direction for layer 0, which llama.cpp never applies.
    #[error("a control-vector direction for layer 0 (layers start at 1: block 0 never gets one)")]
    LayerZero,
    /// llama.cpp refused the control vector (what it logged).
    #[error("llama.cpp could not apply the control vector{}", log_suffix(.log))]
    ControlVectorApply {
        /// The errors llama.cpp logged.
        log: Vec<String>,
    },
}

fn log_suffix(log: &[String]) -> String {
    if log.is_empty() { String::new() } else { format!(": {}", log.join("; ")) }
}

impl From<AdapterError> for Error {
    fn from(e: AdapterError) -> Self {
        Error::Adapter(e)
    }
}

/// Guards the model's set of adapters (`llama_model::loras`): `llama_adapter_lora_init` and
/// `llama_adapter_lora_free` insert into and erase from it (writers), and llama.cpp reads it
/// when a context of the model reserves its compute graph (context creation, and a decode
/// after adapters, a control vector or another setting changed), so context creation and
/// every decode hold it for reading ([`adapters_read`]). Uncontended, a read costs a few
/// nanoseconds per decode.
static LORA_LOCK: RwLock<()> = RwLock::new(());

fn lora_lock() -> std::sync::RwLockWriteGuard<'static, ()> {
    LORA_LOCK.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Held around every llama.cpp call that may read a model's adapter set (context creation,
/// decode): see [`LORA_LOCK`].
pub(crate) fn adapters_read() -> std::sync::RwLockReadGuard<'static, ()> {
    LORA_LOCK.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tensor types llama.cpp's LoRA converter writes, which every backend multiplies (A and B
/// meet `ggml_mul_mat` and, for `token_embd`, `ggml_get_rows`).
const LORA_TYPES: &[(u32, &str)] = &[(0, "f32"), (1, "f16"), (8, "q8_0"), (30, "bf16")];

/// `GGML_TYPE_NVFP4`: `build_ffn` asserts that no LoRA adapts an NVFP4 FFN weight that has a
/// scale tensor.
const GGML_TYPE_NVFP4: u32 = 40;

/// A LoRA adapter loaded for one [`Model`] (`llama_adapter_lora_init`). Freed on drop; it
/// borrows the model, and contexts it is set on borrow it (see the [module](self) docs).
pub struct LoraAdapter<'m> {
    raw: NonNull<sys::llama_adapter_lora>,
    model: &'m Model,
    path: PathBuf,
    alpha: f32,
    targets: Vec<String>,
}

// SAFETY: a llama_adapter_lora has no thread affinity: it is a set of tensors and a metadata
// map, written only while llama_adapter_lora_init runs. Freeing it on another thread is fine;
// the free holds LORA_LOCK for writing, as loads do, and context creation and decodes hold it
// for reading (see there).
unsafe impl Send for LoraAdapter<'_> {}
// SAFETY: every `&self` method only reads the adapter (its metadata map and scalars), and
// contexts only read its tensors during their compute, as they read the model's weights.
unsafe impl Sync for LoraAdapter<'_> {}

impl<'m> LoraAdapter<'m> {
    /// Loads the LoRA adapter at `path` for `model`.
    ///
    /// The file is checked against the model first (see the [module](self) docs), so a file
    /// llama.cpp would abort on is refused: [`AdapterError::NotFound`],
    /// [`AdapterError::Unreadable`], [`AdapterError::Malformed`] for a file that is not GGUF,
    /// [`AdapterError::NotLora`] for a file that is not a LoRA adapter (a model, a control
    /// vector), [`AdapterError::Architecture`], [`AdapterError::Key`], and
    /// [`AdapterError::Tensor`] naming the tensor that is not in the model or whose shape or
    /// type does not fit; [`AdapterError::Load`] when llama.cpp refuses it anyway.
    ///
    /// Tensors named `*_norm.weight` are skipped, as llama.cpp skips them. Activated-LoRA
    /// invocation tokens (`adapter.alora.invocation_tokens`) are not interpreted: the adapter
    /// applies to every token, as it does in llama.cpp's library.
    pub fn load(model: &'m Model, path: impl AsRef<Path>) -> Result<LoraAdapter<'m>> {
        let path = path.as_ref().to_path_buf();
        let checked = check_lora(model, &path)?;
        let cpath = c_path(&path)?;
        crate::logging::clear_errors();
        let raw = {
            let _lock = lora_lock();
            // SAFETY: the model is valid (borrowed) and the path a NUL-terminated string; the
            // file was checked against everything llama.cpp asserts on while loading it, and
            // the function catches its own exceptions (returning null). LORA_LOCK (held for
            // writing) orders the insertion into the model's adapter set with every reader.
            unsafe { sys::llama_adapter_lora_init(model.raw().as_ptr(), cpath.as_ptr()) }
        };
        let log = crate::logging::take_errors();
        // Owned before a logger's panic may be resumed, so that unwinding frees it.
        let adapter = NonNull::new(raw).map(|raw| LoraAdapter {
            raw,
            model,
            path: path.clone(),
            alpha: checked.alpha,
            targets: checked.targets,
        });
        crate::logging::resume_panic();
        Ok(adapter.ok_or(AdapterError::Load { path, log })?)
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model it was loaded for.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// `adapter.lora.alpha` (0 when absent: llama.cpp then applies the scale unchanged rather
    /// than `scale * alpha / rank`).
    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// The model tensors it adapts, sorted.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// A metadata value of the adapter file as a string (`adapter.lora.alpha`,
    /// `general.name`), if present and not an array (`llama_adapter_meta_val_str`).
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: valid adapter; the buffer is valid for `buf.len()` bytes and llama.cpp
            // writes at most that many (snprintf).
            let n = unsafe {
                sys::llama_adapter_meta_val_str(self.raw.as_ptr(), key.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            let n = usize::try_from(n).ok()?;
            if n < buf.len() {
                buf.truncate(n);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n + 1, 0);
        }
    }
}

impl Drop for LoraAdapter<'_> {
    fn drop(&mut self) {
        let _lock = lora_lock();
        // SAFETY: the pointer came from llama_adapter_lora_init and is freed once, while its
        // model lives (the adapter borrows it) and after every context it was set on (those
        // borrow the adapter for their whole life).
        unsafe { sys::llama_adapter_lora_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for LoraAdapter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter")
            .field("path", &self.path)
            .field("alpha", &self.alpha)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        AdapterError::Unreadable {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        }
        .into()
    })
}

/// Reads the GGUF metadata of `path`, with file errors as [`AdapterError`]s.
fn open_gguf(path: &Path) -> Result<Gguf> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => AdapterError::NotFound { path: path.to_path_buf() },
        _ => AdapterError::Unreadable { path: path.to_path_buf(), source },
    })?;
    if meta.is_dir() {
        let source = std::io::Error::other("it is a directory");
        return Err(AdapterError::Unreadable { path: path.to_path_buf(), source }.into());
    }
    Gguf::open(path).map_err(|problem| match problem {
        llama_gguf::Error::Io { source, .. } => AdapterError::Unreadable { path: path.to_path_buf(), source }.into(),
        problem => AdapterError::Malformed { path: path.to_path_buf(), problem: Box::new(problem) }.into(),
    })
}

/// What [`check_lora`] learnt.
struct CheckedLora {
    alpha: f32,
    targets: Vec<String>,
}

/// A scalar string value, or a description of what is there instead.
fn str_value<'a>(g: &'a Gguf, key: &str) -> std::result::Result<Option<&'a str>, String> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => std::str::from_utf8(s).map(Some).map_err(|_| "a string that is not UTF-8".into()),
        Some(v) => Err(format!("a {}", v.type_name())),
    }
}

fn check_lora(model: &Model, path: &Path) -> Result<CheckedLora> {
    let g = open_gguf(path)?;
    let key_err = |key: &str, reason: String| AdapterError::Key { path: path.to_path_buf(), key: key.into(), reason };
    // llama.cpp reads these three with gguf_get_val_str, which asserts a string.
    for (key, expected) in [("general.type", "adapter"), ("adapter.type", "lora")] {
        match str_value(&g, key) {
            Ok(Some(v)) if v == expected => {}
            Ok(found) => {
                let found = found.map_or_else(|| "missing".to_string(), |v| format!("`{v}`"));
                return Err(AdapterError::NotLora { path: path.to_path_buf(), key, found, expected }.into());
            }
            Err(found) => return Err(AdapterError::NotLora { path: path.to_path_buf(), key, found, expected }.into()),
        }
    }
    let model_arch = model.meta("general.architecture").unwrap_or_default();
    match str_value(&g, "general.architecture") {
        Ok(Some(a)) if a == model_arch => {}
        Ok(a) => {
            let adapter = a.unwrap_or_default().to_string();
            return Err(AdapterError::Architecture { path: path.to_path_buf(), adapter, model: model_arch }.into());
        }
        Err(found) => return Err(key_err("general.architecture", format!("is {found}, not a string")).into()),
    }
    // gguf_get_val_f32 asserts an f32.
    let alpha = match g.get("adapter.lora.alpha") {
        None => 0.0,
        Some(Value::F32(a)) if a.is_finite() => *a,
        Some(Value::F32(a)) => return Err(key_err("adapter.lora.alpha", format!("is {a}, not finite")).into()),
        Some(v) => {
            return Err(key_err("adapter.lora.alpha", format!("is a {}, llama.cpp reads an f32", v.type_name())).into());
        }
    };
    check_tensor_table(&g, path)?;

    let model_tensors = model_tensor_table(model)?;
    // Pair the tensors as llama.cpp does: the base name is the name without ".lora_a"/".lora_b".
    let mut pairs: HashMap<String, (Option<&TensorInfo>, Option<&TensorInfo>)> = HashMap::new();
    for t in g.tensors() {
        let tensor_err =
            |reason: String| AdapterError::Tensor { path: path.to_path_buf(), tensor: t.name.clone(), reason };
        let is_a = t.name.ends_with(".lora_a");
        if !is_a && !t.name.ends_with(".lora_b") {
            if t.name.ends_with("_norm.weight") {
                continue;
            }
            return Err(tensor_err("the name ends neither in .lora_a nor in .lora_b".into()).into());
        }
        if !LORA_TYPES.iter().any(|&(id, _)| id == t.ggml_type) {
            let names: Vec<&str> = LORA_TYPES.iter().map(|&(_, n)| n).collect();
            let ty = llama_gguf::ggml_type(t.ggml_type).map_or("unknown", |t| t.name);
            return Err(tensor_err(format!("type {ty} is not one of {}", names.join(", "))).into());
        }
        let base = t.name.replace(".lora_a", "").replace(".lora_b", "");
        let entry = pairs.entry(base).or_default();
        if is_a { entry.0 = Some(t) } else { entry.1 = Some(t) }
    }
    let mut targets = Vec::with_capacity(pairs.len());
    for (base, pair) in &pairs {
        let (a, b) = match *pair {
            (Some(a), Some(b)) => (a, b),
            (Some(t), None) | (None, Some(t)) => {
                let reason = format!("its partner for `{base}` (lora_a and lora_b) is missing");
                return Err(AdapterError::Tensor { path: path.to_path_buf(), tensor: t.name.clone(), reason }.into());
            }
            (None, None) => continue,
        };
        let Some(w) = model_tensors.get(base.as_str()) else {
            let reason = format!("the model has no tensor `{base}`");
            return Err(AdapterError::Tensor { path: path.to_path_buf(), tensor: a.name.clone(), reason }.into());
        };
        check_pair(base, w, a, b).map_err(|reason| AdapterError::Tensor {
            path: path.to_path_buf(),
            tensor: a.name.clone(),
            reason,
        })?;
        targets.push(base.clone());
    }
    targets.sort();
    Ok(CheckedLora { alpha, targets })
}

/// Dimensions padded to 4, as ggml holds them.
fn ne4(dims: &[u64]) -> [u64; 4] {
    let mut ne = [1u64; 4];
    ne[..dims.len().min(4)].copy_from_slice(&dims[..dims.len().min(4)]);
    ne
}

/// The shapes the loader (`llama_adapter_lora_init_impl`) and the graph (`build_lora_mm`,
/// `build_lora_mm_id`, `build_inp_embd`) need: for `W = [n_in, n_out, e2, e3]`, A is
/// `[n_in, r, e2, e3]` and B `[r, n_out, e2, e3]`; for `token_embd` (`[n_embd, n_vocab]`), A is
/// `[r, n_vocab]` and B `[r, n_embd]`.
fn check_pair(base: &str, w: &ModelTensor, a: &TensorInfo, b: &TensorInfo) -> std::result::Result<(), String> {
    let (wn, an, bn) = (ne4(&w.dims), ne4(&a.dims), ne4(&b.dims));
    let shape = |ne: [u64; 4]| format!("{ne:?}");
    let rank = if base.ends_with("token_embd.weight") { an[0] } else { an[1] };
    let (want_a, want_b) = if base.ends_with("token_embd.weight") {
        ([rank, wn[1], 1, 1], [rank, wn[0], 1, 1])
    } else {
        ([wn[0], rank, wn[2], wn[3]], [rank, wn[1], wn[2], wn[3]])
    };
    if an != want_a || bn != want_b {
        return Err(format!(
            "model tensor `{base}` is {}: lora_a must be {} and lora_b {} (rank {rank}), the file has {} and {}",
            shape(wn),
            shape(want_a),
            shape(want_b),
            shape(an),
            shape(bn)
        ));
    }
    if w.ggml_type == GGML_TYPE_NVFP4 {
        return Err(format!("model tensor `{base}` is NVFP4, which llama.cpp cannot adapt (it asserts)"));
    }
    Ok(())
}

/// The checks `gguf_init_from_file` makes with a division or that it leaves to later reads:
/// every dimension at least 1 (it divides by them), a known type whose blocks fit the rows,
/// and data inside the file.
fn check_tensor_table(g: &Gguf, path: &Path) -> Result<()> {
    let data_size = g.file_size().saturating_sub(g.data_offset());
    for t in g.tensors() {
        let err = |reason: String| AdapterError::Tensor { path: path.to_path_buf(), tensor: t.name.clone(), reason };
        if let Some(d) = t.dims.iter().position(|&ne| ne == 0 || ne > i64::MAX as u64) {
            return Err(err(format!("dimension {d} is {} (must be 1 to {})", t.dims[d], i64::MAX)).into());
        }
        let Some(ty) = llama_gguf::ggml_type(t.ggml_type) else {
            return Err(err(format!("unknown ggml type {}", t.ggml_type)).into());
        };
        if t.dims.first().copied().unwrap_or(1) % ty.block_len != 0 {
            return Err(err(format!("type {} needs rows of a multiple of {} values", ty.name, ty.block_len)).into());
        }
        let end = t
            .n_elements()
            .filter(|&n| n < i64::MAX as u64)
            .and_then(|_| t.nbytes())
            .and_then(|n| t.offset.checked_add(n));
        if end.is_none_or(|end| end > data_size) {
            return Err(err("its data lies outside the file".into()).into());
        }
    }
    Ok(())
}

/// One tensor of the model file.
struct ModelTensor {
    dims: Vec<u64>,
    ggml_type: u32,
}

/// The model's tensors, read from its file (and the other files of a split model).
fn model_tensor_table(model: &Model) -> Result<HashMap<String, ModelTensor>> {
    let first = open_gguf(model.path())?;
    let n_split = match first.get("split.count") {
        Some(Value::U16(n)) => u32::from(*n),
        _ => 1,
    };
    let mut files = vec![first];
    if n_split > 1 {
        let name = model.path().to_string_lossy().into_owned();
        let suffix = format!("-{:05}-of-{n_split:05}.gguf", 1);
        // llama.cpp loads a split model from its first file only (llama_split_prefix).
        if let Some(prefix) = name.strip_suffix(&suffix) {
            for i in 2..=n_split {
                files.push(open_gguf(Path::new(&format!("{prefix}-{i:05}-of-{n_split:05}.gguf")))?);
            }
        }
    }
    let mut out = HashMap::new();
    for g in &files {
        for t in g.tensors() {
            out.insert(t.name.clone(), ModelTensor { dims: t.dims.clone(), ggml_type: t.ggml_type });
        }
    }
    Ok(out)
}

impl<'m> Context<'m> {
    /// Sets the LoRA adapters of this context, each with its scale, replacing those set before
    /// (`llama_set_adapters_lora`); an empty list, like [`clear_loras`](Self::clear_loras),
    /// removes them all, and a list without an adapter removes that one. A scale of 0 is the
    /// same as leaving the adapter out (llama.cpp drops it). For a target tensor `W` the
    /// product `W·x` becomes `W·x + scale * alpha / rank * B·(A·x)` (`scale * B·(A·x)` when
    /// the adapter's alpha is 0), summed over the adapters.
    ///
    /// The adapters stay borrowed until the context is dropped (see the [module](self) docs).
    /// The KV cache keeps what was computed before the change: [`clear`](Self::clear) it for
    /// results that depend only on the new adapters.
    ///
    /// Errors, before anything changes: [`AdapterError::OtherModel`] for an adapter loaded
    /// for another model, [`AdapterError::Duplicate`], [`AdapterError::Scale`] for a scale
    /// that is not finite.
    pub fn set_loras(&mut self, adapters: &[(&'m LoraAdapter<'m>, f32)]) -> Result<()> {
        let mut seen = HashSet::with_capacity(adapters.len());
        for (adapter, scale) in adapters {
            let path = adapter.path.clone();
            if adapter.model.id() != self.model().id() {
                return Err(AdapterError::OtherModel { path }.into());
            }
            if !seen.insert(adapter.raw) {
                return Err(AdapterError::Duplicate { path }.into());
            }
            if !scale.is_finite() {
                return Err(AdapterError::Scale { what: path.display().to_string(), scale: *scale }.into());
            }
        }
        let mut raws: Vec<*mut sys::llama_adapter_lora> = adapters.iter().map(|(a, _)| a.raw.as_ptr()).collect();
        let mut scales: Vec<f32> = adapters.iter().map(|&(_, s)| s).collect();
        // SAFETY: valid context; both arrays hold `adapters.len()` elements (llama.cpp asserts
        // only on null arrays with a non-zero count, and reads the arrays during the call
        // only); every adapter was loaded for this context's model and stays alive as long as
        // the context, which borrows it for 'm.
        unsafe {
            sys::llama_set_adapters_lora(self.raw().as_ptr(), raws.as_mut_ptr(), raws.len(), scales.as_mut_ptr())
        };
        Ok(())
    }

    /// Removes every LoRA adapter from this context (they stay borrowed until it is dropped).
    pub fn clear_loras(&mut self) {
        // SAFETY: valid context; null arrays with a count of 0 are llama.cpp's "none".
        unsafe { sys::llama_set_adapters_lora(self.raw().as_ptr(), std::ptr::null_mut(), 0, std::ptr::null_mut()) };
    }

    /// Applies `vector` to this context (`llama_set_adapter_cvec`): the direction of layer
    /// `il` is added to the output of block `il` for each `il` in `layers` (inclusive), or in
    /// `1..=n_layer` for `None`, as llama.cpp's common code defaults. Replaces a vector set
    /// before; layers the vector has no direction for get none (llama.cpp would keep the old
    /// values of such layers, so the data is padded with zeros to every layer). The KV cache
    /// keeps what was computed before.
    ///
    /// Errors: [`AdapterError::Width`] when the vector's width is not the model's `n_embd`;
    /// [`AdapterError::LayerRange`] for a range that is empty, starts at 0 (block 0 has no
    /// direction) or ends past `n_layer`; [`AdapterError::ControlVectorApply`] when llama.cpp
    /// fails to allocate it.
    pub fn set_control_vector(&mut self, vector: &ControlVector, layers: Option<RangeInclusive<u32>>) -> Result<()> {
        let info = self.model().info();
        let n_embd = info.n_embd as usize;
        if vector.n_embd != n_embd {
            let what = "the model's n_embd".to_string();
            return Err(AdapterError::Width { n_embd: vector.n_embd, what, expected: n_embd }.into());
        }
        let n_layer = info.n_layer;
        let (start, end) = layers.map_or((1, n_layer), |r| (*r.start(), *r.end()));
        if start == 0 || start > end || end > n_layer {
            return Err(AdapterError::LayerRange { start, end, n_layer }.into());
        }
        // Directions for blocks 1..n_layer-1, the ones llama.cpp keeps tensors for.
        let mut data = vector.data.clone();
        data.resize(n_embd * (n_layer as usize).saturating_sub(1), 0.0);
        crate::logging::clear_errors();
        // SAFETY: valid context; `data` holds `data.len()` floats, which llama.cpp copies into
        // its own tensors during the call; n_embd is the model's (checked), so it reads whole
        // rows only (`off + n_embd <= len`); both layer numbers fit i32 (at most n_layer).
        let status = unsafe {
            sys::llama_set_adapter_cvec(
                self.raw().as_ptr(),
                data.as_ptr(),
                data.len(),
                n_embd as i32,
                start as i32,
                end as i32,
            )
        };
        let log = crate::logging::take_errors();
        crate::logging::resume_panic();
        if status != 0 {
            return Err(AdapterError::ControlVectorApply { log }.into());
        }
        Ok(())
    }

    /// Removes the control vector from this context (llama.cpp keeps its buffers for the
    /// next one).
    pub fn clear_control_vector(&mut self) {
        // SAFETY: valid context; null data means "disable", and nothing else is read.
        unsafe { sys::llama_set_adapter_cvec(self.raw().as_ptr(), std::ptr::null(), 0, 0, 0, 0) };
    }
}

/// A control vector: one direction of `n_embd` values per layer, from layer 1 on, as
/// llama.cpp's `common_control_vector_load` builds it (see the [module](self) docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlVector {
    n_embd: usize,
    /// Layer `l` (from 1) at `[(l - 1) * n_embd, l * n_embd)`.
    data: Vec<f32>,
}

impl ControlVector {
    /// A control vector from directions given in memory: `(layer, values)`, layers from 1,
    /// each `n_embd` values; a layer given twice gets the sum.
    ///
    /// Errors: [`AdapterError::Width`] for a direction of another length,
    /// [`AdapterError::LayerZero`], [`AdapterError::Scale`] for a value that is not finite.
    pub fn new(n_embd: usize, directions: &[(u32, &[f32])]) -> Result<ControlVector> {
        let mut v = ControlVector { n_embd, data: Vec::new() };
        for &(layer, values) in directions {
            if values.len() != n_embd {
                let what = format!("the direction of layer {layer}");
                return Err(AdapterError::Width { n_embd, what, expected: values.len() }.into());
            }
            if layer == 0 {
                return Err(AdapterError::LayerZero.into());
            }
            if let Some(&x) = values.iter().find(|x| !x.is_finite()) {
                return Err(AdapterError::Scale { what: format!("a value of layer {layer}"), scale: x }.into());
            }
            v.add(layer, values, 1.0);
        }
        Ok(v)
    }

    /// Loads one file with strength 1 (llama.cpp's `--control-vector FNAME`).
    pub fn load(path: impl AsRef<Path>) -> Result<ControlVector> {
        ControlVector::load_scaled(&[(path.as_ref(), 1.0)])
    }

    /// Loads several files, each scaled by its strength, and sums them (llama.cpp's
    /// `--control-vector-scaled FNAME:SCALE,...`).
    ///
    /// Errors: [`AdapterError::NoControlVectors`]; for a file: [`AdapterError::NotFound`],
    /// [`AdapterError::Unreadable`], [`AdapterError::Malformed`], [`AdapterError::Tensor`] for
    /// a tensor that is not a 1-D F32 `direction.<layer>` with layer at least 1 or has
    /// non-finite values, [`AdapterError::Width`] when widths differ, [`AdapterError::Scale`]
    /// for a strength that is not finite, and [`AdapterError::Tensor`] for a file without
    /// directions (common skips such a file and fails when none is left).
    pub fn load_scaled<P: AsRef<Path>>(files: &[(P, f32)]) -> Result<ControlVector> {
        let mut total: Option<ControlVector> = None;
        if files.is_empty() {
            return Err(AdapterError::NoControlVectors.into());
        }
        for (path, strength) in files {
            let path = path.as_ref();
            if !strength.is_finite() {
                return Err(AdapterError::Scale { what: path.display().to_string(), scale: *strength }.into());
            }
            let one = load_one(path, *strength)?;
            match &mut total {
                None => total = Some(one),
                Some(t) if t.n_embd != one.n_embd => {
                    let what = format!("{}", path.display());
                    return Err(AdapterError::Width { n_embd: t.n_embd, what, expected: one.n_embd }.into());
                }
                Some(t) => {
                    if t.data.len() < one.data.len() {
                        t.data.resize(one.data.len(), 0.0);
                    }
                    t.data.iter_mut().zip(&one.data).for_each(|(a, b)| *a += b);
                }
            }
        }
        Ok(total.unwrap_or(ControlVector { n_embd: 0, data: Vec::new() }))
    }

    /// The width of each direction.
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// The last layer with a direction (0 for none).
    pub fn n_layers(&self) -> usize {
        self.data.len().checked_div(self.n_embd).unwrap_or(0)
    }

    /// The direction of `layer` (from 1), zeros for a layer below [`n_layers`](Self::n_layers)
    /// that no tensor named; `None` for 0 and past the last layer.
    pub fn direction(&self, layer: u32) -> Option<&[f32]> {
        let l = (layer as usize).checked_sub(1)?;
        self.data.get(l * self.n_embd..(l + 1) * self.n_embd)
    }

    fn add(&mut self, layer: u32, values: &[f32], strength: f32) {
        let end = self.n_embd * layer as usize;
        if self.data.len() < end {
            self.data.resize(end, 0.0);
        }
        let dst = &mut self.data[end - self.n_embd..end];
        dst.iter_mut().zip(values).for_each(|(d, s)| *d += s * strength);
    }
}

/// `common_control_vector_load_one`.
fn load_one(path: &Path, strength: f32) -> Result<ControlVector> {
    let g = open_gguf(path)?;
    check_tensor_table(&g, path)?;
    let tensor_err = |t: &TensorInfo, reason: String| AdapterError::Tensor {
        path: path.to_path_buf(),
        tensor: t.name.clone(),
        reason,
    };
    let mut file =
        std::fs::File::open(path).map_err(|source| AdapterError::Unreadable { path: path.to_path_buf(), source })?;
    let mut v: Option<ControlVector> = None;
    for t in g.tensors() {
        let layer = t
            .name
            .strip_prefix("direction.")
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|l| l.parse::<u32>().ok())
            .ok_or_else(|| tensor_err(t, "the name is not direction.<layer>".into()))?;
        if layer == 0 {
            return Err(tensor_err(t, "layer 0 has no direction".into()).into());
        }
        if t.ggml_type != 0 {
            return Err(tensor_err(t, "a direction must be F32".into()).into());
        }
        if t.dims.iter().skip(1).any(|&d| d != 1) {
            return Err(tensor_err(t, format!("a direction must be 1-D, this is {:?}", t.dims)).into());
        }
        let n = t.dims.first().copied().unwrap_or(1) as usize;
        let v = v.get_or_insert_with(|| ControlVector { n_embd: n, data: Vec::new() });
        if n != v.n_embd {
            let what = format!("`{}` of {}", t.name, path.display());
            return Err(AdapterError::Width { n_embd: v.n_embd, what, expected: n }.into());
        }
        let mut bytes = vec![0u8; n * 4];
        let read = |file: &mut std::fs::File, bytes: &mut [u8]| {
            file.seek(SeekFrom::Start(g.data_offset() + t.offset))?;
            file.read_exact(bytes)
        };
        read(&mut file, &mut bytes).map_err(|source| AdapterError::Unreadable { path: path.to_path_buf(), source })?;
        let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if values.iter().any(|x| !x.is_finite()) {
            return Err(tensor_err(t, "holds a value that is not finite".into()).into());
        }
        v.add(layer, &values, strength);
    }
    v.ok_or_else(|| {
        AdapterError::Tensor {
            path: path.to_path_buf(),
            tensor: String::new(),
            reason: "the file has no direction tensors".into(),
        }
        .into()
    })
}

/// The adapters of an [`AdapterOptions`](crate::options::AdapterOptions) (llama.cpp's `--lora`, `--control-vector`, ... flags),
/// loaded for one model: apply them to each context of the run with [`apply`](Self::apply).
/// Like the adapters it holds, it must be declared before the contexts it is applied to.
#[derive(Debug)]
pub struct LoadedAdapters<'m> {
    loras: Vec<(LoraAdapter<'m>, f32)>,
    control: Option<(ControlVector, Option<RangeInclusive<u32>>)>,
}

impl crate::options::AdapterOptions {
    /// Loads the LoRA adapters and the (summed) control vector for `model`; the layer range
    /// follows llama.cpp's common code (a start or end of 0 or less: layer 1, the last layer).
    /// Errors as [`LoraAdapter::load`], [`ControlVector::load_scaled`], and a range the model
    /// does not have.
    pub fn load<'m>(&self, model: &'m Model) -> Result<LoadedAdapters<'m>> {
        let loras =
            self.loras.iter().map(|l| Ok((LoraAdapter::load(model, &l.path)?, l.scale))).collect::<Result<Vec<_>>>()?;
        let control = if self.control_vectors.is_empty() {
            None
        } else {
            let files: Vec<(&Path, f32)> = self.control_vectors.iter().map(|c| (c.path.as_path(), c.scale)).collect();
            let vector = ControlVector::load_scaled(&files)?;
            let n_layer = model.info().n_layer;
            let range = self.control_vector_layers.map(|(start, end)| {
                let start = u32::try_from(start).ok().filter(|&s| s > 0).unwrap_or(1);
                let end = u32::try_from(end).ok().filter(|&e| e > 0).unwrap_or(n_layer);
                start..=end
            });
            if let Some(r) = &range
                && (r.is_empty() || *r.end() > n_layer)
            {
                return Err(AdapterError::LayerRange { start: *r.start(), end: *r.end(), n_layer }.into());
            }
            Some((vector, range))
        };
        Ok(LoadedAdapters { loras, control })
    }
}

impl<'m> LoadedAdapters<'m> {
    /// Whether nothing was loaded.
    pub fn is_empty(&self) -> bool {
        self.loras.is_empty() && self.control.is_none()
    }

    /// Sets the LoRA adapters (with their scales) and the control vector on `ctx`.
    pub fn apply(&'m self, ctx: &mut Context<'m>) -> Result<()> {
        if !self.loras.is_empty() {
            let set: Vec<(&'m LoraAdapter<'m>, f32)> = self.loras.iter().map(|(a, s)| (a, *s)).collect();
            ctx.set_loras(&set)?;
        }
        if let Some((vector, range)) = &self.control {
            ctx.set_control_vector(vector, range.clone())?;
        }
        Ok(())
    }
}
