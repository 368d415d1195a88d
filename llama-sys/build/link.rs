//! Link lines for the built libraries and their system dependencies.

use std::path::PathBuf;

use crate::cmake::{Built, Options};
use crate::env;

/// Emits the `rustc-link-*` lines.
pub fn emit(built: &Built, opts: &Options) {
    println!("cargo:rustc-link-search=native={}", built.lib_dir.display());
    let kind = if opts.shared { "dylib" } else { "static" };
    // Dependents first: libllama needs ggml, ggml needs its backends, backends need ggml-base.
    let mut libs = vec!["llama", "ggml"];
    if opts.cuda {
        libs.push("ggml-cuda");
    }
    libs.extend(["ggml-cpu", "ggml-base"]);
    for lib in libs {
        println!("cargo:rustc-link-lib={kind}={lib}");
    }
    if opts.shared {
        // The libraries are found at run time through the rpath (or LD_LIBRARY_PATH).
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", built.lib_dir.display());
    } else {
        println!("cargo:rustc-link-lib=dylib=stdc++");
        println!("cargo:rustc-link-lib=dylib=gomp");
    }
    if opts.cuda {
        cuda_libs();
    }
}

fn cuda_libs() {
    let root = toolkit_root().expect("checked in main");
    for sub in ["lib64", "lib", "lib64/stubs", "lib/stubs", "targets/x86_64-linux/lib"] {
        let dir = root.join(sub);
        if dir.is_dir() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
    }
    if env::var("LLAMA_SYS_CUDA_STATIC").as_deref() == Some("1") {
        for lib in ["cublas_static", "cublasLt_static", "cudart_static", "culibos"] {
            println!("cargo:rustc-link-lib=static={lib}");
        }
        println!("cargo:rustc-link-lib=dylib=rt");
    } else {
        for lib in ["cudart", "cublas", "cublasLt"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    // The driver API is always dynamic: it belongs to the installed driver, not the toolkit.
    println!("cargo:rustc-link-lib=dylib=cuda");
}

/// Finds the CUDA toolkit: `CUDA_PATH`, `CUDAToolkit_ROOT`, the directory of `nvcc` on `PATH`,
/// or `/usr/local/cuda`.
pub fn toolkit_root() -> Option<PathBuf> {
    let has_nvcc = |root: &PathBuf| root.join("bin/nvcc").is_file();
    for var in ["CUDA_PATH", "CUDAToolkit_ROOT"] {
        if let Some(root) = env::var_os(var).map(PathBuf::from) {
            return has_nvcc(&root).then_some(root);
        }
    }
    if let Some(nvcc) = env::var_os("CMAKE_CUDA_COMPILER").map(PathBuf::from) {
        return nvcc.parent()?.parent().map(PathBuf::from);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())
        .and_then(|p| p.parent()?.parent().map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("/usr/local/cuda")).filter(has_nvcc))
}
