//! Pieces of the `llama-runner` command that other front ends (the bisect step, the sweep) share.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::measure::{Workload, run_workload};
use crate::record::{BuildRecord, Machine, MemorySnapshot, ModelRecord, Record, now_rfc3339};
use llama_runner::backend::Backend;
use llama_runner::context::Context;
use llama_runner::model::Model;
use llama_runner::options::RunOptions;

/// What to run and how to label it.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Name of the configuration.
    pub name: String,
    /// Configuration file, if any.
    pub config_path: Option<PathBuf>,
    /// Resolved options (with a model path).
    pub options: RunOptions,
    /// Workloads in order.
    pub workloads: Vec<Workload>,
    /// Whether to hash the model file into the record.
    pub hash_model: bool,
}

/// Runs a plan: initialises the backend with the plan's once-per-process settings, loads the
/// model, runs every workload (a fresh context each, as llama-bench), and returns the record.
/// `progress` is called before each workload with its name.
pub fn run_plan(plan: &BenchPlan, mut progress: impl FnMut(&str)) -> Result<Record> {
    let started_at = now_rfc3339();
    let path = plan.options.model_path.clone().ok_or_else(|| Error::InvalidOption {
        option: "model (-m)".into(),
        reason: format!("configuration `{}` names no model", plan.name),
    })?;
    let backend = Backend::init(&plan.options.backend)?;
    let machine = Machine::current();
    let mut memory = vec![MemorySnapshot::take(backend, "before load")];
    let model = Model::load(backend, &path, &plan.options.model)?;
    memory.push(MemorySnapshot::take(backend, "after load"));
    let info = model.info();
    let mut warnings = machine.warnings(info.size_bytes);
    for w in &warnings {
        log::warn!("{w}");
    }
    {
        // Context memory at the size of the largest workload, measured once.
        let needed = plan.workloads.iter().map(Workload::n_cells).max().unwrap_or(0);
        let _ctx = Context::new(&model, &crate::measure::bench_context_options(&plan.options.context, needed))?;
        memory.push(MemorySnapshot::take(backend, "after context"));
    }
    let mut results = Vec::new();
    for w in &plan.workloads {
        progress(&w.name);
        results.push(run_workload(&model, &plan.options.context, w)?);
    }
    let after = Machine::current();
    if after.swap_used > machine.swap_used {
        warnings.push(format!("swap use grew during the run by {} MiB", (after.swap_used - machine.swap_used) >> 20));
    }
    Ok(Record {
        schema: crate::record::SCHEMA,
        config: plan.name.clone(),
        config_path: plan.config_path.clone(),
        flags: llama_runner::flags::render(&plan.options, llama_runner::flags::Dialect::Server).command_line(),
        options: plan.options.clone(),
        build: BuildRecord::current(backend),
        model: ModelRecord::new(&path, info, plan.hash_model)?,
        machine,
        memory,
        warnings,
        workloads: results,
        started_at,
        finished_at: now_rfc3339(),
    })
}

/// Where a record of configuration `name` goes in `dir`: `<name>-<UTC timestamp>.json`.
pub fn record_path(dir: &Path, name: &str) -> PathBuf {
    let stamp: String = now_rfc3339().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    dir.join(format!("{safe}-{stamp}.json"))
}
