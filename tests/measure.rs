//! The measuring module against a real llama.cpp context.

use std::path::Path;

use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};
use tiny_gguf::ModelSpec;

#[test]
fn benchmark_contexts_turn_perf_timings_off_as_llama_bench_does() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("measure-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = tiny_gguf::cached(&ModelSpec::tiny_llama(), &dir).unwrap();
    let model = Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap();
    let on = ContextOptions { n_ctx: 256, n_threads: Some(2), ..Default::default() };
    assert!(on.perf, "on by default, as in llama.cpp's tools");
    let bench = llama_workbench::measure::bench_context_options(&on, 64);
    assert!(!bench.perf, "the benchmark's options turn them off");
    let mut ctx = Context::new(&model, &bench).unwrap();
    let prompt = model.tokenize("Once upon a time", true).unwrap();
    ctx.generate_greedy(&prompt, 8).unwrap();
    let perf = ctx.perf();
    assert!(perf.n_prompt > 0 && perf.n_eval > 0, "llama.cpp counts tokens either way: {perf:?}");
    assert!(perf.prompt_ms == 0.0 && perf.eval_ms == 0.0, "no timings with --no-perf: {perf:?}");
}
