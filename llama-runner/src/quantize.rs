//! Quantization of a GGUF model into another file ([`quantize`]), over llama.cpp's
//! `llama_model_quantize`, with the options of its `llama-quantize` tool.
//!
//! ```no_run
//! use llama_runner::quantize::{QuantType, QuantizeOptions, quantize};
//! use llama_runner::Backend;
//!
//! # fn main() -> llama_runner::Result<()> {
//! let options = QuantizeOptions { leave_output_tensor: true, ..QuantizeOptions::new(QuantType::Q4_K_M) };
//! let done = quantize(Backend::get()?, "model-f16.gguf", "model-q4_k_m.gguf", &options, |p| {
//!     eprint!("\r{}/{} {}", p.done, p.total, p.tensor);
//! })?;
//! println!("{} -> {} bytes in {:.1?}", done.input_bytes, done.output_bytes, done.elapsed);
//! # Ok(()) }
//! ```
//!
//! # What is checked before llama.cpp sees the files
//!
//! `llama_model_quantize` catches the C++ exceptions of its own code and returns a status, but
//! several of its paths end in a `GGML_ASSERT` or `GGML_ABORT`, which abort the process.
//! [`quantize`] refuses each of them first:
//!
//! - The input is checked as [`Model::load`](crate::Model::load) checks it: it exists, starts
//!   with the GGUF magic, and passes [`check_gguf`](crate::check_gguf)'s rules, which cover the
//!   asserts of `gguf_init_from_file` and `load_hparams` that quantization goes through.
//! - An explicit [`output_tensor_type`](QuantizeOptions::output_tensor_type) or
//!   [`token_embedding_type`](QuantizeOptions::token_embedding_type) is used by llama.cpp as
//!   given, without its fallback for shapes the type's block cannot divide: the row length must
//!   be a multiple of the block (`gguf_set_tensor_type` asserts it, and so do the IQ quantizers),
//!   else [`QuantizeError::BlockSize`].
//! - `ggml_quantize_chunk` asserts an importance matrix for IQ2_XXS, IQ2_XS and IQ1_S, and
//!   llama.cpp checks this for every tensor except `output.weight` and the token embeddings, so
//!   an explicit type of that kind there aborts: such explicit types are refused by name
//!   ([`QuantizeError::NeedsImatrix`]), with or without an importance matrix (the matrix has no
//!   values for the token embeddings, which no product reads). A target mixture that needs one
//!   is refused without [`imatrix`](QuantizeOptions::imatrix) (llama.cpp would refuse it only
//!   after minutes of work); with one, a tensor it has no values for is llama.cpp's clean
//!   refusal.
//! - An importance matrix ([`ImportanceMatrix`], llama-quantize's `--imatrix`) is read and
//!   checked in Rust; llama.cpp refuses values whose size does not match a tensor, cleanly.
//! - Types ggml cannot quantize to (`q8_K`, `q8_1`, the integer and `f64` types) fall through
//!   `ggml_quantize_chunk`'s switch to an assert: [`QuantizeError::CannotQuantizeTo`].
//! - Tensor-type patterns are compiled by `std::regex` inside llama.cpp (a bad one throws there,
//!   which is caught); they are checked first for a clearer error ([`QuantizeError::Pattern`]).
//!
//! The rest llama.cpp refuses with a caught exception, and [`quantize`] returns
//! [`QuantizeError::Failed`] with what it logged: a shape no fallback fits (a Q8_0 target for a
//! tensor whose rows are not a multiple of 32), tensor data that is not finite, a write error.
//! For a K-quant or IQ type whose 256-value blocks do not divide a tensor's rows, llama.cpp
//! falls back to a type that fits (Q4_K to Q5_0, Q6_K to Q8_0, then F16): the result names each
//! such tensor ([`Quantized::fallbacks`]).
//!
//! Refused too, for clear errors rather than a half-done run: requantizing a model that already
//! has quantized tensors without [`allow_requantize`](QuantizeOptions::allow_requantize), an
//! output that is the input (or a link to it), an output in a directory that does not exist.
//!
//! # Output
//!
//! llama.cpp writes into a temporary file beside the output (`.NAME.PID.N.part`), which is
//! renamed onto the output only after a successful run and its header check, so the output
//! path never holds a half-written file and the input is never written. A failed run (or a
//! panic of the progress callback) removes the temporary file; only a killed process can leave
//! it behind. An existing output file is replaced by a successful run and untouched otherwise.
//!
//! # Progress
//!
//! `llama_model_quantize` has no progress callback; it logs one line per tensor when the tensor
//! is written. [`quantize`] runs it on a worker thread, reads those lines (through a
//! [`Recorder`](crate::Recorder)) and calls the progress callback on the calling thread, once
//! per tensor in order. The run cannot be cancelled: llama.cpp has no way to stop it. Quantizations
//! in one process run one at a time, so that their lines do not mix.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use llama_gguf::Gguf;
use llama_sys as sys;

pub use crate::imatrix::ImportanceMatrix;

use crate::backend::Backend;
use crate::error::{Error, Result};

/// Why a quantization was refused or failed ([`Error::Quantize`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    /// A quantization type (`Q4_K_M`) or tensor type (`q8_0`) that is not known.
    #[error("unknown {what} `{value}`; known: {}", .known.join(", "))]
    UnknownType {
        /// What was being parsed (`quantization type`, `tensor type`).
        what: &'static str,
        /// The text given.
        value: String,
        /// The names accepted.
        known: Vec<String>,
    },
    /// A type or mixture that needs an importance matrix (llama-quantize's `--imatrix`): as the
    /// target without [`QuantizeOptions::imatrix`], or as an explicit tensor type, which is
    /// refused with or without one (llama.cpp aborts where the matrix has no values for a
    /// tensor it does not check, such as the token embeddings).
    #[error("{name} needs an importance matrix{}", imatrix_suffix(.option))]
    NeedsImatrix {
        /// The type (`IQ2_XXS`, `iq1_s`).
        name: String,
        /// Where it was asked for, when not as the target (`output_tensor_type
        /// (--output-tensor-type)`, a `--tensor-type` pattern).
        option: Option<String>,
    },
    /// A tensor type ggml has no quantization function for.
    #[error("ggml cannot quantize to {name} (given as {option})")]
    CannotQuantizeTo {
        /// The type.
        name: String,
        /// Where it was given.
        option: String,
    },
    /// The model already has quantized tensors and requantizing was not allowed.
    #[error(
        "{} is already quantized (tensor `{tensor}` is {type_name}); requantizing loses quality, \
         allow it with allow_requantize (--allow-requantize)", .path.display()
    )]
    Requantize {
        /// The input.
        path: PathBuf,
        /// The first quantized tensor.
        tensor: String,
        /// Its type.
        type_name: String,
    },
    /// An explicit tensor type whose blocks do not divide the tensor's rows.
    #[error(
        "tensor `{tensor}` has rows of {ncols} values, which {type_name} blocks of {block} do not divide \
         (given as {option}); llama.cpp applies no fallback to this option"
    )]
    BlockSize {
        /// The tensor.
        tensor: String,
        /// The type.
        type_name: String,
        /// Its block size.
        block: u64,
        /// The tensor's row length (`ne[0]`).
        ncols: u64,
        /// The option that asked for it.
        option: &'static str,
    },
    /// A tensor-type override llama.cpp would refuse.
    #[error("tensor type override `{text}`: {problem}")]
    Pattern {
        /// The override (`PATTERN=TYPE`, or the pattern alone).
        text: String,
        /// What is wrong.
        problem: String,
    },
    /// A thread count of 0 or beyond llama.cpp's `int32_t`.
    #[error("thread count {value} is not within 1..={}", i32::MAX)]
    Threads {
        /// The count.
        value: u32,
    },
    /// The output is the input file (the same path, or a link to it).
    #[error("the output {} is the input file", .output.display())]
    SameFile {
        /// The output path.
        output: PathBuf,
    },
    /// The output's directory does not exist.
    #[error("the directory {} of the output does not exist", .dir.display())]
    OutputDir {
        /// The directory.
        dir: PathBuf,
    },
    /// The output path is a directory.
    #[error("the output {} is a directory", .path.display())]
    OutputIsDir {
        /// The path.
        path: PathBuf,
    },
    /// The output (or its temporary file) cannot be written.
    #[error("cannot write {}", .path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// llama.cpp refused or failed the quantization; nothing was left at the output.
    #[error("llama.cpp could not quantize {}{}", .input.display(), log_suffix(.log))]
    Failed {
        /// The input.
        input: PathBuf,
        /// What llama.cpp logged about it.
        log: Vec<String>,
    },
    /// llama.cpp reported success but its output is not a GGUF file with the input's tensors.
    #[error("llama.cpp's output {} is not a quantized copy of the input: {problem}", .path.display())]
    BadOutput {
        /// The temporary file it wrote (removed).
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn imatrix_suffix(option: &Option<String>) -> String {
    match option {
        None => " (--imatrix FILE, QuantizeOptions::imatrix)".into(),
        Some(o) => format!(
            " (given as {o}): an explicit type that needs one is refused (llama.cpp aborts on a tensor the matrix has \
             no values for, such as the token embeddings); leave the choice to the target's mixture"
        ),
    }
}

fn log_suffix(log: &[String]) -> String {
    if log.is_empty() { String::new() } else { format!(": {}", log.join("; ")) }
}

impl From<QuantizeError> for Error {
    fn from(e: QuantizeError) -> Self {
        Error::Quantize(e)
    }
}

/// How far an importance matrix is needed for a target ([`QuantType`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Imatrix {
    No,
    Yes,
    /// Only for llama.cpp's mixture: IQ3_XS puts IQ3_XXS on `attn_q`, `attn_k` and middle FFN
    /// layers, while `--pure` gives every tensor IQ3_S.
    UnlessPure,
}

/// A quantization target as llama-quantize names it (`Q4_K_M`, `Q8_0`, `F16`, `COPY`): a
/// `llama_ftype`, the default tensor type and llama.cpp's mixture of types for the others.
///
/// Parsed case-insensitively from the tool's names, its aliases (`Q4_K` is `Q4_K_M`) or the
/// `llama_ftype` number, as the tool does ([`FromStr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantType {
    name: &'static str,
    ftype: sys::llama_ftype,
    imatrix: Imatrix,
}

macro_rules! quant_types {
    ($($konst:ident = $name:literal, $ftype:ident, $imatrix:ident, $doc:literal;)*) => {
        impl QuantType {
            $(
                #[doc = concat!("`", $name, "`: ", $doc, " (`", stringify!($ftype), "`).")]
                pub const $konst: QuantType = QuantType { name: $name, ftype: sys::$ftype, imatrix: Imatrix::$imatrix };
            )*
            /// Every target, in llama-quantize's order.
            pub const ALL: &'static [QuantType] = &[$(QuantType::$konst),*];
        }
    };
}

quant_types! {
    Q1_0 = "Q1_0", LLAMA_FTYPE_MOSTLY_Q1_0, No, "1.125 bits per weight";
    Q2_0 = "Q2_0", LLAMA_FTYPE_MOSTLY_Q2_0, No, "2.25 bits per weight, blocks of 64";
    Q4_0 = "Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0, No, "4-bit blocks of 32 with a scale";
    Q4_1 = "Q4_1", LLAMA_FTYPE_MOSTLY_Q4_1, No, "4-bit blocks of 32 with a scale and a minimum";
    MXFP4_MOE = "MXFP4_MOE", LLAMA_FTYPE_MOSTLY_MXFP4_MOE, No, "MXFP4 experts, Q8_0 elsewhere";
    Q5_0 = "Q5_0", LLAMA_FTYPE_MOSTLY_Q5_0, No, "5-bit blocks of 32 with a scale";
    Q5_1 = "Q5_1", LLAMA_FTYPE_MOSTLY_Q5_1, No, "5-bit blocks of 32 with a scale and a minimum";
    IQ2_XXS = "IQ2_XXS", LLAMA_FTYPE_MOSTLY_IQ2_XXS, Yes, "2.06 bits per weight, needs an importance matrix";
    IQ2_XS = "IQ2_XS", LLAMA_FTYPE_MOSTLY_IQ2_XS, Yes, "2.31 bits per weight, needs an importance matrix";
    IQ2_S = "IQ2_S", LLAMA_FTYPE_MOSTLY_IQ2_S, Yes, "2.5 bits per weight, needs an importance matrix";
    IQ2_M = "IQ2_M", LLAMA_FTYPE_MOSTLY_IQ2_M, Yes, "2.7 bits per weight, needs an importance matrix";
    IQ1_S = "IQ1_S", LLAMA_FTYPE_MOSTLY_IQ1_S, Yes, "1.56 bits per weight, needs an importance matrix";
    IQ1_M = "IQ1_M", LLAMA_FTYPE_MOSTLY_IQ1_M, Yes, "1.75 bits per weight, needs an importance matrix";
    TQ1_0 = "TQ1_0", LLAMA_FTYPE_MOSTLY_TQ1_0, No, "1.69 bits per weight ternary";
    TQ2_0 = "TQ2_0", LLAMA_FTYPE_MOSTLY_TQ2_0, No, "2.06 bits per weight ternary";
    Q2_K = "Q2_K", LLAMA_FTYPE_MOSTLY_Q2_K, No, "2-bit K-quant mixture";
    Q2_K_S = "Q2_K_S", LLAMA_FTYPE_MOSTLY_Q2_K_S, Yes, "small 2-bit K-quant mixture, needs an importance matrix";
    IQ3_XXS = "IQ3_XXS", LLAMA_FTYPE_MOSTLY_IQ3_XXS, Yes, "3.06 bits per weight, needs an importance matrix";
    IQ3_S = "IQ3_S", LLAMA_FTYPE_MOSTLY_IQ3_S, No, "3.44 bits per weight";
    IQ3_M = "IQ3_M", LLAMA_FTYPE_MOSTLY_IQ3_M, No, "3.66 bits per weight mixture";
    IQ3_XS = "IQ3_XS", LLAMA_FTYPE_MOSTLY_IQ3_XS, UnlessPure, "3.3 bits per weight, needs an importance matrix unless pure";
    Q3_K_S = "Q3_K_S", LLAMA_FTYPE_MOSTLY_Q3_K_S, No, "small 3-bit K-quant mixture";
    Q3_K_M = "Q3_K_M", LLAMA_FTYPE_MOSTLY_Q3_K_M, No, "medium 3-bit K-quant mixture (alias Q3_K)";
    Q3_K_L = "Q3_K_L", LLAMA_FTYPE_MOSTLY_Q3_K_L, No, "large 3-bit K-quant mixture";
    IQ4_NL = "IQ4_NL", LLAMA_FTYPE_MOSTLY_IQ4_NL, No, "4.50 bits per weight non-linear";
    IQ4_XS = "IQ4_XS", LLAMA_FTYPE_MOSTLY_IQ4_XS, No, "4.25 bits per weight non-linear";
    Q4_K_S = "Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S, No, "small 4-bit K-quant mixture";
    Q4_K_M = "Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M, No, "medium 4-bit K-quant mixture (alias Q4_K)";
    Q5_K_S = "Q5_K_S", LLAMA_FTYPE_MOSTLY_Q5_K_S, No, "small 5-bit K-quant mixture";
    Q5_K_M = "Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M, No, "medium 5-bit K-quant mixture (alias Q5_K)";
    Q6_K = "Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K, No, "6-bit K-quant";
    Q8_0 = "Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0, No, "8-bit blocks of 32 with a scale";
    F16 = "F16", LLAMA_FTYPE_MOSTLY_F16, No, "half precision";
    BF16 = "BF16", LLAMA_FTYPE_MOSTLY_BF16, No, "bfloat16";
    F32 = "F32", LLAMA_FTYPE_ALL_F32, No, "32-bit floats";
    COPY = "COPY", LLAMA_FTYPE_ALL_F32, No, "only copies the tensors, converting nothing";
}

/// llama-quantize's aliases.
const ALIASES: &[(&str, QuantType)] =
    &[("Q3_K", QuantType::Q3_K_M), ("Q4_K", QuantType::Q4_K_M), ("Q5_K", QuantType::Q5_K_M)];

impl QuantType {
    /// llama-quantize's name (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        self.name
    }

    /// The `llama_ftype` written to the output's `general.file_type` (for [`QuantType::COPY`]
    /// the input's is kept).
    pub fn ftype(self) -> u32 {
        self.ftype
    }

    /// Whether llama.cpp needs an importance matrix for this target (with `pure` as given).
    pub fn needs_imatrix(self, pure: bool) -> bool {
        match self.imatrix {
            Imatrix::No => false,
            Imatrix::Yes => true,
            Imatrix::UnlessPure => !pure,
        }
    }

    fn is_copy(self) -> bool {
        self.name == "COPY"
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for QuantType {
    type Err = Error;

    /// The tool's names and aliases, any case, or a `llama_ftype` number (0 is `F32`).
    fn from_str(s: &str) -> Result<QuantType> {
        let by_name = QuantType::ALL
            .iter()
            .copied()
            .find(|t| t.name.eq_ignore_ascii_case(s))
            .or_else(|| ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(s)).map(|(_, t)| *t));
        let by_number = || {
            let n: u32 = s.trim().parse().ok()?;
            QuantType::ALL.iter().copied().find(|t| t.ftype == n && !t.is_copy())
        };
        by_name.or_else(by_number).ok_or_else(|| {
            let mut known: Vec<String> = QuantType::ALL.iter().map(|t| t.name.to_string()).collect();
            known.extend(ALIASES.iter().map(|(a, _)| a.to_string()));
            QuantizeError::UnknownType { what: "quantization type", value: s.to_string(), known }.into()
        })
    }
}

/// A tensor type (`ggml_type`) by ggml's name (`q8_0`, `q4_K`, `f16`), for
/// [`QuantizeOptions::output_tensor_type`], [`QuantizeOptions::token_embedding_type`] and
/// [`TensorTypeOverride`]s. Parsed case-insensitively, as llama-quantize does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorType(llama_gguf::GgmlType);

/// Types ggml's `ggml_quantize_chunk` can write without an importance matrix.
const QUANTIZABLE: &[&str] = &[
    "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq3_s",
    "iq4_nl", "iq4_xs", "tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0",
];

/// Types llama.cpp (or ggml, which asserts) wants an importance matrix for.
const NEEDS_IMATRIX: &[&str] = &["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq1_s", "iq1_m"];

impl TensorType {
    /// The type with this `ggml_type` id, if the pinned ggml has it.
    pub fn from_id(id: u32) -> Option<TensorType> {
        llama_gguf::ggml_type(id).map(TensorType)
    }

    /// ggml's name (`q4_K`).
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// The `ggml_type` id.
    pub fn id(self) -> u32 {
        self.0.id
    }

    /// Values per block (1 for `f16`, 32 for `q8_0`, 256 for the K-quants).
    pub fn block_len(self) -> u64 {
        self.0.block_len
    }

    /// Whether it is block-quantized (ggml's `ggml_is_quantized`).
    pub fn is_quantized(self) -> bool {
        self.0.block_len > 1
    }

    /// Why ggml cannot write this type without an importance matrix, if it cannot.
    fn check_target(self, option: &str) -> std::result::Result<(), QuantizeError> {
        if NEEDS_IMATRIX.contains(&self.name()) {
            return Err(QuantizeError::NeedsImatrix {
                name: self.name().to_string(),
                option: Some(option.to_string()),
            });
        }
        if !QUANTIZABLE.contains(&self.name()) {
            return Err(QuantizeError::CannotQuantizeTo { name: self.name().to_string(), option: option.to_string() });
        }
        Ok(())
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TensorType {
    type Err = Error;

    fn from_str(s: &str) -> Result<TensorType> {
        (0..64).filter_map(TensorType::from_id).find(|t| t.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let known = (0..64).filter_map(TensorType::from_id).map(|t| t.name().to_string()).collect();
            QuantizeError::UnknownType { what: "tensor type", value: s.to_string(), known }.into()
        })
    }
}

/// One `--tensor-type PATTERN=TYPE`: tensors whose name `PATTERN` is found in (`std::regex`
/// search, ECMAScript) get `TYPE`; the first matching override wins. llama.cpp applies them
/// only when the target's default type is quantized (not for F16, BF16, F32 or COPY), and
/// still applies its fallback for shapes the type does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorTypeOverride {
    /// The pattern, used as given (parsing `PATTERN=TYPE` lowercases it, as llama-quantize does).
    pub pattern: String,
    /// The type.
    pub tensor_type: TensorType,
}

impl FromStr for TensorTypeOverride {
    type Err = Error;

    /// `PATTERN=TYPE` as llama-quantize parses it: split at the first `=`, the pattern
    /// lowercased.
    fn from_str(s: &str) -> Result<TensorTypeOverride> {
        let bad = |problem: &str| Error::from(QuantizeError::Pattern { text: s.to_string(), problem: problem.into() });
        let (pattern, ty) = s.split_once('=').ok_or_else(|| bad("not PATTERN=TYPE"))?;
        if pattern.is_empty() {
            return Err(bad("missing tensor name pattern"));
        }
        if ty.is_empty() {
            return Err(bad("missing tensor type"));
        }
        Ok(TensorTypeOverride { pattern: pattern.to_lowercase(), tensor_type: ty.parse()? })
    }
}

impl std::fmt::Display for TensorTypeOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.pattern, self.tensor_type)
    }
}

/// What [`quantize`] does: llama-quantize's options (without split outputs, pruning and
/// metadata overrides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// The target (the tool's `TYPE` argument).
    pub target: QuantType,
    /// Allow converting tensors that are already quantized (`--allow-requantize`); the quality
    /// is worse than quantizing from 16 or 32 bits.
    pub allow_requantize: bool,
    /// Copy `output.weight` as it is (`--leave-output-tensor`).
    pub leave_output_tensor: bool,
    /// Give every tensor the target's default type instead of llama.cpp's mixture (`--pure`);
    /// the output and token embedding types and the fallbacks for shapes still apply.
    pub pure: bool,
    /// The type of `output.weight` (`--output-tensor-type`).
    pub output_tensor_type: Option<TensorType>,
    /// The type of the token embeddings, `token_embd.weight` (`--token-embedding-type`).
    pub token_embedding_type: Option<TensorType>,
    /// Per-tensor types (`--tensor-type PATTERN=TYPE`, repeatable), the first match winning.
    pub tensor_types: Vec<TensorTypeOverride>,
    /// Worker threads (the tool's `nthreads`); `None`: one per hardware thread.
    pub n_threads: Option<u32>,
    /// An importance matrix (`--imatrix FILE`, with `--include-weights` / `--exclude-weights`
    /// applied by [`ImportanceMatrix::retain`]); recorded in the output's metadata as
    /// llama-quantize records it (`quantize.imatrix.*`).
    pub imatrix: Option<std::sync::Arc<ImportanceMatrix>>,
}

impl QuantizeOptions {
    /// Options for `target`, everything else as llama-quantize's defaults.
    pub fn new(target: QuantType) -> QuantizeOptions {
        QuantizeOptions {
            target,
            allow_requantize: false,
            leave_output_tensor: false,
            pure: false,
            output_tensor_type: None,
            token_embedding_type: None,
            tensor_types: Vec::new(),
            n_threads: None,
            imatrix: None,
        }
    }
}

impl Default for QuantizeOptions {
    /// Q8_0, llama.cpp's default target (`llama_model_quantize_default_params`).
    fn default() -> Self {
        QuantizeOptions::new(QuantType::Q8_0)
    }
}

/// Where a [`quantize`] run stands: passed to its callback once per tensor written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantizeProgress {
    /// Tensors written so far (1 to `total`).
    pub done: usize,
    /// Tensors in the model.
    pub total: usize,
    /// The tensor just written.
    pub tensor: String,
    /// Bytes of input tensor data processed so far.
    pub bytes_done: u64,
    /// Bytes of tensor data in the input.
    pub bytes_total: u64,
}

/// One tensor of a finished quantization ([`Quantized::tensors`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantizedTensor {
    /// Its name.
    pub name: String,
    /// Its type in the input (ggml's name).
    pub from: String,
    /// Its type in the output.
    pub to: String,
    /// Its size in the input, in bytes.
    pub bytes_before: u64,
    /// Its size in the output, in bytes.
    pub bytes_after: u64,
}

/// A tensor llama.cpp gave another type than its mixture chose, because that type's blocks do
/// not divide the tensor's rows ([`Quantized::fallbacks`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// The tensor.
    pub tensor: String,
    /// The type chosen first (`q4_K`).
    pub wanted: String,
    /// The type used (`q5_0`, or `f16` when no quantized type fits).
    pub used: String,
}

/// What [`quantize`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    /// The input file.
    pub input: PathBuf,
    /// The output file, now in place.
    pub output: PathBuf,
    /// The target.
    pub target: QuantType,
    /// Size of the input file, in bytes.
    pub input_bytes: u64,
    /// Size of the output file, in bytes.
    pub output_bytes: u64,
    /// Every tensor, in the output's order, with its types and sizes.
    pub tensors: Vec<QuantizedTensor>,
    /// Tensors whose type was changed to fit their shape (llama.cpp's warnings).
    pub fallbacks: Vec<Fallback>,
    /// How long llama.cpp took.
    pub elapsed: Duration,
}

impl Quantized {
    /// Bytes of tensor data in the input.
    pub fn tensor_bytes_before(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_before).sum()
    }

    /// Bytes of tensor data in the output.
    pub fn tensor_bytes_after(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_after).sum()
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&QuantizedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// How many output tensors have each type, the most frequent first (ties by name).
    pub fn type_counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for t in &self.tensors {
            match counts.iter_mut().find(|(n, _)| *n == t.to) {
                Some((_, c)) => *c += 1,
                None => counts.push((t.to.clone(), 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts
    }
}

/// Quantizations in this process run one at a time (their progress is read from llama.cpp's
/// log, which all threads share).
static QUANTIZE_LOCK: Mutex<()> = Mutex::new(());

/// Quantizes the model at `input` into `output` with `options`, calling `progress` on this
/// thread after each tensor is written (see the [module](self) docs for what is checked first
/// and how the output is written).
///
/// Errors: the input's, as [`Model::load`](crate::Model::load) gives them
/// ([`Error::ModelNotFound`], [`Error::NotGguf`], [`Error::InvalidGguf`],
/// [`Error::ModelUnreadable`]); [`Error::Quantize`] for the options, the output path and
/// llama.cpp's own refusals. On any error nothing is left at `output` (a file that was there
/// is untouched).
pub fn quantize(
    _backend: &Backend,
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    options: &QuantizeOptions,
    mut progress: impl FnMut(&QuantizeProgress),
) -> Result<Quantized> {
    let (input, output) = (input.as_ref().to_path_buf(), output.as_ref().to_path_buf());
    let header = check_input(&input)?;
    let lowered = check_options(options)?;
    check_model(&input, &header, options)?;
    check_output(&input, &output)?;
    let c_input = c_string(&input, |source| Error::ModelUnreadable { path: input.clone(), source })?;
    let _serial = QUANTIZE_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let temp = TempFile::create(&output)?;
    let c_temp = c_string(&temp.path, |source| QuantizeError::Output { path: temp.path.clone(), source }.into())?;
    let sizes: std::collections::HashMap<&str, u64> =
        header.tensors().iter().map(|t| (t.name.as_str(), t.nbytes().unwrap_or(0))).collect();
    let mut reader = LogReader {
        total: header.tensors().len(),
        bytes_total: sizes.values().sum(),
        sizes,
        seen: 0,
        done: 0,
        bytes_done: 0,
        fallbacks: Vec::new(),
        failure: Vec::new(),
    };
    let recorder = crate::Recorder::start();
    let started = Instant::now();
    let (status, errors) = std::thread::scope(|s| {
        let worker = s.spawn(|| run_llama(&c_input, &c_temp, &lowered));
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(25));
            reader.read(&recorder.lines(), &mut progress);
        }
        match worker.join() {
            Ok(result) => result,
            // A panic of the application's logger, resumed on the worker: resumed here too.
            Err(payload) => std::panic::resume_unwind(payload),
        }
    });
    let elapsed = started.elapsed();
    reader.read(&recorder.lines(), &mut progress);
    drop(recorder);
    if status != 0 {
        // llama.cpp pads names into columns; one space between words reads better in a message.
        let mut log: Vec<String> = Vec::new();
        for line in errors.iter().chain(&reader.failure) {
            let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
            if !log.contains(&line) {
                log.push(line);
            }
        }
        return Err(QuantizeError::Failed { input, log }.into());
    }
    let tensors = compare(&header, &temp.path)?;
    let written = std::fs::File::open(&temp.path).and_then(|f| f.sync_all().and_then(|()| f.metadata()));
    let output_bytes = written.map_err(|source| QuantizeError::Output { path: temp.path.clone(), source })?.len();
    temp.persist(&output)?;
    Ok(Quantized {
        input,
        output,
        target: options.target,
        input_bytes: header.file_size(),
        output_bytes,
        tensors,
        fallbacks: reader.fallbacks,
        elapsed,
    })
}

/// The options as llama.cpp takes them (all `Send`, lowered to the C struct on the worker).
struct Lowered {
    ftype: sys::llama_ftype,
    nthread: i32,
    output_tensor_type: sys::ggml_type,
    token_embedding_type: sys::ggml_type,
    allow_requantize: bool,
    quantize_output_tensor: bool,
    only_copy: bool,
    pure: bool,
    overrides: Vec<(CString, sys::ggml_type)>,
    imatrix: Option<std::sync::Arc<ImportanceMatrix>>,
}

/// Runs `llama_model_quantize` on this (worker) thread: its status and the errors it logged.
fn run_llama(input: &CString, output: &CString, lowered: &Lowered) -> (u32, Vec<String>) {
    let mut overrides: Vec<sys::llama_model_tensor_override> = lowered
        .overrides
        .iter()
        .map(|(p, t)| sys::llama_model_tensor_override { pattern: p.as_ptr(), type_: *t })
        .collect();
    // llama.cpp reads the array up to the entry with a null pattern.
    overrides.push(sys::llama_model_tensor_override { pattern: std::ptr::null(), type_: sys::GGML_TYPE_COUNT });
    // SAFETY: returns a plain struct by value.
    let mut params = unsafe { sys::llama_model_quantize_default_params() };
    params.nthread = lowered.nthread;
    params.ftype = lowered.ftype;
    params.output_tensor_type = lowered.output_tensor_type;
    params.token_embedding_type = lowered.token_embedding_type;
    params.allow_requantize = lowered.allow_requantize;
    params.quantize_output_tensor = lowered.quantize_output_tensor;
    params.only_copy = lowered.only_copy;
    params.pure_ = lowered.pure;
    if lowered.overrides.is_empty() {
        params.tt_overrides = std::ptr::null();
    } else {
        params.tt_overrides = overrides.as_ptr();
    }
    // The matrix as llama.cpp reads it (up to the entry with a null name), and the metadata
    // llama-quantize writes with it (up to the entry with an empty key).
    let mut imatrix: Vec<sys::llama_model_imatrix_data> = match &lowered.imatrix {
        Some(m) => m
            .entries()
            .iter()
            .map(|(name, v)| sys::llama_model_imatrix_data { name: name.as_ptr(), data: v.as_ptr(), size: v.len() })
            .collect(),
        None => Vec::new(),
    };
    let mut kv: Vec<sys::llama_model_kv_override> = Vec::new();
    if let Some(m) = &lowered.imatrix {
        imatrix.push(sys::llama_model_imatrix_data { name: std::ptr::null(), data: std::ptr::null(), size: 0 });
        params.imatrix = imatrix.as_ptr();
        kv.push(kv_str("quantize.imatrix.file", m.file().to_string_lossy().as_bytes()));
        if let Some(d) = m.datasets().first() {
            kv.push(kv_str("quantize.imatrix.dataset", d.as_bytes()));
        }
        kv.push(kv_int("quantize.imatrix.entries_count", m.len() as i64));
        if m.chunk_count() > 0 {
            kv.push(kv_int("quantize.imatrix.chunks_count", i64::from(m.chunk_count())));
        }
        kv.push(kv_int("", 0));
        params.kv_overrides = kv.as_ptr();
    }
    crate::logging::clear_errors();
    // SAFETY: both paths are NUL-terminated strings; `params` and the arrays it points to
    // (overrides, importance matrix and metadata, each terminated as llama.cpp reads it, their
    // strings and values owned by `lowered` and `kv`) live until the call returns, and llama.cpp
    // keeps no pointer into them afterwards. The input passed the GGUF checks and
    // the options the checks of this module (see the module docs), which rule out the asserts
    // on this path; every C++ exception is caught inside and turned into status 1.
    let status = unsafe { sys::llama_model_quantize(input.as_ptr(), output.as_ptr(), &params) };
    let errors = crate::logging::take_errors();
    crate::logging::resume_panic();
    (status, errors)
}

/// A string metadata override, as llama-quantize fills one (`strncpy` of at most 127 bytes).
fn kv_str(key: &str, value: &[u8]) -> sys::llama_model_kv_override {
    let mut o = kv_int(key, 0);
    o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_STR;
    let mut s = [0 as std::ffi::c_char; 128];
    for (d, &b) in s.iter_mut().zip(value.iter().take(127)) {
        *d = b as std::ffi::c_char;
    }
    o.__bindgen_anon_1.val_str = s;
    o
}

/// An integer metadata override (an empty key ends the list).
fn kv_int(key: &str, value: i64) -> sys::llama_model_kv_override {
    let mut k = [0 as std::ffi::c_char; 128];
    for (d, &b) in k.iter_mut().zip(key.as_bytes().iter().take(127)) {
        *d = b as std::ffi::c_char;
    }
    sys::llama_model_kv_override {
        tag: sys::LLAMA_KV_OVERRIDE_TYPE_INT,
        key: k,
        __bindgen_anon_1: sys::llama_model_kv_override__bindgen_ty_1 { val_i64: value },
    }
}

/// Reads llama.cpp's per-tensor lines as they arrive.
struct LogReader<'h> {
    total: usize,
    sizes: std::collections::HashMap<&'h str, u64>,
    bytes_total: u64,
    /// Lines of the recorder already read.
    seen: usize,
    done: usize,
    bytes_done: u64,
    fallbacks: Vec<Fallback>,
    /// Lines reporting the failure.
    failure: Vec<String>,
}

impl LogReader<'_> {
    fn read(&mut self, lines: &[String], progress: &mut impl FnMut(&QuantizeProgress)) {
        for line in lines.get(self.seen..).unwrap_or_default() {
            if let Some(f) = parse_fallback(line) {
                self.fallbacks.push(f);
            }
            if line.contains("failed to quantize") {
                self.failure.push(line.clone());
            }
            let Some((done, total, tensor)) = parse_tensor_line(line) else { continue };
            // Only the lines of this run: numbered in order, over this model's tensor count.
            if total != self.total || done != self.done + 1 {
                continue;
            }
            self.done = done;
            self.bytes_done += self.sizes.get(tensor).copied().unwrap_or(0);
            progress(&QuantizeProgress {
                done,
                total,
                tensor: tensor.to_string(),
                bytes_done: self.bytes_done,
                bytes_total: self.bytes_total,
            });
        }
        self.seen = lines.len();
    }
}

/// `[  12/ 201] blk.0.attn_q.weight - [4096, 4096, 1, 1], type = f16, ...`: (12, 201, name).
fn parse_tensor_line(line: &str) -> Option<(usize, usize, &str)> {
    let (counts, rest) = line.strip_prefix('[')?.split_once(']')?;
    let (done, total) = counts.split_once('/')?;
    let (done, total) = (done.trim().parse().ok()?, total.trim().parse().ok()?);
    let (name, _) = rest.split_once(" - [")?;
    Some((done, total, name.trim()))
}

/// `warning: NAME - ncols 128 not divisible by 256 (required for type q4_K) -> falling back to q5_0`.
fn parse_fallback(line: &str) -> Option<Fallback> {
    let rest = line.strip_prefix("warning: ")?;
    let (tensor, rest) = rest.split_once(" - ncols")?;
    let (_, rest) = rest.split_once("(required for type ")?;
    let (wanted, rest) = rest.split_once(')')?;
    let (_, used) = rest.split_once("-> falling back to ")?;
    Some(Fallback { tensor: tensor.trim().into(), wanted: wanted.trim().into(), used: used.trim().into() })
}

/// The input as `Model::load` checks it: exists, is GGUF, passes the validator.
fn check_input(path: &Path) -> Result<Gguf> {
    crate::model::check_file(path)?;
    llama_gguf::check_file(path).map_err(|problem| match problem {
        llama_gguf::Error::Io { source, .. } => Error::ModelUnreadable { path: path.to_path_buf(), source },
        problem => Error::InvalidGguf { path: path.to_path_buf(), problem: Box::new(problem) },
    })
}

/// The checks that need only the options.
fn check_options(o: &QuantizeOptions) -> Result<Lowered> {
    if o.target.needs_imatrix(o.pure) && o.imatrix.as_ref().is_none_or(|m| m.is_empty()) {
        return Err(QuantizeError::NeedsImatrix { name: o.target.name().to_string(), option: None }.into());
    }
    let nthread = match o.n_threads {
        None => 0,
        Some(n) => match i32::try_from(n) {
            Ok(n) if n > 0 => n,
            _ => return Err(QuantizeError::Threads { value: n }.into()),
        },
    };
    if let Some(t) = o.output_tensor_type {
        t.check_target("output_tensor_type (--output-tensor-type)")?;
    }
    if let Some(t) = o.token_embedding_type {
        t.check_target("token_embedding_type (--token-embedding-type)")?;
    }
    let mut overrides = Vec::with_capacity(o.tensor_types.len());
    for ov in &o.tensor_types {
        let bad = |problem: String| QuantizeError::Pattern { text: ov.to_string(), problem };
        if ov.pattern.is_empty() {
            return Err(bad("missing tensor name pattern".into()).into());
        }
        ov.tensor_type.check_target(&format!("--tensor-type {ov}"))?;
        crate::regex::check(&ov.pattern).map_err(bad)?;
        let pattern = CString::new(ov.pattern.as_str()).map_err(|_| bad("the pattern contains a NUL byte".into()))?;
        overrides.push((pattern, ov.tensor_type.id()));
    }
    let unset = sys::GGML_TYPE_COUNT;
    Ok(Lowered {
        ftype: o.target.ftype,
        nthread,
        output_tensor_type: o.output_tensor_type.map_or(unset, TensorType::id),
        token_embedding_type: o.token_embedding_type.map_or(unset, TensorType::id),
        allow_requantize: o.allow_requantize,
        quantize_output_tensor: !o.leave_output_tensor,
        only_copy: o.target.is_copy(),
        pure: o.pure,
        overrides,
        imatrix: o.imatrix.clone().filter(|m| !m.is_empty()),
    })
}

/// `ggml_n_dims`: dimensions up to the last one larger than 1.
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// The checks of the options against the model's tensors.
fn check_model(path: &Path, header: &Gguf, o: &QuantizeOptions) -> Result<()> {
    if o.target.is_copy() {
        return Ok(());
    }
    for t in header.tensors() {
        let Some(ty) = TensorType::from_id(t.ggml_type) else { continue };
        if n_dims(&t.dims) < 2 || !t.name.ends_with("weight") {
            continue;
        }
        if ty.is_quantized() && !o.allow_requantize {
            let (tensor, type_name) = (t.name.clone(), ty.name().to_string());
            return Err(QuantizeError::Requantize { path: path.to_path_buf(), tensor, type_name }.into());
        }
        let explicit = match t.name.as_str() {
            "output.weight" if !o.leave_output_tensor => {
                o.output_tensor_type.map(|ty| (ty, "output_tensor_type (--output-tensor-type)"))
            }
            "token_embd.weight" | "per_layer_token_embd.weight" => {
                o.token_embedding_type.map(|ty| (ty, "token_embedding_type (--token-embedding-type)"))
            }
            _ => None,
        };
        if let Some((want, option)) = explicit {
            let ncols = t.dims.first().copied().unwrap_or(1);
            if !ncols.is_multiple_of(want.block_len()) {
                return Err(QuantizeError::BlockSize {
                    tensor: t.name.clone(),
                    type_name: want.name().to_string(),
                    block: want.block_len(),
                    ncols,
                    option,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// The output must not be the input, nor a directory, and its directory must exist.
fn check_output(input: &Path, output: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(output) {
        if meta.is_dir() {
            return Err(QuantizeError::OutputIsDir { path: output.to_path_buf() }.into());
        }
        if same_file(input, output) {
            return Err(QuantizeError::SameFile { output: output.to_path_buf() }.into());
        }
    }
    let dir = parent_dir(output);
    if !dir.is_dir() {
        return Err(QuantizeError::OutputDir { dir }.into());
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(a: &Path, b: &Path) -> bool {
    matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn c_string(path: &Path, err: impl FnOnce(std::io::Error) -> Error) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte")))
}

/// Pairs the output's tensors with the input's: every input tensor must be there, once.
fn compare(input: &Gguf, written: &Path) -> Result<Vec<QuantizedTensor>> {
    let bad = |problem: String| Error::from(QuantizeError::BadOutput { path: written.to_path_buf(), problem });
    let out = llama_gguf::check_file(written).map_err(|e| bad(e.to_string()))?;
    if out.tensors().len() != input.tensors().len() {
        return Err(bad(format!("{} tensors, the input has {}", out.tensors().len(), input.tensors().len())));
    }
    let name = |id: u32| TensorType::from_id(id).map_or_else(|| format!("type {id}"), |t| t.name().to_string());
    out.tensors()
        .iter()
        .map(|t| {
            let before =
                input.tensor(&t.name).ok_or_else(|| bad(format!("tensor `{}` is not in the input", t.name)))?;
            Ok(QuantizedTensor {
                name: t.name.clone(),
                from: name(before.ggml_type),
                to: name(t.ggml_type),
                bytes_before: before.nbytes().unwrap_or(0),
                bytes_after: t.nbytes().unwrap_or(0),
            })
        })
        .collect()
}

/// The temporary file llama.cpp writes into: removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Creates (exclusively) a new empty file beside `output`.
    fn create(output: &Path) -> Result<TempFile> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = parent_dir(output);
        let name = output.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
        loop {
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!(".{name}.{}.{n}.part", std::process::id()));
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(TempFile { path, keep: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(QuantizeError::Output { path, source }.into()),
            }
        }
    }

    /// Renames the file onto `output`.
    fn persist(mut self, output: &Path) -> Result<()> {
        std::fs::rename(&self.path, output)
            .map_err(|source| QuantizeError::Output { path: output.to_path_buf(), source })?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_the_tool_parses_them() {
        assert_eq!("q4_k_m".parse::<QuantType>().unwrap(), QuantType::Q4_K_M);
        assert_eq!("Q4_K".parse::<QuantType>().unwrap(), QuantType::Q4_K_M);
        assert_eq!("7".parse::<QuantType>().unwrap(), QuantType::Q8_0);
        assert_eq!("0".parse::<QuantType>().unwrap(), QuantType::F32);
        assert_eq!("copy".parse::<QuantType>().unwrap(), QuantType::COPY);
        assert!("Q4_K_XL".parse::<QuantType>().unwrap_err().to_string().contains("Q4_K_M"));
        assert_eq!("Q4_k".parse::<TensorType>().unwrap().name(), "q4_K");
        assert_eq!("f16".parse::<TensorType>().unwrap().block_len(), 1);
        assert!("q4_2".parse::<TensorType>().is_err());
        let ov: TensorTypeOverride = "ATTN_Q=q8_0".parse().unwrap();
        assert_eq!((ov.pattern.as_str(), ov.tensor_type.name()), ("attn_q", "q8_0"));
        assert!("=q8_0".parse::<TensorTypeOverride>().is_err());
        assert!("attn_q=".parse::<TensorTypeOverride>().is_err());
        assert!("attn_q".parse::<TensorTypeOverride>().is_err());
        assert!("a=b=q8_0".parse::<TensorTypeOverride>().is_err(), "the type is `b=q8_0`");
    }

    #[test]
    fn options_that_would_abort_are_refused() {
        let with = |f: fn(&mut QuantizeOptions)| {
            let mut o = QuantizeOptions::default();
            f(&mut o);
            check_options(&o).err().map(|e| e.to_string())
        };
        assert!(with(|_| ()).is_none());
        assert!(with(|o| o.target = QuantType::IQ2_XXS).unwrap().contains("IQ2_XXS needs an importance matrix"));
        assert!(with(|o| o.target = QuantType::IQ3_XS).is_some());
        assert!(with(|o| (o.target, o.pure) = (QuantType::IQ3_XS, true)).is_none());
        assert!(with(|o| o.output_tensor_type = "iq2_xxs".parse().ok()).unwrap().contains("--output-tensor-type"));
        assert!(with(|o| o.token_embedding_type = "q8_K".parse().ok()).unwrap().contains("cannot quantize to q8_K"));
        assert!(with(|o| o.tensor_types = vec!["ffn_(=q4_0".parse().unwrap()]).unwrap().contains("ffn_("));
        assert!(with(|o| o.n_threads = Some(0)).is_some());
    }

    #[test]
    fn log_lines_are_read() {
        let line = "[   3/  12]                blk.0.attn_q.weight - [  128,   128,     1,     1], type =    f16, \
                    converting to q8_0 .. size =     0.03 MiB ->     0.02 MiB";
        assert_eq!(parse_tensor_line(line), Some((3, 12, "blk.0.attn_q.weight")));
        let warn = "warning: blk.0.attn_q.weight                  - ncols    128 not divisible by 256 (required for \
                    type    q4_K) -> falling back to    q5_0";
        let f = parse_fallback(warn).unwrap();
        assert_eq!((f.tensor.as_str(), f.wanted.as_str(), f.used.as_str()), ("blk.0.attn_q.weight", "q4_K", "q5_0"));
    }
}
