//! The GGUF check run before llama.cpp sees a model file ([`Model::load`](crate::Model::load)).
//!
//! llama.cpp refuses many malformed files with an error, but enforces some of its rules with
//! `GGML_ASSERT`, which aborts the whole process: a `block_count` of 0, more experts used than
//! exist, a tokenizer array of the wrong element type, a repeated token, an unknown RoPE
//! scaling type, a NaN norm epsilon (at the first decode), a zero tensor dimension (a division
//! by zero). [`llama_gguf::validate`] checks all of them, from the metadata alone, and the load
//! fails with [`Error::InvalidGguf`] naming the file, the key or tensor, and what is wrong.

use std::path::Path;

use crate::error::{Error, Result};

/// How [`Model::load_with`](crate::Model::load_with) treats the file before handing it to
/// llama.cpp.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct LoadOptions {
    /// Read the GGUF metadata and check it against llama.cpp's rules first (default `true`).
    /// It reads only the metadata (a few MB for a 262k-token vocabulary) and takes
    /// milliseconds. Turn it off only for a file already checked (with [`check_gguf`]): a file
    /// that breaks one of the rules llama.cpp asserts on aborts the process.
    pub validate_gguf: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { validate_gguf: true }
    }
}

/// Checks the GGUF file at `path` as [`Model::load`](crate::Model::load) does, without loading
/// it: [`Error::InvalidGguf`] for a file llama.cpp would refuse or abort on,
/// [`Error::ModelUnreadable`] when it cannot be read.
pub fn check_gguf(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    match llama_gguf::check_file(path) {
        Ok(_) => Ok(()),
        Err(llama_gguf::Error::Io { source, .. }) => Err(Error::ModelUnreadable { path: path.to_path_buf(), source }),
        Err(problem) => Err(Error::InvalidGguf { path: path.to_path_buf(), problem: Box::new(problem) }),
    }
}
