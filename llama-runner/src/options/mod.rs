//! Typed options for everything these users tune, with llama.cpp's command-line defaults.
//!
//! The defaults are those of llama.cpp's command-line tools (`common_params`), not those of
//! `llama_context_default_params()` where the two differ:
//!
//! | option | here (= CLI) | `llama_context_default_params` |
//! |---|---|---|
//! | `swa_full` | false | true |
//! | `no_perf` | false (timings kept: `perf` true) | true |
//! | `n_ctx` | 0 (the model's training context) | 512 |
//! | `n_threads` | the number of physical cores | 4 |
//!
//! The options are plain data; with the `serde` feature, configuration files deserialize straight
//! into them.
//! They reach llama.cpp only through [`crate::params`], the one place that lowers them, after
//! [`crate::validate`] has checked them once.
//!
//! Each option enum's spellings and C value are in one table ([`names`]); each concept with rules
//! has one checked type: [`CpuMask`], [`TensorSplit`], [`DeviceKind`].

mod cpu;
pub mod names;
mod opt;
mod split;

pub use cpu::{CpuMask, CpuMaskError, MAX_CPUS, MAX_MASK_DIGITS};
pub use names::{
    CacheType, DeviceKind, FlashAttn, GpuLayers, LoadMode, NamedOption, Numa, Pooling, Priority, SplitMode, UnknownName,
};
pub use opt::Opt;
pub use split::{TensorSplit, TensorSplitError, max_devices, max_tensor_overrides};

/// Where tensors matching an override pattern are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(into = "String", try_from = "String"))]
pub enum BufferTarget {
    /// System RAM (`CPU`); llama.cpp then picks the best CPU buffer type (pinned host memory,
    /// repacked layouts) as for any CPU tensor.
    Cpu,
    /// A named device's buffer (`CUDA0`, `CUDA1`, ...).
    Device(String),
}

impl BufferTarget {
    /// The name llama.cpp uses for it.
    pub fn name(&self) -> &str {
        match self {
            BufferTarget::Cpu => "CPU",
            BufferTarget::Device(d) => d,
        }
    }
}

impl From<BufferTarget> for String {
    fn from(t: BufferTarget) -> String {
        t.name().to_string()
    }
}

impl TryFrom<String> for BufferTarget {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.trim() {
            "" => Err("empty buffer type name".into()),
            "CPU" => Ok(BufferTarget::Cpu),
            other => Ok(BufferTarget::Device(other.to_string())),
        }
    }
}

/// One tensor buffer override (`-ot PATTERN=TARGET`): tensors whose name matches `pattern`
/// (ECMAScript regex, searched anywhere in the name) are placed on `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct TensorOverride {
    /// Regular expression searched in each tensor name.
    pub pattern: String,
    /// Where matching tensors go.
    pub target: BufferTarget,
}

/// llama.cpp's regex for the expert tensors of MoE models (`LLM_FFN_EXPS_REGEX`), which `-cmoe`
/// places on the CPU. Includes `gate_up` (fused experts) as upstream does since April 2026.
pub const EXPERTS_REGEX: &str = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps";

/// The expert regex of layer `i` only, as `-ncmoe` generates it.
pub fn layer_experts_regex(i: u32) -> String {
    format!(r"blk\.{i}\.ffn_(up|down|gate|gate_up)_(ch|)exps")
}

impl TensorOverride {
    /// `pattern=CPU`.
    pub fn cpu(pattern: impl Into<String>) -> Self {
        TensorOverride { pattern: pattern.into(), target: BufferTarget::Cpu }
    }
}

/// Options for loading a model (`llama_model_params`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ModelOptions {
    /// Devices to use, by name (`-dev CUDA0,CUDA1`); `None` = all, `Some([])` = none (`-dev none`).
    pub devices: Option<Vec<String>>,
    /// Layers to offload (`-ngl`).
    pub gpu_layers: GpuLayers,
    /// Multi-GPU split (`-sm`).
    pub split_mode: SplitMode,
    /// The GPU for the whole model with split mode none (`-mg`).
    pub main_gpu: u32,
    /// Fractions of the model per GPU (`-ts 3,1`); empty = proportional to free memory.
    pub tensor_split: Vec<f32>,
    /// Tensor buffer overrides, in order; the first matching pattern wins (`-ot`).
    pub tensor_overrides: Vec<TensorOverride>,
    /// Keep all expert tensors on the CPU (`-cmoe`). Applied after `tensor_overrides`.
    pub cpu_moe: bool,
    /// Keep the expert tensors of the first N layers on the CPU (`-ncmoe N`). Applied after
    /// `tensor_overrides` and `cpu_moe`.
    pub n_cpu_moe: u32,
    /// How the file is loaded (`-lm`).
    pub load_mode: LoadMode,
    /// Allow repacked CPU buffer types such as `CPU_REPACK` (on by default; `-nr` turns it off).
    pub repack: bool,
    /// Skip pinned host buffers such as `CUDA_Host` (`--no-host`).
    pub no_host: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            devices: None,
            gpu_layers: GpuLayers::Auto,
            split_mode: SplitMode::Layer,
            main_gpu: 0,
            tensor_split: Vec::new(),
            tensor_overrides: Vec::new(),
            cpu_moe: false,
            n_cpu_moe: 0,
            load_mode: LoadMode::Mmap,
            repack: true,
            no_host: false,
        }
    }
}

impl ModelOptions {
    /// Every override in the order llama.cpp applies them: explicit ones, then `-cmoe`, then
    /// `-ncmoe` (as llama.cpp's tools append them).
    pub fn effective_overrides(&self) -> Vec<TensorOverride> {
        let mut all = self.tensor_overrides.clone();
        if self.cpu_moe {
            all.push(TensorOverride::cpu(EXPERTS_REGEX));
        }
        all.extend((0..self.n_cpu_moe).map(|i| TensorOverride::cpu(layer_experts_regex(i))));
        all
    }
}

/// Options for a context (`llama_context_params`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ContextOptions {
    /// Context size in tokens (`-c`); 0 = the model's training context (the CLI default).
    pub n_ctx: u32,
    /// Logical batch: the most tokens per `llama_decode` call (`-b`, default 2048).
    pub n_batch: u32,
    /// Physical micro-batch (`-ub`, default 512); at most `n_batch`.
    pub n_ubatch: u32,
    /// Parallel sequences (`-np`, default 1).
    pub n_seq_max: u32,
    /// Threads for generation (`-t`); `None` = the number of physical cores, as the CLI does.
    pub n_threads: Option<u32>,
    /// Threads for prompt processing (`-tb`); `None` = same as `n_threads`.
    pub n_threads_batch: Option<u32>,
    /// Flash attention (`-fa`).
    pub flash_attn: FlashAttn,
    /// K cache type (`-ctk`).
    pub type_k: CacheType,
    /// V cache type (`-ctv`); quantized types need flash attention.
    pub type_v: CacheType,
    /// Keep the KV cache on the GPU (default true; `-nkvo` turns it off).
    pub offload_kqv: bool,
    /// Offload host-resident ops (such as experts on the CPU) to the GPU for large batches
    /// (default true; `--no-op-offload` turns it off).
    pub op_offload: bool,
    /// Full-size cache for sliding-window layers (`--swa-full`; default false, as in the CLI).
    pub swa_full: bool,
    /// One KV buffer shared by all sequences (`-kvu`).
    pub kv_unified: bool,
    /// libllama's internal performance timings (`--perf` / `--no-perf`; default true, as in the
    /// CLI). The benchmark turns them off for its contexts, as llama-bench does.
    pub perf: bool,
    /// Where the CPU threads run (`-C`, `--cpu-strict`, `--prio`, `--poll`).
    pub placement: ThreadPlacement,
    /// Embedding mode (`--embeddings`; default false): every token of a decode is an output and
    /// the context keeps embeddings ([`crate::embeddings`]).
    pub embeddings: bool,
    /// How embeddings are pooled per sequence (`--pooling`; default: the model's own).
    pub pooling: Pooling,
}

/// Thread placement for the CPU backend, applied through a ggml threadpool as llama-bench does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ThreadPlacement {
    /// CPU affinity mask in hex (`-C 0xFF`: CPUs 0-7); `None` = no pinning.
    pub cpu_mask: Option<String>,
    /// Pin each thread to one CPU of the mask (`--cpu-strict 1`).
    pub strict: bool,
    /// Thread priority (`--prio`).
    pub priority: Priority,
    /// Busy-wait level 0-100 before sleeping (`--poll`, default 50).
    pub poll: u32,
}

impl Default for ThreadPlacement {
    fn default() -> Self {
        ThreadPlacement { cpu_mask: None, strict: false, priority: Priority::Normal, poll: 50 }
    }
}

impl ThreadPlacement {
    /// The CPUs of [`cpu_mask`](Self::cpu_mask), checked ([`CpuMask::parse`]); `None` = no
    /// pinning.
    pub fn cpus(&self) -> Result<Option<CpuMask>, CpuMaskError> {
        self.cpu_mask.as_deref().map(CpuMask::parse).transpose()
    }
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            n_ctx: 0,
            n_batch: 2048,
            n_ubatch: 512,
            n_seq_max: 1,
            n_threads: None,
            n_threads_batch: None,
            flash_attn: FlashAttn::Auto,
            type_k: CacheType::F16,
            type_v: CacheType::F16,
            offload_kqv: true,
            op_offload: true,
            swa_full: false,
            kv_unified: false,
            perf: true,
            placement: ThreadPlacement::default(),
            embeddings: false,
            pooling: Pooling::Unspecified,
        }
    }
}

impl ContextOptions {
    /// Generation threads after defaulting: the number of physical cores.
    pub fn threads(&self) -> u32 {
        self.n_threads.unwrap_or_else(default_threads)
    }

    /// Prompt threads after defaulting.
    pub fn threads_batch(&self) -> u32 {
        self.n_threads_batch.unwrap_or_else(|| self.threads())
    }
}

/// The CLI's default thread count: physical cores (llama.cpp's `cpu_get_num_math`), falling back
/// to the CPUs available to the process, at least 1.
pub fn default_threads() -> u32 {
    // num_cpus counts physical cores from the CPU topology and falls back to logical CPUs.
    u32::try_from(num_cpus::get_physical()).unwrap_or(u32::MAX).max(1)
}

/// Everything one run is configured with: what llama.cpp's tools take as command-line flags.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RunOptions {
    /// The model file (`-m`), if given.
    pub model_path: Option<std::path::PathBuf>,
    /// Model loading options.
    pub model: ModelOptions,
    /// Context options.
    pub context: ContextOptions,
    /// Once-per-process settings (NUMA, environment knobs).
    pub backend: crate::backend::BackendOptions,
    /// The sampler chain of generation (`--temp`, `--top-k`, `--samplers`, ...): llama.cpp's
    /// defaults unless flags or a configuration say otherwise. Measuring (the workbench's bench)
    /// decodes greedily as llama-bench does and does not use it.
    pub sampling: crate::sampling::SamplingOptions,
    /// LoRA adapters and control vectors for the run's contexts (`--lora`, `--lora-scaled`,
    /// `--control-vector`, ...): paths and scales, loaded with
    /// [`AdapterOptions::load`](AdapterOptions::load).
    pub adapters: AdapterOptions,
    /// Speculative decoding (`--spec-type`, `-md`, `--spec-draft-n-max`, ...).
    pub speculative: SpeculativeOptions,
}

/// A speculative decoding type, as `--spec-type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum SpecType {
    /// `none`.
    None,
    /// `draft-simple`: a draft model (`-md`).
    DraftSimple,
    /// `ngram-simple`: draftless n-gram lookup in the prompt and the text so far.
    NgramSimple,
    /// `ngram-map-k`: n-gram keys kept in a map, drafts cut to what was accepted last time.
    NgramMapK,
    /// `ngram-map-k4v`: as `ngram-map-k`, with the continuations after each key counted.
    NgramMapK4v,
}

impl SpecType {
    /// llama.cpp's name.
    pub fn name(self) -> &'static str {
        match self {
            SpecType::None => "none",
            SpecType::DraftSimple => "draft-simple",
            SpecType::NgramSimple => "ngram-simple",
            SpecType::NgramMapK => "ngram-map-k",
            SpecType::NgramMapK4v => "ngram-map-k4v",
        }
    }
}

/// Speculative decoding options, with llama.cpp's defaults (`common_params_speculative`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct SpeculativeOptions {
    /// The types given with `--spec-type`, in order (empty: none). A draft model alone
    /// (`-md`) means `draft-simple`.
    pub types: Vec<SpecType>,
    /// The draft model (`-md`, `--spec-draft-model`).
    pub draft_model: Option<std::path::PathBuf>,
    /// Tokens drafted per step by a draft model (`--spec-draft-n-max`, default 3).
    pub n_max: u32,
    /// Shorter drafts are not verified (`--spec-draft-n-min`, default 0).
    pub n_min: u32,
    /// A draft model's draft ends below this top probability (`--spec-draft-p-min`, default 0).
    pub p_min: f32,
    /// `ngram-simple`: the length of the n-gram looked up (`--spec-ngram-simple-size-n`,
    /// default 12).
    pub ngram_size_n: u32,
    /// `ngram-simple`: the most tokens drafted (`--spec-ngram-simple-size-m`, default 48).
    pub ngram_size_m: u32,
    /// `ngram-map-k`: `--spec-ngram-map-k-size-n`, `-size-m`, `-min-hits`.
    pub map_k: NgramMapSizes,
    /// `ngram-map-k4v`: `--spec-ngram-map-k4v-size-n`, `-size-m`, `-min-hits`.
    pub map_k4v: NgramMapSizes,
}

/// The sizes of an `ngram-map-k` / `ngram-map-k4v` drafter, with llama.cpp's defaults
/// (`common_params_speculative_ngram_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct NgramMapSizes {
    /// Length of the n-gram looked up (default 12).
    pub size_n: u32,
    /// Length of the m-gram drafted (default 48).
    pub size_m: u32,
    /// Times a key must have been seen before it drafts (`ngram-map-k4v`; default 1).
    pub min_hits: u32,
}

impl Default for NgramMapSizes {
    fn default() -> Self {
        NgramMapSizes { size_n: 12, size_m: 48, min_hits: 1 }
    }
}

impl Default for SpeculativeOptions {
    fn default() -> Self {
        SpeculativeOptions {
            types: Vec::new(),
            draft_model: None,
            n_max: 3,
            n_min: 0,
            p_min: 0.0,
            ngram_size_n: 12,
            ngram_size_m: 48,
            map_k: NgramMapSizes::default(),
            map_k4v: NgramMapSizes::default(),
        }
    }
}

impl SpeculativeOptions {
    /// The drafter these options ask for: a draft model (`draft-simple`, or `-md` alone),
    /// n-gram lookup (`ngram-simple`, `ngram-map-k`, `ngram-map-k4v`), or none. Both at once is an error (one drafter at a
    /// time here), as is `draft-simple` without a draft model, and a draft minimum above the
    /// maximum (`--spec-draft-n-min` > `--spec-draft-n-max`) or a `--spec-draft-p-min` that is
    /// not a probability (NaN included) whatever the drafter.
    pub fn drafter(&self) -> crate::Result<Option<SpecType>> {
        let bad = |problem: &str| crate::Error::Speculative { problem: problem.to_string() };
        if self.n_min > self.n_max {
            return Err(bad(&format!(
                "n_min {} (--spec-draft-n-min) is above n_max {} (--spec-draft-n-max)",
                self.n_min, self.n_max
            )));
        }
        if !(0.0..=1.0).contains(&self.p_min) {
            return Err(bad(&format!("p_min {} (--spec-draft-p-min) is not a probability (0 to 1)", self.p_min)));
        }
        let wants = |t: SpecType| self.types.contains(&t);
        let draft = wants(SpecType::DraftSimple) || (self.draft_model.is_some() && !wants(SpecType::None));
        let mut chosen: Vec<SpecType> = [SpecType::NgramSimple, SpecType::NgramMapK, SpecType::NgramMapK4v]
            .into_iter()
            .filter(|&t| wants(t))
            .collect();
        if draft {
            if self.draft_model.is_none() {
                return Err(bad("draft-simple needs a draft model (-md FILE)"));
            }
            chosen.insert(0, SpecType::DraftSimple);
        }
        match chosen[..] {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            [a, b, ..] => Err(bad(&format!("{} and {} together: one drafter at a time", a.name(), b.name()))),
        }
    }
}

/// A file with a scale: a LoRA adapter (`--lora-scaled FILE:SCALE`) or a control vector
/// (`--control-vector-scaled FILE:SCALE`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ScaledPath {
    /// The file.
    pub path: std::path::PathBuf,
    /// Its scale (1 for `--lora FILE` / `--control-vector FILE`).
    pub scale: f32,
}

/// LoRA adapters and control vectors, as llama.cpp's flags give them.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct AdapterOptions {
    /// LoRA adapters with their scales, in order (`--lora`, `--lora-scaled`).
    pub loras: Vec<ScaledPath>,
    /// Control vectors with their strengths, summed (`--control-vector`,
    /// `--control-vector-scaled`).
    pub control_vectors: Vec<ScaledPath>,
    /// The layers the control vectors apply to, first and last inclusive
    /// (`--control-vector-layer-range START END`); as in llama.cpp, a value of 0 or less means
    /// the default (layer 1, the last layer). `None`: every layer.
    pub control_vector_layers: Option<(i32, i32)>,
}

impl AdapterOptions {
    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.loras.is_empty() && self.control_vectors.is_empty()
    }
}
