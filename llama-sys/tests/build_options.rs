//! The build script's options: every knob read once, malformed values refused before any build.

#[path = "../build/options.rs"]
#[allow(dead_code)]
mod options;

use std::collections::HashMap;
use std::ffi::OsString;

use options::{CudaStatic, Driver, Lookup, Options};

/// Reads options from `knobs` (user variables) with the given features on.
fn read(knobs: &[(&str, &str)], features: &[&str]) -> Result<Options, String> {
    let knobs: HashMap<String, OsString> = knobs.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
    let mut plain: HashMap<String, OsString> = [
        ("CARGO_MANIFEST_DIR", "/src/llama-sys"),
        ("OUT_DIR", "/target/out"),
        ("CARGO_CFG_TARGET_ARCH", "x86_64"),
        ("PATH", "/usr/bin"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.into()))
    .collect();
    for f in features {
        plain.insert(format!("CARGO_FEATURE_{}", f.to_uppercase().replace('-', "_")), "1".into());
    }
    Options::read(&Lookup { knob: &|k| knobs.get(k).cloned(), plain: &|k| plain.get(k).cloned() })
}

#[test]
fn defaults() {
    let o = read(&[], &["native"]).unwrap();
    assert!(o.native && !o.no_native && !o.shared && !o.bindgen && o.cuda.is_none());
    assert!(!read(&[], &[]).unwrap().native, "no feature, no native code");
    assert_eq!(o.profile, "Release");
    assert!(!o.build_common, "the common library is off unless asked for, for every tree");
    assert!(o.pass_through.is_empty() && o.cmake_defines.is_empty());
}

#[test]
fn no_native_beats_the_feature() {
    for v in ["1", "ON", "on", "true", "YES"] {
        let o = read(&[("LLAMA_SYS_NO_NATIVE", v)], &["native"]).unwrap();
        assert!(o.native_feature && o.no_native && !o.native, "{v}");
    }
    let o = read(&[("LLAMA_SYS_NO_NATIVE", "0")], &["native"]).unwrap();
    assert!(o.native);
    // LLAMA_SYS_CMAKE_DEFINES wins over both, like every define there.
    let o = read(&[("LLAMA_SYS_NO_NATIVE", "1"), ("LLAMA_SYS_CMAKE_DEFINES", "GGML_NATIVE:BOOL=ON")], &[]).unwrap();
    assert!(o.native);
    let e = read(&[("LLAMA_SYS_NO_NATIVE", "maybe")], &["native"]).unwrap_err();
    assert!(e.contains("LLAMA_SYS_NO_NATIVE=maybe"), "{e}");
}

#[test]
fn a_define_wins_over_the_features() {
    // LLAMA_SYS_CMAKE_DEFINES is applied last, so the recorded facts follow it.
    let o = read(&[("LLAMA_SYS_CMAKE_DEFINES", "GGML_NATIVE:BOOL=ON")], &[]).unwrap();
    assert!(o.native);
    let o = read(&[("LLAMA_SYS_CMAKE_DEFINES", "GGML_NATIVE=0")], &["native"]).unwrap();
    assert!(!o.native);
    let o = read(&[("LLAMA_SYS_BUILD_COMMON", "ON"), ("LLAMA_SYS_CMAKE_DEFINES", "LLAMA_BUILD_COMMON=OFF")], &[]);
    assert!(!o.unwrap().build_common);
}

#[test]
fn build_common_switch() {
    assert!(read(&[("LLAMA_SYS_BUILD_COMMON", "ON")], &[]).unwrap().build_common);
    assert!(!read(&[("LLAMA_SYS_BUILD_COMMON", "off")], &[]).unwrap().build_common);
    let e = read(&[("LLAMA_SYS_BUILD_COMMON", "sometimes")], &[]).unwrap_err();
    assert!(e.contains("LLAMA_SYS_BUILD_COMMON=sometimes") && e.contains("ON or OFF"), "{e}");
}

#[test]
fn cmake_defines_are_parsed_and_checked() {
    let o = read(&[("LLAMA_SYS_CMAKE_DEFINES", " GGML_CUDA_FA=OFF; GGML_LTO:BOOL=ON;;EMPTY= ")], &[]).unwrap();
    let want = [("GGML_CUDA_FA", "OFF"), ("GGML_LTO:BOOL", "ON"), ("EMPTY", "")];
    assert_eq!(o.cmake_defines, want.map(|(k, v)| (k.to_string(), v.to_string())));
    for (bad, says) in [
        ("GGML_CUDA_FA", "is not NAME=VALUE"),
        ("-DGGML_CUDA_FA=OFF", "without -D"),
        ("GGML CUDA=OFF", "not a CMake variable name"),
        ("=OFF", "not a CMake variable name"),
        ("GGML_LTO:BOOLEAN=ON", "BOOL, STRING"),
    ] {
        let e = read(&[("LLAMA_SYS_CMAKE_DEFINES", bad)], &[]).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn pass_through_keeps_the_documented_list_only() {
    let o = read(&[("GGML_AVX2", "OFF"), ("GGML_NOT_LISTED", "1")], &[]).unwrap();
    assert_eq!(o.pass_through, [("GGML_AVX2", OsString::from("OFF"))]);
    assert!(o.user_defines("GGML_AVX2") && !o.user_defines("GGML_NOT_LISTED"));
}

#[test]
fn cuda_knobs_are_read_only_with_the_feature() {
    // Without `cuda` a malformed CUDA knob is not even read (and does not rebuild a CPU build).
    assert!(read(&[("LLAMA_SYS_CUDA_STATIC", "bogus")], &[]).unwrap().cuda.is_none());
    let o = read(
        &[
            ("LLAMA_SYS_CUDA_ARCHS", "86;90a;89-real;90-virtual"),
            ("LLAMA_SYS_CUDA_STATIC", "cudart"),
            ("CUDA_PATH", "/cuda"),
        ],
        &["cuda"],
    )
    .unwrap();
    let cuda = o.cuda.unwrap();
    assert_eq!(cuda.static_mode, CudaStatic::Runtime);
    assert_eq!(cuda.driver, Driver::Dlopen);
    assert_eq!(cuda.hints.cuda_path.as_deref(), Some(std::path::Path::new("/cuda")));
    let e = read(&[("LLAMA_SYS_CUDA_ARCHS", "86,89")], &["cuda"]).unwrap_err();
    assert!(e.contains("separate several with ';'"), "{e}");
    let e = read(&[("LLAMA_SYS_CUDA_STATIC", "1")], &["cuda", "dynamic-link"]).unwrap_err();
    assert!(e.contains("unset LLAMA_SYS_CUDA_STATIC"), "{e}");
}

#[test]
fn every_problem_in_one_message() {
    let e = read(
        &[
            ("LLAMA_SYS_BUILD_NUMBER", "b10200"),
            ("LLAMA_SYS_BUILD_COMMON", "maybe"),
            ("LLAMA_SYS_CUDA_DRIVER", "static"),
        ],
        &["cuda"],
    )
    .unwrap_err();
    assert!(e.starts_with("3 problems"), "{e}");
    for part in ["LLAMA_SYS_BUILD_NUMBER=b10200", "LLAMA_SYS_BUILD_COMMON=maybe", "LLAMA_SYS_CUDA_DRIVER=static"] {
        assert!(e.contains(part), "{part}: {e}");
    }
    assert!(!e.contains('\n'), "one line: {e}");
}
