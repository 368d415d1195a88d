//! Raw bindings to [llama.cpp](https://github.com/ggml-org/llama.cpp), built from source.
//!
//! The build script compiles llama.cpp with CMake from the workspace's pinned submodule
//! (`vendor/llama.cpp`, see `vendor/llama.cpp.pin`) or from any tree named by `LLAMA_CPP_DIR`,
//! and links it statically. Everything here is `unsafe` C API; the safe layer is `llama-runner`.
//!
//! What was built is recorded in [`build_info`], so results can carry the exact llama.cpp commit.
//!
//! ```no_run
//! // SAFETY: the backend is initialised once, before any other call.
//! unsafe { llama_sys::llama_backend_init() };
//! println!("llama.cpp {} (b{})", llama_sys::build_info::COMMIT, llama_sys::build_info::BUILD_NUMBER);
//! ```

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]

#[allow(
    missing_docs,
    dead_code,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn,
    rustdoc::all
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub use bindings::*;

/// One buffer type's share of a context's memory, as the build's shim over llama.cpp's C++
/// `llama_get_memory_breakdown` reports it ([`memory_breakdown`]).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct llama_sys_buft_memory {
    /// 1 for host memory, 0 for a device's.
    pub host: i32,
    /// The device of a device buffer type (may be null).
    pub device: ggml_backend_dev_t,
    /// Bytes of model weights.
    pub model: usize,
    /// Bytes of the context's own buffers (KV cache, outputs).
    pub context: usize,
    /// Bytes of compute buffers.
    pub compute: usize,
}

/// Whether [`memory_breakdown`] is available: this llama.cpp tree declares
/// `llama_get_memory_breakdown` (in `src/llama-ext.h`), so the build compiled its shim.
pub const HAS_MEMORY_BREAKDOWN: bool = cfg!(llama_memory_breakdown);

unsafe extern "C" {
    fn llama_sys_tokenize(
        vocab: *const llama_vocab,
        text: *const std::ffi::c_char,
        text_len: i32,
        tokens: *mut llama_token,
        n_tokens_max: i32,
        add_special: bool,
        parse_special: bool,
        threw: *mut i32,
    ) -> i32;
    fn llama_sys_token_to_piece(
        vocab: *const llama_vocab,
        token: llama_token,
        buf: *mut std::ffi::c_char,
        length: i32,
        lstrip: i32,
        special: bool,
        threw: *mut i32,
    ) -> i32;
    fn llama_sys_detokenize(
        vocab: *const llama_vocab,
        tokens: *const llama_token,
        n_tokens: i32,
        text: *mut std::ffi::c_char,
        text_len_max: i32,
        remove_special: bool,
        unparse_special: bool,
        threw: *mut i32,
    ) -> i32;
}

/// llama.cpp threw a C++ exception through a C function (caught by the build's shim, so that it
/// does not unwind into Rust, which would abort the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CppException;

/// `llama_tokenize`, with any C++ exception caught: llama.cpp's tokenizers look byte tokens up
/// with `std::unordered_map::at` (`llama_vocab::byte_to_token`), which throws for a vocabulary
/// that lacks one.
///
/// # Safety
/// As `llama_tokenize`: a valid vocabulary, `text` valid for `text_len` bytes, `tokens` for
/// `n_tokens_max` writes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tokenize_nothrow(
    vocab: *const llama_vocab,
    text: *const std::ffi::c_char,
    text_len: i32,
    tokens: *mut llama_token,
    n_tokens_max: i32,
    add_special: bool,
    parse_special: bool,
) -> Result<i32, CppException> {
    let mut threw = 0;
    // SAFETY: the caller's contract; the shim catches every C++ exception.
    let n = unsafe {
        llama_sys_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special, parse_special, &mut threw)
    };
    if threw == 0 { Ok(n) } else { Err(CppException) }
}

/// `llama_token_to_piece`, with any C++ exception caught (it reads the token table with
/// `std::vector::at`).
///
/// # Safety
/// As `llama_token_to_piece`: a valid vocabulary, `buf` valid for `length` writes.
pub unsafe fn token_to_piece_nothrow(
    vocab: *const llama_vocab,
    token: llama_token,
    buf: *mut std::ffi::c_char,
    length: i32,
    lstrip: i32,
    special: bool,
) -> Result<i32, CppException> {
    let mut threw = 0;
    // SAFETY: the caller's contract; the shim catches every C++ exception.
    let n = unsafe { llama_sys_token_to_piece(vocab, token, buf, length, lstrip, special, &mut threw) };
    if threw == 0 { Ok(n) } else { Err(CppException) }
}

/// `llama_detokenize`, with any C++ exception caught.
///
/// # Safety
/// As `llama_detokenize`: a valid vocabulary, `tokens` valid for `n_tokens` reads, `text` for
/// `text_len_max` writes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn detokenize_nothrow(
    vocab: *const llama_vocab,
    tokens: *const llama_token,
    n_tokens: i32,
    text: *mut std::ffi::c_char,
    text_len_max: i32,
    remove_special: bool,
    unparse_special: bool,
) -> Result<i32, CppException> {
    let mut threw = 0;
    // SAFETY: the caller's contract; the shim catches every C++ exception.
    let n = unsafe {
        llama_sys_detokenize(vocab, tokens, n_tokens, text, text_len_max, remove_special, unparse_special, &mut threw)
    };
    if threw == 0 { Ok(n) } else { Err(CppException) }
}

#[cfg(llama_memory_breakdown)]
unsafe extern "C" {
    fn llama_sys_memory_breakdown(ctx: *const llama_context, out: *mut llama_sys_buft_memory, cap: usize) -> usize;
}

/// Writes up to `cap` entries of `ctx`'s memory breakdown (per buffer type) to `out`, and
/// returns how many there are (more than `cap` when `out` is too short), `Some(usize::MAX)`
/// if llama.cpp threw; `None` when this llama.cpp tree has no `llama_get_memory_breakdown`
/// (its `src/llama-ext.h` predates it, so the build compiled no shim).
///
/// # Safety
/// `ctx` is a valid context; `out` is valid for `cap` writes.
pub unsafe fn memory_breakdown(
    ctx: *const llama_context,
    out: *mut llama_sys_buft_memory,
    cap: usize,
) -> Option<usize> {
    #[cfg(llama_memory_breakdown)]
    {
        // SAFETY: the caller's contract; the shim catches every C++ exception.
        Some(unsafe { llama_sys_memory_breakdown(ctx, out, cap) })
    }
    #[cfg(not(llama_memory_breakdown))]
    {
        let _ = (ctx, out, cap);
        None
    }
}

/// The llama.cpp libraries loaded in this process are not of the commit these bindings were
/// compiled for (see [`check_library_commit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryMismatch {
    /// The commit this crate was compiled against ([`build_info::COMMIT`]).
    pub expected: &'static str,
    /// What the loaded library says (`ggml_commit()`): another commit, or `unknown` for a
    /// library built without its commit recorded.
    pub found: String,
}

impl LibraryMismatch {
    /// The refusal, naming both commits and what to do.
    pub fn message(expected: &str, found: &str) -> String {
        let short = expected.get(..8).unwrap_or(expected);
        format!(
            "the llama.cpp libraries loaded are of commit {found}, but this program was compiled against \
             {expected}: its bindings would not match their API. Point LD_LIBRARY_PATH at libraries built \
             from {short} (CMake with -DLLAMA_BUILD_COMMIT={expected}), or rebuild the program against those \
             libraries"
        )
    }
}

impl std::fmt::Display for LibraryMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&Self::message(self.expected, &self.found))
    }
}

impl std::error::Error for LibraryMismatch {}

/// Checks that the ggml library in this process reports the commit this crate was compiled
/// against.
///
/// With the `dynamic-link` feature the libraries are found at run time (`LD_LIBRARY_PATH`, the
/// rpath), so they can come from another build: one of the same commit is fine (a CUDA build
/// made elsewhere, say), one of another commit is not, since the bindings describe the structs
/// and functions of exactly one commit. Call it before any other llama.cpp function: it only
/// reads a static string. With static linking it always succeeds.
///
/// The commits match when one is a prefix of the other (llama.cpp's own builds record a short
/// hash) and at least 7 hex digits long; a `-dirty` suffix is ignored. A library that does not
/// know its commit (`unknown`) is refused too.
pub fn check_library_commit() -> Result<(), LibraryMismatch> {
    // SAFETY: ggml_commit takes no arguments and returns a pointer to a static NUL-terminated
    // string (a compile-time constant of ggml-base), present in every commit these bindings
    // support.
    let found = unsafe { std::ffi::CStr::from_ptr(ggml_commit()) }.to_string_lossy().into_owned();
    if commits_match(build_info::COMMIT, &found) {
        Ok(())
    } else {
        Err(LibraryMismatch { expected: build_info::COMMIT, found })
    }
}

/// Whether `found` (a library's `ggml_commit()`) names the commit `expected`.
pub fn commits_match(expected: &str, found: &str) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches("-dirty").to_ascii_lowercase();
    let (e, f) = (norm(expected), norm(found));
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    if !hex(&e) || !hex(&f) {
        // Not hashes (`unknown`, a hand-set name): only an exact match counts.
        return !e.is_empty() && e == f && f != "unknown";
    }
    e.len().min(f.len()) >= 7 && (e.starts_with(&f) || f.starts_with(&e))
}

/// Facts about the llama.cpp build this crate was compiled with.
pub mod build_info {
    /// Full upstream commit hash of the llama.cpp sources that were compiled.
    pub const COMMIT: &str = env!("LLAMA_SYS_COMMIT");
    /// Upstream build number (`b<N>`), or 0 when unknown (a tree that is neither the pin nor a
    /// full git clone).
    pub const BUILD_NUMBER: u32 = parse_u32(env!("LLAMA_SYS_BUILD_NUMBER"));
    /// How [`COMMIT`] was determined: `git`, `marker file` (provisioned sources) or
    /// `LLAMA_SYS_BUILD_COMMIT` (set by hand).
    pub const COMMIT_ORIGIN: &str = env!("LLAMA_SYS_COMMIT_ORIGIN");
    /// The commit the workspace pins in `vendor/llama.cpp.pin`.
    pub const PIN_COMMIT: &str = env!("LLAMA_SYS_PIN_COMMIT");
    /// The crates.io package that bundles the pinned sources (offline provisioning).
    pub const PIN_CRATE: &str = env!("LLAMA_SYS_PIN_CRATE");
    /// ggml version from the compiled tree's `ggml/CMakeLists.txt` (`major.minor.patch`).
    pub const GGML_VERSION: &str = env!("LLAMA_SYS_GGML_VERSION");
    /// Backends compiled in, comma-separated (`CPU`, `CPU,CUDA`).
    pub const BACKENDS: &str = env!("LLAMA_SYS_BACKENDS");
    /// llama-sys features that shaped the build, comma-separated (`native`, `cuda`, ...).
    ///
    /// `native` is listed only when code for the build machine's CPU was generated: the feature
    /// was on and `LLAMA_SYS_NO_NATIVE` did not turn it off. `amx` is listed when a native x86
    /// build kept Intel AMX (`LLAMA_SYS_AMX=1`; off by default, as the pinned AMX kernels crash).
    pub const FEATURES: &str = env!("LLAMA_SYS_FEATURES");
    /// CMake build type of the C++ code (`Release` unless `LLAMA_SYS_PROFILE` says otherwise).
    pub const PROFILE: &str = env!("LLAMA_SYS_PROFILE");
    /// SHA-256 of the headers of the compiled tree (see `build/bindings.rs` for which).
    pub const HEADER_SHA256: &str = env!("LLAMA_SYS_HEADER_SHA256");
    /// SHA-256 of the headers the bindings in use were generated from.
    pub const BINDINGS_HEADER_SHA256: &str = super::bindings::BINDINGS_HEADER_SHA256;
    /// `checked-in` (the file for the pinned commit) or `bindgen` (generated at build time).
    pub const BINDINGS_ORIGIN: &str = env!("LLAMA_SYS_BINDINGS_ORIGIN");
    /// The llama.cpp source tree that was compiled.
    pub const SOURCE_DIR: &str = env!("LLAMA_SYS_SOURCE_DIR");
    /// Whether llama.cpp's common library (`libllama-common`, its argument parser) was built
    /// beside libllama: only when `LLAMA_SYS_BUILD_COMMON=ON` (this workspace's
    /// `.cargo/config.toml` sets it for its parity tests). The Rust crates never link it; a test
    /// that compiles a C++ program against it can report itself skipped when this is `false`.
    pub const COMMON_BUILT: bool = matches!(env!("LLAMA_SYS_COMMON_BUILT").as_bytes(), b"1");

    /// The commit shortened to 8 hex digits, as llama.cpp's own tools print it.
    pub fn short_commit() -> &'static str {
        COMMIT.get(..8).unwrap_or(COMMIT)
    }

    const fn parse_u32(s: &str) -> u32 {
        let b = s.as_bytes();
        let mut i = 0;
        let mut n = 0u32;
        while i < b.len() {
            assert!(b[i].is_ascii_digit(), "build number is not a number");
            n = n * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        n
    }
}
