//! The Rust bindings: the checked-in file for the pinned headers, or bindgen at build time.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::options::Options;

/// The headers the bindings are generated from, relative to the llama.cpp root. Their combined
/// hash identifies the API the bindings describe.
pub const HEADERS: &[&str] = &[
    "include/llama.h",
    "ggml/include/ggml.h",
    "ggml/include/ggml-alloc.h",
    "ggml/include/ggml-backend.h",
    "ggml/include/ggml-cpu.h",
    "ggml/include/ggml-opt.h",
    "ggml/include/gguf.h",
];

/// The checked-in bindings, generated for the pinned commit by `scripts/regen-bindings.sh`.
const CHECKED_IN: &str = "src/bindings/pinned.rs";

/// SHA-256 over the headers in [`HEADERS`] (each file's path and bytes, in order).
pub fn header_hash(llama_dir: &Path) -> String {
    let mut h = Sha256::new();
    for rel in HEADERS {
        let bytes = fs::read(llama_dir.join(rel)).unwrap_or_default();
        h.update(rel.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The header hash recorded in the checked-in bindings (`BINDINGS_HEADER_SHA256`).
fn checked_in_hash(manifest: &Path) -> Option<String> {
    let text = fs::read_to_string(manifest.join(CHECKED_IN)).ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("pub const BINDINGS_HEADER_SHA256"))?;
    Some(line.split('"').nth(1)?.to_string())
}

/// The bindings `src/lib.rs` includes.
pub struct Provided {
    /// `OUT_DIR/bindings.rs`.
    pub path: PathBuf,
    /// `checked-in` or `bindgen`.
    pub origin: &'static str,
}

/// Writes `OUT_DIR/bindings.rs`: a copy of the checked-in file when the headers match, or a
/// fresh bindgen run (feature `bindgen`). Needs only the headers, so it runs before CMake: a
/// mismatch stops the build in seconds, not after compiling llama.cpp.
pub fn provide(llama_dir: &Path, hash: &str, opts: &Options) -> Provided {
    let manifest = &opts.manifest_dir;
    let path = opts.out_dir.join("bindings.rs");
    println!("cargo:rerun-if-changed={}", manifest.join(CHECKED_IN).display());
    println!("cargo:rerun-if-changed={}", manifest.join("wrapper.h").display());
    if opts.bindgen {
        generate(llama_dir, manifest, &path, hash);
        return Provided { path, origin: "bindgen" };
    }
    match checked_in_hash(manifest) {
        Some(h) if h == hash => {
            fs::copy(manifest.join(CHECKED_IN), &path).expect("copy the checked-in bindings");
            Provided { path, origin: "checked-in" }
        }
        other => panic!(
            "\n\nThe llama.cpp headers in {} differ from the ones the checked-in bindings were made for\n\
             (headers {hash}, bindings {}).\n\
             Build with generated bindings (needs libclang):\n\n    cargo build --features llama-sys/bindgen\n\n\
             or, after moving the pin, regenerate the checked-in file: scripts/regen-bindings.sh\n",
            llama_dir.display(),
            other.as_deref().unwrap_or("missing"),
        ),
    }
}

#[cfg(feature = "bindgen")]
fn generate(llama_dir: &Path, manifest: &Path, out: &Path, hash: &str) {
    let bindings = bindgen::Builder::default()
        .header(manifest.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{}", llama_dir.join("include").display()))
        .clang_arg(format!("-I{}", llama_dir.join("ggml/include").display()))
        .allowlist_function("llama_.*")
        .allowlist_function("ggml_backend_.*")
        .allowlist_function("ggml_threadpool_.*")
        .allowlist_function("ggml_(numa|cpu|version|commit|type_name|type_size|blck_size|quantize_.*|is_numa|log_set)")
        .allowlist_type("llama_.*")
        .allowlist_type("ggml_(type|log_level|numa_strategy|sched_priority|threadpool_params|backend_dev_type)")
        .allowlist_var("LLAMA_.*")
        .allowlist_var("GGML_.*")
        .prepend_enum_name(false)
        .layout_tests(true)
        .derive_default(true)
        .generate_comments(true)
        .raw_line(format!(
            "/// SHA-256 of the llama.cpp headers these bindings were generated from (see build/bindings.rs).\n\
             pub const BINDINGS_HEADER_SHA256: &str = \"{hash}\";"
        ))
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on {}: {e}", llama_dir.display()));
    bindings.write_to_file(out).expect("write bindings.rs");
}

#[cfg(not(feature = "bindgen"))]
fn generate(_: &Path, _: &Path, _: &Path, _: &str) {
    unreachable!("feature bindgen is off")
}
