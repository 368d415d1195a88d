//! The rules llama.cpp (at the pinned commit) applies to a model's metadata, checked before it
//! sees the file. Each rule names the llama.cpp function it comes from; the ones marked
//! "abort" are enforced there by `GGML_ASSERT`, a division by zero or an out-of-bounds read
//! rather than by an error.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use crate::reader::{Array, Gguf, Value, ValueType};
use crate::{Error, ggml_type};

/// `LLAMA_MAX_LAYERS` (src/llama-hparams.h): the most layers llama.cpp loads.
pub const LLAMA_MAX_LAYERS: u32 = 512;

/// `LLAMA_MAX_EXPERTS` (src/llama-hparams.h): the most experts llama.cpp loads.
pub const LLAMA_MAX_EXPERTS: u32 = 512;

/// `GGML_MAX_NAME`: tensor names are shorter than this.
const GGML_MAX_NAME: usize = 64;

/// Architectures whose every layer has attention heads; `load_hparams` and the graph builders
/// divide by the head count (gemma3 27B: `n_embd / n_head(0)`).
const ATTENTION_ARCHS: &[&str] = &[
    "llama",
    "llama4",
    "qwen2",
    "qwen2moe",
    "qwen3",
    "qwen3moe",
    "gemma",
    "gemma2",
    "gemma3",
    "phi3",
    "mistral3",
    "granite",
    "olmo2",
    "deepseek2",
    "starcoder2",
    "command-r",
    "cohere2",
    "smollm3",
];

/// Architectures whose `load_arch_hparams` requires `attention.layer_norm_rms_epsilon`.
const RMS_EPS_ARCHS: &[&str] = &["llama", "qwen2", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3", "phi3"];

/// `TENSOR_ALIGNMENT` (ggml/src/ggml-impl.h): tensor data is used in place at this alignment.
const TENSOR_ALIGNMENT: u64 = 32;

/// Types a tensor in a model file must not have (see `tensors`).
const NOT_WEIGHT_TYPES: &[&str] = &["i8", "i16", "i32", "i64", "f64", "q8_1", "q8_K"];

/// Architectures whose graph builders assert `n_embd_head == n_rot` (src/models/*.cpp; llama,
/// deci and falcon refuse it cleanly in load_hparams, the others abort at the first decode).
const FULL_ROPE_ARCHS: &[&str] = &[
    "apertus",
    "arcee",
    "arctic",
    "baichuan",
    "chameleon",
    "codeshell",
    "cogvlm",
    "cohere2moe",
    "dbrx",
    "deci",
    "deepseek",
    "dots1",
    "dream",
    "ernie4_5-moe",
    "ernie4_5",
    "exaone-moe",
    "exaone",
    "exaone4",
    "falcon",
    "granite",
    "grok",
    "grovemoe",
    "hunyuan-moe",
    "hunyuan_vl",
    "hy_v3",
    "internlm2",
    "jais2",
    "llada-moe",
    "llada",
    "llama",
    "llama4",
    "maincoder",
    "mellum",
    "minimax-m2",
    "minimax-m3",
    "mistral3",
    "nemotron",
    "olmo",
    "olmo2",
    "olmoe",
    "orion",
    "paddleocr",
    "pangu-embedded",
    "plamo",
    "qwen2",
    "qwen2moe",
    "qwen2vl",
    "qwen3",
    "qwen3moe",
    "qwen3vl",
    "qwen3vlmoe",
    "rnd1",
    "seed_oss",
    "smallthinker",
    "smollm3",
    "talkie",
    "xverse",
];

/// Architectures that read `attention.sliding_window_pattern` as one u32 (`get_key_or_arr`
/// into a scalar, which skips an array without a word) and pass it to `set_swa_pattern`.
const SCALAR_SWA_PATTERN_ARCHS: &[&str] = &[
    "afmoe",
    "cohere2",
    "exaone-moe",
    "exaone4",
    "gemma-embedding",
    "gemma2",
    "gemma3",
    "gemma3n",
    "laguna",
    "llama4",
    "modern-bert",
    "olmo2",
    "gpt-oss",
    "plamo3",
    "smallthinker",
];

/// Architectures whose per-layer attention tensors are plain `attn_q` / `attn_k` / `attn_v`
/// of `heads * head size` rows, created with the first layer's head counts: a per-layer head
/// count that differs from the tensors is an assertion at the first decode.
const PLAIN_ATTENTION_ARCHS: &[&str] =
    &["llama", "qwen2", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3", "mistral3", "granite", "smollm3", "olmo2"];

/// `llama_rope_scaling_type_from_string` (src/llama-model.cpp): any other name is an abort.
const ROPE_SCALING_TYPES: &[&str] = &["none", "linear", "yarn", "longrope"];

/// Checks `gguf` against llama.cpp's rules: the tensor table first, then, when
/// `general.architecture` is set, the hyperparameters and the vocabulary. Returns the first
/// problem found.
pub fn validate(gguf: &Gguf) -> Result<(), Error> {
    tensors(gguf)?;
    let Some(arch) = opt_str(gguf, "general.architecture")? else {
        // llama.cpp refuses it cleanly ("unknown model architecture: ''").
        return Err(Error::key("general.architecture", "is missing (llama_model_loader needs it)"));
    };
    hparams(gguf, arch)?;
    vocab(gguf)?;
    Ok(())
}

/// gguf_init_from_file_impl (ggml/src/gguf.cpp) and llama_model_loader: names, types, shapes,
/// sizes, and offsets inside the data section, each tensor's data right after the previous
/// one's (so none overlap).
fn tensors(g: &Gguf) -> Result<(), Error> {
    let data_size = if g.tensors().is_empty() { 0 } else { g.file_size().saturating_sub(g.data_offset()) };
    let mut names: HashSet<&str, Fx> = HashSet::with_capacity_and_hasher(g.tensors().len(), Fx::default());
    // gguf.cpp wants each tensor's data right after the previous one's (padded to the
    // alignment), in table order; it refuses others naming only the tensor that moved.
    let mut expected: Option<(u64, &str)> = None;
    for (i, t) in g.tensors().iter().enumerate() {
        let name = t.name.as_str();
        if name.is_empty() {
            return Err(Error::tensor(name, format!("tensor {i} has an empty name")));
        }
        if name.len() >= GGML_MAX_NAME {
            return Err(Error::tensor(
                name,
                format!("name is {} bytes long, ggml allows {}", name.len(), GGML_MAX_NAME - 1),
            ));
        }
        if name.contains('\0') {
            return Err(Error::tensor(name, "name contains a NUL byte (ggml_set_name would cut it there)"));
        }
        if !names.insert(name) {
            return Err(Error::tensor(name, "appears twice in the tensor table"));
        }
        let Some(ty) = ggml_type(t.ggml_type) else {
            return Err(Error::tensor(name, format!("has unknown ggml type {}", t.ggml_type)));
        };
        // abort: ggml's CPU kernels have no matrix product or row lookup for the integer and
        // f64 types, nor for the intermediate q8_1 / q8_K (fatal errors or null kernels).
        if NOT_WEIGHT_TYPES.contains(&ty.name) {
            return Err(Error::tensor(
                name,
                format!("has type {}, which llama.cpp cannot compute with (a process abort in ggml)", ty.name),
            ));
        }
        for (d, &ne) in t.dims.iter().enumerate() {
            // gguf.cpp reads ne as int64 and divides INT64_MAX by ne[1..3] (a division by zero,
            // SIGFPE, for a zero); llama_model_loader asserts ne >= 1.
            if ne == 0 || ne > i64::MAX as u64 {
                return Err(Error::tensor(name, format!("dimension {d} is {ne} (must be 1 to {})", i64::MAX)));
            }
        }
        let n = t
            .n_elements()
            .filter(|&n| n < i64::MAX as u64)
            .ok_or_else(|| Error::tensor(name, format!("shape {:?} has too many elements", t.dims)))?;
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if ne0 % ty.block_len != 0 {
            return Err(Error::tensor(
                name,
                format!("type {} needs rows of a multiple of {} values, ne[0] is {ne0}", ty.name, ty.block_len),
            ));
        }
        let nbytes = ty.nbytes(n).ok_or_else(|| Error::tensor(name, "size in bytes overflows"))?;
        if t.offset % g.alignment() != 0 {
            return Err(Error::tensor(
                name,
                format!("offset {} is not a multiple of the alignment {}", t.offset, g.alignment()),
            ));
        }
        t.offset.checked_add(nbytes).filter(|&e| e <= data_size).ok_or_else(|| {
            Error::tensor(
                name,
                format!(
                    "data {}..+{nbytes} lies outside the data section ({data_size} bytes from file offset {})",
                    t.offset,
                    g.data_offset()
                ),
            )
        })?;
        // abort: tensors are used in place in the mapped file, and ggml asserts that a buffer
        // pointer is aligned to TENSOR_ALIGNMENT (32) bytes; a smaller general.alignment lets a
        // tensor start elsewhere.
        let at = g.data_offset().saturating_add(t.offset);
        if at % TENSOR_ALIGNMENT != 0 {
            return Err(Error::tensor(
                name,
                format!(
                    "data starts at file offset {at}, not a multiple of {TENSOR_ALIGNMENT} (general.alignment {}); \
                     ggml asserts tensor data is {TENSOR_ALIGNMENT}-byte aligned",
                    g.alignment()
                ),
            ));
        }
        let (want, previous) = expected.unwrap_or((0, ""));
        if t.offset != want {
            let after = if previous.is_empty() {
                "the data section's start".to_string()
            } else {
                format!("the end of `{previous}`, the tensor before it in the table")
            };
            return Err(Error::tensor(
                name,
                format!(
                    "data starts at offset {}, not at {want} ({after}): a tensor is missing from the table, or the offsets are wrong",
                    t.offset
                ),
            ));
        }
        expected =
            nbytes.checked_next_multiple_of(g.alignment()).and_then(|p| t.offset.checked_add(p)).map(|e| (e, name));
    }
    Ok(())
}

/// llama_model_base::load_hparams (src/llama-model.cpp), llama_model_loader::get_key /
/// get_arr / get_key_or_arr, and the architectures' load_arch_hparams.
fn hparams(g: &Gguf, arch: &str) -> Result<(), Error> {
    if arch == "clip" {
        return Ok(()); // llama.cpp reads no hyperparameters for it
    }
    let k = |s: &str| format!("{arch}.{s}");
    for key in [k("context_length"), k("embedding_length")] {
        if req_u32(g, &key)? == 0 {
            return Err(Error::key(&key, "is 0"));
        }
    }
    let key = k("block_count");
    let n_layer_all = req_u32(g, &key)?;
    // abort: GGML_ASSERT(n_layer_all > 0 && n_layer_all <= LLAMA_MAX_LAYERS)
    if n_layer_all == 0 || n_layer_all > LLAMA_MAX_LAYERS {
        return Err(Error::key(
            &key,
            format!("is {n_layer_all}; llama.cpp asserts 1..={LLAMA_MAX_LAYERS} (a process abort)"),
        ));
    }
    // llama.cpp counts the tensors it expects from block_count and refuses the file with the
    // totals only ("wrong number of tensors"): name the first tensor of a layer past it.
    if let Some(t) = g.tensors().iter().find(|t| {
        t.name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|il| il >= n_layer_all)
    }) {
        return Err(Error::key(
            &key,
            format!("is {n_layer_all}, but the file has tensor `{}` of a layer past it", t.name),
        ));
    }
    let key = k("nextn_predict_layers");
    let nextn = opt_u32(g, &key)?.unwrap_or(0);
    let n_layer = n_layer_all
        .checked_sub(nextn)
        .ok_or_else(|| Error::key(&key, format!("{nextn} is more than the {n_layer_all} layers")))?;

    experts(g, arch)?;

    per_layer(g, &k("feed_forward_length"), n_layer)?;
    let n_head = per_layer(g, &k("attention.head_count"), n_layer)?;
    let n_head_kv = per_layer(g, &k("attention.head_count_kv"), n_layer)?.or_else(|| n_head.clone());
    let needs_heads = ATTENTION_ARCHS.contains(&arch);
    if needs_heads && n_head.is_none() {
        return Err(Error::key(&k("attention.head_count"), format!("is missing; {arch} layers need attention heads")));
    }
    if let (Some(heads), Some(kv_heads)) = (&n_head, &n_head_kv) {
        for (il, (&h, &kv)) in heads.iter().zip(kv_heads).enumerate() {
            if needs_heads && (h == 0 || kv == 0) {
                let key = if h == 0 { k("attention.head_count") } else { k("attention.head_count_kv") };
                return Err(Error::key(&key, format!("is 0 for layer {il}; {arch} divides by it")));
            }
            // abort at decode: ggml_mul_mat asserts that the query heads are a multiple of the
            // key/value heads (grouped-query attention broadcasts them).
            if h > 0 && kv > 0 && h % kv != 0 {
                return Err(Error::key(
                    &k("attention.head_count_kv"),
                    format!("{kv} does not divide the {h} query heads of layer {il} (ggml_mul_mat asserts it)"),
                ));
            }
        }
    }

    // abort: GGML_ASSERT(rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED)
    let key = k("rope.scaling.type");
    if let Some(s) = opt_str(g, &key)?
        && !ROPE_SCALING_TYPES.contains(&s)
    {
        return Err(Error::key(
            &key,
            format!("`{s}` is not one of {}; llama.cpp asserts on it (a process abort)", ROPE_SCALING_TYPES.join(", ")),
        ));
    }

    if RMS_EPS_ARCHS.contains(&arch) {
        let key = k("attention.layer_norm_rms_epsilon");
        if g.get(&key).is_none() {
            return Err(Error::key(&key, format!("is missing (load_arch_hparams of {arch} requires it)")));
        }
    }
    floats(g, arch)?;

    for s in ["expert_feed_forward_length", "attention.key_length", "attention.value_length", "rope.dimension_count"] {
        opt_u32(g, &k(s))?;
    }
    if arch == "qwen3moe" {
        // llama_model_qwen3moe::load_arch_tensors refuses a dense qwen3moe.
        for s in ["expert_count", "expert_used_count"] {
            if opt_u32(g, &k(s))?.unwrap_or(0) == 0 {
                return Err(Error::key(&k(s), "must be at least 1 for qwen3moe"));
            }
        }
    }
    if arch == "gemma3" {
        opt_u32(g, &k("attention.sliding_window"))?;
    }
    let n_embd = req_u32(g, &k("embedding_length"))?;
    // abort: an embedding context copies n_embd_out floats per output from a tensor of n_embd
    // (ggml asserts the read is in bounds) unless the architecture projects to that width.
    let key = k("embedding_length_out");
    if let Some(out) = opt_u32(g, &key)?
        && out > n_embd
        && !["lfm2", "lfm2moe", "gemma4-assistant", "wavtokenizer-dec"].contains(&arch)
    {
        return Err(Error::key(
            &key,
            format!(
                "{out} is more than the embedding width {n_embd}, and {arch} has no projection to it (an out-of-bounds read, a process abort)"
            ),
        ));
    }
    let head0 = n_head.as_ref().and_then(|h| h.first().copied()).unwrap_or(0);
    rope_dims(g, arch, u64::from(n_embd), head0)?;
    swa_pattern(g, arch)?;
    if PLAIN_ATTENTION_ARCHS.contains(&arch)
        && let (Some(heads), Some(kv_heads)) = (&n_head, &n_head_kv)
    {
        layer_heads(g, arch, u64::from(n_embd), heads, kv_heads)?;
    }

    // abort: load_hparams reads the labels with get_arr into strings, which asserts that a
    // u32, i32 or f32 array is read as its own type (other element types are refused cleanly).
    let key = k("classifier.output_labels");
    match g.get(&key) {
        None => {}
        Some(Value::Array(a)) if a.elem == ValueType::String => {}
        Some(Value::Array(a)) if matches!(a.elem, ValueType::U32 | ValueType::I32 | ValueType::F32) => {
            return Err(Error::key(
                &key,
                format!(
                    "is an array of {}; llama.cpp reads strings and asserts on this type (a process abort)",
                    a.elem
                ),
            ));
        }
        // get_arr skips a key that is not an array: the labels would be silently lost.
        Some(v) => {
            return Err(Error::key(&key, format!("has type {}; llama.cpp reads an array of strings", v.type_name())));
        }
    }
    // abort: a context in embedding mode pools with the model's type, and build_pooling aborts
    // on a type it does not know (LLAMA_POOLING_TYPE_RANK = 4 is the last).
    let key = k("pooling_type");
    if let Some(p) = opt_u32(g, &key)?
        && p > 4
    {
        return Err(Error::key(
            &key,
            format!(
                "is {p}, not a pooling type (0 none, 1 mean, 2 cls, 3 last, 4 rank); llama.cpp aborts pooling with it"
            ),
        ));
    }
    Ok(())
}

/// Rotary dimensions (`rope.dimension_count`, default the key head size, and
/// `rope.dimension_count_swa`, default the former): ggml's rope asserts `n_dims <= ne0` (the head
/// size) and an even `n_dims`, and many graphs assert `n_rot == n_embd_head` ([`FULL_ROPE_ARCHS`]):
/// each a process abort at the first decode.
fn rope_dims(g: &Gguf, arch: &str, n_embd: u64, n_head: u64) -> Result<(), Error> {
    if n_head == 0 {
        return Ok(()); // no attention: llama.cpp sets n_rot to 0
    }
    let k = |s: &str| format!("{arch}.{s}");
    let head = match opt_u32(g, &k("attention.key_length"))? {
        Some(h) => u64::from(h),
        None => n_embd / n_head,
    };
    let head_swa = opt_u32(g, &k("attention.key_length_swa"))?.map_or(head, u64::from);
    let key = k("rope.dimension_count");
    let n_rot = opt_u32(g, &key)?.map_or(head, u64::from);
    let key_swa = k("rope.dimension_count_swa");
    let n_rot_swa = opt_u32(g, &key_swa)?.map_or(n_rot, u64::from);
    for (key, n, head, what) in [(&key, n_rot, head, "head size"), (&key_swa, n_rot_swa, head_swa, "SWA head size")] {
        if n > head {
            return Err(Error::key(
                key,
                format!(
                    "{n} is more than the {what} {head}; ggml's rope asserts n_dims <= head size (a process abort)"
                ),
            ));
        }
        if n % 2 != 0 {
            return Err(Error::key(
                key,
                format!("{n} is odd; ggml's rope rotates pairs and asserts it (a process abort)"),
            ));
        }
    }
    if FULL_ROPE_ARCHS.contains(&arch) && n_rot != head {
        return Err(Error::key(
            &key,
            format!(
                "is {n_rot}; {arch} rotates the whole head ({head}) and asserts n_rot == head size (a process abort)"
            ),
        ));
    }
    Ok(())
}

/// `attention.sliding_window_pattern` of the architectures that read it as one u32
/// ([`SCALAR_SWA_PATTERN_ARCHS`]): an array is skipped without a word (the default pattern is
/// used: a silent load of a wrongly typed key), and a pattern of 1 makes no layer use the
/// window while the cache is built for one (`GGML_ASSERT(hparams.is_swa_any())`, an abort).
fn swa_pattern(g: &Gguf, arch: &str) -> Result<(), Error> {
    if !SCALAR_SWA_PATTERN_ARCHS.contains(&arch) {
        return Ok(());
    }
    let key = format!("{arch}.attention.sliding_window_pattern");
    let window = opt_u32(g, &format!("{arch}.attention.sliding_window"))?;
    if opt_u32(g, &key)? == Some(1) && window != Some(0) {
        return Err(Error::key(
            &key,
            "is 1: no layer would use the sliding window the cache is built for (llama.cpp asserts; a process abort)",
        ));
    }
    Ok(())
}

/// Per-layer head counts against each layer's attention tensors ([`PLAIN_ATTENTION_ARCHS`]):
/// llama.cpp checks the tensors' shapes with the first layer's counts and sizes the cache with
/// each layer's, so a count that differs from a later layer's tensors aborts in ggml.
fn layer_heads(g: &Gguf, arch: &str, n_embd: u64, heads: &[u64], kv_heads: &[u64]) -> Result<(), Error> {
    let k = |s: &str| format!("{arch}.{s}");
    let Some(&h0) = heads.first() else { return Ok(()) };
    if h0 == 0 {
        return Ok(());
    }
    let head_k = opt_u32(g, &k("attention.key_length"))?.map_or(n_embd / h0, u64::from);
    let head_v = opt_u32(g, &k("attention.value_length"))?.map_or(n_embd / h0, u64::from);
    for (il, (&h, &kv)) in heads.iter().zip(kv_heads).enumerate() {
        for (tensor, count, size, which) in [
            ("attn_q", h, head_k, "attention.head_count"),
            ("attn_k", kv, head_k, "attention.head_count_kv"),
            ("attn_v", kv, head_v, "attention.head_count_kv"),
        ] {
            let name = format!("blk.{il}.{tensor}.weight");
            let Some(t) = g.tensors().iter().find(|t| t.name == name) else { continue };
            if let [_, rows] = t.dims[..]
                && rows != count.saturating_mul(size)
            {
                return Err(Error::key(
                    &k(which),
                    format!(
                        "is {count} for layer {il}, but `{name}` has {rows} rows, not {count} x {size} (ggml asserts \
                         at the first decode)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The expert counts' relations, asserted in load_hparams (every one a process abort).
fn experts(g: &Gguf, arch: &str) -> Result<(), Error> {
    let k = |s: &str| format!("{arch}.{s}");
    let (ke, ku, kg, kgu) =
        (k("expert_count"), k("expert_used_count"), k("expert_group_count"), k("expert_group_used_count"));
    let n_expert = opt_u32(g, &ke)?.unwrap_or(0);
    let mut n_used = opt_u32(g, &ku)?.unwrap_or(0);
    let mut n_groups = opt_u32(g, &kg)?.unwrap_or(0);
    let n_group_used = opt_u32(g, &kgu)?.unwrap_or(0);
    let n_expert = if (arch == "hunyuan_vl" || arch == "hunyuan-dense") && n_expert <= 1 {
        // load_hparams zeroes both for these.
        n_used = 0;
        n_groups = 0;
        0
    } else {
        n_expert
    };
    let abort = "llama.cpp asserts it (a process abort)";
    if n_expert > LLAMA_MAX_EXPERTS {
        return Err(Error::key(&ke, format!("{n_expert} is more than {LLAMA_MAX_EXPERTS}; {abort}")));
    }
    if n_used > n_expert {
        return Err(Error::key(&ku, format!("{n_used} is more than the expert count {n_expert}; {abort}")));
    }
    if n_expert > 0 {
        if n_used == 0 {
            return Err(Error::key(&ku, format!("is 0 with {n_expert} experts; {abort}")));
        }
        if n_groups >= n_expert {
            return Err(Error::key(&kg, format!("{n_groups} is not less than the expert count {n_expert}; {abort}")));
        }
        if n_groups > 1 {
            if n_expert % n_groups != 0 {
                return Err(Error::key(
                    &kg,
                    format!("{n_groups} does not divide the expert count {n_expert}; {abort}"),
                ));
            }
            if n_group_used == 0 || n_group_used >= n_groups {
                return Err(Error::key(&kgu, format!("{n_group_used} is not in 1..{n_groups}; {abort}")));
            }
        }
    } else if n_groups != 0 {
        return Err(Error::key(&kg, format!("is {n_groups} without experts; {abort}")));
    }
    Ok(())
}

/// A key read by `get_key_or_arr` into a per-layer `uint32_t` array: a `u32` (repeated for
/// every layer) or an array of `n_layer` 32-bit integers. An `f32` or string array is an abort
/// (the type `GGML_ASSERT` in get_arr); other element types and wrong lengths are refused
/// cleanly by llama.cpp.
fn per_layer(g: &Gguf, key: &str, n_layer: u32) -> Result<Option<Vec<u64>>, Error> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::U32(v)) => Ok(Some(vec![u64::from(*v); n_layer as usize])),
        Some(Value::Array(a)) => {
            if !matches!(a.elem, ValueType::U32 | ValueType::I32) {
                return Err(Error::key(
                    key,
                    format!(
                        "is an array of {}; llama.cpp reads it as u32 per layer{}",
                        a.elem,
                        if matches!(a.elem, ValueType::F32 | ValueType::String) {
                            " and asserts on this type (a process abort)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            if a.len != n_layer as usize {
                return Err(Error::key(key, format!("has {} entries for {n_layer} layers", a.len)));
            }
            // An i32 is read as its bits; a negative count is a huge one.
            Ok(Some(g.ints(a).map(|v| u64::from(v as u32)).collect()))
        }
        Some(v) => Err(Error::key(key, format!("has type {}, llama.cpp reads u32 or an array of u32", v.type_name()))),
    }
}

/// Norm epsilons, scales, frequency bases and caps are floats the graph uses as they are: every
/// `f32`/`f64` under `{arch}.` must be finite, and epsilons non-negative (ggml's CPU norm ops
/// assert `eps >= 0.0f`, which a NaN fails: a process abort at the first decode).
fn floats(g: &Gguf, arch: &str) -> Result<(), Error> {
    let prefix = format!("{arch}.");
    for kv in g.kvs().iter().filter(|kv| kv.key.starts_with(&prefix)) {
        let key = kv.key.as_str();
        let bad = |v: f64| -> Option<String> {
            if !v.is_finite() {
                Some(format!("is {v}, not a finite number"))
            } else if key.ends_with("epsilon") && v < 0.0 {
                Some(format!("is {v}; a norm epsilon must not be negative (ggml asserts eps >= 0)"))
            } else {
                None
            }
        };
        let found = match &kv.value {
            Value::F32(v) => bad(f64::from(*v)),
            Value::F64(v) => bad(*v),
            Value::Array(a) if a.elem == ValueType::F32 => {
                g.f32s(a).enumerate().find_map(|(i, v)| bad(f64::from(v)).map(|r| format!("element {i} {r}")))
            }
            Value::U8(_)
            | Value::I8(_)
            | Value::U16(_)
            | Value::I16(_)
            | Value::I32(_)
            | Value::I64(_)
            | Value::U64(_)
                if key.ends_with("epsilon") =>
            {
                Some(format!("has type {}, llama.cpp reads f32", kv.value.type_name()))
            }
            _ => None,
        };
        if let Some(reason) = found {
            return Err(Error::key(key, reason));
        }
    }
    Ok(())
}

/// llama_vocab::impl::load (src/llama-vocab.cpp).
fn vocab(g: &Gguf) -> Result<(), Error> {
    let model = req_str(g, "tokenizer.ggml.model")?;
    opt_str(g, "tokenizer.ggml.pre")?;
    for (key, value) in g.kvs().iter().map(|kv| (kv.key.as_str(), &kv.value)) {
        // llama.cpp turns every key into text when it loads; a template of another type would
        // be used as that text.
        if (key == "tokenizer.chat_template" || key.starts_with("tokenizer.chat_template."))
            && value.value_type() != ValueType::String
        {
            return Err(Error::key(key, format!("has type {}; a chat template is a string", value.type_name())));
        }
        if let Some(rest) = key.strip_prefix("tokenizer.ggml.") {
            let want = if rest.ends_with("_token_id") || rest == "token_type_count" {
                ValueType::U32
            } else if rest.starts_with("add_") || rest == "remove_extra_whitespaces" {
                ValueType::Bool
            } else {
                continue;
            };
            if value.value_type() != want {
                return Err(Error::key(key, format!("has type {}, llama.cpp reads {want}", value.type_name())));
            }
        }
    }
    if model == "no_vocab" || model == "none" {
        return Ok(());
    }
    let key = "tokenizer.ggml.tokens";
    let tokens = match g.get(key) {
        None => return Err(Error::key(key, "is missing (llama.cpp: cannot find tokenizer vocab)")),
        Some(Value::Array(a)) if a.elem == ValueType::String => a,
        Some(v) => {
            return Err(Error::key(
                key,
                format!("has type {}; gguf_get_arr_str asserts an array of strings (a process abort)", v.type_name()),
            ));
        }
    };
    let n_tokens = tokens.len;
    if n_tokens == 0 {
        return Err(Error::key(key, "is empty"));
    }
    if n_tokens > i32::MAX as usize {
        return Err(Error::key(key, format!("has {n_tokens} tokens; token ids are int32")));
    }
    // Where each token's text lies in the array's bytes.
    let spans = unique_tokens(g, tokens)?;

    typed_array(g, "tokenizer.ggml.scores", &[ValueType::F32], Some(n_tokens))?;
    // Read through an int32_t pointer; a u32 array has the same bits but is not what the
    // format says (GGUF writers give it i32).
    let types = typed_array(g, "tokenizer.ggml.token_type", &[ValueType::I32], Some(n_tokens))?;
    // abort: WordPiece has no byte tokens; llama_vocab::token_to_byte aborts for one.
    if model == "bert"
        && let Some(types) = types
        && let Some(i) = g.ints(types).position(|t| t == 6)
    {
        return Err(Error::key(
            "tokenizer.ggml.token_type",
            format!(
                "token {i} is a byte token (type 6), which a bert (WordPiece) vocabulary cannot have (llama.cpp aborts)"
            ),
        ));
    }
    // llama_vocab::token_to_byte reads a byte token's value from its text, `<0xHH>`, with
    // substr(3, 2): a shorter text throws (a message about basic_string, not the token), a
    // longer or non-hex one gives a wrong byte.
    if let Some(types) = types
        && matches!(model, "llama" | "t5" | "gemma4")
    {
        let byte_text = |t: &[u8]| {
            t.len() == 6 && t.starts_with(b"<0x") && t[5] == b'>' && t[3..5].iter().all(u8::is_ascii_hexdigit)
        };
        let bytes = g.array_bytes(tokens);
        // An i32 array (checked above): read in place, 6 is LLAMA_TOKEN_TYPE_BYTE.
        let byte_tokens = g.array_bytes(types).chunks_exact(4).enumerate().filter(|(_, c)| *c == 6i32.to_le_bytes());
        for (i, &(start, len)) in byte_tokens.filter_map(|(i, _)| spans.get(i).map(|s| (i, s))) {
            let text = bytes.get(start..start + len).unwrap_or_default();
            if !byte_text(text) {
                return Err(Error::key(
                    "tokenizer.ggml.tokens",
                    format!(
                        "token {i} is a byte token (type 6) whose text {:?} is not <0xHH>",
                        String::from_utf8_lossy(&text[..text.len().min(32)])
                    ),
                ));
            }
        }
    }
    typed_array(g, "tokenizer.ggml.suppress_tokens", &[ValueType::I32, ValueType::U32], None)?;
    typed_array(g, "tokenizer.ggml.precompiled_charsmap", &[ValueType::U8, ValueType::I8], None)?;
    let merges = typed_array(g, "tokenizer.ggml.merges", &[ValueType::String], None)?;
    if matches!(model, "gpt2" | "hybriddna" | "whitespace")
        && merges.is_none()
        && opt_str(g, "tokenizer.ggml.pre")? != Some("kimi-k2")
    {
        return Err(Error::key("tokenizer.ggml.merges", format!("is missing; a `{model}` (BPE) tokenizer needs it")));
    }
    Ok(())
}

/// Token strings are unique: `load` maps text to id and asserts
/// `id_to_token.size() == token_to_id.size()` (a process abort for a repeated token). Empty
/// tokens are renamed `[EMPTY_<id>]` by llama.cpp first. Token text need not be UTF-8 (llama.cpp
/// takes bytes), so it is not checked.
///
/// Each token's text gets a 32-bit hash ([`token_hash`], read straight from the array's bytes);
/// a copy of the hashes is radix-sorted, and only the tokens whose hash another token shares (a
/// handful in a 262,144-token vocabulary) have their text looked up and compared, sorted, so
/// that even a file made of colliding tokens costs O(n log n). A hash table would cost a cache
/// miss per token; the sort streams through memory.
fn unique_tokens(g: &Gguf, tokens: &Array) -> Result<Vec<(usize, usize)>, Error> {
    let key = "tokenizer.ggml.tokens";
    let bytes = g.array_bytes(tokens);
    let mut hashes: Vec<u32> = Vec::with_capacity(tokens.len);
    // Where each token's text is in `bytes`, for the few looked at again below.
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(tokens.len);
    let mut pos = 0usize;
    while let Some(len) = bytes.get(pos..pos + 8) {
        let len = u64::from_le_bytes([len[0], len[1], len[2], len[3], len[4], len[5], len[6], len[7]]);
        // The reader bounded every length by the array's bytes.
        let Some(len) = usize::try_from(len).ok().filter(|&l| l <= bytes.len() - pos - 8) else { break };
        let start = pos + 8;
        hashes.push(if len == 0 {
            hash_text(format!("[EMPTY_{}]", hashes.len()).as_bytes())
        } else {
            token_hash(bytes, start, len)
        });
        spans.push((start, len));
        pos = start + len;
    }
    let mut sorted = hashes.clone();
    radix_sort_u32(&mut sorted);
    let mut shared: Vec<u32> = sorted.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    if shared.is_empty() {
        return Ok(spans);
    }
    shared.dedup();
    // The tokens with a shared hash, and the text llama.cpp keys each by.
    let mut filter = vec![0u64; 1024]; // a bit per low 16 bits of a shared hash
    for &h in &shared {
        filter[(h as usize >> 6) & 1023] |= 1 << (h & 63);
    }
    let mut suspects: Vec<(u32, Vec<u8>, usize)> = Vec::new();
    for (id, (&h, &(start, len))) in hashes.iter().zip(&spans).enumerate() {
        if filter[(h as usize >> 6) & 1023] & (1 << (h & 63)) != 0 && shared.binary_search(&h).is_ok() {
            let s = bytes.get(start..start + len).unwrap_or_default();
            let text = if s.is_empty() { format!("[EMPTY_{id}]").into_bytes() } else { s.to_vec() };
            suspects.push((h, text, id));
        }
    }
    // Equal texts are neighbours once sorted; the lowest id comes first among equals.
    suspects.sort_unstable();
    for w in suspects.windows(2) {
        let ((ha, ta, first), (hb, tb, id)) = (&w[0], &w[1]);
        if ha == hb && ta == tb {
            return Err(Error::key(
                key,
                format!(
                    "token {id} `{}` repeats token {first}; llama.cpp asserts tokens are unique (a process abort)",
                    String::from_utf8_lossy(ta)
                ),
            ));
        }
    }
    Ok(spans)
}

const SEED0: u64 = 0xa076_1d64_78bd_642f;
const SEED1: u64 = 0xe703_7ed1_a0b4_28db;
const SEED2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// The 128-bit product of `a` and `b`, folded to 64 bits (wyhash's mixing step).
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The low `n` bytes (0 to 8) of a little-endian word: a mask without a branch.
fn low_bytes(n: usize) -> u64 {
    u64::MAX.checked_shr(64 - 8 * n.min(8) as u32).unwrap_or(0)
}

fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

/// The hash of a token's text: its first 16 bytes (zero-padded) mixed with its length, then
/// every further 16 bytes folded in. [`token_hash`] computes the same from the array's bytes.
fn hash_text(s: &[u8]) -> u32 {
    let len = s.len();
    let (head, mut rest) = s.split_at(len.min(16));
    let mut h = mum(word(head) ^ SEED0, word(head.get(8..).unwrap_or_default()) ^ SEED1 ^ len as u64);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(16));
        h = mum(word(chunk) ^ h ^ SEED2, word(chunk.get(8..).unwrap_or_default()) ^ SEED1);
        rest = tail;
    }
    (h >> 32) as u32
}

/// [`hash_text`] of the `len` bytes at `start` of `bytes`. For the common token of at most 16
/// bytes with 16 bytes of the buffer at hand (the next token's length follows it), two
/// unaligned loads and masks: no loop, no copy, no branch on the length.
fn token_hash(bytes: &[u8], start: usize, len: usize) -> u32 {
    match bytes.get(start..start + 16) {
        Some(w) if len <= 16 => {
            let w0 = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) & low_bytes(len);
            let w1 = u64::from_le_bytes([w[8], w[9], w[10], w[11], w[12], w[13], w[14], w[15]])
                & low_bytes(len.saturating_sub(8));
            (mum(w0 ^ SEED0, w1 ^ SEED1 ^ len as u64) >> 32) as u32
        }
        _ => hash_text(bytes.get(start..start + len).unwrap_or_default()),
    }
}

/// Sorts 32-bit values: three stable counting passes of 11 bits each (an LSD radix sort;
/// 2,048 counters stay in the L1 cache).
fn radix_sort_u32(values: &mut Vec<u32>) {
    let mut scratch = vec![0u32; values.len()];
    for shift in [0u32, 11, 22] {
        let mut counts = [0usize; 2048];
        for &v in values.iter() {
            counts[((v >> shift) & 0x7ff) as usize] += 1;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for &v in values.iter() {
            let b = &mut counts[((v >> shift) & 0x7ff) as usize];
            if let Some(slot) = scratch.get_mut(*b) {
                *slot = v;
            }
            *b += 1;
        }
        std::mem::swap(values, &mut scratch);
    }
}

/// An optional array read through a typed pointer: its element type must be one of `types`
/// (another type is read as if it were one: out-of-bounds reads or, for strings, an abort in
/// gguf_get_arr_data), and it must have at least `min_len` elements.
fn typed_array<'g>(
    g: &'g Gguf,
    key: &str,
    types: &[ValueType],
    min_len: Option<usize>,
) -> Result<Option<&'g Array>, Error> {
    let names = types.iter().map(|t| t.name()).collect::<Vec<_>>().join(" or ");
    match g.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) if types.contains(&a.elem) => {
            if let Some(n) = min_len
                && a.len < n
            {
                return Err(Error::key(key, format!("has {} entries for {n} tokens", a.len)));
            }
            Ok(Some(a))
        }
        Some(v) => Err(Error::key(
            key,
            format!("has type {}; llama.cpp reads it as an array of {names} through a typed pointer", v.type_name()),
        )),
    }
}

fn type_error(key: &str, v: &Value, want: &str) -> Error {
    Error::key(key, format!("has type {}, llama.cpp reads {want} (llama_model_loader::get_key)", v.type_name()))
}

fn opt_u32(g: &Gguf, key: &str) -> Result<Option<u32>, Error> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::U32(v)) => Ok(Some(*v)),
        Some(v) => Err(type_error(key, v, "u32")),
    }
}

fn req_u32(g: &Gguf, key: &str) -> Result<u32, Error> {
    opt_u32(g, key)?.ok_or_else(|| Error::key(key, "is missing (llama.cpp requires it)"))
}

fn opt_str<'g>(g: &'g Gguf, key: &str) -> Result<Option<&'g str>, Error> {
    match g.get(key) {
        None => Ok(None),
        Some(v @ Value::String(_)) => v.as_str().map(Some).ok_or_else(|| Error::key(key, "is not valid UTF-8")),
        Some(v) => Err(type_error(key, v, "str")),
    }
}

fn req_str<'g>(g: &'g Gguf, key: &str) -> Result<&'g str, Error> {
    opt_str(g, key)?.ok_or_else(|| Error::key(key, "is missing (llama.cpp requires it)"))
}

/// A fast, non-cryptographic hasher for the token table (hashing 262,144 tokens with SipHash
/// would dominate the validation time). Multiply-rotate over 8-byte words.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

type Fx = BuildHasherDefault<FxHasher>;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(tail) ^ (rest.len() as u64) << 56).wrapping_mul(K);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // The multiplications leave the low bits weak (they depend only on the inputs' low
        // bits, and tokens share prefixes); the table indexes by the low bits, so fold the high
        // half down.
        let h = (self.0 ^ (self.0 >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
}
