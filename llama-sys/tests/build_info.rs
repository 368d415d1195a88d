//! The library llama-sys links is the llama.cpp it says it is, and the bindings describe it.

use std::path::Path;

use llama_sys::build_info;
use sha2::{Digest, Sha256};

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn pin_value(key: &str) -> String {
    let text = std::fs::read_to_string(workspace().join("vendor/llama.cpp.pin")).unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().trim().to_string()
}

#[test]
fn commit_matches_the_pin() {
    assert_eq!(build_info::PIN_COMMIT, pin_value("LLAMA_CPP_COMMIT"));
    if std::env::var_os("LLAMA_CPP_DIR").is_none() {
        assert_eq!(build_info::COMMIT, build_info::PIN_COMMIT, "vendor/llama.cpp is not the pinned commit");
        assert_eq!(build_info::BUILD_NUMBER.to_string(), pin_value("LLAMA_CPP_BUILD_NUMBER"));
    }
}

#[test]
fn the_gitlink_matches_the_pin() {
    // The submodule commit recorded in the superproject must be the one the pin file names.
    let out = std::process::Command::new("git")
        .current_dir(workspace())
        .args(["ls-files", "--stage", "vendor/llama.cpp"])
        .output()
        .expect("git is needed to check the gitlink");
    let line = String::from_utf8_lossy(&out.stdout);
    let mut fields = line.split_whitespace();
    assert_eq!(fields.next(), Some("160000"), "vendor/llama.cpp is not a gitlink: {line}");
    assert_eq!(fields.next(), Some(pin_value("LLAMA_CPP_COMMIT").as_str()));
}

#[test]
fn linked_library_reports_the_same_commit() {
    // ggml_commit() is compiled into the library from LLAMA_BUILD_COMMIT, so this checks what
    // was linked, not just what the build script believed.
    // SAFETY: returns a static NUL-terminated string.
    let commit = unsafe { std::ffi::CStr::from_ptr(llama_sys::ggml_commit()) }.to_str().unwrap();
    assert_eq!(commit, build_info::COMMIT);
    // SAFETY: as above.
    let version = unsafe { std::ffi::CStr::from_ptr(llama_sys::ggml_version()) }.to_str().unwrap();
    assert_eq!(version, build_info::GGML_VERSION);
}

#[test]
fn bindings_match_the_compiled_headers() {
    // Hash the headers on disk now, the same way the build script does, and compare with the
    // hash recorded in the bindings in use.
    let dir = Path::new(build_info::SOURCE_DIR);
    let mut h = Sha256::new();
    for rel in [
        "include/llama.h",
        "ggml/include/ggml.h",
        "ggml/include/ggml-alloc.h",
        "ggml/include/ggml-backend.h",
        "ggml/include/ggml-cpu.h",
        "ggml/include/ggml-opt.h",
        "ggml/include/gguf.h",
    ] {
        let bytes = std::fs::read(dir.join(rel)).unwrap();
        h.update(rel.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let on_disk: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(on_disk, build_info::HEADER_SHA256);
    assert_eq!(build_info::BINDINGS_HEADER_SHA256, build_info::HEADER_SHA256);
}

#[test]
fn struct_layout_agrees_with_the_library() {
    // Defaults filled in by the C library, read through the Rust struct layout: a shifted field
    // would show up as a wrong value. The expected defaults follow the API variant the build
    // script probed (the same test then checks a snapshot built with LLAMA_CPP_DIR).
    // SAFETY: plain functions returning structs by value.
    let (m, c) = unsafe { (llama_sys::llama_model_default_params(), llama_sys::llama_context_default_params()) };
    // -1 (all) from 1051ecd2; 999 from 3d4053f7, the commit that also made flash attention an
    // enum; 0 before.
    let ngl = if cfg!(llama_negative_ngl_is_all) {
        -1
    } else if cfg!(llama_flash_attn_enum) {
        999
    } else {
        0
    };
    assert_eq!(m.n_gpu_layers, ngl);
    assert_eq!(m.split_mode, llama_sys::LLAMA_SPLIT_MODE_LAYER);
    #[cfg(llama_load_mode)]
    assert_eq!(m.load_mode, llama_sys::LLAMA_LOAD_MODE_MMAP);
    #[cfg(not(llama_load_mode))]
    assert!(m.use_mmap && !m.use_mlock);
    #[cfg(llama_no_host)]
    assert!(!m.no_host);
    assert!(m.use_extra_bufts && !m.vocab_only);
    assert_eq!((c.n_ctx, c.n_batch, c.n_ubatch, c.n_seq_max), (512, 2048, 512, 1));
    #[cfg(llama_flash_attn_enum)]
    assert_eq!(c.flash_attn_type, llama_sys::LLAMA_FLASH_ATTN_TYPE_AUTO);
    #[cfg(not(llama_flash_attn_enum))]
    assert!(!c.flash_attn);
    assert_eq!((c.type_k, c.type_v), (llama_sys::GGML_TYPE_F16, llama_sys::GGML_TYPE_F16));
    assert!(c.offload_kqv && c.op_offload && c.swa_full && c.no_perf && !c.kv_unified);
}

#[test]
fn cpu_backend_is_compiled_in() {
    assert!(build_info::BACKENDS.split(',').any(|b| b == "CPU"));
    assert_eq!(build_info::PROFILE, "Release");
}

#[test]
fn build_tree_is_named_by_a_stable_hash_and_holds_what_build_info_says() {
    // The build script names the CMake tree by the first 16 hex digits of the SHA-256 of the
    // source path (the same with every Rust version, unlike std's DefaultHasher).
    let key: String =
        Sha256::digest(build_info::SOURCE_DIR.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let lib = Path::new(env!("OUT_DIR")).join(format!("llama.cpp-{key}")).join("lib");
    let has = |name: &str| ["a", "so"].iter().any(|ext| lib.join(format!("{name}.{ext}")).is_file());
    assert!(has("libllama"), "no libllama in {}", lib.display());
    assert_eq!(has("libllama-common"), build_info::COMMON_BUILT, "COMMON_BUILT disagrees with {}", lib.display());
}

#[test]
fn amx_is_compiled_in_only_when_asked() {
    // A native x86 build leaves AMX out unless LLAMA_SYS_AMX=1 (build/cmake.rs): ggml lists
    // AMX_INT8 among the CPU backend's features exactly when its AMX kernels were compiled.
    // SAFETY: no arguments; returns a static NUL-terminated string owned by llama.cpp.
    let info = unsafe { std::ffi::CStr::from_ptr(llama_sys::llama_print_system_info()) }.to_string_lossy();
    let asked = build_info::FEATURES.split(',').any(|f| f == "amx");
    assert_eq!(info.contains("AMX_INT8 = 1"), asked, "FEATURES {:?}, system info: {info}", build_info::FEATURES);
}
