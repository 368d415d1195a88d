//! Probes the llama.cpp headers for API variants and turns them into `cfg`s for the safe layer.
//!
//! llama.cpp changes its C API every few weeks. The safe crate maps one canonical option set
//! onto each variant; these cfgs tell it which variant it is compiled against. A probe is the
//! presence of a piece of text in one header, so it works the same with the checked-in bindings
//! and with bindgen.

use std::collections::HashMap;
use std::path::Path;

/// One API variant: `cfg` is set when `needle` occurs in `header` (relative to the llama.cpp
/// root). `what` is for the build log.
struct Probe {
    cfg: &'static str,
    header: &'static str,
    needle: &'static str,
    what: &'static str,
}

const LLAMA_H: &str = "include/llama.h";
const GGML_BACKEND_H: &str = "ggml/include/ggml-backend.h";

const fn probe(cfg: &'static str, header: &'static str, needle: &'static str, what: &'static str) -> Probe {
    Probe { cfg, header, needle, what }
}

/// Every probe, oldest change first where it matters. The snapshot that first has each variant
/// is noted; see the notes on API changes across the snapshots.
const PROBES: &[Probe] = &[
    probe("llama_flash_attn_enum", LLAMA_H, "flash_attn_type", "flash attention is an enum, not a bool (3d4053f7+)"),
    probe("llama_load_mode", LLAMA_H, "enum llama_load_mode", "load_mode enum replaces use_mmap/use_mlock (5f55650a+)"),
    probe("llama_use_direct_io", LLAMA_H, "use_direct_io", "bool use_direct_io in model params (1051ecd2..9e3b928f)"),
    probe("llama_no_host", LLAMA_H, "no_host", "bool no_host in model params (d7395115+)"),
    probe("llama_split_mode_tensor", LLAMA_H, "LLAMA_SPLIT_MODE_TENSOR", "tensor split mode (547765a9+)"),
    // Added in the same commit (1051ecd2) that made a negative n_gpu_layers mean "all layers";
    // before it a negative value meant none.
    probe(
        "llama_negative_ngl_is_all",
        LLAMA_H,
        "llama_max_tensor_buft_overrides",
        "negative n_gpu_layers = all (1051ecd2+)",
    ),
    probe("llama_ftype_name", LLAMA_H, "llama_ftype_name", "llama_model_ftype/llama_ftype_name (5f55650a+)"),
    probe(
        "llama_kv_self",
        LLAMA_H,
        "llama_kv_self_clear",
        "deprecated llama_kv_self_* calls still present (before 3d4053f7)",
    ),
    probe(
        "ggml_dev_type_igpu",
        GGML_BACKEND_H,
        "GGML_BACKEND_DEVICE_TYPE_IGPU",
        "integrated-GPU device type (3d4053f7+)",
    ),
];

/// Emits, for the probes present in the headers of the tree at `llama_dir`, `rustc-cfg`s for
/// llama-sys and the `cargo:api=` / `cargo:api_all=` metadata that dependents read as
/// `DEP_LLAMA_API(_ALL)` (llama-runner's build script turns them into its own cfgs).
pub fn emit(llama_dir: &Path) {
    let mut texts: HashMap<&str, String> = HashMap::new();
    let mut present = Vec::new();
    for p in PROBES {
        let text = texts.entry(p.header).or_insert_with(|| {
            let path = llama_dir.join(p.header);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        });
        println!("cargo:rustc-check-cfg=cfg({})", p.cfg);
        let yes = text.contains(p.needle);
        println!("llama-sys: probe {}: {} ({})", p.cfg, if yes { "yes" } else { "no" }, p.what);
        if yes {
            println!("cargo:rustc-cfg={}", p.cfg);
            present.push(p.cfg);
        }
    }
    let all: Vec<&str> = PROBES.iter().map(|p| p.cfg).collect();
    println!("cargo:api={}", present.join(","));
    println!("cargo:api_all={}", all.join(","));
}
