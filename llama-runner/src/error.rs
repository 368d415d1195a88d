//! The one error type of this crate.

use std::path::PathBuf;

pub use crate::options::Opt;
use crate::options::{CacheType, CpuMaskError, TensorSplitError};

/// Everything that can go wrong, each variant naming what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file does not exist.
    #[error("model file {path} does not exist")]
    ModelNotFound {
        /// The path that was given.
        path: PathBuf,
    },
    /// The model file exists but cannot be read.
    #[error("model file {path} cannot be read")]
    ModelUnreadable {
        /// The path that was given.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not a GGUF model.
    #[error("{path} is not a GGUF model file ({reason})")]
    NotGguf {
        /// The path that was given.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// llama.cpp refused to load the model.
    #[error("llama.cpp could not load {path}{}", log_suffix(.log))]
    ModelLoad {
        /// The path that was given.
        path: PathBuf,
        /// The errors llama.cpp logged while loading.
        log: Vec<String>,
    },
    /// llama.cpp refused to create a context.
    #[error("llama.cpp could not create a context{}", log_suffix(.log))]
    ContextCreate {
        /// The errors llama.cpp logged.
        log: Vec<String>,
    },
    /// The context would not fit in memory ([`crate::memory`]): by llama.cpp's dry run of its
    /// buffers, or (`dry_run` false, `compute` 0) already by the bookkeeping its KV cache keeps
    /// per cell; nothing was allocated.
    #[error(
        "the context needs {} MiB of {place} memory ({}) but {} MiB are free (n_ctx {n_ctx}, {n_seq_max} \
         sequence(s)): use a smaller -c, fewer sequences or a quantized KV cache (-ctk/-ctv q8_0)",
        mib(*.needed),
        if *.dry_run {
            format!("llama.cpp's dry run: {} MiB KV cache and outputs, {} MiB compute", mib(*.context), mib(*.compute))
        } else {
            "at least, for the KV cache's bookkeeping of its cells alone".to_string()
        },
        mib(*.free)
    )]
    ContextMemory {
        /// `host`, or the device's name.
        place: String,
        /// Bytes needed there.
        needed: u64,
        /// Of which the context's own buffers (KV cache, outputs).
        context: u64,
        /// Of which compute buffers.
        compute: u64,
        /// Bytes free there.
        free: u64,
        /// The context size asked for (0: the model's).
        n_ctx: u32,
        /// Sequences asked for.
        n_seq_max: u32,
        /// Whether the numbers come from llama.cpp's dry run (else from the cell bookkeeping
        /// bound, before any dry run).
        dry_run: bool,
    },
    /// An option value is invalid or cannot be combined with the others.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option (its field in the typed options and its llama.cpp flag).
        option: Opt,
        /// The value refused, as text (`0x00`, `exps=CUDA0`, `q8_0`).
        value: String,
        /// What is wrong with it.
        reason: Reason,
    },
    /// Sampling was asked for when the last decode left no logits: on a fresh context, after
    /// `clear`, after `restore_state`, or after a failed decode.
    #[error("no logits to sample from: decode tokens first (a fresh, cleared or restored context has none)")]
    NoLogits,
    /// An input that must not be empty was.
    #[error("the {what} is empty")]
    EmptyInput {
        /// What was empty (`prompt`, `tokens to decode`).
        what: &'static str,
    },
    /// A saved state could not be restored; the cache is left empty.
    #[error("cannot restore the saved state: {reason}")]
    StateRestore {
        /// Why (what llama.cpp logged, or the mismatch found before calling it).
        reason: String,
    },
    /// A token id outside the model's vocabulary.
    #[error("token id {token} is outside the vocabulary (0..{n_vocab})")]
    InvalidToken {
        /// The id.
        token: i32,
        /// The vocabulary size.
        n_vocab: u32,
    },
    /// Text could not be tokenized.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// `llama_decode` failed.
    #[error("llama_decode failed with status {status}: {meaning}")]
    Decode {
        /// The status llama_decode returned.
        status: i32,
        /// What the status means.
        meaning: &'static str,
    },
    /// A text longer than what it is for can take ([`crate::Model::tokenize_at_most`]).
    #[error(
        "a text of {bytes} bytes{} is more than the {max_tokens} tokens it may have here",
        .n_tokens.map(|n| format!(" ({n} tokens)")).unwrap_or_else(|| " (too long to tokenize)".into())
    )]
    TextTooLong {
        /// Its length in bytes.
        bytes: usize,
        /// The most tokens it may have.
        max_tokens: usize,
        /// Its tokens, when it was tokenized (`None`: refused by its length alone).
        n_tokens: Option<usize>,
    },
    /// More tokens than the context holds.
    #[error("{needed} tokens do not fit into the context ({n_ctx} cells, {used} in use)")]
    ContextFull {
        /// Tokens to be added.
        needed: usize,
        /// Tokens already in the context.
        used: usize,
        /// Context size.
        n_ctx: u32,
    },
    /// The process-wide backend was already initialised when a once-per-process setting was made.
    #[error("{what} must be set before the llama.cpp backend is initialised (it is read once per process)")]
    AfterInit {
        /// The setting.
        what: String,
    },
    /// An environment knob asked for is not what the process environment holds
    /// ([`Backend::init`](crate::Backend::init) checks, it does not write).
    #[error("environment knob {name}: wanted {}, the environment has {}{}", show(.wanted), show(.found), ENV_HINT)]
    EnvKnob {
        /// The variable.
        name: &'static str,
        /// The value asked for (`None`: unset).
        wanted: Option<String>,
        /// The value in the environment (`None`: unset).
        found: Option<String>,
    },
    /// A llama.cpp flag (or the `LLAMA_ARG_*` variable standing for one) is unknown, lacks its
    /// value, or has a value llama.cpp would refuse.
    #[error("flag `{flag}`{}: {reason}", value_suffix(.value))]
    Flag {
        /// The flag as written (`-ctk`), or the environment variable (`LLAMA_ARG_CACHE_TYPE_K`).
        flag: String,
        /// The value given to it, if any.
        value: Option<String>,
        /// What is wrong.
        reason: crate::flags::FlagReason,
    },
    /// The llama.cpp libraries loaded at run time (feature `dynamic-link`) are of another
    /// commit than the one this crate was compiled against; nothing else was called in them.
    #[error("{}", mismatch_message(.expected, .found))]
    LibraryMismatch {
        /// The commit this program was compiled against.
        expected: &'static str,
        /// The commit the loaded libraries report (`ggml_commit()`).
        found: String,
    },
    /// A sampling option llama.cpp would abort on or mishandle ([`crate::sampling`]), refused
    /// before any C call.
    #[error("invalid sampling option `{option}` ({flag}) `{value}`: {reason}")]
    InvalidSampling {
        /// The field of [`SamplingOptions`](crate::sampling::SamplingOptions).
        option: &'static str,
        /// The llama.cpp flag that sets it.
        flag: &'static str,
        /// The value refused, as text.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// llama.cpp returned no sampler.
    #[error("llama.cpp could not create the {sampler} sampler")]
    SamplerInit {
        /// The sampler (`chain`, `dist`, `top_k`, ...).
        sampler: &'static str,
    },
    /// A [`Sampler`](crate::sampling::Sampler) was used with a context of another model than
    /// the one it was built for (its vocabulary would not match).
    #[error("the sampler was built for another model than the context's")]
    SamplerModelMismatch,
    /// The work was cancelled through a [`CancelHandle`](crate::context::CancelHandle)
    /// (llama.cpp's decode returned 2, or the cancel was seen between decode calls); the
    /// context is usable and its cache holds what it held before the cancelled call.
    #[error("cancelled")]
    Aborted,
    /// A stop string of [`StopConditions`](crate::stream::StopConditions) is empty (it would
    /// match before any text).
    #[error("a stop string is empty")]
    EmptyStopString,
    /// The model file breaks a rule of the GGUF format or of llama.cpp's loader, found before
    /// llama.cpp saw it ([`check_gguf`](crate::gguf_check::check_gguf)); some of these would
    /// abort the process inside llama.cpp.
    #[error("{path} is not a model llama.cpp can load: {problem}")]
    InvalidGguf {
        /// The path that was given.
        path: PathBuf,
        /// What is wrong, naming the byte offset, the key or the tensor.
        problem: Box<llama_gguf::Error>,
    },
    /// A batch that does not fit its allocation or the context ([`crate::batch`]), refused
    /// before llama.cpp saw it.
    #[error("invalid batch: {0}")]
    Batch(crate::batch::BatchError),
    /// A sequence operation the context cannot do ([`crate::sequences`]), refused before
    /// llama.cpp saw it.
    #[error("sequence operation refused: {0}")]
    Sequence(crate::sequences::SeqError),
    /// A model load was cancelled by its progress callback, which returned `false`
    /// ([`Model::load_with_progress`](crate::Model::load_with_progress)); llama.cpp freed what
    /// it had allocated.
    #[error("loading {path} was cancelled by its progress callback")]
    LoadCancelled {
        /// The path that was given.
        path: PathBuf,
    },
    /// The progress callback of a model load panicked. The panic was caught (it never unwinds
    /// through llama.cpp), the load was cancelled, and llama.cpp freed what it had allocated.
    #[error("the progress callback panicked while loading {path}: {message}")]
    ProgressPanicked {
        /// The path that was given.
        path: PathBuf,
        /// The panic's message (its `&str` or `String` payload).
        message: String,
    },
    /// A GBNF grammar llama.cpp would refuse (or loop, overflow its stack or abort on), found
    /// before llama.cpp saw it ([`check_gbnf`](crate::sampling::check_gbnf)), or one llama.cpp
    /// refused against the model's vocabulary.
    #[error("invalid grammar{}: {problem}", grammar_at(.at))]
    Grammar {
        /// Line and column (1-based) of the problem, for syntax errors.
        at: Option<(usize, usize)>,
        /// What is wrong.
        problem: String,
    },
    /// A JSON Schema that is not valid JSON, or that the conversion to a grammar cannot
    /// express ([`json_schema_to_gbnf`](crate::sampling::json_schema_to_gbnf)).
    #[error("JSON schema{}: {problem}", schema_at(.path))]
    JsonSchema {
        /// The JSON pointer of the offending value (`/properties/age/minimum`), empty for the
        /// document itself.
        path: String,
        /// What is wrong, naming the keyword.
        problem: String,
    },
    /// A lazy grammar's trigger that llama.cpp would refuse or abort on (an invalid regular
    /// expression, a token outside the vocabulary).
    #[error("invalid grammar trigger {trigger}: {problem}")]
    GrammarTrigger {
        /// The trigger, as given.
        trigger: String,
        /// What is wrong.
        problem: String,
    },
    /// The grammar allows no token at this point of the generation (every candidate is
    /// refused, or the only ones it allows are banned by the chain, such as end of generation
    /// with `ignore_eos`). Nothing was accepted or decoded: the context is as it was, and the
    /// sampler can be [`reset`](crate::sampling::Sampler::reset).
    #[error("the grammar allows no next token (a dead end after {accepted} accepted tokens){}", dead_end_detail(.detail))]
    GrammarDeadEnd {
        /// Tokens the grammar had accepted since it was built or reset.
        accepted: usize,
        /// llama.cpp's message, when it reported one.
        detail: Option<String>,
    },
    /// A lazy grammar with trigger patterns waited for its trigger over more text than
    /// [`MAX_PATTERN_TRIGGER_TEXT`](crate::sampling::MAX_PATTERN_TRIGGER_TEXT) bytes
    /// (llama.cpp's `std::regex` matching recurses per character of that text).
    #[error("a lazy grammar's trigger patterns found no match within {limit} bytes of generated text")]
    GrammarTriggerTextTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A file named by a grammar or schema flag (`--grammar-file`, `-jf`) cannot be read.
    #[error("{flag} {path}: cannot read the file")]
    GrammarFile {
        /// The flag.
        flag: String,
        /// The path given.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A chat template llama.cpp's built-in formatter cannot apply, or messages it cannot take
    /// ([`chat`](crate::chat)).
    #[error("chat template: {problem}")]
    ChatTemplate {
        /// What is wrong.
        problem: String,
    },
    /// An embedding or reranking call the context cannot serve ([`crate::embeddings`]), refused
    /// before llama.cpp saw it.
    #[error("embeddings: {0}")]
    Embedding(crate::embeddings::EmbedError),
    /// An importance matrix file that cannot be used ([`crate::quantize::ImportanceMatrix`]).
    #[error("importance matrix {}: {problem}", .path.display())]
    Imatrix {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A session file that cannot be written, read or restored ([`session`](crate::session)).
    #[error("session file {path}: {problem}")]
    Session {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Speculative decoding options that cannot work ([`speculative`](crate::speculative)).
    #[error("speculative decoding: {problem}")]
    Speculative {
        /// What is wrong.
        problem: String,
    },
    /// A LoRA adapter or control vector that cannot be loaded, or set on a context
    /// ([`adapter`](crate::adapter)); the checks that prevent an abort run before llama.cpp
    /// sees the file.
    #[error("adapter: {0}")]
    Adapter(crate::adapter::AdapterError),
    /// A `general.sampling.*` value of the model file that cannot be used
    /// ([`Model::sampling_defaults`](crate::Model::sampling_defaults)).
    #[error("the model's {key} = {value:?}: {problem}")]
    ModelSamplingDefault {
        /// The metadata key.
        key: String,
        /// Its value, as text.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A quantization that was refused before llama.cpp saw it, or that llama.cpp failed
    /// ([`quantize`](mod@crate::quantize)); nothing was left at the output path.
    #[error("quantize: {0}")]
    Quantize(crate::quantize::QuantizeError),
}

impl From<&llama_sys::LibraryMismatch> for Error {
    fn from(m: &llama_sys::LibraryMismatch) -> Self {
        Error::LibraryMismatch { expected: m.expected, found: m.found.clone() }
    }
}

fn mismatch_message(expected: &str, found: &str) -> String {
    llama_sys::LibraryMismatch::message(expected, found)
}

const ENV_HINT: &str = " (set it before the program starts, or use Backend::init_setting_env before any thread)";

fn show(v: &Option<String>) -> String {
    v.as_ref().map_or_else(|| "it unset".to_string(), |v| format!("`{v}`"))
}

fn value_suffix(value: &Option<String>) -> String {
    value.as_ref().map_or_else(String::new, |v| format!(" `{v}`"))
}

fn log_suffix(log: &[String]) -> String {
    if log.is_empty() { String::new() } else { format!(": {}", log.join("; ")) }
}

/// Why an option value was refused ([`Error::InvalidOption`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// An empty tensor-override pattern (it would match every tensor).
    #[error("empty pattern")]
    EmptyPattern,
    /// A tensor-override pattern that `std::regex` refuses.
    #[error("pattern `{pattern}` does not compile as a std::regex: {message}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// What `std::regex` said (a C++ exception's text, not an error value).
        message: String,
    },
    /// An override target that is not the buffer type of a registered device.
    #[error("unknown buffer type `{name}` in `{pattern}={name}`; available: {}", .available.join(", "))]
    UnknownBufferType {
        /// The override's pattern.
        pattern: String,
        /// The buffer type named.
        name: String,
        /// The buffer types `-ot` accepts on this machine.
        available: Vec<String>,
    },
    /// A device that is not an offload device of this machine.
    #[error("`{name}` {}; offload devices: {}", if *.is_cpu { "is the CPU, not an offload device" } else { "is not a device" }, offload_list(.offload))]
    NotOffloadDevice {
        /// The name given.
        name: String,
        /// Whether it names the CPU (always used, never offloaded to).
        is_cpu: bool,
        /// The offload devices there are.
        offload: Vec<String>,
    },
    /// A device name llama.cpp's registry does not know.
    #[error("no device named `{name}`; available: {}", .available.join(", "))]
    NoSuchDevice {
        /// The name given.
        name: String,
        /// Every registered device.
        available: Vec<String>,
    },
    /// A string that would be cut at a NUL byte on its way to C.
    #[error("`{value}` contains a NUL byte")]
    NulByte {
        /// The string.
        value: String,
    },
    /// A number too large for llama.cpp's C `int`.
    #[error("{value} is too large")]
    TooLarge {
        /// The number.
        value: u64,
    },
    /// Zero where at least 1 is needed.
    #[error("must be at least 1")]
    Zero,
    /// A number outside its range.
    #[error("{value} is outside {min}..={max}{}", .limit.map_or(String::new(), |l| format!(" ({l})")))]
    OutOfRange {
        /// The number.
        value: i64,
        /// The smallest allowed.
        min: i64,
        /// The largest allowed.
        max: i64,
        /// The llama.cpp constant the bound comes from, if any.
        limit: Option<&'static str>,
    },
    /// A micro-batch larger than the batch.
    #[error("{n_ubatch} is larger than n_batch (-b) {n_batch}")]
    UbatchOverBatch {
        /// `n_ubatch`.
        n_ubatch: u32,
        /// `n_batch`.
        n_batch: u32,
    },
    /// A context larger than the model's training context.
    #[error("{n_ctx} is larger than the {n_ctx_train} tokens the model was trained for")]
    ContextTooLarge {
        /// `n_ctx`.
        n_ctx: u32,
        /// The model's training context.
        n_ctx_train: u32,
    },
    /// A quantized V cache with flash attention off.
    #[error("a quantized V cache ({cache}) needs flash attention, which is off ({})", fa_off(*.auto_off_at))]
    QuantizedVNeedsFlashAttn {
        /// The V cache type.
        cache: CacheType,
        /// `Some(commit)` when flash attention is `auto`, which means off at that commit.
        auto_off_at: Option<&'static str>,
    },
    /// Split mode `tensor` with flash attention off.
    #[error("split mode `tensor` (-sm tensor) needs flash attention, which is off")]
    TensorSplitModeNeedsFlashAttn,
    /// A block-quantized cache type whose blocks do not tile the model's attention heads.
    #[error(
        "cache type {cache} has blocks of {block} values, which do not divide the model's head dimension \
         {head_dim_name} = {head_dim}; use f16, bf16 or f32"
    )]
    BlockSize {
        /// The cache type.
        cache: CacheType,
        /// Its block size.
        block: u32,
        /// llama.cpp's name of the head dimension (`n_embd_head_k`).
        head_dim_name: &'static str,
        /// The head dimension.
        head_dim: u32,
    },
    /// More tensor overrides than llama.cpp takes.
    #[error("{count} overrides, llama.cpp takes at most {max}")]
    TooManyOverrides {
        /// Overrides given (explicit ones plus those of `cpu_moe` and `n_cpu_moe`).
        count: usize,
        /// [`max_tensor_overrides`](crate::options::max_tensor_overrides).
        max: usize,
    },
    /// A bad tensor split.
    #[error(transparent)]
    TensorSplit(#[from] TensorSplitError),
    /// A bad CPU mask.
    #[error(transparent)]
    CpuMask(#[from] CpuMaskError),
    /// A value the compiled llama.cpp commit cannot express.
    #[error("`{value}` is not supported by llama.cpp {commit} (the commit this runner was built against)")]
    Unsupported {
        /// The value.
        value: String,
        /// The commit.
        commit: &'static str,
    },
}

fn grammar_at(at: &Option<(usize, usize)>) -> String {
    at.map(|(line, col)| format!(" at line {line}, column {col}")).unwrap_or_default()
}

fn schema_at(path: &str) -> String {
    if path.is_empty() { " (at the document root)".to_string() } else { format!(" at {path}") }
}

fn dead_end_detail(detail: &Option<String>) -> String {
    detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
}

fn offload_list(offload: &[String]) -> String {
    if offload.is_empty() {
        "none (this build has no GPU or other offload device; the CPU is always used)".to_string()
    } else {
        offload.join(", ")
    }
}

fn fa_off(auto_off_at: Option<&str>) -> String {
    match auto_off_at {
        None => "-fa off".to_string(),
        Some(commit) => format!("-fa auto means off at llama.cpp {commit}"),
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bytes in MiB, rounded up, for messages.
fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}
