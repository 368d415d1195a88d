//! Checks on options before anything reaches llama.cpp, which aborts on some bad input.
//!
//! Every failure is an [`Error::InvalidOption`] naming the option (and its llama.cpp flag). The
//! checks cover what llama.cpp would abort on (`GGML_ASSERT`), what it would silently get wrong,
//! and what its own command-line parser rejects; `tests/validation.rs` shows each one, and for
//! the aborts, in a child process, that llama.cpp really aborts without the check:
//!
//! - `n_batch = 0` with a non-zero `n_ubatch` aborts context creation
//!   (`GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)` in `llama-context.cpp`);
//! - a threadpool of 0 threads aborts the first decode (`GGML_ASSERT(cplan->n_threads > 0)`);
//! - a quantized K or V cache whose block size does not divide the head dimension is refused by
//!   llama.cpp with flash attention, but *without* flash attention it is accepted and computes
//!   with per-head views that do not start on a block (`ggml_row_size` only `assert`s, which
//!   release builds drop);
//! - `-dev CPU` and buffer types other than those of registered devices are refused by
//!   llama.cpp's parser, as here (the library itself would take the CPU as an offload device).
//!
//! Deliberately stricter than llama.cpp, which clamps or warns instead: `n_ubatch > n_batch`, a
//! zero `n_ubatch`, and a context larger than the model's training context.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::options::{CacheType, ContextOptions, FlashAttn, ModelOptions, SplitMode};

fn invalid(option: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOption { option: option.to_string(), reason: reason.into() }
}

/// llama.cpp's limit on parallel sequences (`LLAMA_MAX_SEQ`).
pub const MAX_SEQ: u32 = 256;

/// Checks model options that do not need the model.
pub fn model_options(o: &ModelOptions) -> Result<()> {
    for ov in &o.tensor_overrides {
        if ov.pattern.is_empty() {
            return Err(invalid("tensor_overrides (-ot)", "empty pattern"));
        }
        crate::regex::check(&ov.pattern).map_err(|e| {
            invalid("tensor_overrides (-ot)", format!("pattern `{}` does not compile as a std::regex: {e}", ov.pattern))
        })?;
        if let crate::options::BufferTarget::Device(name) = &ov.target {
            // The names llama.cpp's `-ot` accepts: the buffer type of each registered device.
            let known: Vec<String> = crate::params::override_buffer_types().into_iter().map(|(n, _)| n).collect();
            if !known.iter().any(|k| k == name) {
                return Err(invalid(
                    "tensor_overrides (-ot)",
                    format!("unknown buffer type `{name}` in `{}={name}`; available: {}", ov.pattern, known.join(", ")),
                ));
            }
        }
    }
    if let Some(devices) = &o.devices {
        let offload = offload_device_names();
        for name in devices {
            if !offload.iter().any(|d| d == name) {
                let available = if offload.is_empty() {
                    "none (this build has no GPU or other offload device; the CPU is always used)".to_string()
                } else {
                    offload.join(", ")
                };
                let what = if crate::backend::device_names().iter().any(|d| d == name) {
                    "is the CPU, not an offload device"
                } else {
                    "is not a device"
                };
                return Err(invalid("devices (-dev)", format!("`{name}` {what}; offload devices: {available}")));
            }
        }
    }
    if i32::try_from(o.main_gpu).is_err() {
        return Err(invalid("main_gpu (-mg)", format!("{} is too large", o.main_gpu)));
    }
    if o.tensor_split.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(invalid("tensor_split (-ts)", "values must be finite and not negative"));
    }
    // SAFETY: a pure function.
    let max_dev = unsafe { llama_sys::llama_max_devices() };
    if o.tensor_split.len() > max_dev {
        return Err(invalid(
            "tensor_split (-ts)",
            format!("{} values, llama.cpp takes at most {max_dev}", o.tensor_split.len()),
        ));
    }
    Ok(())
}

/// Checks context options against each other and against the model.
pub fn context_options(model: &Model, o: &ContextOptions) -> Result<()> {
    if o.n_batch == 0 {
        return Err(invalid("n_batch (-b)", "must be at least 1"));
    }
    if o.n_ubatch == 0 {
        return Err(invalid("n_ubatch (-ub)", "must be at least 1"));
    }
    if o.n_ubatch > o.n_batch {
        return Err(invalid("n_ubatch (-ub)", format!("{} is larger than n_batch (-b) {}", o.n_ubatch, o.n_batch)));
    }
    if o.n_seq_max == 0 || o.n_seq_max > MAX_SEQ {
        return Err(invalid("n_seq_max (-np)", format!("{} is outside 1..={MAX_SEQ} (LLAMA_MAX_SEQ)", o.n_seq_max)));
    }
    if o.n_threads == Some(0) {
        return Err(invalid("n_threads (-t)", "must be at least 1"));
    }
    if o.n_threads_batch == Some(0) {
        return Err(invalid("n_threads_batch (-tb)", "must be at least 1"));
    }
    // `-fa auto` is off on commits without an automatic mode (see params::effective_flash_attn).
    let fa_off = crate::params::effective_flash_attn(o.flash_attn) == FlashAttn::Off;
    if o.type_v.is_quantized() && fa_off {
        let why = if o.flash_attn == FlashAttn::Off {
            "-fa off".to_string()
        } else {
            format!("-fa auto means off at llama.cpp {}", llama_sys::build_info::short_commit())
        };
        return Err(invalid(
            "type_v (-ctv)",
            format!("a quantized V cache ({}) needs flash attention, which is off ({why})", o.type_v),
        ));
    }
    if model.options().split_mode == SplitMode::Tensor && fa_off {
        return Err(invalid(
            "flash_attn (-fa)",
            "split mode `tensor` (-sm tensor) needs flash attention, which is off",
        ));
    }
    check_cache_type(model, "type_k (-ctk)", o.type_k, "key_length", "n_embd_head_k")?;
    check_cache_type(model, "type_v (-ctv)", o.type_v, "value_length", "n_embd_head_v")?;
    o.placement.cpus().map_err(|e| invalid("cpu_mask (-C)", e))?;
    if o.placement.poll > 100 {
        return Err(invalid("poll (--poll)", format!("{} is outside 0..=100", o.placement.poll)));
    }
    let n_ctx_train = model.n_ctx_train();
    if n_ctx_train > 0 && o.n_ctx > n_ctx_train {
        return Err(invalid(
            "n_ctx (-c)",
            format!("{} is larger than the {n_ctx_train} tokens the model was trained for", o.n_ctx),
        ));
    }
    Ok(())
}

/// A block-quantized cache type must tile every attention head: its block size has to divide
/// the head dimension (`{arch}.attention.key_length` / `value_length` and their `_swa` / `_mla`
/// variants where present, otherwise `n_embd / n_head`).
fn check_cache_type(model: &Model, option: &str, t: CacheType, key: &str, llama_name: &str) -> Result<()> {
    if !t.is_quantized() {
        return Ok(());
    }
    // SAFETY: a pure function of the type.
    let block = unsafe { llama_sys::ggml_blck_size(t.ggml()) } as u32;
    for dim in head_dims(model, key) {
        if block > 1 && dim % block != 0 {
            return Err(invalid(
                option,
                format!(
                    "cache type {t} has blocks of {block} values, which do not divide the model's head \
                     dimension {llama_name} = {dim}; use f16, bf16 or f32"
                ),
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

/// Names of the devices `-dev` accepts: every registered device that is not a CPU.
fn offload_device_names() -> Vec<String> {
    crate::backend::devices().into_iter().filter(|d| d.kind != "cpu").map(|d| d.name).collect()
}
