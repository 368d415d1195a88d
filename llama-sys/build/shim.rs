//! The C shims: entry points over llama.h functions that can throw through their C interface,
//! with every exception caught (`nothrow_shim.cpp`, always compiled), and over llama.cpp's
//! C++-only memory breakdown (`memory_shim.cpp`), compiled when the tree's `src/llama-ext.h`
//! declares `llama_get_memory_breakdown` (older snapshots do not): cfg `llama_memory_breakdown`
//! tells the safe layer.

use crate::options::Options;
use crate::source::Source;

/// The cfg set when the shim is built.
pub const CFG: &str = "llama_memory_breakdown";
const LIB: &str = "llama_sys_shim";

/// Compiles the shims (the memory one if the tree has the API). Their link directive is printed
/// by the caller before libllama's (a static library must precede what it uses).
pub fn build(src: &Source, opts: &Options) {
    println!("cargo:rustc-check-cfg=cfg({CFG})");
    let ext = src.dir.join("src/llama-ext.h");
    let has = std::fs::read_to_string(&ext).is_ok_and(|t| t.contains("llama_get_memory_breakdown"));
    println!(
        "llama-sys: probe {CFG}: {} ({} declares llama_get_memory_breakdown)",
        if has { "yes" } else { "no" },
        ext.display()
    );
    let out = opts.out_dir.join("shim");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
    let mut build = cc::Build::new();
    build.cpp(true).std("c++17").file(opts.manifest_dir.join("build/nothrow_shim.cpp"));
    if has {
        build.file(opts.manifest_dir.join("build/memory_shim.cpp"));
    }
    build
        .include(src.dir.join("include"))
        .include(src.dir.join("ggml/include"))
        .include(src.dir.join("src"))
        .pic(true)
        .warnings(false)
        .cargo_metadata(false)
        .out_dir(&out)
        .compile(LIB);
    println!("cargo:rustc-link-search=native={}", out.display());
    if has {
        println!("cargo:rustc-cfg={CFG}");
    }
}

/// The link directive, printed before libllama's.
pub fn link() {
    println!("cargo:rustc-link-lib=static={LIB}");
}
