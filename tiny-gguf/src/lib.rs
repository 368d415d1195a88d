//! Deterministic generator of small, randomly initialised GGUF models that llama.cpp loads,
//! tokenizes with and greedy-generates from.
//!
//! A [`ModelSpec`] fixes everything about a model: architecture ([`Arch`]: dense `llama`,
//! Mixture-of-Experts `qwen3moe`, sliding-window `gemma3`), weight type ([`WeightType`]),
//! dimensions and seed. The same spec always produces the same bytes, on every platform.
//!
//! * Vocabulary: a SentencePiece-style (`llama`) tokenizer with `<unk>` (0), `<s>` (1), `</s>` (2)
//!   the 256 byte tokens `<0x00>`..`<0xFF>` (ids 3 to 258, see [`byte_token`]), so any text
//!   tokenizes byte by byte, and the word boundary `▁` (259), so spaces round-trip.
//! * Weights: normal(0, 0.02) from ChaCha8 (every tensor has its own stream); norm weights 1.0;
//!   1-D tensors and the MoE router in F32; matrices in the spec's weight type. `output.weight`
//!   is separate from `token_embd.weight`.
//! * Layout: GGUF v3, `general.alignment` 32, every tensor offset aligned.
//!
//! Generation streams the tensors to disk, in parallel chunks, and is fast in optimised builds:
//! the 65 MB [`ModelSpec::bench_moe`] takes about a second on one core.
//!
//! # Example
//!
//! ```
//! use tiny_gguf::{ModelSpec, WeightType, cached, read_header};
//!
//! # fn main() -> Result<(), tiny_gguf::Error> {
//! let dir = std::env::temp_dir().join(format!("tiny-gguf-doc-{}", std::process::id()));
//! let spec = ModelSpec { weight_type: WeightType::Q8_0, ..ModelSpec::tiny_llama() };
//! spec.validate()?;
//! // Generated once, reused afterwards.
//! let path = cached(&spec, &dir)?;
//! assert_eq!(path.file_name().unwrap(), "llama-q8_0-e128-l2-h4-kv2-f256-c2048-s42.gguf");
//!
//! let header = read_header(&path)?;
//! assert_eq!(header.get_str("general.architecture"), Some("llama"));
//! assert_eq!(header.file_size, spec.file_size()?);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;

mod adapter;
mod quant;
mod reader;
mod rng;
mod spec;
mod writer;

pub use adapter::{
    ControlVectorSpec, LoraSpec, LoraTensor, LoraWeights, control_vector_bytes, lora_bytes, lora_shapes,
    write_control_vector, write_lora,
};
pub use quant::{f32_to_f16_bits, quantize_q4_0, quantize_q8_0};
pub use reader::{GgufHeader, MetaValue, TensorInfo, read_header};
pub use spec::{Arch, ExtraValue, MAX_EXPERTS, MAX_LAYERS, ModelSpec, N_VOCAB, PRESETS, QK, WeightType};
pub use writer::{WEIGHT_STD, cached, write_gguf};

/// The GGUF magic bytes.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// The GGUF format version written.
pub const GGUF_VERSION: u32 = 3;

/// Alignment of the data section and of every tensor's data (`general.alignment`).
pub const GGUF_ALIGNMENT: u64 = 32;

/// Version of the generation scheme, stored as `tiny_gguf.generator_version`. It changes
/// whenever the same spec would produce different bytes, which makes [`cached`] regenerate
/// files written by older versions.
pub const GENERATOR_VERSION: u32 = 2;

/// Id of the unknown token `<unk>`.
pub const TOKEN_UNK: u32 = 0;

/// Id of the beginning-of-sequence token `<s>` (added when tokenizing with special tokens).
pub const TOKEN_BOS: u32 = 1;

/// Id of the end-of-sequence token `</s>`.
pub const TOKEN_EOS: u32 = 2;

/// Id of the byte token for `byte` (`<0x00>` is 3, `<0xFF>` is 258).
pub const fn byte_token(byte: u8) -> u32 {
    3 + byte as u32
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`ModelSpec`] field (or a value given for it) is invalid.
    #[error("invalid model spec: {field}: {reason}")]
    InvalidSpec {
        /// The offending field, e.g. `n_head_kv`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `create`, `write`, `rename into place`.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not a well-formed GGUF file.
    #[error("malformed GGUF file {} at byte {offset}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: String) -> Error {
        Error::InvalidSpec { field, reason }
    }
}
