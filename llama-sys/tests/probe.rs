//! The API probes of the build script: a declaration counts, the same name in a comment, a doc
//! attribute, a string, a parameter or another struct does not.

#[path = "../build/decls.rs"]
mod decls;
#[path = "../build/probe.rs"]
#[allow(dead_code)]
mod probe;

use decls::{Api, Decls};
use probe::PROBES;

/// Bindings in bindgen's shape, with every probed name also where it must not count.
const SAMPLE: &str = r##"
// @generated; mentions llama_kv_self_clear and LLAMA_SPLIT_MODE_TENSOR in a comment
/* block comment: pub fn llama_kv_self_clear(); /* nested: pub const GGML_X: u32 = 1; */ still comment */
/// SHA-256 of the headers (see build/bindings.rs).
pub const BINDINGS_HEADER_SHA256: &str = "pub fn llama_ftype_name(";
pub const LLAMA_SPLIT_MODE_LAYER: llama_split_mode = 1;
pub const LLAMA_QUOTE: u8 = b'"';
pub const LLAMA_NAME: &'static str = "it's";
pub type llama_split_mode = ::std::os::raw::c_uint;
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct llama_context_params {
    #[doc = " no_host: bypass host buffer; struct llama_model_params { no_host: bool }"]
    pub n_ctx: u32,
    pub abort_callback: ::std::option::Option<unsafe extern "C" fn(use_direct_io: *mut ::std::os::raw::c_void) -> bool>,
    pub flash_attn_type: llama_flash_attn_type,
    pub r#type: i32,
    pub tensor_split: [f32; 16usize],
}
pub struct llama_model_params {
    pub devices: *mut ggml_backend_dev_t,
    pub c: u8, // a field named like a char: 'x' and a lifetime &'static str in a comment
}
pub struct llama_opaque(pub u32);
pub struct __BindgenBitfieldUnit<Storage> {
    storage: Storage,
}
impl llama_context_params {
    pub fn llama_max_tensor_buft_overrides(&self) -> usize { let _c = b'\''; 0 }
}
const _: () = {
    ["Offset of field: llama_model_params::no_host"][::std::mem::offset_of!(llama_model_params, devices) - 0usize];
};
unsafe extern "C" {
    #[doc = " llama_kv_self_clear was removed; see LLAMA_SPLIT_MODE_TENSOR"]
    pub fn llama_flash_attn_type_name(flash_attn_type: llama_flash_attn_type) -> *const ::std::os::raw::c_char;
    pub fn llama_ftype_name_v2(no_host: bool) -> *const ::std::os::raw::c_char;
    pub static llama_some_static: i32;
}
pub const LLAMA_RAW: &[u8; 4] = br#"pub fn llama_ftype_name("#;
"##;

#[test]
fn a_name_in_a_comment_doc_or_string_does_not_count() {
    let d = Decls::parse(SAMPLE);
    assert!(!d.has(Api::Function("llama_kv_self_clear")), "line, block and doc comments");
    assert!(!d.has(Api::Constant("LLAMA_SPLIT_MODE_TENSOR")), "comments and doc attributes");
    assert!(!d.has(Api::Constant("GGML_X")), "nested block comment");
    assert!(!d.has(Api::Function("llama_ftype_name")), "string and raw-string literals");
    assert!(!d.has(Api::Field { record: "llama_model_params", field: "no_host" }), "doc text and layout tests");
}

#[test]
fn names_match_whole_and_in_their_place() {
    let d = Decls::parse(SAMPLE);
    // Parameters (of functions and of function-pointer fields) are not fields.
    assert!(!d.has(Api::Field { record: "llama_model_params", field: "flash_attn_type" }));
    assert!(!d.has(Api::Field { record: "llama_context_params", field: "use_direct_io" }));
    assert!(!d.has(Api::Field { record: "llama_model_params", field: "no_host" }));
    // A field of one struct is not a field of another.
    assert!(!d.has(Api::Field { record: "llama_model_params", field: "n_ctx" }));
    // A longer name is another name; a method of an impl block is not a C function.
    assert!(!d.has(Api::Function("llama_ftype_name")));
    assert!(!d.has(Api::Function("llama_max_tensor_buft_overrides")));
    assert!(!d.has(Api::Type("llama_split")));
    assert!(!d.has(Api::Constant("llama_split_mode")), "a type is not a constant");
}

#[test]
fn declarations_count() {
    let d = Decls::parse(SAMPLE);
    for field in ["n_ctx", "abort_callback", "flash_attn_type", "type", "tensor_split"] {
        assert!(d.has(Api::Field { record: "llama_context_params", field }), "{field}");
    }
    assert!(d.has(Api::Field { record: "llama_model_params", field: "devices" }));
    assert!(d.has(Api::Field { record: "llama_model_params", field: "c" }));
    assert!(d.has(Api::Field { record: "__BindgenBitfieldUnit", field: "storage" }));
    assert!(!d.has(Api::Field { record: "llama_opaque", field: "pub" }));
    assert!(d.has(Api::Function("llama_flash_attn_type_name")));
    assert!(d.has(Api::Function("llama_ftype_name_v2")));
    assert!(d.has(Api::Constant("LLAMA_SPLIT_MODE_LAYER")));
    assert!(d.has(Api::Constant("BINDINGS_HEADER_SHA256")));
    assert!(d.has(Api::Constant("LLAMA_RAW")), "after a raw string the text is read again");
    assert!(d.has(Api::Constant("LLAMA_QUOTE")) && d.has(Api::Constant("LLAMA_NAME")), "char literal, lifetime");
    for ty in ["llama_split_mode", "llama_context_params", "llama_opaque", "__BindgenBitfieldUnit"] {
        assert!(d.has(Api::Type(ty)), "{ty}");
    }
}

#[test]
fn the_cfgs_of_this_build_are_the_probes_of_its_bindings() {
    // The bindings src/lib.rs includes, and the cfgs the build script set from them.
    let bindings = include_str!(concat!(env!("OUT_DIR"), "/bindings.rs"));
    let d = Decls::parse(bindings);
    let set = [
        ("llama_flash_attn_enum", cfg!(llama_flash_attn_enum)),
        ("llama_load_mode", cfg!(llama_load_mode)),
        ("llama_use_direct_io", cfg!(llama_use_direct_io)),
        ("llama_no_host", cfg!(llama_no_host)),
        ("llama_split_mode_tensor", cfg!(llama_split_mode_tensor)),
        ("llama_negative_ngl_is_all", cfg!(llama_negative_ngl_is_all)),
        ("llama_ftype_name", cfg!(llama_ftype_name)),
        ("llama_kv_self", cfg!(llama_kv_self)),
        ("ggml_dev_type_igpu", cfg!(ggml_dev_type_igpu)),
    ];
    let names: Vec<&str> = PROBES.iter().map(|p| p.cfg).collect();
    assert_eq!(names, set.map(|(n, _)| n), "a probe was added or renamed: list it here");
    for (p, (_, on)) in PROBES.iter().zip(set) {
        assert_eq!(d.has(p.api), on, "{} ({})", p.cfg, p.api);
    }
    assert!(PROBES.iter().any(|p| d.has(p.api)), "no probe matched: is the parser broken?");
}
