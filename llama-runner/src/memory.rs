//! What a context would take in memory, from llama.cpp's own dry run, checked before anything
//! is allocated.
//!
//! A context's KV cache grows with `n_ctx` and the number of sequences: `-c 1048576` on a model
//! trained for a million tokens asks for tens of GiB. On Linux such an allocation often
//! succeeds (memory is overcommitted) and the process is killed later, when the pages are
//! touched. [`Context::new`](crate::Context::new) therefore asks llama.cpp first: the model is
//! loaded a second time with `no_alloc` (metadata only, once per model), a context with the same
//! parameters is created on it, which only simulates its allocations, and llama.cpp's memory
//! breakdown says what each buffer type would hold. A context whose host buffers exceed the
//! memory the system has available (`MemAvailable` plus free swap), or whose device buffers
//! exceed a device's free memory, is refused with the numbers ([`Error::ContextMemory`]).
//!
//! The breakdown needs `llama_get_memory_breakdown` (llama.cpp's staging header, at the pinned
//! commit and later); a llama.cpp tree without it gets no check ([`estimate`] returns `None`).

use std::ffi::CString;
use std::ptr::NonNull;

use llama_sys as sys;

use crate::error::{Error, Result};
use crate::model::Model;

/// One place a context's buffers go, and what they would take there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryNeed {
    /// `host`, or the device's name (`CUDA0`).
    pub place: String,
    /// Bytes of the context's own buffers (KV cache, outputs).
    pub context: u64,
    /// Bytes of its compute buffers.
    pub compute: u64,
    /// What is free there now (`MemAvailable` plus free swap for the host), when known.
    pub free: Option<u64>,
}

impl MemoryNeed {
    /// Context and compute bytes together.
    pub fn total(&self) -> u64 {
        self.context.saturating_add(self.compute)
    }

    /// Whether it would not fit in what is free.
    pub fn exceeds(&self) -> bool {
        self.free.is_some_and(|free| self.total() > free)
    }
}

/// A model loaded with `no_alloc`, for dry runs of contexts.
pub(crate) struct DryModel {
    raw: NonNull<sys::llama_model>,
}

// SAFETY: as for `Model`: an immutable llama_model after loading, without thread affinity; it
// is only read (contexts created on it) and freed in Drop.
unsafe impl Send for DryModel {}
// SAFETY: see `Send`; llama_init_from_model on one model from several threads is what
// several contexts of one model do.
unsafe impl Sync for DryModel {}

impl Drop for DryModel {
    fn drop(&mut self) {
        // SAFETY: from llama_model_load_from_file, freed once; the contexts made on it are
        // freed before `estimate` returns.
        unsafe { sys::llama_model_free(self.raw.as_ptr()) }
    }
}

impl DryModel {
    /// Loads `model`'s file again with its parameters and `no_alloc` (no tensor data is read
    /// or allocated). `None` when llama.cpp refuses (the check is then skipped).
    pub(crate) fn load(model: &Model) -> Option<DryModel> {
        let mut params = model.raw_params().get();
        params.no_alloc = true;
        set_no_mmap(&mut params);
        params.progress_callback = None;
        let path = CString::new(model.path().as_os_str().as_encoded_bytes()).ok()?;
        let _quiet = crate::logging::Quiet::new();
        // SAFETY: a valid C string; the params' pointers are owned by the model's lowered
        // params, alive for the call (the model is borrowed).
        let raw = unsafe { sys::llama_model_load_from_file(path.as_ptr(), params) };
        crate::logging::resume_panic();
        NonNull::new(raw).map(|raw| DryModel { raw })
    }
}

#[cfg(llama_load_mode)]
fn set_no_mmap(p: &mut sys::llama_model_params) {
    p.load_mode = sys::LLAMA_LOAD_MODE_NONE;
}

#[cfg(not(llama_load_mode))]
fn set_no_mmap(p: &mut sys::llama_model_params) {
    p.use_mmap = false;
    p.use_mlock = false;
}

/// What a context of `model` with `options` would take, per place (host first, then each
/// device), from llama.cpp's dry run, with what is free there; nothing is allocated but the
/// cache's cell bookkeeping (about 90 bytes a cell), and the model's metadata is loaded a
/// second time on the first call for a model. `Ok(None)` when the dry run is not available (no
/// breakdown API in this llama.cpp, or llama.cpp refused the dry load or context). Errors: the
/// options [`Context::new`](crate::Context::new) refuses.
pub fn estimate(model: &Model, options: &crate::ContextOptions) -> Result<Option<Vec<MemoryNeed>>> {
    crate::validate::context_options(model, options)?;
    crate::sequences::check_context_options(options)?;
    let params = crate::params::context_params(options)?;
    Ok(estimate_raw(model, params))
}

/// [`estimate`] for lowered parameters.
fn estimate_raw(model: &Model, params: sys::llama_context_params) -> Option<Vec<MemoryNeed>> {
    let dry = model.dry_model()?;
    let _quiet = crate::logging::Quiet::new();
    // SAFETY: a valid model that outlives the call; params hold no pointers.
    let ctx = NonNull::new(unsafe { sys::llama_init_from_model(dry.raw.as_ptr(), params) });
    crate::logging::resume_panic();
    let ctx = ctx?;
    let mut entries =
        vec![
            sys::llama_sys_buft_memory { host: 0, device: std::ptr::null_mut(), model: 0, context: 0, compute: 0 };
            16
        ];
    // SAFETY: a valid context; `entries` has room for its length.
    let mut n = unsafe { sys::memory_breakdown(ctx.as_ptr(), entries.as_mut_ptr(), entries.len()) };
    if let Some(k) = n
        && k > entries.len()
        && k != usize::MAX
    {
        entries.resize(k, entries[0]);
        // SAFETY: as above, with room for `k`.
        n = unsafe { sys::memory_breakdown(ctx.as_ptr(), entries.as_mut_ptr(), entries.len()) };
    }
    // SAFETY: created above, freed once, not used afterwards.
    unsafe { sys::llama_free(ctx.as_ptr()) };
    let n = n.filter(|&k| k <= entries.len())?;
    let mut host = MemoryNeed { place: "host".into(), context: 0, compute: 0, free: host_free() };
    let mut devices: Vec<(sys::ggml_backend_dev_t, MemoryNeed)> = Vec::new();
    for e in &entries[..n] {
        let need = if e.host != 0 || e.device.is_null() {
            &mut host
        } else {
            match devices.iter().position(|(d, _)| *d == e.device) {
                Some(i) => &mut devices[i].1,
                None => {
                    devices.push((e.device, device_need(e.device)));
                    &mut devices.last_mut().expect("just pushed").1
                }
            }
        };
        need.context = need.context.saturating_add(e.context as u64);
        need.compute = need.compute.saturating_add(e.compute as u64);
    }
    Some(std::iter::once(host).chain(devices.into_iter().map(|(_, n)| n)).collect())
}

fn device_need(dev: sys::ggml_backend_dev_t) -> MemoryNeed {
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: a device of llama.cpp's static registry; the outputs are valid.
    let name = unsafe {
        sys::ggml_backend_dev_memory(dev, &mut free, &mut total);
        crate::backend::cstr(sys::ggml_backend_dev_name(dev))
    };
    // A device that reports nothing (0 of 0) is not checked.
    let free = (total > 0).then_some(free as u64);
    MemoryNeed { place: name, context: 0, compute: 0, free }
}

/// `MemAvailable` plus `SwapFree` from /proc/meminfo, in bytes (Linux; `None` elsewhere or
/// when unreadable).
fn host_free() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        kib.checked_mul(1024)
    };
    Some(field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0)))
}

/// Host bytes llama.cpp's KV cache keeps per cell besides the cache itself (positions, sequence
/// sets, shifts: about 94 measured at the pinned commit, so a lower bound).
const CELL_BYTES: u64 = 64;

/// The KV cells `params` ask for: `n_ctx`, or the model's training context for 0.
fn cells_asked(model: &Model, params: &sys::llama_context_params) -> u64 {
    if params.n_ctx == 0 {
        // SAFETY: a valid model; a plain getter. llama.cpp keeps the training context as a
        // uint32_t and returns it as int32_t: 2^31 and above come back negative.
        u64::from(unsafe { sys::llama_model_n_ctx_train(model.raw().as_ptr()) } as u32)
    } else {
        u64::from(params.n_ctx)
    }
}

/// A generous upper bound of a context's host bytes, from the model's sizes alone: K and V of
/// every layer in f32 with a head width of at most `n_embd` for each KV head, attention scores
/// of one micro-batch against the whole cache for every head, and a batch of logits. Real
/// contexts take a fraction of it (the real model at `-c 4096`: about a fifth).
fn upper_bound(model: &Model, params: &sys::llama_context_params) -> u64 {
    let m = model.raw().as_ptr();
    // SAFETY: a valid model; plain getters.
    let (n_layer, n_head, n_head_kv, n_embd) = unsafe {
        (
            sys::llama_model_n_layer(m),
            sys::llama_model_n_head(m),
            sys::llama_model_n_head_kv(m),
            sys::llama_model_n_embd(m),
        )
    };
    let u = |v: i32| u64::try_from(v.max(1)).unwrap_or(1);
    let n_ctx = cells_asked(model, params).max(1);
    let kv = u(n_layer) * n_ctx * 2 * u(n_head_kv) * u(n_embd) * 4;
    let scores = u64::from(params.n_ubatch.max(1)) * n_ctx * u(n_head) * 4;
    let logits = u64::from(params.n_batch.max(1)) * u64::from(model.n_vocab()) * 4;
    kv.saturating_add(scores).saturating_add(logits)
}

/// Refuses `params` for `model` when the dry run says a place would not hold the context. The
/// dry run (a second load of the model's metadata, once per model, and a simulated context) is
/// skipped where twice the [`upper_bound`] fits in the host's free memory and there is no GPU:
/// such a context fits in any case.
pub(crate) fn check(model: &Model, params: sys::llama_context_params) -> Result<()> {
    if !sys::HAS_MEMORY_BREAKDOWN {
        return Ok(());
    }
    use crate::options::DeviceKind;
    let on_device = crate::backend::devices().iter().any(|d| matches!(d.kind, DeviceKind::Gpu | DeviceKind::Igpu));
    let free = host_free();
    if !on_device && free.is_some_and(|free| upper_bound(model, &params).saturating_mul(2) < free) {
        return Ok(());
    }
    // The dry run allocates the cache's cell bookkeeping for real (about 90 bytes a cell at the
    // pinned commit); where that alone would take half of what is free, the context cannot fit
    // either, and the dry run is not risked.
    let cells = cells_asked(model, &params).saturating_mul(CELL_BYTES);
    if let Some(free) = free
        && cells.saturating_mul(2) > free
    {
        return Err(Error::ContextMemory {
            place: "host".into(),
            needed: cells,
            context: cells,
            compute: 0,
            free,
            n_ctx: params.n_ctx,
            n_seq_max: params.n_seq_max,
            dry_run: false,
        });
    }
    let Some(needs) = estimate_raw(model, params) else { return Ok(()) };
    if let Some(need) = needs.iter().find(|n| n.exceeds()) {
        return Err(Error::ContextMemory {
            place: need.place.clone(),
            needed: need.total(),
            context: need.context,
            compute: need.compute,
            free: need.free.unwrap_or(0),
            n_ctx: params.n_ctx,
            n_seq_max: params.n_seq_max,
            dry_run: true,
        });
    }
    Ok(())
}
