//! Probes the bindings in use for API variants and turns them into `cfg`s for the safe layer.
//!
//! llama.cpp changes its C API every few weeks. The safe crate maps one canonical option set
//! onto each variant; these cfgs tell it which variant it is compiled against. A probe asks
//! about a declaration in the bindings `src/lib.rs` includes (the checked-in file when it
//! matches the headers, or bindgen's output): a struct field, a function, a constant or a
//! type. The bindings are read as Rust tokens, with comments, doc attributes and string
//! literals skipped, and names compared whole, so a name in a comment or in a longer name does
//! not count, and a cfg says exactly what the safe layer can use.
//!
//! This module and `decls.rs` use only `std`, so a test can include them with `#[path]`.

use std::path::Path;

use crate::decls::{Api, Decls};

/// One API variant: `cfg` is set when `api` is declared. `what` is for the build log.
pub struct Probe {
    /// The cfg name (also listed in `cargo:api=` for dependents).
    pub cfg: &'static str,
    /// The declaration that marks the variant.
    pub api: Api,
    /// What the variant is, and from which snapshot on.
    pub what: &'static str,
}

const fn probe(cfg: &'static str, api: Api, what: &'static str) -> Probe {
    Probe { cfg, api, what }
}

/// Every probe, oldest change first where it matters. The snapshot that first has each variant
/// is noted; see the notes on API changes across the snapshots.
pub const PROBES: &[Probe] = &[
    probe(
        "llama_flash_attn_enum",
        Api::Field { record: "llama_context_params", field: "flash_attn_type" },
        "flash attention is an enum, not a bool (3d4053f7+)",
    ),
    probe("llama_load_mode", Api::Type("llama_load_mode"), "load_mode enum replaces use_mmap/use_mlock (5f55650a+)"),
    probe(
        "llama_use_direct_io",
        Api::Field { record: "llama_model_params", field: "use_direct_io" },
        "bool use_direct_io in model params (1051ecd2..9e3b928f)",
    ),
    probe(
        "llama_no_host",
        Api::Field { record: "llama_model_params", field: "no_host" },
        "bool no_host in model params (d7395115+)",
    ),
    probe("llama_split_mode_tensor", Api::Constant("LLAMA_SPLIT_MODE_TENSOR"), "tensor split mode (547765a9+)"),
    // Added in the same commit (1051ecd2) that made a negative n_gpu_layers mean "all layers";
    // before it a negative value meant none.
    probe(
        "llama_negative_ngl_is_all",
        Api::Function("llama_max_tensor_buft_overrides"),
        "negative n_gpu_layers = all (1051ecd2+)",
    ),
    probe("llama_ftype_name", Api::Function("llama_ftype_name"), "llama_model_ftype/llama_ftype_name (5f55650a+)"),
    probe(
        "llama_kv_self",
        Api::Function("llama_kv_self_clear"),
        "deprecated llama_kv_self_* calls still present (before 3d4053f7)",
    ),
    probe(
        "ggml_dev_type_igpu",
        Api::Constant("GGML_BACKEND_DEVICE_TYPE_IGPU"),
        "integrated-GPU device type (3d4053f7+)",
    ),
];

/// Emits, for the probes the bindings at `bindings` satisfy, `rustc-cfg`s for llama-sys and the
/// `cargo:api=` / `cargo:api_all=` metadata that dependents read as `DEP_LLAMA_API(_ALL)`
/// (llama-runner's build script turns them into its own cfgs).
pub fn emit(bindings: &Path) {
    let text = std::fs::read_to_string(bindings)
        .unwrap_or_else(|e| panic!("cannot read the bindings {}: {e}", bindings.display()));
    let decls = Decls::parse(&text);
    let mut present = Vec::new();
    for p in PROBES {
        println!("cargo:rustc-check-cfg=cfg({})", p.cfg);
        let yes = decls.has(p.api);
        println!("llama-sys: probe {}: {} ({}; {})", p.cfg, if yes { "yes" } else { "no" }, p.api, p.what);
        if yes {
            println!("cargo:rustc-cfg={}", p.cfg);
            present.push(p.cfg);
        }
    }
    let all: Vec<&str> = PROBES.iter().map(|p| p.cfg).collect();
    println!("cargo:api={}", present.join(","));
    println!("cargo:api_all={}", all.join(","));
}
