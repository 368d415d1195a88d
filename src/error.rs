//! The workbench's error type: configuration files, records, tables and the library's errors.

use std::path::PathBuf;

/// Everything the workbench can fail at, each variant naming what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The library refused something (an option, a model, a context, a flag).
    #[error(transparent)]
    Library(#[from] llama_runner::Error),
    /// A configuration file is invalid.
    #[error("{}: {reason}", .path.display())]
    Config {
        /// The file (or the name the text was given as).
        path: PathBuf,
        /// What is wrong, naming the key or line.
        reason: String,
    },
    /// A workbench setting (a workload, a threshold, a list of records) is invalid.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The setting.
        option: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with the workbench's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
