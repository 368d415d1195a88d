//! Reads and validates the metadata of GGUF files: the header, the key/value section and the
//! tensor table, never the tensor data.
//!
//! [`Gguf::open`] reads only as much of the file as the metadata occupies. Every count and
//! length is bounded by the bytes left in the file before anything is allocated, all arithmetic
//! is checked, and no input makes it panic. [`validate`] then checks what llama.cpp (at the
//! commit this workspace pins) would otherwise reject, misread, or abort the process on: tensor
//! types, shapes and offsets; the hyperparameters `llama_model_base::load_hparams` asserts on;
//! the element types of the tokenizer arrays `llama_vocab::impl::load` reads through typed
//! pointers; non-finite norm epsilons and scales. [`check_file`] does both.
//!
//! ```no_run
//! # fn main() -> Result<(), llama_gguf::Error> {
//! let gguf = llama_gguf::check_file("model.gguf".as_ref())?;
//! println!("{} tensors, {} bytes of metadata", gguf.tensors().len(), gguf.data_offset());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod reader;
mod types;
mod validate;

pub use reader::{Array, Gguf, Kv, TensorInfo, Value, ValueType};
pub use types::{GgmlType, ggml_type};
pub use validate::{LLAMA_MAX_EXPERTS, LLAMA_MAX_LAYERS, validate};

/// The GGUF magic bytes.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// The alignment of the data section when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;

/// Reads the metadata of the GGUF file at `path` ([`Gguf::open`]) and [`validate`]s it.
pub fn check_file(path: &std::path::Path) -> Result<Gguf, Error> {
    let gguf = Gguf::open(path)?;
    validate(&gguf)?;
    Ok(gguf)
}

/// What is wrong with a file. The variants name the place: a byte offset, a key or a tensor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot {action} the file")]
    Io {
        /// What was being done (`open`, `stat`, `read`).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not well-formed GGUF (bad magic, truncation, a count that does not fit).
    #[error("malformed GGUF at byte {offset}: {reason}")]
    Format {
        /// Byte offset where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A metadata key is missing, duplicated, of the wrong type, or has a value llama.cpp cannot
    /// use.
    #[error("key `{key}`: {reason}")]
    Key {
        /// The key.
        key: String,
        /// What is wrong, and where in llama.cpp it matters.
        reason: String,
    },
    /// A tensor info is invalid: its type, shape or place in the data section.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn key(key: &str, reason: impl Into<String>) -> Error {
        Error::Key { key: key.to_owned(), reason: reason.into() }
    }

    pub(crate) fn tensor(name: &str, reason: impl Into<String>) -> Error {
        Error::Tensor { name: name.to_owned(), reason: reason.into() }
    }
}
