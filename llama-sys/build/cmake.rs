//! Configures and builds llama.cpp with CMake.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::env;
use crate::source::Source;

/// CMake variables that may be passed through from the environment unchanged (`NAME=value`).
///
/// Anything else goes through `LLAMA_SYS_CMAKE_DEFINES="A=1;B=2"`. Both are applied after this
/// script's own settings, so they win.
pub const PASS_THROUGH: &[&str] = &[
    "CMAKE_CUDA_ARCHITECTURES",
    "CMAKE_CUDA_COMPILER",
    "CMAKE_CUDA_HOST_COMPILER",
    "CUDAToolkit_ROOT",
    "GGML_CUDA_FA_ALL_QUANTS",
    "GGML_CUDA_FORCE_MMQ",
    "GGML_CUDA_FORCE_CUBLAS",
    "GGML_CUDA_GRAPHS",
    "GGML_CUDA_NCCL",
    "GGML_CUDA_NO_VMM",
    "GGML_CPU_REPACK",
    "GGML_SCHED_MAX_COPIES",
    "GGML_AVX",
    "GGML_AVX2",
    "GGML_AVX512",
    "GGML_FMA",
    "GGML_F16C",
    "GGML_BMI2",
    "GGML_CCACHE",
];

/// What the build produced: where the libraries and headers were installed.
pub struct Built {
    /// Install prefix (`lib/`, `include/`).
    pub prefix: PathBuf,
    /// `prefix/lib`.
    pub lib_dir: PathBuf,
}

/// Build options derived from features and environment.
pub struct Options {
    pub profile: String,
    pub native: bool,
    pub cuda: bool,
    pub shared: bool,
}

impl Options {
    pub fn from_env() -> Self {
        Options {
            profile: env::var("LLAMA_SYS_PROFILE").unwrap_or_else(|| "Release".into()),
            native: env::feature("native"),
            cuda: env::feature("cuda"),
            shared: env::feature("dynamic-link"),
        }
    }
}

/// The CMake build tree for a source tree: one per source directory, so switching
/// `LLAMA_CPP_DIR` between worktrees never confuses CMake's cache, and going back to a tree
/// reuses its objects (incremental bisect steps).
fn build_root(src: &Path) -> PathBuf {
    let mut h = DefaultHasher::new();
    src.hash(&mut h);
    PathBuf::from(env::cargo("OUT_DIR")).join(format!("llama.cpp-{:016x}", h.finish()))
}

/// Runs CMake configure + build + install.
pub fn build(src: &Source, opts: &Options) -> Built {
    let on = |b: bool| if b { "ON" } else { "OFF" };
    let prefix = build_root(&src.dir);
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
        // crates do not link it, but tests compile a C++ program against it to check that our
        // lowering of options equals what llama.cpp's own command-line parser builds. Those
        // tests are for the pinned commit, so other trees (snapshots, bisect steps) skip it
        // unless LLAMA_SYS_BUILD_COMMON asks: it is a third of the build time, and older trees'
        // common/ wants libcurl.
        .define("LLAMA_BUILD_COMMON", on(build_common(src)))
        .define("LLAMA_OPENSSL", "OFF")
        .define("GGML_OPENMP", "ON")
        .define("GGML_NATIVE", on(opts.native))
        .define("GGML_CUDA", on(opts.cuda))
        // The build info llama.cpp would otherwise derive from git: wrong for a tarball, a
        // shallow clone, or a tree inside another repository (it would report *that* HEAD).
        .define("LLAMA_BUILD_COMMIT", &src.commit)
        .define("LLAMA_BUILD_NUMBER", src.build_number.to_string())
        // ggml runs `git rev-parse` itself when it finds git; a found-but-false value stops it
        // from overwriting the commit passed down from LLAMA_BUILD_COMMIT.
        .define("GIT_EXE", "OFF");
    if has_option(&src.dir, "LLAMA_CURL") {
        // Older trees (2025) default to linking libcurl for model downloads.
        cfg.define("LLAMA_CURL", "OFF");
    }
    if opts.cuda {
        // The toolkit the build script checked is the one CMake uses (CMake's own search would
        // miss a CUDA_PATH whose nvcc is not on PATH). GGML_CUDA_NCCL etc. below still override.
        let toolkit = crate::link::Toolkit::find().unwrap_or_else(|e| panic!("{e}"));
        cfg.define("CMAKE_CUDA_COMPILER", &toolkit.nvcc).define("CUDAToolkit_ROOT", &toolkit.root);
        // CMake's CUDA::cuda_driver becomes the run-time loader of libcuda.so.1, so that
        // libggml-cuda.so (dynamic-link) does not need the driver to load either. With
        // LLAMA_SYS_CUDA_DRIVER=link, a -NOTFOUND value makes CMake search for libcuda again
        // (the cache would otherwise keep the loader from an earlier configure).
        let driver = match crate::cuda_driver::mode() {
            crate::cuda_driver::Driver::Dlopen => crate::cuda_driver::build(&toolkit.include).into_os_string(),
            crate::cuda_driver::Driver::Link => "CUDA_cuda_driver_LIBRARY-NOTFOUND".into(),
        };
        cfg.define("CUDA_cuda_driver_LIBRARY", driver);
        // NCCL is only for multi-GPU tensor parallelism and breaks links where it is half present.
        cfg.define("GGML_CUDA_NCCL", "OFF");
        if let Some(archs) = env::var("LLAMA_SYS_CUDA_ARCHS") {
            cfg.define("CMAKE_CUDA_ARCHITECTURES", archs);
        }
    }
    for name in PASS_THROUGH {
        if let Some(value) = env::var(name) {
            cfg.define(name, value);
        }
    }
    if let Some(defines) = env::var("LLAMA_SYS_CMAKE_DEFINES") {
        for def in defines.split(';').filter(|d| !d.trim().is_empty()) {
            let (k, v) = def.split_once('=').unwrap_or_else(|| {
                panic!("LLAMA_SYS_CMAKE_DEFINES: `{def}` is not NAME=VALUE (separate entries with ';')")
            });
            cfg.define(k.trim(), v.trim());
        }
    }
    let prefix = cfg.build();
    let lib_dir = prefix.join("lib");
    install_common_deps(&prefix, &lib_dir);
    Built { lib_dir, prefix }
}

/// Whether to build llama.cpp's common library: `LLAMA_SYS_BUILD_COMMON` (`ON`/`OFF`, `1`/`0`)
/// when set, else only for the pinned commit.
fn build_common(src: &Source) -> bool {
    match env::var("LLAMA_SYS_BUILD_COMMON").map(|v| v.to_ascii_uppercase()) {
        Some(v) if ["1", "ON", "TRUE", "YES"].contains(&v.as_str()) => true,
        Some(v) if ["0", "OFF", "FALSE", "NO"].contains(&v.as_str()) => false,
        Some(v) => panic!("LLAMA_SYS_BUILD_COMMON={v}: use ON or OFF"),
        None => src.pinned,
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
