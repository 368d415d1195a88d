//! Configuration files: a model, its options and the benchmark workloads, in TOML or in the
//! legacy `.env` form.
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
//! - **environment knobs** (`GGML_CUDA_GRAPH_OPT=1`, see [`EnvKnobs`]), read as ggml reads them:
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

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::measure::Workload;
use llama_runner::backend::BackendOptions;
use llama_runner::flags;
use llama_runner::knobs::EnvKnobs;
use llama_runner::options::{ContextOptions, ModelOptions, RunOptions};

/// The environment variable naming the directory relative model paths resolve against.
pub const MODELS_DIR_ENV: &str = "LLAMA_MODELS_DIR";

/// A model made by the tiny-gguf generator (`tiny-gguf --preset NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratedModel {
    /// Dense llama, F16, 2 layers (about 0.7 MB).
    TinyLlama,
    /// qwen3moe, Q8_0, 4 experts (about 1 MB).
    TinyMoe,
    /// gemma3 with sliding-window layers, Q8_0 (about 0.6 MB).
    TinySwa,
    /// qwen3moe, Q8_0, 6 layers, 8 experts (about 65 MB).
    BenchMoe,
    /// qwen3moe, Q8_0, 6 layers, 16 wide experts (about 300 MB).
    LargeMoe,
}

impl GeneratedModel {
    /// Every preset.
    pub const ALL: [GeneratedModel; 5] = [
        GeneratedModel::TinyLlama,
        GeneratedModel::TinyMoe,
        GeneratedModel::TinySwa,
        GeneratedModel::BenchMoe,
        GeneratedModel::LargeMoe,
    ];

    /// The preset's name (`bench-moe`), as tiny-gguf spells it.
    pub fn name(self) -> &'static str {
        match self {
            GeneratedModel::TinyLlama => "tiny-llama",
            GeneratedModel::TinyMoe => "tiny-moe",
            GeneratedModel::TinySwa => "tiny-swa",
            GeneratedModel::BenchMoe => "bench-moe",
            GeneratedModel::LargeMoe => "large-moe",
        }
    }

    /// The training context the generator writes (`n_ctx = 0` means this many tokens).
    pub fn context_length(self) -> u32 {
        match self {
            GeneratedModel::TinyLlama | GeneratedModel::TinyMoe | GeneratedModel::TinySwa => 2048,
            GeneratedModel::BenchMoe | GeneratedModel::LargeMoe => 4096,
        }
    }
}

impl FromStr for GeneratedModel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
            format!("unknown generated model `{s}` (one of {})", names.join(", "))
        })
    }
}

impl fmt::Display for GeneratedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a configuration's model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file, as written in the configuration (see [`Config::model_path`] for resolution).
    File(PathBuf),
    /// A tiny-gguf preset the caller generates.
    Generated(GeneratedModel),
}

/// The names of the workload presets, in their usual order.
pub const WORKLOAD_PRESETS: [&str; 4] = ["short", "medium", "long", "multi-turn"];

/// A workload preset by name, each with 5 repetitions and no depth:
///
/// | name | per turn | turns | KV cells |
/// |---|---|---|---|
/// | `short` | pp128 + tg32 | 1 | 160 |
/// | `medium` | pp512 + tg128 | 1 | 640 |
/// | `long` | pp2048 + tg128 | 1 | 2176 |
/// | `multi-turn` | pp128 + tg64 | 4 | 768 |
pub fn preset_workload(name: &str) -> Option<Workload> {
    let (n_prompt, n_gen, turns) = match name {
        "short" => (128, 32, 1),
        "medium" => (512, 128, 1),
        "long" => (2048, 128, 1),
        "multi-turn" => (128, 64, 4),
        _ => return None,
    };
    Some(Workload { name: name.to_string(), n_prompt, n_gen, n_depth: 0, repetitions: 5, turns })
}

/// The four presets, in [`WORKLOAD_PRESETS`] order: the workloads of a configuration that names
/// none.
pub fn default_workloads() -> Vec<Workload> {
    WORKLOAD_PRESETS.iter().filter_map(|n| preset_workload(n)).collect()
}

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

/// The TOML file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    name: Option<String>,
    description: Option<String>,
    model_path: Option<PathBuf>,
    generated: Option<GeneratedModel>,
    flags: Option<String>,
    // The typed tables are deserialized here only to check them (with line numbers); the values
    // are merged from the raw tables so that only the keys written override `flags`.
    #[serde(rename = "model")]
    _model: Option<ModelOptions>,
    #[serde(rename = "context")]
    _context: Option<ContextOptions>,
    #[serde(rename = "backend")]
    _backend: Option<BackendOptions>,
    #[serde(rename = "env")]
    _env: Option<EnvKnobs>,
    workloads: Option<Vec<String>>,
    #[serde(default)]
    workload: Vec<Workload>,
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
        let origin = origin.as_ref();
        let err = |reason: String| Error::Config { path: origin.to_path_buf(), reason };
        let file: ConfigFile = toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        let raw: toml::Table = text.parse().map_err(|e: toml::de::Error| err(e.to_string()))?;
        let mut warnings = Vec::new();

        let (mut options, flags_model) = match &file.flags {
            Some(f) => {
                let parsed = flags::split(f)
                    .and_then(|args| flags::parse_quietly(&[], &args))
                    .map_err(|e| err(format!("key `flags`: {e}")))?;
                warnings.extend(parsed.warnings.into_iter().map(|w| format!("flags: {w}")));
                let mut o = parsed.options;
                let m = o.model_path.take();
                (o, m)
            }
            None => (RunOptions::default(), None),
        };
        let table = |key: &str| -> Result<Option<&toml::Table>> {
            match raw.get(key) {
                None => Ok(None),
                Some(toml::Value::Table(t)) => Ok(Some(t)),
                Some(_) => Err(err(format!("`{key}` must be a table"))),
            }
        };
        if let Some(t) = table("model")? {
            options.model = overlay(&options.model, t, "model", &mut warnings).map_err(err)?;
        }
        if let Some(t) = table("context")? {
            options.context = overlay(&options.context, t, "context", &mut warnings).map_err(err)?;
        }
        if let Some(t) = table("backend")? {
            options.backend = overlay(&options.backend, t, "backend", &mut warnings).map_err(err)?;
        }
        if let Some(t) = table("env")? {
            options.backend.env = overlay(&options.backend.env, t, "env", &mut warnings).map_err(err)?;
        }

        let model = match (file.model_path, file.generated, flags_model) {
            (Some(_), Some(_), _) | (None, Some(_), Some(_)) => {
                return Err(err("give the model once: `generated` together with `model_path` or -m".into()));
            }
            (Some(path), None, m) => {
                if let Some(m) = m
                    && m != path
                {
                    warnings.push(format!(
                        "`model_path = {}` replaces `-m {}` from `flags`",
                        path.display(),
                        m.display()
                    ));
                }
                ModelSource::File(path)
            }
            (None, None, Some(m)) => ModelSource::File(m),
            (None, Some(g), None) => ModelSource::Generated(g),
            (None, None, None) => {
                return Err(err("no model: set `model_path`, `generated`, or -m in `flags`".into()));
            }
        };
        if let ModelSource::File(p) = &model
            && p.as_os_str().is_empty()
        {
            return Err(err("`model_path` is empty".into()));
        }

        let mut workloads = Vec::new();
        let custom = file.workload;
        let implicit = file.workloads.is_none() && custom.is_empty();
        let names = match file.workloads {
            Some(names) => names,
            None if custom.is_empty() => WORKLOAD_PRESETS.iter().map(|s| (*s).to_string()).collect(),
            None => Vec::new(),
        };
        for n in &names {
            workloads.push(preset_workload(n).ok_or_else(|| {
                err(format!("`workloads`: unknown preset `{n}` (presets: {})", WORKLOAD_PRESETS.join(", ")))
            })?);
        }
        for w in custom {
            if preset_workload(&w.name).is_some() {
                return Err(err(format!(
                    "[[workload]] `{}` has a preset's name; list presets in `workloads` or pick another name",
                    w.name
                )));
            }
            workloads.push(w);
        }

        let mut config = Config {
            name: file.name.unwrap_or_else(|| default_name(origin)),
            description: file.description.unwrap_or_default(),
            origin: origin.to_path_buf(),
            model,
            options,
            workloads,
            warnings,
        };
        config.check(implicit)?;
        config.log_warnings();
        Ok(config)
    }

    /// Reads legacy `.env` text (see the module documentation); `flags_vars` as in
    /// [`Config::load_env`].
    pub fn from_env_str(text: &str, origin: impl AsRef<Path>, flags_vars: &[&str]) -> Result<Config> {
        let origin = origin.as_ref();
        let err = |reason: String| Error::Config { path: origin.to_path_buf(), reason };
        let mut warnings = Vec::new();
        let vars = parse_env_text(text, &mut warnings).map_err(err)?;

        let last = |name: &str| vars.iter().rev().find(|v| v.key == name);
        let flag_names: Vec<String> = if flags_vars.is_empty() {
            let mut found: Vec<String> = Vec::new();
            for v in &vars {
                if is_flags_var_name(&v.key) && !found.contains(&v.key) {
                    found.push(v.key.clone());
                }
            }
            if found.len() > 1 {
                return Err(err(format!(
                    "several variables may hold llama.cpp flags ({}); name the ones to read \
                     (Config::load_env(path, &[\"{}\"]))",
                    found.join(", "),
                    found[0]
                )));
            }
            found
        } else {
            for name in flags_vars {
                if last(name).is_none() {
                    return Err(err(format!("no variable `{name}` in the file")));
                }
            }
            flags_vars.iter().map(|s| s.to_string()).collect()
        };
        let model_names: Vec<&str> = MODEL_VARS.iter().copied().filter(|n| last(n).is_some()).collect();
        if model_names.len() > 1 {
            return Err(err(format!("several model variables ({}); keep one", model_names.join(", "))));
        }

        let mut flag_text = Vec::new();
        let mut llama_env = Vec::new();
        let mut knobs = toml::Table::new();
        let mut seen: Vec<&str> = Vec::new();
        for v in &vars {
            if seen.contains(&v.key.as_str()) {
                continue;
            }
            seen.push(&v.key);
            let Some(v) = last(&v.key) else { continue };
            if vars.iter().filter(|w| w.key == v.key).count() > 1 {
                warnings.push(format!("{} is set more than once; the last value (line {}) counts", v.key, v.line));
            }
            if flag_names.contains(&v.key) || MODEL_VARS.contains(&v.key.as_str()) {
                continue;
            } else if flags::is_flag_env_var(&v.key) {
                llama_env.push((v.key.clone(), v.value.clone()));
            } else if is_flags_var_name(&v.key) {
                warnings.push(format!("{} (line {}) may hold flags but was not named; ignored", v.key, v.line));
            } else if let Some((_, read)) = KNOBS.iter().find(|(name, _)| *name == v.key) {
                let value = read_knob(&v.key, *read, &v.value, &mut warnings).map_err(|e| err(e.to_string()))?;
                knobs.insert(v.key.clone(), value);
            } else {
                warnings.push(format!("{} (line {}): not a variable this runner knows; ignored", v.key, v.line));
            }
        }
        for name in &flag_names {
            if let Some(v) = last(name) {
                flag_text.push(v.value.clone());
            }
        }
        let parsed = flags::split(&flag_text.join(" "))
            .and_then(|args| flags::parse_quietly(&llama_env, &args))
            .map_err(|e| {
                let from =
                    if flag_names.is_empty() { "LLAMA_ARG_* variables".to_string() } else { flag_names.join(", ") };
                err(format!("{from}: {e}"))
            })?;
        let prefix = if flag_names.is_empty() { String::new() } else { format!("{}: ", flag_names.join(", ")) };
        warnings.extend(parsed.warnings.into_iter().map(|w| format!("{prefix}{w}")));
        let mut options = parsed.options;
        options.backend.env = knobs.try_into().map_err(|e: toml::de::Error| err(e.to_string()))?;

        let flags_model = options.model_path.take();
        let var_model = model_names.first().and_then(|n| last(n)).map(|v| (v.key.clone(), PathBuf::from(&v.value)));
        let model = match (flags_model, var_model) {
            (Some(m), Some((name, p))) => {
                if m != p {
                    warnings.push(format!("-m {} from the flags replaces {name}={}", m.display(), p.display()));
                }
                m
            }
            (Some(m), None) => m,
            (None, Some((name, p))) => {
                if p.as_os_str().is_empty() {
                    return Err(err(format!("{name} is empty")));
                }
                p
            }
            (None, None) => {
                return Err(err(format!("no model: set {} or put -m in the flags", MODEL_VARS.join(", "))));
            }
        };

        let mut config = Config {
            name: default_name(origin),
            description: format!("migrated from {}", origin.display()),
            origin: origin.to_path_buf(),
            model: ModelSource::File(model),
            options,
            workloads: default_workloads(),
            warnings,
        };
        config.check(true)?;
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
            ModelSource::Generated(g) => Err(Error::Config {
                path: self.origin.clone(),
                reason: format!(
                    "the model is the generated preset `{g}`: generate it (`tiny-gguf --preset {g}`) and pass its \
                     path to Config::run_options_with_model"
                ),
            }),
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
        let origin = self.origin.clone();
        let err = |reason: String| Error::Config { path: origin.clone(), reason };
        // Not `validate::model_options`: that also checks device names against this machine,
        // and a configuration for a GPU machine must load anywhere.
        llama_runner::validate::portable_model_options(&self.options.model).map_err(|e| err(e.to_string()))?;
        let c = &self.options.context;
        let known = self.known_context_length();
        if let (Some(train), true) = (known, c.n_ctx > 0)
            && c.n_ctx > train
        {
            return Err(err(format!(
                "n_ctx {} is larger than the {train} tokens the generated model was trained for",
                c.n_ctx
            )));
        }
        let capacity = Capacity::of(c, known);
        if implicit_workloads {
            let (fit, dropped): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.workloads).into_iter().partition(|w| capacity.misfit(w).is_none());
            if fit.is_empty()
                && let Some(w) = dropped.first()
            {
                return Err(err(format!(
                    "workload `{}`: {} (no preset fits; name workloads that do)",
                    w.name,
                    capacity.misfit(w).unwrap_or_default()
                )));
            }
            for w in &dropped {
                self.warnings.push(format!(
                    "preset workload `{}` left out: {}",
                    w.name,
                    capacity.misfit(w).unwrap_or_default()
                ));
            }
            self.workloads = fit;
        }
        let mut names: Vec<&str> = Vec::new();
        for w in &self.workloads {
            let bad = |reason: String| err(format!("workload `{}`: {reason}", w.name));
            if w.name.is_empty() {
                return Err(err("a workload has an empty name".into()));
            }
            if names.contains(&w.name.as_str()) {
                return Err(bad("given twice".into()));
            }
            names.push(&w.name);
            if w.n_prompt == 0 && w.n_gen == 0 {
                return Err(bad("n_prompt and n_gen are both 0".into()));
            }
            if w.repetitions == 0 {
                return Err(bad("repetitions must be at least 1".into()));
            }
            if w.turns == 0 {
                return Err(bad("turns must be at least 1".into()));
            }
            if w.turns > 1 && w.n_depth > 0 {
                return Err(bad("n_depth and several turns cannot be combined".into()));
            }
            if let Some(why) = capacity.misfit(w) {
                return Err(bad(why));
            }
        }
        Ok(())
    }

    fn log_warnings(&self) {
        for w in &self.warnings {
            log::warn!("{}: {w}", self.origin.display());
        }
    }
}

/// KV cells one workload's sequence gets, when known.
struct Capacity {
    cells: Option<u32>,
    what: String,
}

impl Capacity {
    fn of(c: &ContextOptions, known_context_length: Option<u32>) -> Capacity {
        let n_ctx = if c.n_ctx > 0 { Some(c.n_ctx) } else { known_context_length };
        let Some(n) = n_ctx else { return Capacity { cells: None, what: String::new() } };
        let base = if c.n_ctx > 0 { format!("n_ctx {n}") } else { format!("the model's {n}") };
        if c.kv_unified || c.n_seq_max <= 1 {
            Capacity { cells: Some(n), what: base }
        } else {
            let per = n / c.n_seq_max;
            Capacity { cells: Some(per), what: format!("{base} ({per} per sequence with {} sequences)", c.n_seq_max) }
        }
    }

    /// Why `w` does not fit, if it does not.
    fn misfit(&self, w: &Workload) -> Option<String> {
        let needed = u64::from(w.n_depth) + u64::from(w.turns) * (u64::from(w.n_prompt) + u64::from(w.n_gen));
        let cells = self.cells?;
        (needed > u64::from(cells)).then(|| {
            format!(
                "needs {needed} KV cells (n_depth {} + {} turn(s) × (n_prompt {} + n_gen {})), more than {}",
                w.n_depth, w.turns, w.n_prompt, w.n_gen, self.what
            )
        })
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

/// Merges the keys of `over` into the serialized `base`, warning where a key replaces a value
/// that differs from the default (one set by `flags`), and deserializes the result.
fn overlay<T>(base: &T, over: &toml::Table, section: &str, warnings: &mut Vec<String>) -> std::result::Result<T, String>
where
    T: Serialize + DeserializeOwned + Default,
{
    let ser = |v: &T| toml::Table::try_from(v).map_err(|e| format!("[{section}]: {e}"));
    let mut merged = ser(base)?;
    let defaults = ser(&T::default())?;
    merge(&mut merged, over, Some(&defaults), section, warnings);
    merged.try_into().map_err(|e: toml::de::Error| format!("[{section}]: {}", e.to_string().trim_end()))
}

fn merge(
    base: &mut toml::Table,
    over: &toml::Table,
    defaults: Option<&toml::Table>,
    path: &str,
    warnings: &mut Vec<String>,
) {
    for (key, value) in over {
        let default = defaults.and_then(|d| d.get(key));
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                let d = match default {
                    Some(toml::Value::Table(d)) => Some(d),
                    _ => None,
                };
                merge(b, o, d, &format!("{path}.{key}"), warnings);
            }
            (old, _) => {
                if let Some(old) = old
                    && old != value
                    && default != Some(old)
                {
                    warnings.push(format!("[{path}] {key} = {value} replaces {old} set by `flags`"));
                }
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// .env files.

const MODEL_VARS: [&str; 4] = ["MODEL", "MODEL_PATH", "MODEL_FILE", "LLAMA_MODEL"];

fn is_flags_var_name(name: &str) -> bool {
    !name.starts_with("LLAMA_ARG_")
        && (matches!(name, "ARGS" | "FLAGS" | "LLAMA_ARG") || name.ends_with("_ARGS") || name.ends_with("_FLAGS"))
}

struct EnvVar {
    key: String,
    value: String,
    line: usize,
}

fn parse_env_text(text: &str, warnings: &mut Vec<String>) -> std::result::Result<Vec<EnvVar>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut vars = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export").filter(|r| r.starts_with([' ', '\t'])).map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            return Err(format!("line {line_no}: `{line}` is not NAME=value"));
        };
        let key = key.trim_end();
        let valid = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !key.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(format!("line {line_no}: `{key}` is not a variable name"));
        }
        let mut raw = rest.trim_start().to_string();
        while shlex::split(&raw).is_none() {
            let Some(next) = lines.get(i) else {
                return Err(format!("line {line_no}: {key}'s value has an unclosed quote or ends with `\\`"));
            };
            raw.push('\n');
            raw.push_str(next);
            i += 1;
        }
        let words = shlex::split(&raw).unwrap_or_default();
        let value = match words.len() {
            0 => String::new(),
            1 => words.into_iter().next().unwrap_or_default(),
            _ if raw.starts_with(['"', '\'']) => {
                warnings.push(format!("line {line_no}: text after {key}'s closing quote is ignored"));
                words.into_iter().next().unwrap_or_default()
            }
            _ => {
                let literal = match raw.find(" #") {
                    Some(p) => raw[..p].trim_end().to_string(),
                    None => raw.trim_end().to_string(),
                };
                warnings.push(format!(
                    "line {line_no}: {key}'s unquoted value holds spaces; it is taken literally, as docker compose \
                     reads it (a shell would not), so quote it"
                ));
                literal
            }
        };
        vars.push(EnvVar { key: key.to_string(), value, line: line_no });
    }
    Ok(vars)
}

/// How ggml reads an environment knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnobRead {
    /// On when set, whatever the value.
    Presence,
    /// On when `atoi(value) == 1`.
    One,
    /// On when `atoi(value) != 0`.
    NonZero,
    /// A number (`atoi`).
    Number,
    /// A string.
    Text,
}

/// Every field of [`EnvKnobs`], by variable name, with the way ggml reads it (ggml-cuda.cu:4211,
/// common.cuh:1257, ggml-cuda.cu:3160, common.cuh:1653, ggml-cuda.cu:141/1274/4509/392/5373/1630,
/// ggml-cpu.c:3887, llama-context.cpp:275, llama-kv-cache.cpp:340).
const KNOBS: [(&str, KnobRead); 13] = [
    ("GGML_CUDA_GRAPH_OPT", KnobRead::One),
    ("GGML_CUDA_DISABLE_GRAPHS", KnobRead::Presence),
    ("GGML_CUDA_DISABLE_FUSION", KnobRead::NonZero),
    ("GGML_CUDA_PDL", KnobRead::NonZero),
    ("GGML_CUDA_ENABLE_UNIFIED_MEMORY", KnobRead::Presence),
    ("GGML_CUDA_NO_PINNED", KnobRead::Presence),
    ("GGML_CUDA_REGISTER_HOST", KnobRead::Presence),
    ("GGML_CUDA_P2P", KnobRead::Presence),
    ("GGML_OP_OFFLOAD_MIN_BATCH", KnobRead::Number),
    ("GGML_CUDA_CUBLAS_COMPUTE_TYPE", KnobRead::Text),
    ("GGML_CPU_DISABLE_FUSION", KnobRead::One),
    ("LLAMA_GRAPH_REUSE_DISABLE", KnobRead::NonZero),
    ("LLAMA_ATTN_ROT_DISABLE", KnobRead::NonZero),
];

/// C `atoi`: the leading decimal number, 0 when there is none.
fn atoi(v: &str) -> i64 {
    flags::c_atoi(v)
}

fn read_knob(name: &str, read: KnobRead, v: &str, warnings: &mut Vec<String>) -> Result<toml::Value> {
    let on = match read {
        KnobRead::Presence => true,
        KnobRead::One => atoi(v) == 1,
        KnobRead::NonZero => atoi(v) != 0,
        KnobRead::Number => {
            let n = atoi(v);
            if n.to_string() != v.trim() {
                warnings.push(format!("{name}={v} is read as {n} (ggml uses atoi)"));
            }
            let n = u32::try_from(n).map_err(|_| {
                Error::from(llama_runner::Error::Flag {
                    flag: name.to_string(),
                    value: Some(v.to_string()),
                    reason: "not a non-negative number".into(),
                })
            })?;
            return Ok(toml::Value::Integer(i64::from(n)));
        }
        KnobRead::Text => return Ok(toml::Value::String(v.to_string())),
    };
    let lower = v.trim().to_ascii_lowercase();
    let looks_on = matches!(lower.as_str(), "1" | "true" | "on" | "yes" | "y" | "enabled");
    let looks_off = matches!(lower.as_str(), "" | "0" | "false" | "off" | "no" | "n" | "disabled");
    if (looks_on && !on) || (looks_off && on) {
        let how = match read {
            KnobRead::Presence => "ggml only checks that the variable is set",
            KnobRead::One => "ggml turns it on only when atoi(value) == 1",
            _ => "ggml turns it on only when atoi(value) != 0",
        };
        warnings.push(format!("{name}={v} means {}: {how}", if on { "on" } else { "off" }));
    }
    Ok(toml::Value::Boolean(on))
}
