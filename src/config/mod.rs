//! Configuration files: a model, its options and the benchmark workloads, in TOML or in the
//! legacy `.env` form.
//!
//! | module | concern |
//! |---|---|
//! | this one | [`Config`]: loading either form, the checks, model path resolution (`LLAMA_MODELS_DIR`) |
//! | `model` | [`ModelSource`] and the tiny-gguf presets ([`GeneratedModel`]) |
//! | `schema` | the TOML schema (`deny_unknown_fields`) and how tables override `flags` |
//! | `dotenv` | the legacy `.env` dialect (`LLAMA_ARGS=...`, `MODEL=...`, knobs) |
//! | `knobs` | how ggml reads each environment knob (presence, `== 1`, `atoi`, ...) |
//! | `workloads` | the workload presets and whether a workload fits the context |
//!
//! # TOML
//!
//! ```toml
//! name = "control"                       # default: the file name without extension
//! description = "experts on the CPU"
//! model_path = "Qwen3-30B-A3B-Q8_0.gguf" # or: generated = "bench-moe"
//! flags = '-ngl all -ot "exps=CPU" -ctk q8_0 -ctv q8_0 -t 16 -c 32768 -lm none'
//! workloads = ["short", "medium", "long", "multi-turn"]
//!
//! [context]            # typed options override what `flags` set, key by key
//! n_batch = 4096
//!
//! [env]                # environment knobs, by variable name (also [backend.env])
//! GGML_CUDA_GRAPH_OPT = true
//!
//! [[workload]]         # custom workloads, after the presets named in `workloads`
//! name = "deep"
//! n_prompt = 512
//! n_gen = 128
//! n_depth = 8192
//! repetitions = 3
//!
//! [[workload]]         # a quality workload: perplexity and KL divergence, no speed
//! name = "kld"
//! quality = { text = "wiki.test.raw", n_ctx = 512, chunks = 8, base = "base-f16.kld" }
//! ```
//!
//! Every table refuses unknown keys, so a typo is an error naming the key, the line and the file.
//!
//! - **Model**: `model_path` (a GGUF file) or `generated` (a tiny-gguf preset, see
//!   [`GeneratedModel`]; generating it is the caller's job), or `-m` inside `flags`. A relative
//!   path resolves against the directory in `LLAMA_MODELS_DIR` when that is set and not empty,
//!   else against the configuration file's directory, when the options are asked for
//!   ([`Config::run_options`]).
//! - **Options**: `flags` (llama.cpp syntax, read by [`llama_runner::flags::parse`] with its warnings)
//!   is applied first; the typed tables `[model]`, `[context]`, `[backend]` and `[env]` then
//!   override it key by key (a nested table such as `[context.placement]` merges too; an array
//!   such as `tensor_overrides` replaces). A table value that replaces a different value set by
//!   `flags` gets a warning. `model_path` likewise wins over `-m`.
//! - **Workloads**: `workloads` names presets (see [`preset_workload`]); `[[workload]]` tables
//!   add custom ones ([`Workload`] fields: `name`, `n_prompt`, `n_gen`, `n_depth` = tokens
//!   already in the KV cache, `repetitions` (default 5), `turns` (default 1)). With neither,
//!   the four presets are used, less those that do not fit the context (with a warning). A
//!   named or custom workload that needs more KV cells than the context has
//!   (`n_depth + turns × (n_prompt + n_gen)` against `n_ctx`, or `n_ctx / n_seq_max` per
//!   sequence without `kv_unified`; the model's training context for `n_ctx = 0` when it is
//!   known, as for generated models) is an error naming the workload.
//! - **Quality workloads**: a `[[workload]]` with a `quality` table ([`QualitySpec`]: `text`,
//!   `n_ctx` (default 512), `chunks`, `base`, `compact_top_k`) measures the configuration's
//!   perplexity over the text and its KL divergence against the base file of log-probabilities
//!   (written by the first run when it does not exist) instead of speed; it sets none of the
//!   speed fields. `text` and `base` resolve against the configuration file's directory when
//!   relative (`LLAMA_MODELS_DIR` is for models only), when the file is loaded. Checked at
//!   load: the text is an existing file, the base is not a directory, `n_ctx` is even and at
//!   least 4, `chunks` and `compact_top_k` are not 0, and the context's `n_batch` is below
//!   `n_ctx` or a multiple of it (llama-perplexity's rule); the context's own `n_ctx` does not
//!   apply (the measurement sizes its context from the chunks).
//!
//! # Legacy `.env`
//!
//! `KEY=value` lines as a shell (or docker compose) reads them: `#` comments, an optional
//! `export `, single or double quotes (a quoted value may continue over several lines, as may
//! an unquoted one ending in `\`); an unquoted value with spaces is taken literally, as docker
//! compose does. The variables mean:
//!
//! - **the flag string**: the one variable named `ARGS`, `FLAGS`, `LLAMA_ARG`, or ending in
//!   `_ARGS` or `_FLAGS` (`LLAMA_ARGS`, `EXTRA_ARGS`, ...). Several such variables are an error
//!   unless the caller names the ones to read ([`Config::load_env`]; they are then read in that
//!   order, as one string). The string is split with shell quoting, as `eval` or docker
//!   compose's `command:` would split it (plain `$LLAMA_ARGS` word splitting in a shell would
//!   keep the quotes as characters);
//! - **the model**: `MODEL`, `MODEL_PATH`, `MODEL_FILE` or `LLAMA_MODEL` (`-m` in the flags wins);
//! - **llama.cpp's own variables** (`LLAMA_ARG_CTX_SIZE`, `LLAMA_ARG_NO_MMAP`, ...): applied before
//!   the flags, as llama.cpp does ([`llama_runner::flags::parse_with_env`]);
//! - **environment knobs** (`GGML_CUDA_GRAPH_OPT=1`, see [`EnvKnobs`](llama_runner::EnvKnobs)), read as ggml reads them:
//!   `GGML_CUDA_GRAPH_OPT` and `GGML_CPU_DISABLE_FUSION` are on only for a number equal to 1
//!   (`=true` is off), `GGML_CUDA_DISABLE_GRAPHS`, `GGML_CUDA_ENABLE_UNIFIED_MEMORY`,
//!   `GGML_CUDA_NO_PINNED`, `GGML_CUDA_REGISTER_HOST` and `GGML_CUDA_P2P` are on whenever set
//!   (`=0` is on), the others take a number; a value whose obvious meaning differs gets a warning;
//! - anything else: a warning, not an error.
//!
//! The configuration's name is the file name without `.env`; its workloads are the four presets
//! that fit its context.
//! [`Config::load`] reads either form: `.toml` files as TOML; `.env`, `*.env` and `.env.*` files
//! as `.env`; any other file as `.env` when its first line that is not blank or a comment looks
//! like `NAME=` with an upper-case name, else as TOML.

mod dotenv;
mod knobs;
mod model;
mod schema;
mod workloads;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, WorkloadProblem};
use llama_runner::options::RunOptions;
pub use model::{GeneratedModel, MODELS_DIR_ENV, ModelSource};
use workloads::Capacity;
pub use workloads::{Misfit, QualitySpec, WORKLOAD_PRESETS, Workload, default_workloads, preset_workload};

/// A loaded, checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    name: String,
    description: String,
    origin: PathBuf,
    model: ModelSource,
    options: RunOptions,
    workloads: Vec<Workload>,
    warnings: Vec<String>,
}

impl Config {
    /// Reads a TOML or `.env` configuration (see the module documentation for how the form is
    /// chosen). Relative model paths stay relative until [`Config::run_options`].
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        if is_env_file(path, &text) {
            Config::from_env_str(&text, path, &[])
        } else {
            Config::from_toml_str(&text, path)
        }
    }

    /// Reads a legacy `.env` file; `flags_vars` names the variables holding the flag string
    /// (read in that order); empty = the one variable the naming rule finds.
    pub fn load_env(path: impl AsRef<Path>, flags_vars: &[&str]) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Config::from_env_str(&text, path, flags_vars)
    }

    /// Reads TOML text; `origin` is the file it came from, used in messages, as the default name
    /// and as the base of relative model paths.
    pub fn from_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Config> {
        let config = schema::read(text, origin.as_ref())?;
        config.log_warnings();
        Ok(config)
    }

    /// Reads legacy `.env` text (see the module documentation); `flags_vars` as in
    /// [`Config::load_env`].
    pub fn from_env_str(text: &str, origin: impl AsRef<Path>, flags_vars: &[&str]) -> Result<Config> {
        let config = dotenv::read(text, origin.as_ref(), flags_vars)?;
        config.log_warnings();
        Ok(config)
    }

    /// The name (the `name` key, else the file name without extension).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The description (empty when none is given).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The file it was read from (or the name the text was given as).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Where the model comes from.
    pub fn model(&self) -> &ModelSource {
        &self.model
    }

    /// The options, without the model path (see [`Config::run_options`]).
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// Everything that was read with a meaning the author may not have meant (flag traps, values
    /// from `flags` that a table replaced, unknown `.env` variables), one sentence each; each was
    /// also logged with `log::warn!`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The workloads: presets first, then custom ones.
    pub fn workloads(&self) -> Vec<Workload> {
        self.workloads.clone()
    }

    /// The directory relative model paths resolve against when `LLAMA_MODELS_DIR` is not set.
    pub fn dir(&self) -> &Path {
        match self.origin.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The model file, resolved with `LLAMA_MODELS_DIR` from the environment; `None` for a
    /// generated model.
    pub fn model_path(&self) -> Option<PathBuf> {
        let dir = std::env::var_os(MODELS_DIR_ENV).filter(|d| !d.is_empty()).map(PathBuf::from);
        self.model_path_in(dir.as_deref())
    }

    /// The model file, resolved against `models_dir` (else the configuration's directory).
    pub fn model_path_in(&self, models_dir: Option<&Path>) -> Option<PathBuf> {
        let ModelSource::File(p) = &self.model else { return None };
        if p.is_absolute() {
            return Some(p.clone());
        }
        Some(models_dir.unwrap_or_else(|| self.dir()).join(p))
    }

    /// The options with the resolved model path ([`Config::model_path`]). A generated model has
    /// no path yet: that is an error saying so (generate it, then use
    /// [`Config::run_options_with_model`]).
    pub fn run_options(&self) -> Result<RunOptions> {
        let dir = std::env::var_os(MODELS_DIR_ENV).filter(|d| !d.is_empty()).map(PathBuf::from);
        self.run_options_in(dir.as_deref())
    }

    /// [`Config::run_options`] with an explicit models directory instead of `LLAMA_MODELS_DIR`.
    pub fn run_options_in(&self, models_dir: Option<&Path>) -> Result<RunOptions> {
        match &self.model {
            ModelSource::Generated(g) => Err(Error::GeneratedModelPath { path: self.origin.clone(), model: *g }),
            ModelSource::File(_) => Ok(self.run_options_with_model(self.model_path_in(models_dir))),
        }
    }

    /// The options with the given model path (for generated models).
    pub fn run_options_with_model(&self, model_path: impl Into<Option<PathBuf>>) -> RunOptions {
        RunOptions { model_path: model_path.into(), ..self.options.clone() }
    }

    /// The training context of the model when it is known without loading it.
    fn known_context_length(&self) -> Option<u32> {
        match self.model {
            ModelSource::Generated(g) => Some(g.context_length()),
            ModelSource::File(_) => None,
        }
    }

    /// Checks the options that can be checked without the model and the machine, and every
    /// workload. With `implicit_workloads` (none were named), presets that do not fit the
    /// context are dropped with a warning instead.
    fn check(&mut self, implicit_workloads: bool) -> Result<()> {
        let path = || self.origin.clone();
        // Not `validate::model_options`: that also checks device names against this machine,
        // and a configuration for a GPU machine must load anywhere.
        llama_runner::validate::portable_model_options(&self.options.model)
            .map_err(|source| Error::ConfigOption { path: path(), source: Box::new(source) })?;
        self.options
            .sampling
            .validate()
            .map_err(|source| Error::ConfigOption { path: path(), source: Box::new(source) })?;
        if self.options.sampling != llama_runner::sampling::SamplingOptions::default() {
            self.warnings.push(
                "the sampling options are checked and recorded, but bench measures decoding without sampling \
                 (as llama-bench does)"
                    .into(),
            );
        }
        let c = &self.options.context;
        if let ModelSource::Generated(model) = self.model
            && c.n_ctx > model.context_length()
        {
            return Err(Error::ConfigContextTooLarge {
                path: path(),
                model,
                n_ctx: c.n_ctx,
                n_ctx_train: model.context_length(),
            });
        }
        let capacity = Capacity::of(c, self.known_context_length());
        let workload_error =
            |workload: &str, problem| Error::ConfigWorkload { path: path(), workload: workload.to_string(), problem };
        let dir = self.dir().to_path_buf();
        let mut workloads = std::mem::take(&mut self.workloads);
        for q in workloads.iter_mut().filter_map(|w| w.quality.as_mut()) {
            // As written when empty, so that the check below names the empty path.
            for p in [&mut q.text, &mut q.base] {
                if !p.as_os_str().is_empty() {
                    *p = dir.join(&*p);
                }
            }
        }
        if implicit_workloads {
            let (fit, dropped): (Vec<_>, Vec<_>) = workloads.into_iter().partition(|w| capacity.misfit(w).is_none());
            if fit.is_empty()
                && let Some(w) = dropped.first()
                && let Some(m) = capacity.misfit(w)
            {
                return Err(workload_error(&w.name, WorkloadProblem::NoPresetFits(m)));
            }
            for w in &dropped {
                if let Some(m) = capacity.misfit(w) {
                    self.warnings.push(format!("preset workload `{}` left out: {m}", w.name));
                }
            }
            workloads = fit;
        }
        let mut names: Vec<&str> = Vec::new();
        for w in &workloads {
            let problem = if w.name.is_empty() {
                Some(WorkloadProblem::EmptyName)
            } else if names.contains(&w.name.as_str()) {
                Some(WorkloadProblem::GivenTwice)
            } else if let Some(q) = &w.quality {
                quality_problem(w, q, c.n_batch)
            } else if let Some(sp) = &w.speculative {
                speculative_problem(w, sp)
            } else if w.n_prompt == 0 && w.n_gen == 0 {
                Some(WorkloadProblem::NothingToRun)
            } else if w.repetitions == 0 {
                Some(WorkloadProblem::NoRepetitions)
            } else if w.turns == 0 {
                Some(WorkloadProblem::NoTurns)
            } else if w.turns > 1 && w.n_depth > 0 {
                Some(WorkloadProblem::DepthWithTurns)
            } else if w.parallel == 0 {
                Some(WorkloadProblem::NoSequences)
            } else if w.parallel > 1 && (w.turns > 1 || w.n_depth > 0) {
                Some(WorkloadProblem::ParallelWithTurnsOrDepth)
            } else if w.decode_sizes.contains(&0) {
                Some(WorkloadProblem::ZeroDecodeSize)
            } else {
                capacity.misfit(w).map(WorkloadProblem::DoesNotFit)
            };
            if let Some(problem) = problem {
                return Err(workload_error(&w.name, problem));
            }
            names.push(&w.name);
        }
        self.workloads = workloads;
        Ok(())
    }

    fn log_warnings(&self) {
        for w in &self.warnings {
            log::warn!("{}: {w}", self.origin.display());
        }
    }
}

/// What is wrong with a speculative workload, if anything.
fn speculative_problem(w: &Workload, sp: &crate::speculate::SpecWorkload) -> Option<WorkloadProblem> {
    if w.n_prompt != 0 || w.n_depth != 0 || w.turns != 1 || w.parallel != 1 || !w.decode_sizes.is_empty() {
        return Some(WorkloadProblem::SpeculativeWithSpeed);
    }
    if w.n_gen == 0 {
        return Some(WorkloadProblem::NothingToRun);
    }
    if w.repetitions == 0 {
        return Some(WorkloadProblem::NoRepetitions);
    }
    if crate::speculate::spec_prompt(&sp.text).is_none() {
        return Some(WorkloadProblem::SpeculativeText { text: sp.text.clone() });
    }
    let parsed =
        llama_runner::flags::split(&sp.flags).and_then(|a| llama_runner::flags::parse_quietly::<String>(&[], &a));
    let reason = match parsed {
        Err(e) => e.to_string(),
        Ok(p) => match p.options.speculative.drafter() {
            Err(e) => e.to_string(),
            Ok(None) => "they ask for no speculative decoding (give --spec-type or -md)".to_string(),
            Ok(Some(_)) => return None,
        },
    };
    Some(WorkloadProblem::SpeculativeFlags { flags: sp.flags.clone(), reason })
}

/// What is wrong with a quality workload, if anything (its paths already resolved).
fn quality_problem(w: &Workload, q: &QualitySpec, n_batch: u32) -> Option<WorkloadProblem> {
    let file_problem = |p: &Path, must_exist: bool| -> Option<&'static str> {
        if p.as_os_str().is_empty() {
            Some("the path is empty")
        } else if p.is_dir() {
            Some("is a directory")
        } else if p.exists() && !p.is_file() {
            Some("is not a regular file")
        } else if must_exist && !p.exists() {
            Some("does not exist")
        } else {
            None
        }
    };
    if w.n_prompt != 0
        || w.n_gen != 0
        || w.n_depth != 0
        || w.turns != 1
        || w.parallel != 1
        || !w.decode_sizes.is_empty()
    {
        Some(WorkloadProblem::QualityWithSpeed)
    } else if q.n_ctx % 2 == 1 || q.n_ctx < 4 {
        Some(WorkloadProblem::QualityNCtx(q.n_ctx))
    } else if q.chunks == Some(0) {
        Some(WorkloadProblem::QualityNoChunks)
    } else if q.compact_top_k == Some(0) {
        Some(WorkloadProblem::QualityTopK)
    } else if let Some(reason) = file_problem(&q.text, true) {
        Some(WorkloadProblem::QualityText { path: q.text.clone(), reason })
    } else if let Some(reason) = file_problem(&q.base, false) {
        Some(WorkloadProblem::QualityBase { path: q.base.clone(), reason })
    } else if n_batch >= q.n_ctx && !n_batch.is_multiple_of(q.n_ctx) {
        Some(WorkloadProblem::QualityBatch { n_batch, n_ctx: q.n_ctx })
    } else {
        None
    }
}

fn default_name(origin: &Path) -> String {
    let file = origin.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let name = if let Some(stem) = file.strip_suffix(".env").filter(|s| !s.is_empty()) {
        stem.to_string()
    } else if let Some(rest) = file.strip_prefix(".env.") {
        rest.to_string()
    } else if file == ".env" {
        "env".to_string()
    } else {
        origin.file_stem().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    };
    if name.is_empty() { "config".to_string() } else { name }
}

fn is_env_file(path: &Path, text: &str) -> bool {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    if file.ends_with(".toml") {
        return false;
    }
    if file == ".env" || file.starts_with(".env.") || file.ends_with(".env") {
        return true;
    }
    let first = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    let first = first.strip_prefix("export").filter(|r| r.starts_with([' ', '\t'])).map_or(first, str::trim_start);
    match first.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit()
        }
        None => false,
    }
}
