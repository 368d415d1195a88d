//! Probes `llama.h` for API variants and turns them into `cfg`s for the safe layer.
//!
//! llama.cpp changes its C API every few weeks. The safe crate maps one canonical option set
//! onto each variant; these cfgs tell it which variant it is compiled against.

use std::path::Path;

/// `(cfg name, text whose presence in llama.h means the variant is there, what it means)`.
const PROBES: &[(&str, &str, &str)] = &[
    ("llama_flash_attn_enum", "flash_attn_type", "flash attention is an enum, not a bool (3d4053f7+)"),
    ("llama_load_mode", "enum llama_load_mode", "load_mode enum replaces use_mmap/use_mlock (5f55650a+)"),
    ("llama_use_direct_io", "use_direct_io", "bool use_direct_io in model params (1051ecd2..9e3b928f)"),
    ("llama_no_host", "no_host", "bool no_host in model params (d7395115+)"),
    ("llama_split_mode_tensor", "LLAMA_SPLIT_MODE_TENSOR", "tensor split mode (e21cdc11+)"),
    // Added in the same commit (1051ecd2) that made a negative n_gpu_layers mean "all layers";
    // before it a negative value meant none.
    ("llama_negative_ngl_is_all", "llama_max_tensor_buft_overrides", "negative n_gpu_layers = all (1051ecd2+)"),
    ("llama_ftype_name", "llama_ftype_name", "llama_model_ftype/llama_ftype_name (5f55650a+)"),
    ("llama_kv_self", "llama_kv_self_clear", "deprecated llama_kv_self_* calls still present (before 3d4053f7)"),
];

/// Emits, for the probes present in `header`, `rustc-cfg`s for llama-sys and the
/// `cargo:api=` / `cargo:api_all=` metadata that dependents read as `DEP_LLAMA_API(_ALL)`
/// (llama-runner's build script turns them into its own cfgs).
pub fn emit(header: &Path) {
    let text = std::fs::read_to_string(header).unwrap_or_else(|e| panic!("cannot read {}: {e}", header.display()));
    let mut present = Vec::new();
    for (cfg, needle, what) in PROBES {
        println!("cargo:rustc-check-cfg=cfg({cfg})");
        let yes = text.contains(needle);
        println!("llama-sys: probe {cfg}: {} ({what})", if yes { "yes" } else { "no" });
        if yes {
            println!("cargo:rustc-cfg={cfg}");
            present.push(*cfg);
        }
    }
    let all: Vec<&str> = PROBES.iter().map(|p| p.0).collect();
    println!("cargo:api={}", present.join(","));
    println!("cargo:api_all={}", all.join(","));
}
