//! The one error type of this crate.

use std::path::PathBuf;

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
    #[error("model file {path} cannot be read: {source}")]
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
    /// An option value is invalid or cannot be combined with the others.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option, named as in the typed options (and the llama.cpp flag where there is one).
        option: String,
        /// What is wrong with it.
        reason: String,
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
        reason: String,
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

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
