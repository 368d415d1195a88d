//! Lowering typed options to llama.cpp's C structs: the one place that does it.
//!
//! Everything a C struct points to (override patterns, the override array and its terminator,
//! the device list, the tensor split) is owned by the value returned here, which the [`Model`]
//! keeps for its whole life, so no pointer handed to llama.cpp can dangle.
//!
//! API variants of older llama.cpp commits are handled here too, through the cfgs llama-sys
//! probes from the header (`llama_load_mode`, `llama_flash_attn_enum`, ...).
//!
//! [`Model`]: crate::Model

use std::ffi::CString;
use std::ptr;

use llama_sys as sys;

use crate::error::{Error, Reason, Result};
use crate::options::{ContextOptions, FlashAttn, LoadMode, ModelOptions, Opt, ThreadPlacement};
use crate::validate::CheckedModelOptions;

/// `llama_model_params` plus everything its pointers point to. Internal: the [`Model`] keeps it
/// for its whole life; [`describe_model_params`] shows what it holds.
///
/// [`Model`]: crate::Model
pub(crate) struct RawModelParams {
    params: sys::llama_model_params,
    _patterns: Vec<CString>,
    _overrides: Vec<sys::llama_model_tensor_buft_override>,
    _devices: Vec<sys::ggml_backend_dev_t>,
    _tensor_split: Vec<f32>,
}

impl RawModelParams {
    /// The C struct; valid as long as `self` lives.
    pub(crate) fn get(&self) -> sys::llama_model_params {
        self.params
    }
}

impl RawModelParams {
    /// The C struct with a progress callback: `callback` is called with `user_data` during the
    /// load, and returning `false` cancels it. The copy is handed to one load call only (the
    /// stored struct keeps no callback), so `user_data` need live only as long as that call.
    pub(crate) fn with_progress(
        &self,
        callback: unsafe extern "C" fn(f32, *mut std::ffi::c_void) -> bool,
        user_data: *mut std::ffi::c_void,
    ) -> sys::llama_model_params {
        let mut p = self.params;
        p.progress_callback = Some(callback);
        p.progress_callback_user_data = user_data;
        p
    }
}

// SAFETY: the struct only holds pointers into its own heap allocations and to llama.cpp's
// process-wide, immutable device and buffer-type registry.
unsafe impl Send for RawModelParams {}
// SAFETY: as above; nothing is mutated through `&self`.
unsafe impl Sync for RawModelParams {}

/// Looks a device up by the name llama.cpp gives it (`CPU`, `CUDA0`).
pub(crate) fn device_by_name(name: &str) -> Result<sys::ggml_backend_dev_t> {
    let c = CString::new(name).map_err(|_| invalid(Opt::Devices, name, Reason::NulByte { value: name.into() }))?;
    // SAFETY: `c` is a valid C string; the call only reads the registry.
    let dev = unsafe { sys::ggml_backend_dev_by_name(c.as_ptr()) };
    if dev.is_null() {
        let available = crate::backend::device_names();
        return Err(invalid(Opt::Devices, name, Reason::NoSuchDevice { name: name.into(), available }));
    }
    Ok(dev)
}

/// The buffer types an override may name, as llama.cpp's `-ot` parser lists them: the default
/// buffer type of every registered device, by its buffer-type name (`CPU`, `CUDA0`, ...).
/// Host (`CUDA_Host`) and extra (`CPU_REPACK`) buffer types are not among them. Only called
/// with the backend initialised (by a caller holding a [`crate::Backend`]).
pub(crate) fn override_buffer_types() -> Vec<(String, sys::ggml_backend_buffer_type_t)> {
    // SAFETY: the registry is initialised; indices below the count are valid.
    let n = unsafe { sys::ggml_backend_dev_count() };
    (0..n)
        .filter_map(|i| {
            // SAFETY: `i < count`; a registered device's buffer type and its name are static.
            unsafe {
                let buft = sys::ggml_backend_dev_buffer_type(sys::ggml_backend_dev_get(i));
                (!buft.is_null()).then(|| (crate::backend::cstr(sys::ggml_backend_buft_name(buft)), buft))
            }
        })
        .collect()
}

fn invalid(option: Opt, value: impl Into<String>, reason: Reason) -> Error {
    Error::InvalidOption { option, value: value.into(), reason }
}

/// What llama.cpp receives for a set of model options: every field of `llama_model_params` this
/// crate sets, read back from the lowered struct (names and values as in llama.cpp's C API).
/// For tests that compare the lowering with llama.cpp's own argument parser, and for people
/// debugging what reached llama.cpp.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoweredModelParams {
    /// `devices`: `None` when the list is left to llama.cpp (all devices), else the device names.
    pub devices: Option<Vec<String>>,
    /// `tensor_buft_overrides`, in order: (pattern, buffer type name).
    pub tensor_buft_overrides: Vec<(String, String)>,
    /// `tensor_split`: `llama_max_devices()` values, or empty when not set.
    pub tensor_split: Vec<f32>,
    /// `n_gpu_layers`.
    pub n_gpu_layers: i32,
    /// `split_mode` (`LLAMA_SPLIT_MODE_*`).
    pub split_mode: i32,
    /// `main_gpu`.
    pub main_gpu: i32,
    /// `load_mode` (`LLAMA_LOAD_MODE_*`; on older commits derived from `use_mmap`/`use_mlock`:
    /// 0 none, 1 mmap, 2 mlock, 3 mmap+mlock).
    pub load_mode: i32,
    /// `use_extra_bufts`.
    pub use_extra_bufts: bool,
    /// `no_host` (false on commits without it).
    pub no_host: bool,
    /// `check_tensors`.
    pub check_tensors: bool,
    /// `vocab_only`.
    pub vocab_only: bool,
    /// `no_alloc`.
    pub no_alloc: bool,
}

/// Checks and lowers `opts` as [`Model::load`](crate::Model::load) does and describes the
/// result.
pub fn describe_model_params(_backend: &crate::Backend, opts: &ModelOptions) -> Result<LoweredModelParams> {
    let raw = model_params(&crate::validate::model_options(opts)?)?;
    let p = raw.get();
    let mut devices = None;
    let mut overrides = Vec::new();
    let mut tensor_split = Vec::new();
    // SAFETY: every pointer in `p` is owned by `raw` (alive until the end of this function) or
    // points into llama.cpp's static device registry; both arrays are terminated by a null entry
    // as built in `model_params`, and `tensor_split`, when set, has llama_max_devices() entries.
    unsafe {
        if !p.devices.is_null() {
            let mut names = Vec::new();
            let mut dev = p.devices;
            while !(*dev).is_null() {
                names.push(crate::backend::cstr(sys::ggml_backend_dev_name(*dev)));
                dev = dev.add(1);
            }
            devices = Some(names);
        }
        let mut ov = p.tensor_buft_overrides;
        while !ov.is_null() && !(*ov).pattern.is_null() {
            overrides.push((
                crate::backend::cstr((*ov).pattern),
                crate::backend::cstr(sys::ggml_backend_buft_name((*ov).buft)),
            ));
            ov = ov.add(1);
        }
        if !p.tensor_split.is_null() {
            tensor_split = std::slice::from_raw_parts(p.tensor_split, sys::llama_max_devices()).to_vec();
        }
    }
    Ok(LoweredModelParams {
        devices,
        tensor_buft_overrides: overrides,
        tensor_split,
        n_gpu_layers: p.n_gpu_layers,
        split_mode: p.split_mode as i32,
        main_gpu: p.main_gpu,
        load_mode: lowered_load_mode(&p),
        use_extra_bufts: p.use_extra_bufts,
        no_host: lowered_no_host(&p),
        check_tensors: p.check_tensors,
        vocab_only: p.vocab_only,
        no_alloc: p.no_alloc,
    })
}

#[cfg(llama_load_mode)]
fn lowered_load_mode(p: &sys::llama_model_params) -> i32 {
    p.load_mode as i32
}

#[cfg(not(llama_load_mode))]
fn lowered_load_mode(p: &sys::llama_model_params) -> i32 {
    i32::from(p.use_mmap) + 2 * i32::from(p.use_mlock)
}

#[cfg(llama_no_host)]
fn lowered_no_host(p: &sys::llama_model_params) -> bool {
    p.no_host
}

#[cfg(not(llama_no_host))]
fn lowered_no_host(_: &sys::llama_model_params) -> bool {
    false
}

/// Lowers checked model options ([`crate::validate::model_options`]); only what the compiled
/// commit cannot express fails here.
pub(crate) fn model_params(checked: &CheckedModelOptions<'_>) -> Result<RawModelParams> {
    let opts = checked.options;
    // SAFETY: returns a plain struct by value.
    let mut p = unsafe { sys::llama_model_default_params() };

    let mut patterns = Vec::with_capacity(checked.overrides.len());
    let mut raw_overrides = Vec::with_capacity(checked.overrides.len() + 1);
    for (pattern, buft) in &checked.overrides {
        let c = pattern.clone();
        raw_overrides.push(sys::llama_model_tensor_buft_override { pattern: c.as_ptr(), buft: *buft });
        patterns.push(c); // moving the CString does not move its heap buffer
    }
    raw_overrides.push(sys::llama_model_tensor_buft_override { pattern: ptr::null(), buft: ptr::null_mut() });
    if !checked.overrides.is_empty() {
        p.tensor_buft_overrides = raw_overrides.as_ptr();
    }

    let mut devices = Vec::new();
    if let Some(devs) = &checked.devices {
        devices.extend_from_slice(devs);
        devices.push(ptr::null_mut());
        p.devices = devices.as_mut_ptr();
    }

    p.n_gpu_layers = checked.n_gpu_layers;
    p.split_mode = checked.split_mode;
    p.main_gpu = checked.main_gpu;

    let mut tensor_split = Vec::new();
    if !checked.tensor_split.is_empty() {
        tensor_split = checked.tensor_split.padded(); // llama.cpp reads llama_max_devices() entries
        p.tensor_split = tensor_split.as_ptr();
    }

    set_load_mode(&mut p, opts.load_mode)?;
    p.use_extra_bufts = opts.repack;
    #[cfg(llama_no_host)]
    {
        p.no_host = opts.no_host;
    }
    #[cfg(not(llama_no_host))]
    if opts.no_host {
        return Err(crate::options::names::unsupported(Opt::NoHost, "true"));
    }

    Ok(RawModelParams {
        params: p,
        _patterns: patterns,
        _overrides: raw_overrides,
        _devices: devices,
        _tensor_split: tensor_split,
    })
}

#[cfg(llama_load_mode)]
fn set_load_mode(p: &mut sys::llama_model_params, mode: LoadMode) -> Result<()> {
    p.load_mode = mode.lower()?;
    Ok(())
}

#[cfg(not(llama_load_mode))]
fn set_load_mode(p: &mut sys::llama_model_params, mode: LoadMode) -> Result<()> {
    let (mmap, mlock) = match mode {
        LoadMode::None => (false, false),
        LoadMode::Mmap => (true, false),
        LoadMode::Mlock => (false, true),
        LoadMode::MmapMlock => (true, true),
        #[cfg(llama_use_direct_io)]
        LoadMode::DirectIo => {
            p.use_mmap = false;
            p.use_mlock = false;
            p.use_direct_io = true;
            return Ok(());
        }
        #[cfg(not(llama_use_direct_io))]
        LoadMode::DirectIo => return Err(crate::options::names::unsupported(Opt::LoadMode, mode.name())),
    };
    p.use_mmap = mmap;
    p.use_mlock = mlock;
    #[cfg(llama_use_direct_io)]
    {
        p.use_direct_io = false;
    }
    Ok(())
}

/// What a flash-attention setting means on the compiled commit: itself, except `Auto` on commits
/// before 3d4053f7, whose setting is a bool defaulting to off and which therefore run `Auto` as
/// `Off` (with a warning when the context is created).
pub fn effective_flash_attn(fa: FlashAttn) -> FlashAttn {
    match fa {
        FlashAttn::Auto if cfg!(not(llama_flash_attn_enum)) => FlashAttn::Off,
        other => other,
    }
}

/// Lowers context options (after validation, see [`crate::validate`]).
pub fn context_params(opts: &ContextOptions) -> Result<sys::llama_context_params> {
    // SAFETY: returns a plain struct by value.
    let mut p = unsafe { sys::llama_context_default_params() };
    p.n_ctx = opts.n_ctx;
    p.n_batch = opts.n_batch;
    p.n_ubatch = opts.n_ubatch;
    p.n_seq_max = opts.n_seq_max;
    p.n_threads = to_i32(Opt::NThreads, opts.threads())?;
    p.n_threads_batch = to_i32(Opt::NThreadsBatch, opts.threads_batch())?;
    #[cfg(llama_flash_attn_enum)]
    {
        p.flash_attn_type = opts.flash_attn.lower()?;
    }
    #[cfg(not(llama_flash_attn_enum))]
    {
        if opts.flash_attn == FlashAttn::Auto {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                log::warn!(
                    "flash_attn auto: llama.cpp {} has no automatic mode (a bool, default off), using off",
                    llama_sys::build_info::COMMIT
                );
            });
        }
        p.flash_attn = effective_flash_attn(opts.flash_attn) == FlashAttn::On;
    }
    p.type_k = opts.type_k.ggml();
    p.type_v = opts.type_v.ggml();
    p.offload_kqv = opts.offload_kqv;
    p.op_offload = opts.op_offload;
    p.swa_full = opts.swa_full;
    p.kv_unified = opts.kv_unified;
    // The CLI keeps performance counters; llama_context_default_params() turns them off.
    p.no_perf = !opts.perf;
    p.embeddings = opts.embeddings;
    p.pooling_type = opts.pooling.lower()?;
    Ok(p)
}

/// Lowers thread placement to the parameters of one ggml CPU threadpool of `n_threads` threads,
/// as llama.cpp's tools do (`ggml_threadpool_params_from_cpu_params`). A context creates one
/// pool for generation and, when the prompt thread count differs, one for prompt processing;
/// both get the same placement.
///
/// This parses the placement's CPU mask; [`crate::Context::new`] lowers the mask its validation
/// already parsed instead (`threadpool_params_checked`).
pub fn threadpool_params(n_threads: u32, placement: &ThreadPlacement) -> Result<sys::ggml_threadpool_params> {
    let mask = placement
        .cpus()
        .map_err(|e| invalid(Opt::CpuMask, placement.cpu_mask.clone().unwrap_or_default(), e.into()))?;
    threadpool_params_checked(n_threads, mask.as_ref(), placement)
}

/// [`threadpool_params`] with the CPU mask already parsed.
pub(crate) fn threadpool_params_checked(
    n_threads: u32,
    mask: Option<&crate::options::CpuMask>,
    placement: &ThreadPlacement,
) -> Result<sys::ggml_threadpool_params> {
    let n = to_i32(Opt::NThreads, n_threads)?;
    // SAFETY: returns a plain struct by value.
    let mut params = unsafe { sys::ggml_threadpool_params_default(n) };
    if let Some(mask) = mask {
        params.cpumask.copy_from_slice(mask.as_array());
    }
    params.strict_cpu = placement.strict;
    params.prio = placement.priority.level();
    params.poll = placement.poll;
    Ok(params)
}

fn to_i32(option: Opt, v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| invalid(option, v.to_string(), Reason::TooLarge { value: u64::from(v) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::TensorOverride;

    #[test]
    fn override_array_is_null_terminated_and_owns_its_patterns() {
        crate::Backend::get().unwrap();
        let opts = ModelOptions {
            tensor_overrides: vec![TensorOverride::cpu(r"blk\.1\."), TensorOverride::cpu("exps")],
            cpu_moe: true,
            ..Default::default()
        };
        let raw = model_params(&crate::validate::model_options(&opts).unwrap()).unwrap();
        let p = raw.get();
        let mut patterns = Vec::new();
        for i in 0.. {
            // SAFETY: the array ends with a null pattern and lives as long as `raw`.
            let o = unsafe { &*p.tensor_buft_overrides.add(i) };
            if o.pattern.is_null() {
                assert!(o.buft.is_null(), "the terminator has no buffer type");
                break;
            }
            // SAFETY: a valid C string owned by `raw`.
            patterns.push(unsafe { crate::backend::cstr(o.pattern) });
        }
        assert_eq!(patterns, [r"blk\.1\.", "exps", crate::options::EXPERTS_REGEX]);
        assert!(p.devices.is_null() && p.tensor_split.is_null(), "unset lists stay null");
    }
}
