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
    if plan.options.speculative.drafter()?.is_some() {
        return Err(Error::InvalidOption {
            option: "--spec-type / -md".into(),
            reason: format!(
                "configuration `{}`: the benchmark does not run speculative decoding yet (generate does)",
                plan.name
            ),
        });
    }
    if !plan.options.adapters.is_empty() {
        return Err(Error::InvalidOption {
            option: "--lora / --control-vector".into(),
            reason: format!(
                "configuration `{}`: the benchmark does not apply LoRA adapters or control vectors (generate and chat \
                 do)",
                plan.name
            ),
        });
    }
    let backend = Backend::init(&plan.options.backend)?;
    let machine = Machine::current();
    let mut memory = vec![MemorySnapshot::take(backend, "before load")];
    let model: Model = crate::progress::load_model(backend, &path, &plan.options.model)?;
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

/// Where a record of configuration `name` goes in `dir`: `<name>-<UTC timestamp>.json`. The
/// stamp has one-second resolution: write through [`write_new_record`] (or check with
/// [`unused_record_path`]), which adds a `-2`, `-3`, ... suffix where the name is taken.
pub fn record_path(dir: &Path, name: &str) -> PathBuf {
    let stamp: String = now_rfc3339().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    dir.join(format!("{}-{stamp}.json", safe_stem(name)))
}

/// `name` with every character but ASCII letters, digits, `-` and `_` replaced by `_`.
fn safe_stem(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// `path`, then `path` with `-2`, `-3`, ... before its extension: the names a new record may take.
fn suffixed(path: PathBuf) -> impl Iterator<Item = PathBuf> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let base = path.clone();
    std::iter::once(path).chain((2..10_000).map(move |n| base.with_file_name(format!("{stem}-{n}{ext}"))))
}

/// The first of [`record_path`]`(dir, name)` and its suffixed forms that names no file yet (and
/// no file of `taken`). A check, not a reservation: write with [`write_record`]`(…, true)`, which
/// refuses to replace a file created meanwhile.
pub fn unused_record_path(dir: &Path, name: &str, taken: &[PathBuf]) -> PathBuf {
    let first = record_path(dir, name);
    suffixed(first.clone())
        .find(|p| !taken.contains(p) && !p.exists() && !p.with_extension("jsonl").exists())
        .unwrap_or(first)
}

/// Writes `record` as a new file in `dir`, named by [`record_path`], or with a `-2`, `-3`, ...
/// suffix where that name is taken, and its llama-bench JSONL beside it; returns the record's
/// path. Never replaces a file, also when several processes write records of one name in the
/// same second.
pub fn write_new_record(dir: &Path, name: &str, record: &Record) -> Result<PathBuf> {
    let path = publish_new(suffixed(record_path(dir, name)), |tmp| record.write_json(tmp))?;
    write_jsonl(&path, record)?;
    Ok(path)
}

/// Writes `record` at `path` (and its llama-bench JSONL beside it, `.jsonl`). With `no_clobber`,
/// an existing file at `path` is an error, not replaced.
pub fn write_record(path: &Path, record: &Record, no_clobber: bool) -> Result<()> {
    if no_clobber {
        publish_new(std::iter::once(path.to_path_buf()), |tmp| record.write_json(tmp))?;
    } else {
        record.write_json(path)?;
    }
    write_jsonl(path, record)
}

/// The llama-bench JSONL of the record at `path`: beside it, with extension `.jsonl`.
fn write_jsonl(path: &Path, record: &Record) -> Result<()> {
    crate::record::write_atomic(&path.with_extension("jsonl"), record.to_llama_bench_jsonl().as_bytes())
}

/// Writes a file complete (`write` fills a temporary file beside the first candidate), then gives
/// it the first candidate name that is free: a hard link fails where the name exists, so a file is
/// never replaced and never seen half-written. Where the file system has no hard links, the
/// record is written into a file created with `create_new` instead.
fn publish_new(candidates: impl Iterator<Item = PathBuf>, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    use std::io::{ErrorKind, Write};
    use std::sync::atomic::{AtomicU32, Ordering};
    static TMP: AtomicU32 = AtomicU32::new(0);
    let mut candidates = candidates.peekable();
    let first = candidates.peek().cloned().unwrap_or_default();
    let dir = first.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".new-record.{}.{}.tmp", std::process::id(), TMP.fetch_add(1, Ordering::Relaxed)));
    write(&tmp)?;
    let result = (|| {
        let mut last = first;
        for c in candidates {
            match std::fs::hard_link(&tmp, &c) {
                Ok(()) => return Ok(c),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(_) => match std::fs::OpenOptions::new().write(true).create_new(true).open(&c) {
                    Ok(mut f) => {
                        let io = |e| Error::Io { path: c.clone(), source: e };
                        f.write_all(&std::fs::read(&tmp).map_err(io)?).map_err(io)?;
                        f.sync_all().map_err(io)?;
                        return Ok(c);
                    }
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::Io { path: c, source: e }),
                },
            }
            last = c;
        }
        Err(Error::Io { path: last, source: std::io::Error::from(ErrorKind::AlreadyExists) })
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("llama-workbench-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn publish(first: &Path, text: &str) -> Result<PathBuf> {
        publish_new(suffixed(first.to_path_buf()), |tmp| crate::record::write_atomic(tmp, text.as_bytes()))
    }

    #[test]
    fn records_of_one_name_and_second_never_replace_each_other() {
        let dir = scratch("suffix");
        let first = dir.join("cpu-tiny-20260101T000000Z.json");
        let names: Vec<PathBuf> = ["a", "b", "c"].iter().map(|t| publish(&first, t).unwrap()).collect();
        let file = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            names.iter().map(file).collect::<Vec<_>>(),
            ["cpu-tiny-20260101T000000Z.json", "cpu-tiny-20260101T000000Z-2.json", "cpu-tiny-20260101T000000Z-3.json"]
        );
        for (p, t) in names.iter().zip(["a", "b", "c"]) {
            assert_eq!(std::fs::read_to_string(p).unwrap(), t);
        }
        // Only the three records: no temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
        // One candidate only (`--record PATH --no-clobber`): taken is an error, the file intact.
        let err =
            publish_new(std::iter::once(first.clone()), |tmp| crate::record::write_atomic(tmp, b"d")).unwrap_err();
        assert!(err.to_string().contains("cpu-tiny-20260101T000000Z.json"), "{err}");
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "a");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unused_record_path_skips_files_and_paths_taken() {
        let dir = scratch("unused");
        let first = record_path(&dir, "a b");
        assert!(first.file_name().unwrap().to_string_lossy().starts_with("a_b-"));
        let p = unused_record_path(&dir, "a b", &[]);
        // The stamp may tick between the two calls; the name is the first free one either way.
        assert!(!p.exists());
        std::fs::write(&p, "").unwrap();
        let q = unused_record_path(&dir, "a b", std::slice::from_ref(&p));
        assert_ne!(p, q);
        let r = unused_record_path(&dir, "a b", &[p.clone(), q.clone()]);
        assert!(r != p && r != q);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
