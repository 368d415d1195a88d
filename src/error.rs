//! The workbench's error type: configuration files, records, tables and the library's errors.
//!
//! A variant's message says what happened and where; the error it wraps (a TOML parse error,
//! a refused flag or option) is its [`source`](std::error::Error::source), printed after it
//! by `{:#}` (anyhow) or by [`chain`], never repeated in the message itself.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{GeneratedModel, Misfit};

/// Everything the workbench can fail at, each variant naming what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The library refused something (an option, a model, a context, a flag) outside a
    /// configuration file.
    #[error(transparent)]
    Library(#[from] llama_runner::Error),
    /// A TOML configuration is not valid TOML, or does not fit the schema (an unknown key, a
    /// value of the wrong type); the source names the line.
    #[error("{}", .path.display())]
    ConfigSyntax {
        /// The file (or the name the text was given as).
        path: PathBuf,
        /// What the TOML reader said.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The keys of one table, merged over what `flags` set, do not make options.
    #[error("{}: [{table}]", .path.display())]
    ConfigTable {
        /// The file.
        path: PathBuf,
        /// The table (`context`, `env`).
        table: String,
        /// What the TOML reader said.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A key whose value has the wrong shape.
    #[error("{}: `{key}` must be {expected}", .path.display())]
    ConfigKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What it must be (`a table`).
        expected: &'static str,
    },
    /// The library's flag parser refused the configuration's flag string.
    #[error("{}: {from}", .path.display())]
    ConfigFlags {
        /// The file.
        path: PathBuf,
        /// Where the flags were written.
        from: FlagsFrom,
        /// The refusal ([`llama_runner::Error::Flag`]).
        #[source]
        source: Box<llama_runner::Error>,
    },
    /// The library refused the configuration's options (checks that need neither the model nor
    /// the machine).
    #[error("{}", .path.display())]
    ConfigOption {
        /// The file.
        path: PathBuf,
        /// The refusal ([`llama_runner::Error::InvalidOption`]).
        #[source]
        source: Box<llama_runner::Error>,
    },
    /// The configuration gives no model, or gives it twice.
    #[error("{}: {problem}", .path.display())]
    ConfigModel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: ModelProblem,
    },
    /// A context larger than the generated model's training context.
    #[error("{}: n_ctx {n_ctx} is larger than the {n_ctx_train} tokens the generated model `{model}` was trained for", .path.display())]
    ConfigContextTooLarge {
        /// The file.
        path: PathBuf,
        /// The generated model.
        model: GeneratedModel,
        /// `n_ctx`.
        n_ctx: u32,
        /// The model's training context.
        n_ctx_train: u32,
    },
    /// A workload is unknown, malformed or does not fit the context.
    #[error("{}: {}", .path.display(), workload_message(.workload, .problem))]
    ConfigWorkload {
        /// The file.
        path: PathBuf,
        /// The workload's name.
        workload: String,
        /// What is wrong.
        problem: WorkloadProblem,
    },
    /// A line of a `.env` file that cannot be read.
    #[error("{}: line {line}: {problem}", .path.display())]
    EnvLine {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// What is wrong.
        problem: EnvLineProblem,
    },
    /// The variables holding a `.env` file's flags cannot be told apart, or are missing.
    #[error("{}: {problem}", .path.display())]
    EnvFlagVars {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: FlagVarsProblem,
    },
    /// A numeric environment knob of a `.env` file that is not a non-negative number.
    #[error("{}: line {line}: {name}={value} is not a non-negative number (ggml reads it with atoi)", .path.display())]
    EnvKnob {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// The variable.
        name: String,
        /// Its value.
        value: String,
    },
    /// The options of a configuration whose model is generated were asked for before it was.
    #[error(
        "{}: the model is the generated preset `{model}`: generate it (`tiny-gguf --preset {model}`) and pass its \
         path to Config::run_options_with_model",
        .path.display()
    )]
    GeneratedModelPath {
        /// The file.
        path: PathBuf,
        /// The preset.
        model: GeneratedModel,
    },
    /// Options could not be written as TOML to merge a table over them.
    #[error("cannot write the {what} options as TOML")]
    Serialize {
        /// Which options (`context`).
        what: String,
        /// What the TOML writer said.
        #[source]
        source: Box<toml::ser::Error>,
    },
    /// A workbench setting (a workload, a threshold, a list of records) is invalid.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The setting.
        option: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A quality workload's measurement was refused or failed (a text too short for its
    /// chunks, a base file that is malformed or of other tokens, a failed decode).
    #[error("workload `{workload}`")]
    Quality {
        /// The workload.
        workload: String,
        /// What the library said.
        #[source]
        source: Box<llama_runner::QualityError>,
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

impl Error {
    /// The configuration file the error is about, if it is about one.
    pub fn config_path(&self) -> Option<&Path> {
        match self {
            Error::ConfigSyntax { path, .. }
            | Error::ConfigTable { path, .. }
            | Error::ConfigKey { path, .. }
            | Error::ConfigFlags { path, .. }
            | Error::ConfigOption { path, .. }
            | Error::ConfigModel { path, .. }
            | Error::ConfigContextTooLarge { path, .. }
            | Error::ConfigWorkload { path, .. }
            | Error::EnvLine { path, .. }
            | Error::EnvFlagVars { path, .. }
            | Error::EnvKnob { path, .. }
            | Error::GeneratedModelPath { path, .. } => Some(path),
            Error::Library(_)
            | Error::Serialize { .. }
            | Error::InvalidOption { .. }
            | Error::Quality { .. }
            | Error::Io { .. } => None,
        }
    }
}

/// An error and its sources, joined by `: ` (what anyhow's `{:#}` prints).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Where a configuration's flag string was written ([`Error::ConfigFlags`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagsFrom {
    /// The `flags` key of a TOML file.
    Key,
    /// These variables of a `.env` file, read in this order.
    Vars(Vec<String>),
    /// Only the `LLAMA_ARG_*` variables of a `.env` file.
    LlamaArgVars,
}

impl fmt::Display for FlagsFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagsFrom::Key => f.write_str("key `flags`"),
            FlagsFrom::Vars(names) => f.write_str(&names.join(", ")),
            FlagsFrom::LlamaArgVars => f.write_str("LLAMA_ARG_* variables"),
        }
    }
}

/// What is wrong with a configuration's model ([`Error::ConfigModel`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelProblem {
    /// `generated` together with `model_path` or `-m`.
    #[error("give the model once: `generated` together with `model_path` or -m")]
    GivenTwice,
    /// A TOML file without a model.
    #[error("no model: set `model_path`, `generated`, or -m in `flags`")]
    Missing,
    /// A `.env` file without a model.
    #[error("no model: set {} or put -m in the flags", .vars.join(", "))]
    MissingVar {
        /// The variables that may name it.
        vars: &'static [&'static str],
    },
    /// An empty model path.
    #[error("`{key}` is empty")]
    Empty {
        /// The key or variable (`model_path`, `MODEL`).
        key: String,
    },
    /// Several `.env` variables naming the model.
    #[error("several model variables ({}); keep one", .vars.join(", "))]
    SeveralVars {
        /// The variables set.
        vars: Vec<String>,
    },
}

/// What is wrong with a workload ([`Error::ConfigWorkload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkloadProblem {
    /// A name in `workloads` that is no preset.
    UnknownPreset {
        /// The presets there are.
        presets: &'static [&'static str],
    },
    /// A `[[workload]]` named like a preset.
    PresetName,
    /// A workload without a name.
    EmptyName,
    /// The same name twice.
    GivenTwice,
    /// Neither prompt nor generated tokens.
    NothingToRun,
    /// `repetitions = 0`.
    NoRepetitions,
    /// `turns = 0`.
    NoTurns,
    /// `n_depth` with several turns.
    DepthWithTurns,
    /// `parallel = 0`.
    NoSequences,
    /// `parallel` above 1 with `turns` or `n_depth`.
    ParallelWithTurnsOrDepth,
    /// A `decode_sizes` entry of 0.
    ZeroDecodeSize,
    /// A quality workload that also sets speed fields (`n_prompt`, `n_gen`, `n_depth`,
    /// `turns`, `parallel`, `decode_sizes`).
    QualityWithSpeed,
    /// A quality workload's `n_ctx` that is odd or below 4.
    QualityNCtx(u32),
    /// A quality workload's `chunks = 0`.
    QualityNoChunks,
    /// A quality workload's `compact_top_k = 0`.
    QualityTopK,
    /// A quality workload's text that is not a readable file.
    QualityText {
        /// The path (resolved against the configuration's directory).
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A quality workload's base path that cannot be a file.
    QualityBase {
        /// The path (resolved).
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An `n_batch` that is neither below the quality workload's `n_ctx` nor a multiple of it
    /// (llama-perplexity asserts one of the two).
    QualityBatch {
        /// The context's `n_batch`.
        n_batch: u32,
        /// The workload's `n_ctx`.
        n_ctx: u32,
    },
    /// A speculative workload that also sets `n_prompt`, `n_depth`, `turns`, `parallel` or
    /// `decode_sizes` (its prompt is built in).
    SpeculativeWithSpeed,
    /// A speculative workload's `text` that is no built-in prompt.
    SpeculativeText {
        /// The text given.
        text: String,
    },
    /// A speculative workload's `flags` that do not parse or ask for no speculation.
    SpeculativeFlags {
        /// The flags given.
        flags: String,
        /// What is wrong.
        reason: String,
    },
    /// More KV cells than the context has.
    DoesNotFit(Misfit),
    /// No preset fits the context (none were named); the first one's misfit.
    NoPresetFits(Misfit),
}

fn workload_message(name: &str, problem: &WorkloadProblem) -> String {
    let reason = match problem {
        WorkloadProblem::UnknownPreset { presets } => {
            return format!("`workloads`: unknown preset `{name}` (presets: {})", presets.join(", "));
        }
        WorkloadProblem::PresetName => {
            return format!(
                "[[workload]] `{name}` has a preset's name; list presets in `workloads` or pick another name"
            );
        }
        WorkloadProblem::EmptyName => return "a workload has an empty name".to_string(),
        WorkloadProblem::GivenTwice => "given twice".to_string(),
        WorkloadProblem::NothingToRun => "n_prompt and n_gen are both 0".to_string(),
        WorkloadProblem::NoRepetitions => "repetitions must be at least 1".to_string(),
        WorkloadProblem::NoTurns => "turns must be at least 1".to_string(),
        WorkloadProblem::NoSequences => "parallel must be at least 1".to_string(),
        WorkloadProblem::ParallelWithTurnsOrDepth => {
            "parallel sequences cannot be combined with turns or n_depth".to_string()
        }
        WorkloadProblem::ZeroDecodeSize => "decode_sizes entries must be at least 1".to_string(),
        WorkloadProblem::DepthWithTurns => "n_depth and several turns cannot be combined".to_string(),
        WorkloadProblem::QualityWithSpeed => "a quality workload measures quality only: leave out n_prompt, n_gen, \
                                              n_depth, turns, parallel and decode_sizes (add a speed workload beside it)"
            .to_string(),
        WorkloadProblem::QualityNCtx(n) => {
            format!("quality n_ctx {n} must be even and at least 4 (the second half of each chunk is scored)")
        }
        WorkloadProblem::QualityNoChunks => "quality chunks must be at least 1".to_string(),
        WorkloadProblem::QualityTopK => "quality compact_top_k must be at least 1".to_string(),
        WorkloadProblem::QualityText { path, reason } => format!("quality text {}: {reason}", path.display()),
        WorkloadProblem::QualityBase { path, reason } => format!("quality base {}: {reason}", path.display()),
        WorkloadProblem::QualityBatch { n_batch, n_ctx } => format!(
            "n_batch {n_batch} is neither smaller than the quality n_ctx {n_ctx} nor a multiple of it \
             (llama-perplexity's rule; set -b to n_ctx or a multiple)"
        ),
        WorkloadProblem::SpeculativeWithSpeed => "a speculative workload has a built-in prompt and sets only n_gen and \
                                                  repetitions (not n_prompt, n_depth, turns, parallel, decode_sizes)"
            .to_string(),
        WorkloadProblem::SpeculativeText { text } => format!(
            "speculative text `{text}` is no built-in prompt (texts: {})",
            crate::speculate::SPEC_TEXTS.join(", ")
        ),
        WorkloadProblem::SpeculativeFlags { flags, reason } => format!("speculative flags `{flags}`: {reason}"),
        WorkloadProblem::DoesNotFit(m) => m.to_string(),
        WorkloadProblem::NoPresetFits(m) => format!("{m} (no preset fits; name workloads that do)"),
    };
    format!("workload `{name}`: {reason}")
}

/// What is wrong with a `.env` line ([`Error::EnvLine`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvLineProblem {
    /// No `=`.
    #[error("`{text}` is not NAME=value")]
    NotAssignment {
        /// The line.
        text: String,
    },
    /// A name a shell would refuse.
    #[error("`{name}` is not a variable name")]
    BadName {
        /// The name.
        name: String,
    },
    /// A quote not closed, or a final `\`, by the end of the file.
    #[error("{name}'s value has an unclosed quote or ends with `\\`")]
    Unclosed {
        /// The variable.
        name: String,
    },
}

/// What is wrong with the variables holding a `.env` file's flags ([`Error::EnvFlagVars`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagVarsProblem {
    /// Several variables may hold flags and none were named.
    #[error(
        "several variables may hold llama.cpp flags ({}); name the ones to read (Config::load_env(path, &[\"{}\"]))",
        .found.join(", "),
        .found.first().map_or("", String::as_str)
    )]
    Ambiguous {
        /// The variables, in file order.
        found: Vec<String>,
    },
    /// A variable named to read that the file does not set.
    #[error("no variable `{name}` in the file")]
    Missing {
        /// The variable.
        name: String,
    },
}

/// `Result` with the workbench's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
