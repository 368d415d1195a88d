//! The tensor plan, GGUF encoding, streaming generation and atomic file output.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::quant::{f32_to_f16_bits, quantize_q4_0_into, quantize_q8_0_into};
use crate::rng::{Normal, fnv1a};
use crate::spec::{Arch, ModelSpec, N_VOCAB, WeightType};
use crate::{Error, GENERATOR_VERSION, GGUF_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION};

/// Standard deviation of every random weight (`output.weight` included).
pub const WEIGHT_STD: f32 = 0.02;

/// Elements per independently seeded chunk (a multiple of every block length).
const CHUNK: u64 = 1 << 16;

/// How a tensor's values are produced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Init {
    /// All 1.0 (norm weights).
    Ones,
    /// Normal(0, std) from the tensor's own ChaCha stream.
    Normal(f32),
}

/// One tensor of the file, in file order.
#[derive(Clone, Debug)]
pub(crate) struct PlannedTensor {
    pub(crate) name: String,
    /// Shape in ggml order (`ne[0]` first, contiguous).
    pub(crate) ne: Vec<u64>,
    pub(crate) ty: WeightType,
    pub(crate) init: Init,
    pub(crate) n_elements: u64,
    pub(crate) nbytes: u64,
    /// Offset from the start of the data section (a multiple of the alignment).
    pub(crate) offset: u64,
}

fn too_large() -> Error {
    Error::invalid("n_embd", "the model is too large: its byte size overflows u64".to_string())
}

pub(crate) fn pad(n: u64) -> Option<u64> {
    n.checked_next_multiple_of(GGUF_ALIGNMENT)
}

/// Lists the tensors of the model, with types, shapes and data offsets.
///
/// Assumes the basic field checks of `validate` passed (non-zero sizes, divisibility); size
/// overflow is reported as an error.
pub(crate) fn tensor_plan(spec: &ModelSpec) -> Result<Vec<PlannedTensor>, Error> {
    let wt = spec.weight_type;
    let e = u64::from(spec.n_embd);
    let hd = u64::from(spec.head_dim());
    let q_dim = u64::from(spec.n_head) * hd;
    let kv_dim = u64::from(spec.n_head_kv) * hd;
    let vocab = u64::from(N_VOCAB);
    let normal = Init::Normal(WEIGHT_STD);
    const F32: WeightType = WeightType::F32;
    const ONES: Init = Init::Ones;

    let mut list: Vec<(String, Vec<u64>, WeightType, Init)> = vec![
        ("token_embd.weight".into(), vec![e, vocab], wt, normal),
        ("output_norm.weight".into(), vec![e], F32, ONES),
        ("output.weight".into(), vec![e, vocab], wt, normal),
    ];
    if !spec.classifier_labels.is_empty() {
        list.push(("cls.output.weight".into(), vec![e, spec.classifier_labels.len() as u64], wt, normal));
    }
    for il in 0..spec.n_layer {
        let mut add = |name: &str, ne: Vec<u64>, ty: WeightType, init: Init| {
            list.push((format!("blk.{il}.{name}"), ne, ty, init));
        };
        add("attn_norm.weight", vec![e], F32, ONES);
        add("attn_q.weight", vec![e, q_dim], wt, normal);
        add("attn_k.weight", vec![e, kv_dim], wt, normal);
        add("attn_v.weight", vec![e, kv_dim], wt, normal);
        add("attn_output.weight", vec![q_dim, e], wt, normal);
        if matches!(spec.arch, Arch::Qwen3Moe | Arch::Gemma3 | Arch::Qwen3) {
            add("attn_q_norm.weight", vec![hd], F32, ONES);
            add("attn_k_norm.weight", vec![hd], F32, ONES);
        }
        if spec.arch == Arch::Gemma3 {
            add("post_attention_norm.weight", vec![e], F32, ONES);
        }
        add("ffn_norm.weight", vec![e], F32, ONES);
        match spec.arch {
            Arch::Llama | Arch::Gemma3 | Arch::Qwen3 => {
                let ff = u64::from(spec.n_ff);
                add("ffn_gate.weight", vec![e, ff], wt, normal);
                add("ffn_up.weight", vec![e, ff], wt, normal);
                add("ffn_down.weight", vec![ff, e], wt, normal);
            }
            Arch::Qwen3Moe => {
                let ff = u64::from(spec.n_ff_exp);
                let x = u64::from(spec.n_expert);
                add("ffn_gate_inp.weight", vec![e, x], F32, normal);
                add("ffn_gate_exps.weight", vec![e, ff, x], wt, normal);
                add("ffn_up_exps.weight", vec![e, ff, x], wt, normal);
                add("ffn_down_exps.weight", vec![ff, e, x], wt, normal);
            }
        }
        if spec.arch == Arch::Gemma3 {
            add("post_ffw_norm.weight", vec![e], F32, ONES);
        }
    }

    let mut offset = 0u64;
    let mut out = Vec::with_capacity(list.len());
    for (name, ne, ty, init) in list {
        let n_elements = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(too_large)?;
        // ggml stores element counts as int64_t.
        if n_elements > i64::MAX as u64 {
            return Err(too_large());
        }
        let nbytes = ty.nbytes(n_elements).ok_or_else(too_large)?;
        out.push(PlannedTensor { name, ne, ty, init, n_elements, nbytes, offset });
        offset = pad(nbytes).and_then(|p| offset.checked_add(p)).ok_or_else(too_large)?;
    }
    Ok(out)
}

/// Size of the whole file: metadata and tensor infos, padding, then the padded tensor data.
pub(crate) fn plan_size(spec: &ModelSpec) -> Result<u64, Error> {
    let plan = tensor_plan(spec)?;
    let header = encode_header(spec, &plan);
    let data = plan.last().map_or(Some(0), |t| pad(t.nbytes).and_then(|p| t.offset.checked_add(p)));
    pad(header.len() as u64).zip(data).and_then(|(h, d)| h.checked_add(d)).ok_or_else(too_large)
}

/// GGUF value type ids (`enum gguf_type`).
pub(crate) mod gguf_type {
    pub(crate) const UINT32: u32 = 4;
    pub(crate) const INT32: u32 = 5;
    pub(crate) const FLOAT32: u32 = 6;
    pub(crate) const BOOL: u32 = 7;
    pub(crate) const STRING: u32 = 8;
    pub(crate) const ARRAY: u32 = 9;
    pub(crate) const UINT64: u32 = 10;
}

/// Builds the key/value section.
pub(crate) struct Meta {
    pub(crate) buf: Vec<u8>,
    pub(crate) count: u64,
}

impl Meta {
    pub(crate) fn put_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn key(&mut self, key: &str, ty: u32) {
        self.count += 1;
        Meta::put_str(&mut self.buf, key);
        self.buf.extend_from_slice(&ty.to_le_bytes());
    }

    pub(crate) fn string(&mut self, key: &str, v: &str) {
        self.key(key, gguf_type::STRING);
        Meta::put_str(&mut self.buf, v);
    }

    pub(crate) fn u32(&mut self, key: &str, v: u32) {
        self.key(key, gguf_type::UINT32);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, key: &str, v: u64) {
        self.key(key, gguf_type::UINT64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn f32(&mut self, key: &str, v: f32) {
        self.key(key, gguf_type::FLOAT32);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn bool(&mut self, key: &str, v: bool) {
        self.key(key, gguf_type::BOOL);
        self.buf.push(u8::from(v));
    }

    pub(crate) fn array_header(&mut self, key: &str, elem: u32, n: usize) {
        self.key(key, gguf_type::ARRAY);
        self.buf.extend_from_slice(&elem.to_le_bytes());
        self.buf.extend_from_slice(&(n as u64).to_le_bytes());
    }

    fn strings(&mut self, key: &str, v: &[String]) {
        self.array_header(key, gguf_type::STRING, v.len());
        for s in v {
            Meta::put_str(&mut self.buf, s);
        }
    }

    fn f32s(&mut self, key: &str, v: &[f32]) {
        self.array_header(key, gguf_type::FLOAT32, v.len());
        v.iter().for_each(|x| self.buf.extend_from_slice(&x.to_le_bytes()));
    }

    fn i32s(&mut self, key: &str, v: &[i32]) {
        self.array_header(key, gguf_type::INT32, v.len());
        v.iter().for_each(|x| self.buf.extend_from_slice(&x.to_le_bytes()));
    }
}

/// The vocabulary: `<unk>`, `<s>`, `</s>`, then `<0x00>` .. `<0xFF>`, then `▁` (U+2581, the
/// SentencePiece word boundary, so spaces tokenize to one token and detokenize back to spaces).
pub(crate) fn vocab_tokens() -> Vec<String> {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].iter().map(|s| s.to_string()).collect();
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.push("\u{2581}".to_string());
    tokens
}

/// Token types: 2 (unknown), 3 (control) twice, 6 (byte) for every byte token, 1 (normal) for `▁`.
fn vocab_types() -> Vec<i32> {
    let mut types = vec![2, 3, 3];
    types.extend(std::iter::repeat_n(6, 256));
    types.push(1);
    types
}

fn encode_metadata(spec: &ModelSpec) -> Meta {
    let mut m = Meta { buf: Vec::with_capacity(8192), count: 0 };
    let a = spec.arch.name();
    let hd = spec.head_dim();

    m.string("general.architecture", a);
    m.string("general.name", &format!("tiny-gguf {}", spec.file_stem()));
    m.u32("general.alignment", GGUF_ALIGNMENT as u32);
    m.u32("general.file_type", spec.weight_type.file_type());
    m.u32("tiny_gguf.generator_version", GENERATOR_VERSION);
    m.u64("tiny_gguf.seed", spec.seed);

    m.u32(&format!("{a}.context_length"), spec.context_length);
    m.u32(&format!("{a}.embedding_length"), spec.n_embd);
    m.u32(&format!("{a}.block_count"), spec.n_layer);
    let n_ff = if spec.arch == Arch::Qwen3Moe { spec.n_ff_exp } else { spec.n_ff };
    m.u32(&format!("{a}.feed_forward_length"), n_ff);
    m.u32(&format!("{a}.attention.head_count"), spec.n_head);
    m.u32(&format!("{a}.attention.head_count_kv"), spec.n_head_kv);
    m.f32(&format!("{a}.attention.layer_norm_rms_epsilon"), spec.arch.rms_eps());
    m.u32(&format!("{a}.rope.dimension_count"), hd);
    match spec.arch {
        Arch::Llama => {
            m.f32(&format!("{a}.rope.freq_base"), 10_000.0);
        }
        Arch::Qwen3Moe => {
            m.f32(&format!("{a}.rope.freq_base"), 1_000_000.0);
            m.u32(&format!("{a}.attention.key_length"), hd);
            m.u32(&format!("{a}.attention.value_length"), hd);
            m.u32(&format!("{a}.expert_count"), spec.n_expert);
            m.u32(&format!("{a}.expert_used_count"), spec.n_expert_used);
            m.u32(&format!("{a}.expert_feed_forward_length"), spec.n_ff_exp);
        }
        Arch::Qwen3 => {
            m.f32(&format!("{a}.rope.freq_base"), 1_000_000.0);
            m.u32(&format!("{a}.attention.key_length"), hd);
            m.u32(&format!("{a}.attention.value_length"), hd);
        }
        Arch::Gemma3 => {
            m.f32(&format!("{a}.rope.freq_base"), 1_000_000.0);
            m.f32(&format!("{a}.rope.freq_base_swa"), 10_000.0);
            m.u32(&format!("{a}.attention.key_length"), hd);
            m.u32(&format!("{a}.attention.value_length"), hd);
            m.u32(&format!("{a}.attention.sliding_window"), spec.sliding_window);
            m.u32(&format!("{a}.attention.sliding_window_pattern"), spec.sliding_window_pattern);
        }
    }

    if !spec.classifier_labels.is_empty() {
        m.u32(&format!("{a}.pooling_type"), 4); // LLAMA_POOLING_TYPE_RANK
        m.strings(&format!("{a}.classifier.output_labels"), &spec.classifier_labels);
    }

    let tokens = vocab_tokens();
    m.string("tokenizer.ggml.model", "llama");
    m.strings("tokenizer.ggml.tokens", &tokens);
    m.f32s("tokenizer.ggml.scores", &vec![0.0; tokens.len()]);
    m.i32s("tokenizer.ggml.token_type", &vocab_types());
    m.u32("tokenizer.ggml.bos_token_id", crate::TOKEN_BOS);
    m.u32("tokenizer.ggml.eos_token_id", crate::TOKEN_EOS);
    m.u32("tokenizer.ggml.unknown_token_id", crate::TOKEN_UNK);
    m.bool("tokenizer.ggml.add_bos_token", true);
    m.bool("tokenizer.ggml.add_eos_token", false);
    if let Some(template) = &spec.chat_template {
        m.string("tokenizer.chat_template", template);
    }
    for (key, value) in &spec.extra_metadata {
        match value {
            crate::ExtraValue::String(v) => m.string(key, v),
            crate::ExtraValue::I32(v) => {
                m.key(key, gguf_type::INT32);
                m.buf.extend_from_slice(&v.to_le_bytes());
            }
            crate::ExtraValue::F32Bits(bits) => m.f32(key, f32::from_bits(*bits)),
        }
    }
    m
}

/// Everything before the data section, without the final alignment padding.
fn encode_header(spec: &ModelSpec, plan: &[PlannedTensor]) -> Vec<u8> {
    let meta = encode_metadata(spec);
    let mut out = Vec::with_capacity(meta.buf.len() + plan.len() * 96 + 32);
    out.extend_from_slice(GGUF_MAGIC);
    out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    out.extend_from_slice(&(plan.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta.count.to_le_bytes());
    out.extend_from_slice(&meta.buf);
    for t in plan {
        Meta::put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        t.ne.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&t.ty.ggml_type().to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out
}

/// Appends the encoded bytes of elements `[start, start + len)` of tensor `t` to `out`.
fn encode_chunk(seed: u64, t: &PlannedTensor, chunk: u64, out: &mut Vec<u8>, vals: &mut Vec<f32>) {
    let start = chunk * CHUNK;
    // `len` is at most CHUNK, so it fits in usize.
    let len = CHUNK.min(t.n_elements - start) as usize;
    vals.clear();
    match t.init {
        Init::Ones => vals.resize(len, 1.0),
        Init::Normal(std) => {
            Normal::new(seed, fnv1a(t.name.as_bytes()), chunk).fill(len, f64::from(std), vals);
        }
    }
    match t.ty {
        WeightType::F32 => vals.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        WeightType::F16 => vals.iter().for_each(|&v| out.extend_from_slice(&f32_to_f16_bits(v).to_le_bytes())),
        WeightType::Q8_0 => quantize_q8_0_into(vals, out),
        WeightType::Q4_0 => quantize_q4_0_into(vals, out),
    }
}

/// Generates and writes the data of tensor `t` (without trailing padding), using up to
/// `threads` threads; the bytes do not depend on `threads`.
fn write_tensor_data(seed: u64, t: &PlannedTensor, threads: usize, w: &mut impl Write) -> std::io::Result<()> {
    let n_chunks = t.n_elements.div_ceil(CHUNK);
    let threads = threads.max(1);
    if threads == 1 || n_chunks < 2 {
        let (mut out, mut vals) = (Vec::new(), Vec::new());
        for c in 0..n_chunks {
            out.clear();
            encode_chunk(seed, t, c, &mut out, &mut vals);
            w.write_all(&out)?;
        }
        return Ok(());
    }
    // Batches of `threads * PER_THREAD` chunks: each thread encodes a run of consecutive
    // chunks into its own buffer, then the buffers are written in order.
    const PER_THREAD: u64 = 4;
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); threads];
    let mut c0 = 0;
    while c0 < n_chunks {
        std::thread::scope(|s| {
            for (i, buf) in bufs.iter_mut().enumerate() {
                let first = c0 + i as u64 * PER_THREAD;
                let last = (first + PER_THREAD).min(n_chunks);
                buf.clear();
                if first < last {
                    s.spawn(move || {
                        let mut vals = Vec::new();
                        for c in first..last {
                            encode_chunk(seed, t, c, buf, &mut vals);
                        }
                    });
                }
            }
        });
        for buf in &bufs {
            w.write_all(buf)?;
        }
        c0 += threads as u64 * PER_THREAD;
    }
    Ok(())
}

fn write_padding(w: &mut impl Write, written: u64) -> std::io::Result<()> {
    const ZEROS: [u8; GGUF_ALIGNMENT as usize] = [0; GGUF_ALIGNMENT as usize];
    let n = written.next_multiple_of(GGUF_ALIGNMENT) - written;
    // n < GGUF_ALIGNMENT
    w.write_all(&ZEROS[..n as usize])
}

/// Writes the whole file to `w`; returns the number of bytes written.
pub(crate) fn write_model(spec: &ModelSpec, w: &mut impl Write, threads: usize) -> std::io::Result<u64> {
    let plan = tensor_plan(spec).map_err(std::io::Error::other)?;
    let header = encode_header(spec, &plan);
    w.write_all(&header)?;
    write_padding(w, header.len() as u64)?;
    let mut total = (header.len() as u64).next_multiple_of(GGUF_ALIGNMENT);
    for t in &plan {
        write_tensor_data(spec.seed, t, threads, w)?;
        write_padding(w, t.nbytes)?;
        total += t.nbytes.next_multiple_of(GGUF_ALIGNMENT);
    }
    Ok(total)
}

/// Number of generator threads: `TINY_GGUF_THREADS` if set to a positive number, else the
/// available parallelism capped at 8. The output never depends on it.
fn default_threads() -> usize {
    if let Some(n) = std::env::var("TINY_GGUF_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok())
        && n > 0
    {
        return n;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Removes the temporary file on drop unless disarmed (error paths and panics alike).
pub(crate) struct TempGuard {
    pub(crate) path: PathBuf,
    pub(crate) armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub(crate) static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes the model described by `spec` to `path`, atomically.
///
/// The file is written to a uniquely named temporary file in the same directory
/// (`.<name>.<pid>.<n>.tmp`), flushed and synced, then renamed over `path`; on any error the
/// temporary file is removed, so `path` is either absent, its previous content, or the complete
/// new file. The directory must exist.
///
/// Returns [`Error::InvalidSpec`] if [`ModelSpec::validate`] fails, [`Error::Io`] on I/O errors.
pub fn write_gguf(spec: &ModelSpec, path: &Path) -> Result<(), Error> {
    write_gguf_threads(spec, path, default_threads())
}

pub(crate) fn write_gguf_threads(spec: &ModelSpec, path: &Path, threads: usize) -> Result<(), Error> {
    spec.validate()?;
    let file_name = path.file_name().ok_or_else(|| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no file name"),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.{}.{n}.tmp", file_name.to_string_lossy(), std::process::id()));
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { action, path: p, source }
    };

    let file = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io_err("create", &tmp))?;
    let mut guard = TempGuard { path: tmp.clone(), armed: true };
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write_model(spec, &mut w, threads).map_err(io_err("write", &tmp))?;
    let file: File = w.into_inner().map_err(|e| io_err("write", &tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    guard.armed = false;
    Ok(())
}

/// Returns `dir/<file_stem>.gguf`, generating it first unless a complete file from this
/// generator version is already there.
///
/// Creates `dir` if needed. An existing file is reused when its header parses, it was written by
/// the same [`GENERATOR_VERSION`] for the same spec, and its size is exactly the expected size;
/// otherwise it is regenerated (atomically, see [`write_gguf`]). Concurrent callers, in this
/// or other processes, at worst generate the file twice: each writes its own temporary file and
/// the renames replace identical content atomically.
pub fn cached(spec: &ModelSpec, dir: &Path) -> Result<PathBuf, Error> {
    spec.validate()?;
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(format!("{}.gguf", spec.file_stem()));
    if is_current(spec, &path)? {
        return Ok(path);
    }
    write_gguf(spec, &path)?;
    Ok(path)
}

/// Whether `path` holds the complete file for `spec` written by this generator version.
fn is_current(spec: &ModelSpec, path: &Path) -> Result<bool, Error> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == plan_size(spec)? => {}
        _ => return Ok(false),
    }
    let Ok(header) = crate::reader::read_header(path) else {
        return Ok(false);
    };
    let name = format!("tiny-gguf {}", spec.file_stem());
    Ok(header.get_u32("tiny_gguf.generator_version") == Some(GENERATOR_VERSION)
        && header.get_str("general.name") == Some(name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_independent_of_thread_count() {
        let spec = ModelSpec { n_embd: 256, n_ff_exp: 512, ..ModelSpec::tiny_moe() };
        let mut one = Vec::new();
        let mut four = Vec::new();
        let n1 = write_model(&spec, &mut one, 1).unwrap();
        let n4 = write_model(&spec, &mut four, 3).unwrap();
        assert_eq!(n1, n4);
        assert_eq!(one.len() as u64, n1);
        assert_eq!(one, four);
        assert_eq!(n1, plan_size(&spec).unwrap());
    }

    #[test]
    fn offsets_are_aligned_and_contiguous() {
        for spec in [ModelSpec::tiny_llama(), ModelSpec::tiny_moe(), ModelSpec::tiny_swa()] {
            let plan = tensor_plan(&spec).unwrap();
            let mut expect = 0;
            for t in &plan {
                assert_eq!(t.offset, expect, "{}", t.name);
                assert_eq!(t.offset % GGUF_ALIGNMENT, 0);
                expect += t.nbytes.next_multiple_of(GGUF_ALIGNMENT);
            }
        }
    }

    #[test]
    fn weights_have_the_requested_spread() {
        let spec = ModelSpec { weight_type: WeightType::F32, ..ModelSpec::tiny_llama() };
        let plan = tensor_plan(&spec).unwrap();
        let t = plan.iter().find(|t| t.name == "blk.0.ffn_up.weight").unwrap();
        let (mut out, mut vals) = (Vec::new(), Vec::new());
        encode_chunk(spec.seed, t, 0, &mut out, &mut vals);
        let n = vals.len() as f64;
        let mean = vals.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let std = (vals.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.001, "mean {mean}");
        assert!((std - f64::from(WEIGHT_STD)).abs() < 0.001, "std {std}");
        assert_eq!(out.len(), vals.len() * 4);
    }
}
