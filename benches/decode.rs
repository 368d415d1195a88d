//! In-process decode benchmark: prompt processing and generation tokens/s, no server.
//!
//! ```text
//! cargo bench --bench decode                                # generated MoE model (~65 MB, Q8_0)
//! LLAMA_BENCH_MODEL=/models/x.gguf cargo bench --bench decode
//! LLAMA_BENCH_THREADS=16 LLAMA_BENCH_PROMPT=512 LLAMA_BENCH_GEN=128 cargo bench --bench decode
//! cargo bench --bench decode -- --save-baseline before      # later: -- --baseline before
//! ```
//!
//! The model is loaded and the context created once, outside the timed region. Each iteration
//! clears the KV cache (untimed) and times one prompt pass or one generation run with the same
//! code as `llama-runner bench` (`llama_runner::measure`). Criterion reports tokens/s
//! (`Throughput::Elements`).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use llama_runner::measure::Bench;
use llama_runner::{Backend, ContextOptions, Model, ModelOptions, build_info};

fn env_u32(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// The model to measure: `LLAMA_BENCH_MODEL`, or the generated default MoE model.
fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LLAMA_BENCH_MODEL") {
        return PathBuf::from(p);
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-models");
    std::fs::create_dir_all(&dir).expect("create the bench model directory");
    tiny_gguf::cached(&tiny_gguf::ModelSpec::bench_moe(), &dir).expect("generate the default bench model")
}

fn decode(c: &mut Criterion) {
    let path = model_path();
    let model = match Model::load(Backend::get(), &path, &ModelOptions::default()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("decode bench skipped: {e}");
            return;
        }
    };
    let info = model.info();
    let n_prompt = env_u32("LLAMA_BENCH_PROMPT", 512);
    let n_gen = env_u32("LLAMA_BENCH_GEN", 128);
    let mut options = ContextOptions::default();
    if let Ok(t) = std::env::var("LLAMA_BENCH_THREADS") {
        options.n_threads = Some(t.parse().expect("LLAMA_BENCH_THREADS is not a number"));
    }
    eprintln!(
        "model {} ({}, {:.1} MiB), llama.cpp {} (b{}), {} threads",
        path.display(),
        info.description,
        info.size_bytes as f64 / (1024.0 * 1024.0),
        build_info::short_commit(),
        build_info::BUILD_NUMBER,
        options.threads()
    );
    let mut bench = Bench::new(&model, &options, n_prompt + n_gen).expect("create the context");
    let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();

    let mut group = c.benchmark_group("decode");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));

    group.throughput(Throughput::Elements(n_prompt.into()));
    group.bench_function(BenchmarkId::new(format!("pp{n_prompt}"), &id), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                bench.reset(0).expect("clear the cache");
                total += Duration::from_nanos(black_box(bench.time_prompt(n_prompt).expect("prompt")));
            }
            total
        })
    });

    group.throughput(Throughput::Elements(n_gen.into()));
    group.bench_function(BenchmarkId::new(format!("tg{n_gen}"), &id), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                bench.reset(0).expect("clear the cache");
                total += Duration::from_nanos(black_box(bench.time_generation(n_gen).expect("generation")));
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
