//! The legacy `.env` dialect: `KEY=value` lines as a shell (or docker compose) reads them, a
//! flag string in `LLAMA_ARGS` (or another `*_ARGS`/`*_FLAGS` variable), the model in
//! `MODEL`, llama.cpp's `LLAMA_ARG_*` variables and ggml's environment knobs.

use std::path::{Path, PathBuf};

use super::knobs::{knob_read, read_knob};
use super::{Config, ModelSource, default_name, default_workloads};
use crate::error::{EnvLineProblem, Error, FlagVarsProblem, FlagsFrom, ModelProblem, Result};
use llama_runner::flags;

/// The variables that may name the model.
pub(super) const MODEL_VARS: [&str; 4] = ["MODEL", "MODEL_PATH", "MODEL_FILE", "LLAMA_MODEL"];

pub(super) fn is_flags_var_name(name: &str) -> bool {
    !name.starts_with("LLAMA_ARG_")
        && (matches!(name, "ARGS" | "FLAGS" | "LLAMA_ARG") || name.ends_with("_ARGS") || name.ends_with("_FLAGS"))
}

struct EnvVar {
    key: String,
    value: String,
    line: usize,
}

/// The `KEY=value` assignments of `text`, as a shell reads them; a line that cannot be read is
/// the error, with its number.
fn parse_env_text(text: &str, warnings: &mut Vec<String>) -> std::result::Result<Vec<EnvVar>, (usize, EnvLineProblem)> {
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
            return Err((line_no, EnvLineProblem::NotAssignment { text: line.to_string() }));
        };
        let key = key.trim_end();
        let valid = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !key.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err((line_no, EnvLineProblem::BadName { name: key.to_string() }));
        }
        let mut raw = rest.trim_start().to_string();
        while shlex::split(&raw).is_none() {
            let Some(next) = lines.get(i) else {
                return Err((line_no, EnvLineProblem::Unclosed { name: key.to_string() }));
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

/// Reads legacy `.env` text into a configuration (see [`Config::from_env_str`]).
pub(super) fn read(text: &str, origin: &Path, flags_vars: &[&str]) -> Result<Config> {
    let path = || origin.to_path_buf();
    let mut warnings = Vec::new();
    let vars = parse_env_text(text, &mut warnings).map_err(|(line, problem)| Error::EnvLine {
        path: path(),
        line,
        problem,
    })?;

    let last = |name: &str| vars.iter().rev().find(|v| v.key == name);
    let flag_names: Vec<String> = if flags_vars.is_empty() {
        let mut found: Vec<String> = Vec::new();
        for v in &vars {
            if is_flags_var_name(&v.key) && !found.contains(&v.key) {
                found.push(v.key.clone());
            }
        }
        if found.len() > 1 {
            return Err(Error::EnvFlagVars { path: path(), problem: FlagVarsProblem::Ambiguous { found } });
        }
        found
    } else {
        for name in flags_vars {
            if last(name).is_none() {
                return Err(Error::EnvFlagVars {
                    path: path(),
                    problem: FlagVarsProblem::Missing { name: (*name).to_string() },
                });
            }
        }
        flags_vars.iter().map(|s| s.to_string()).collect()
    };
    let model_names: Vec<&str> = MODEL_VARS.iter().copied().filter(|n| last(n).is_some()).collect();
    if model_names.len() > 1 {
        let vars = model_names.iter().map(|s| s.to_string()).collect();
        return Err(Error::ConfigModel { path: path(), problem: ModelProblem::SeveralVars { vars } });
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
        } else if let Some(read) = knob_read(&v.key) {
            let value = read_knob(&v.key, read, &v.value, &mut warnings).ok_or_else(|| Error::EnvKnob {
                path: path(),
                line: v.line,
                name: v.key.clone(),
                value: v.value.clone(),
            })?;
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
    let parsed = flags::split(&flag_text.join(" ")).and_then(|args| flags::parse_quietly(&llama_env, &args)).map_err(
        |source| {
            let from =
                if flag_names.is_empty() { FlagsFrom::LlamaArgVars } else { FlagsFrom::Vars(flag_names.clone()) };
            Error::ConfigFlags { path: path(), from, source: Box::new(source) }
        },
    )?;
    let prefix = if flag_names.is_empty() { String::new() } else { format!("{}: ", flag_names.join(", ")) };
    warnings.extend(parsed.warnings.into_iter().map(|w| format!("{prefix}{w}")));
    let mut options = parsed.options;
    options.backend.env = knobs.try_into().map_err(|source| Error::ConfigTable {
        path: path(),
        table: "env".to_string(),
        source: Box::new(source),
    })?;

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
                return Err(Error::ConfigModel { path: path(), problem: ModelProblem::Empty { key: name } });
            }
            p
        }
        (None, None) => {
            return Err(Error::ConfigModel { path: path(), problem: ModelProblem::MissingVar { vars: &MODEL_VARS } });
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
    Ok(config)
}
