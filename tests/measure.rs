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

/// A parallel workload reports aggregate tokens over all sequences and runs on a context with
/// one sequence id per request; a cost curve has one point per size, the one-token point 1.0.
#[test]
fn parallel_and_cost_curve_workloads() {
    use llama_workbench::measure::{Workload, run_workload};
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("measure-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = tiny_gguf::cached(&ModelSpec::tiny_llama(), &dir).unwrap();
    let model = Model::load(Backend::get().unwrap(), path, &ModelOptions::default()).unwrap();
    let options = ContextOptions { n_threads: Some(2), ..Default::default() };
    let w = Workload { parallel: 4, repetitions: 2, ..Workload::new("par4", 16, 8) };
    assert_eq!(w.n_cells(), 4 * 24);
    let r = run_workload(&model, &options, &w).unwrap();
    let (pp, tg) = (r.pp.unwrap(), r.tg.unwrap());
    assert_eq!((pp.n_tokens, tg.n_tokens), (64, 32), "aggregate over the sequences");
    assert_eq!((pp.samples_ns.len(), tg.samples_ns.len()), (2, 2));
    assert!(tg.avg_ts > 0.0 && pp.avg_ts > 0.0);
    assert!(r.cost.is_empty());

    let w = Workload { decode_sizes: vec![1, 2, 8], repetitions: 3, ..Workload::new("cost", 32, 0) };
    let r = run_workload(&model, &options, &w).unwrap();
    assert_eq!(r.cost.iter().map(|c| c.n_tokens).collect::<Vec<_>>(), [1, 2, 8]);
    assert!((r.cost[0].relative - 1.0).abs() < 1e-12);
    assert!(r.cost.iter().all(|c| c.samples.samples_ns.len() == 3 && c.samples.avg_ns > 0.0));
    // Sizes without 1 are measured against a one-token decode all the same.
    let w = Workload { decode_sizes: vec![4], repetitions: 2, ..Workload::new("cost4", 8, 4) };
    let r = run_workload(&model, &options, &w).unwrap();
    assert_eq!(r.cost.len(), 1);
    assert!(r.cost[0].relative > 0.0 && r.tg.is_some());
    // A parallel workload with turns is refused.
    let bad = Workload { parallel: 2, turns: 2, ..Workload::new("bad", 8, 4) };
    assert!(run_workload(&model, &options, &bad).unwrap_err().to_string().contains("parallel"));
}

/// A speculative workload interleaves plain and speculative greedy generation of `n_gen`
/// tokens after its built-in prompt: both sample sets in the result, tg holding the
/// speculative one, the drafter's counts adding up; a model drafting for itself (`-md`) is
/// accepted throughout and gives the plain tokens.
#[test]
fn speculative_workload() {
    use llama_workbench::measure::{Workload, run_workload};
    use llama_workbench::speculate::SpecWorkload;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("measure-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = tiny_gguf::cached(&ModelSpec::tiny_llama(), &dir).unwrap();
    let model = Model::load(Backend::get().unwrap(), &path, &ModelOptions::default()).unwrap();
    let options = ContextOptions { n_threads: Some(2), ..Default::default() };
    for (text, flags) in [
        ("quote", "--spec-type ngram-simple --spec-ngram-simple-size-n 1 --spec-ngram-simple-size-m 4".to_string()),
        ("free", format!("-md {} --spec-draft-n-max 3", path.display())),
    ] {
        let w = Workload {
            repetitions: 2,
            speculative: Some(SpecWorkload { text: text.into(), flags: flags.clone() }),
            ..Workload::new("spec", 0, 24)
        };
        let r = run_workload(&model, &options, &w).unwrap();
        let s = r.speculative.as_ref().unwrap();
        assert_eq!(r.tg.as_ref(), Some(&s.speculative), "{flags}");
        assert!(r.pp.is_none());
        assert_eq!((s.plain.samples_ns.len(), s.speculative.samples_ns.len()), (2, 2));
        assert_eq!((s.plain.n_tokens, s.speculative.n_tokens), (24, 24));
        assert!(s.plain.avg_ts > 0.0 && s.speculative.avg_ts > 0.0 && s.speedup > 0.0);
        let st = &s.stats;
        assert!(st.accepted <= st.drafted, "{st:?}");
        assert_eq!(st.accepted_at.iter().sum::<usize>(), st.accepted);
        assert_eq!(st.drafted_at.iter().sum::<usize>(), st.drafted);
        if flags.starts_with("-md") {
            assert_eq!(st.drafter, "draft-simple");
            assert!(st.drafted > 0 && st.accepted == st.drafted, "a model drafting for itself: {st:?}");
            assert!(s.exact, "{s:?}");
        }
    }
    let bad = Workload {
        speculative: Some(SpecWorkload { text: "quote".into(), flags: "--temp 0".into() }),
        ..Workload::new("spec", 0, 8)
    };
    assert!(run_workload(&model, &options, &bad).unwrap_err().to_string().contains("no speculative decoding"));
}
