//! How ggml and llama.cpp read each environment knob of [`EnvKnobs`](llama_runner::knobs::EnvKnobs),
//! so that a `.env` value means what it means to them.

use llama_runner::flags;

/// How ggml reads an environment knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KnobRead {
    /// On when set, whatever the value.
    Presence,
    /// On when `atoi(value) == 1`.
    One,
    /// On when `atoi(value) != 0`.
    NonZero,
    /// A number (`atoi`).
    Number,
    /// A string.
    Text,
}

/// Every field of [`EnvKnobs`](llama_runner::knobs::EnvKnobs), by variable name, with the way
/// the code that reads it does:
///
/// | variable | read by |
/// |---|---|
/// | `GGML_CUDA_GRAPH_OPT` | `ggml_backend_cuda_graph_optimize` (`atoi(env) == 1`) |
/// | `GGML_CUDA_DISABLE_GRAPHS` | `disable_cuda_graphs_due_to_env` in ggml-cuda's `common.cuh` (`!= nullptr`) |
/// | `GGML_CUDA_DISABLE_FUSION` | `ggml_cuda_try_fuse` (`std::atoi`) |
/// | `GGML_CUDA_PDL` | `ggml_cuda_kernel_launch` (`atoi`) |
/// | `GGML_CUDA_ENABLE_UNIFIED_MEMORY` | `ggml_cuda_device_malloc` (`!= nullptr`) |
/// | `GGML_CUDA_NO_PINNED` | `ggml_cuda_host_malloc` (`!= nullptr`) |
/// | `GGML_CUDA_REGISTER_HOST` | `ggml_backend_cuda_register_host_buffer` (`!= nullptr`) |
/// | `GGML_CUDA_P2P` | `ggml_cuda_init` (`!= nullptr`) |
/// | `GGML_OP_OFFLOAD_MIN_BATCH` | `ggml_backend_cuda_reg` (`atoi`, default 32) |
/// | `GGML_CUDA_CUBLAS_COMPUTE_TYPE` | `ggml_cuda_mul_mat_cublas` (a string) |
/// | `GGML_CPU_DISABLE_FUSION` | `ggml_cpu_init` (`atoi(env) == 1`) |
/// | `LLAMA_GRAPH_REUSE_DISABLE` | the `llama_context` constructor (`atoi`) |
/// | `LLAMA_ATTN_ROT_DISABLE` | the `llama_kv_cache` constructor (`atoi`) |
pub(super) const KNOBS: [(&str, KnobRead); 13] = [
    ("GGML_CUDA_GRAPH_OPT", KnobRead::One),
    ("GGML_CUDA_DISABLE_GRAPHS", KnobRead::Presence),
    ("GGML_CUDA_DISABLE_FUSION", KnobRead::NonZero),
    ("GGML_CUDA_PDL", KnobRead::NonZero),
    ("GGML_CUDA_ENABLE_UNIFIED_MEMORY", KnobRead::Presence),
    ("GGML_CUDA_NO_PINNED", KnobRead::Presence),
    ("GGML_CUDA_REGISTER_HOST", KnobRead::Presence),
    ("GGML_CUDA_P2P", KnobRead::Presence),
    ("GGML_OP_OFFLOAD_MIN_BATCH", KnobRead::Number),
    ("GGML_CUDA_CUBLAS_COMPUTE_TYPE", KnobRead::Text),
    ("GGML_CPU_DISABLE_FUSION", KnobRead::One),
    ("LLAMA_GRAPH_REUSE_DISABLE", KnobRead::NonZero),
    ("LLAMA_ATTN_ROT_DISABLE", KnobRead::NonZero),
];

/// How ggml reads `name`, if it is a knob of [`KNOBS`].
pub(super) fn knob_read(name: &str) -> Option<KnobRead> {
    KNOBS.iter().find(|(n, _)| *n == name).map(|(_, read)| *read)
}

/// The value ggml makes of `name=v`, as the TOML value of its [`EnvKnobs`] field, with a
/// warning where that differs from what the value seems to say; `None` for a
/// [`KnobRead::Number`] that is not a non-negative number.
///
/// [`EnvKnobs`]: llama_runner::knobs::EnvKnobs
pub(super) fn read_knob(name: &str, read: KnobRead, v: &str, warnings: &mut Vec<String>) -> Option<toml::Value> {
    let atoi = flags::c_atoi;
    let on = match read {
        KnobRead::Presence => true,
        KnobRead::One => atoi(v) == 1,
        KnobRead::NonZero => atoi(v) != 0,
        KnobRead::Number => {
            let n = atoi(v);
            if n.to_string() != v.trim() {
                warnings.push(format!("{name}={v} is read as {n} (ggml uses atoi)"));
            }
            let n = u32::try_from(n).ok()?;
            return Some(toml::Value::Integer(i64::from(n)));
        }
        KnobRead::Text => return Some(toml::Value::String(v.to_string())),
    };
    let lower = v.trim().to_ascii_lowercase();
    let looks_on = matches!(lower.as_str(), "1" | "true" | "on" | "yes" | "y" | "enabled");
    let looks_off = matches!(lower.as_str(), "" | "0" | "false" | "off" | "no" | "n" | "disabled");
    if (looks_on && !on) || (looks_off && on) {
        let how = match read {
            KnobRead::Presence => "ggml only checks that the variable is set",
            KnobRead::One => "ggml turns it on only when atoi(value) == 1",
            _ => "ggml turns it on only when atoi(value) != 0",
        };
        warnings.push(format!("{name}={v} means {}: {how}", if on { "on" } else { "off" }));
    }
    Some(toml::Value::Boolean(on))
}
