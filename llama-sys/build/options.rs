//! Every input of the build script, read once at the top of `main` and checked there.
//!
//! [`Options::read`] takes the environment as two lookups, so this module depends on nothing
//! else in the build script and a test can include it (`#[path]`) and feed it a map. A malformed
//! value stops the build before anything is compiled, with one message that lists every problem.

use std::ffi::OsString;
use std::path::PathBuf;

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

/// How the environment is read: `knob` for the variables a user sets (the caller registers each
/// with Cargo and logs it), `plain` for what Cargo sets for build scripts (features, `OUT_DIR`,
/// the target) and for `PATH`, which are not registered.
pub struct Lookup<'a> {
    /// A user-set variable: empty counts as unset.
    pub knob: &'a dyn Fn(&str) -> Option<OsString>,
    /// A variable read without registering it.
    pub plain: &'a dyn Fn(&str) -> Option<OsString>,
}

/// Everything the build depends on besides the source tree.
#[derive(Debug)]
pub struct Options {
    /// `CARGO_MANIFEST_DIR`: the llama-sys package.
    pub manifest_dir: PathBuf,
    /// `OUT_DIR`: where the bindings and the CMake build trees go.
    pub out_dir: PathBuf,
    /// `CARGO_CFG_TARGET_ARCH`.
    pub target_arch: String,
    /// `LLAMA_CPP_DIR`: the llama.cpp tree to build instead of the submodule.
    pub llama_cpp_dir: Option<PathBuf>,
    /// `LLAMA_SYS_BUILD_COMMIT`: the commit of the tree, said by hand.
    pub build_commit: Option<String>,
    /// `LLAMA_SYS_BUILD_NUMBER`: its build number, with `build_commit`.
    pub build_number: Option<u32>,
    /// CMake build type of the C++ code (`LLAMA_SYS_PROFILE`, default `Release`).
    pub profile: String,
    /// Whether `GGML_NATIVE` is on: feature `native`, unless `LLAMA_SYS_NO_NATIVE` turns it off
    /// (or `LLAMA_SYS_CMAKE_DEFINES` sets `GGML_NATIVE`, which wins like every define there).
    pub native: bool,
    /// Whether feature `native` is on (for the build log).
    pub native_feature: bool,
    /// `LLAMA_SYS_NO_NATIVE`: native code generation off whatever the features say.
    pub no_native: bool,
    /// `LLAMA_SYS_AMX`: keep Intel AMX in a native x86 build. Off by default: the pinned
    /// llama.cpp's AMX kernels die by SIGILL on AMX machines (their tile configuration lives
    /// on the stack, and GCC drops it; llama.cpp pull request 26954), so a native build compiles
    /// with `-mno-amx-*` unless this is set.
    pub amx: bool,
    /// Feature `dynamic-link`: shared libraries found at run time.
    pub shared: bool,
    /// Feature `bindgen`: bindings generated at build time.
    pub bindgen: bool,
    /// Whether llama.cpp's common library is built (`LLAMA_SYS_BUILD_COMMON`, default off; a
    /// `LLAMA_BUILD_COMMON` in `LLAMA_SYS_CMAKE_DEFINES` wins).
    pub build_common: bool,
    /// The [`PASS_THROUGH`] variables that are set, in that order.
    pub pass_through: Vec<(&'static str, OsString)>,
    /// `LLAMA_SYS_CMAKE_DEFINES`, split into `NAME` (possibly `NAME:TYPE`) and value.
    pub cmake_defines: Vec<(String, String)>,
    /// The CUDA settings, present when feature `cuda` is on (and only then read, so that
    /// changing them does not rebuild a CPU build).
    pub cuda: Option<Cuda>,
}

/// The settings of a CUDA build.
#[derive(Debug)]
pub struct Cuda {
    /// `LLAMA_SYS_CUDA_ARCHS`: `CMAKE_CUDA_ARCHITECTURES`.
    pub archs: Option<String>,
    /// `LLAMA_SYS_CUDA_STATIC`.
    pub static_mode: CudaStatic,
    /// `LLAMA_SYS_CUDA_DRIVER`.
    pub driver: Driver,
    /// Where to look for the toolkit, in this order (see `link::Toolkit::find`).
    pub hints: ToolkitHints,
}

/// The variables that name a CUDA toolkit.
#[derive(Debug, Default)]
pub struct ToolkitHints {
    /// `CUDA_PATH`.
    pub cuda_path: Option<PathBuf>,
    /// `CUDAToolkit_ROOT` (also passed through to CMake).
    pub toolkit_root: Option<PathBuf>,
    /// `CMAKE_CUDA_COMPILER` (also passed through to CMake).
    pub compiler: Option<PathBuf>,
    /// `PATH`, searched for `nvcc`.
    pub path: Option<OsString>,
}

/// How the CUDA runtime and cuBLAS are linked into a static build (`LLAMA_SYS_CUDA_STATIC`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CudaStatic {
    /// `libcudart.so` and `libcublas.so` (the default): found at run time like any system library.
    None,
    /// `LLAMA_SYS_CUDA_STATIC=cudart`: the runtime static, cuBLAS shared.
    Runtime,
    /// `LLAMA_SYS_CUDA_STATIC=1`: runtime and cuBLAS static (a larger binary; needs a toolkit
    /// with `libcublas_static.a`, which the PyPI wheels do not have).
    All,
}

/// How the driver API is reached (`LLAMA_SYS_CUDA_DRIVER`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Driver {
    /// `dlopen("libcuda.so.1")` before `main` (the default).
    Dlopen,
    /// `-lcuda` as upstream: `libcuda.so.1` is needed to start.
    Link,
}

impl Options {
    /// Reads and checks every input; `Err` holds one message naming each malformed value.
    pub fn read(env: &Lookup) -> Result<Options, String> {
        let mut errors = Vec::new();
        let feature = |name: &str| {
            let key = format!("CARGO_FEATURE_{}", name.to_uppercase().replace('-', "_"));
            (env.plain)(&key).is_some()
        };
        let mut cargo_var = |name: &str| match (env.plain)(name) {
            Some(v) => v,
            None => {
                errors.push(format!("Cargo did not set {name} for the build script"));
                OsString::new()
            }
        };
        let manifest_dir = PathBuf::from(cargo_var("CARGO_MANIFEST_DIR"));
        let out_dir = PathBuf::from(cargo_var("OUT_DIR"));
        let target_arch = cargo_var("CARGO_CFG_TARGET_ARCH").to_string_lossy().into_owned();

        let mut text = |name: &str| -> Option<String> {
            let value = (env.knob)(name).filter(|v| !v.is_empty())?;
            match value.into_string() {
                Ok(s) => Some(s),
                Err(v) => {
                    errors.push(format!("{name}={} is not valid UTF-8", v.to_string_lossy()));
                    None
                }
            }
        };
        let llama_cpp_dir = (env.knob)("LLAMA_CPP_DIR").filter(|v| !v.is_empty()).map(PathBuf::from);
        let build_commit = text("LLAMA_SYS_BUILD_COMMIT");
        let build_number = text("LLAMA_SYS_BUILD_NUMBER");
        let profile = text("LLAMA_SYS_PROFILE");
        let no_native = text("LLAMA_SYS_NO_NATIVE");
        let amx = text("LLAMA_SYS_AMX");
        let build_common = text("LLAMA_SYS_BUILD_COMMON");
        let defines = text("LLAMA_SYS_CMAKE_DEFINES");
        let cuda_on = feature("cuda");
        let cuda_text = if cuda_on {
            [text("LLAMA_SYS_CUDA_ARCHS"), text("LLAMA_SYS_CUDA_STATIC"), text("LLAMA_SYS_CUDA_DRIVER")]
        } else {
            [None, None, None]
        };
        let cuda_path = if cuda_on { (env.knob)("CUDA_PATH").filter(|v| !v.is_empty()) } else { None };
        let pass_through: Vec<(&'static str, OsString)> = PASS_THROUGH
            .iter()
            .filter_map(|&name| (env.knob)(name).filter(|v| !v.is_empty()).map(|v| (name, v)))
            .collect();

        let build_commit =
            build_commit.and_then(|c| match c.chars().find(|ch| ch.is_whitespace() || ch.is_control()) {
                Some(_) => {
                    errors.push(format!("LLAMA_SYS_BUILD_COMMIT={c:?} contains white space: give one commit hash"));
                    None
                }
                None => Some(c),
            });
        let build_number = build_number.and_then(|n| match n.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(format!("LLAMA_SYS_BUILD_NUMBER={n} is not a number (the N of b<N>)"));
                None
            }
        });
        let profile = profile.unwrap_or_else(|| "Release".into());
        if !profile.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            errors.push(format!(
                "LLAMA_SYS_PROFILE={profile} is not a CMake build type (Release, Debug, RelWithDebInfo, MinSizeRel)"
            ));
        }
        let no_native = flag("LLAMA_SYS_NO_NATIVE", no_native, &mut errors).unwrap_or(false);
        let amx = flag("LLAMA_SYS_AMX", amx, &mut errors).unwrap_or(false);
        let build_common = flag("LLAMA_SYS_BUILD_COMMON", build_common, &mut errors).unwrap_or(false);
        let cmake_defines = match defines {
            Some(d) => parse_defines(&d).unwrap_or_else(|e| {
                errors.push(e);
                Vec::new()
            }),
            None => Vec::new(),
        };
        // A define in LLAMA_SYS_CMAKE_DEFINES wins over the switches (it is applied last), so
        // the recorded facts follow it.
        let defined =
            |name: &str| cmake_defines.iter().rev().find(|(k, _)| define_name(k) == name).map(|(_, v)| cmake_true(v));
        let native_feature = feature("native");
        let native = defined("GGML_NATIVE").unwrap_or(native_feature && !no_native);
        let build_common = defined("LLAMA_BUILD_COMMON").unwrap_or(build_common);
        let shared = feature("dynamic-link");

        let cuda = cuda_on.then(|| {
            let [archs, static_mode, driver] = cuda_text;
            if let Some(a) = &archs
                && let Err(e) = check_archs(a)
            {
                errors.push(e);
            }
            let static_mode = match static_mode.as_deref() {
                None | Some("0" | "off" | "OFF") => CudaStatic::None,
                Some("cudart") => CudaStatic::Runtime,
                Some("1" | "on" | "ON" | "all") => CudaStatic::All,
                Some(v) => {
                    errors.push(format!(
                        "LLAMA_SYS_CUDA_STATIC={v}: use 1 (runtime and cuBLAS static), cudart (runtime only) or 0"
                    ));
                    CudaStatic::None
                }
            };
            if shared && static_mode != CudaStatic::None {
                errors.push(
                    "LLAMA_SYS_CUDA_STATIC applies to the static build. With `dynamic-link`, CMake links the CUDA \
                     runtime and cuBLAS into libggml-cuda.so itself (dynamically); unset LLAMA_SYS_CUDA_STATIC"
                        .into(),
                );
            }
            let driver = match driver.as_deref() {
                None | Some("dlopen") => Driver::Dlopen,
                Some("link") => Driver::Link,
                Some(v) => {
                    errors.push(format!("LLAMA_SYS_CUDA_DRIVER={v}: use dlopen (the default) or link"));
                    Driver::Dlopen
                }
            };
            if driver == Driver::Dlopen && !["x86_64", "aarch64"].contains(&target_arch.as_str()) {
                errors.push(format!(
                    "LLAMA_SYS_CUDA_DRIVER=dlopen has trampolines for x86_64 and aarch64, not {target_arch}; \
                     set LLAMA_SYS_CUDA_DRIVER=link"
                ));
            }
            let passed = |name: &str| pass_through.iter().find(|(k, _)| *k == name).map(|(_, v)| PathBuf::from(v));
            let hints = ToolkitHints {
                cuda_path: cuda_path.map(PathBuf::from),
                toolkit_root: passed("CUDAToolkit_ROOT"),
                compiler: passed("CMAKE_CUDA_COMPILER"),
                path: (env.plain)("PATH"),
            };
            Cuda { archs, static_mode, driver, hints }
        });

        if !errors.is_empty() {
            return Err(if errors.len() == 1 {
                format!("{}.", errors[0])
            } else {
                format!("{} problems with the build settings: {}.", errors.len(), errors.join("; "))
            });
        }
        Ok(Options {
            manifest_dir,
            out_dir,
            target_arch,
            llama_cpp_dir,
            build_commit,
            build_number,
            profile,
            native,
            native_feature,
            no_native,
            amx,
            shared,
            bindgen: feature("bindgen"),
            build_common,
            pass_through,
            cmake_defines,
            cuda,
        })
    }

    /// Whether feature `cuda` is on.
    pub fn cuda_on(&self) -> bool {
        self.cuda.is_some()
    }

    /// Whether `name` is set by [`PASS_THROUGH`] or `LLAMA_SYS_CMAKE_DEFINES`.
    pub fn user_defines(&self, name: &str) -> bool {
        self.pass_through.iter().any(|(k, _)| *k == name)
            || self.cmake_defines.iter().any(|(k, _)| define_name(k) == name)
    }
}

/// An on/off switch: `1`/`ON`/`TRUE`/`YES` or `0`/`OFF`/`FALSE`/`NO`, any case; `None` when unset.
fn flag(name: &str, value: Option<String>, errors: &mut Vec<String>) -> Option<bool> {
    let v = value?;
    match v.to_ascii_uppercase().as_str() {
        "1" | "ON" | "TRUE" | "YES" => Some(true),
        "0" | "OFF" | "FALSE" | "NO" => Some(false),
        _ => {
            errors.push(format!("{name}={v}: use ON or OFF (1 or 0)"));
            None
        }
    }
}

/// Whether CMake reads `value` as true (`ON`, `YES`, `TRUE`, `Y`, a non-zero number).
fn cmake_true(value: &str) -> bool {
    let v = value.trim().to_ascii_uppercase();
    ["ON", "YES", "TRUE", "Y"].contains(&v.as_str()) || v.parse::<f64>().is_ok_and(|n| n != 0.0)
}

/// `NAME` of a define written `NAME` or `NAME:TYPE`.
fn define_name(key: &str) -> &str {
    key.split_once(':').map_or(key, |(name, _)| name)
}

/// Splits `LLAMA_SYS_CMAKE_DEFINES` (`NAME=VALUE;NAME:TYPE=VALUE;...`) and checks each name.
pub fn parse_defines(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut defines = Vec::new();
    for def in text.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let Some((key, value)) = def.split_once('=') else {
            return Err(format!("LLAMA_SYS_CMAKE_DEFINES: `{def}` is not NAME=VALUE (separate entries with ';')"));
        };
        let key = key.trim();
        if let Some(rest) = key.strip_prefix("-D") {
            return Err(format!("LLAMA_SYS_CMAKE_DEFINES: write `{rest}={value}`, without -D"));
        }
        let (name, ty) = match key.split_once(':') {
            Some((n, t)) => (n, Some(t)),
            None => (key, None),
        };
        let name_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.+-/".contains(c));
        if !name_ok {
            return Err(format!("LLAMA_SYS_CMAKE_DEFINES: `{key}` in `{def}` is not a CMake variable name"));
        }
        if let Some(t) = ty
            && !["BOOL", "STRING", "PATH", "FILEPATH", "INTERNAL"].contains(&t)
        {
            return Err(format!(
                "LLAMA_SYS_CMAKE_DEFINES: `{key}`: the type after ':' is one of BOOL, STRING, PATH, FILEPATH, INTERNAL"
            ));
        }
        defines.push((key.to_string(), value.trim().to_string()));
    }
    Ok(defines)
}

/// Checks `LLAMA_SYS_CUDA_ARCHS`: `;`-separated entries such as `90`, `90a`, `86-real`,
/// `90-virtual`, or one of `native`, `all`, `all-major`.
fn check_archs(archs: &str) -> Result<(), String> {
    let entry_ok = |e: &str| {
        if ["native", "all", "all-major"].contains(&e) {
            return true;
        }
        let e = e.strip_suffix("-real").or_else(|| e.strip_suffix("-virtual")).unwrap_or(e);
        let digits = e.trim_end_matches(['a', 'f']);
        !digits.is_empty() && digits.len() + 1 >= e.len() && digits.chars().all(|c| c.is_ascii_digit())
    };
    let entries: Vec<&str> = archs.split(';').map(str::trim).collect();
    if entries.iter().all(|e| entry_ok(e)) {
        return Ok(());
    }
    let hint =
        if archs.contains(',') || archs.contains(' ') { " (separate several with ';', as \"86;89\")" } else { "" };
    Err(format!(
        "LLAMA_SYS_CUDA_ARCHS={archs} is not a list of CUDA architectures such as 90, 89, 86-real, 90-virtual{hint}"
    ))
}
