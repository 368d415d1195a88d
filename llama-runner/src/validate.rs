//! Checks on options before anything reaches llama.cpp, which aborts on some bad input.
//!
//! Every failure is an [`Error::InvalidOption`] naming the option (and its llama.cpp flag), with
//! the value and a typed [`Reason`]. The
//! checks cover what llama.cpp would abort on (`GGML_ASSERT`), what it would silently get wrong,
//! and what its own command-line parser rejects; `tests/validation.rs` shows each one, and for
//! the aborts, in a child process, that llama.cpp really aborts without the check:
//!
//! - `n_batch = 0` with a non-zero `n_ubatch` aborts context creation
//!   (`GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)` in `llama-context.cpp`);
//! - a threadpool of 0 threads aborts the first decode (`GGML_ASSERT(cplan->n_threads > 0)`),
//!   and one of 65535 crashes it in OpenMP (above `GGML_MAX_N_THREADS`, 512, refused);
//! - a quantized K or V cache whose block size does not divide the head dimension is refused by
//!   llama.cpp with flash attention, but *without* flash attention it is accepted and computes
//!   with per-head views that do not start on a block (`ggml_row_size` only `assert`s, which
//!   release builds drop);
//! - `-dev CPU` and buffer types other than those of registered devices are refused by
//!   llama.cpp's parser, as here (the library itself would take the CPU as an offload device).
//!
//! Deliberately stricter than llama.cpp, which clamps or warns instead: `n_ubatch > n_batch`, a
//! zero `n_ubatch`, and a context larger than the model's training context.

use std::ffi::CString;

/// `GGML_MAX_N_THREADS` (ggml.h): the most threads ggml computes with.
const MAX_THREADS: u32 = 512;

use llama_sys as sys;

use crate::error::{Error, Reason, Result};
use crate::model::Model;
use crate::options::{
    BufferTarget, CacheType, ContextOptions, DeviceKind, FlashAttn, ModelOptions, Opt, SplitMode, TensorOverride,
    TensorSplit,
};

fn invalid(option: Opt, value: impl Into<String>, reason: Reason) -> Error {
    Error::InvalidOption { option, value: value.into(), reason }
}

/// llama.cpp's limit on parallel sequences (`LLAMA_MAX_SEQ`).
pub const MAX_SEQ: u32 = 256;

/// Model options after [`model_options`]: every override resolved to its buffer type, every
/// device to llama.cpp's handle, every number to its C value. [`crate::params`] lowers it
/// without checking anything again.
#[derive(Debug)]
pub struct CheckedModelOptions<'a> {
    pub(crate) options: &'a ModelOptions,
    /// Every override in the order llama.cpp applies them, with its pattern as a C string and
    /// its buffer type.
    pub(crate) overrides: Vec<(CString, sys::ggml_backend_buffer_type_t)>,
    /// The devices, when given.
    pub(crate) devices: Option<Vec<sys::ggml_backend_dev_t>>,
    pub(crate) tensor_split: TensorSplit,
    pub(crate) n_gpu_layers: i32,
    pub(crate) split_mode: sys::llama_split_mode,
    pub(crate) main_gpu: i32,
}

impl CheckedModelOptions<'_> {
    /// The options that were checked.
    pub fn options(&self) -> &ModelOptions {
        self.options
    }
}

/// Checks the model options that do not depend on this machine's devices (a configuration for
/// a GPU machine must be readable anywhere): override patterns, their number, the tensor split
/// and the main GPU.
pub fn portable_model_options(o: &ModelOptions) -> Result<()> {
    for ov in &o.tensor_overrides {
        check_pattern(&ov.pattern)?;
    }
    let count = o.tensor_overrides.len() + usize::from(o.cpu_moe) + o.n_cpu_moe as usize;
    let max = crate::options::max_tensor_overrides();
    if count > max {
        return Err(invalid(Opt::TensorOverrides, count.to_string(), Reason::TooManyOverrides { count, max }));
    }
    main_gpu(o)?;
    tensor_split(o)?;
    Ok(())
}

fn check_pattern(pattern: &str) -> Result<()> {
    if pattern.is_empty() {
        return Err(invalid(Opt::TensorOverrides, pattern, Reason::EmptyPattern));
    }
    crate::regex::check(pattern).map_err(|message| {
        invalid(Opt::TensorOverrides, pattern, Reason::Regex { pattern: pattern.to_string(), message })
    })
}

fn main_gpu(o: &ModelOptions) -> Result<i32> {
    i32::try_from(o.main_gpu)
        .map_err(|_| invalid(Opt::MainGpu, o.main_gpu.to_string(), Reason::TooLarge { value: u64::from(o.main_gpu) }))
}

fn tensor_split(o: &ModelOptions) -> Result<TensorSplit> {
    TensorSplit::new(&o.tensor_split).map_err(|e| invalid(Opt::TensorSplit, format!("{:?}", o.tensor_split), e.into()))
}

/// Checks model options that do not need the model, and resolves them for the lowering: the
/// one place [`Model::load`](crate::Model::load) checks them. Only called with the backend
/// initialised (by a caller holding a [`crate::Backend`]).
pub fn model_options(o: &ModelOptions) -> Result<CheckedModelOptions<'_>> {
    portable_model_options(o)?;
    let buffer_types = crate::params::override_buffer_types();
    let mut overrides = Vec::new();
    for ov in o.effective_overrides() {
        let TensorOverride { pattern, target } = &ov;
        let buft = match target {
            // SAFETY: returns a static buffer type.
            BufferTarget::Cpu => unsafe { sys::ggml_backend_cpu_buffer_type() },
            BufferTarget::Device(name) => {
                // The names llama.cpp's `-ot` accepts: the buffer type of each registered device.
                let found = buffer_types.iter().find(|(n, _)| n == name).map(|(_, b)| *b);
                found.ok_or_else(|| {
                    invalid(
                        Opt::TensorOverrides,
                        format!("{pattern}={name}"),
                        Reason::UnknownBufferType {
                            pattern: pattern.clone(),
                            name: name.clone(),
                            available: buffer_types.iter().map(|(n, _)| n.clone()).collect(),
                        },
                    )
                })?
            }
        };
        let c = CString::new(pattern.as_str())
            .map_err(|_| invalid(Opt::TensorOverrides, pattern, Reason::NulByte { value: pattern.clone() }))?;
        overrides.push((c, buft));
    }
    let devices = match &o.devices {
        None => None,
        Some(names) => {
            let all = crate::backend::devices();
            let offload: Vec<String> =
                all.iter().filter(|d| d.kind != DeviceKind::Cpu).map(|d| d.name.clone()).collect();
            let mut devs = Vec::with_capacity(names.len());
            for name in names {
                if !offload.iter().any(|d| d == name) {
                    let is_cpu = all.iter().any(|d| &d.name == name);
                    return Err(invalid(
                        Opt::Devices,
                        name,
                        Reason::NotOffloadDevice { name: name.clone(), is_cpu, offload },
                    ));
                }
                devs.push(crate::params::device_by_name(name)?);
            }
            Some(devs)
        }
    };
    let main_gpu = main_gpu(o)?;
    let tensor_split = tensor_split(o)?;
    Ok(CheckedModelOptions {
        options: o,
        overrides,
        devices,
        tensor_split,
        n_gpu_layers: o.gpu_layers.lower()?,
        split_mode: o.split_mode.lower()?,
        main_gpu,
    })
}

/// Context options after [`context_options`]: the thread counts resolved and the CPU mask
/// parsed, so [`crate::Context::new`] lowers them without parsing or checking anything again.
#[derive(Debug)]
pub struct CheckedContextOptions<'a> {
    pub(crate) options: &'a ContextOptions,
    /// Generation threads (the physical cores when not given).
    pub(crate) n_threads: u32,
    /// Prompt threads (the generation threads when not given).
    pub(crate) n_threads_batch: u32,
    /// The CPUs both threadpools may run on, when pinned.
    pub(crate) cpu_mask: Option<crate::options::CpuMask>,
}

impl CheckedContextOptions<'_> {
    /// The options that were checked.
    pub fn options(&self) -> &ContextOptions {
        self.options
    }
}

/// Checks context options against each other and against the model.
pub fn context_options<'a>(model: &Model, o: &'a ContextOptions) -> Result<CheckedContextOptions<'a>> {
    if o.n_batch == 0 {
        return Err(invalid(Opt::NBatch, "0", Reason::Zero));
    }
    if o.n_ubatch == 0 {
        return Err(invalid(Opt::NUbatch, "0", Reason::Zero));
    }
    if o.n_ubatch > o.n_batch {
        return Err(invalid(
            Opt::NUbatch,
            o.n_ubatch.to_string(),
            Reason::UbatchOverBatch { n_ubatch: o.n_ubatch, n_batch: o.n_batch },
        ));
    }
    if o.n_seq_max == 0 || o.n_seq_max > MAX_SEQ {
        return Err(invalid(
            Opt::NSeqMax,
            o.n_seq_max.to_string(),
            Reason::OutOfRange {
                value: i64::from(o.n_seq_max),
                min: 1,
                max: i64::from(MAX_SEQ),
                limit: Some("LLAMA_MAX_SEQ"),
            },
        ));
    }
    for (opt, n) in [(Opt::NThreads, o.n_threads), (Opt::NThreadsBatch, o.n_threads_batch)] {
        match n {
            Some(0) => return Err(invalid(opt, "0", Reason::Zero)),
            // ggml's thread arrays hold GGML_MAX_N_THREADS; OpenMP crashes (SIGSEGV in
            // GOMP_parallel) or fails to start threads long before 65535.
            Some(n) if n > MAX_THREADS => {
                return Err(invalid(
                    opt,
                    n.to_string(),
                    Reason::OutOfRange {
                        value: i64::from(n),
                        min: 1,
                        max: i64::from(MAX_THREADS),
                        limit: Some("GGML_MAX_N_THREADS"),
                    },
                ));
            }
            _ => {}
        }
    }
    // `-fa auto` is off on commits without an automatic mode (see params::effective_flash_attn).
    let fa_off = crate::params::effective_flash_attn(o.flash_attn) == FlashAttn::Off;
    if o.type_v.is_quantized() && fa_off {
        let auto_off_at = (o.flash_attn != FlashAttn::Off).then(llama_sys::build_info::short_commit);
        return Err(invalid(
            Opt::TypeV,
            o.type_v.name(),
            Reason::QuantizedVNeedsFlashAttn { cache: o.type_v, auto_off_at },
        ));
    }
    if model.options().split_mode == SplitMode::Tensor && fa_off {
        return Err(invalid(Opt::FlashAttn, o.flash_attn.name(), Reason::TensorSplitModeNeedsFlashAttn));
    }
    check_cache_type(model, Opt::TypeK, o.type_k, "key_length", "n_embd_head_k")?;
    check_cache_type(model, Opt::TypeV, o.type_v, "value_length", "n_embd_head_v")?;
    let cpu_mask = o
        .placement
        .cpus()
        .map_err(|e| invalid(Opt::CpuMask, o.placement.cpu_mask.clone().unwrap_or_default(), e.into()))?;
    if o.placement.poll > 100 {
        return Err(invalid(
            Opt::Poll,
            o.placement.poll.to_string(),
            Reason::OutOfRange { value: i64::from(o.placement.poll), min: 0, max: 100, limit: None },
        ));
    }
    crate::embeddings::check_context_options(model, o)?;
    let n_ctx_train = model.n_ctx_train();
    if n_ctx_train > 0 && o.n_ctx > n_ctx_train {
        return Err(invalid(Opt::NCtx, o.n_ctx.to_string(), Reason::ContextTooLarge { n_ctx: o.n_ctx, n_ctx_train }));
    }
    Ok(CheckedContextOptions { options: o, n_threads: o.threads(), n_threads_batch: o.threads_batch(), cpu_mask })
}

/// A block-quantized cache type must tile every attention head: its block size has to divide
/// the head dimension (`{arch}.attention.key_length` / `value_length` and their `_swa` / `_mla`
/// variants where present, otherwise `n_embd / n_head`).
fn check_cache_type(model: &Model, option: Opt, t: CacheType, key: &str, llama_name: &'static str) -> Result<()> {
    if !t.is_quantized() {
        return Ok(());
    }
    // SAFETY: a pure function of the type.
    let block = unsafe { llama_sys::ggml_blck_size(t.ggml()) } as u32;
    for dim in head_dims(model, key) {
        if block > 1 && dim % block != 0 {
            return Err(invalid(
                option,
                t.name(),
                Reason::BlockSize { cache: t, block, head_dim_name: llama_name, head_dim: dim },
            ));
        }
    }
    Ok(())
}

/// The model's attention head dimensions for keys (`key_length`) or values (`value_length`).
fn head_dims(model: &Model, key: &str) -> Vec<u32> {
    let arch = model.meta("general.architecture").unwrap_or_default();
    let mut dims: Vec<u32> = ["", "_swa", "_mla"]
        .iter()
        .filter_map(|suffix| model.meta(&format!("{arch}.attention.{key}{suffix}")))
        .filter_map(|v| v.trim().parse().ok())
        .filter(|&d| d > 0)
        .collect();
    if dims.is_empty() {
        // SAFETY: the model is valid; both only read hyperparameters.
        let (n_embd, n_head) = unsafe {
            (llama_sys::llama_model_n_embd(model.raw().as_ptr()), llama_sys::llama_model_n_head(model.raw().as_ptr()))
        };
        if n_embd > 0 && n_head > 0 {
            dims.push((n_embd / n_head) as u32);
        }
    }
    dims
}
