//! Turns llama-sys's metadata into cfgs and compile-time values for the safe layer.

fn main() {
    println!("cargo:rerun-if-changed=shim");
    cc::Build::new().cpp(true).file("shim/regex.cpp").flag_if_supported("-std=c++17").compile("llama_runner_shim");
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
}
