//! Model descriptions: architectures, weight types, [`ModelSpec`] and its presets.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Number of tokens in the generated vocabulary: `<unk>`, `<s>`, `</s>`, 256 byte tokens and `▁`.
pub const N_VOCAB: u32 = 260;

/// Largest layer count llama.cpp accepts (`LLAMA_MAX_LAYERS`).
pub const MAX_LAYERS: u32 = 512;

/// Largest expert count llama.cpp accepts (`LLAMA_MAX_EXPERTS`).
pub const MAX_EXPERTS: u32 = 512;

/// Number of elements in one block of the quantized types ([`WeightType::Q8_0`], [`WeightType::Q4_0`]).
pub const QK: u32 = 32;

/// The model architecture, i.e. the value of `general.architecture`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Dense decoder (`llama`): attention plus a SwiGLU feed-forward network.
    Llama,
    /// Mixture of experts (`qwen3moe`): Q/K norms, a router and `n_expert` SwiGLU experts per layer.
    Qwen3Moe,
    /// Sliding-window attention (`gemma3`): interleaved SWA and full-attention layers, GELU FFN.
    Gemma3,
    /// Dense decoder with Q/K norms (`qwen3`): the generated architecture that can carry a
    /// classifier head ([`ModelSpec::classifier_labels`]), as Qwen3 rerankers do.
    Qwen3,
}

impl Arch {
    /// All architectures, in declaration order.
    pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Qwen3Moe, Arch::Gemma3, Arch::Qwen3];

    /// The llama.cpp architecture name, also the prefix of the architecture's metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Gemma3 => "gemma3",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// RMS-norm epsilon written to `<arch>.attention.layer_norm_rms_epsilon`.
    pub(crate) fn rms_eps(self) -> f32 {
        match self {
            Arch::Llama => 1e-5,
            Arch::Qwen3Moe | Arch::Gemma3 | Arch::Qwen3 => 1e-6,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Arch::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            Error::invalid("arch", format!("unknown architecture {s:?}; expected llama, qwen3moe, gemma3 or qwen3"))
        })
    }
}

/// Storage type of the 2-D and 3-D weight matrices.
///
/// Norm weights, other 1-D tensors and the MoE router (`ffn_gate_inp`) are always F32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightType {
    /// 32-bit float (`GGML_TYPE_F32`).
    F32,
    /// IEEE half precision (`GGML_TYPE_F16`).
    F16,
    /// 8-bit blocks of 32 with an f16 scale (`GGML_TYPE_Q8_0`, 34 bytes per block).
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale (`GGML_TYPE_Q4_0`, 18 bytes per block).
    Q4_0,
}

impl WeightType {
    /// All weight types, in declaration order.
    pub const ALL: [WeightType; 4] = [WeightType::F32, WeightType::F16, WeightType::Q8_0, WeightType::Q4_0];

    /// Lower-case name as ggml spells it (`f32`, `f16`, `q8_0`, `q4_0`).
    pub fn name(self) -> &'static str {
        match self {
            WeightType::F32 => "f32",
            WeightType::F16 => "f16",
            WeightType::Q8_0 => "q8_0",
            WeightType::Q4_0 => "q4_0",
        }
    }

    /// The `ggml_type` id stored in GGUF tensor infos.
    pub fn ggml_type(self) -> u32 {
        match self {
            WeightType::F32 => 0,
            WeightType::F16 => 1,
            WeightType::Q4_0 => 2,
            WeightType::Q8_0 => 8,
        }
    }

    /// The weight type with the given `ggml_type` id, if it is one of the four supported ones.
    pub fn from_ggml_type(id: u32) -> Option<WeightType> {
        WeightType::ALL.into_iter().find(|t| t.ggml_type() == id)
    }

    /// The `llama_ftype` value written to `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            WeightType::F32 => 0,  // LLAMA_FTYPE_ALL_F32
            WeightType::F16 => 1,  // LLAMA_FTYPE_MOSTLY_F16
            WeightType::Q4_0 => 2, // LLAMA_FTYPE_MOSTLY_Q4_0
            WeightType::Q8_0 => 7, // LLAMA_FTYPE_MOSTLY_Q8_0
        }
    }

    /// Whether this is a block-quantized type whose rows must be a multiple of [`QK`] elements.
    pub fn is_quantized(self) -> bool {
        matches!(self, WeightType::Q8_0 | WeightType::Q4_0)
    }

    /// Elements per block (1 for the float types, [`QK`] for the quantized ones).
    pub fn block_len(self) -> u64 {
        if self.is_quantized() { u64::from(QK) } else { 1 }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            WeightType::F32 => 4,
            WeightType::F16 => 2,
            WeightType::Q8_0 => 34,
            WeightType::Q4_0 => 18,
        }
    }

    /// Size in bytes of `n_elements` values (which must be a multiple of [`Self::block_len`]);
    /// `None` on overflow.
    pub fn nbytes(self, n_elements: u64) -> Option<u64> {
        (n_elements / self.block_len()).checked_mul(self.block_bytes())
    }
}

impl fmt::Display for WeightType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        WeightType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            Error::invalid("weight_type", format!("unknown weight type {s:?}; expected f32, f16, q8_0 or q4_0"))
        })
    }
}

/// Everything that determines a generated model file.
///
/// Fields that an architecture does not use are ignored: they neither change the file nor
/// appear in [`ModelSpec::file_stem`]. `n_ff` is used by `llama`, `gemma3` and `qwen3`; `n_expert`,
/// `n_expert_used` and `n_ff_exp` by `qwen3moe`; `sliding_window` and `sliding_window_pattern`
/// by `gemma3`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    /// Architecture.
    pub arch: Arch,
    /// Type of the 2-D / 3-D weight matrices (including `token_embd` and `output`).
    pub weight_type: WeightType,
    /// Seed of the weight generator; the same spec always gives the same bytes.
    pub seed: u64,
    /// Embedding width (`n_embd`); the head dimension is `n_embd / n_head`.
    pub n_embd: u32,
    /// Number of transformer blocks.
    pub n_layer: u32,
    /// Number of attention (query) heads.
    pub n_head: u32,
    /// Number of key/value heads (grouped-query attention when smaller than `n_head`).
    pub n_head_kv: u32,
    /// Dense feed-forward width (`llama`, `gemma3`, `qwen3`).
    pub n_ff: u32,
    /// Number of experts per layer (`qwen3moe`).
    pub n_expert: u32,
    /// Experts evaluated per token (`qwen3moe`).
    pub n_expert_used: u32,
    /// Feed-forward width of one expert (`qwen3moe`).
    pub n_ff_exp: u32,
    /// Training context length written to `<arch>.context_length` (llama.cpp's default `n_ctx`
    /// when a context is created with `n_ctx = 0`).
    pub context_length: u32,
    /// Sliding-window size in tokens (`gemma3`); 0 disables sliding-window attention.
    pub sliding_window: u32,
    /// Layer `i` uses the sliding window when `i % pattern < pattern - 1` (`gemma3`), so with
    /// pattern 2 even layers are SWA and odd layers use full attention.
    pub sliding_window_pattern: u32,
    /// A chat template written as `tokenizer.chat_template` (a Jinja text, as Hugging Face
    /// models carry); `None` writes none. A template changes the file name
    /// ([`ModelSpec::file_stem`] ends with `-t` and a hash of the text).
    pub chat_template: Option<String>,
    /// More metadata keys written after the others, in order (e.g. `general.sampling.top_k`,
    /// the sampling defaults llama.cpp's tools take from a model). Extra keys change the file
    /// name ([`ModelSpec::file_stem`] ends with `-m` and a hash of them).
    pub extra_metadata: Vec<(String, ExtraValue)>,
    /// The labels of a classifier head (`qwen3` only): a `cls.output.weight` tensor of shape
    /// {n_embd, labels} and `<arch>.classifier.output_labels`, with `<arch>.pooling_type` set to
    /// rank (4), as llama.cpp's conversion writes a Qwen3 reranker (labels `yes`, `no`: the
    /// score is the softmax probability of the first). Empty writes none. Labels change the
    /// file name ([`ModelSpec::file_stem`] ends with `-r` and a hash of them).
    pub classifier_labels: Vec<String>,
}

/// The value of an [`ModelSpec::extra_metadata`] key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExtraValue {
    /// A string (`GGUF_TYPE_STRING`).
    String(String),
    /// A 32-bit signed integer (`GGUF_TYPE_INT32`).
    I32(i32),
    /// A 32-bit float (`GGUF_TYPE_FLOAT32`), by its bits so that specs stay `Eq` and `Hash`:
    /// build it with [`ExtraValue::f32`].
    F32Bits(u32),
}

impl ExtraValue {
    /// A float value.
    pub fn f32(v: f32) -> Self {
        ExtraValue::F32Bits(v.to_bits())
    }
}

/// The names of the presets ([`ModelSpec::preset`]), as the `tiny-gguf --preset` option and
/// configuration files spell them.
pub const PRESETS: [&str; 6] = ["tiny-llama", "tiny-moe", "tiny-swa", "tiny-rerank", "bench-moe", "large-moe"];

impl ModelSpec {
    /// The preset called `name` (one of [`PRESETS`]), or `None` for any other name.
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "tiny-llama" => Self::tiny_llama(),
            "tiny-moe" => Self::tiny_moe(),
            "tiny-swa" => Self::tiny_swa(),
            "tiny-rerank" => Self::tiny_rerank(),
            "bench-moe" => Self::bench_moe(),
            "large-moe" => Self::large_moe(),
            _ => return None,
        })
    }

    /// Dense `llama`, F16, n_embd 128, 4 heads, 2 KV heads (head dim 32), 2 layers, n_ff 256
    /// (about 0.7 MB).
    pub fn tiny_llama() -> Self {
        ModelSpec {
            arch: Arch::Llama,
            weight_type: WeightType::F16,
            seed: 42,
            n_embd: 128,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 256,
            n_expert: 0,
            n_expert_used: 0,
            n_ff_exp: 0,
            context_length: 2048,
            sliding_window: 0,
            sliding_window_pattern: 0,
            chat_template: None,
            extra_metadata: Vec::new(),
            classifier_labels: Vec::new(),
        }
    }

    /// `qwen3moe`, Q8_0, n_embd 128, 4 heads, 2 KV heads, 2 layers, 4 experts of width 256 with
    /// 2 used per token (about 1 MB).
    pub fn tiny_moe() -> Self {
        ModelSpec {
            arch: Arch::Qwen3Moe,
            weight_type: WeightType::Q8_0,
            n_ff: 0,
            n_expert: 4,
            n_expert_used: 2,
            n_ff_exp: 256,
            ..ModelSpec::tiny_llama()
        }
    }

    /// `gemma3`, Q8_0, n_embd 128, 4 heads, 2 KV heads, 4 layers, n_ff 256, sliding window 128
    /// with pattern 2: layers 0 and 2 use the sliding window, layers 1 and 3 full attention
    /// (about 0.6 MB).
    pub fn tiny_swa() -> Self {
        ModelSpec {
            arch: Arch::Gemma3,
            weight_type: WeightType::Q8_0,
            n_layer: 4,
            sliding_window: 128,
            sliding_window_pattern: 2,
            ..ModelSpec::tiny_llama()
        }
    }

    /// A reranker: `qwen3`, F32, n_embd 128, 4 heads, 2 KV heads, 2 layers, n_ff 256, with a
    /// classifier head of two labels (`yes`, `no`) and rank pooling (about 1.5 MB).
    pub fn tiny_rerank() -> Self {
        ModelSpec {
            arch: Arch::Qwen3,
            weight_type: WeightType::F32,
            classifier_labels: vec!["yes".to_string(), "no".to_string()],
            ..ModelSpec::tiny_llama()
        }
    }

    /// Benchmark MoE: `qwen3moe`, Q8_0, n_embd 512, 8 heads, 4 KV heads (head dim 64), 6 layers,
    /// 8 experts of width 768 with 2 used, context 4096 (about 65 MB, 61 M parameters).
    pub fn bench_moe() -> Self {
        ModelSpec {
            arch: Arch::Qwen3Moe,
            weight_type: WeightType::Q8_0,
            seed: 42,
            n_embd: 512,
            n_layer: 6,
            n_head: 8,
            n_head_kv: 4,
            n_ff: 0,
            n_expert: 8,
            n_expert_used: 2,
            n_ff_exp: 768,
            context_length: 4096,
            sliding_window: 0,
            sliding_window_pattern: 0,
            chat_template: None,
            extra_metadata: Vec::new(),
            classifier_labels: Vec::new(),
        }
    }

    /// Large MoE for expert-offload measurements: `qwen3moe`, Q8_0, n_embd 1024, 16 heads,
    /// 4 KV heads (head dim 64), 6 layers, 16 experts of width 896 with 2 used, context 4096
    /// (about 300 MB, 280 M parameters, 94% of them in the experts).
    pub fn large_moe() -> Self {
        ModelSpec { n_embd: 1024, n_head: 16, n_head_kv: 4, n_expert: 16, n_ff_exp: 896, ..ModelSpec::bench_moe() }
    }

    /// Head dimension `n_embd / n_head` (0 when `n_head` is 0).
    pub fn head_dim(&self) -> u32 {
        self.n_embd.checked_div(self.n_head).unwrap_or(0)
    }

    /// Checks that llama.cpp can load the model and that it can be generated.
    ///
    /// Rejects (naming the field): zero sizes; `n_embd` not divisible by `n_head`; an odd head
    /// dimension (RoPE rotates pairs); `n_head` not a multiple of `n_head_kv`; for quantized
    /// weight types, an `n_embd`, `n_ff` or `n_ff_exp` that is not a multiple of 32; more than
    /// 512 layers or experts; `n_expert_used` of 0 or above `n_expert`; a `gemma3` sliding
    /// window with pattern 0; and models whose byte size overflows `u64`.
    ///
    /// A head dimension that is not a multiple of 32 is accepted: such models load, but
    /// llama.cpp refuses quantized KV caches for them, which makes them useful negative tests.
    pub fn validate(&self) -> Result<(), Error> {
        let quant = self.weight_type.is_quantized();
        let need_quant_multiple = |field: &'static str, value: u32| -> Result<(), Error> {
            if quant && !value.is_multiple_of(QK) {
                return Err(Error::invalid(
                    field,
                    format!("{field} = {value} must be a multiple of {QK} for weight type {}", self.weight_type),
                ));
            }
            Ok(())
        };
        let positive = |field: &'static str, value: u32| -> Result<(), Error> {
            if value == 0 {
                return Err(Error::invalid(field, format!("{field} must be greater than 0")));
            }
            Ok(())
        };

        positive("n_embd", self.n_embd)?;
        positive("n_layer", self.n_layer)?;
        if self.n_layer > MAX_LAYERS {
            return Err(Error::invalid(
                "n_layer",
                format!("n_layer = {} exceeds llama.cpp's limit of {MAX_LAYERS}", self.n_layer),
            ));
        }
        positive("n_head", self.n_head)?;
        positive("n_head_kv", self.n_head_kv)?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::invalid(
                "n_head",
                format!("n_embd = {} is not divisible by n_head = {}", self.n_embd, self.n_head),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::invalid(
                "n_head",
                format!("head dimension n_embd / n_head = {} must be even (RoPE rotates pairs)", self.head_dim()),
            ));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(Error::invalid(
                "n_head_kv",
                format!("n_head = {} is not a multiple of n_head_kv = {}", self.n_head, self.n_head_kv),
            ));
        }
        need_quant_multiple("n_embd", self.n_embd)?;
        positive("context_length", self.context_length)?;

        match self.arch {
            Arch::Llama | Arch::Gemma3 | Arch::Qwen3 => {
                positive("n_ff", self.n_ff)?;
                need_quant_multiple("n_ff", self.n_ff)?;
            }
            Arch::Qwen3Moe => {
                positive("n_expert", self.n_expert)?;
                if self.n_expert > MAX_EXPERTS {
                    return Err(Error::invalid(
                        "n_expert",
                        format!("n_expert = {} exceeds llama.cpp's limit of {MAX_EXPERTS}", self.n_expert),
                    ));
                }
                positive("n_expert_used", self.n_expert_used)?;
                if self.n_expert_used > self.n_expert {
                    return Err(Error::invalid(
                        "n_expert_used",
                        format!("n_expert_used = {} is larger than n_expert = {}", self.n_expert_used, self.n_expert),
                    ));
                }
                positive("n_ff_exp", self.n_ff_exp)?;
                need_quant_multiple("n_ff_exp", self.n_ff_exp)?;
            }
        }
        if self.arch == Arch::Gemma3 && self.sliding_window > 0 && self.sliding_window_pattern == 0 {
            return Err(Error::invalid(
                "sliding_window_pattern",
                "sliding_window_pattern must be at least 1 when sliding_window > 0".to_string(),
            ));
        }
        if !self.classifier_labels.is_empty() && self.arch != Arch::Qwen3 {
            return Err(Error::invalid(
                "classifier_labels",
                format!("a classifier head needs the qwen3 architecture (llama.cpp's {} loads none)", self.arch),
            ));
        }
        // Every size must be representable: the plan computes byte sizes with checked arithmetic.
        crate::writer::plan_size(self)?;
        Ok(())
    }

    /// A stable, human-readable name encoding every field that affects the file, e.g.
    /// `qwen3moe-q8_0-e512-l6-h8-kv4-x8u2-f768-c4096-s42`.
    ///
    /// Layout: `<arch>-<type>-e<n_embd>-l<n_layer>-h<n_head>-kv<n_head_kv>-<ffn>-c<context>-s<seed>`
    /// where `<ffn>` is `f<n_ff>` for `llama`, `x<n_expert>u<n_expert_used>-f<n_ff_exp>` for
    /// `qwen3moe`, `f<n_ff>-w<sliding_window>p<pattern>` for `gemma3` and `f<n_ff>` for `qwen3`;
    /// a chat template adds `-t<16 hex digits>`, the FNV-1a hash of its text (stable across
    /// platforms and versions), extra metadata `-m<16 hex digits>` and classifier labels
    /// `-r<16 hex digits>`.
    pub fn file_stem(&self) -> String {
        let ffn = match self.arch {
            Arch::Llama | Arch::Qwen3 => format!("f{}", self.n_ff),
            Arch::Qwen3Moe => format!("x{}u{}-f{}", self.n_expert, self.n_expert_used, self.n_ff_exp),
            Arch::Gemma3 => format!("f{}-w{}p{}", self.n_ff, self.sliding_window, self.sliding_window_pattern),
        };
        let template =
            self.chat_template.as_deref().map_or(String::new(), |t| format!("-t{:016x}", fnv1a(t.as_bytes())));
        // Debug output of strings, integers and bits: stable for a given list.
        let extra = if self.extra_metadata.is_empty() {
            String::new()
        } else {
            format!("-m{:016x}", fnv1a(format!("{:?}", self.extra_metadata).as_bytes()))
        };
        let labels = if self.classifier_labels.is_empty() {
            String::new()
        } else {
            format!("-r{:016x}", fnv1a(format!("{:?}", self.classifier_labels).as_bytes()))
        };
        format!(
            "{}-{}-e{}-l{}-h{}-kv{}-{}-c{}-s{}{}{}{}",
            self.arch,
            self.weight_type,
            self.n_embd,
            self.n_layer,
            self.n_head,
            self.n_head_kv,
            ffn,
            self.context_length,
            self.seed,
            template,
            extra,
            labels
        )
    }

    /// Exact size in bytes of the file [`crate::write_gguf`] writes for this spec.
    pub fn file_size(&self) -> Result<u64, Error> {
        self.validate()?;
        crate::writer::plan_size(self)
    }

    /// Total number of weights (elements of all tensors).
    pub fn n_params(&self) -> Result<u64, Error> {
        self.validate()?;
        let plan = crate::writer::tensor_plan(self)?;
        plan.iter()
            .try_fold(0u64, |acc, t| acc.checked_add(t.n_elements))
            .ok_or_else(|| Error::invalid("n_embd", "the model is too large".to_string()))
    }

    /// Whether layer `il` uses sliding-window attention in llama.cpp (always false except for
    /// `gemma3` with `sliding_window > 0`).
    pub fn is_swa_layer(&self, il: u32) -> bool {
        if self.arch != Arch::Gemma3 || self.sliding_window == 0 {
            return false;
        }
        let p = self.sliding_window_pattern;
        p == 0 || il % p < p - 1
    }
}

/// 64-bit FNV-1a: a stable hash for file names (std's hashers may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}
