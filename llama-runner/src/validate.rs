//! Checks on options before anything reaches llama.cpp, which aborts on some bad input.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::options::{ContextOptions, FlashAttn, ModelOptions};

fn invalid(option: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOption { option: option.to_string(), reason: reason.into() }
}

/// Checks model options that do not need the model.
pub fn model_options(o: &ModelOptions) -> Result<()> {
    for ov in &o.tensor_overrides {
        if ov.pattern.is_empty() {
            return Err(invalid("tensor_overrides (-ot)", "empty pattern"));
        }
        crate::regex::check(&ov.pattern).map_err(|e| {
            invalid("tensor_overrides (-ot)", format!("pattern `{}` does not compile as a std::regex: {e}", ov.pattern))
        })?;
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
    if o.n_seq_max == 0 || o.n_seq_max > 256 {
        return Err(invalid("n_seq_max (-np)", format!("{} is outside 1..=256 (LLAMA_MAX_SEQ)", o.n_seq_max)));
    }
    if o.n_threads == Some(0) {
        return Err(invalid("n_threads (-t)", "must be at least 1"));
    }
    if o.n_threads_batch == Some(0) {
        return Err(invalid("n_threads_batch (-tb)", "must be at least 1"));
    }
    if o.type_v.is_quantized() && o.flash_attn == FlashAttn::Off {
        return Err(invalid(
            "type_v (-ctv)",
            format!("a quantized V cache ({}) needs flash attention, which is off (-fa off)", o.type_v),
        ));
    }
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
