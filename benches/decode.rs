//! In-process decode benchmark: prompt processing and generation tokens/s, no server.
//!
//! ```text
//! cargo bench --bench decode                                # generated MoE model (~62 MiB, Q8_0)
//! LLAMA_BENCH_MODEL=/models/x.gguf cargo bench --bench decode
//! LLAMA_BENCH_CONFIGS=configs/cpu-bench-moe.toml,configs/cpu-bench-moe-cmoe.toml cargo bench --bench decode
//! cargo bench --bench decode -- --save-baseline before      # later: -- --baseline before
//! ```
//!
//! Without configurations it measures pp512 and tg128 (`LLAMA_BENCH_PROMPT`, `LLAMA_BENCH_GEN`,
//! `LLAMA_BENCH_THREADS` change them) on `LLAMA_BENCH_MODEL` or the generated default model.
//! With `LLAMA_BENCH_CONFIGS` it measures every workload of every configuration: a pp and a tg
//! benchmark per workload, at the workload's depth. Environment knobs are read once per process,
//! so configurations whose knobs differ from the first one's are skipped (use
//! `llama-runner sweep` for those).
//!
//! The model is loaded and the context created once per configuration, outside the timed
//! region. Each iteration resets the KV cache (untimed) and times one prompt pass or one
//! generation run with the code `llama-runner bench` uses (`llama_workbench::measure`). Criterion
//! reports tokens/s (`Throughput::Elements`).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use llama_runner::{Backend, ContextOptions, Model, RunOptions, build_info};
use llama_workbench::config::{Config, GeneratedModel, ModelSource};
use llama_workbench::measure::{Bench, Workload};
use tiny_gguf::ModelSpec;

fn env_u32(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn generated_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-models");
    std::fs::create_dir_all(&dir).expect("create the bench model directory");
    dir
}

fn generate(spec: &ModelSpec) -> PathBuf {
    tiny_gguf::cached(spec, &generated_dir()).expect("generate the bench model")
}

/// One thing to measure: a name, options and workloads.
struct Plan {
    name: String,
    options: RunOptions,
    workloads: Vec<Workload>,
}

fn plans() -> Vec<Plan> {
    if let Ok(list) = std::env::var("LLAMA_BENCH_CONFIGS") {
        return list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|p| {
                let path = Path::new(p.trim());
                let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
                let options = match config.model() {
                    ModelSource::Generated(g) => config.run_options_with_model(generate(&preset(*g))),
                    ModelSource::File(_) => config.run_options().unwrap_or_else(|e| panic!("{e}")),
                };
                Plan { name: config.name().to_string(), options, workloads: config.workloads() }
            })
            .collect();
    }
    let path = std::env::var_os("LLAMA_BENCH_MODEL").map_or_else(|| generate(&ModelSpec::bench_moe()), PathBuf::from);
    let mut options = RunOptions { model_path: Some(path.clone()), ..Default::default() };
    if let Ok(t) = std::env::var("LLAMA_BENCH_THREADS") {
        options.context.n_threads = Some(t.parse().expect("LLAMA_BENCH_THREADS is not a number"));
    }
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let workload = Workload {
        repetitions: 1,
        ..Workload::new("default", env_u32("LLAMA_BENCH_PROMPT", 512), env_u32("LLAMA_BENCH_GEN", 128))
    };
    vec![Plan { name, options, workloads: vec![workload] }]
}

fn preset(g: GeneratedModel) -> ModelSpec {
    ModelSpec::preset(g.name()).unwrap_or_else(|| panic!("tiny-gguf has no preset `{g}`"))
}

fn measure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, plan: &Plan, model: &Model) {
    let ctx: &ContextOptions = &plan.options.context;
    for w in &plan.workloads {
        // Several turns are measured as one turn's sizes: criterion times one pass at a time.
        let depth = if w.n_depth > 0 { format!("@d{}", w.n_depth) } else { String::new() };
        for (kind, n) in [("pp", w.n_prompt), ("tg", w.n_gen)] {
            if n == 0 {
                continue;
            }
            // A context sized for this test alone, as llama-bench and `llama-runner bench` do.
            let mut bench = match Bench::new(model, ctx, w.n_depth + n) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{} / {}: skipped: {e}", plan.name, w.name);
                    continue;
                }
            };
            // One untimed run (llama-bench's warm-up) also tells how long an iteration takes:
            // give criterion time for its 10 samples of at least one iteration each.
            let once = bench
                .reset(w.n_depth)
                .and_then(|()| if kind == "pp" { bench.time_prompt(n) } else { bench.time_generation(n) });
            let once = match once {
                Ok(ns) => Duration::from_nanos(ns),
                Err(e) => {
                    eprintln!("{} / {}: skipped: {e}", plan.name, w.name);
                    continue;
                }
            };
            group.measurement_time(MEASUREMENT.max(once.mul_f64(SAMPLES as f64 * 1.2)));
            group.throughput(Throughput::Elements(n.into()));
            let id = BenchmarkId::new(format!("{}/{}", plan.name, w.name), format!("{kind}{n}{depth}"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        bench.reset(w.n_depth).expect("reset the cache");
                        let ns = if kind == "pp" { bench.time_prompt(n) } else { bench.time_generation(n) };
                        total += Duration::from_nanos(black_box(ns.expect("decode")));
                    }
                    total
                })
            });
        }
    }
}

/// Criterion samples per benchmark (flat sampling: each sample runs whole iterations).
const SAMPLES: usize = 10;
/// Measurement time per benchmark, raised for workloads whose 10 iterations take longer.
const MEASUREMENT: Duration = Duration::from_secs(10);

fn decode(c: &mut Criterion) {
    let plans = plans();
    let Some(first) = plans.first() else { return };
    // SAFETY: criterion (without its rayon feature) runs benchmark functions on the main thread
    // and has started no thread yet, nor has llama.cpp: nothing reads the environment while the
    // first configuration's knobs are written.
    let backend = unsafe { Backend::init_setting_env(&first.options.backend) }.expect("initialise the backend");
    let mut group = c.benchmark_group("decode");
    group.sample_size(SAMPLES).sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(2)).measurement_time(MEASUREMENT);
    for plan in &plans {
        if plan.options.backend != *backend.options() {
            eprintln!("{}: skipped: its environment knobs need a process of their own (llama-runner sweep)", plan.name);
            continue;
        }
        let path = plan.options.model_path.clone().expect("a model path");
        let model = match Model::load(backend, &path, &plan.options.model) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{}: skipped: {e}", plan.name);
                continue;
            }
        };
        let info = model.info();
        eprintln!(
            "{}: {} ({}, {:.1} MiB), llama.cpp {} (b{}), {} threads",
            plan.name,
            path.display(),
            info.description,
            info.size_bytes as f64 / (1024.0 * 1024.0),
            build_info::short_commit(),
            build_info::BUILD_NUMBER,
            plan.options.context.threads()
        );
        measure(&mut group, plan, &model);
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
