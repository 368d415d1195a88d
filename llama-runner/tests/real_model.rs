//! The real model (Gemma 3 270M, Q4_K_M): the runner generates exactly what llama.cpp does.
//!
//! `harness = false`: without the model (`scripts/fetch-real-model.sh`) the test is reported
//! ignored with the reason; with `LLAMA_REQUIRE_REAL_MODEL=1` (CI) it fails instead.

mod common;

use std::path::PathBuf;

use llama_runner::{Backend, Context, ContextOptions, Model, ModelOptions};

fn main() {
    common::run_trials(vec![common::trial(
        "greedy_output_matches_llama_cpp_on_gemma3",
        common::real_model(),
        greedy_output_matches_llama_cpp_on_gemma3,
    )]);
}

fn greedy_output_matches_llama_cpp_on_gemma3(path: PathBuf) {
    let model = Model::load(Backend::get().unwrap(), &path, &ModelOptions::default()).unwrap();
    let info = model.info();
    assert_eq!(info.architecture, "gemma3");
    let prompt_text = "The capital of France is";
    let mut ctx =
        Context::new(&model, &ContextOptions { n_ctx: 512, n_threads: Some(2), ..Default::default() }).unwrap();
    let prompt = model.tokenize(prompt_text, true).unwrap();
    let ours = ctx.generate_greedy(&prompt, 32).unwrap();
    let (ref_prompt, ref_gen) = common::reference_generate(&path, prompt_text, 32, 2, 512);
    assert_eq!(prompt, ref_prompt);
    assert_eq!(ours.tokens, ref_gen);
    let text = model.detokenize(&ours.tokens).unwrap();
    eprintln!("gemma3 270M: {prompt_text:?} -> {text:?} ({:.1} t/s)", ours.gen_tps());
    // A real model continues with real words about the prompt (this one says France is the
    // capital of France, but that is the model, not the runner).
    assert!(text.contains("France"), "not a continuation of the prompt: {text:?}");
}
