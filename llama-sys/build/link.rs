//! Link lines for the built libraries and their system dependencies, and the CUDA toolkit.

use std::path::{Path, PathBuf};

use crate::cmake::Built;
use crate::cuda_driver;
use crate::options::{Cuda, CudaStatic, Driver, Options, ToolkitHints};

/// Emits the `rustc-link-*` lines.
pub fn emit(built: &Built, opts: &Options, toolkit: Option<&Toolkit>) {
    println!("cargo:rustc-link-search=native={}", built.lib_dir.display());
    let kind = if opts.shared { "dylib" } else { "static" };
    // Dependents first: libllama needs ggml, ggml needs its backends, backends need ggml-base.
    // With shared libraries libggml.so itself depends on libggml-cuda.so when it was built with
    // CUDA, so a binary built without `cuda` runs against CUDA libraries built elsewhere.
    let mut libs = vec!["llama", "ggml"];
    if opts.cuda_on() && !opts.shared {
        libs.push("ggml-cuda");
    }
    libs.extend(["ggml-cpu", "ggml-base"]);
    for lib in libs {
        println!("cargo:rustc-link-lib={kind}={lib}");
    }
    if opts.shared {
        // The libraries are found at run time through the rpath, which LD_LIBRARY_PATH overrides
        // (it is searched first). `rustc-link-arg` reaches this package's own tests only; the
        // `cargo:lib_dir` metadata lets dependents' build scripts add the same rpath.
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", built.lib_dir.display());
        // The C++ shims (build/shim.rs, static, with try/catch) need the C++ runtime, which
        // the shared libraries bring only to themselves.
        println!("cargo:rustc-link-lib=dylib=stdc++");
    } else {
        println!("cargo:rustc-link-lib=dylib=stdc++");
        println!("cargo:rustc-link-lib=dylib=gomp");
        if let (Some(cuda), Some(toolkit)) = (&opts.cuda, toolkit) {
            cuda_libs(toolkit, cuda, opts);
        }
    }
}

fn cuda_libs(toolkit: &Toolkit, cuda: &Cuda, opts: &Options) {
    let mode = cuda.static_mode;
    for dir in &toolkit.lib_dirs {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    println!("cargo:cuda_root={}", toolkit.root.display());
    match mode {
        CudaStatic::All => {
            for lib in ["cublas_static", "cublasLt_static", "cudart_static", "culibos"] {
                println!("cargo:rustc-link-lib=static={lib}");
            }
        }
        CudaStatic::Runtime => {
            for lib in ["cudart_static", "culibos"] {
                println!("cargo:rustc-link-lib=static={lib}");
            }
            for lib in ["cublas", "cublasLt"] {
                println!("cargo:rustc-link-lib=dylib={lib}");
            }
        }
        CudaStatic::None => {
            for lib in ["cudart", "cublas", "cublasLt"] {
                println!("cargo:rustc-link-lib=dylib={lib}");
            }
        }
    }
    if mode != CudaStatic::All {
        // Dependents add an rpath for the shared CUDA libraries (a toolkit outside the loader's
        // path, such as scripts/cuda-toolkit-from-pypi.sh's, would not be found otherwise).
        println!("cargo:cuda_lib_dir={}", toolkit.lib_dirs[0].display());
    }
    if mode != CudaStatic::None {
        // What the static runtime needs from the C library.
        for lib in ["dl", "rt", "pthread"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    // The driver API (ggml's virtual-memory pool) is always dynamic: it belongs to the installed
    // driver, not the toolkit. By default it is loaded at run time (see cuda_driver.rs), so the
    // binary also starts where no driver is installed; `LLAMA_SYS_CUDA_DRIVER=link` links it (at
    // link time a toolkit's `stubs/libcuda.so` stands in for it).
    match cuda.driver {
        Driver::Dlopen => {
            println!("cargo:rustc-link-search=native={}", cuda_driver::dir(opts).display());
            println!("cargo:rustc-link-lib=static={}", cuda_driver::LIB);
            println!("cargo:rustc-link-lib=dylib=dl");
        }
        Driver::Link => println!("cargo:rustc-link-lib=dylib=cuda"),
    }
}

/// A CUDA toolkit, checked for the pieces a CUDA build of llama.cpp needs.
pub struct Toolkit {
    /// The root (holds `bin/nvcc`).
    pub root: PathBuf,
    /// `bin/nvcc`.
    pub nvcc: PathBuf,
    /// The directory holding `cuda.h`.
    pub include: PathBuf,
    /// Directories holding `libcudart` (first) and the driver stub.
    pub lib_dirs: Vec<PathBuf>,
}

impl Toolkit {
    /// Finds the toolkit and checks it, or says what is missing and how to point at one.
    ///
    /// Where: `CUDA_PATH`, `CUDAToolkit_ROOT`, the directory above `CMAKE_CUDA_COMPILER`, the
    /// directory above the first `nvcc` on `PATH`, `/usr/local/cuda`. The first of these that is
    /// set decides: a variable that points at no toolkit is an error, not a reason to look on.
    pub fn find(cuda: &Cuda) -> Result<Toolkit, String> {
        let (root, origin) = locate(&cuda.hints)?;
        let nvcc = root.join("bin/nvcc");
        let missing = |what: &str, hint: &str| {
            Err(format!(
                "\n\nfeature `cuda`: the CUDA toolkit at {} ({origin}) has no {what}.\n{hint}\n\
                 A complete toolkit without a GPU or driver: scripts/cuda-toolkit-from-pypi.sh (see docs/cuda.md).\n",
                root.display()
            ))
        };
        if !nvcc.is_file() {
            return missing("bin/nvcc", "Point CUDA_PATH (or CUDAToolkit_ROOT) at the directory that holds bin/nvcc.");
        }
        let includes = [root.join("include"), root.join("targets/x86_64-linux/include")];
        let has_header = |h: &str| includes.iter().any(|d| d.join(h).is_file() || d.join("cccl").join(h).is_file());
        for (header, package) in [
            ("cuda_runtime.h", "the CUDA runtime headers (cuda-cudart-dev / nvidia-cuda-runtime)"),
            ("cublas_v2.h", "the cuBLAS headers (libcublas-dev / nvidia-cublas)"),
            ("cub/cub.cuh", "CUB, part of CCCL (cuda-cccl / nvidia-cuda-cccl)"),
        ] {
            if !has_header(header) {
                return missing(&format!("include/{header}"), &format!("Install {package}."));
            }
        }
        let include = includes.iter().find(|d| d.join("cuda.h").is_file()).cloned();
        let Some(include) = include else {
            return missing(
                "include/cuda.h",
                "Install the CUDA driver API header (cuda-cudart-dev / nvidia-cuda-runtime).",
            );
        };
        let lib_dirs: Vec<PathBuf> = ["lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"]
            .iter()
            .map(|s| root.join(s))
            .filter(|d| d.is_dir())
            .collect();
        let has_lib = |name: &str| lib_dirs.iter().any(|d| d.join(name).exists());
        let mode = cuda.static_mode;
        let mut need = vec![("libcudart.so", "the CUDA runtime")];
        if mode != CudaStatic::None {
            need = vec![("libcudart_static.a", "the static CUDA runtime"), ("libculibos.a", "culibos")];
        }
        if mode == CudaStatic::All {
            need.push((
                "libcublas_static.a",
                "static cuBLAS (not in the PyPI wheels: LLAMA_SYS_CUDA_STATIC=cudart links cuBLAS dynamically)",
            ));
            need.push(("libcublasLt_static.a", "static cuBLASLt"));
        } else {
            need.push(("libcublas.so", "cuBLAS"));
            need.push(("libcublasLt.so", "cuBLASLt"));
        }
        for (file, what) in need {
            if !has_lib(file) {
                return missing(&format!("{file} in lib64/ or lib/"), &format!("It is {what}."));
            }
        }
        let driver_elsewhere = has_lib("libcuda.so") || system_has_libcuda();
        let stubs: Vec<PathBuf> =
            lib_dirs.iter().map(|d| d.join("stubs")).filter(|d| d.join("libcuda.so").exists()).collect();
        let mut lib_dirs = lib_dirs;
        if cuda.driver == Driver::Link && stubs.is_empty() && !driver_elsewhere {
            return missing(
                "lib64/stubs/libcuda.so (the driver API stub) and no libcuda.so is installed",
                "With LLAMA_SYS_CUDA_DRIVER=link the driver library is linked; at link time the toolkit's stub \
                 stands in for it. The default (LLAMA_SYS_CUDA_DRIVER=dlopen) needs neither.",
            );
        }
        lib_dirs.extend(stubs);
        Ok(Toolkit { root, nvcc, include, lib_dirs })
    }
}

/// The first place that names a toolkit, and which one it was.
fn locate(hints: &ToolkitHints) -> Result<(PathBuf, String), String> {
    for (var, root) in [("CUDA_PATH", &hints.cuda_path), ("CUDAToolkit_ROOT", &hints.toolkit_root)] {
        if let Some(root) = root {
            return Ok((absolute(root), format!("from {var}")));
        }
    }
    if let Some(nvcc) = &hints.compiler {
        let root = nvcc.parent().and_then(Path::parent).map(PathBuf::from).unwrap_or_default();
        return Ok((root, "above CMAKE_CUDA_COMPILER".into()));
    }
    let path = hints.path.clone().unwrap_or_default();
    if let Some(nvcc) = std::env::split_paths(&path).map(|d| d.join("nvcc")).find(|p| p.is_file()) {
        let nvcc = nvcc.canonicalize().unwrap_or(nvcc);
        if let Some(root) = nvcc.parent().and_then(Path::parent) {
            return Ok((root.to_path_buf(), "nvcc on PATH".into()));
        }
    }
    let default = PathBuf::from("/usr/local/cuda");
    if default.join("bin/nvcc").is_file() {
        return Ok((default, "the default location".into()));
    }
    Err("\n\nfeature `cuda` is on but no CUDA toolkit was found: no nvcc on PATH, no /usr/local/cuda, \
         and neither CUDA_PATH nor CUDAToolkit_ROOT is set.\n\
         Install one, or point at it with CUDA_PATH=/path/to/cuda (the directory holding bin/nvcc).\n\
         A toolkit from PyPI, without GPU or driver, for compiling and linking: \
         scripts/cuda-toolkit-from-pypi.sh (see docs/cuda.md).\n"
        .into())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether the loader's usual directories hold a driver library to link against.
fn system_has_libcuda() -> bool {
    ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/lib/aarch64-linux-gnu"]
        .iter()
        .any(|d| Path::new(d).join("libcuda.so").exists())
}

/// The checks of a CUDA build that can fail before CMake runs, each naming what to change.
/// (The settings themselves, such as `LLAMA_SYS_CUDA_STATIC` with `dynamic-link`, are checked
/// when they are read, in options.rs.)
pub fn check_cuda(cuda: &Cuda, opts: &Options) -> Toolkit {
    let toolkit = Toolkit::find(cuda).unwrap_or_else(|e| panic!("{e}"));
    let archs_given = cuda.archs.is_some() || opts.user_defines("CMAKE_CUDA_ARCHITECTURES");
    if opts.native && !archs_given && !gpu_visible() {
        panic!(
            "\n\nfeature `cuda` with `native`: llama.cpp would compile for the GPUs of this machine \
             (CMAKE_CUDA_ARCHITECTURES=native), but none is visible.\n\
             Name the architectures: LLAMA_SYS_CUDA_ARCHS=90 (H100/H200), 89 (RTX 40xx, L4, L40), 86 (RTX 30xx, A10), \
             80 (A100), 120 (RTX 50xx); several as \"86;89\". Or turn off `native` for llama.cpp's portable list \
             (many architectures: a much longer build).\n"
        );
    }
    toolkit
}

/// Whether an NVIDIA GPU is visible to this build (the driver's device nodes or its proc entry).
fn gpu_visible() -> bool {
    Path::new("/dev/nvidia0").exists()
        || std::fs::read_dir("/proc/driver/nvidia/gpus").is_ok_and(|mut d| d.next().is_some())
}
