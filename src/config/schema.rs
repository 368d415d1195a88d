//! The TOML schema: the file as written ([`ConfigFile`], every table refusing unknown keys) and
//! how its typed tables override the options its `flags` set, key by key.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Config, GeneratedModel, ModelSource, WORKLOAD_PRESETS, Workload, default_name, preset_workload};
use crate::error::{Error, FlagsFrom, ModelProblem, Result, WorkloadProblem};
use llama_runner::backend::BackendOptions;
use llama_runner::flags;
use llama_runner::knobs::EnvKnobs;
use llama_runner::options::{ContextOptions, ModelOptions, RunOptions};
use llama_runner::sampling::SamplingOptions;

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
    #[serde(rename = "sampling")]
    _sampling: Option<SamplingOptions>,
    workloads: Option<Vec<String>>,
    #[serde(default)]
    workload: Vec<Workload>,
}

/// Reads TOML text into a configuration (see [`Config::from_toml_str`]).
pub(super) fn read(text: &str, origin: &Path) -> Result<Config> {
    let path = || origin.to_path_buf();
    let syntax = |source| Error::ConfigSyntax { path: path(), source: Box::new(source) };
    let file: ConfigFile = toml::from_str(text).map_err(syntax)?;
    let raw: toml::Table = text.parse().map_err(syntax)?;
    let mut warnings = Vec::new();

    let (mut options, flags_model) = match &file.flags {
        Some(f) => {
            let parsed = flags::split(f).and_then(|args| flags::parse_quietly(&[], &args)).map_err(|source| {
                Error::ConfigFlags { path: path(), from: FlagsFrom::Key, source: Box::new(source) }
            })?;
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
            Some(_) => Err(Error::ConfigKey { path: path(), key: key.to_string(), expected: "a table" }),
        }
    };
    if let Some(t) = table("model")? {
        options.model = overlay(&options.model, t, "model", origin, &mut warnings)?;
    }
    if let Some(t) = table("context")? {
        options.context = overlay(&options.context, t, "context", origin, &mut warnings)?;
    }
    if let Some(t) = table("backend")? {
        options.backend = overlay(&options.backend, t, "backend", origin, &mut warnings)?;
    }
    if let Some(t) = table("env")? {
        options.backend.env = overlay(&options.backend.env, t, "env", origin, &mut warnings)?;
    }
    if let Some(t) = table("sampling")? {
        options.sampling = overlay(&options.sampling, t, "sampling", origin, &mut warnings)?;
    }

    let model_error = |problem| Error::ConfigModel { path: path(), problem };
    let model = match (file.model_path, file.generated, flags_model) {
        (Some(_), Some(_), _) | (None, Some(_), Some(_)) => return Err(model_error(ModelProblem::GivenTwice)),
        (Some(path), None, m) => {
            if let Some(m) = m
                && m != path
            {
                warnings.push(format!("`model_path = {}` replaces `-m {}` from `flags`", path.display(), m.display()));
            }
            ModelSource::File(path)
        }
        (None, None, Some(m)) => ModelSource::File(m),
        (None, Some(g), None) => ModelSource::Generated(g),
        (None, None, None) => return Err(model_error(ModelProblem::Missing)),
    };
    if let ModelSource::File(p) = &model
        && p.as_os_str().is_empty()
    {
        return Err(model_error(ModelProblem::Empty { key: "model_path".to_string() }));
    }

    let mut workloads = Vec::new();
    let custom = file.workload;
    let implicit = file.workloads.is_none() && custom.is_empty();
    let names = match file.workloads {
        Some(names) => names,
        None if custom.is_empty() => WORKLOAD_PRESETS.iter().map(|s| (*s).to_string()).collect(),
        None => Vec::new(),
    };
    let workload_error =
        |workload: &str, problem| Error::ConfigWorkload { path: path(), workload: workload.to_string(), problem };
    for n in &names {
        let preset = preset_workload(n)
            .ok_or_else(|| workload_error(n, WorkloadProblem::UnknownPreset { presets: &WORKLOAD_PRESETS }))?;
        workloads.push(preset);
    }
    for w in custom {
        if preset_workload(&w.name).is_some() {
            return Err(workload_error(&w.name, WorkloadProblem::PresetName));
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
    Ok(config)
}

/// Merges the keys of `over` into the serialized `base`, warning where a key replaces a value
/// that differs from the default (one set by `flags`), and deserializes the result.
fn overlay<T>(base: &T, over: &toml::Table, section: &str, origin: &Path, warnings: &mut Vec<String>) -> Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    let ser = |v: &T| {
        toml::Table::try_from(v)
            .map_err(|source| Error::Serialize { what: section.to_string(), source: Box::new(source) })
    };
    let mut merged = ser(base)?;
    let defaults = ser(&T::default())?;
    merge(&mut merged, over, Some(&defaults), section, warnings);
    merged.try_into().map_err(|source| Error::ConfigTable {
        path: origin.to_path_buf(),
        table: section.to_string(),
        source: Box::new(source),
    })
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
