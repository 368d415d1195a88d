//! Configures and builds llama.cpp with CMake.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::link::Toolkit;
use crate::options::{Driver, Options};
use crate::source::Source;

/// What the build produced: where the libraries and headers were installed.
pub struct Built {
    /// Install prefix (`lib/`, `include/`).
    pub prefix: PathBuf,
    /// `prefix/lib`.
    pub lib_dir: PathBuf,
}

/// The CMake build tree for a source tree: one per source directory, so switching
/// `LLAMA_CPP_DIR` between worktrees never confuses CMake's cache, and going back to a tree
/// reuses its objects (incremental bisect steps).
///
/// The directory is named by the first 16 hex digits of the SHA-256 of the path's bytes: the
/// same name for the same tree with every Rust version (std's `DefaultHasher` promises no such
/// thing, and a new name would rebuild llama.cpp from scratch).
pub fn build_root(out_dir: &Path, src: &Path) -> PathBuf {
    out_dir.join(format!("llama.cpp-{}", tree_key(src)))
}

/// The key of [`build_root`]: 16 hex digits of the SHA-256 of the path's bytes.
pub fn tree_key(src: &Path) -> String {
    let digest = Sha256::digest(src.as_os_str().as_encoded_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Whether the target's C compiler is MSVC (which has no `-m` switches).
fn msvc() -> bool {
    std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "msvc")
}

/// Runs CMake configure + build + install.
pub fn build(src: &Source, opts: &Options, toolkit: Option<&Toolkit>) -> Built {
    let on = |b: bool| if b { "ON" } else { "OFF" };
    let prefix = build_root(&opts.out_dir, &src.dir);
    let mut cfg = cmake::Config::new(&src.dir);
    cfg.out_dir(&prefix)
        .profile(&opts.profile)
        // The cc-derived flags would carry Rust's debug `-O0`; CMake's profile decides instead.
        .no_default_flags(true)
        .define("CMAKE_POSITION_INDEPENDENT_CODE", "ON")
        .define("CMAKE_INSTALL_LIBDIR", "lib")
        .define("BUILD_SHARED_LIBS", on(opts.shared))
        .define("LLAMA_BUILD_TESTS", "OFF")
        .define("LLAMA_BUILD_EXAMPLES", "OFF")
        .define("LLAMA_BUILD_TOOLS", "OFF")
        .define("LLAMA_BUILD_SERVER", "OFF")
        .define("LLAMA_BUILD_APP", "OFF")
        // llama.cpp's common library (argument parser, `common_*_params_to_llama`): the Rust
        // crates do not link it, but this workspace's parity tests compile a C++ program against
        // it to check that our lowering of options equals what llama.cpp's own command-line
        // parser builds. It is a third of the build time, so it is built only when
        // LLAMA_SYS_BUILD_COMMON asks (the workspace's .cargo/config.toml does; a downstream
        // build does not read that file).
        .define("LLAMA_BUILD_COMMON", on(opts.build_common))
        .define("LLAMA_OPENSSL", "OFF")
        .define("GGML_OPENMP", "ON")
        .define("GGML_NATIVE", on(opts.native))
        .define("GGML_CUDA", on(opts.cuda_on()))
        // The build info llama.cpp would otherwise derive from git: wrong for a tarball, a
        // shallow clone, or a tree inside another repository (it would report *that* HEAD).
        .define("LLAMA_BUILD_COMMIT", &src.commit)
        .define("LLAMA_BUILD_NUMBER", src.build_number.to_string())
        // ggml runs `git rev-parse` itself when it finds git; a found-but-false value stops it
        // from overwriting the commit passed down from LLAMA_BUILD_COMMIT.
        .define("GIT_EXE", "OFF");
    if opts.native && !opts.amx && ["x86_64", "x86"].contains(&opts.target_arch.as_str()) && !msvc() {
        // -march=native turns AMX on where the CPU has it, and the pinned AMX kernels crash
        // (SIGILL at the first tile instruction: see Options::amx). GCC and Clang let an
        // explicit -mno-* win over -march whatever the order, so ggml-cpu's own -march=native
        // (a target option, after these) keeps everything else.
        for flag in ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"] {
            cfg.cflag(flag).cxxflag(flag);
        }
    }
    if has_option(&src.dir, "LLAMA_CURL") {
        // Older trees (2025) default to linking libcurl for model downloads.
        cfg.define("LLAMA_CURL", "OFF");
    }
    if let (Some(cuda), Some(toolkit)) = (&opts.cuda, toolkit) {
        // The toolkit the build script checked is the one CMake uses (CMake's own search would
        // miss a CUDA_PATH whose nvcc is not on PATH). GGML_CUDA_NCCL etc. below still override.
        cfg.define("CMAKE_CUDA_COMPILER", &toolkit.nvcc).define("CUDAToolkit_ROOT", &toolkit.root);
        // CMake's CUDA::cuda_driver becomes the run-time loader of libcuda.so.1, so that
        // libggml-cuda.so (dynamic-link) does not need the driver to load either. With
        // LLAMA_SYS_CUDA_DRIVER=link, a -NOTFOUND value makes CMake search for libcuda again
        // (the cache would otherwise keep the loader from an earlier configure).
        let driver = match cuda.driver {
            Driver::Dlopen => crate::cuda_driver::build(&toolkit.include, opts).into_os_string(),
            Driver::Link => "CUDA_cuda_driver_LIBRARY-NOTFOUND".into(),
        };
        cfg.define("CUDA_cuda_driver_LIBRARY", driver);
        // NCCL is only for multi-GPU tensor parallelism and breaks links where it is half present.
        cfg.define("GGML_CUDA_NCCL", "OFF");
        if let Some(archs) = &cuda.archs {
            cfg.define("CMAKE_CUDA_ARCHITECTURES", archs);
        }
    }
    // The user's settings last, so they win: the documented pass-through list, then
    // LLAMA_SYS_CMAKE_DEFINES (both read and checked in options.rs).
    for (name, value) in &opts.pass_through {
        cfg.define(name, value);
    }
    for (name, value) in &opts.cmake_defines {
        cfg.define(name, value);
    }
    let prefix = cfg.build();
    let lib_dir = prefix.join("lib");
    if opts.build_common {
        install_common_deps(&prefix, &lib_dir);
    } else {
        remove_common(&lib_dir);
    }
    Built { lib_dir, prefix }
}

/// The common library's files in the install directory: `libllama-common` itself and what
/// [`install_common_deps`] copies beside it.
const COMMON_LIBS: &[&str] = &["libllama-common.a", "libllama-common.so", "libllama-common-base.a", "libcpp-httplib.a"];

/// Removes the common library left in the install directory by an earlier build of this tree
/// with LLAMA_SYS_BUILD_COMMON on, so that its presence always means this build made it
/// (`build_info::COMMON_BUILT`, the parity tests' check).
fn remove_common(lib_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(lib_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let common = COMMON_LIBS.iter().any(|l| *l == name || name.starts_with(&format!("{l}.")));
        if common && let Err(e) = std::fs::remove_file(entry.path()) {
            println!("cargo:warning=could not remove the stale {}: {e}", entry.path().display());
        }
    }
}

/// llama.cpp installs `libllama-common.a` but not the static libraries it depends on
/// (`llama-common-base`: build info; `cpp-httplib`: model downloads). Copies them next to it so
/// that a program linking llama-common finds everything in one directory.
fn install_common_deps(prefix: &Path, lib_dir: &Path) {
    for (sub, name) in [("common", "libllama-common-base.a"), ("vendor/cpp-httplib", "libcpp-httplib.a")] {
        let from = prefix.join("build").join(sub).join(name);
        if from.is_file()
            && let Err(e) = std::fs::copy(&from, lib_dir.join(name))
        {
            println!("cargo:warning=could not copy {} into {}: {e}", from.display(), lib_dir.display());
        }
    }
}

/// Whether the tree's top-level CMakeLists.txt declares `option(NAME ...)`.
fn has_option(dir: &Path, name: &str) -> bool {
    std::fs::read_to_string(dir.join("CMakeLists.txt")).map(|t| t.contains(&format!("option({name} "))).unwrap_or(false)
}
