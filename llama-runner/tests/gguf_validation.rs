//! Malformed GGUF files never abort the process: every variant derived here from the generated
//! models (and from the real model's header) is loaded through [`Model::load`] in this process,
//! and is either refused with a named error or loads and generates.
//!
//! For the variants that llama.cpp aborts on by itself, a child process (this test binary
//! again, running only [`child_scenario`]) loads the same file with the check turned off
//! ([`LoadOptions::validate_gguf`] false) and the test asserts that the child dies by the
//! signal: the check is what keeps the process alive.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use llama_runner::gguf::{Gguf, TensorInfo};
use llama_runner::{Backend, Context, ContextOptions, Error, LoadOptions, Model, ModelOptions};
use tiny_gguf::{Arch, ModelSpec};

const SIGABRT: i32 = 6;
const SIGFPE: i32 = 8;

// ---- GGUF encoding of edited headers ----------------------------------------------------

fn enc_str(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// Type id and value bytes of a scalar.
fn scalar(ty: u32, bytes: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

fn u32v(x: u32) -> Vec<u8> {
    scalar(4, &x.to_le_bytes())
}

fn f32v(x: f32) -> Vec<u8> {
    scalar(6, &x.to_le_bytes())
}

fn strv(s: &str) -> Vec<u8> {
    scalar(8, &enc_str(s.as_bytes()))
}

/// An array of `elem` with `n` elements whose encoded bytes are `body`.
fn arr(elem: u32, n: u64, body: &[u8]) -> Vec<u8> {
    let mut v = 9u32.to_le_bytes().to_vec();
    v.extend_from_slice(&elem.to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn arr_fixed<const N: usize>(elem: u32, items: impl IntoIterator<Item = [u8; N]>) -> Vec<u8> {
    let items: Vec<[u8; N]> = items.into_iter().collect();
    arr(elem, items.len() as u64, &items.concat())
}

/// A model file split into editable parts.
#[derive(Clone)]
struct Parts {
    /// (key, type id + value bytes).
    kvs: Vec<(String, Vec<u8>)>,
    tensors: Vec<TensorInfo>,
    data: std::sync::Arc<Vec<u8>>,
}

/// The bytes of a serialized file and its section boundaries.
struct Encoded {
    bytes: Vec<u8>,
    kv_end: usize,
    infos_end: usize,
    data_start: usize,
}

impl Parts {
    fn from_file(path: &Path) -> Parts {
        let g = Gguf::open(path).unwrap();
        let file = std::fs::read(path).unwrap();
        let kvs = g.kvs().iter().map(|kv| (kv.key.clone(), g.raw_kv(kv)[8 + kv.key.len()..].to_vec())).collect();
        let data = file[g.data_offset() as usize..].to_vec();
        Parts { kvs, tensors: g.tensors().to_vec(), data: data.into() }
    }

    fn set(&mut self, key: &str, value: Vec<u8>) -> &mut Self {
        match self.kvs.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value,
            None => self.kvs.push((key.to_owned(), value)),
        }
        self
    }

    fn drop_key(&mut self, key: &str) -> &mut Self {
        self.kvs.retain(|(k, _)| k != key);
        self
    }

    fn encode(&self) -> Encoded {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            b.extend_from_slice(&enc_str(k.as_bytes()));
            b.extend_from_slice(v);
        }
        let kv_end = b.len();
        for t in &self.tensors {
            b.extend_from_slice(&enc_str(t.name.as_bytes()));
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.ggml_type.to_le_bytes());
            b.extend_from_slice(&t.offset.to_le_bytes());
        }
        let infos_end = b.len();
        b.resize(b.len().next_multiple_of(32), 0);
        let data_start = b.len();
        b.extend_from_slice(&self.data);
        Encoded { bytes: b, kv_end, infos_end, data_start }
    }
}

fn token_array(p: &Parts) -> Vec<Vec<u8>> {
    let g = Gguf::parse(&p.encode().bytes).unwrap();
    let a = g.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap().clone();
    g.strings(&a).map(<[u8]>::to_vec).collect()
}

fn tokens_value(tokens: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = tokens.iter().flat_map(|t| enc_str(t)).collect();
    arr(8, tokens.len() as u64, &body)
}

// ---- The corpus --------------------------------------------------------------------------

/// One malformed file and what must happen to it.
struct Variant {
    name: String,
    bytes: Vec<u8>,
    /// `Some(words)`: refused by the check with [`Error::InvalidGguf`] whose message has all of
    /// `words`. `None`: any clean outcome (refused with an error, or loads and generates).
    expect: Option<Vec<String>>,
    /// The signal llama.cpp dies by when the check is off (proved in a child process).
    aborts: Option<i32>,
}

fn v(name: impl Into<String>, bytes: Vec<u8>, words: &[&str]) -> Variant {
    Variant { name: name.into(), bytes, expect: Some(words.iter().map(|w| w.to_string()).collect()), aborts: None }
}

fn any(name: impl Into<String>, bytes: Vec<u8>) -> Variant {
    Variant { name: name.into(), bytes, expect: None, aborts: None }
}

fn aborting(mut var: Variant, signal: i32) -> Variant {
    var.aborts = Some(signal);
    var
}

fn patch(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + with.len()].copy_from_slice(with);
    b
}

fn corpus(spec: &ModelSpec) -> Vec<Variant> {
    let base = Parts::from_file(&common::model(spec));
    let arch = spec.arch.name().to_owned();
    let a = |s: &str| format!("{arch}.{s}");
    let tag = |s: &str| format!("{arch}/{s}");
    let enc = base.encode();
    let good = &enc.bytes;
    let mut out = Vec::new();

    // Truncation at every section boundary and inside each section.
    let cuts = [
        ("empty", 0),
        ("magic", 4),
        ("version", 8),
        ("counts", 24),
        ("mid-kv", 24 + (enc.kv_end - 24) / 2),
        ("kv-end", enc.kv_end),
        ("mid-infos", enc.kv_end + (enc.infos_end - enc.kv_end) / 2),
        ("infos-end", enc.infos_end),
        ("data-start", enc.data_start),
        ("mid-data", enc.data_start + (good.len() - enc.data_start) / 2),
        ("last-byte", good.len() - 1),
    ];
    for (name, at) in cuts {
        out.push(any(tag(&format!("truncated-{name}")), good[..at].to_vec()));
    }
    // Header counts and lengths 0, 1, huge.
    for (name, at) in [("n_tensors", 8), ("n_kv", 16), ("first-key-length", 24)] {
        for n in [0u64, 1, u64::MAX, 1 << 40] {
            out.push(any(tag(&format!("{name}-{n}")), patch(good, at, &n.to_le_bytes())));
        }
    }
    out.push(any(tag("bad-magic"), patch(good, 0, b"GGML")));
    out.push(v(tag("version-1"), patch(good, 4, &1u32.to_le_bytes()), &["version 1"]));

    // Each key dropped, one at a time.
    for (key, _) in &base.kvs {
        out.push(any(tag(&format!("drop-{key}")), base.clone().drop_key(key).encode().bytes));
    }
    for key in [a("block_count"), a("embedding_length"), a("context_length"), "tokenizer.ggml.tokens".into()] {
        out.push(v(tag(&format!("required-{key}")), base.clone().drop_key(&key).encode().bytes, &[&key, "missing"]));
    }

    // Tokenizer arrays of the wrong element type.
    let n_tok = token_array(&base).len();
    let tokens = "tokenizer.ggml.tokens";
    let scores = "tokenizer.ggml.scores";
    let types = "tokenizer.ggml.token_type";
    let wrong = |key: &str, value: Vec<u8>| {
        v(tag(&format!("{key}-wrong-type")), base.clone().set(key, value).encode().bytes, &[key])
    };
    out.push(wrong(tokens, arr_fixed(4, (0..n_tok as u32).map(u32::to_le_bytes))));
    out.push(aborting(wrong(scores, tokens_value(&token_array(&base))), SIGABRT));
    let mut var = wrong(scores, arr_fixed(0, (0..n_tok).map(|_| [0u8])));
    var.name = tag("scores-u8");
    out.push(var);
    let mut var = wrong(types, arr_fixed(6, (0..n_tok).map(|_| 1f32.to_le_bytes())));
    var.name = tag("token_type-f32");
    out.push(var);
    let mut var = wrong(types, arr_fixed(0, (0..n_tok).map(|_| [1u8])));
    var.name = tag("token_type-u8");
    out.push(var);
    out.push(wrong("tokenizer.ggml.merges", arr_fixed(4, [[0u8; 4]])));
    out.push(wrong("tokenizer.ggml.precompiled_charsmap", arr_fixed(4, [[0u8; 4]])));
    out.push(wrong(scores, f32v(0.0)));
    // Too short, empty, and repeated tokens.
    out.push(v(
        tag("scores-short"),
        base.clone().set(scores, arr_fixed(6, [0f32.to_le_bytes()])).encode().bytes,
        &[scores],
    ));
    out.push(v(tag("tokens-empty"), base.clone().set(tokens, arr(8, 0, &[])).encode().bytes, &[tokens]));
    let mut dup = token_array(&base);
    dup[10] = dup[11].clone();
    out.push(aborting(
        v(tag("duplicate-token"), base.clone().set(tokens, tokens_value(&dup)).encode().bytes, &[tokens, "repeats"]),
        SIGABRT,
    ));
    out.push(any(tag("tokens-one"), base.clone().set(tokens, tokens_value(&dup[..1])).encode().bytes));

    // Hyperparameters: 0, 1, huge, and their relations.
    let block_count = a("block_count");
    out.push(aborting(
        v(tag("block_count-0"), base.clone().set(&block_count, u32v(0)).encode().bytes, &[&block_count]),
        SIGABRT,
    ));
    out.push(any(tag("block_count-1"), base.clone().set(&block_count, u32v(1)).encode().bytes));
    out.push(v(
        tag("block_count-huge"),
        base.clone().set(&block_count, u32v(u32::MAX)).encode().bytes,
        &[&block_count],
    ));
    out.push(v(
        tag("block_count-f32"),
        base.clone().set(&block_count, f32v(2.0)).encode().bytes,
        &[&block_count, "type f32"],
    ));
    let head = a("attention.head_count");
    let head_kv = a("attention.head_count_kv");
    out.push(v(tag("n_head-0"), base.clone().set(&head, u32v(0)).encode().bytes, &[&head, "0"]));
    out.push(any(tag("n_head-1"), base.clone().set(&head, u32v(1)).encode().bytes));
    out.push(v(tag("n_head-huge"), base.clone().set(&head, u32v(u32::MAX)).encode().bytes, &[&head_kv]));
    out.push(v(tag("n_head_kv-0"), base.clone().set(&head_kv, u32v(0)).encode().bytes, &[&head_kv]));
    out.push(v(tag("n_head_kv-3"), base.clone().set(&head_kv, u32v(3)).encode().bytes, &[&head_kv, "divide"]));
    let layers = spec.n_layer;
    out.push(aborting(
        v(
            tag("n_head-f32-array"),
            base.clone().set(&head, arr_fixed(6, (0..layers).map(|_| 4f32.to_le_bytes()))).encode().bytes,
            &[&head, "f32"],
        ),
        SIGABRT,
    ));
    out.push(v(
        tag("n_head-array-short"),
        base.clone().set(&head, arr_fixed(4, (0..layers - 1).map(|_| 4u32.to_le_bytes()))).encode().bytes,
        &[&head, "entries"],
    ));
    let ff = a("feed_forward_length");
    out.push(aborting(
        v(
            tag("n_ff-str-array"),
            base.clone().set(&ff, tokens_value(&vec![b"x".to_vec(); layers as usize])).encode().bytes,
            &[&ff],
        ),
        SIGABRT,
    ));
    let (experts, used) = (a("expert_count"), a("expert_used_count"));
    let n_expert = spec.n_expert;
    if n_expert > 0 {
        out.push(aborting(
            v(tag("used>experts"), base.clone().set(&used, u32v(n_expert + 1)).encode().bytes, &[&used]),
            SIGABRT,
        ));
        out.push(v(tag("used-0"), base.clone().set(&used, u32v(0)).encode().bytes, &[&used]));
        out.push(v(tag("experts-0"), base.clone().set(&experts, u32v(0)).encode().bytes, &[&used]));
        out.push(v(tag("experts-huge"), base.clone().set(&experts, u32v(100_000)).encode().bytes, &[&experts]));
        out.push(any(tag("used-1"), base.clone().set(&used, u32v(1)).encode().bytes));
    } else {
        out.push(aborting(
            v(tag("used-without-experts"), base.clone().set(&used, u32v(2)).encode().bytes, &[&used]),
            SIGABRT,
        ));
    }
    let eps = a("attention.layer_norm_rms_epsilon");
    out.push(aborting(
        v(tag("eps-nan"), base.clone().set(&eps, f32v(f32::NAN)).encode().bytes, &[&eps, "NaN"]),
        SIGABRT,
    ));
    out.push(v(tag("eps-inf"), base.clone().set(&eps, f32v(f32::INFINITY)).encode().bytes, &[&eps, "inf"]));
    out.push(v(tag("eps-negative"), base.clone().set(&eps, f32v(-1e-5)).encode().bytes, &[&eps, "negative"]));
    out.push(v(tag("eps-missing"), base.clone().drop_key(&eps).encode().bytes, &[&eps, "missing"]));
    let base_freq = a("rope.freq_base");
    out.push(v(tag("rope-freq-nan"), base.clone().set(&base_freq, f32v(f32::NAN)).encode().bytes, &[&base_freq]));
    let rope = a("rope.scaling.type");
    out.push(aborting(
        v(tag("rope-scaling-bogus"), base.clone().set(&rope, strv("bogus")).encode().bytes, &[&rope, "bogus"]),
        SIGABRT,
    ));
    out.push(any(tag("rope-scaling-none"), base.clone().set(&rope, strv("none")).encode().bytes));
    let labels = a("classifier.output_labels");
    out.push(aborting(
        v(
            tag("labels-u32"),
            base.clone().set(&labels, arr_fixed(4, [1u32.to_le_bytes(), 2u32.to_le_bytes()])).encode().bytes,
            &[&labels, "u32"],
        ),
        SIGABRT,
    ));
    out.push(any(tag("labels-strings"), base.clone().set(&labels, arr(8, 1, &enc_str(b"yes"))).encode().bytes));
    // Found by an independent corpus (2026-12-04): rotary sizes, the SWA pattern, per-layer
    // head counts against the tensors, loosely typed keys, tensor types and alignment.
    let head = spec.head_dim();
    let rope = a("rope.dimension_count");
    out.push(v(tag("rope-odd"), base.clone().set(&rope, u32v(head - 1)).encode().bytes, &[&rope, "odd"]));
    out.push(v(tag("rope-over-head"), base.clone().set(&rope, u32v(head + 2)).encode().bytes, &[&rope, "more than"]));
    let short = base.clone().set(&rope, u32v(head - 2)).encode().bytes;
    match spec.arch {
        // llama refuses it itself (invalid n_rot); qwen3moe asserts at the first decode.
        Arch::Llama => out.push(v(tag("rope-short"), short, &[&rope, "whole head"])),
        Arch::Qwen3Moe | Arch::Qwen3 => {
            out.push(aborting(v(tag("rope-short"), short, &[&rope, "whole head"]), SIGABRT))
        }
        Arch::Gemma3 => out.push(any(tag("rope-short"), short)),
    }
    if spec.arch == Arch::Gemma3 {
        let pattern = a("attention.sliding_window_pattern");
        out.push(v(tag("swa-pattern-1"), base.clone().set(&pattern, u32v(1)).encode().bytes, &[&pattern, "is 1"]));
        out.push(v(
            tag("swa-pattern-array"),
            base.clone().set(&pattern, arr_fixed(4, [2u32.to_le_bytes(); 4])).encode().bytes,
            &[&pattern, "arr"],
        ));
    }
    let kv = a("attention.head_count_kv");
    let mut kv_per_layer = vec![spec.n_head_kv; spec.n_layer as usize];
    *kv_per_layer.last_mut().unwrap() *= 2;
    out.push(aborting(
        v(
            tag("kv-heads-per-layer"),
            base.clone().set(&kv, arr_fixed(4, kv_per_layer.iter().map(|h| h.to_le_bytes()))).encode().bytes,
            &[&kv, "rows"],
        ),
        SIGABRT,
    ));
    let types_key = "tokenizer.ggml.token_type";
    let mut types_u32 = base.kvs.iter().find(|(k, _)| k == types_key).unwrap().1.clone();
    types_u32[4..8].copy_from_slice(&4u32.to_le_bytes()); // element type i32 -> u32, same bits
    out.push(v(tag("token-type-u32"), base.clone().set(types_key, types_u32).encode().bytes, &[types_key, "u32"]));
    let template = "tokenizer.chat_template";
    out.push(v(tag("template-u32"), base.clone().set(template, u32v(5)).encode().bytes, &[template, "string"]));
    out.push(v(tag("labels-scalar"), base.clone().set(&labels, strv("pos")).encode().bytes, &[&labels, "str"]));
    let name0 = base.tensors[0].name.clone();
    let mut i16 = base.clone();
    i16.tensors[0].ggml_type = 25; // i16: as many bytes as f16
    if spec.weight_type == tiny_gguf::WeightType::F16 {
        out.push(aborting(v(tag("tensor-i16"), i16.encode().bytes, &[&name0, "i16"]), SIGABRT));
    }
    // general.alignment 16 with a header whose end makes the data section start 16 bytes past
    // a multiple of 32 (a padding key of the right length): every offset is 16-aligned, and
    // the first tensor is not 32-aligned in the file.
    let sixteen = (0..32)
        .map(|len| base.clone().set("general.alignment", u32v(16)).set("pad", strv(&"x".repeat(len))).clone())
        .find(|p| (1..=16).contains(&(p.encode().infos_end % 32)))
        .unwrap();
    out.push(v(tag("tensor-16-aligned"), sixteen.encode().bytes, &[&name0, "not a multiple of 32", "32-byte aligned"]));
    // A byte token whose text is not <0xHH> (llama.cpp's token_to_byte reads it with substr).
    let mut renamed = token_array(&base);
    renamed[3 + 0x41] = b"<0x4".to_vec();
    out.push(v(
        tag("byte-token-text"),
        base.clone().set("tokenizer.ggml.tokens", tokens_value(&renamed)).encode().bytes,
        &["tokenizer.ggml.tokens", "<0xHH>", "token 68"],
    ));
    let out_width = a("embedding_length_out");
    out.push(v(
        tag("embedding-out-wider"),
        base.clone().set(&out_width, u32v(spec.n_embd + 1)).set(&a("pooling_type"), u32v(1)).encode().bytes,
        &[&out_width, "projection"],
    ));
    let pooling = a("pooling_type");
    out.push(v(tag("pooling-type-99"), base.clone().set(&pooling, u32v(99)).encode().bytes, &[&pooling, "99"]));
    out.push(any(tag("pooling-type-mean"), base.clone().set(&pooling, u32v(1)).encode().bytes));
    out.push(v(
        tag("context_length-u64"),
        base.clone().set(&a("context_length"), scalar(10, &2048u64.to_le_bytes())).encode().bytes,
        &["context_length", "u64"],
    ));
    out.push(aborting(
        v(
            tag("alignment-u64"),
            base.clone().set("general.alignment", scalar(10, &32u64.to_le_bytes())).encode().bytes,
            &["general.alignment"],
        ),
        SIGABRT,
    ));
    out.push(v(
        tag("alignment-3"),
        base.clone().set("general.alignment", u32v(3)).encode().bytes,
        &["general.alignment"],
    ));
    out.push(v(
        tag("architecture-u32"),
        base.clone().set("general.architecture", u32v(1)).encode().bytes,
        &["general.architecture"],
    ));

    // The tensor table.
    let last = base.tensors.len() - 1;
    let tensor = |f: &dyn Fn(&mut Vec<TensorInfo>)| {
        let mut p = base.clone();
        f(&mut p.tensors);
        p.encode().bytes
    };
    let data_len = base.data.len() as u64;
    let name0 = base.tensors[0].name.clone();
    let name_last = base.tensors[last].name.clone();
    out.push(v(tag("offset-past-end"), tensor(&|t| t[last].offset = data_len), &[&name_last, "outside"]));
    out.push(v(tag("offset-huge"), tensor(&|t| t[last].offset = u64::MAX - 31), &[&name_last, "outside"]));
    out.push(v(tag("offset-misaligned"), tensor(&|t| t[last].offset += 1), &[&name_last, "alignment"]));
    out.push(v(tag("overlap"), tensor(&|t| t[1].offset = t[0].offset), &["tensor before it"]));
    // A tensor left out of the table, its data still there: named by the one after it.
    out.push(v(
        tag("tensor-missing-from-table"),
        tensor(&|t| {
            t.remove(1);
        }),
        &[&base.tensors[2].name, "missing from the table", &base.tensors[0].name],
    ));
    out.push(v(
        tag("context-length-0"),
        base.clone().set(&a("context_length"), u32v(0)).encode().bytes,
        &[&a("context_length"), "is 0"],
    ));
    out.push(v(
        tag("layer-past-block-count"),
        base.clone().set(&a("block_count"), u32v(spec.n_layer - 1)).encode().bytes,
        &[&a("block_count"), "past it"],
    ));
    out.push(v(tag("duplicate-tensor"), tensor(&|t| t.push(t[0].clone())), &[&name0, "twice"]));
    out.push(v(tag("unknown-type"), tensor(&|t| t[0].ggml_type = 4), &[&name0, "unknown ggml type"]));
    out.push(v(tag("type-out-of-range"), tensor(&|t| t[0].ggml_type = 999), &[&name0]));
    out.push(aborting(v(tag("zero-dim"), tensor(&|t| t[0].dims[1] = 0), &[&name0, "dimension 1"]), SIGFPE));
    out.push(v(tag("dim-huge"), tensor(&|t| t[0].dims[1] = u64::MAX), &[&name0]));
    out.push(v(tag("dims-overflow"), tensor(&|t| t[0].dims = vec![1 << 32, 1 << 32, 1 << 20]), &[&name0]));
    out.push(v(tag("name-too-long"), tensor(&|t| t[0].name = "x".repeat(64)), &["xxxx", "bytes long"]));
    out.push(any(
        tag("tensor-dropped"),
        tensor(&|t| {
            t.remove(last);
        }),
    ));
    out.push(any(tag("shape-swapped"), tensor(&|t| t[0].dims.reverse())));
    out
}

// ---- Running a variant -------------------------------------------------------------------

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = common::scratch().join("gguf-validation");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.gguf", name.replace(['/', '>'], "_")));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Loads and, when it loads, generates: `Ok(tokens generated)` or the error.
fn load_and_generate(path: &Path, load: &LoadOptions) -> Result<usize, Error> {
    let model = Model::load_with(Backend::get().unwrap(), path, &ModelOptions::default(), load)?;
    let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 128, n_threads: Some(1), ..Default::default() })?;
    let prompt = model.tokenize("hello", true)?;
    Ok(ctx.generate_greedy(&prompt, 4)?.tokens.len())
}

#[test]
fn malformed_models_are_refused_or_load_never_abort() {
    let mut n = 0;
    let mut refused_by_check = 0;
    let mut refused_by_llama = 0;
    let mut loaded = 0;
    for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa()] {
        for var in corpus(&spec) {
            n += 1;
            let path = write(&var.name, &var.bytes);
            let r = load_and_generate(&path, &LoadOptions::default());
            match (&r, &var.expect) {
                (Err(e @ Error::InvalidGguf { path: p, .. }), Some(words)) => {
                    let msg = e.to_string();
                    assert_eq!(p, &path, "{}", var.name);
                    assert!(msg.contains(&path.display().to_string()), "{}: {msg}", var.name);
                    for w in words {
                        assert!(msg.contains(w.as_str()), "{}: `{msg}` should mention `{w}`", var.name);
                    }
                    refused_by_check += 1;
                }
                (_, Some(_)) => panic!("{}: expected the check to refuse it, got {r:?}", var.name),
                (Err(Error::InvalidGguf { .. } | Error::NotGguf { .. }), None) => refused_by_check += 1,
                (Err(e), None) => {
                    assert!(!e.to_string().is_empty());
                    refused_by_llama += 1;
                }
                (Ok(_), None) => loaded += 1,
            }
        }
    }
    eprintln!(
        "{n} variants: {refused_by_check} refused by the check, {refused_by_llama} refused by llama.cpp, {loaded} loaded and generated"
    );
    assert!(n > 200, "{n}");
}

#[test]
fn the_generated_and_real_models_pass() {
    for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa()] {
        llama_runner::check_gguf(common::model(&spec)).unwrap();
        assert_eq!(load_and_generate(&common::model(&spec), &LoadOptions::default()).unwrap(), 4);
        let opt_out = LoadOptions { validate_gguf: false };
        assert_eq!(load_and_generate(&common::model(&spec), &opt_out).unwrap(), 4);
    }
    if let common::Prerequisite::Met(real) = common::real_model() {
        let t = std::time::Instant::now();
        let g = llama_runner::gguf::check_file(&real).unwrap();
        eprintln!(
            "real model: {:.2} MB of metadata checked in {:.2} ms (this build's profile)",
            g.data_offset() as f64 / 1e6,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Variants of the real model's header, refused before llama.cpp reads the (sparse) data.
#[test]
fn real_model_header_variants_are_refused() {
    let common::Prerequisite::Met(real) = common::real_model() else {
        eprintln!("real model not fetched; skipped");
        return;
    };
    let g = Gguf::open(&real).unwrap();
    let header = {
        let mut b = vec![0u8; g.data_offset() as usize];
        use std::io::Read;
        std::fs::File::open(&real).unwrap().read_exact(&mut b).unwrap();
        b
    };
    let mut parts = Parts::from_header(&g, &header);
    let tokens = parts.strings("tokenizer.ggml.tokens");
    let mut dup = tokens.clone();
    dup[1000] = dup[1001].clone();
    let cases: Vec<(&str, Parts, &str)> = vec![
        (
            "tokens-u32",
            parts.clone().set("tokenizer.ggml.tokens", arr_fixed(4, [[0u8; 4]])).clone(),
            "tokenizer.ggml.tokens",
        ),
        (
            "duplicate-token",
            parts.clone().set("tokenizer.ggml.tokens", tokens_value(&dup)).clone(),
            "repeats token 1000",
        ),
        (
            "scores-str",
            parts.clone().set("tokenizer.ggml.scores", tokens_value(&tokens)).clone(),
            "tokenizer.ggml.scores",
        ),
        ("eps-nan", parts.clone().set("gemma3.attention.layer_norm_rms_epsilon", f32v(f32::NAN)).clone(), "NaN"),
        ("block_count-0", parts.set("gemma3.block_count", u32v(0)).clone(), "gemma3.block_count"),
    ];
    let data_len = g.file_size() - g.data_offset();
    for (name, p, needle) in cases {
        let enc = p.encode();
        let path = write(&format!("real-{name}"), &enc.bytes);
        // The data section as a hole: the size is right, nothing is written.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(enc.bytes.len() as u64 + data_len)
            .unwrap();
        let err = Model::load(Backend::get().unwrap(), &path, &ModelOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidGguf { .. }) && err.to_string().contains(needle), "{name}: {err}");
        std::fs::remove_file(&path).ok();
    }
}

impl Parts {
    /// Parts of a header whose data section is not at hand (left empty).
    fn from_header(g: &Gguf, _header: &[u8]) -> Parts {
        let kvs = g.kvs().iter().map(|kv| (kv.key.clone(), g.raw_kv(kv)[8 + kv.key.len()..].to_vec())).collect();
        Parts { kvs, tensors: g.tensors().to_vec(), data: Vec::new().into() }
    }

    fn strings(&self, key: &str) -> Vec<Vec<u8>> {
        let (_, value) = self.kvs.iter().find(|(k, _)| k == key).unwrap();
        let g = Gguf::parse(
            &Parts { kvs: vec![(key.into(), value.clone())], tensors: vec![], data: Vec::new().into() }.encode().bytes,
        )
        .unwrap();
        let a = g.get(key).unwrap().as_array().unwrap().clone();
        g.strings(&a).map(<[u8]>::to_vec).collect()
    }
}

// ---- The aborts the check prevents -------------------------------------------------------

/// Loads the file named by the environment without the check, then decodes. Does nothing in a
/// normal run.
#[test]
fn child_scenario() {
    let Some(path) = std::env::var_os("LLAMA_GGUF_CHILD_FILE") else { return };
    eprintln!("child: loading without the check");
    let r = load_and_generate(Path::new(&path), &LoadOptions { validate_gguf: false });
    eprintln!("child: survived: {r:?}");
}

#[test]
fn without_the_check_llama_cpp_aborts() {
    let mut proved = Vec::new();
    for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe()] {
        for var in corpus(&spec).into_iter().filter(|v| v.aborts.is_some()) {
            let path = write(&format!("child-{}", var.name), &var.bytes);
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "child_scenario", "--nocapture", "--test-threads=1"])
                .env("LLAMA_GGUF_CHILD_FILE", &path)
                .env("GGML_NO_BACKTRACE", "1")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.signal(), var.aborts, "{}: {}\n{stderr}", var.name, out.status);
            assert!(stderr.contains("child: loading") && !stderr.contains("child: survived"), "{}: {stderr}", var.name);
            proved.push(var.name);
        }
    }
    eprintln!("{} variants abort llama.cpp without the check: {}", proved.len(), proved.join(", "));
}

/// Text work on a vocabulary that cannot do it is an error, not an abort: a `no_vocab` model
/// (llama.cpp builds no tokenizer and asserts when asked for one) and a vocabulary without byte
/// tokens (llama.cpp's tokenizer throws a C++ exception through `llama_tokenize` for a byte it
/// cannot map; the shim catches it). Both still take token ids.
#[test]
fn text_on_a_vocabulary_that_cannot_do_it_is_an_error() {
    let backend = Backend::get().unwrap();
    let base = Parts::from_file(&common::model(&ModelSpec::tiny_llama()));
    let no_vocab = write(
        "no-vocab",
        &base.clone().set("tokenizer.ggml.model", strv("no_vocab")).set("llama.vocab_size", u32v(260)).encode().bytes,
    );
    let mut renamed = token_array(&base);
    for t in renamed.iter_mut().filter(|t| t.starts_with(b"<0x")) {
        t.splice(0..1, *b"byte"); // `byte0x41>`: unique, and no longer a byte token's text
    }
    // ...and typed normal (1) instead of byte (6): a vocabulary without byte tokens at all.
    let types: Vec<[u8; 4]> = (0..renamed.len()).map(|i| (if i < 3 { 3i32 } else { 1 }).to_le_bytes()).collect();
    let no_bytes = write(
        "no-byte-tokens",
        &base
            .clone()
            .set("tokenizer.ggml.tokens", tokens_value(&renamed))
            .set("tokenizer.ggml.token_type", arr_fixed(5, types))
            .encode()
            .bytes,
    );
    for (path, words) in [(&no_vocab, "no vocabulary"), (&no_bytes, "tokenizer failed")] {
        let model = Model::load(backend, path, &ModelOptions::default()).unwrap();
        let e = model.tokenize("Hello", true).unwrap_err();
        assert!(matches!(e, Error::Tokenize(_)) && e.to_string().contains(words), "{}: {e}", path.display());
        let e = model.tokenize_at_most("Hello", true, 64).unwrap_err();
        assert!(matches!(e, Error::Tokenize(_)) && e.to_string().contains(words), "{}: {e}", path.display());
        assert!(model.max_piece_bytes() >= 1);
        if path == &no_vocab {
            // Streams turn tokens into text: refused up front, not per token.
            let mut ctx =
                Context::new(&model, &ContextOptions { n_ctx: 64, n_threads: Some(1), ..Default::default() }).unwrap();
            let mut sampler = llama_runner::Sampler::greedy(&model).unwrap();
            let stop = llama_runner::StopConditions::max_tokens(2);
            assert!(matches!(ctx.stream(&mut sampler, &[1, 70], stop).map(|_| ()), Err(Error::Tokenize(_))));
            assert!(matches!(llama_runner::parallel::Parallel::new(&mut ctx).map(|_| ()), Err(Error::Tokenize(_))));
        }
        let mut ctx =
            Context::new(&model, &ContextOptions { n_ctx: 64, n_threads: Some(1), ..Default::default() }).unwrap();
        // Token ids still decode; the pieces of the generated tokens are the text's problem.
        match ctx.generate_greedy(&[1, 70, 71], 2) {
            Ok(out) => assert_eq!(out.tokens.len(), 2),
            Err(e) => assert!(matches!(e, Error::Tokenize(_)), "{}: {e}", path.display()),
        }
    }
}

/// A training context of 2^31 (llama.cpp returns its uint32_t as a negative int32_t): the
/// default context (n_ctx 0) is refused by the memory check, as 2^30 is, instead of llama.cpp
/// allocating its cells until the machine kills the process (found by an independent corpus).
#[test]
fn a_training_context_of_2_pow_31_is_refused_not_allocated() {
    let base = Parts::from_file(&common::model(&ModelSpec::tiny_llama()));
    let path = write("ctx-2-pow-31", &base.clone().set("llama.context_length", u32v(1 << 31)).encode().bytes);
    let model = Model::load(Backend::get().unwrap(), &path, &ModelOptions::default()).unwrap();
    assert_eq!(model.n_ctx_train(), 1 << 31);
    let t = std::time::Instant::now();
    let e = Context::new(&model, &ContextOptions { n_threads: Some(1), ..Default::default() }).unwrap_err();
    assert!(matches!(e, Error::ContextMemory { .. }), "{e}");
    assert!(t.elapsed().as_secs() < 10, "refused before allocating");
    // A context of a size it can have still works.
    let mut ctx =
        Context::new(&model, &ContextOptions { n_ctx: 128, n_threads: Some(1), ..Default::default() }).unwrap();
    assert_eq!(ctx.generate_greedy(&model.tokenize("hello", true).unwrap(), 2).unwrap().tokens.len(), 2);
}
