//! Turns llama-sys's metadata into cfgs and compile-time values for the safe layer.

fn main() {
    println!("cargo:rerun-if-changed=shim");
    cc::Build::new()
        .cpp(true)
        .file("shim/regex.cpp")
        .file("shim/grammar.cpp")
        .flag_if_supported("-std=c++17")
        .compile("llama_runner_shim");
    let dep = |k: &str| std::env::var(format!("DEP_LLAMA_{k}")).unwrap_or_default();
    // API variants of the llama.cpp tree llama-sys was built from (see llama-sys/build/probe.rs).
    for cfg in dep("API_ALL").split(',').filter(|s| !s.is_empty()) {
        println!("cargo:rustc-check-cfg=cfg({cfg})");
    }
    for cfg in dep("API").split(',').filter(|s| !s.is_empty()) {
        println!("cargo:rustc-cfg={cfg}");
    }
    // Where the C++ libraries and headers are, for tests that compile a C++ reference against
    // the very same build.
    println!("cargo:rustc-env=LLAMA_RUNNER_LLAMA_LIB_DIR={}", dep("LIB_DIR"));
    println!("cargo:rustc-env=LLAMA_RUNNER_LLAMA_INCLUDE={}", dep("INCLUDE"));
    // Run-time search paths for this package's binaries and tests (llama-sys's own
    // `rustc-link-arg` reaches only llama-sys's targets): the shared llama.cpp libraries with
    // `dynamic-link`, and a CUDA runtime outside the loader's path (a toolkit from PyPI).
    // LD_LIBRARY_PATH, searched first, still points a binary at other libraries.
    if dep("SHARED") == "1" {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dep("LIB_DIR"));
    }
    if !dep("CUDA_LIB_DIR").is_empty() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dep("CUDA_LIB_DIR"));
    }
}
